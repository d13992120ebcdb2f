//! Decision tables. PLACEHOLDER SIGNATURE ONLY: the expression helper replaces this file.

use crate::expr::{Context, ExprError, Scope};
use crate::model::DecisionTable;
use crate::value::Value;

pub fn evaluate(
    _table: &DecisionTable,
    _scope: &dyn Scope,
    _ctx: &Context,
) -> Result<Value, ExprError> {
    Ok(Value::Null)
}

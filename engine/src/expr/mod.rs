//! The expression language of gateway conditions, assignments, mappings and decision tables.
//!
//! PLACEHOLDER SIGNATURES ONLY: the expression helper replaces this file.

use crate::value::Value;

/// Looks up the variables an expression reads.
pub trait Scope {
    /// The value of a root variable, or `None` when no such variable exists.
    fn get(&self, name: &str) -> Option<&Value>;
}

impl Scope for crate::value::Vars {
    fn get(&self, name: &str) -> Option<&Value> {
        std::collections::BTreeMap::get(self, name)
    }
}

/// What an evaluation may know of the world: the current instant (for `now()`).
#[derive(Clone, Copy, Debug)]
pub struct Context {
    pub now: jiff::Timestamp,
}

/// An expression problem: what, and where in the expression's text (byte offset).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    pub message: String,
    pub offset: usize,
}

/// A parsed expression.
#[derive(Clone, Debug)]
pub struct Expr {
    source: String,
}

impl Expr {
    pub fn parse(source: &str) -> Result<Expr, ExprError> {
        Ok(Expr {
            source: source.to_string(),
        })
    }
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn eval(&self, _scope: &dyn Scope, _ctx: &Context) -> Result<Value, ExprError> {
        Err(ExprError {
            message: "not built".into(),
            offset: 0,
        })
    }
    /// The root variable names this expression reads.
    pub fn variables(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A text with `{{ expression }}` parts, such as a task title.
#[derive(Clone, Debug)]
pub struct Template {
    source: String,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, ExprError> {
        Ok(Template {
            source: source.to_string(),
        })
    }
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn render(&self, _scope: &dyn Scope, _ctx: &Context) -> Result<String, ExprError> {
        Ok(self.source.clone())
    }
}

/// A decision-table cell: `> 10`, `[1..5]`, `"a", "b"`, `not("x")`, or `-` (anything).
#[derive(Clone, Debug)]
pub struct UnaryTest {
    source: String,
}

impl UnaryTest {
    pub fn parse(source: &str) -> Result<UnaryTest, ExprError> {
        Ok(UnaryTest {
            source: source.to_string(),
        })
    }
    pub fn source(&self) -> &str {
        &self.source
    }
    /// Whether `input` passes this test.
    pub fn matches(
        &self,
        _input: &Value,
        _scope: &dyn Scope,
        _ctx: &Context,
    ) -> Result<bool, ExprError> {
        Ok(false)
    }
}

//! What a task's page shows of its instance: the user task's `summary` template and `show:`
//! list evaluated against the instance's variables at render time, as plain text (the page
//! template escapes it). A value that cannot be computed shows as `—` and is logged, never
//! an error page.

use ciclo_engine::Value;
use ciclo_engine::expr::{Context, Expr, display_value};
use ciclo_engine::model::{ShowContent, ShowFormat, UserTask};
use ciclo_engine::value::Vars;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

/// Shown for a value that could not be computed.
pub const MISSING: &str = "—";

/// One entry of the page: a labelled value or a table.
#[derive(Debug, Serialize)]
pub struct Shown {
    pub label: String,
    pub value: Option<String>,
    pub table: Option<ShownTable>,
}

#[derive(Debug, Serialize)]
pub struct ShownTable {
    pub headings: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// The task's summary (rendered template text, not yet escaped) and its `show:` entries.
pub fn evaluate(task: &UserTask, vars: &Vars, ctx: &Context) -> (Option<String>, Vec<Shown>) {
    let summary = task.summary.as_ref().map(|t| match t.render(vars, ctx) {
        Ok(text) => text,
        Err(error) => {
            tracing::warn!(template = t.source(), %error, "a task summary cannot be shown");
            MISSING.to_string()
        }
    });
    let shown = task
        .show
        .iter()
        .map(|item| match &item.content {
            ShowContent::Value(expr) => Shown {
                label: item.label.clone(),
                value: Some(value_text(expr, vars, ctx, item.format)),
                table: None,
            },
            ShowContent::Table { rows, columns } => Shown {
                label: item.label.clone(),
                value: None,
                table: Some(table(rows, columns, vars, ctx)),
            },
        })
        .collect();
    (summary, shown)
}

fn value_text(expr: &Expr, vars: &Vars, ctx: &Context, format: Option<ShowFormat>) -> String {
    match expr.eval(vars, ctx) {
        Ok(value) => formatted(&value, format),
        Err(error) => {
            tracing::warn!(expression = expr.source(), %error, "a shown value cannot be computed");
            MISSING.to_string()
        }
    }
}

fn table(rows: &Expr, columns: &[(String, Expr)], vars: &Vars, ctx: &Context) -> ShownTable {
    let headings = columns.iter().map(|(h, _)| h.clone()).collect();
    let list = match rows.eval(vars, ctx) {
        Ok(Value::List(list)) => list,
        Ok(Value::Null) => Vec::new(),
        Ok(other) => {
            tracing::warn!(
                expression = rows.source(),
                kind = other.type_name(),
                "a shown table is not a list"
            );
            Vec::new()
        }
        Err(error) => {
            tracing::warn!(expression = rows.source(), %error, "a shown table cannot be computed");
            Vec::new()
        }
    };
    let rows = list
        .iter()
        .map(|row| {
            let scope = match row {
                Value::Map(map) => map.clone(),
                other => {
                    let mut map = Vars::new();
                    map.insert("item".into(), other.clone());
                    map
                }
            };
            columns
                .iter()
                .map(|(_, e)| value_text(e, &scope, ctx, None))
                .collect()
        })
        .collect();
    ShownTable { headings, rows }
}

/// A value as text in the given format; a value the format does not fit is shown as it is.
pub fn formatted(value: &Value, format: Option<ShowFormat>) -> String {
    match (format, value) {
        (Some(ShowFormat::Money), Value::Number(n)) => money(*n),
        (Some(ShowFormat::Percent), Value::Number(n)) => {
            let percent = (n * Decimal::ONE_HUNDRED)
                .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
            format!("{} %", percent.normalize())
        }
        (Some(ShowFormat::Date), Value::Instant(t)) => t.strftime("%Y-%m-%d").to_string(),
        (_, Value::Null) => MISSING.to_string(),
        (_, value) => display_value(value),
    }
}

/// Two decimals (half away from zero), thousands grouped with commas: `12,500.00`.
pub fn money(n: Decimal) -> String {
    ciclo_engine::value::format_money(n, "en")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_percent() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(money(d("12500")), "12,500.00");
        assert_eq!(money(d("1234567.005")), "1,234,567.01");
        assert_eq!(money(d("-0.5")), "-0.50");
        assert_eq!(money(d("999")), "999.00");
        assert_eq!(
            formatted(&Value::Number(d("0.125")), Some(ShowFormat::Percent)),
            "12.5 %"
        );
        assert_eq!(
            formatted(&Value::Number(d("0.1220833333")), Some(ShowFormat::Percent)),
            "12.21 %"
        );
        assert_eq!(formatted(&Value::Null, None), MISSING);
        assert_eq!(
            formatted(&Value::String("x".into()), Some(ShowFormat::Money)),
            "x"
        );
    }
}

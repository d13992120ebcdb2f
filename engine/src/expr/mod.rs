//! The expression language of gateway conditions, assignments, mappings and decision tables.
//!
//! Expressions are parsed once into a small tree ([`Expr`]) and evaluated many times against a
//! [`Scope`] of variables. Numbers are decimals (`0.1 + 0.2 == 0.3`), booleans are strict, a
//! missing map key reads as null while a null in the middle of a path is an error unless the
//! path says `?.`. Evaluation is sandboxed: no I/O, no loops, a step budget per evaluation,
//! a nesting limit at parse time and size limits on the strings and lists it produces, so a
//! hostile expression returns an error instead of panicking or hanging.
//!
//! The same parser serves [`Template`] (text with `{{ expression }}` parts) and [`UnaryTest`]
//! (decision-table cells such as `> 10`, `[1..5]` or `"a", "b"`).

mod eval;
mod functions;
mod lexer;
mod parser;
mod template;
mod unary;

use std::fmt;

use crate::value::Value;

pub use functions::{email_base, email_key};
pub use template::Template;
pub use unary::UnaryTest;

/// How many tree nodes one evaluation may visit before it gives up. Expressions have no
/// loops, so only list functions over large inputs come near this.
pub const MAX_STEPS: u32 = 100_000;
/// How deeply brackets, parentheses and prefix operators may nest in the source.
pub const MAX_NESTING: u32 = 64;
/// How deep the parsed tree may be. Evaluation recurses once per level, so this bounds the
/// stack an evaluation uses; it is larger than [`MAX_NESTING`] so that flat chains such as a
/// sum of a hundred terms still parse.
pub const MAX_TREE_DEPTH: u32 = 128;
/// The longest string (in bytes) an evaluation may produce.
pub const MAX_STRING_BYTES: usize = 1 << 20;
/// The longest list an evaluation may produce.
pub const MAX_LIST_ITEMS: usize = 100_000;
/// The longest expression source accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 100_000;

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

/// What an evaluation may know of the world: the current instant (for `now()`) and the
/// process's time zone (`today()` is the date there).
#[derive(Clone, Debug)]
pub struct Context {
    pub now: jiff::Timestamp,
    pub zone: jiff::tz::TimeZone,
}

impl Context {
    /// At `now`, in UTC.
    pub fn utc(now: jiff::Timestamp) -> Context {
        Context {
            now,
            zone: jiff::tz::TimeZone::UTC,
        }
    }
}

/// An expression problem: what, and where in the expression's text (byte offset).
///
/// `Display` reads like "unexpected `*` at column 10"; the column is `offset + 1`, which is
/// the character column for the single-line ASCII expressions analysts write. Callers that
/// hold the source can use [`ExprError::line_column`] for multi-line or non-ASCII text.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct ExprError {
    pub message: String,
    pub offset: usize,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.message, self.offset + 1)
    }
}

impl ExprError {
    pub(crate) fn new(message: impl Into<String>, offset: usize) -> ExprError {
        ExprError {
            message: message.into(),
            offset,
        }
    }

    /// The 1-based line and character column of this error in `source` (the text the
    /// expression, template or cell was parsed from).
    pub fn line_column(&self, source: &str) -> (usize, usize) {
        let mut end = self.offset.min(source.len());
        while !source.is_char_boundary(end) {
            end -= 1;
        }
        let before = &source[..end];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

/// A parsed expression.
#[derive(Clone, Debug)]
pub struct Expr {
    source: String,
    root: parser::Node,
}

impl Expr {
    /// Parses `source`; the error's offset points at the offending token.
    pub fn parse(source: &str) -> Result<Expr, ExprError> {
        let root = parser::parse_expression(source, 0, source.len(), false)?;
        Ok(Expr {
            source: source.to_string(),
            root,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates this expression. Errors name the variable involved and point at it.
    pub fn eval(&self, scope: &dyn Scope, ctx: &Context) -> Result<Value, ExprError> {
        let mut evaluator = eval::Evaluator::new(&self.source, scope, ctx, None);
        evaluator.eval(&self.root).map(std::borrow::Cow::into_owned)
    }

    /// The root variable names this expression reads, each once, in order of appearance.
    pub fn variables(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.root.collect_variables(&mut names);
        names
    }

    /// The data files this expression reads: `(Some(name), offset of name)` for each
    /// `data.name`, `(None, offset)` for a use of `data` that needs every file (`data[key]`).
    pub fn data_references(&self) -> Vec<(Option<String>, usize)> {
        let mut out = Vec::new();
        self.root.collect_data_references(&mut out);
        out
    }
}

/// The root variable through which expressions read the data files (`data.price_list`).
pub const DATA_VARIABLE: &str = parser::DATA_VARIABLE;

/// Formats a value the way templates and string concatenation show it: strings as they are,
/// numbers without trailing zeros (`1000`, `12.5`), null as nothing, dates and durations in
/// ISO 8601, lists and maps as JSON.
pub fn display_value(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(d) => d.normalize().to_string(),
        Value::String(s) => s.clone(),
        Value::Date(d) => d.to_string(),
        Value::Instant(t) => t.to_string(),
        Value::Duration(s) => s.to_string(),
        Value::List(_) | Value::Map(_) => value.to_json().to_string(),
    }
}

/// `display_value`, but giving up (`None`) as soon as the text would pass `limit` bytes, so
/// that `string(huge_list)` costs no more than the limit.
pub fn display_value_within(value: &Value, limit: usize) -> Option<String> {
    match value {
        Value::List(_) | Value::Map(_) => {
            let mut out = Bounded {
                text: String::new(),
                limit,
            };
            write_json(value, &mut out).ok()?;
            Some(out.text)
        }
        other => Some(display_value(other)).filter(|s| s.len() <= limit),
    }
}

struct Bounded {
    text: String,
    limit: usize,
}

impl Bounded {
    fn push(&mut self, part: &str) -> Result<(), ()> {
        if self.text.len() + part.len() > self.limit {
            return Err(());
        }
        self.text.push_str(part);
        Ok(())
    }
}

fn write_json(value: &Value, out: &mut Bounded) -> Result<(), ()> {
    match value {
        Value::List(items) => {
            out.push("[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(",")?;
                }
                write_json(item, out)?;
            }
            out.push("]")
        }
        Value::Map(map) => {
            out.push("{")?;
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(",")?;
                }
                out.push(&serde_json::Value::String(key.clone()).to_string())?;
                out.push(":")?;
                write_json(item, out)?;
            }
            out.push("}")
        }
        scalar => out.push(&scalar.to_json().to_string()),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lists_and_pricing_tests;

#[cfg(test)]
mod late_interest_tests;

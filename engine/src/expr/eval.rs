//! Walks an expression tree against a scope and produces a value.
//!
//! Values are returned as `Cow`: a path such as `lead.company.name` borrows from the scope all
//! the way down and only the final result is cloned, so reading a field of a large map costs
//! a lookup, not a copy. Every node visit spends one step of a fixed budget, so no
//! evaluation runs unbounded.

use std::borrow::Cow;
use std::cmp::Ordering;

use jiff::tz::TimeZone;
use jiff::{SpanCompare, SpanRelativeTo, Unit};
use rust_decimal::Decimal;

use super::parser::{BinOp, Kind, Node};
use super::{Context, ExprError, MAX_LIST_ITEMS, MAX_STEPS, MAX_STRING_BYTES, Scope};
use crate::expr::display_value;
use crate::value::Value;

/// The null every missing key reads as, borrowed rather than allocated.
pub(crate) static NULL: Value = Value::Null;

pub(crate) struct Evaluator<'a> {
    src: &'a str,
    scope: &'a dyn Scope,
    pub ctx: &'a Context,
    input: Option<&'a Value>,
    steps: u32,
    /// The variables of the comprehensions being evaluated, innermost last. An item of a
    /// borrowed list stays borrowed; an item of a list the expression built is owned.
    locals: Vec<(&'a str, Cow<'a, Value>)>,
}

enum Key<'k> {
    Name(&'k str),
    Position(usize),
}

/// Reads one field or item of `parent`, borrowing when the parent is borrowed.
fn child<'a>(parent: Cow<'a, Value>, key: Key<'_>) -> Cow<'a, Value> {
    match parent {
        Cow::Borrowed(value) => Cow::Borrowed(match (value, key) {
            (Value::Map(map), Key::Name(name)) => map.get(name).unwrap_or(&NULL),
            (Value::List(items), Key::Position(i)) => items.get(i).unwrap_or(&NULL),
            _ => &NULL,
        }),
        Cow::Owned(value) => Cow::Owned(match (value, key) {
            (Value::Map(mut map), Key::Name(name)) => map.remove(name).unwrap_or_default(),
            (Value::List(mut items), Key::Position(i)) if i < items.len() => items.swap_remove(i),
            _ => Value::Null,
        }),
    }
}

/// "a number", "an instant": the type name with its article, for messages.
pub(crate) fn a_type(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Instant(_) => "an instant".to_string(),
        other => format!("a {}", other.type_name()),
    }
}

/// Orders two values of the same comparable type, or says why they cannot be ordered.
pub(crate) fn order(a: &Value, b: &Value) -> Result<Ordering, String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Ok(x.cmp(y)),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Date(x), Value::Date(y)) => Ok(x.cmp(y)),
        (Value::Instant(x), Value::Instant(y)) => Ok(x.cmp(y)),
        (Value::Duration(x), Value::Duration(y)) => x
            .compare(SpanCompare::from(*y).days_are_24_hours())
            .map_err(|_| {
                "durations with months or years cannot be ordered (their length varies)".into()
            }),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        _ => Err(format!("cannot order {} and {}", a_type(a), a_type(b))),
    }
}

/// Adds a duration to an instant in UTC, so that `P1M` and `P1D` follow the calendar.
pub(crate) fn add_to_instant(
    instant: jiff::Timestamp,
    span: jiff::Span,
) -> Result<jiff::Timestamp, jiff::Error> {
    Ok(instant
        .to_zoned(TimeZone::UTC)
        .checked_add(span)?
        .timestamp())
}

impl<'a> Evaluator<'a> {
    pub fn new(
        src: &'a str,
        scope: &'a dyn Scope,
        ctx: &'a Context,
        input: Option<&'a Value>,
    ) -> Evaluator<'a> {
        Evaluator {
            src,
            scope,
            ctx,
            input,
            steps: 0,
            locals: Vec::new(),
        }
    }

    /// Spends `steps` of the budget; list functions pay for the items they touch.
    pub fn charge(&mut self, steps: usize, at: usize) -> Result<(), ExprError> {
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        self.steps = self.steps.saturating_add(steps);
        if self.steps > MAX_STEPS {
            return Err(ExprError::new(
                format!("the expression takes more than {MAX_STEPS} steps to evaluate"),
                at,
            ));
        }
        Ok(())
    }

    /// The source text of a node, in backquotes, shortened when long.
    pub fn describe(&self, node: &Node) -> String {
        let text = self.src.get(node.start..node.end).unwrap_or("").trim();
        if text.chars().count() <= 40 {
            format!("`{text}`")
        } else {
            let short: String = text.chars().take(37).collect();
            format!("`{short}...`")
        }
    }

    pub fn type_error(&self, node: &Node, value: &Value, expected: &str) -> ExprError {
        ExprError::new(
            format!(
                "{} is {}, expected {expected}",
                self.describe(node),
                a_type(value)
            ),
            node.start,
        )
    }

    fn boolean(&mut self, node: &'a Node) -> Result<bool, ExprError> {
        match &*self.eval(node)? {
            Value::Bool(b) => Ok(*b),
            other => Err(self.type_error(node, other, "a boolean")),
        }
    }

    pub fn eval(&mut self, node: &'a Node) -> Result<Cow<'a, Value>, ExprError> {
        self.charge(1, node.at)?;
        // Each recursive kind has its own method: in a debug build every local of one big
        // match would sit in this frame at every level of recursion, several KiB per level.
        match &node.kind {
            Kind::Literal(value) => Ok(Cow::Borrowed(value)),
            Kind::Var(name) => {
                if let Some(local) = self.local(name, node.at)? {
                    return Ok(local);
                }
                let scope: &'a dyn Scope = self.scope;
                scope
                    .get(name)
                    .map(Cow::Borrowed)
                    .ok_or_else(|| ExprError::new(format!("unknown variable `{name}`"), node.start))
            }
            Kind::Input => Ok(Cow::Borrowed(self.input.unwrap_or(&NULL))),
            Kind::Field { target, name, safe } => self.field(node, target, name, *safe),
            Kind::Index {
                target,
                index,
                safe,
            } => self.index(node, target, index, *safe),
            Kind::Neg(operand) => self.negate(operand),
            Kind::Not(operand) => Ok(Cow::Owned(Value::Bool(!self.boolean(operand)?))),
            Kind::And(lhs, rhs) => self.and(lhs, rhs),
            Kind::Or(lhs, rhs) => self.or(lhs, rhs),
            Kind::Coalesce(lhs, rhs) => self.coalesce(lhs, rhs),
            Kind::If {
                cond,
                then,
                otherwise,
            } => self.conditional(cond, then, otherwise),
            Kind::Binary { op, lhs, rhs } => self.binary_node(*op, node, lhs, rhs),
            Kind::Call { func, args } => super::functions::call(self, *func, node, args),
            Kind::List(items) => self.list(items),
            Kind::Map(entries) => self.map(entries),
            Kind::Comprehension {
                element,
                var,
                list,
                filter,
            } => self.comprehension(node, element, var, list, filter.as_deref()),
        }
    }

    /// The value of a comprehension variable, innermost first. An owned item is copied, and
    /// the copy is paid for by its size, so `[big for x in big]` cannot run unbounded.
    fn local(&mut self, name: &str, at: usize) -> Result<Option<Cow<'a, Value>>, ExprError> {
        let Some((_, value)) = self.locals.iter().rev().find(|(n, _)| *n == name) else {
            return Ok(None);
        };
        match value {
            Cow::Borrowed(value) => Ok(Some(Cow::Borrowed(*value))),
            Cow::Owned(value) => {
                let budget = (MAX_STEPS - self.steps.min(MAX_STEPS)) as usize + 1;
                let size = value_size(value, budget);
                let copy = if size < budget {
                    Some(value.clone())
                } else {
                    None
                };
                self.charge(size, at)?;
                Ok(copy.map(Cow::Owned))
            }
        }
    }

    fn comprehension(
        &mut self,
        node: &'a Node,
        element: &'a Node,
        var: &'a str,
        list: &'a Node,
        filter: Option<&'a Node>,
    ) -> Result<Cow<'a, Value>, ExprError> {
        let items: Vec<Cow<'a, Value>> = match self.eval(list)? {
            Cow::Borrowed(Value::List(items)) => items.iter().map(Cow::Borrowed).collect(),
            Cow::Owned(Value::List(items)) => items.into_iter().map(Cow::Owned).collect(),
            other => return Err(self.type_error(list, &other, "a list")),
        };
        self.charge(items.len(), node.at)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            self.locals.push((var, item));
            let result = self.comprehension_item(element, filter);
            self.locals.pop();
            if let Some(value) = result? {
                out.push(value);
            }
        }
        check_list(&out, node.at)?;
        Ok(Cow::Owned(Value::List(out)))
    }

    /// One item of a comprehension: the element's value, or `None` when the filter drops it.
    fn comprehension_item(
        &mut self,
        element: &'a Node,
        filter: Option<&'a Node>,
    ) -> Result<Option<Value>, ExprError> {
        if let Some(filter) = filter
            && !self.boolean(filter)?
        {
            return Ok(None);
        }
        Ok(Some(self.eval(element)?.into_owned()))
    }

    fn field(
        &mut self,
        node: &'a Node,
        target: &'a Node,
        name: &str,
        safe: bool,
    ) -> Result<Cow<'a, Value>, ExprError> {
        let value = self.eval(target)?;
        match &*value {
            Value::Map(_) => Ok(child(value, Key::Name(name))),
            Value::Null if safe => Ok(Cow::Borrowed(&NULL)),
            Value::Null => Err(ExprError::new(
                format!(
                    "{} is null, so it has no field `{name}`; write `{}?.{name}` if it may be missing",
                    self.describe(target),
                    self.text(target),
                ),
                node.at,
            )),
            other => Err(ExprError::new(
                format!(
                    "{} is {}, not a map, so it has no field `{name}`",
                    self.describe(target),
                    a_type(other)
                ),
                node.at,
            )),
        }
    }

    fn negate(&mut self, operand: &'a Node) -> Result<Cow<'a, Value>, ExprError> {
        match &*self.eval(operand)? {
            Value::Number(n) => Ok(Cow::Owned(Value::Number(-*n))),
            Value::Duration(span) => Ok(Cow::Owned(Value::Duration(span.negate()))),
            other => Err(self.type_error(operand, other, "a number or a duration")),
        }
    }

    fn and(&mut self, lhs: &'a Node, rhs: &'a Node) -> Result<Cow<'a, Value>, ExprError> {
        let result = self.boolean(lhs)? && self.boolean(rhs)?;
        Ok(Cow::Owned(Value::Bool(result)))
    }

    fn or(&mut self, lhs: &'a Node, rhs: &'a Node) -> Result<Cow<'a, Value>, ExprError> {
        let result = self.boolean(lhs)? || self.boolean(rhs)?;
        Ok(Cow::Owned(Value::Bool(result)))
    }

    fn coalesce(&mut self, lhs: &'a Node, rhs: &'a Node) -> Result<Cow<'a, Value>, ExprError> {
        // `x ?? default` says that `x` may be missing: an unknown root variable on the left of
        // `??` reads as null (`reminders ?? 0` before the first reminder set it). A
        // comprehension's variable is known: `l.discount ?? 0` inside `[... for l in lines]`
        // reads the item's `discount`, not the scope's (missing) `l`.
        if let Some(root) = root_var(lhs)
            && !self.locals.iter().any(|(name, _)| *name == root)
            && self.scope.get(root).is_none()
        {
            return self.eval(rhs);
        }
        let value = self.eval(lhs)?;
        if matches!(*value, Value::Null) {
            self.eval(rhs)
        } else {
            Ok(value)
        }
    }

    fn conditional(
        &mut self,
        cond: &'a Node,
        then: &'a Node,
        otherwise: &'a Node,
    ) -> Result<Cow<'a, Value>, ExprError> {
        if self.boolean(cond)? {
            self.eval(then)
        } else {
            self.eval(otherwise)
        }
    }

    fn binary_node(
        &mut self,
        op: BinOp,
        node: &'a Node,
        lhs: &'a Node,
        rhs: &'a Node,
    ) -> Result<Cow<'a, Value>, ExprError> {
        let left = self.eval(lhs)?;
        let right = self.eval(rhs)?;
        self.binary(op, node, lhs, rhs, &left, &right)
            .map(Cow::Owned)
    }

    fn list(&mut self, items: &'a [Node]) -> Result<Cow<'a, Value>, ExprError> {
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            values.push(self.eval(item)?.into_owned());
        }
        Ok(Cow::Owned(Value::List(values)))
    }

    fn map(&mut self, entries: &'a [(String, Node)]) -> Result<Cow<'a, Value>, ExprError> {
        let mut map = std::collections::BTreeMap::new();
        for (key, item) in entries {
            map.insert(key.clone(), self.eval(item)?.into_owned());
        }
        Ok(Cow::Owned(Value::Map(map)))
    }

    fn index(
        &mut self,
        node: &'a Node,
        target: &'a Node,
        index: &'a Node,
        safe: bool,
    ) -> Result<Cow<'a, Value>, ExprError> {
        let value = self.eval(target)?;
        let key = self.eval(index)?;
        match (&*value, &*key) {
            (Value::List(_), Value::Number(n)) => {
                if !n.is_integer() {
                    return Err(ExprError::new(
                        format!("a list position must be a whole number, not {n}"),
                        index.start,
                    ));
                }
                // Positions past the end read as null, like missing map keys.
                let position = usize::try_from(*n).unwrap_or(usize::MAX);
                if n.is_sign_negative() && !n.is_zero() {
                    return Err(ExprError::new(
                        format!("a list position cannot be negative ({n})"),
                        index.start,
                    ));
                }
                Ok(child(value, Key::Position(position)))
            }
            (Value::Map(_), Value::String(name)) => {
                let name = name.clone();
                Ok(child(value, Key::Name(&name)))
            }
            (Value::Null, _) if safe => Ok(Cow::Borrowed(&NULL)),
            (Value::Null, _) => Err(ExprError::new(
                format!(
                    "{} is null, so it cannot be indexed; write `{}?.[...]` if it may be missing",
                    self.describe(target),
                    self.src.get(target.start..target.end).unwrap_or("").trim(),
                ),
                node.at,
            )),
            (Value::List(_), other) => Err(self.type_error(index, other, "a whole number")),
            (Value::Map(_), other) => {
                Err(self.type_error(index, other, "a text (map keys are texts)"))
            }
            (other, _) => Err(self.type_error(target, other, "a list or a map")),
        }
    }

    fn null_operand(&self, op: BinOp, side: &Node, other: &Value) -> ExprError {
        let hint = match op {
            BinOp::Add if matches!(other, Value::String(_)) => {
                format!(
                    "joining texts needs a value (write `{} ?? ''` for a default)",
                    self.text(side)
                )
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                format!(
                    "arithmetic needs a value (write `{} ?? 0` for a default)",
                    self.text(side)
                )
            }
            _ => format!(
                "`{}` cannot order null (compare with `==`, or give a default with `??`)",
                op.symbol()
            ),
        };
        ExprError::new(
            format!("{} is null: {hint}", self.describe(side)),
            side.start,
        )
    }

    fn text(&self, node: &Node) -> &str {
        self.src.get(node.start..node.end).unwrap_or("").trim()
    }

    fn binary(
        &mut self,
        op: BinOp,
        node: &Node,
        lhs: &Node,
        rhs: &Node,
        left: &Value,
        right: &Value,
    ) -> Result<Value, ExprError> {
        use Value::*;
        let too_large = || ExprError::new("the result is too large for a number", node.at);
        let date_error =
            |e: jiff::Error| ExprError::new(format!("date arithmetic failed: {e}"), node.at);
        match op {
            BinOp::Eq => return Ok(Bool(left == right)),
            BinOp::Ne => return Ok(Bool(left != right)),
            BinOp::In | BinOp::NotIn => {
                let found = self.contains(rhs, right, lhs, left)?;
                return Ok(Bool(found == (op == BinOp::In)));
            }
            _ => {}
        }
        if matches!(left, Null) {
            return Err(self.null_operand(op, lhs, right));
        }
        if matches!(right, Null) {
            return Err(self.null_operand(op, rhs, left));
        }
        let result = match (op, left, right) {
            (BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge, _, _) => {
                let ordering = order(left, right).map_err(|why| {
                    ExprError::new(
                        format!(
                            "{why}: {} is {} and {} is {}",
                            self.describe(lhs),
                            a_type(left),
                            self.describe(rhs),
                            a_type(right)
                        ),
                        node.at,
                    )
                })?;
                Bool(match op {
                    BinOp::Lt => ordering == Ordering::Less,
                    BinOp::Le => ordering != Ordering::Greater,
                    BinOp::Gt => ordering == Ordering::Greater,
                    _ => ordering != Ordering::Less,
                })
            }
            (_, Number(a), Number(b)) => {
                let value = match op {
                    BinOp::Add => a.checked_add(*b),
                    BinOp::Sub => a.checked_sub(*b),
                    BinOp::Mul => a.checked_mul(*b),
                    BinOp::Div | BinOp::Rem if b.is_zero() => {
                        return Err(ExprError::new(
                            format!("division by zero: {} is 0", self.describe(rhs)),
                            node.at,
                        ));
                    }
                    BinOp::Div => a.checked_div(*b),
                    _ => a.checked_rem(*b),
                };
                Number(value.ok_or_else(too_large)?)
            }
            (BinOp::Add, String(_), _) | (BinOp::Add, _, String(_))
                if !matches!(left, List(_) | Map(_)) && !matches!(right, List(_) | Map(_)) =>
            {
                let (a, b) = (display_value(left), display_value(right));
                if a.len() + b.len() > MAX_STRING_BYTES {
                    return Err(ExprError::new(
                        format!("the text would be longer than {MAX_STRING_BYTES} bytes"),
                        node.at,
                    ));
                }
                String(a + &b)
            }
            (BinOp::Add, Date(d), Duration(s)) | (BinOp::Add, Duration(s), Date(d)) => {
                Date(d.checked_add(*s).map_err(date_error)?)
            }
            (BinOp::Sub, Date(d), Duration(s)) => Date(d.checked_sub(*s).map_err(date_error)?),
            (BinOp::Sub, Date(a), Date(b)) => {
                Duration(a.since((Unit::Day, *b)).map_err(date_error)?)
            }
            (BinOp::Add, Instant(t), Duration(s)) | (BinOp::Add, Duration(s), Instant(t)) => {
                Instant(add_to_instant(*t, *s).map_err(date_error)?)
            }
            (BinOp::Sub, Instant(t), Duration(s)) => {
                Instant(add_to_instant(*t, s.negate()).map_err(date_error)?)
            }
            (BinOp::Sub, Instant(a), Instant(b)) => {
                Duration(a.since((Unit::Hour, *b)).map_err(date_error)?)
            }
            (BinOp::Add | BinOp::Sub, Duration(a), Duration(b)) => {
                let b = if op == BinOp::Sub { b.negate() } else { *b };
                Duration(
                    a.checked_add((b, SpanRelativeTo::days_are_24_hours()))
                        .map_err(|_| {
                            ExprError::new(
                                "durations with months or years cannot be added together (their length varies); add them to a date instead",
                                node.at,
                            )
                        })?,
                )
            }
            _ => {
                return Err(ExprError::new(
                    format!(
                        "cannot apply `{}` to {} ({}) and {} ({})",
                        op.symbol(),
                        a_type(left),
                        self.describe(lhs),
                        a_type(right),
                        self.describe(rhs)
                    ),
                    node.at,
                ));
            }
        };
        Ok(result)
    }

    /// `item in container`: an item of a list, a key of a map, a part of a text.
    fn contains(
        &mut self,
        container_node: &Node,
        container: &Value,
        item_node: &Node,
        item: &Value,
    ) -> Result<bool, ExprError> {
        match (container, item) {
            (Value::List(items), _) => {
                self.charge(items.len(), container_node.start)?;
                Ok(items.contains(item))
            }
            (Value::Map(map), Value::String(key)) => Ok(map.contains_key(key)),
            (Value::String(text), Value::String(part)) => Ok(text.contains(part.as_str())),
            (Value::Map(_) | Value::String(_), other) => {
                Err(self.type_error(item_node, other, "a text"))
            }
            (other, _) => Err(self.type_error(container_node, other, "a list, a map or a text")),
        }
    }
}

/// How many values `value` holds, itself included, counting no further than `limit`.
fn value_size(value: &Value, limit: usize) -> usize {
    let mut count = 0;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        count += 1;
        if count >= limit {
            return limit;
        }
        match v {
            Value::List(items) => stack.extend(items.iter()),
            Value::Map(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    count
}

/// Checks a produced list against the size limit.
pub(crate) fn check_list(items: &[Value], at: usize) -> Result<(), ExprError> {
    if items.len() > MAX_LIST_ITEMS {
        return Err(ExprError::new(
            format!("the list would have more than {MAX_LIST_ITEMS} items"),
            at,
        ));
    }
    Ok(())
}

/// Checks a produced text against the size limit.
pub(crate) fn check_text(len: usize, at: usize) -> Result<(), ExprError> {
    if len > MAX_STRING_BYTES {
        return Err(ExprError::new(
            format!("the text would be longer than {MAX_STRING_BYTES} bytes"),
            at,
        ));
    }
    Ok(())
}

/// The decimal of a whole number of days, for `days_between`.
pub(crate) fn days(span: jiff::Span) -> Decimal {
    Decimal::from(span.get_days())
}

/// The root variable of a plain path (`a`, `a.b`, `a?.b`), if the node is one.
fn root_var(node: &Node) -> Option<&str> {
    match &node.kind {
        Kind::Var(name) => Some(name),
        Kind::Field { target, .. } => root_var(target),
        _ => None,
    }
}

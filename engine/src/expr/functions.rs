//! The built-in functions an analyst can call: text, lists, numbers, dates and null handling.
//!
//! Names are resolved at parse time ([`lookup`]), so a misspelt function fails when the
//! definition is deployed, with a suggestion, and calls dispatch on an enum at run time.

use std::borrow::Cow;
use std::collections::HashSet;

use jiff::Unit;
use jiff::tz::TimeZone;
use rust_decimal::{Decimal, RoundingStrategy};

use super::eval::{Evaluator, NULL, a_type, check_list, check_text, days, order};
use super::parser::Node;
use super::{ExprError, MAX_LIST_ITEMS, MAX_STRING_BYTES, display_value, display_value_within};
use crate::value::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Lower,
    Upper,
    Trim,
    Contains,
    StartsWith,
    EndsWith,
    Replace,
    Split,
    Join,
    Len,
    Sum,
    Min,
    Max,
    Avg,
    Count,
    Round,
    Floor,
    Ceil,
    Abs,
    Number,
    String,
    IsNull,
    IsEmpty,
    Keys,
    Values,
    Coalesce,
    Distinct,
    Sort,
    Date,
    Instant,
    Duration,
    Now,
    Today,
    DaysBetween,
    Append,
    EmailKey,
    EmailBase,
    AddDays,
    EndOfMonth,
    TierPrice,
    CompoundDiscount,
    LateInterest,
    HalfYear,
}

pub(crate) struct Spec {
    pub name: &'static str,
    pub func: Func,
    pub min_args: usize,
    pub max_args: usize,
}

const MANY: usize = usize::MAX;

const fn spec(name: &'static str, func: Func, min_args: usize, max_args: usize) -> Spec {
    Spec {
        name,
        func,
        min_args,
        max_args,
    }
}

const FUNCTIONS: &[Spec] = &[
    spec("lower", Func::Lower, 1, 1),
    spec("upper", Func::Upper, 1, 1),
    spec("trim", Func::Trim, 1, 1),
    spec("contains", Func::Contains, 2, 2),
    spec("starts_with", Func::StartsWith, 2, 2),
    spec("ends_with", Func::EndsWith, 2, 2),
    spec("replace", Func::Replace, 3, 3),
    spec("split", Func::Split, 2, 2),
    spec("join", Func::Join, 1, 2),
    spec("len", Func::Len, 1, 1),
    spec("sum", Func::Sum, 1, MANY),
    spec("min", Func::Min, 1, MANY),
    spec("max", Func::Max, 1, MANY),
    spec("avg", Func::Avg, 1, MANY),
    spec("count", Func::Count, 1, 1),
    spec("round", Func::Round, 1, 2),
    spec("floor", Func::Floor, 1, 1),
    spec("ceil", Func::Ceil, 1, 1),
    spec("abs", Func::Abs, 1, 1),
    spec("number", Func::Number, 1, 1),
    spec("string", Func::String, 1, 1),
    spec("is_null", Func::IsNull, 1, 1),
    spec("is_empty", Func::IsEmpty, 1, 1),
    spec("keys", Func::Keys, 1, 1),
    spec("values", Func::Values, 1, 1),
    spec("coalesce", Func::Coalesce, 1, MANY),
    spec("distinct", Func::Distinct, 1, 1),
    spec("sort", Func::Sort, 1, 1),
    spec("date", Func::Date, 1, 1),
    spec("instant", Func::Instant, 1, 1),
    spec("duration", Func::Duration, 1, 1),
    spec("now", Func::Now, 0, 0),
    spec("today", Func::Today, 0, 0),
    spec("days_between", Func::DaysBetween, 2, 2),
    spec("append", Func::Append, 2, 2),
    spec("email_key", Func::EmailKey, 1, 1),
    spec("email_base", Func::EmailBase, 1, 1),
    spec("add_days", Func::AddDays, 2, 2),
    spec("end_of_month", Func::EndOfMonth, 1, 1),
    spec("tier_price", Func::TierPrice, 4, 4),
    spec("compound_discount", Func::CompoundDiscount, 1, MANY),
    spec("late_interest", Func::LateInterest, 4, 4),
    spec("half_year", Func::HalfYear, 1, 1),
];

pub(crate) fn lookup(name: &str) -> Option<&'static Spec> {
    FUNCTIONS.iter().find(|spec| spec.name == name)
}

/// The closest known function name, when one is close enough to be a likely typo.
pub(crate) fn suggest(name: &str) -> Option<&'static str> {
    let lowered = name.to_lowercase();
    let aliases = [
        ("length", "len"),
        ("size", "len"),
        ("lowercase", "lower"),
        ("uppercase", "upper"),
        ("average", "avg"),
        ("mean", "avg"),
        ("str", "string"),
        ("int", "number"),
        ("float", "number"),
        ("ifnull", "coalesce"),
        ("unique", "distinct"),
    ];
    // Aliases take part in the distance too, so `lenght` finds `len` through `length`.
    let candidates = FUNCTIONS
        .iter()
        .map(|spec| (spec.name, spec.name))
        .chain(aliases.iter().copied());
    candidates
        .map(|(known, target)| (edit_distance(&lowered, known), known, target))
        .filter(|(distance, known, _)| {
            *distance <= 2.max(known.len() / 4) && *distance < known.len()
        })
        .min_by_key(|(distance, _, _)| *distance)
        .map(|(_, _, target)| target)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Evaluates a call. `coalesce` evaluates its arguments lazily; the others evaluate all.
pub(crate) fn call<'a>(
    ev: &mut Evaluator<'a>,
    func: Func,
    node: &'a Node,
    args: &'a [Node],
) -> Result<Cow<'a, Value>, ExprError> {
    if func == Func::Coalesce {
        for arg in args {
            let value = ev.eval(arg)?;
            if !matches!(*value, Value::Null) {
                return Ok(value);
            }
        }
        return Ok(Cow::Borrowed(&NULL));
    }
    let mut values = Vec::with_capacity(args.len());
    for arg in args {
        values.push(ev.eval(arg)?);
    }
    let call = Call {
        name: lookup_name(func),
        node,
        args,
        values: &values,
    };
    call.apply(ev, func).map(Cow::Owned)
}

fn lookup_name(func: Func) -> &'static str {
    FUNCTIONS
        .iter()
        .find(|spec| spec.func == func)
        .map_or("?", |spec| spec.name)
}

/// One call being applied: its name, its argument nodes (for messages) and their values.
struct Call<'c, 'a> {
    name: &'static str,
    node: &'a Node,
    args: &'a [Node],
    values: &'c [Cow<'a, Value>],
}

impl<'c, 'a> Call<'c, 'a> {
    fn value(&self, i: usize) -> &'c Value {
        &self.values[i]
    }

    fn wrong(&self, ev: &Evaluator<'_>, i: usize, expected: &str) -> ExprError {
        let mut err = ev.type_error(&self.args[i], self.value(i), expected);
        err.message = format!("{}: {}", self.name, err.message);
        err
    }

    fn fail(&self, message: impl Into<String>) -> ExprError {
        ExprError::new(format!("{}: {}", self.name, message.into()), self.node.at)
    }

    fn text(&self, ev: &Evaluator<'_>, i: usize) -> Result<&'c str, ExprError> {
        match self.value(i) {
            Value::String(s) => Ok(s),
            _ => Err(self.wrong(ev, i, "a text")),
        }
    }

    fn number(&self, ev: &Evaluator<'_>, i: usize) -> Result<Decimal, ExprError> {
        match self.value(i) {
            Value::Number(n) => Ok(*n),
            _ => Err(self.wrong(ev, i, "a number")),
        }
    }

    fn list(&self, ev: &Evaluator<'_>, i: usize) -> Result<&'c [Value], ExprError> {
        match self.value(i) {
            Value::List(items) => Ok(items),
            _ => Err(self.wrong(ev, i, "a list")),
        }
    }

    /// The items of an aggregate: the one list argument, or all arguments when there are
    /// several (`max(a, b)`).
    fn items(&self, ev: &mut Evaluator<'_>) -> Result<Vec<&'c Value>, ExprError> {
        let items: Vec<&'c Value> = if self.values.len() == 1 {
            self.list(ev, 0)?.iter().collect()
        } else {
            self.values.iter().map(|v| &**v).collect()
        };
        ev.charge(items.len(), self.node.at)?;
        Ok(items)
    }

    fn numbers(&self, ev: &mut Evaluator<'_>) -> Result<Vec<Decimal>, ExprError> {
        self.items(ev)?
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Number(n) => Ok(*n),
                other => Err(self.fail(format!(
                    "item {} is {}, expected a number",
                    i + 1,
                    a_type(other)
                ))),
            })
            .collect()
    }

    fn total(&self, numbers: &[Decimal]) -> Result<Decimal, ExprError> {
        numbers.iter().try_fold(Decimal::ZERO, |sum, n| {
            sum.checked_add(*n)
                .ok_or_else(|| self.fail("the sum is too large for a number"))
        })
    }

    fn extreme(
        &self,
        ev: &mut Evaluator<'_>,
        want: std::cmp::Ordering,
    ) -> Result<Value, ExprError> {
        let mut best: Option<&Value> = None;
        for item in self.items(ev)? {
            best = match best {
                None => Some(item),
                Some(current) => {
                    let ordering = order(item, current).map_err(|why| self.fail(why))?;
                    Some(if ordering == want { item } else { current })
                }
            };
        }
        Ok(best.cloned().unwrap_or(Value::Null))
    }

    fn date_of(&self, ev: &Evaluator<'_>, i: usize) -> Result<jiff::civil::Date, ExprError> {
        match self.value(i) {
            Value::Date(d) => Ok(*d),
            Value::Instant(t) => Ok(t.to_zoned(TimeZone::UTC).date()),
            _ => Err(self.wrong(ev, i, "a date")),
        }
    }

    /// `tier_price(tiers, qty, unit_price, mode)`: the amount of `qty` units at `unit_price`
    /// with the discount tiers (`[{from: 10, discount: 0.10}, ...]`), rounded half-up to
    /// cents. `"all_units"`: every unit gets the discount of the tier the quantity falls in.
    /// `"per_band"`: each unit gets the discount of its own tier (units 1-9 one discount,
    /// 10-49 the next...). Units below the first tier pay the unit price.
    fn tier_price(&self, ev: &mut Evaluator<'_>) -> Result<Value, ExprError> {
        let raw = self.list(ev, 0)?;
        ev.charge(raw.len(), self.node.at)?;
        let qty = self.number(ev, 1)?;
        let price = self.number(ev, 2)?;
        let mode = self.text(ev, 3)?;
        if qty < Decimal::ZERO {
            return Err(self.fail(format!("the quantity is {qty}, expected 0 or more")));
        }
        let mut tiers: Vec<(Decimal, Decimal)> = Vec::with_capacity(raw.len());
        for (i, tier) in raw.iter().enumerate() {
            let field = |name: &str| match tier {
                Value::Map(map) => match map.get(name) {
                    Some(Value::Number(n)) => Ok(*n),
                    _ => Err(self.fail(format!("tier {} has no number `{name}`", i + 1))),
                },
                other => Err(self.fail(format!(
                    "tier {} is {}, expected a map like {{from: 10, discount: 0.10}}",
                    i + 1,
                    a_type(other)
                ))),
            };
            let (from, discount) = (field("from")?, field("discount")?);
            if discount < Decimal::ZERO || discount > Decimal::ONE {
                return Err(self.fail(format!(
                    "tier {} has discount {discount}, expected a fraction from 0 to 1 (10% is 0.10)",
                    i + 1
                )));
            }
            tiers.push((from, discount));
        }
        tiers.sort_by_key(|tier| tier.0);
        // Two tiers from the same quantity: which discount applies is not said. Refused, as
        // a price list that means two things must be fixed, not read one way silently.
        if let Some(pair) = tiers.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(self.fail(format!(
                "two tiers start at {} (discounts {} and {}): each tier needs its own `from`",
                pair[0].0, pair[0].1, pair[1].1
            )));
        }
        let overflow = || self.fail("the amount is too large for a number");
        let at_discount = |units: Decimal, discount: Decimal| -> Result<Decimal, ExprError> {
            units
                .checked_mul(price)
                .and_then(|gross| gross.checked_mul(Decimal::ONE - discount))
                .ok_or_else(overflow)
        };
        let amount = match mode {
            "all_units" => {
                let discount = tiers
                    .iter()
                    .rev()
                    .find(|(from, _)| *from <= qty)
                    .map_or(Decimal::ZERO, |(_, d)| *d);
                at_discount(qty, discount)?
            }
            "per_band" => {
                // Tier i covers the units numbered from its `from` up to the next tier's
                // `from` minus one: the quantities (from - 1, next_from - 1].
                let mut total = Decimal::ZERO;
                let mut covered = Decimal::ZERO;
                let before = |from: Decimal| from.checked_sub(Decimal::ONE).ok_or_else(overflow);
                let first = match tiers.first() {
                    Some((from, _)) => before(*from)?,
                    None => qty,
                };
                let below = first.max(Decimal::ZERO).min(qty);
                total += at_discount(below, Decimal::ZERO)?;
                covered = covered.max(below);
                for (i, (from, discount)) in tiers.iter().enumerate() {
                    let low = before(*from)?.max(covered);
                    let high = match tiers.get(i + 1) {
                        Some((next, _)) => before(*next)?.min(qty),
                        None => qty,
                    };
                    if high > low {
                        total = total
                            .checked_add(at_discount(high - low, *discount)?)
                            .ok_or_else(overflow)?;
                        covered = high;
                    }
                }
                total
            }
            other => {
                return Err(self.fail(format!(
                    "the mode is \"{other}\", expected \"all_units\" or \"per_band\""
                )));
            }
        };
        Ok(Value::Number(amount.round_dp_with_strategy(
            2,
            RoundingStrategy::MidpointAwayFromZero,
        )))
    }

    /// `late_interest(principal, due_date, until, rates)`: statutory late-payment interest,
    /// simple, actual/365, rounded half-up to cents.
    ///
    /// The days charged are those after the due date up to and including `until`
    /// (`due < day <= until`, so `days_between(due, until)` days): interest runs "from the day
    /// after the due date" (Directive 2011/7/EU art. 3(3) and 4(1); D.Lgs. 231/2002 art. 4(1)),
    /// and the day of payment (or of the letter) is the last day counted. Each day is charged
    /// at the statutory rate of its half-year (D.Lgs. 231/2002 art. 5(2): the rate in force on
    /// the half-year's first day holds for the whole half-year), given by `rates`, a list of
    /// `{half_year: "2025-H1", statutory_rate: 11.15}` (percent). A day whose half-year has
    /// no rate is an error naming it: the function never guesses a rate. The sum over the days
    /// is exact; only the result is rounded.
    fn late_interest(&self, ev: &mut Evaluator<'_>) -> Result<Value, ExprError> {
        let principal = self.number(ev, 0)?;
        let due = self.date_of(ev, 1)?;
        let until = self.date_of(ev, 2)?;
        let raw = self.list(ev, 3)?;
        ev.charge(raw.len(), self.node.at)?;
        if principal < Decimal::ZERO {
            return Err(self.fail(format!("the principal is {principal}, expected 0 or more")));
        }
        let mut rates: Vec<(String, Decimal)> = Vec::with_capacity(raw.len());
        for (i, item) in raw.iter().enumerate() {
            let Value::Map(map) = item else {
                return Err(self.fail(format!(
                    "rate {} is {}, expected a map like {{half_year: \"2025-H1\", statutory_rate: 11.15}}",
                    i + 1,
                    a_type(item)
                )));
            };
            let label = match map.get("half_year") {
                Some(Value::String(s)) if parse_half_year(s).is_some() => s.trim().to_string(),
                _ => {
                    return Err(self.fail(format!(
                        "rate {} has no `half_year` like \"2025-H1\"",
                        i + 1
                    )));
                }
            };
            let rate = match map.get("statutory_rate") {
                Some(Value::Number(n)) if *n >= Decimal::ZERO && *n <= Decimal::ONE_HUNDRED => *n,
                _ => {
                    return Err(self.fail(format!(
                        "rate {} ({label}) has no `statutory_rate` in percent from 0 to 100",
                        i + 1
                    )));
                }
            };
            if rates.iter().any(|(known, _)| *known == label) {
                return Err(self.fail(format!("the half-year {label} has two rates")));
            }
            rates.push((label, rate));
        }
        if until <= due {
            return Ok(Value::Number(Decimal::new(0, 2)));
        }
        // Walk half-year by half-year: the days of each half-year inside (due, until] times its
        // rate. The walk is bounded: at most two half-years a year, each paid for by a step.
        let first_day = due.tomorrow().map_err(|e| self.fail(e.to_string()))?;
        let mut day = first_day;
        let mut rate_days = Decimal::ZERO;
        loop {
            ev.charge(1, self.node.at)?;
            let last = half_year_end(day).map_err(|e| self.fail(e))?.min(until);
            let label = half_year_label(day);
            let Some((_, rate)) = rates.iter().find(|(known, _)| *known == label) else {
                return Err(self.fail(format!(
                    "no statutory rate for the half-year {label} (needed for the days {day} to {last}); add it to the rates"
                )));
            };
            let span = last
                .since((Unit::Day, day))
                .map_err(|e| self.fail(e.to_string()))?;
            let count = days(span) + Decimal::ONE;
            rate_days = rate_days
                .checked_add(
                    rate.checked_mul(count)
                        .ok_or_else(|| self.fail("too large"))?,
                )
                .ok_or_else(|| self.fail("too large"))?;
            if last >= until {
                break;
            }
            day = last.tomorrow().map_err(|e| self.fail(e.to_string()))?;
        }
        let interest = principal
            .checked_mul(rate_days)
            .and_then(|n| n.checked_div(Decimal::from(36_500)))
            .ok_or_else(|| self.fail("the interest is too large for a number"))?;
        Ok(Value::Number(interest.round_dp_with_strategy(
            2,
            RoundingStrategy::MidpointAwayFromZero,
        )))
    }

    fn apply(&self, ev: &mut Evaluator<'a>, func: Func) -> Result<Value, ExprError> {
        let at = self.node.at;
        let value = match func {
            Func::Lower => Value::String(self.text(ev, 0)?.to_lowercase()),
            Func::Upper => Value::String(self.text(ev, 0)?.to_uppercase()),
            Func::Trim => Value::String(self.text(ev, 0)?.trim().to_string()),
            Func::EmailKey => Value::String(email_key(self.text(ev, 0)?)),
            Func::EmailBase => Value::String(email_base(self.text(ev, 0)?)),
            Func::Append => {
                let items = self.list(ev, 0)?;
                ev.charge(items.len(), at)?;
                let mut out = Vec::with_capacity(items.len() + 1);
                out.extend(items.iter().cloned());
                out.push(self.value(1).clone());
                check_list(&out, at)?;
                Value::List(out)
            }
            Func::Contains => match self.value(0) {
                Value::String(text) => Value::Bool(text.contains(self.text(ev, 1)?)),
                Value::List(items) => {
                    ev.charge(items.len(), at)?;
                    Value::Bool(items.contains(self.value(1)))
                }
                _ => return Err(self.wrong(ev, 0, "a text or a list")),
            },
            Func::StartsWith => Value::Bool(self.text(ev, 0)?.starts_with(self.text(ev, 1)?)),
            Func::EndsWith => Value::Bool(self.text(ev, 0)?.ends_with(self.text(ev, 1)?)),
            Func::Replace => {
                let (text, from, to) = (self.text(ev, 0)?, self.text(ev, 1)?, self.text(ev, 2)?);
                if from.is_empty() {
                    return Err(self.fail("the text to replace is empty"));
                }
                // Check the size before building, so a hostile replacement never allocates.
                let hits = text.matches(from).count();
                check_text(text.len() - hits * from.len() + hits * to.len(), at)?;
                Value::String(text.replace(from, to))
            }
            Func::Split => {
                let (text, separator) = (self.text(ev, 0)?, self.text(ev, 1)?);
                let parts: Vec<Value> = if separator.is_empty() {
                    text.chars()
                        .take(MAX_LIST_ITEMS + 1)
                        .map(|c| Value::String(c.to_string()))
                        .collect()
                } else {
                    text.split(separator)
                        .take(MAX_LIST_ITEMS + 1)
                        .map(|part| Value::String(part.to_string()))
                        .collect()
                };
                check_list(&parts, at)?;
                ev.charge(parts.len(), at)?;
                Value::List(parts)
            }
            Func::Join => {
                let items = self.list(ev, 0)?;
                let separator = if self.values.len() > 1 {
                    self.text(ev, 1)?
                } else {
                    ""
                };
                ev.charge(items.len(), at)?;
                let mut out = String::new();
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(separator);
                    }
                    out.push_str(&display_value(item));
                    check_text(out.len(), at)?;
                }
                Value::String(out)
            }
            Func::Len => match self.value(0) {
                Value::String(s) => Value::from(s.chars().count() as i64),
                Value::List(items) => Value::from(items.len() as i64),
                Value::Map(map) => Value::from(map.len() as i64),
                _ => return Err(self.wrong(ev, 0, "a text, a list or a map")),
            },
            Func::Count => Value::from(self.list(ev, 0)?.len() as i64),
            Func::Sum => Value::Number(self.total(&self.numbers(ev)?)?),
            Func::Avg => {
                let numbers = self.numbers(ev)?;
                if numbers.is_empty() {
                    Value::Null
                } else {
                    let total = self.total(&numbers)?;
                    Value::Number(
                        total
                            .checked_div(Decimal::from(numbers.len()))
                            .ok_or_else(|| self.fail("the average is too large"))?,
                    )
                }
            }
            Func::Min => self.extreme(ev, std::cmp::Ordering::Less)?,
            Func::Max => self.extreme(ev, std::cmp::Ordering::Greater)?,
            Func::Round => {
                let number = self.number(ev, 0)?;
                let places = if self.values.len() > 1 {
                    let places = self.number(ev, 1)?;
                    if !places.is_integer()
                        || places.is_sign_negative()
                        || places > Decimal::from(28)
                    {
                        return Err(self.fail(format!(
                            "the number of decimal places must be a whole number from 0 to 28, not {places}"
                        )));
                    }
                    u32::try_from(places).unwrap_or(0)
                } else {
                    0
                };
                // Half away from zero, as people round money: 1.125 -> 1.13, -2.5 -> -3.
                // rust_decimal's plain `round_dp` would round half to even.
                Value::Number(
                    number.round_dp_with_strategy(places, RoundingStrategy::MidpointAwayFromZero),
                )
            }
            Func::Floor => Value::Number(self.number(ev, 0)?.floor()),
            Func::Ceil => Value::Number(self.number(ev, 0)?.ceil()),
            Func::Abs => Value::Number(self.number(ev, 0)?.abs()),
            Func::Number => match self.value(0) {
                Value::Number(n) => Value::Number(*n),
                Value::Null => Value::Null,
                Value::String(text) => {
                    let trimmed = text.trim();
                    let parsed = if trimmed.contains(['e', 'E']) {
                        Decimal::from_scientific(trimmed).ok()
                    } else {
                        trimmed.parse::<Decimal>().ok()
                    };
                    match parsed {
                        Some(n) if !trimmed.is_empty() => Value::Number(n),
                        _ => {
                            let shown: String = text.chars().take(40).collect();
                            return Err(ExprError::new(
                                format!("number: \"{shown}\" is not a number"),
                                self.args[0].start,
                            ));
                        }
                    }
                }
                _ => return Err(self.wrong(ev, 0, "a text or a number")),
            },
            Func::String => match display_value_within(self.value(0), MAX_STRING_BYTES) {
                Some(text) => Value::String(text),
                None => {
                    return Err(ExprError::new(
                        format!("string: the text would be longer than {MAX_STRING_BYTES} bytes"),
                        self.args[0].start,
                    ));
                }
            },
            Func::IsNull => Value::Bool(matches!(self.value(0), Value::Null)),
            Func::IsEmpty => Value::Bool(match self.value(0) {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::List(items) => items.is_empty(),
                Value::Map(map) => map.is_empty(),
                _ => false,
            }),
            Func::Keys => match self.value(0) {
                Value::Map(map) => {
                    ev.charge(map.len(), at)?;
                    Value::List(map.keys().map(|k| Value::String(k.clone())).collect())
                }
                _ => return Err(self.wrong(ev, 0, "a map")),
            },
            Func::Values => match self.value(0) {
                Value::Map(map) => {
                    ev.charge(map.len(), at)?;
                    Value::List(map.values().cloned().collect())
                }
                _ => return Err(self.wrong(ev, 0, "a map")),
            },
            Func::Distinct => {
                let items = self.list(ev, 0)?;
                ev.charge(items.len(), at)?;
                // Values are neither `Hash` nor `Ord`; a canonical text per value (type and
                // normalized display) keeps this linear, and equal numbers such as 1 and 1.0
                // share one text.
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                for item in items {
                    let key = match item {
                        Value::List(_) | Value::Map(_) => item.to_json().to_string(),
                        other => display_value(other),
                    };
                    if seen.insert((item.type_name(), key)) {
                        out.push(item.clone());
                    }
                }
                Value::List(out)
            }
            Func::Sort => {
                let mut items = self.list(ev, 0)?.to_vec();
                ev.charge(items.len(), at)?;
                let mut problem = None;
                items.sort_by(|a, b| {
                    order(a, b).unwrap_or_else(|why| {
                        problem.get_or_insert(why);
                        std::cmp::Ordering::Equal
                    })
                });
                if let Some(why) = problem {
                    return Err(self.fail(why));
                }
                Value::List(items)
            }
            Func::Date => match self.value(0) {
                Value::String(text) => Value::Date(text.trim().parse().map_err(|_| {
                    ExprError::new(
                        format!("date: \"{text}\" is not a date (write YYYY-MM-DD)"),
                        self.args[0].start,
                    )
                })?),
                Value::Date(_) | Value::Instant(_) => Value::Date(self.date_of(ev, 0)?),
                _ => return Err(self.wrong(ev, 0, "a text")),
            },
            Func::Instant => match self.value(0) {
                Value::String(text) => Value::Instant(text.trim().parse().map_err(|_| {
                    ExprError::new(
                        format!(
                            "instant: \"{text}\" is not an instant (write 2025-03-31T09:00:00Z)"
                        ),
                        self.args[0].start,
                    )
                })?),
                Value::Instant(t) => Value::Instant(*t),
                Value::Date(d) => Value::Instant(
                    d.to_zoned(TimeZone::UTC)
                        .map_err(|e| self.fail(e.to_string()))?
                        .timestamp(),
                ),
                _ => return Err(self.wrong(ev, 0, "a text")),
            },
            Func::Duration => match self.value(0) {
                Value::String(text) => Value::Duration(text.trim().parse().map_err(|_| {
                    ExprError::new(
                        format!("duration: \"{text}\" is not a duration (write P3D, PT2H, P1M)"),
                        self.args[0].start,
                    )
                })?),
                Value::Duration(span) => Value::Duration(*span),
                _ => return Err(self.wrong(ev, 0, "a text")),
            },
            Func::Now => Value::Instant(ev.ctx.now),
            Func::Today => Value::Date(ev.ctx.now.to_zoned(ev.ctx.zone.clone()).date()),
            Func::DaysBetween => {
                let (from, to) = (self.date_of(ev, 0)?, self.date_of(ev, 1)?);
                let span = to
                    .since((Unit::Day, from))
                    .map_err(|e| self.fail(e.to_string()))?;
                Value::Number(days(span))
            }
            Func::AddDays => {
                let date = self.date_of(ev, 0)?;
                let n = self.number(ev, 1)?;
                if !n.fract().is_zero() {
                    return Err(self.fail(format!("the number of days must be whole, not {n}")));
                }
                let n = i64::try_from(n)
                    .ok()
                    .filter(|n| n.abs() <= 1_000_000)
                    .ok_or_else(|| self.fail(format!("{n} days is too far")))?;
                Value::Date(
                    date.checked_add(
                        jiff::Span::new()
                            .try_days(n)
                            .map_err(|e| self.fail(e.to_string()))?,
                    )
                    .map_err(|e| self.fail(e.to_string()))?,
                )
            }
            Func::EndOfMonth => Value::Date(self.date_of(ev, 0)?.last_of_month()),
            Func::TierPrice => self.tier_price(ev)?,
            Func::LateInterest => self.late_interest(ev)?,
            Func::HalfYear => Value::String(half_year_label(self.date_of(ev, 0)?)),
            Func::CompoundDiscount => {
                let discounts = self.numbers(ev)?;
                let mut kept = Decimal::ONE;
                for (i, d) in discounts.iter().enumerate() {
                    if *d < Decimal::ZERO || *d > Decimal::ONE {
                        return Err(self.fail(format!(
                            "discount {} is {d}, expected a fraction from 0 to 1 (10% is 0.10)",
                            i + 1
                        )));
                    }
                    kept = kept
                        .checked_mul(Decimal::ONE - d)
                        .ok_or_else(|| self.fail("the result is too precise for a number"))?;
                }
                Value::Number((Decimal::ONE - kept).normalize())
            }
            Func::Coalesce => Value::Null,
        };
        if let Value::List(items) = &value {
            check_list(items, at)?;
        }
        Ok(value)
    }
}

/// An e-mail address as an identity: without the spaces around it, lower-cased, so that
/// `  Mario.Rossi@Example.IT ` and `mario.rossi@example.it` are one address.
pub fn email_key(address: &str) -> String {
    address.trim().to_lowercase()
}

/// [`email_key`] without a `+tag` in the part before the `@`: `mario.rossi+news@example.it`
/// gives `mario.rossi@example.it`. The same as `email_key` for an address without a tag, or
/// with no `@` at all.
pub fn email_base(address: &str) -> String {
    let key = email_key(address);
    match key.rsplit_once('@') {
        Some((local, domain)) => match local.split_once('+') {
            Some((base, _tag)) if !base.is_empty() => format!("{base}@{domain}"),
            _ => key,
        },
        None => key,
    }
}

/// `2025-H1` for a day from January to June, `2025-H2` from July to December.
pub(crate) fn half_year_label(date: jiff::civil::Date) -> String {
    let half = if date.month() <= 6 { 1 } else { 2 };
    format!("{:04}-H{half}", date.year())
}

/// The year and half (1 or 2) of a label such as `2025-H1`.
fn parse_half_year(label: &str) -> Option<(i16, i8)> {
    let (year, half) = label.trim().split_once("-H")?;
    let year: i16 = year.parse().ok().filter(|y| (1..=9999).contains(y))?;
    let half: i8 = half.parse().ok().filter(|h| *h == 1 || *h == 2)?;
    Some((year, half))
}

/// The last day of the half-year of `date`: June 30 or December 31.
fn half_year_end(date: jiff::civil::Date) -> Result<jiff::civil::Date, String> {
    let (month, day) = if date.month() <= 6 { (6, 30) } else { (12, 31) };
    jiff::civil::Date::new(date.year(), month, day).map_err(|e| e.to_string())
}

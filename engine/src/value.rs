//! Values of process variables and expressions: decimals, never binary floats.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The variables of an instance or a scope, by name.
pub type Vars = BTreeMap<String, Value>;

/// A value a process variable or an expression can hold.
///
/// Numbers are `rust_decimal::Decimal`, so `0.1 + 0.2 == 0.3`. Dates are calendar dates
/// (`2025-03-31`), instants are points in time (`2025-03-31T09:00:00Z`), durations are ISO 8601
/// spans (`P1D`, `PT2H`) that keep calendar units apart from hours.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    #[serde(with = "rust_decimal::serde::str")]
    Number(Decimal),
    String(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Date(jiff::civil::Date),
    Instant(jiff::Timestamp),
    Duration(jiff::Span),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Number(a), Number(b)) => a == b,
            (String(a), String(b)) => a == b,
            (List(a), List(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            (Date(a), Date(b)) => a == b,
            (Instant(a), Instant(b)) => a == b,
            (Duration(a), Duration(b)) => a.fieldwise() == b.fieldwise(),
            _ => false,
        }
    }
}

impl Value {
    /// The name of this value's type, as analysts read it in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Date(_) => "date",
            Value::Instant(_) => "instant",
            Value::Duration(_) => "duration",
        }
    }

    /// Reads a JSON value. Numbers keep every digit (serde_json's `arbitrary_precision`), so
    /// `19.99` is the decimal 19.99. A number a decimal cannot hold exactly (more than 28
    /// digits after the point, or too large) is refused, never rounded or turned into text.
    /// Strings stay strings: JSON has no date type.
    pub fn from_json(json: serde_json::Value) -> Result<Value, NumberError> {
        Ok(match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(exact_decimal(&n.to_string())?),
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(items) => Value::List(
                items
                    .into_iter()
                    .map(Value::from_json)
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(map) => Value::Map(
                map.into_iter()
                    .map(|(k, v)| Ok((k, Value::from_json(v)?)))
                    .collect::<Result<_, NumberError>>()?,
            ),
        })
    }

    /// Writes this value as JSON: numbers as exact JSON numbers, dates, instants and durations
    /// as ISO 8601 strings.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(d) => {
                serde_json::from_str::<serde_json::Number>(&d.normalize().to_string())
                    .map(serde_json::Value::Number)
                    .unwrap_or_else(|_| serde_json::Value::String(d.to_string()))
            }
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::List(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
            Value::Map(map) => serde_json::Value::Object(
                map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            ),
            Value::Date(d) => serde_json::Value::String(d.to_string()),
            Value::Instant(t) => serde_json::Value::String(t.to_string()),
            Value::Duration(s) => serde_json::Value::String(s.to_string()),
        }
    }
}

/// A JSON number that a decimal cannot hold exactly.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the number {text} cannot be held exactly as a decimal: {reason}")]
pub struct NumberError {
    pub text: String,
    pub reason: &'static str,
}

/// Parses a number's text into a decimal, refusing any loss: too many digits, too large, or a
/// non-zero value that would round to zero.
pub fn exact_decimal(text: &str) -> Result<Decimal, NumberError> {
    let refuse = |reason| NumberError {
        text: text.to_string(),
        reason,
    };
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).map_err(|_| refuse("it is outside the range of decimals"))?
    } else {
        let digits_after_point = text.split_once('.').map(|(_, f)| f.len()).unwrap_or(0);
        if digits_after_point > 28 {
            return Err(refuse("it has more than 28 digits after the point"));
        }
        text.parse::<Decimal>()
            .map_err(|_| refuse("it has more than 28 significant digits or is too large"))?
    };
    if parsed.is_zero()
        && text.bytes().any(|b| (b'1'..=b'9').contains(&b))
        && !text.contains(['e', 'E'])
    {
        return Err(refuse("it is too small"));
    }
    if text.contains(['e', 'E']) {
        // Scientific notation: the mantissa's digits must all survive.
        let mantissa = text.split(['e', 'E']).next().unwrap_or("");
        let significant = mantissa
            .trim_start_matches(['-', '+', '0', '.'])
            .replace('.', "");
        let significant = significant.trim_end_matches('0');
        if parsed.is_zero() && !significant.is_empty() {
            return Err(refuse("it is too small"));
        }
        if significant.len() > 28 {
            return Err(refuse("it has more than 28 significant digits"));
        }
    }
    // A text that parses but loses digits (rust_decimal rounds past its precision) is refused.
    if !text.contains(['e', 'E']) && digits(text) != digits(&parsed.to_string()) {
        return Err(refuse("it has more digits than a decimal holds"));
    }
    Ok(parsed.normalize())
}

/// The significant digits of a plain decimal text: no sign, point, or leading and trailing
/// zeros (`-0012.500` -> `125`).
fn digits(text: &str) -> String {
    let unsigned = text.trim_start_matches(['-', '+']);
    let trimmed = if unsigned.contains('.') {
        unsigned.trim_end_matches('0')
    } else {
        unsigned
    };
    trimmed.replace('.', "").trim_start_matches('0').to_string()
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<Decimal> for Value {
    fn from(d: Decimal) -> Self {
        Value::Number(d)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Number(Decimal::from(i))
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

/// An amount rounded to cents (half away from zero) with thousands grouped: `1,220.00`, or
/// `1.220,00` for the languages that write a decimal comma (it, de, es, fr, pt, nl; `it-CH`
/// counts as `it`). For e-mails and pages; values themselves stay exact decimals.
pub fn format_money(amount: rust_decimal::Decimal, locale: &str) -> String {
    let rounded =
        amount.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    let plain = format!("{:.2}", rounded.abs());
    let (whole, cents) = plain.split_once('.').unwrap_or((&plain, "00"));
    let language = locale.split(['-', '_']).next().unwrap_or("");
    let (group, point) = match language {
        "it" | "de" | "es" | "fr" | "pt" | "nl" => ('.', ','),
        _ => (',', '.'),
    };
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(group);
        }
        grouped.push(digit);
    }
    let sign = if rounded.is_sign_negative() && !rounded.is_zero() {
        "-"
    } else {
        ""
    };
    format!("{sign}{grouped}{point}{cents}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_a_decimal_cannot_hold_are_refused() {
        for text in [
            "1e400",
            "123456789012345678901234567890123",
            "0.000000000000000000000000000000001",
            "1e-33",
        ] {
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            assert!(Value::from_json(json).is_err(), "{text}");
        }
        for (text, exact) in [
            ("1e3", "1000"),
            ("2.50", "2.5"),
            ("-0.1", "-0.1"),
            ("1.5E-2", "0.015"),
        ] {
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                Value::from_json(json).unwrap(),
                Value::Number(exact.parse().unwrap()),
                "{text}"
            );
        }
    }

    #[test]
    fn json_numbers_are_exact_decimals() {
        let v = Value::from_json(serde_json::json!({"a": 0.1, "b": [1, 2.50]})).unwrap();
        let Value::Map(m) = &v else {
            panic!("map expected")
        };
        assert_eq!(m["a"], Value::Number("0.1".parse().unwrap()));
        assert_eq!(v.to_json().to_string(), r#"{"a":0.1,"b":[1,2.5]}"#);
    }
}

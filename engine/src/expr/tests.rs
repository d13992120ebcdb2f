//! The language rules of the expression engine, one test per rule.

use std::str::FromStr;

use rust_decimal::Decimal;

use super::*;
use crate::value::Vars;

fn ctx() -> Context {
    Context {
        now: "2025-03-31T09:00:00Z".parse().unwrap(),
    }
}

fn vars() -> Vars {
    let json = serde_json::json!({
        "amount": 250,
        "score": 120,
        "name": "Ada",
        "flag": true,
        "nothing": null,
        "tags": ["vip", "eu"],
        "lead": {"company": {"name": "Acme"}, "empty": null, "owner": null},
        "orphan": {},
        "items": [{"price": 10.5}, {"price": 2}],
    });
    let Value::Map(map) = Value::from_json(json) else {
        unreachable!()
    };
    map
}

fn eval(source: &str) -> Result<Value, ExprError> {
    Expr::parse(source)?.eval(&vars(), &ctx())
}

fn ok(source: &str) -> Value {
    eval(source).unwrap_or_else(|e| panic!("{source}: {e}"))
}

fn err(source: &str) -> ExprError {
    match eval(source) {
        Ok(v) => panic!("{source}: expected an error, got {v:?}"),
        Err(e) => e,
    }
}

fn num(text: &str) -> Value {
    Value::Number(Decimal::from_str(text).unwrap())
}

fn text(s: &str) -> Value {
    Value::String(s.to_string())
}

#[test]
fn decimals_are_exact() {
    assert_eq!(ok("0.1 + 0.2 == 0.3"), Value::Bool(true));
    assert_eq!(ok("0.1 + 0.2"), num("0.3"));
    assert_eq!(ok("amount * 2"), num("500"));
}

#[test]
fn division_is_decimal_and_checked() {
    assert_eq!(ok("10 / 3"), num("3.3333333333333333333333333333"));
    assert!(err("1 / 0").message.contains("division by zero"));
    assert!(err("1 % 0").message.contains("division by zero"));
    assert_eq!(ok("10 % 3"), num("1"));
    let overflow = err("79228162514264337593543950335 * 10");
    assert!(overflow.message.contains("too large"), "{overflow}");
    assert!(
        err("79228162514264337593543950335 + 1")
            .message
            .contains("too large")
    );
}

#[test]
fn round_is_half_away_from_zero() {
    assert_eq!(ok("round(1.125, 2)"), num("1.13"));
    assert_eq!(ok("round(17.50 * 0.07, 2)"), num("1.23"));
    assert_eq!(ok("round(-2.5)"), num("-3"));
    assert_eq!(ok("round(2.5)"), num("3"));
    assert_eq!(ok("floor(2.7)"), num("2"));
    assert_eq!(ok("ceil(2.1)"), num("3"));
    assert_eq!(ok("abs(-4.5)"), num("4.5"));
    assert!(err("round(1, -1)").message.contains("decimal places"));
}

#[test]
fn literals() {
    assert_eq!(ok("\"a\\\"b\""), text("a\"b"));
    assert_eq!(ok("'it\\'s'"), text("it's"));
    assert_eq!(ok("'\\u{e9}\\n'"), text("é\n"));
    assert_eq!(ok("null"), Value::Null);
    assert_eq!(ok("[1, 2]"), Value::List(vec![num("1"), num("2")]));
    let Value::Map(map) = ok("{a: 1, \"b c\": amount}") else {
        panic!("map expected")
    };
    assert_eq!(map["a"], num("1"));
    assert_eq!(map["b c"], num("250"));
    assert!(
        Expr::parse("'open")
            .unwrap_err()
            .message
            .contains("not closed")
    );
}

#[test]
fn operators_and_precedence() {
    assert_eq!(ok("1 + 2 * 3"), num("7"));
    assert_eq!(ok("(1 + 2) * 3"), num("9"));
    assert_eq!(ok("-amount + 1"), num("-249"));
    assert_eq!(ok("2 - 3 - 4"), num("-5"));
    assert_eq!(ok("score > 100 and amount <= 250"), Value::Bool(true));
    assert_eq!(ok("score > 100 && !(amount < 250)"), Value::Bool(true));
    assert_eq!(ok("false or not flag || true"), Value::Bool(true));
    assert_eq!(ok("not 1 == 2"), Value::Bool(true));
    assert_eq!(ok("\"b\" > \"a\""), Value::Bool(true));
    assert_eq!(ok("1 != 2"), Value::Bool(true));
    assert_eq!(ok("if score > 100 then 'high' else 'low'"), text("high"));
    assert!(
        Expr::parse("1 < 2 < 3")
            .unwrap_err()
            .message
            .contains("chained")
    );
}

#[test]
fn in_coalesce_and_concatenation() {
    assert_eq!(ok("'vip' in tags"), Value::Bool(true));
    assert_eq!(ok("'us' not in tags"), Value::Bool(true));
    assert_eq!(ok("'company' in lead"), Value::Bool(true));
    assert_eq!(ok("'cm' in 'Acme'"), Value::Bool(true));
    assert_eq!(ok("nothing ?? 5"), num("5"));
    assert_eq!(ok("lead.empty ?? 0 > -1"), Value::Bool(true));
    assert_eq!(ok("amount ?? 5"), num("250"));
    assert_eq!(ok("'a' + 'b'"), text("ab"));
    assert_eq!(ok("'total: ' + 12.50"), text("total: 12.5"));
    assert_eq!(ok("tags[0]"), text("vip"));
    assert_eq!(ok("tags[5]"), Value::Null);
    assert_eq!(ok("lead[\"company\"][\"name\"]"), text("Acme"));
    assert_eq!(ok("items[0].price"), num("10.5"));
    assert_eq!(ok("[1, 2, amount][2]"), num("250"));
}

#[test]
fn null_safety() {
    assert_eq!(ok("lead.company.name"), text("Acme"));
    assert_eq!(ok("lead.company?.name"), text("Acme"));
    assert_eq!(ok("orphan.company?.name"), Value::Null);
    assert_eq!(ok("lead.owner?.name"), Value::Null);
    assert_eq!(ok("lead.missing"), Value::Null);
    assert_eq!(ok("lead.owner?.[0]"), Value::Null);
    let e = err("lead.owner.name");
    assert!(e.message.contains("`lead.owner` is null"), "{e}");
    assert!(e.message.contains("lead.owner?.name"), "{e}");
    assert_eq!(e.offset, 10);
    let e = err("nothing.b");
    assert!(
        e.message.contains("`nothing`") && e.message.contains("?."),
        "{e}"
    );
    let e = err("amont * 2");
    assert_eq!(e.message, "unknown variable `amont`");
    assert_eq!(e.offset, 0);
    assert_eq!(ok("nothing == null"), Value::Bool(true));
    assert_eq!(ok("amount == null"), Value::Bool(false));
    let e = err("nothing > 1");
    assert!(e.message.contains("`nothing` is null"), "{e}");
    assert!(err("1 <= nothing").message.contains("`nothing` is null"));
}

#[test]
fn booleans_are_strict() {
    let e = err("score and true");
    assert_eq!(e.message, "`score` is a number, expected a boolean");
    assert_eq!(
        err("not name").message,
        "`name` is a string, expected a boolean"
    );
    assert!(
        err("if amount then 1 else 2")
            .message
            .contains("expected a boolean")
    );
    // Short-circuit: the right side is never looked at.
    assert_eq!(ok("false and missing_variable"), Value::Bool(false));
    assert_eq!(ok("true or 1 / 0 == 1"), Value::Bool(true));
    assert!(err("true and 5").message.contains("`5` is a number"));
}

#[test]
fn parse_errors_point_at_the_token() {
    let e = Expr::parse("amount * * 2").unwrap_err();
    assert_eq!(e.offset, 9);
    assert_eq!(
        e.to_string(),
        "unexpected `*`, expected a value at column 10"
    );
    let e = Expr::parse("amount +").unwrap_err();
    assert_eq!(e.message, "unexpected end of expression");
    let e = Expr::parse("(1 + 2").unwrap_err();
    assert!(e.message.contains("expected `)`"), "{e}");
    let e = Expr::parse("a = 1").unwrap_err();
    assert!(e.message.contains("=="), "{e}");
    assert_eq!(e.offset, 2);
    assert!(Expr::parse("").is_err());
}

#[test]
fn variables_lists_roots_once() {
    let expr =
        Expr::parse("lead.company?.name == name or amount > min(amount, limit) ?? 1").unwrap();
    assert_eq!(expr.variables(), ["lead", "name", "amount", "limit"]);
    assert_eq!(
        expr.source(),
        "lead.company?.name == name or amount > min(amount, limit) ?? 1"
    );
}

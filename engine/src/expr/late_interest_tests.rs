//! `late_interest` and `half_year`, with values computed by hand from the rule: simple
//! interest, actual/365, from the day after the due date through `until`, each day at the
//! statutory rate of its half-year, rounded half-up to cents.

use rust_decimal::Decimal;

use super::*;
use crate::value::Vars;

/// The statutory rates of `processes/data/late-payment-rates.yaml` for 2024 and 2025, and an
/// odd one (2030 H1 at 10%) for the rounding test. 2026 H2 is absent, as in the shipped file.
fn vars() -> Vars {
    let json = serde_json::json!({
        "rates": [
            {"half_year": "2024-H1", "statutory_rate": 12.50},
            {"half_year": "2024-H2", "statutory_rate": 12.25},
            {"half_year": "2025-H1", "statutory_rate": 11.15},
            {"half_year": "2025-H2", "statutory_rate": 10.15},
            {"half_year": "2026-H1", "statutory_rate": 10.15},
            {"half_year": "2030-H1", "statutory_rate": 10},
        ],
        "twice": [
            {"half_year": "2025-H1", "statutory_rate": 11.15},
            {"half_year": "2025-H1", "statutory_rate": 3.15},
        ],
    });
    let Ok(Value::Map(map)) = Value::from_json(json) else {
        unreachable!()
    };
    map
}

fn ctx() -> Context {
    Context::utc("2025-04-21T09:00:00Z".parse().unwrap())
}

fn eval(source: &str) -> Result<Value, ExprError> {
    Expr::parse(source)?.eval(&vars(), &ctx())
}

fn interest(principal: &str, due: &str, until: &str) -> Result<Value, ExprError> {
    eval(&format!(
        "late_interest({principal}, date(\"{due}\"), date(\"{until}\"), rates)"
    ))
}

fn num(text: &str) -> Value {
    Value::Number(text.parse::<Decimal>().unwrap())
}

#[test]
fn ten_days_in_one_half_year() {
    // 1000.00 x 11.15% x 10/365 = 3.0547... -> 3.05 (days 2025-04-01 to 2025-04-10).
    assert_eq!(
        interest("1000.00", "2025-03-31", "2025-04-10").unwrap(),
        num("3.05")
    );
}

#[test]
fn the_issue_example_amounts() {
    // 720.00 x 11.15% x 21/365 = 4.6188... -> 4.62 (2025-04-01 through 2025-04-21).
    assert_eq!(
        interest("720.00", "2025-03-31", "2025-04-21").unwrap(),
        num("4.62")
    );
    // 500.00 x 11.15% x 10/365 = 1.5274... -> 1.53.
    assert_eq!(
        interest("500.00", "2025-03-31", "2025-04-10").unwrap(),
        num("1.53")
    );
}

#[test]
fn each_day_at_the_rate_of_its_half_year() {
    // 2025-06-26..06-30: 5 days at 11.15; 2025-07-01..07-05: 5 days at 10.15.
    // 1000 x (5 x 11.15 + 5 x 10.15) / 36500 = 1000 x 106.5 / 36500 = 2.9178... -> 2.92
    // (all days at 11.15 would give 3.05, all at 10.15 2.78).
    assert_eq!(
        interest("1000", "2025-06-25", "2025-07-05").unwrap(),
        num("2.92")
    );
    // A whole year: 181 days of 2025 H1 at 11.15 and 184 of H2 at 10.15:
    // 1000 x (2018.15 + 1867.60) / 36500 = 106.4589... -> 106.46.
    assert_eq!(
        interest("1000", "2024-12-31", "2025-12-31").unwrap(),
        num("106.46")
    );
}

#[test]
fn actual_over_365_also_in_a_leap_year() {
    // 2024-02-28, 02-29, 03-01: 3 days at 12.50, divided by 365 (not 366):
    // 1000 x 12.5 x 3 / 36500 = 1.0273... -> 1.03.
    assert_eq!(
        interest("1000", "2024-02-27", "2024-03-01").unwrap(),
        num("1.03")
    );
}

#[test]
fn rounds_half_up_to_cents() {
    // 18.25 x 10% x 1/365 = 0.005 exactly: half-up gives 0.01 (half-even would give 0.00).
    assert_eq!(
        interest("18.25", "2030-01-01", "2030-01-02").unwrap(),
        num("0.01")
    );
}

#[test]
fn no_days_late_is_zero() {
    assert_eq!(
        interest("1000", "2025-03-31", "2025-03-31").unwrap(),
        num("0.00")
    );
    assert_eq!(
        interest("1000", "2025-03-31", "2025-03-01").unwrap(),
        num("0.00")
    );
    // One day: the day after the due date counts.
    // 36500 x 11.15% / 365 = 11.15.
    assert_eq!(
        interest("36500", "2025-03-31", "2025-04-01").unwrap(),
        num("11.15")
    );
}

#[test]
fn a_half_year_without_a_rate_is_an_error_naming_it() {
    let error = interest("1000", "2026-06-20", "2026-07-10").unwrap_err();
    assert!(error.message.contains("2026-H2"), "{}", error.message);
    assert!(error.message.contains("late_interest"), "{}", error.message);
    // Also when the gap is in the middle of the span.
    let error = interest("1000", "2026-12-01", "2030-01-05").unwrap_err();
    assert!(error.message.contains("2026-H2"), "{}", error.message);
}

#[test]
fn bad_inputs_are_errors_not_guesses() {
    let error =
        eval("late_interest(1000, date(\"2025-03-31\"), date(\"2025-04-10\"), twice)").unwrap_err();
    assert!(error.message.contains("two rates"), "{}", error.message);
    let error = interest("-5", "2025-03-31", "2025-04-10").unwrap_err();
    assert!(error.message.contains("principal"), "{}", error.message);
    let error = eval("late_interest(1000, date(\"2025-03-31\"), date(\"2025-04-10\"), [{half_year: \"2025-1\", statutory_rate: 11.15}])")
        .unwrap_err();
    assert!(error.message.contains("half_year"), "{}", error.message);
    let error = eval("late_interest(1000, date(\"2025-03-31\"), date(\"2025-04-10\"), [{half_year: \"2025-H1\"}])")
        .unwrap_err();
    assert!(
        error.message.contains("statutory_rate"),
        "{}",
        error.message
    );
    let error = eval("late_interest(\"x\", date(\"2025-03-31\"), date(\"2025-04-10\"), rates)")
        .unwrap_err();
    assert!(error.message.contains("number"), "{}", error.message);
}

#[test]
fn a_very_long_span_stays_bounded() {
    // From year 1 to 9999 the walk is about 20,000 half-years: it stops at the first one
    // without a rate instead of running on.
    let error = interest("1", "0001-01-01", "9999-12-31").unwrap_err();
    assert!(error.message.contains("0001-H1"), "{}", error.message);
}

#[test]
fn half_year_names_the_half() {
    assert_eq!(
        eval("half_year(date(\"2025-06-30\"))").unwrap(),
        Value::String("2025-H1".into())
    );
    assert_eq!(
        eval("half_year(date(\"2025-07-01\"))").unwrap(),
        Value::String("2025-H2".into())
    );
}

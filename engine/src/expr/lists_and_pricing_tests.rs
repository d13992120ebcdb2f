//! List comprehensions and the pricing and date functions, with hand-computed values.

use rust_decimal::Decimal;

use super::*;
use crate::value::Vars;

fn ctx() -> Context {
    Context::utc("2025-03-31T09:00:00Z".parse().unwrap())
}

fn vars() -> Vars {
    let json = serde_json::json!({
        "quote": {"lines": [
            {"product": "A", "qty": 2, "price": 10.5},
            {"product": "B", "qty": 0, "price": 99},
            {"product": "C", "qty": 3, "price": 2},
        ]},
        "l": "outer",
        "tiers": [
            {"from": 1, "discount": 0},
            {"from": 10, "discount": 0.10},
            {"from": 50, "discount": 0.15},
        ],
        "matrix": {"a": 1, "b": 2},
        "key": "b",
    });
    let Ok(Value::Map(map)) = Value::from_json(json) else {
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

fn err(source: &str) -> String {
    match eval(source) {
        Ok(v) => panic!("{source} gave {v:?}, expected an error"),
        Err(e) => e.message,
    }
}

fn num(text: &str) -> Value {
    Value::Number(text.parse::<Decimal>().unwrap())
}

fn nums(texts: &[&str]) -> Value {
    Value::List(texts.iter().map(|t| num(t)).collect())
}

#[test]
fn a_comprehension_maps_each_item() {
    assert_eq!(
        ok("[l.qty * l.price for l in quote.lines]"),
        nums(&["21", "0", "6"])
    );
    assert_eq!(ok("sum([l.qty * l.price for l in quote.lines])"), num("27"));
    assert_eq!(ok("[x * 2 for x in [1, 2, 3]]"), nums(&["2", "4", "6"]));
    assert_eq!(ok("[x for x in []]"), Value::List(vec![]));
}

#[test]
fn a_comprehension_filters_with_if() {
    assert_eq!(
        ok("[l.product for l in quote.lines if l.qty > 0]"),
        Value::List(vec![Value::String("A".into()), Value::String("C".into())])
    );
    assert_eq!(ok("len([l for l in quote.lines if l.qty > 0])"), num("2"));
    assert_eq!(
        ok("min([l.price for l in quote.lines if l.qty > 0])"),
        num("2")
    );
    assert_eq!(ok("max([l.price for l in quote.lines])"), num("99"));
    // The filter must be a boolean, as every condition.
    assert!(err("[x for x in [1] if x]").contains("expected a boolean"));
}

#[test]
fn the_loop_variable_shadows_and_does_not_leak() {
    // `l` is a process variable too: inside, the item wins; outside, the variable.
    assert_eq!(ok("[l.qty for l in quote.lines][0]"), num("2"));
    assert_eq!(ok("l"), Value::String("outer".into()));
    assert_eq!(
        ok("[[x * y for y in [1, 10]] for x in [1, 2]]"),
        Value::List(vec![nums(&["1", "10"]), nums(&["2", "20"])])
    );
    // An owned list (built by the expression) works as well as a borrowed one.
    assert_eq!(
        ok("[x + 1 for x in [y * 2 for y in [1, 2]]]"),
        nums(&["3", "5"])
    );
    assert!(err("[y for x in [1]]").contains("unknown variable `y`"));
    let expr = Expr::parse("[l.qty * rate for l in quote.lines if l.qty > min]").unwrap();
    assert_eq!(expr.variables(), vec!["quote", "rate", "min"]);
}

#[test]
fn a_default_with_question_marks_reads_the_loop_variable() {
    // The loop variable is not a variable of the scope, yet `??` must read it: a line's own
    // discount, not the default for every line.
    assert_eq!(
        ok("[x.price ?? 0 for x in quote.lines]"),
        nums(&["10.5", "99", "2"])
    );
    assert_eq!(
        ok("[x.discount ?? 0 for x in quote.lines]"),
        nums(&["0", "0", "0"])
    );
    assert_eq!(ok("[y ?? 1 for y in [null, 2, 3]]"), nums(&["1", "2", "3"]));
    // A variable unknown to the scope and to the comprehension still reads as null.
    assert_eq!(ok("[nothing ?? 5 for x in [1]]"), nums(&["5"]));
}

#[test]
fn a_chain_of_defaults_tolerates_every_missing_variable_but_the_last() {
    // `a ?? b ?? c` is `a ?? (b ?? c)`: `b`, like `a`, may be missing.
    assert_eq!(ok("nothing ?? missing ?? 3"), num("3"));
    assert_eq!(ok("nothing ?? key ?? 3"), Value::String("b".into()));
    assert_eq!(ok("null ?? missing ?? null ?? 4"), num("4"));
    assert_eq!(ok("1 ?? missing ?? 3"), num("1"));
    assert!(err("nothing ?? missing").contains("unknown variable `missing`"));
    assert!(err("nothing ?? missing ?? gone").contains("unknown variable `gone`"));
}

#[test]
fn comprehension_syntax_errors_are_clear() {
    assert!(
        Expr::parse("[x for in xs]")
            .unwrap_err()
            .message
            .contains("expected a name")
    );
    assert!(
        Expr::parse("[x for x xs]")
            .unwrap_err()
            .message
            .contains("expected `in`")
    );
    assert!(Expr::parse("[x for x in xs if]").is_err());
    assert!(Expr::parse("[x for x in xs").is_err());
    assert!(err("[x for x in 5]").contains("expected a list"));
}

#[test]
fn comprehensions_stay_within_the_sandbox() {
    // 1,000 x 1,000 items is more than the step budget: an error, not a long run.
    let big = "[[y for y in xs] for x in xs]";
    let xs: Vec<Value> = (0..1000).map(Value::from).collect();
    let mut vars = Vars::new();
    vars.insert("xs".into(), Value::List(xs));
    let e = Expr::parse(big).unwrap().eval(&vars, &ctx()).unwrap_err();
    assert!(e.message.contains("steps"), "{e}");
    // Copying an owned item is paid by its size.
    let copy = "[[b for c in xs] for b in [[x for x in xs]]]";
    let e = Expr::parse(&format!("len({copy})"))
        .unwrap()
        .eval(&vars, &ctx());
    assert!(e.is_err(), "{e:?}");
}

#[test]
fn tier_price_all_units_and_per_band() {
    // Test 2 of the lead-to-cash issue: 60 units at 100.00, tiers 1-9 0%, 10-49 10%, 50+ 15%.
    // All units: 60 x 85.00 = 5,100.00.
    assert_eq!(
        ok(r#"tier_price(tiers, 60, 100.00, "all_units")"#),
        num("5100")
    );
    // Per band: 9 x 100 + 40 x 90 + 11 x 85 = 900 + 3,600 + 935 = 5,435.00.
    assert_eq!(
        ok(r#"tier_price(tiers, 60, 100.00, "per_band")"#),
        num("5435")
    );
    // On a band's edge: 10 units, all units at 10% = 900; per band 9 x 100 + 1 x 90 = 990.
    assert_eq!(ok(r#"tier_price(tiers, 10, 100, "all_units")"#), num("900"));
    assert_eq!(ok(r#"tier_price(tiers, 10, 100, "per_band")"#), num("990"));
    // Inside the first band, both modes agree: 5 x 19.99 = 99.95.
    assert_eq!(
        ok(r#"tier_price(tiers, 5, 19.99, "per_band")"#),
        num("99.95")
    );
    assert_eq!(ok(r#"tier_price(tiers, 0, 19.99, "all_units")"#), num("0"));
    // Rounded half-up to cents: 3 x 0.335 x 0.9 = 0.9045 -> 0.90; 1 x 0.125 = 0.13.
    assert_eq!(
        ok(r#"tier_price(tiers, 3, 0.335, "all_units")"#),
        num("1.01")
    );
    assert_eq!(ok(r#"tier_price([], 1, 0.125, "all_units")"#), num("0.13"));
    // Tiers in any order; units below the first tier pay the unit price:
    // 4 x 10 + 2 x 10 x 0.5 = 50.
    assert_eq!(
        ok(r#"tier_price([{from: 5, discount: 0.5}], 6, 10, "per_band")"#),
        num("50")
    );
    assert_eq!(
        ok(
            r#"tier_price([{from: 50, discount: 0.15}, {from: 1, discount: 0}, {from: 10, discount: 0.1}], 60, 100, "per_band")"#
        ),
        num("5435")
    );
}

#[test]
fn tier_price_refuses_bad_input() {
    let two = err(
        r#"tier_price([{from: 10, discount: 0.10}, {from: 10, discount: 0.15}], 60, 100, "all_units")"#,
    );
    assert!(two.contains("two tiers start at 10"), "{two}");
    assert!(err(r#"tier_price(tiers, 60, 100, "bands")"#).contains("per_band"));
    assert!(err(r#"tier_price(tiers, -1, 100, "per_band")"#).contains("quantity"));
    assert!(
        err(r#"tier_price([{from: 1, discount: 10}], 1, 100, "per_band")"#).contains("fraction")
    );
    assert!(err(r#"tier_price([{from: 1}], 1, 100, "per_band")"#).contains("discount"));
    assert!(err(r#"tier_price([1], 1, 100, "per_band")"#).contains("tier 1"));
    assert!(err(r#"tier_price(tiers, 1, "100", "per_band")"#).contains("a number"));
    assert!(
        err(r#"tier_price([{from: 1, discount: 0}], 79228162514264337593543950335, 79228162514264337593543950335, "all_units")"#)
            .contains("too large")
    );
}

#[test]
fn compound_discount_multiplies_what_is_kept() {
    // 1 - (1 - 0.10)(1 - 0.05) = 1 - 0.855 = 0.145.
    assert_eq!(ok("compound_discount([0.10, 0.05])"), num("0.145"));
    assert_eq!(ok("compound_discount(0.10, 0.05)"), num("0.145"));
    // 1 - 0.85 x 0.9 x 0.8 = 1 - 0.612 = 0.388.
    assert_eq!(ok("compound_discount([0.15, 0.10, 0.20])"), num("0.388"));
    assert_eq!(ok("compound_discount([])"), num("0"));
    assert_eq!(ok("compound_discount([1, 0.5])"), num("1"));
    assert!(err("compound_discount([10])").contains("fraction"));
    assert!(err("compound_discount([null])").contains("expected a number"));
}

#[test]
fn add_days_and_end_of_month() {
    assert_eq!(
        ok(r#"add_days(date("2025-01-31"), 30)"#),
        Value::Date("2025-03-02".parse().unwrap())
    );
    assert_eq!(
        ok(r#"add_days(date("2025-03-01"), -1)"#),
        Value::Date("2025-02-28".parse().unwrap())
    );
    // today() is 2025-03-31 in these tests.
    assert_eq!(
        ok("add_days(today(), 30)"),
        Value::Date("2025-04-30".parse().unwrap())
    );
    assert_eq!(
        ok(r#"end_of_month(date("2024-02-10"))"#),
        Value::Date("2024-02-29".parse().unwrap())
    );
    assert_eq!(
        ok(r#"end_of_month(add_days(date("2025-01-31"), 60))"#),
        Value::Date("2025-04-30".parse().unwrap())
    );
    assert!(err(r#"add_days(date("2025-01-31"), 1.5)"#).contains("whole"));
    assert!(err(r#"add_days(date("2025-01-31"), 100000000)"#).contains("too far"));
    assert!(err(r#"add_days(date("9999-12-31"), 1)"#).starts_with("add_days"));
    assert!(err(r#"end_of_month("2025-01-31")"#).contains("a date"));
}

#[test]
fn maps_are_indexed_by_a_computed_key() {
    // No `get` function is needed: `map[key] ?? default`.
    assert_eq!(ok("matrix[key]"), num("2"));
    assert_eq!(ok(r#"matrix["zz"] ?? 0"#), num("0"));
}

#[test]
fn data_references_are_found_statically() {
    let refs = |src: &str| {
        Expr::parse(src)
            .unwrap()
            .data_references()
            .into_iter()
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        refs("data.price_list.products[0].price + data.vat.standard"),
        vec![Some("price_list".to_string()), Some("vat".to_string())]
    );
    assert_eq!(refs("data[name]"), vec![None]);
    assert_eq!(
        refs("[data.x for data in list]"),
        Vec::<Option<String>>::new()
    );
    assert_eq!(
        refs("[x for x in data.rows]"),
        vec![Some("rows".to_string())]
    );
    assert_eq!(refs("quote.data.x"), Vec::<Option<String>>::new());
    let (_, offset) = Expr::parse("1 + data.missing").unwrap().data_references()[0].clone();
    assert_eq!(offset, 9);
}

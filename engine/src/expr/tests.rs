//! The language rules of the expression engine, one test per rule.

use std::str::FromStr;

use rust_decimal::Decimal;

use super::*;
use crate::value::Vars;

fn ctx() -> Context {
    Context::utc("2025-03-31T09:00:00Z".parse().unwrap())
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

fn err(source: &str) -> ExprError {
    match eval(source) {
        Ok(v) => panic!("{source}: expected an error, got {}", a_type_for_test(&v)),
        Err(e) => e,
    }
}

fn a_type_for_test(value: &Value) -> &'static str {
    value.type_name()
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
    assert!(err("'Dear ' + nothing").message.contains("nothing ?? ''"));
    assert!(err("nothing * 2").message.contains("nothing ?? 0"));
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
    assert_eq!(e.to_string(), "unexpected `*` at column 10");
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

fn date(s: &str) -> Value {
    Value::Date(s.parse().unwrap())
}

#[test]
fn dates_instants_and_durations() {
    assert_eq!(ok("date(\"2025-03-31\")"), date("2025-03-31"));
    assert_eq!(
        ok("instant(\"2025-03-31T09:00:00Z\")"),
        Value::Instant("2025-03-31T09:00:00Z".parse().unwrap())
    );
    assert_eq!(ok("now()"), Value::Instant(ctx().now));
    assert_eq!(ok("today()"), date("2025-03-31"));
    assert_eq!(
        ok("date('2025-01-31') + duration('P1M')"),
        date("2025-02-28")
    );
    assert_eq!(
        ok("date('2025-03-01') - duration('P1D')"),
        date("2025-02-28")
    );
    assert_eq!(
        ok("now() + duration('PT2H')"),
        Value::Instant("2025-03-31T11:00:00Z".parse().unwrap())
    );
    assert_eq!(
        ok("instant('2025-01-31T00:00:00Z') + duration('P1M')"),
        Value::Instant("2025-02-28T00:00:00Z".parse().unwrap())
    );
    assert_eq!(
        ok("date('2025-03-31') - date('2025-03-01')"),
        ok("duration('P30D')")
    );
    assert_eq!(
        ok("days_between(date('2025-03-01'), date('2025-03-31'))"),
        num("30")
    );
    assert_eq!(ok("days_between(today(), date('2025-03-30'))"), num("-1"));
    assert_eq!(
        ok("date('2025-03-31') > date('2025-03-01')"),
        Value::Bool(true)
    );
    assert_eq!(
        ok("now() >= instant('2025-03-31T09:00:00Z')"),
        Value::Bool(true)
    );
    assert_eq!(ok("duration('P1D') < duration('PT25H')"), Value::Bool(true));
    assert_eq!(
        ok("duration('P1D') + duration('PT2H') == duration('P1DT2H')"),
        Value::Bool(true)
    );
    assert!(err("date('2025-13-01')").message.contains("not a date"));
    assert!(
        err("duration('P1M') < duration('P30D')")
            .message
            .contains("months or years")
    );
    assert!(
        err("date('2025-03-01') < 5")
            .message
            .contains("cannot order")
    );
}

#[test]
fn text_functions() {
    assert_eq!(
        ok("lower('AbC') + upper('d') + trim('  e ')"),
        text("abcDe")
    );
    assert_eq!(ok("contains(name, 'd')"), Value::Bool(true));
    assert_eq!(ok("contains(tags, 'eu')"), Value::Bool(true));
    assert_eq!(
        ok("starts_with(name, 'A') and ends_with(name, 'a')"),
        Value::Bool(true)
    );
    assert_eq!(ok("replace('a-b-c', '-', '+')"), text("a+b+c"));
    assert_eq!(
        ok("split('a,b', ',')"),
        Value::List(vec![text("a"), text("b")])
    );
    assert_eq!(ok("join(tags, ', ')"), text("vip, eu"));
    assert_eq!(ok("join([1, 'x', 2.50])"), text("1x2.5"));
    assert_eq!(ok("len('héllo') + len(tags) + len(lead)"), num("10"));
    assert_eq!(
        ok("string(12.50) + string(true) + string(date('2025-01-02'))"),
        text("12.5true2025-01-02")
    );
    assert_eq!(ok("number(' 12.5 ')"), num("12.5"));
    assert_eq!(ok("number('1e3')"), num("1000"));
    let e = err("number('12,5x')");
    assert!(e.message.contains("is not a number"), "{e}");
    assert_eq!(e.offset, 7);
    let e = err("lower(amount)");
    assert_eq!(e.message, "lower: `amount` is a number, expected a text");
    assert_eq!(e.offset, 6);
}

#[test]
fn list_and_null_functions() {
    assert_eq!(ok("sum([1, 2.5, amount])"), num("253.5"));
    assert_eq!(ok("sum([])"), num("0"));
    assert_eq!(ok("sum(1, 2, 3)"), num("6"));
    assert_eq!(ok("min([3, 1, 2])"), num("1"));
    assert_eq!(ok("max(3, amount, 2)"), num("250"));
    assert_eq!(ok("max(['b', 'c', 'a'])"), text("c"));
    assert_eq!(ok("min([])"), Value::Null);
    assert_eq!(ok("avg([1, 2])"), num("1.5"));
    assert_eq!(ok("avg([])"), Value::Null);
    assert_eq!(ok("count(tags)"), num("2"));
    assert!(err("sum([1, 'x'])").message.contains("item 2 is a string"));
    assert_eq!(
        ok("is_null(nothing) and not is_null(name)"),
        Value::Bool(true)
    );
    assert_eq!(
        ok("is_empty('') and is_empty([]) and is_empty(nothing) and not is_empty(tags)"),
        Value::Bool(true)
    );
    assert_eq!(
        ok("keys(lead)"),
        Value::List(vec![text("company"), text("empty"), text("owner")])
    );
    assert_eq!(
        ok("values({a: 1, b: 2})"),
        Value::List(vec![num("1"), num("2")])
    );
    assert_eq!(ok("coalesce(nothing, lead.empty, 'x', missing)"), text("x"));
    assert_eq!(
        ok("distinct([1, 1.0, 2, '1', 2])"),
        Value::List(vec![num("1"), num("2"), text("1")])
    );
    assert_eq!(
        ok("sort([3, 1, 2])"),
        Value::List(vec![num("1"), num("2"), num("3")])
    );
    assert!(err("sort([1, 'a'])").message.contains("cannot order"));
}

#[test]
fn unknown_functions_suggest_a_name() {
    let e = Expr::parse("amount + lenght(tags)").unwrap_err();
    assert_eq!(e.message, "unknown function `lenght`: did you mean `len`?");
    assert_eq!(e.offset, 9);
    let e = Expr::parse("uper(name)").unwrap_err();
    assert!(e.message.contains("did you mean `upper`"), "{e}");
    let e = Expr::parse("frobnicate(1)").unwrap_err();
    assert_eq!(e.message, "unknown function `frobnicate`");
    let e = Expr::parse("round()").unwrap_err();
    assert_eq!(e.message, "`round` takes 1 to 2 arguments, not 0");
}

#[test]
fn templates_render_values() {
    let t = Template::parse("Approve quote {{quote.number}} for {{ customer.name }}").unwrap();
    let mut vars = Vars::new();
    vars.insert(
        "quote".into(),
        Value::from_json(serde_json::json!({"number": 1000, "total": 12.50})).unwrap(),
    );
    vars.insert(
        "customer".into(),
        Value::from_json(serde_json::json!({"name": "Acme", "vat": null})).unwrap(),
    );
    assert_eq!(
        t.render(&vars, &ctx()).unwrap(),
        "Approve quote 1000 for Acme"
    );
    assert_eq!(t.variables(), ["quote", "customer"]);
    let t =
        Template::parse("{{quote.total}}|{{customer.vat}}|{{date('2025-03-31')}}|{{ {a: 1}.a }}}")
            .unwrap();
    assert_eq!(t.render(&vars, &ctx()).unwrap(), "12.5||2025-03-31|1}");
    assert_eq!(
        Template::parse("no parts")
            .unwrap()
            .render(&vars, &ctx())
            .unwrap(),
        "no parts"
    );
    assert_eq!(
        Template::parse("a '{{ '}}' }} b")
            .unwrap()
            .render(&vars, &ctx())
            .unwrap(),
        "a '}} b"
    );
}

#[test]
fn template_errors_point_into_the_template() {
    let e = Template::parse("Hello {{ name * * 2 }}").unwrap_err();
    assert_eq!(e.offset, 16);
    let e = Template::parse("Hello {{ name").unwrap_err();
    assert!(e.message.contains("not closed"), "{e}");
    assert_eq!(e.offset, 6);
    let e = Template::parse("x {{ }}").unwrap_err();
    assert_eq!(e.offset, 2);
    let t = Template::parse("Hi {{ missing }}").unwrap();
    let e = t.render(&vars(), &ctx()).unwrap_err();
    assert_eq!(
        (e.message.as_str(), e.offset),
        ("unknown variable `missing`", 6)
    );
}

fn cell(test: &str, input: Value) -> bool {
    UnaryTest::parse(test)
        .unwrap_or_else(|e| panic!("{test}: {e}"))
        .matches(&input, &vars(), &ctx())
        .unwrap_or_else(|e| panic!("{test}: {e}"))
}

#[test]
fn unary_tests() {
    assert!(cell("-", num("1")) && cell("", Value::Null) && cell("  ", text("x")));
    assert!(cell("> 10", num("11")) && !cell("> 10", num("10")));
    assert!(cell(">= 10", num("10")) && cell("< 5", num("4")) && cell("<= 5", num("5")));
    assert!(cell("!= \"x\"", text("y")) && !cell("!= \"x\"", text("x")));
    assert!(
        cell("10", num("10.0"))
            && cell("\"gold\"", text("gold"))
            && cell("true", Value::Bool(true))
    );
    assert!(cell("\"a\", \"b\"", text("b")) && !cell("\"a\", \"b\"", text("c")));
    assert!(cell("[1..5]", num("1")) && cell("[1..5]", num("5")));
    assert!(!cell("(1..5)", num("1")) && !cell("(1..5)", num("5")) && cell("(1..5)", num("3")));
    assert!(cell("[1..5)", num("1")) && !cell("[1..5)", num("5")));
    assert!(cell("]1..5]", num("5")) && !cell("]1..5]", num("1")));
    assert!(cell("[date('2025-01-01')..today()]", date("2025-02-01")));
    assert!(!cell("not(\"a\", \"b\")", text("a")) && cell("not(\"a\", \"b\")", text("c")));
    assert!(cell("? > 5 and ? < 10", num("7")) && !cell("? > 5 and ? < 10", num("10")));
    assert!(cell("not(? > 5) and ? > 1", num("3")));
    assert!(cell("(? > 5) or ? == 0", num("0")));
    assert!(cell("[1, 2]", Value::List(vec![num("1"), num("2")])));
    assert!(cell("> amount", num("251")));
    assert!(cell("< 10, > 100", num("200")));
    assert!(cell("null", Value::Null));
    // A null input does not match ordering tests or ranges, as in DMN.
    assert!(!cell("> 10", Value::Null) && !cell("[1..5]", Value::Null));
    assert!(cell("!= 3", Value::Null));
}

#[test]
fn unary_test_errors() {
    let e = UnaryTest::parse("> > 1").unwrap_err();
    assert_eq!(e.offset, 2);
    let e = UnaryTest::parse("[1..5").unwrap_err();
    assert!(e.message.contains("close the range"), "{e}");
    let test = UnaryTest::parse("> 10").unwrap();
    let e = test.matches(&text("x"), &vars(), &ctx()).unwrap_err();
    assert!(e.message.contains("the input is a string"), "{e}");
    let test = UnaryTest::parse("? + 1").unwrap();
    assert!(
        test.matches(&num("1"), &vars(), &ctx())
            .unwrap_err()
            .message
            .contains("expected a boolean")
    );
    assert!(
        Expr::parse("? > 1")
            .unwrap_err()
            .message
            .contains("decision-table")
    );
    assert_eq!(
        UnaryTest::parse("> limit, ? == x").unwrap().variables(),
        ["limit", "x"]
    );
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(
        Expr::parse(&deep)
            .unwrap_err()
            .message
            .contains("nests more than")
    );
    let negations = format!("{}1", "-".repeat(10_000));
    assert!(Expr::parse(&negations).is_err());
    let nots = format!("{}true", "not ".repeat(10_000));
    assert!(Expr::parse(&nots).is_err());
    let lists = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(Expr::parse(&lists).is_err());
    let long_chain = vec!["1"; 10_000].join(" + ");
    assert!(
        Expr::parse(&long_chain)
            .unwrap_err()
            .message
            .contains("too deeply")
    );
    let path = format!("lead{}", ".a".repeat(10_000));
    assert!(Expr::parse(&path).is_err());
    // The deepest trees that are accepted still evaluate.
    let at_limit = format!("{}1{}", "(1 + ".repeat(60), ")".repeat(60));
    assert_eq!(ok(&at_limit), num("61"));
    let long_sum = vec!["1"; 120].join(" + ");
    assert_eq!(ok(&long_sum), num("120"));
}

#[test]
fn the_deepest_accepted_trees_fit_a_small_stack() {
    // Engine code may evaluate on threads with small stacks; the tree-depth limit must keep
    // the deepest accepted expressions inside 512 KiB even in a debug build (measured: about
    // 260 KiB for the deepest chain).
    let calls = format!("{}1{}", "abs(".repeat(31), ")".repeat(31));
    let chain = vec!["amount"; 127].join(" + ");
    let mixed = format!(
        "{}{}{}",
        "abs(-(".repeat(15),
        vec!["1"; 90].join(" * "),
        "))".repeat(15)
    );
    let exprs: Vec<Expr> = [calls, chain, mixed]
        .iter()
        .map(|source| Expr::parse(source).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            for expr in &exprs {
                expr.eval(&vars(), &ctx()).unwrap();
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn results_are_bounded() {
    // Each replacement multiplies the length by ten: the seventh would pass 1 MiB.
    let mut blowup = "'aaaaaaaaaa'".to_string();
    for _ in 0..7 {
        blowup = format!("replace({blowup}, 'a', 'aaaaaaaaaa')");
    }
    let e = err(&blowup);
    assert!(e.message.contains("longer than"), "{e}");
    let mut vars = vars();
    vars.insert("big".into(), Value::String("x".repeat(600_000)));
    let e = Expr::parse("big + big")
        .unwrap()
        .eval(&vars, &ctx())
        .unwrap_err();
    assert!(e.message.contains("longer than"), "{e}");
    vars.insert("many".into(), Value::List(vec![Value::from(1); 60_000]));
    let e = Expr::parse("sum(many) + sum(many)")
        .unwrap()
        .eval(&vars, &ctx())
        .unwrap_err();
    assert!(e.message.contains("steps"), "{e}");
    vars.insert("chars".into(), Value::String("x".repeat(200_000)));
    let e = Expr::parse("split(chars, '')")
        .unwrap()
        .eval(&vars, &ctx())
        .unwrap_err();
    assert!(e.message.contains("more than"), "{e}");
}

/// A small deterministic generator, so the fuzz test needs no dependency and always checks
/// the same inputs.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_input_never_panics() {
    const PIECES: &[&str] = &[
        "amount",
        "score",
        "name",
        "tags",
        "lead",
        "nothing",
        "items",
        "?",
        "1",
        "0",
        "2.5",
        "-",
        "+",
        "*",
        "/",
        "%",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        ".",
        "?.",
        "??",
        "..",
        "==",
        "!=",
        "<",
        ">=",
        "and",
        "or",
        "not",
        "in",
        "if",
        "then",
        "else",
        "!",
        "&&",
        "'x'",
        "\"",
        "'",
        "\\",
        "round(",
        "sum(",
        "date(",
        "duration(",
        "len(",
        "split(",
        "replace(",
        "join(",
        "sort(",
        "distinct(",
        "keys(",
        "coalesce(",
        "now()",
        "today()",
        "'2025-01-31'",
        "'P1M'",
        " ",
        "null",
        "true",
        "79228162514264337593543950335",
        "é",
        "{{",
        "}}",
        "0.0000000000000000000000000001",
    ];
    let scope = vars();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for round in 0..20_000 {
        let source: String = if round % 4 == 0 {
            // Raw bytes, made into a string the way a YAML reader would hand them over.
            let bytes: Vec<u8> = (0..rng.below(24)).map(|_| rng.next() as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            (0..rng.below(16))
                .map(|_| PIECES[rng.below(PIECES.len())])
                .collect::<Vec<_>>()
                .join(if round % 3 == 0 { "" } else { " " })
        };
        if let Ok(expr) = Expr::parse(&source) {
            let _ = expr.eval(&scope, &ctx());
            let _ = expr.variables();
        }
        if let Ok(test) = UnaryTest::parse(&source) {
            let _ = test.matches(&num("3"), &scope, &ctx());
            let _ = test.matches(&Value::Null, &scope, &ctx());
        }
        if let Ok(template) = Template::parse(&source) {
            let _ = template.render(&scope, &ctx());
        }
        if let Err(e) = Expr::parse(&source) {
            // Offsets always point inside (or just past) the source.
            assert!(e.offset <= source.len(), "{source:?}: {e:?}");
            let _ = e.line_column(&source);
        }
    }
}

#[test]
fn error_display_and_line_column() {
    let e = ExprError {
        message: "unexpected `*`".into(),
        offset: 9,
    };
    assert_eq!(e.to_string(), "unexpected `*` at column 10");
    assert_eq!(e.line_column("amount * * 2"), (1, 10));
    assert_eq!(e.line_column("é\nab * * 2"), (2, 7));
}

#[test]
fn email_identity_functions() {
    assert_eq!(
        ok("email_key('  Mario.Rossi@Example.IT ')"),
        text("mario.rossi@example.it")
    );
    assert_eq!(
        ok("email_key('  Mario.Rossi@Example.IT ') == email_key('mario.rossi@example.it')"),
        Value::Bool(true)
    );
    assert_eq!(
        ok("email_base(' Mario.Rossi+News@Example.IT')"),
        text("mario.rossi@example.it")
    );
    assert_eq!(ok("email_base('a+b+c@x.it')"), text("a@x.it"));
    // No tag, no `@`, or nothing before the `+`: the address as its key.
    assert_eq!(ok("email_base('mario@x.it')"), text("mario@x.it"));
    assert_eq!(ok("email_base('+tag@x.it')"), text("+tag@x.it"));
    assert_eq!(
        ok("email_base('not an address+x')"),
        text("not an address+x")
    );
    assert!(err("email_key(12)").message.contains("a text"));
}

#[test]
fn append_makes_a_longer_list() {
    assert_eq!(ok("len(append([], 1))"), num("1"));
    assert_eq!(ok("append(tags, 'new')[len(tags)]"), text("new"));
    assert_eq!(ok("len(append(tags, [1, 2]))"), ok("len(tags) + 1"));
    assert!(err("append('x', 1)").message.contains("a list"));
}

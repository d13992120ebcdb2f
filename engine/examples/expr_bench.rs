//! Prints how fast small expressions evaluate: `cargo run --release -p ciclo-engine --example
//! expr_bench`. A figure to watch, not a test: it never fails on a slow machine.

use std::hint::black_box;
use std::time::Instant;

use ciclo_engine::expr::{Context, Expr, Template, UnaryTest};
use ciclo_engine::{Value, Vars};

fn main() {
    let ctx = Context::utc(jiff::Timestamp::now());
    let mut vars = Vars::new();
    vars.insert("amount".into(), Value::from(1250));
    vars.insert("score".into(), Value::from(120));
    vars.insert(
        "lead".into(),
        Value::from_json(serde_json::json!({
            "company": {"name": "Acme", "country": "IT"},
            "notes": (0..200).map(|i| format!("note {i}")).collect::<Vec<_>>(),
        }))
        .expect("exact numbers"),
    );
    let iterations = 1_000_000;
    for source in [
        "amount * 2",
        "score > 100",
        "lead.company?.name == 'Acme' and amount >= 1000",
        "round(amount * 0.22, 2)",
        "lead.company.country in ['IT', 'FR', 'DE']",
    ] {
        let expr = Expr::parse(source).expect("parses");
        let start = Instant::now();
        for _ in 0..iterations {
            black_box(expr.eval(black_box(&vars), &ctx).expect("evaluates"));
        }
        report(source, start, iterations);
    }
    let template = Template::parse("Quote for {{ lead.company.name }}: {{ amount }}").unwrap();
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(template.render(black_box(&vars), &ctx).unwrap());
    }
    report("template", start, iterations);
    let cell = UnaryTest::parse("[1000..5000)").unwrap();
    let input = Value::from(1250);
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(cell.matches(black_box(&input), &vars, &ctx).unwrap());
    }
    report("cell [1000..5000)", start, iterations);
}

fn report(what: &str, start: Instant, iterations: u32) {
    let per = start.elapsed() / iterations;
    println!("{what:55} {per:>10.1?} per evaluation");
}

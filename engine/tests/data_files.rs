//! Data files (`data/<name>.yaml`, read as `data.<name>`): loaded with the process files,
//! checked statically, versioned with the processes that read them, kept across a restart.

mod common;

use std::sync::Arc;

use ciclo_engine::Value;
use ciclo_engine::parse::{self, Catalog};
use ciclo_engine::runtime::{Engine, ManualClock};
use ciclo_engine::store::{MemoryStore, Store};
use common::*;

const PRICES_V1: &str = "products:\n  A: { price: 10.10 }\n  B: { price: 0.1 }\n";
const PRICES_V2: &str = "products:\n  A: { price: 12.00 }\n  B: { price: 0.2 }\n";

const PRICING: &str = r#"
process: pricing
start: price
steps:
  price:
    set:
      price: data.price_list.products[product].price
      total: sum([data.price_list.products[p].price for p in ["A", "B"]])
    goto: hold
  hold: { task: Look at the price, form: { ok: boolean } }
"#;

fn load(files: &[(&str, &str)]) -> parse::Library {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    parse::load(&files, &Catalog::standard())
}

#[test]
fn a_data_file_is_read_exactly_and_named_by_its_stem() {
    let library = load(&[
        ("processes/data/price-list.yaml", PRICES_V1),
        ("pricing.yaml", PRICING),
    ]);
    assert!(library.problems.is_empty(), "{:?}", library.problems);
    let Value::Map(products) = &library.data["price_list"] else {
        panic!("{:?}", library.data)
    };
    let Value::Map(products) = &products["products"] else {
        panic!()
    };
    let Value::Map(a) = &products["A"] else {
        panic!()
    };
    // 10.10 stays 10.10 (no binary float on the way).
    assert_eq!(a["price"], num("10.10"));
    assert_eq!(format!("{:?}", a["price"]), "Number(10.10)");
    let def = &library.definitions[0];
    assert!(matches!(&def.data, Value::Map(m) if m.contains_key("price_list")));
}

#[test]
fn unknown_data_and_bad_yaml_are_problems_with_positions() {
    let process = "process: p\nsteps:\n  a:\n    set: { x: data.price_lst.products }\n";
    let library = load(&[("data/price-list.yaml", PRICES_V1), ("p.yaml", process)]);
    let problem = &library.problems[0];
    assert_eq!(problem.code, "CICLO-E0138");
    assert_eq!((problem.line, problem.col), (4, 20), "{problem}");
    assert!(problem.message.contains("data.price_lst"));
    assert!(
        problem
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("data.price_list")
    );

    let bad = "products:\n  A: { price: 10.10\n";
    let library = load(&[("data/prices.yaml", bad)]);
    let problem = &library.problems[0];
    assert_eq!(problem.file, "data/prices.yaml");
    assert_eq!(problem.code, "CICLO-E0101");
    assert!(problem.line >= 2, "{problem}");

    let dup = "a: 1\na: 2\n";
    let library = load(&[("data/x.yaml", dup)]);
    assert_eq!(library.problems[0].code, "CICLO-E0102");
    assert_eq!(library.problems[0].line, 2);

    let huge = "a: 1e400\n";
    let library = load(&[("data/x.yaml", huge)]);
    assert_eq!(library.problems[0].code, "CICLO-E0107");

    let library = load(&[("data/Prices.yaml", "a: 1\n")]);
    assert_eq!(library.problems[0].code, "CICLO-E0107");
}

#[test]
fn a_process_reads_the_data_of_its_version() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(ts("2027-01-04T09:00:00Z")));
    let engine = Engine::open(store.clone(), clock.clone(), Catalog::standard()).unwrap();
    engine.deploy("data/price-list.yaml", PRICES_V1).unwrap();
    let refused = engine
        .deploy(
            "p.yaml",
            "process: q\nsteps:\n  a: { set: { x: data.nothing } }\n",
        )
        .unwrap_err();
    assert!(refused.to_string().contains("data.nothing"), "{refused}");
    engine.deploy("pricing.yaml", PRICING).unwrap();
    let h = Harness { engine, clock };
    let first = h.start("pricing", serde_json::json!({"product": "A"}));
    assert_eq!(h.var(first, "price"), num("10.10"));
    assert_eq!(h.var(first, "total"), num("10.2"));

    // A new price list makes a new version of the process that reads it.
    h.clock.set(ts("2027-01-05T09:00:00Z"));
    let deployed = h
        .engine
        .deploy("processes/data/price-list.yaml", PRICES_V2)
        .unwrap();
    let names: Vec<_> = deployed
        .iter()
        .map(|d| format!("{} v{}", d.process, d.version))
        .collect();
    assert_eq!(names, ["@data/price-list.yaml v2", "pricing v2"]);
    let second = h.start("pricing", serde_json::json!({"product": "A"}));
    assert_eq!(h.var(second, "price"), num("12.00"));

    // After a restart each version still has its own data: version 1 the old list.
    drop(h);
    let clock = Arc::new(ManualClock::new(ts("2027-01-06T09:00:00Z")));
    let engine = Engine::open(store, clock.clone(), Catalog::standard()).unwrap();
    let v1 = engine.definition_version("pricing", 1).unwrap();
    let v2 = engine.definition_version("pricing", 2).unwrap();
    let price = |def: &ciclo_engine::model::Definition| {
        def.data.to_json()["price_list"]["products"]["A"]["price"].to_string()
    };
    assert_eq!(price(&v1), "10.1");
    assert_eq!(price(&v2), "12");
    // Deploying the same text again changes nothing.
    let again = engine.deploy("data/price-list.yaml", PRICES_V2).unwrap();
    assert!(again.iter().all(|d| d.unchanged), "{again:?}");
    let _ = clock;
}

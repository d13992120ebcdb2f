//! Embedding Ciclo's engine and adding a connector, for developers.
//!
//! Run it with `cargo run --example custom_connector`. It deploys a small process whose service
//! task calls a connector named `credit` (written below), starts two instances on the in-memory
//! store, lets the runtime run the jobs, and prints each instance's outcome and history.
//!
//! A connector gets one attempt of a job at a time: its operation, its input variables and an
//! idempotency key that is the same on every retry (pass it to the far side so that it can
//! ignore repeats). It answers `Done(variables)`, `Failed(reason)` (retried with backoff, then an
//! incident) or `BusinessError { code, message }` (caught by an `on: - error:` boundary event).

use std::sync::Arc;
use std::time::Duration;

use ciclo_engine::Value;
use ciclo_engine::parse::Catalog;
use ciclo_engine::runtime::{
    Connector, Connectors, Engine, JobFuture, JobOutcome, JobRequest, Runtime, RuntimeOptions,
    StartOptions, SystemClock,
};
use ciclo_engine::store::{InstanceStatus, MemoryStore};

const PROCESS: &str = r#"
process: credit-check
start: check
steps:
  check:
    call: credit.limit
    input: { customer: customer, amount: amount }
    output: { approved: result.approved }
    on:
      - error: CUSTOMER_BLOCKED
        goto: blocked
    goto: done
  blocked:
    set: { approved: false, reason: error.message }
  done:
    end: true
"#;

/// A connector that approves amounts under a limit and refuses a blocked customer.
struct Credit;

impl Connector for Credit {
    fn call(&self, job: JobRequest) -> JobFuture {
        Box::pin(async move {
            let customer = match job.input.get("customer") {
                Some(Value::String(c)) => c.clone(),
                _ => return JobOutcome::Failed("no customer given".into()),
            };
            if customer == "ACME-BLOCKED" {
                return JobOutcome::BusinessError {
                    code: "CUSTOMER_BLOCKED".into(),
                    message: format!("{customer} is on credit hold"),
                };
            }
            let approved =
                matches!(job.input.get("amount"), Some(Value::Number(n)) if *n < 10_000.into());
            let mut out = ciclo_engine::Vars::new();
            out.insert("approved".into(), Value::Bool(approved));
            JobOutcome::Done(out)
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `credit` must be known to validation: the catalog lists connectors and operations.
    let mut catalog = Catalog::standard();
    catalog
        .connectors
        .insert("credit".into(), vec!["limit".into()]);
    let engine = Arc::new(Engine::open(
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
        catalog,
    )?);
    engine.deploy("credit-check.yaml", PROCESS)?;

    let mut connectors: Connectors = Default::default();
    connectors.insert("credit".into(), Arc::new(Credit));
    let runtime = Runtime::spawn(engine.clone(), connectors, RuntimeOptions::default());

    let mut ids = Vec::new();
    for (customer, amount) in [("ROSSI-SPA", 2_500), ("ACME-BLOCKED", 100)] {
        let mut vars = ciclo_engine::Vars::new();
        vars.insert("customer".into(), Value::from(customer));
        vars.insert("amount".into(), Value::from(amount as i64));
        ids.push(engine.start(
            "credit-check",
            StartOptions {
                vars,
                ..Default::default()
            },
        )?);
    }
    // Wait (bounded) for the runtime to run both jobs.
    for _ in 0..500 {
        let done = ids.iter().all(|id| {
            matches!(engine.instance(*id), Ok(Some((r, _))) if r.status != InstanceStatus::Active)
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in &ids {
        let Some((record, state)) = engine.instance(*id)? else {
            continue;
        };
        println!(
            "{id}: {:?}, approved = {:?}",
            record.status,
            state.vars.get("approved").map(Value::to_json)
        );
        for line in engine.store().history(*id)? {
            println!(
                "  {} {} {} {}",
                line.seq,
                line.what,
                line.step.unwrap_or_default(),
                line.detail
            );
        }
    }
    runtime.shutdown().await;
    Ok(())
}

//! The async runtime service: timers fire and jobs run through connectors without anyone
//! calling the engine by hand. The clock is manual; the test polls for the outcome.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ciclo_engine::runtime::{
    Connector, Connectors, JobFuture, JobOutcome, JobRequest, Runtime, RuntimeOptions,
};
use ciclo_engine::store::InstanceStatus;
use common::*;
use jiff::SignedDuration;

struct Flaky {
    calls: Arc<AtomicU32>,
    keys: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Connector for Flaky {
    fn call(&self, request: JobRequest) -> JobFuture {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.keys.lock().unwrap().push(request.key.clone());
        Box::pin(async move {
            if n < 2 {
                JobOutcome::Failed("503 from the far side".into())
            } else {
                JobOutcome::Done(vars(serde_json::json!({"number": "ERP-1"})))
            }
        })
    }
}

async fn until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_fires_timers_and_retries_jobs() {
    let h = Harness::new(&[r#"
process: flow
start: pause
steps:
  pause:
    wait: P1D
    goto: send
  send:
    call: erp.create-order
    retry: { attempts: 5, backoff: PT1S }
    output: { erp: result.number }
"#]);
    let engine = Arc::new(h.engine);
    let clock = h.clock.clone();
    let calls = Arc::new(AtomicU32::new(0));
    let keys = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut connectors: Connectors = Default::default();
    connectors.insert(
        "erp".into(),
        Arc::new(Flaky {
            calls: calls.clone(),
            keys: keys.clone(),
        }),
    );
    let handle = Runtime::spawn(
        engine.clone(),
        connectors,
        RuntimeOptions {
            poll: Duration::from_millis(10),
            ..Default::default()
        },
    );
    let id = engine.start("flow", Default::default()).unwrap();
    // Nothing happens until the clock reaches the timer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    clock.advance(SignedDuration::from_hours(24));
    engine.nudge();
    until(|| calls.load(Ordering::SeqCst) >= 1).await;
    // Retries wait for their backoff on the (manual) clock.
    for _ in 0..2 {
        let seen = calls.load(Ordering::SeqCst);
        until(|| {
            engine
                .store()
                .jobs_of(id)
                .unwrap()
                .first()
                .is_some_and(|j| j.attempt > seen)
        })
        .await;
        clock.advance(SignedDuration::from_secs(5));
        engine.nudge();
        until(|| calls.load(Ordering::SeqCst) > seen).await;
    }
    until(|| engine.instance(id).unwrap().unwrap().0.status == InstanceStatus::Completed).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let keys = keys.lock().unwrap().clone();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(
        engine.instance(id).unwrap().unwrap().1.vars["erp"],
        ciclo_engine::Value::from("ERP-1")
    );
    handle.shutdown().await;
}

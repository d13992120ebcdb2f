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

const WAIT_A_DAY: &str = r#"
process: wait
start: pause
steps:
  pause:
    wait: P1D
    goto: done
  done:
    end: true
"#;

/// A gate that a blocking thread waits at until it is opened, or for 60 s at most: longer
/// than `until` waits, so that a test fails at the step that did not happen, and then ends
/// instead of holding the runtime's blocking thread for ever.
#[derive(Default)]
struct Gate {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gate {
    fn wait(&self) {
        let open = self.open.lock().unwrap();
        let _ = self
            .opened
            .wait_timeout_while(open, Duration::from_secs(60), |open| !*open)
            .unwrap();
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// The timer loop keeps firings in flight continuously: while one firing is slow, a timer
/// that falls due meanwhile is fired without waiting for it, and the looks made meanwhile
/// (which list the slow timer again, since it is in the store until its firing commits) do
/// not fire it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_in_flight_is_not_fired_again_and_does_not_hold_up_others() {
    let h = Harness::new(&[WAIT_A_DAY]);
    let clock = h.clock.clone();
    let firings = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Gate::default());
    let engine = Arc::new(h.engine.with_failpoint(Arc::new({
        let firings = firings.clone();
        let gate = gate.clone();
        move |point: &str| {
            // The first firing (the slow instance's timer) waits at the gate.
            if point == "timer-firing" && firings.fetch_add(1, Ordering::SeqCst) == 0 {
                gate.wait();
            }
        }
    })));
    let status = |id| engine.instance(id).unwrap().unwrap().0.status;
    let slow = engine.start("wait", Default::default()).unwrap();
    clock.advance(SignedDuration::from_hours(1));
    let quick = engine.start("wait", Default::default()).unwrap();
    let handle = Runtime::spawn(
        engine.clone(),
        Default::default(),
        RuntimeOptions {
            poll: Duration::from_millis(10),
            ..Default::default()
        },
    );
    // The slow timer falls due (a day after its start), the quick one not yet.
    clock.advance(SignedDuration::from_mins(23 * 60 + 30));
    engine.nudge();
    until(|| firings.load(Ordering::SeqCst) == 1).await;
    // The slow timer is in flight; the quick one falls due and fires past it.
    clock.advance(SignedDuration::from_hours(1));
    engine.nudge();
    until(|| status(quick) == InstanceStatus::Completed).await;
    // More looks while the slow firing is still held: each lists its timer again.
    for _ in 0..5 {
        engine.nudge();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(firings.load(Ordering::SeqCst), 2, "one firing per timer");
    assert_eq!(status(slow), InstanceStatus::Active);
    gate.open();
    until(|| status(slow) == InstanceStatus::Completed).await;
    for _ in 0..3 {
        engine.nudge();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(firings.load(Ordering::SeqCst), 2, "one firing per timer");
    handle.shutdown().await;
}

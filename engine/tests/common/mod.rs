//! Test helpers: an engine on the in-memory store with a manual clock, and a way to run due
//! jobs through a closure standing in for the far side of a connector.

#![allow(dead_code)]

use std::sync::Arc;

use ciclo_engine::machine::InstanceState;
use ciclo_engine::parse::Catalog;
use ciclo_engine::runtime::{Engine, JobOutcome, ManualClock, StartOptions};
use ciclo_engine::store::{InstanceId, JobRecord, MemoryStore, Store};
use ciclo_engine::{Value, Vars};
use jiff::{SignedDuration, Timestamp};

pub struct Harness {
    pub engine: Engine,
    pub clock: Arc<ManualClock>,
}

pub fn ts(text: &str) -> Timestamp {
    text.parse().expect("test instant")
}

pub fn vars(json: serde_json::Value) -> Vars {
    match Value::from_json(json).expect("exact numbers") {
        Value::Map(m) => m,
        other => panic!("test vars must be a JSON object, got {other:?}"),
    }
}

pub fn num(text: &str) -> Value {
    Value::Number(text.parse().expect("test number"))
}

impl Harness {
    pub fn new(processes: &[&str]) -> Harness {
        Harness::with_store(Arc::new(MemoryStore::new()), processes)
    }

    pub fn with_store(store: Arc<dyn Store>, processes: &[&str]) -> Harness {
        let clock = Arc::new(ManualClock::new(ts("2027-01-04T09:00:00Z")));
        let engine = Engine::open(store, clock.clone(), Catalog::standard()).expect("engine opens");
        for (i, yaml) in processes.iter().enumerate() {
            engine
                .deploy(&format!("p{i}.yaml"), yaml)
                .unwrap_or_else(|e| panic!("deploy p{i}.yaml: {e}"));
        }
        Harness { engine, clock }
    }

    pub fn start(&self, process: &str, v: serde_json::Value) -> InstanceId {
        self.engine
            .start(
                process,
                StartOptions {
                    vars: vars(v),
                    ..Default::default()
                },
            )
            .expect("start")
    }

    pub fn state(&self, id: InstanceId) -> InstanceState {
        self.engine
            .instance(id)
            .expect("load")
            .expect("instance exists")
            .1
    }

    pub fn var(&self, id: InstanceId, name: &str) -> Value {
        self.state(id)
            .vars
            .get(name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Moves the clock forward and fires what fell due, step by step, as a runtime would.
    pub fn advance(&self, by: SignedDuration) -> usize {
        let target = self.clock.now_ts() + by;
        let mut fired = 0;
        loop {
            let next = self.engine.store().next_timer().expect("next timer");
            match next {
                Some(t) if t.due <= target => {
                    if t.due > self.clock.now_ts() {
                        self.clock.set(t.due);
                    }
                    fired += self
                        .engine
                        .fire_due_timers(self.clock.now_ts(), 100)
                        .expect("fire");
                }
                _ => break,
            }
        }
        self.clock.set(target);
        fired
    }

    /// Runs every due job through `answer` until none is due.
    pub fn run_jobs(&self, mut answer: impl FnMut(&JobRecord) -> JobOutcome) -> usize {
        let mut runs = 0;
        loop {
            let jobs = self
                .engine
                .store()
                .due_jobs(self.clock.now_ts(), 100)
                .expect("due jobs");
            if jobs.is_empty() {
                return runs;
            }
            for job in jobs {
                runs += 1;
                if job.connector == ciclo_engine::runtime::SYSTEM_CONNECTOR {
                    self.engine.run_system_job(&job).expect("system job");
                } else {
                    let outcome = answer(&job);
                    self.engine.job_result(&job, outcome).expect("job result");
                }
            }
        }
    }

    pub fn tasks(&self, id: InstanceId) -> Vec<ciclo_engine::store::TaskRecord> {
        self.engine
            .store()
            .tasks(1000)
            .expect("tasks")
            .into_iter()
            .filter(|t| t.instance == id)
            .collect()
    }

    pub fn history(&self, id: InstanceId) -> Vec<String> {
        self.engine
            .store()
            .history(id)
            .expect("history")
            .into_iter()
            .map(|h| match h.step {
                Some(step) => format!("{} {} by {}", h.what, step, h.actor),
                None => format!("{} by {}", h.what, h.actor),
            })
            .collect()
    }
}

pub trait NowTs {
    fn now_ts(&self) -> Timestamp;
}

impl NowTs for ManualClock {
    fn now_ts(&self) -> Timestamp {
        use ciclo_engine::runtime::Clock;
        self.now()
    }
}

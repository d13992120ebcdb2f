//! The engine's figures for Prometheus, recorded through the `metrics` facade.
//!
//! The engine depends only on the facade: a binary that installs no recorder pays a few
//! no-op calls, and the web crate installs the Prometheus recorder and renders it. The
//! functions are small and called from a handful of one-line hooks in the transaction code,
//! so the engine's logic does not fill up with instrumentation.
//!
//! Counts come from the batch a transaction commits (its history lines say which instances
//! started or ended), and are recorded only once the batch is durable, so a failed commit is
//! never counted. Gauges that describe the store (incidents open, timers pending) are read
//! from the store when someone asks (`observe_store`), because counting them up and down
//! would drift across restarts.

use std::time::Instant;

use jiff::Timestamp;

use crate::store::{Batch, InstanceStatus, JobRecord, Op, Store};

use super::JobOutcome;

/// Instances started, by `definition`.
pub const INSTANCES_STARTED: &str = "ciclo_instances_started_total";
/// Instances ended, by `definition` and `status` (completed, failed, terminated, cancelled).
pub const INSTANCES_ENDED: &str = "ciclo_instances_ended_total";
/// Seconds one transaction took from its start to its durable commit, by `definition`: the
/// latency of running an event through the steps it moves.
pub const STEP_SECONDS: &str = "ciclo_step_seconds";
/// Seconds a store commit took until durable (including the wait for the group flush).
pub const STORE_COMMIT_SECONDS: &str = "ciclo_store_commit_seconds";
/// Job attempts answered, by `connector` and `outcome` (done, failed, business_error).
pub const JOBS: &str = "ciclo_jobs_total";
/// Job attempts after the first, by `connector`.
pub const JOB_RETRIES: &str = "ciclo_job_retries_total";
/// External jobs locked for workers by fetch-and-lock. Their answers count in `JOBS` with
/// connector `external` (done, failed, business_error).
pub const EXTERNAL_JOBS_FETCHED: &str = "ciclo_external_jobs_fetched_total";
/// External jobs fetched again after a lease ran out without an answer.
pub const EXTERNAL_LEASES_EXPIRED: &str = "ciclo_external_leases_expired_total";
/// Seconds between a timer's due time and its firing.
pub const TIMER_LATENESS_SECONDS: &str = "ciclo_timer_lateness_seconds";
/// Open incidents now.
pub const INCIDENTS_OPEN: &str = "ciclo_incidents_open";
/// Pending timers now.
pub const TIMERS_PENDING: &str = "ciclo_timers_pending";
/// Seconds the most overdue pending timer is late now (0 when none is overdue).
pub const TIMERS_OVERDUE_SECONDS: &str = "ciclo_timers_overdue_seconds";

/// What a transaction's batch will count once it is durable.
pub struct Figures {
    started: Instant,
    /// (definition, status or `None` for a start).
    instances: Vec<(String, Option<InstanceStatus>)>,
    definitions: Vec<String>,
}

impl Figures {
    /// Reads the figures out of a batch about to be committed, and starts its clock.
    pub fn of(batch: &Batch) -> Figures {
        let process_of = |id| {
            batch.ops.iter().find_map(|op| match op {
                Op::PutInstance(r) if r.id == id => Some((r.process.clone(), r.status)),
                _ => None,
            })
        };
        let mut instances = Vec::new();
        let mut definitions = Vec::new();
        for op in &batch.ops {
            match op {
                // Instance-level history lines (no step) mark starts and ends.
                Op::AppendHistory(h) if h.step.is_none() => {
                    let Some((process, status)) = process_of(h.instance) else {
                        continue;
                    };
                    if h.what == "started" {
                        instances.push((process, None));
                    } else if status.is_finished() {
                        instances.push((process, Some(status)));
                    }
                }
                Op::PutInstance(r) if !definitions.contains(&r.process) => {
                    definitions.push(r.process.clone())
                }
                _ => {}
            }
        }
        Figures {
            started: Instant::now(),
            instances,
            definitions,
        }
    }

    /// Records the figures: call it after the commit returned, so only durable work counts.
    pub fn committed(self) {
        let seconds = self.started.elapsed().as_secs_f64();
        metrics::histogram!(STORE_COMMIT_SECONDS).record(seconds);
        for definition in self.definitions {
            metrics::histogram!(STEP_SECONDS, "definition" => definition).record(seconds);
        }
        for (definition, status) in self.instances {
            match status {
                None => {
                    metrics::counter!(INSTANCES_STARTED, "definition" => definition).increment(1)
                }
                Some(status) => metrics::counter!(
                    INSTANCES_ENDED,
                    "definition" => definition,
                    "status" => status_name(status)
                )
                .increment(1),
            }
        }
    }
}

fn status_name(status: InstanceStatus) -> &'static str {
    match status {
        InstanceStatus::Active => "active",
        InstanceStatus::Completed => "completed",
        InstanceStatus::Failed => "failed",
        InstanceStatus::Terminated => "terminated",
        InstanceStatus::Cancelled => "cancelled",
    }
}

/// Counts a connector's answer to one job attempt.
pub fn job_answered(job: &JobRecord, outcome: &JobOutcome) {
    let outcome = match outcome {
        JobOutcome::Done(_) => "done",
        JobOutcome::Failed(_) => "failed",
        JobOutcome::BusinessError { .. } => "business_error",
    };
    metrics::counter!(JOBS, "connector" => job.connector.clone(), "outcome" => outcome)
        .increment(1);
    if job.attempt > 1 {
        metrics::counter!(JOB_RETRIES, "connector" => job.connector.clone()).increment(1);
    }
}

/// Counts external jobs locked by one fetch.
pub fn external_fetched(count: usize) {
    metrics::counter!(EXTERNAL_JOBS_FETCHED).increment(count as u64);
}

/// Counts a lease found run out when its job was fetched again.
pub fn external_lease_expired() {
    metrics::counter!(EXTERNAL_LEASES_EXPIRED).increment(1);
}

/// Records how late a timer fired.
pub fn timer_fired(due: Timestamp, now: Timestamp) {
    let late = now.duration_since(due).as_secs_f64().max(0.0);
    metrics::histogram!(TIMER_LATENESS_SECONDS).record(late);
}

/// At most this many timers are counted per look, so a scrape stays cheap.
const TIMER_COUNT_LIMIT: usize = 100_000;

/// Sets the gauges that describe the store now: incidents open, timers pending (up to
/// 100,000) and how late the most overdue one is. Called before metrics are rendered.
pub fn observe_store(store: &dyn Store, now: Timestamp) -> crate::store::Result<()> {
    metrics::gauge!(INCIDENTS_OPEN).set(store.incidents()?.len() as f64);
    let timers = store.due_timers(Timestamp::MAX, TIMER_COUNT_LIMIT)?;
    metrics::gauge!(TIMERS_PENDING).set(timers.len() as f64);
    let overdue = timers
        .first()
        .map(|t| now.duration_since(t.due).as_secs_f64().max(0.0))
        .unwrap_or(0.0);
    metrics::gauge!(TIMERS_OVERDUE_SECONDS).set(overdue);
    Ok(())
}

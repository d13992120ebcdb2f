//! The runtime: drives instances over time. `Engine` (in `engine`) is the blocking core, one
//! durable transaction per call; `Runtime` is the long-running service around it that fires
//! due timers and runs jobs through connectors, with a `RuntimeHandle` to stop it.

mod engine;
pub mod metrics;
mod publish;
mod timers;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

pub use engine::*;
pub use publish::MESSAGE_CONNECTOR;

use crate::store::{InstanceId, JobRecord};

/// Where the engine reads the time. Tests use `ManualClock`, never `sleep`.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock(Mutex::new(start))
    }
    pub fn set(&self, to: Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
    pub fn advance(&self, by: jiff::SignedDuration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A clock that runs `speed` times faster than the system's from `start`: a day in 86,400
/// seconds at speed 1, in one second at speed 86,400. For demos and trials of processes that
/// wait days (`ciclo serve --clock-speed`); a store written under it holds future times for
/// the system clock, so it is not for production data.
#[derive(Debug)]
pub struct ScaledClock {
    start: Timestamp,
    real_start: std::time::Instant,
    speed: f64,
}

impl ScaledClock {
    /// `speed` must be finite and at least 1 (an error says so otherwise).
    pub fn new(start: Timestamp, speed: f64) -> Result<ScaledClock, String> {
        if !speed.is_finite() || !(1.0..=1e9).contains(&speed) {
            return Err(format!(
                "a clock speed of {speed} is not usable: give a number from 1 to 1000000000"
            ));
        }
        Ok(ScaledClock {
            start,
            real_start: std::time::Instant::now(),
            speed,
        })
    }
    /// How many times faster than real time it runs.
    pub fn speed(&self) -> f64 {
        self.speed
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        let real = self.real_start.elapsed().as_secs_f64();
        let scaled = jiff::SignedDuration::try_from_secs_f64(real * self.speed)
            .unwrap_or(jiff::SignedDuration::MAX);
        self.start.checked_add(scaled).unwrap_or(Timestamp::MAX)
    }
}

/// One attempt of a job, as a connector sees it.
#[derive(Clone, Debug)]
pub struct JobRequest {
    pub instance: InstanceId,
    pub job: u64,
    pub attempt: u32,
    pub operation: String,
    /// The idempotency key: the same on every attempt of this job. Connectors pass it on
    /// (for example as an `Idempotency-Key` header) so the far side can de-duplicate.
    pub key: String,
    pub input: crate::value::Vars,
}

/// A future a connector returns.
pub type JobFuture = Pin<Box<dyn Future<Output = JobOutcome> + Send>>;

/// Something the engine can call from a service or send task: SMTP, the ERP, e-invoicing...
/// The engine does no network I/O itself; connectors do, behind this trait.
pub trait Connector: Send + Sync + 'static {
    /// Runs one attempt. Technical failures are `JobOutcome::Failed` (retried), business
    /// answers `JobOutcome::BusinessError` (caught by an error boundary event).
    fn call(&self, request: JobRequest) -> JobFuture;
}

/// Connectors by name (`erp`, `email`, ...).
pub type Connectors = HashMap<String, Arc<dyn Connector>>;

/// Options of the runtime service.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// How often the loops look for due work when nothing wakes them earlier.
    pub poll: Duration,
    /// Jobs taken per look.
    pub job_batch: usize,
    /// Timer firings in flight at most (each a transaction of its own, sharing the store's
    /// group commit). The timer loop keeps them in flight continuously, not in rounds.
    pub timer_firings: usize,
    /// Finished instances are removed, with their history, this long after they ended
    /// (`None`: kept for ever).
    pub retention: Option<jiff::SignedDuration>,
    /// How often the retention sweep runs.
    pub retention_sweep: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            poll: Duration::from_millis(200),
            job_batch: 64,
            timer_firings: 64,
            retention: Some(jiff::SignedDuration::from_hours(24 * 90)),
            retention_sweep: Duration::from_secs(3600),
        }
    }
}

/// The long-running service: fires timers and runs jobs until stopped.
pub struct Runtime;

/// A handle to a running `Runtime`: cheap to clone; `shutdown` stops it gracefully.
#[derive(Clone)]
pub struct RuntimeHandle {
    engine: Arc<Engine>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl RuntimeHandle {
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops taking new work, waits for jobs in flight to be recorded, and returns.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Runtime {
    /// Starts the timer and job loops on the current tokio runtime.
    pub fn spawn(
        engine: Arc<Engine>,
        connectors: Connectors,
        options: RuntimeOptions,
    ) -> RuntimeHandle {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let timers = tokio::spawn(timers::timer_loop(
            engine.clone(),
            options.clone(),
            stopped.clone(),
        ));
        let mut tasks = vec![timers];
        if let Some(retention) = options.retention {
            tasks.push(tokio::spawn(retention_loop(
                engine.clone(),
                retention,
                options.retention_sweep,
                stopped.clone(),
            )));
        }
        tasks.push(tokio::spawn(job_loop(
            engine.clone(),
            Arc::new(connectors),
            options,
            stopped,
        )));
        RuntimeHandle {
            engine,
            stop,
            tasks: Arc::new(Mutex::new(tasks)),
        }
    }
}

/// Removes finished instances older than the retention period, in bulk, now and then.
async fn retention_loop(
    engine: Arc<Engine>,
    retention: jiff::SignedDuration,
    every: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let e = engine.clone();
        match tokio::task::spawn_blocking(move || e.remove_finished(retention)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "removed finished instances past retention"),
            Ok(Err(e)) => tracing::error!(error = %e, "retention sweep failed"),
            Err(e) => tracing::error!(error = %e, "retention sweep panicked"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Jobs being run, and jobs answered since the last look: a look that began before an answer
/// was committed may still list its job, which must not run twice.
#[derive(Default)]
struct JobSets {
    running: HashSet<(InstanceId, u64, u32)>,
    answered: HashSet<(InstanceId, u64, u32)>,
}

async fn job_loop(
    engine: Arc<Engine>,
    connectors: Arc<Connectors>,
    options: RuntimeOptions,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let sets: Arc<Mutex<JobSets>> = Arc::default();
    let mut running = tokio::task::JoinSet::new();
    loop {
        if *stopped.borrow() {
            break;
        }
        let wake = engine.wake.notified();
        sets.lock()
            .unwrap_or_else(|e| e.into_inner())
            .answered
            .clear();
        let e = engine.clone();
        let limit = options.job_batch;
        let due = tokio::task::spawn_blocking(move || {
            let now = e.clock().now();
            e.store().due_jobs(now, limit)
        })
        .await;
        let jobs = match due {
            Ok(Ok(jobs)) => jobs,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading due jobs failed");
                Vec::new()
            }
            Err(e) => {
                tracing::error!(error = %e, "job task panicked");
                Vec::new()
            }
        };
        let mut started = 0;
        for job in jobs {
            let id = (job.instance, job.job, job.attempt);
            {
                let mut s = sets.lock().unwrap_or_else(|e| e.into_inner());
                if s.answered.contains(&id) || !s.running.insert(id) {
                    continue;
                }
            }
            started += 1;
            let engine = engine.clone();
            let connectors = connectors.clone();
            let sets = sets.clone();
            running.spawn(async move {
                run_job(&engine, &connectors, job).await;
                {
                    let mut s = sets.lock().unwrap_or_else(|e| e.into_inner());
                    s.running.remove(&id);
                    s.answered.insert(id);
                }
                engine.wake.notify_waiters();
            });
        }
        while running.try_join_next().is_some() {}
        if started > 0 {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(options.poll) => {}
            _ = wake => {}
            _ = stopped.changed() => break,
        }
    }
    // Jobs in flight finish and are recorded; nothing new starts.
    while running.join_next().await.is_some() {}
}

async fn run_job(engine: &Arc<Engine>, connectors: &Connectors, job: JobRecord) {
    let span = tracing::info_span!("job", instance = %job.instance, job = job.job, attempt = job.attempt, connector = %job.connector, operation = %job.operation);
    // `instrument`, not `enter`: an entered guard held across `.await` leaks the span into
    // whatever else runs on this thread meanwhile.
    tracing::Instrument::instrument(run_job_in_span(engine, connectors, job), span).await
}

async fn run_job_in_span(engine: &Arc<Engine>, connectors: &Connectors, job: JobRecord) {
    if job.connector == SYSTEM_CONNECTOR {
        let e = engine.clone();
        let result = tokio::task::spawn_blocking(move || e.run_system_job(&job)).await;
        if let Ok(Err(e)) = result {
            tracing::error!(error = %e, "system job failed");
        }
        return;
    }
    if job.connector == ASSIGN_CONNECTOR {
        let e = engine.clone();
        let result = tokio::task::spawn_blocking(move || e.run_assign_job(&job)).await;
        if let Ok(Err(e)) = result {
            tracing::error!(error = %e, "a round-robin assignment failed");
        }
        return;
    }
    if job.connector == MESSAGE_CONNECTOR {
        let e = engine.clone();
        let result = tokio::task::spawn_blocking(move || e.run_message_job(&job)).await;
        if let Ok(Err(e)) = result {
            tracing::error!(error = %e, "publishing a message failed");
        }
        return;
    }
    let outcome = match connectors.get(&job.connector) {
        Some(connector) => {
            connector
                .call(JobRequest {
                    instance: job.instance,
                    job: job.job,
                    attempt: job.attempt,
                    operation: job.operation.clone(),
                    key: job.key.clone(),
                    input: job.input.clone(),
                })
                .await
        }
        None => JobOutcome::Failed(format!("no connector `{}` is configured", job.connector)),
    };
    let e = engine.clone();
    let result = tokio::task::spawn_blocking(move || e.job_result(&job, outcome)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "recording a job result failed"),
        Err(e) => tracing::error!(error = %e, "job task panicked"),
    }
}

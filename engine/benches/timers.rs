//! Timers at scale: prints figures, asserts only that every timer that fell due fired.
//!
//! `cargo bench -p ciclo-engine --bench timers` fills a sled store in a temporary folder with
//! 1,000,000 instances, each waiting on a timer (`wait: P1D`): 990,000 due between 1 and 31
//! days from now, and 10,000 due evenly over one second, starting `CICLO_TIMERS_LEAD_S`
//! (default 30) seconds after the last of them was started. It closes the store and prints its
//! size; then a fresh process (this program again, so the memory figure is that of a process
//! that only opened the store) reopens it, prints the time to open and the resident memory,
//! and runs the real `Runtime` on the system clock until the 10,000 have fired. The lateness
//! of a timer is the moment the commit that deleted it (the firing transaction) returned,
//! minus its due time; the store is wrapped so that every commit's return is timestamped
//! (`Recorder`), which is exact where polling the store would only bound it.
//!
//! The due times come from the clock the instances were started with: the fill runs the
//! engine on `StartClock`, which each starter thread sets to the instant its instance is
//! "started" at, so that `P1D` later is the due time wanted. The runtime then runs on
//! `SystemClock`, as a server does.
//!
//! Sizes: CICLO_TIMERS_N (pending timers, default 1,000,000), CICLO_TIMERS_DUE_N (those due
//! in the window, default 10,000), CICLO_TIMERS_WINDOW_MS (default 1,000),
//! CICLO_TIMERS_LEAD_S (default 30). The store: CICLO_TIMERS_STORE (`sled`, the default, or
//! `redb`) and CICLO_TIMERS_CACHE_MIB (its page cache, default 64 as in the server). Without `--bench` (as `cargo test --all-targets` runs it)
//! it is a quick run with 2,000 timers, 200 due, and a 3-second lead.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ciclo_engine::parse::Catalog;
use ciclo_engine::runtime::{Clock, Engine, Runtime, RuntimeOptions, StartOptions};
use ciclo_engine::store::*;
use jiff::{SignedDuration, Timestamp};

const WAITING: &str = r#"
process: timers
start: wait
steps:
  wait:
    wait: P1D
    goto: done
  done:
    end: true
"#;

/// How long each instance waits: its due time is its start time plus this.
const WAIT: SignedDuration = SignedDuration::from_hours(24);

/// The store the benchmark runs on, as `ciclo serve --store` names them.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Sled,
    Redb,
}

impl Kind {
    fn from_env() -> Self {
        match std::env::var("CICLO_TIMERS_STORE").as_deref() {
            Err(_) | Ok("sled") => Kind::Sled,
            Ok("redb") => Kind::Redb,
            Ok(other) => panic!("CICLO_TIMERS_STORE must be sled or redb, not {other:?}"),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::Sled => "sled",
            Kind::Redb => "redb",
        }
    }
}

/// One of the durable stores, opened with the page cache CICLO_TIMERS_CACHE_MIB asks for.
enum Durable {
    Sled(SledStore),
    Redb(RedbStore),
}

impl Durable {
    fn open(path: &Path) -> Self {
        let cache = env_number("CICLO_TIMERS_CACHE_MIB", 64) * 1024 * 1024;
        match Kind::from_env() {
            Kind::Sled => {
                let mut options = SledOptions::new(path);
                options.cache_capacity = cache;
                Durable::Sled(SledStore::open(options).expect("sled opens"))
            }
            Kind::Redb => {
                let mut options = RedbOptions::new(path);
                options.cache_size = cache as usize;
                Durable::Redb(RedbStore::open(options).expect("redb opens"))
            }
        }
    }
    fn stats(&self) -> StoreStats {
        match self {
            Durable::Sled(s) => s.stats(),
            Durable::Redb(s) => s.stats(),
        }
    }
    fn close(self) {
        match self {
            Durable::Sled(s) => s.close().expect("sled closes"),
            Durable::Redb(s) => s.close().expect("redb closes"),
        }
    }
}

impl std::ops::Deref for Durable {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        match self {
            Durable::Sled(s) => s,
            Durable::Redb(s) => s,
        }
    }
}

/// The environment variable that tells a child run where the filled store is.
const CHILD_STORE: &str = "CICLO_TIMERS_CHILD_STORE";

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text} is not a whole number")),
        Err(_) => default,
    }
}

struct Sizes {
    pending: usize,
    due: usize,
    window: SignedDuration,
    lead: SignedDuration,
}

impl Sizes {
    fn from_env(quick: bool) -> Sizes {
        let (pending, due, lead) = if quick {
            (2_000, 200, 3)
        } else {
            (1_000_000, 10_000, 30)
        };
        let sizes = Sizes {
            pending: env_number("CICLO_TIMERS_N", pending) as usize,
            due: env_number("CICLO_TIMERS_DUE_N", due) as usize,
            window: SignedDuration::from_millis(env_number("CICLO_TIMERS_WINDOW_MS", 1_000) as i64),
            lead: SignedDuration::from_secs(env_number("CICLO_TIMERS_LEAD_S", lead) as i64),
        };
        assert!(
            sizes.due >= 1 && sizes.due <= sizes.pending,
            "CICLO_TIMERS_DUE_N must be from 1 to CICLO_TIMERS_N"
        );
        sizes
    }
}

thread_local! {
    /// The instant `StartClock` tells on this thread (`None`: the system's time).
    static STARTED_AT: Cell<Option<Timestamp>> = const { Cell::new(None) };
}

/// The fill's clock: what the calling thread set in `STARTED_AT`, else the system's time.
/// `Engine::start` reads the clock on the calling thread, so each starter thread starts its
/// instance at the instant it chose.
struct StartClock;

impl Clock for StartClock {
    fn now(&self) -> Timestamp {
        STARTED_AT
            .with(|at| at.get())
            .unwrap_or_else(Timestamp::now)
    }
}

fn rss(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                dir_size(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

fn main() {
    if let Ok(store) = std::env::var(CHILD_STORE) {
        let quick = !std::env::args().any(|a| a == "--bench");
        fire(&PathBuf::from(store), &Sizes::from_env(quick));
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and wants a quick run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes = Sizes::from_env(quick);
    println!(
        "ciclo timers benchmark ({} cores){}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        if quick {
            " [quick run: pass --bench for full sizes]"
        } else {
            ""
        }
    );
    println!(
        "{} pending timers on {} (page cache {} MiB), {} of them due evenly over {} ms",
        sizes.pending,
        Kind::from_env().name(),
        env_number("CICLO_TIMERS_CACHE_MIB", 64),
        sizes.due,
        sizes.window.as_millis()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store");
    fill(&path, &sizes);
    let bytes = dir_size(&path);
    println!(
        "store on disk after a clean close: {:.1} MiB, {:.0} bytes per pending timer",
        mib(bytes),
        bytes as f64 / sizes.pending as f64
    );
    // The reopen and the firing run in a fresh process, so that its memory is only what
    // opening the store and running the runtime take, as for a server started on it.
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(std::env::args().skip(1))
        .env(CHILD_STORE, &path)
        .status()
        .expect("the firing run starts");
    assert!(status.success(), "the firing run failed: {status}");
}

/// Starts `sizes.pending` instances with 64 starter threads: first the far ones, then the ones
/// due in the window, `sizes.lead` after their own fill began.
fn fill(path: &Path, sizes: &Sizes) {
    let began = Instant::now();
    let store = Arc::new(Recorder {
        inner: Durable::open(path),
        fired: Mutex::default(),
        sweeps: Mutex::default(),
    });
    let engine =
        Engine::open(store.clone(), Arc::new(StartClock), Catalog::standard()).expect("opens");
    engine.deploy("timers.yaml", WAITING).expect("deploys");
    let engine = Arc::new(engine);

    // Far: due from 1 to 31 days after now, evenly.
    let far = sizes.pending - sizes.due;
    let now = Timestamp::now();
    let month = SignedDuration::from_hours(24 * 30);
    start_all(&engine, far, move |i| {
        now + month.mul_f64(i as f64 / far.max(1) as f64)
    });
    let far_took = began.elapsed();

    // Near: due evenly over the window, starting `lead` from now.
    let first_due = Timestamp::now() + sizes.lead;
    let step = sizes.window.mul_f64(1.0 / sizes.due as f64);
    let near_began = Instant::now();
    start_all(&engine, sizes.due, move |i| {
        first_due + step * i as i32 - WAIT
    });
    let near_took = near_began.elapsed();
    drop(engine);
    match Arc::try_unwrap(store) {
        Ok(store) => store.inner.close(),
        Err(_) => panic!("the store is still shared after the fill"),
    }
    let took = began.elapsed();
    println!(
        "fill: {far} far timers in {:.1} s ({:.0}/s), {} due ones in {:.1} s, closed after {:.1} s in all",
        far_took.as_secs_f64(),
        far as f64 / far_took.as_secs_f64(),
        sizes.due,
        near_took.as_secs_f64(),
        took.as_secs_f64()
    );
    println!(
        "first timer of the window due at {first_due} ({:.1} s after the fill ended)",
        first_due.duration_since(Timestamp::now()).as_secs_f64()
    );
}

/// `count` instances of `timers`, the i-th started at `started_at(i)`, by 64 threads; prints
/// progress every 100,000.
fn start_all(engine: &Arc<Engine>, count: usize, started_at: impl Fn(usize) -> Timestamp + Sync) {
    let threads = 64;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let began = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let engine = engine.clone();
            let started_at = &started_at;
            let done = &done;
            scope.spawn(move || {
                let mut i = t;
                while i < count {
                    STARTED_AT.with(|at| at.set(Some(started_at(i))));
                    engine
                        .start("timers", StartOptions::default())
                        .expect("start");
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n.is_multiple_of(100_000) {
                        println!(
                            "  {n} started in {:.0} s ({:.0}/s)",
                            began.elapsed().as_secs_f64(),
                            n as f64 / began.elapsed().as_secs_f64()
                        );
                    }
                    i += threads;
                }
            });
        }
    });
}

/// The real sled store, with the moment each commit that deleted a timer returned, and how
/// long each retention sweep (which holds sled's single writer) took.
struct Recorder {
    inner: Durable,
    fired: Mutex<Vec<(InstanceId, u64, Timestamp)>>,
    sweeps: Mutex<Vec<(Timestamp, Duration)>>,
}

impl Store for Recorder {
    fn commit(&self, batch: Batch) -> Result<()> {
        let deleted: Vec<(InstanceId, u64)> = batch
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::DeleteTimer { instance, timer } => Some((*instance, *timer)),
                _ => None,
            })
            .collect();
        self.inner.commit(batch)?;
        if !deleted.is_empty() {
            let at = Timestamp::now();
            let mut fired = self.fired.lock().unwrap_or_else(|e| e.into_inner());
            fired.extend(deleted.into_iter().map(|(i, t)| (i, t, at)));
        }
        Ok(())
    }
    fn remove_finished(&self, before: Timestamp) -> Result<usize> {
        let began = Instant::now();
        let removed = self.inner.remove_finished(before);
        self.sweeps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((Timestamp::now(), began.elapsed()));
        removed
    }
    fn definitions(&self) -> Result<Vec<DefinitionRecord>> {
        self.inner.definitions()
    }
    fn definition(&self, process: &str, version: u32) -> Result<Option<DefinitionRecord>> {
        self.inner.definition(process, version)
    }
    fn instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>> {
        self.inner.instance(id)
    }
    fn instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>> {
        self.inner.instances(filter)
    }
    fn due_timers(&self, until: Timestamp, limit: usize) -> Result<Vec<TimerRecord>> {
        self.inner.due_timers(until, limit)
    }
    fn next_timer(&self) -> Result<Option<TimerRecord>> {
        self.inner.next_timer()
    }
    fn timers_of(&self, instance: InstanceId) -> Result<Vec<TimerRecord>> {
        self.inner.timers_of(instance)
    }
    fn job(&self, instance: InstanceId, job: u64) -> Result<Option<JobRecord>> {
        self.inner.job(instance, job)
    }
    fn due_jobs(&self, now: Timestamp, limit: usize) -> Result<Vec<JobRecord>> {
        self.inner.due_jobs(now, limit)
    }
    fn jobs_of(&self, instance: InstanceId) -> Result<Vec<JobRecord>> {
        self.inner.jobs_of(instance)
    }
    fn due_external_jobs(
        &self,
        job_type: &str,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        self.inner.due_external_jobs(job_type, now, limit)
    }
    fn external_jobs(&self, limit: usize) -> Result<Vec<JobRecord>> {
        self.inner.external_jobs(limit)
    }
    fn task(&self, instance: InstanceId, task: u64) -> Result<Option<TaskRecord>> {
        self.inner.task(instance, task)
    }
    fn tasks(&self, limit: usize) -> Result<Vec<TaskRecord>> {
        self.inner.tasks(limit)
    }
    fn subscriptions(&self, name: &str, key: &str) -> Result<Vec<SubscriptionRecord>> {
        self.inner.subscriptions(name, key)
    }
    fn messages(&self, name: &str, key: &str) -> Result<Vec<MessageRecord>> {
        self.inner.messages(name, key)
    }
    fn message_id_seen(&self, id: &str, now: Timestamp) -> Result<bool> {
        self.inner.message_id_seen(id, now)
    }
    fn incidents(&self) -> Result<Vec<IncidentRecord>> {
        self.inner.incidents()
    }
    fn incidents_of(&self, instance: InstanceId) -> Result<Vec<IncidentRecord>> {
        self.inner.incidents_of(instance)
    }
    fn history(&self, instance: InstanceId) -> Result<Vec<HistoryRecord>> {
        self.inner.history(instance)
    }
    fn request_key(&self, key: &str) -> Result<Option<InstanceId>> {
        self.inner.request_key(key)
    }
    fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.inner.user(name)
    }
    fn users(&self) -> Result<Vec<UserRecord>> {
        self.inner.users()
    }
    fn token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        self.inner.token(hash)
    }
    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.inner.tokens()
    }
    fn session(&self, hash: &str) -> Result<Option<SessionRecord>> {
        self.inner.session(hash)
    }
    fn sessions(&self) -> Result<Vec<SessionRecord>> {
        self.inner.sessions()
    }
    fn link(&self, hash: &str) -> Result<Option<LinkRecord>> {
        self.inner.link(hash)
    }
    fn rotation(&self, name: &str) -> Result<Option<RotationRecord>> {
        self.inner.rotation(name)
    }
}

fn percentile(sorted: &[SignedDuration], p: f64) -> SignedDuration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: SignedDuration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The child run: reopens the store, then runs the runtime until every timer of the window
/// fired (or a minute after the window, whichever is first), and prints the lateness.
fn fire(path: &Path, sizes: &Sizes) {
    let rss_before = rss("VmRSS:");
    let began = Instant::now();
    let recorder = Arc::new(Recorder {
        inner: Durable::open(path),
        fired: Mutex::default(),
        sweeps: Mutex::default(),
    });
    let engine = Arc::new(
        Engine::open(
            recorder.clone(),
            Arc::new(ciclo_engine::runtime::SystemClock),
            Catalog::standard(),
        )
        .expect("engine reopens"),
    );
    let next = engine
        .store()
        .next_timer()
        .expect("reads")
        .expect("a timer");
    let opened = began.elapsed();
    let rss_open = rss("VmRSS:");
    println!(
        "reopen (store + definitions + first timer read): {:.0} ms; resident memory {:.0} MiB (process before opening: {:.0} MiB)",
        opened.as_secs_f64() * 1e3,
        mib(rss_open),
        mib(rss_before)
    );

    // The timers of the window, with their due times, read before the runtime starts.
    let window_end = next.due + sizes.window;
    let watched: HashMap<(InstanceId, u64), Timestamp> = engine
        .store()
        .due_timers(window_end, sizes.due + 1)
        .expect("reads")
        .into_iter()
        .map(|t| ((t.instance, t.timer), t.due))
        .collect();
    assert_eq!(
        watched.len(),
        sizes.due,
        "the window holds exactly the timers put there"
    );
    let first_due = next.due;
    let last_due = watched.values().max().copied().unwrap_or(first_due);

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let runtime_started = Timestamp::now();
    let margin = first_due.duration_since(runtime_started);
    println!(
        "runtime started {:.1} s before the first timer of the window was due{}",
        margin.as_secs_f64(),
        if margin.is_negative() {
            "; LATE: the lateness below includes the start (raise CICLO_TIMERS_LEAD_S)"
        } else {
            ""
        }
    );
    let deadline = last_due + SignedDuration::from_secs(60);
    let fired_all = tokio.block_on(async {
        let handle = Runtime::spawn(engine.clone(), Default::default(), RuntimeOptions::default());
        let mut rss_peak_running = 0;
        let done = loop {
            rss_peak_running = rss_peak_running.max(rss("VmRSS:"));
            let fired = recorder
                .fired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|(i, t, _)| watched.contains_key(&(*i, *t)))
                .count();
            if fired == watched.len() {
                break true;
            }
            if Timestamp::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        handle.shutdown().await;
        println!(
            "resident memory while firing: up to {:.0} MiB (sampled every 50 ms; peak of the process {:.0} MiB)",
            mib(rss_peak_running),
            mib(rss("VmHWM:"))
        );
        done
    });

    let fired = recorder.fired.lock().unwrap_or_else(|e| e.into_inner());
    let mut lateness: Vec<SignedDuration> = fired
        .iter()
        .filter_map(|(i, t, at)| watched.get(&(*i, *t)).map(|due| at.duration_since(*due)))
        .collect();
    let others = fired.len() - lateness.len();
    lateness.sort();
    for (at, took) in recorder
        .sweeps
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        println!(
            "retention sweep (scans every instance in the store's writer thread): {:.0} ms, ended {:.1} s {} the first due time",
            took.as_secs_f64() * 1e3,
            at.duration_since(first_due).as_secs_f64().abs(),
            if *at <= first_due { "before" } else { "after" }
        );
    }
    let last_commit = fired.iter().map(|(_, _, at)| *at).max();
    println!(
        "fired {} of {} due in the window ({} other timers fired){}",
        lateness.len(),
        watched.len(),
        others,
        match last_commit {
            Some(last) => format!(
                "; last commit {:.0} ms after the last due time, {:.0} timers/s from the first due time",
                ms(last.duration_since(last_due)),
                lateness.len() as f64 / last.duration_since(first_due).as_secs_f64()
            ),
            None => String::new(),
        }
    );
    if let (Some(first), Some(last)) = (lateness.first(), lateness.last()) {
        println!(
            "lateness (fire commit returned - due): p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (min {:.1} ms)",
            ms(percentile(&lateness, 0.50)),
            ms(percentile(&lateness, 0.99)),
            ms(*last),
            ms(*first)
        );
    }
    let stats = recorder.inner.stats();
    println!(
        "{} group commit while open: {} commits in {} flushes ({:.1} per flush), apply {:.1} us per commit, flush {:.2} ms per flush",
        Kind::from_env().name(),
        stats.commits,
        stats.flushes,
        stats.commits as f64 / stats.flushes.max(1) as f64,
        stats.apply_micros as f64 / stats.commits.max(1) as f64,
        stats.flush_micros as f64 / 1e3 / stats.flushes.max(1) as f64
    );
    assert!(
        fired_all,
        "not every timer of the window fired within a minute"
    );
}

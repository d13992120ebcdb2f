//! The engine benchmark: prints figures, asserts nothing but correctness of every instance.
//!
//! `cargo bench -p ciclo-engine --bench engine` runs the process of the benchmark issue
//! (start -> `score = amount * 2` -> `score > 100`? -> `approved = true` -> end, amount 500)
//! in memory one at a time, then on each durable store (sled, then redb, through the same code):
//! with 64 concurrent starters (group commit) and one at a time, then parks 100,000 instances on
//! a user task and measures store size, memory and reopen time. Sizes can be changed with
//! CICLO_BENCH_MEMORY_N, CICLO_BENCH_SLED_N, CICLO_BENCH_REDB_N, CICLO_BENCH_WAITING_N; the
//! sections run with CICLO_BENCH_SECTIONS, a comma list of `memory`, `sled`, `redb` and
//! `parked` (default: all; `bench/run` asks for `memory,sled`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ciclo_engine::Value;
use ciclo_engine::parse::Catalog;
use ciclo_engine::runtime::{Engine, StartOptions, SystemClock};
use ciclo_engine::store::{
    InstanceId, InstanceStatus, MemoryStore, RedbOptions, RedbStore, SledOptions, SledStore, Store,
    StoreStats,
};

const SCORE: &str = r#"
process: score
start: score
steps:
  score:
    set: { score: amount * 2 }
    goto: check
  check:
    decide:
      - when: score > 100
        goto: approve
      - otherwise: done
  approve:
    set: { approved: true }
    goto: done
  done:
    end: true
"#;

const WAITING: &str = r#"
process: waiting
start: approve
steps:
  approve:
    task: Approve quote {{quote}}
    candidates: [sales-managers]
    form: { decision: [approve, reject] }
"#;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether CICLO_BENCH_SECTIONS (default: every section) names `section`.
fn wanted(section: &str) -> bool {
    match std::env::var("CICLO_BENCH_SECTIONS") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|s| s.trim() == section),
        _ => true,
    }
}

fn engine(store: Arc<dyn Store>, yaml: &str) -> Engine {
    let engine =
        Engine::open(store, Arc::new(SystemClock), Catalog::standard()).expect("engine opens");
    engine.deploy("bench.yaml", yaml).expect("deploys");
    engine
}

fn input() -> StartOptions {
    let mut vars = ciclo_engine::Vars::new();
    vars.insert("amount".into(), Value::from(500i64));
    StartOptions {
        vars,
        ..Default::default()
    }
}

fn check(engine: &Engine, ids: &[InstanceId]) {
    let thousand = Value::from(1000i64);
    for id in ids {
        let (record, state) = engine.instance(*id).expect("loads").expect("exists");
        assert_eq!(record.status, InstanceStatus::Completed);
        assert_eq!(state.vars.get("score"), Some(&thousand));
        assert_eq!(state.vars.get("approved"), Some(&Value::Bool(true)));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, count: usize, elapsed: Duration, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{name:<44} {count:>8} instances  {:>10.0} inst/s  p50 {:>8.1} us  p99 {:>8.1} us",
        count as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6,
    );
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn dir_size(path: &std::path::Path) -> u64 {
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

fn concurrent_starts(
    engine: &Arc<Engine>,
    process: &'static str,
    total: usize,
    threads: usize,
    vars: fn(usize) -> StartOptions,
) -> (Duration, Vec<Duration>, Vec<InstanceId>) {
    let began = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut ids = Vec::new();
                let mut i = t;
                while i < total {
                    let s = Instant::now();
                    ids.push(engine.start(process, vars(i)).expect("start"));
                    lat.push(s.elapsed());
                    i += threads;
                }
                (lat, ids)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    let mut ids = Vec::with_capacity(total);
    for h in handles {
        let (l, i) = h.join().expect("starter thread");
        latencies.extend(l);
        ids.extend(i);
    }
    (began.elapsed(), latencies, ids)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and wants a quick run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let scale = |n: usize| if quick { (n / 100).max(100) } else { n };
    println!(
        "ciclo engine benchmark ({} cores){}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        if quick {
            " [quick run: pass --bench for full sizes]"
        } else {
            ""
        }
    );

    // 1. In memory, one at a time.
    if wanted("memory") {
        let n = scale(env_count("CICLO_BENCH_MEMORY_N", 100_000));
        let mem = engine(Arc::new(MemoryStore::new()), SCORE);
        for _ in 0..n.min(5_000) {
            mem.start("score", input()).expect("warm-up");
        }
        let mut latencies = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let began = Instant::now();
        for _ in 0..n {
            let s = Instant::now();
            ids.push(mem.start("score", input()).expect("start"));
            latencies.push(s.elapsed());
        }
        let elapsed = began.elapsed();
        check(&mem, &ids);
        report("in memory, one at a time", n, elapsed, latencies);
        drop(mem);
    }

    // 2. and 3. on each durable store, through the same code.
    if wanted("sled") {
        store_sections("sled", scale, |path| {
            SledStore::open(SledOptions::new(path)).expect("sled opens")
        });
    }
    if wanted("redb") {
        store_sections("redb", scale, |path| {
            RedbStore::open(RedbOptions::new(path)).expect("redb opens")
        });
    }
}

/// A durable store as the benchmark needs it: a `Store` with committer statistics.
trait Durable: Store {
    fn stats(&self) -> StoreStats;
}

impl Durable for SledStore {
    fn stats(&self) -> StoreStats {
        SledStore::stats(self)
    }
}

impl Durable for RedbStore {
    fn stats(&self) -> StoreStats {
        RedbStore::stats(self)
    }
}

/// The durable runs and the parked instances on the store `open` opens on a data folder.
fn store_sections<S: Durable>(
    name: &str,
    scale: impl Fn(usize) -> usize,
    open: impl Fn(&Path) -> S,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let variable = format!("CICLO_BENCH_{}_N", name.to_uppercase());
    durable_commits(
        name,
        scale(env_count(&variable, 50_000)),
        &dir.path().join("data"),
        &open,
    );
    if !wanted("parked") {
        return;
    }
    parked(
        name,
        scale(env_count("CICLO_BENCH_WAITING_N", 100_000)),
        &dir.path().join("waiting"),
        &open,
    );
}

/// Durable on `name`, 64 concurrent starters sharing flushes, then one at a time.
fn durable_commits<S: Durable>(name: &str, n: usize, path: &Path, open: &impl Fn(&Path) -> S) {
    let store = Arc::new(open(path));
    let durable = Arc::new(engine(store.clone(), SCORE));
    let (elapsed, latencies, ids) = concurrent_starts(&durable, "score", n, 64, |_| input());
    check(&durable, &ids);
    report(
        &format!("durable on {name}, 64 concurrent starters"),
        n,
        elapsed,
        latencies,
    );
    let stats = store.stats();
    println!(
        "  {name} group commit: {} commits in {} flushes ({:.1} commits per flush); committer: apply {:.1} us per commit, flush {:.2} ms per flush",
        stats.commits,
        stats.flushes,
        stats.commits as f64 / stats.flushes.max(1) as f64,
        stats.apply_micros as f64 / stats.commits.max(1) as f64,
        stats.flush_micros as f64 / 1000.0 / stats.flushes.max(1) as f64,
    );
    let (elapsed, latencies, _) =
        concurrent_starts(&durable, "score", n.min(2_000), 1, |_| input());
    report(
        &format!("durable on {name}, one at a time"),
        n.min(2_000),
        elapsed,
        latencies,
    );
}

/// Instances waiting on a user task on `name`: bytes, memory, reopen.
fn parked<S: Durable>(name: &str, n: usize, path: &Path, open: &impl Fn(&Path) -> S) {
    let rss_before = rss_bytes();
    let store = Arc::new(open(path));
    let waiting = Arc::new(engine(store.clone(), WAITING));
    let (elapsed, _, ids) = concurrent_starts(&waiting, "waiting", n, 64, |i| {
        let mut vars = ciclo_engine::Vars::new();
        vars.insert("quote".into(), Value::from(format!("Q-{i:06}")));
        StartOptions {
            vars,
            ..Default::default()
        }
    });
    println!(
        "{:<44} {n:>8} instances  {:>10.0} inst/s",
        format!("parked on a user task ({name}, 64 starters)"),
        n as f64 / elapsed.as_secs_f64()
    );
    let rss_after = rss_bytes();
    drop(waiting);
    drop(store);
    // What is on disk after a clean close is the figure (sled writes its log in segments,
    // redb grows its file in regions).
    let bytes = dir_size(path);
    println!(
        "  {name} store on disk: {:.1} MiB, {:.0} bytes per waiting instance",
        bytes as f64 / 1048576.0,
        bytes as f64 / n as f64
    );
    // Memory freed by an earlier section may stay with the process, so growth is relative.
    println!(
        "  {name} resident memory: {:.0} MiB after parking (grew {:.0} MiB)",
        rss_after as f64 / 1048576.0,
        rss_after.saturating_sub(rss_before) as f64 / 1048576.0
    );
    let began = Instant::now();
    let store = Arc::new(open(path));
    let reopened = Engine::open(store.clone(), Arc::new(SystemClock), Catalog::standard())
        .expect("engine reopens");
    let first = reopened.instance(ids[0]).expect("loads").expect("exists");
    let reopen = began.elapsed();
    assert_eq!(first.0.status, InstanceStatus::Active);
    println!(
        "  {name} reopen (store + definitions + first instance read): {:.0} ms",
        reopen.as_secs_f64() * 1e3
    );
    let open_tasks = store.tasks(usize::MAX).expect("tasks").len();
    assert_eq!(open_tasks, n);
}

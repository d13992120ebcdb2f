//! HTTP load against a real `ciclo serve` on loopback: prints figures, asserts nothing but that
//! the server starts and answers.
//!
//! `bench/http-load` runs this program (`cargo bench -p ciclo --bench http_load`) after building
//! the release binary. It starts `ciclo serve` on 127.0.0.1:0 with a fresh data folder and a
//! process folder of its own (`load`: start -> user task -> end), then:
//!
//! 1. start-instance requests (`POST /api/instances`) at increasing fixed rates, each for a
//!    bounded time; a rate is held when every request succeeded, p99 is at most the limit
//!    (20 ms) and the rate achieved is at least 95% of the rate asked; a rate missed once is
//!    tried again, a rate missed twice ends the ladder;
//! 2. the same for completing user tasks (`POST /api/tasks/{instance}/{task}/complete`), each
//!    request a distinct open task, created beforehand through the API (not measured);
//! 3. a steady run (default 10 minutes) of starts and completions at a fixed rate each, the
//!    server's resident memory (`/proc/<pid>/status`) and the size of its data folder sampled
//!    every 30 s.
//!
//! Why a load generator of our own: `wrk` is closed-loop (a slow answer delays the next
//! request, which hides the latency it would have seen: coordinated omission); `oha` sends at
//! a fixed rate but one URL and body for all requests, and completing tasks needs a distinct
//! task per request. Here requests are sent open-loop on a fixed schedule (request i at
//! `origin + i / rate`), each on its own task, whether earlier ones were answered or not, and
//! latency is measured from the instant the request was due to be sent, so any delay of the
//! generator itself counts against the result, never hides part of it.
//!
//! Options (environment): CICLO_LOAD_START_RATES and CICLO_LOAD_COMPLETE_RATES (comma lists
//! of requests/s), CICLO_LOAD_STEP_S (seconds per rate, default 15), CICLO_LOAD_STEADY_S
//! (default 600), CICLO_LOAD_STEADY_RATE (starts/s and as many completions/s, default 1000),
//! CICLO_LOAD_SAMPLE_S (memory sample period, default 30), CICLO_LOAD_P99_MS (default 20).
//! `CICLO_RETENTION` and `CICLO_RETENTION_SWEEP` (how long finished instances are kept, and
//! how often the sweep that removes them runs; `ciclo serve --help`) and `CICLO_LOG` reach
//! the server (its default, `info`, logs one line per request, to a file
//! in the temporary folder). Without `--bench` (as `cargo test --all-targets` runs it) it is a
//! quick run of a few seconds at low rates.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

const PROCESS: &str = r#"
process: load
start: review
steps:
  review:
    task: Review request {{n}}
    candidates: [clerks]
    form: { decision: [approve, reject] }
    goto: done
  done:
    end: true
"#;

/// Requests in flight at most; past it the schedule waits (and the wait counts as latency).
const MAX_IN_FLIGHT: usize = 2048;

/// A request not answered in this time is an error.
const TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    quick: bool,
    start_rates: Vec<f64>,
    complete_rates: Vec<f64>,
    step: Duration,
    steady: Duration,
    steady_rate: f64,
    sample: Duration,
    p99_limit: Duration,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn env_number(name: &str, default: f64) -> f64 {
    let text = env_or(name, &default.to_string());
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}={text} is not a number"))
}

fn rates(name: &str, default: &str) -> Vec<f64> {
    env_or(name, default)
        .split(',')
        .map(|r| {
            r.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: `{r}` is not a rate"))
        })
        .collect()
}

impl Options {
    fn from_env() -> Options {
        // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: a quick run.
        let quick = !std::env::args().any(|a| a == "--bench");
        let ladder = "500,1000,2000,3000,4000,5000,6000,7000,8000";
        let (ladder, step, steady, steady_rate, sample) = if quick {
            ("20,40", 1.0, 3.0, 10.0, 1.0)
        } else {
            (ladder, 15.0, 600.0, 1000.0, 30.0)
        };
        Options {
            quick,
            start_rates: rates("CICLO_LOAD_START_RATES", ladder),
            complete_rates: rates("CICLO_LOAD_COMPLETE_RATES", ladder),
            step: Duration::from_secs_f64(env_number("CICLO_LOAD_STEP_S", step)),
            steady: Duration::from_secs_f64(env_number("CICLO_LOAD_STEADY_S", steady)),
            steady_rate: env_number("CICLO_LOAD_STEADY_RATE", steady_rate),
            sample: Duration::from_secs_f64(env_number("CICLO_LOAD_SAMPLE_S", sample)),
            p99_limit: Duration::from_secs_f64(env_number("CICLO_LOAD_P99_MS", 20.0) / 1e3),
        }
    }
}

/// The server under load: `ciclo serve` as a child process.
struct Server {
    child: Child,
    url: String,
    token: String,
}

impl Server {
    fn start(data: &Path, processes: &Path, log: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ciclo"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data")
            .arg(data)
            .arg("--processes")
            .arg(processes)
            .env_remove("CICLO_CONFIG")
            .env_remove("CICLO_ERP_URL")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("server log file"))
            .spawn()
            .expect("ciclo serve starts");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let url = loop {
            line.clear();
            let n = out.read_line(&mut line).expect("server output");
            assert!(
                n > 0,
                "the server stopped before listening; see {}",
                log.display()
            );
            if let Some(rest) = line.trim().strip_prefix("listening on ") {
                break rest.to_string();
            }
        };
        // Keep reading its standard output so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let token = std::fs::read_to_string(data.join("admin-token"))
            .expect("admin token written")
            .trim()
            .to_string();
        Server { child, url, token }
    }

    /// Resident memory of the server, from `/proc/<pid>/status`.
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    /// SIGTERM, then waits for the graceful exit (SIGKILL after 30 s).
    fn stop(mut self) {
        // SAFETY: a signal to our own child, not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                println!("the server did not stop within 30 s of SIGTERM: killed");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An open task: (instance, task number).
type Task = (String, u64);

/// What to send as request `i`; `None` when there is nothing to send (no task ready), which
/// counts as an error of that request.
type Make = Arc<dyn Fn(usize) -> Option<reqwest::RequestBuilder> + Send + Sync>;

/// What to do with the body of a successful answer.
type OnAnswer = Arc<dyn Fn(&[u8]) + Send + Sync>;

#[derive(Default)]
struct Tally {
    /// Latencies of successful requests, in microseconds, from the instant each was due.
    micros: Vec<u64>,
    errors: u64,
    /// The first few distinct error texts.
    samples: Vec<String>,
    last_answer: Option<Instant>,
}

impl Tally {
    fn error(&mut self, text: String) {
        self.errors += 1;
        if self.samples.len() < 3 && !self.samples.contains(&text) {
            self.samples.push(text);
        }
    }
}

/// One open-loop run's figures.
struct Figures {
    asked: f64,
    sent: usize,
    achieved: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    errors: u64,
    samples: Vec<String>,
}

impl Figures {
    fn held(&self, limit: Duration) -> bool {
        self.errors == 0 && self.p99 <= limit && self.achieved >= 0.95 * self.asked
    }
}

fn micros_at(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    Duration::from_micros(sorted[((sorted.len() as f64 - 1.0) * p).round() as usize])
}

/// Sends `count` requests at `rate` per second on a fixed schedule from `origin`, never
/// waiting for answers (beyond `MAX_IN_FLIGHT`), and measures each from when it was due.
async fn open_loop(origin: Instant, rate: f64, count: usize, make: Make, on: OnAnswer) -> Figures {
    let tally = Arc::new(Mutex::new(Tally {
        micros: Vec::with_capacity(count),
        ..Default::default()
    }));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    for i in 0..count {
        let due = origin + Duration::from_secs_f64(i as f64 / rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let slot = slots.clone().acquire_owned().await.expect("semaphore");
        let Some(request) = make(i) else {
            tally
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .error("nothing to send: no open task ready".into());
            continue;
        };
        let tally = tally.clone();
        let on = on.clone();
        tokio::spawn(async move {
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    match response.bytes().await {
                        Ok(body) if status.is_success() => {
                            on(&body);
                            Ok(())
                        }
                        Ok(body) => Err(format!(
                            "{status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        )),
                        Err(e) => Err(format!("reading the answer: {e}")),
                    }
                }
                Err(e) => Err(format!("{e}")),
            };
            let now = Instant::now();
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                Ok(()) => t.micros.push(now.duration_since(due).as_micros() as u64),
                Err(text) => t.error(text),
            }
            t.last_answer = Some(t.last_answer.map_or(now, |l| l.max(now)));
            drop(slot);
        });
    }
    // Every request answered (or timed out) when all slots are free again.
    let _all = slots
        .acquire_many(MAX_IN_FLIGHT as u32)
        .await
        .expect("semaphore");
    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
    t.micros.sort_unstable();
    let span = t
        .last_answer
        .map(|l| l.duration_since(origin))
        .unwrap_or_default()
        .max(Duration::from_secs_f64(count as f64 / rate));
    Figures {
        asked: rate,
        sent: count,
        achieved: t.micros.len() as f64 / span.as_secs_f64(),
        p50: micros_at(&t.micros, 0.50),
        p99: micros_at(&t.micros, 0.99),
        max: t
            .micros
            .last()
            .map_or(Duration::ZERO, |m| Duration::from_micros(*m)),
        errors: t.errors,
        samples: std::mem::take(&mut t.samples),
    }
}

/// The instance and task of a start's answer (`position[0].waits_for.task`).
fn task_of(body: &[u8]) -> Option<Task> {
    let detail: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = detail["id"].as_str()?.to_string();
    let task = detail["position"][0]["waits_for"]["task"].as_u64()?;
    Some((id, task))
}

struct Load {
    client: reqwest::Client,
    url: String,
    token: String,
    /// Open tasks, filled by starts, taken by completions.
    tasks: Arc<Mutex<VecDeque<Task>>>,
}

impl Load {
    fn start_request(&self) -> Make {
        let (client, url, token) = (self.client.clone(), self.url.clone(), self.token.clone());
        Arc::new(move |i| {
            Some(
                client
                    .post(format!("{url}/api/instances"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"process": "load", "variables": {"n": i}})),
            )
        })
    }

    fn complete_request(&self) -> Make {
        let (client, url, token) = (self.client.clone(), self.url.clone(), self.token.clone());
        let tasks = self.tasks.clone();
        Arc::new(move |_| {
            let (instance, task) = tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()?;
            Some(
                client
                    .post(format!("{url}/api/tasks/{instance}/{task}/complete"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"values": {"decision": "approve"}})),
            )
        })
    }

    fn keep_task(&self) -> OnAnswer {
        let tasks = self.tasks.clone();
        Arc::new(move |body| {
            if let Some(task) = task_of(body) {
                tasks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(task);
            }
        })
    }

    /// Starts instances until `wanted` tasks are open, 32 at a time, unmeasured.
    async fn create_tasks(&self, wanted: usize) {
        let missing =
            wanted.saturating_sub(self.tasks.lock().unwrap_or_else(|e| e.into_inner()).len());
        if missing == 0 {
            return;
        }
        let began = Instant::now();
        let make = self.start_request();
        let keep = self.keep_task();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers: Vec<_> = (0..32)
            .map(|_| {
                let (make, keep, next) = (make.clone(), keep.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < missing {
                        let request = make(0).expect("a start request");
                        match request.send().await {
                            Ok(r) if r.status().is_success() => {
                                keep(&r.bytes().await.expect("answer"));
                            }
                            Ok(r) => panic!("creating tasks: the server answered {}", r.status()),
                            Err(e) => panic!("creating tasks: {e}"),
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.expect("task creator");
        }
        println!(
            "  (created {missing} open tasks in {:.1} s, unmeasured)",
            began.elapsed().as_secs_f64()
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn header() {
    println!(
        "| {:<12} | {:>10} | {:>13} | {:>8} | {:>8} | {:>8} | {:>6} | {:<4} |",
        "request", "rate asked", "rate achieved", "p50 ms", "p99 ms", "max ms", "errors", "held"
    );
    println!(
        "|--------------|------------|---------------|----------|----------|----------|--------|------|"
    );
}

fn row(kind: &str, f: &Figures, limit: Duration) {
    println!(
        "| {:<12} | {:>10.0} | {:>13.0} | {:>8.1} | {:>8.1} | {:>8.1} | {:>6} | {:<4} |",
        kind,
        f.asked,
        f.achieved,
        ms(f.p50),
        ms(f.p99),
        ms(f.max),
        f.errors,
        if f.held(limit) { "yes" } else { "no" }
    );
    for s in &f.samples {
        println!("|   error: {s}");
    }
}

/// Runs the rates in turn for `options.step` each and returns the highest rate held. A rate
/// missed once is run again after a pause (the machine is shared: a build elsewhere can spoil
/// one step); a rate missed twice ends the ladder. Every attempt is printed.
async fn ladder(load: &Load, kind: &str, rates: &[f64], options: &Options) -> Option<f64> {
    let mut best = None;
    for &rate in rates {
        let mut held = false;
        for attempt in 1..=2 {
            let count = (rate * options.step.as_secs_f64()).round() as usize;
            let make = if kind == "start" {
                load.start_request()
            } else {
                load.create_tasks(count).await;
                load.complete_request()
            };
            let on: OnAnswer = if kind == "start" {
                load.keep_task()
            } else {
                Arc::new(|_| {})
            };
            let origin = Instant::now() + Duration::from_millis(20);
            let figures = open_loop(origin, rate, count, make, on).await;
            let label = if attempt == 1 {
                kind.to_string()
            } else {
                format!("{kind} (2)")
            };
            row(&label, &figures, options.p99_limit);
            held = figures.held(options.p99_limit);
            // A pause, so one step's backlog (flushes, log lines) does not start the next;
            // longer after a miss, which may have left a queue behind.
            let pause = match (options.quick, held) {
                (true, _) => 0,
                (false, true) => 2,
                (false, false) => 10,
            };
            tokio::time::sleep(Duration::from_secs(pause)).await;
            if held {
                break;
            }
        }
        if !held {
            break;
        }
        best = Some(rate);
    }
    best
}

fn main() {
    let options = Options::from_env();
    let folder = tempfile::tempdir().expect("temp dir");
    let (data, processes) = (folder.path().join("data"), folder.path().join("processes"));
    std::fs::create_dir_all(&processes).expect("process folder");
    std::fs::write(processes.join("load.yaml"), PROCESS).expect("process file");
    let log = folder.path().join("server.log");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "ciclo HTTP load ({cores} cores; server and load generator on the same machine){}",
        if options.quick {
            " [quick run: pass --bench for full sizes]"
        } else {
            ""
        }
    );
    let server = Server::start(&data, &processes, &log);
    println!(
        "server {} (pid {}, store {}, retention {}, sweep every {}), data {}, log {}",
        server.url,
        server.child.id(),
        std::env::var("CICLO_STORE").unwrap_or_else(|_| "sled".into()),
        std::env::var("CICLO_RETENTION").unwrap_or_else(|_| "90d".into()),
        std::env::var("CICLO_RETENTION_SWEEP").unwrap_or_else(|_| "1h".into()),
        data.display(),
        log.display()
    );
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(None)
        .timeout(TIMEOUT)
        .build()
        .expect("HTTP client");
    let load = Load {
        client,
        url: server.url.clone(),
        token: server.token.clone(),
        tasks: Arc::default(),
    };
    tokio.block_on(async {
        // Warm-up: connections, the server's threads, the store's first pages.
        load.create_tasks(if options.quick { 20 } else { 2_000 })
            .await;
        load.tasks.lock().unwrap_or_else(|e| e.into_inner()).clear();

        println!(
            "\nrate steps: {} s each, held = no error, p99 <= {} ms, achieved >= 95% of asked",
            options.step.as_secs_f64(),
            ms(options.p99_limit)
        );
        header();
        let starts = ladder(&load, "start", &options.start_rates, &options).await;
        let completes = ladder(&load, "complete", &options.complete_rates, &options).await;
        let show = |r: Option<f64>| r.map_or("none".to_string(), |r| format!("{r:.0}/s"));
        println!(
            "highest rate held: starts {}, task completions {}",
            show(starts),
            show(completes)
        );

        steady(&load, &server, &data, &options).await;
    });
    let bytes = dir_size(&data);
    println!(
        "data folder at the end: {:.0} MiB",
        bytes as f64 / 1048576.0
    );
    server.stop();
}

/// Starts and completions at `options.steady_rate` each for `options.steady`, the server's
/// memory and the size of its data folder sampled every `options.sample`. Completions take
/// the tasks the run's own starts opened, one second behind them.
async fn steady(load: &Load, server: &Server, data: &Path, options: &Options) {
    let rate = options.steady_rate;
    let count = (rate * options.steady.as_secs_f64()).round() as usize;
    load.tasks.lock().unwrap_or_else(|e| e.into_inner()).clear();
    println!(
        "\nsteady run: {:.0} starts/s and {:.0} completions/s for {:.0} s; server memory every {:.0} s",
        rate,
        rate,
        options.steady.as_secs_f64(),
        options.sample.as_secs_f64()
    );
    let began = Instant::now();
    let rss_start = server.rss_bytes();
    println!(
        "  {:>6.0} s  server RSS {:>6.1} MiB  data {:>6.0} MiB",
        0.0,
        rss_start as f64 / 1048576.0,
        dir_size(data) as f64 / 1048576.0
    );
    let origin = began + Duration::from_millis(20);
    let starts = tokio::spawn(open_loop(
        origin,
        rate,
        count,
        load.start_request(),
        load.keep_task(),
    ));
    let completes = tokio::spawn(open_loop(
        origin + Duration::from_secs(1),
        rate,
        count,
        load.complete_request(),
        Arc::new(|_| {}),
    ));
    let mut samples = vec![rss_start];
    let mut next = began + options.sample;
    while !(starts.is_finished() && completes.is_finished()) {
        if Instant::now() >= next {
            let rss = server.rss_bytes();
            samples.push(rss);
            println!(
                "  {:>6.0} s  server RSS {:>6.1} MiB  data {:>6.0} MiB",
                began.elapsed().as_secs_f64(),
                rss as f64 / 1048576.0,
                dir_size(data) as f64 / 1048576.0
            );
            next += options.sample;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_end = server.rss_bytes();
    println!(
        "  {:>6.0} s  server RSS {:>6.1} MiB (end)",
        began.elapsed().as_secs_f64(),
        rss_end as f64 / 1048576.0
    );
    let starts = starts.await.expect("starts");
    let completes = completes.await.expect("completions");
    header();
    row("start", &starts, options.p99_limit);
    row("complete", &completes, options.p99_limit);
    let peak = samples.iter().copied().max().unwrap_or(0).max(rss_end);
    println!(
        "server RSS: {:.1} MiB at the start, {:.1} MiB at the end, {:.1} MiB at most ({} samples); {} requests in {:.0} s",
        rss_start as f64 / 1048576.0,
        rss_end as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        samples.len() + 1,
        starts.sent + completes.sent,
        began.elapsed().as_secs_f64()
    );
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

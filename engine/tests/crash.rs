//! Crash tests with real child processes killed by SIGKILL, on the sled store on disk.
//!
//! Each test runs twice: as the parent (the test), and as a child process that re-executes this
//! test binary with `CICLO_CRASH_CHILD` set, does the work, and is killed at a named point.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ciclo_engine::parse::Catalog;
use ciclo_engine::runtime::{
    Connector, Connectors, Engine, JobFuture, JobOutcome, JobRequest, Runtime, RuntimeOptions,
    StartOptions, SystemClock,
};
use ciclo_engine::store::sled::{SledOptions, SledStore};
use ciclo_engine::store::{InstanceId, InstanceStatus, Store};

const WAITING: &str = r#"
process: waiting
start: approve
steps:
  approve:
    task: Approve quote {{quote}}
    form: { decision: [approve, reject] }
"#;

const SEND: &str = r#"
process: send-order
start: send
steps:
  send:
    call: test.record
    input: { order: order }
    goto: done
  done:
    end: true
"#;

fn open_engine(dir: &Path) -> (Arc<SledStore>, Engine) {
    let store = Arc::new(SledStore::open(SledOptions::new(dir)).expect("sled opens"));
    let engine = Engine::open(store.clone(), Arc::new(SystemClock), Catalog::standard())
        .expect("engine opens");
    (store, engine)
}

/// Starts this test binary again as a child running `test` in `mode`.
fn spawn_child(test: &str, mode: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("CICLO_CRASH_CHILD", mode)
        .env("CICLO_CRASH_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("child starts")
}

/// Reads a child's stdout until a line holds `marker`; returns the rest of that line. One
/// reader per child, kept across calls, so no buffered line is lost between them.
fn wait_for_line(reader: &mut BufReader<ChildStdout>, marker: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read child output");
        assert!(n > 0, "child ended before printing `{marker}`");
        // The test harness may print `test NAME ... ` on the same line, before our words.
        if let Some(at) = line.find(marker) {
            return line[at + marker.len()..].trim().to_string();
        }
    }
}

fn output(child: &mut Child) -> BufReader<ChildStdout> {
    BufReader::new(child.stdout.take().expect("child stdout"))
}

fn child_mode() -> Option<(String, PathBuf)> {
    let mode = std::env::var("CICLO_CRASH_CHILD").ok()?;
    let dir = PathBuf::from(std::env::var("CICLO_CRASH_DIR").ok()?);
    Some((mode, dir))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Issue test 6: start an instance, get the acknowledgement, SIGKILL the process, reopen the
/// store: the instance is there, unchanged.
#[test]
fn acknowledged_start_survives_sigkill() {
    if let Some((mode, dir)) = child_mode() {
        assert_eq!(mode, "start");
        let (store, engine) = open_engine(&dir);
        engine.deploy("waiting.yaml", WAITING).expect("deploys");
        for i in 0..3 {
            let mut vars = ciclo_engine::Vars::new();
            vars.insert("quote".into(), ciclo_engine::Value::from(format!("Q-{i}")));
            let id = engine
                .start(
                    "waiting",
                    StartOptions {
                        vars,
                        ..Default::default()
                    },
                )
                .expect("start");
            // The acknowledgement: `start` returned, so the write is durable.
            let record = store.instance(id).expect("read").expect("exists");
            println!("@acknowledged {id} {}", hex(&record.state));
        }
        println!("waiting to be killed");
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut child = spawn_child("acknowledged_start_survives_sigkill", "start", &data);
    let mut out = output(&mut child);
    let mut acknowledged = Vec::new();
    for _ in 0..3 {
        let line = wait_for_line(&mut out, "@acknowledged");
        let (id, state) = line.split_once(' ').expect("id and state");
        acknowledged.push((id.parse::<InstanceId>().expect("id"), state.to_string()));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let (store, engine) = open_engine(&data);
    for (id, state) in &acknowledged {
        let record = store
            .instance(*id)
            .expect("read")
            .expect("acknowledged instance exists after SIGKILL");
        assert_eq!(record.status, InstanceStatus::Active);
        assert_eq!(&hex(&record.state), state, "state unchanged");
        assert_eq!(engine.instance(*id).unwrap().unwrap().1.tasks_open(), 1);
    }
    assert_eq!(store.tasks(100).unwrap().len(), 3);
}

/// The far side of the `test` connector: it appends every call's idempotency key to a file,
/// like a receiver that logs requests before de-duplicating them.
struct Recorder {
    log: PathBuf,
}

impl Connector for Recorder {
    fn call(&self, request: JobRequest) -> JobFuture {
        let log = self.log.clone();
        Box::pin(async move {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("log opens");
            writeln!(f, "{}", request.key).expect("log written");
            f.sync_all().expect("log synced");
            JobOutcome::Done(ciclo_engine::Vars::new())
        })
    }
}

fn run_runtime_until_done(engine: Engine, log: PathBuf, id: InstanceId) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async move {
        let engine = Arc::new(engine);
        let mut connectors: Connectors = Default::default();
        connectors.insert("test".into(), Arc::new(Recorder { log }));
        let handle = Runtime::spawn(
            engine.clone(),
            connectors,
            RuntimeOptions {
                poll: Duration::from_millis(20),
                ..Default::default()
            },
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = engine
                .instance(id)
                .expect("read")
                .is_some_and(|(r, _)| r.status == InstanceStatus::Completed);
            if done {
                println!("@completed {id}");
                break;
            }
            assert!(Instant::now() < deadline, "instance did not complete");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handle.shutdown().await;
    });
}

/// Issue test 5: SIGKILL right after a connector call returned and before the engine
/// committed: after restart the call is made again with the same idempotency key, and a
/// receiver that de-duplicates by key records one call.
#[test]
fn job_repeated_with_the_same_key_after_sigkill() {
    if let Some((mode, dir)) = child_mode() {
        let log = dir.join("calls.log");
        match mode.as_str() {
            "first" => {
                let (_store, engine) = open_engine(&dir.join("data"));
                let engine = engine.with_failpoint(Arc::new(|point: &str| {
                    if point == "job-returned" {
                        println!("@failpoint {point}");
                        loop {
                            std::thread::sleep(Duration::from_secs(60));
                        }
                    }
                }));
                engine.deploy("send.yaml", SEND).expect("deploys");
                let mut vars = ciclo_engine::Vars::new();
                vars.insert("order".into(), ciclo_engine::Value::from("SO-1"));
                let id = engine
                    .start(
                        "send-order",
                        StartOptions {
                            vars,
                            ..Default::default()
                        },
                    )
                    .expect("start");
                println!("@started {id}");
                run_runtime_until_done(engine, log, id);
            }
            "second" => {
                let (_store, engine) = open_engine(&dir.join("data"));
                let id: InstanceId = std::env::var("CICLO_CRASH_INSTANCE")
                    .expect("instance")
                    .parse()
                    .expect("id");
                run_runtime_until_done(engine, log, id);
            }
            other => panic!("unknown child mode {other}"),
        }
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = spawn_child(
        "job_repeated_with_the_same_key_after_sigkill",
        "first",
        dir.path(),
    );
    let mut out = output(&mut first);
    let id = wait_for_line(&mut out, "@started");
    let point = wait_for_line(&mut out, "@failpoint");
    assert_eq!(point, "job-returned");
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");

    let calls = std::fs::read_to_string(dir.path().join("calls.log")).expect("one call logged");
    assert_eq!(
        calls.lines().count(),
        1,
        "the connector was called once before the kill"
    );

    let mut second = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "job_repeated_with_the_same_key_after_sigkill",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CICLO_CRASH_CHILD", "second")
        .env("CICLO_CRASH_DIR", dir.path())
        .env("CICLO_CRASH_INSTANCE", &id)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("second child");
    let mut out = output(&mut second);
    let completed = wait_for_line(&mut out, "@completed");
    std::io::copy(&mut out, &mut std::io::sink()).expect("rest of the child's output");
    assert_eq!(completed, id);
    let status = second.wait().expect("second child ends");
    assert!(status.success());

    let calls = std::fs::read_to_string(dir.path().join("calls.log")).expect("calls logged");
    let keys: Vec<&str> = calls.lines().collect();
    assert_eq!(
        keys.len(),
        2,
        "the call was made again after the restart: {keys:?}"
    );
    assert_eq!(keys[0], keys[1], "with the same idempotency key");
    let distinct: std::collections::BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        1,
        "a receiver that de-duplicates by key records one call"
    );
    let (_store, engine) = open_engine(&dir.path().join("data"));
    let (record, _) = engine.instance(id.parse().unwrap()).unwrap().unwrap();
    assert_eq!(record.status, InstanceStatus::Completed);
}

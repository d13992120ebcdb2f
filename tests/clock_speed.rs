//! `ciclo serve --clock-speed`: a process that waits days finishes in seconds, at the
//! process time the clock says; bad values are refused before anything starts.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::Server;

const WAITS_TWO_DAYS: &str = "\
process: reminder
name: Reminder in two days
start: wait
steps:
  wait:
    wait: P2D
    goto: stamp
  stamp:
    set: { fired_at: now() }
";

#[tokio::test(flavor = "multi_thread")]
async fn a_two_day_timer_fires_in_seconds_at_process_time() {
    let procs = support::processes(&[("reminder.yaml", WAITS_TWO_DAYS)]);
    let data = tempfile::tempdir().unwrap();
    // A day per second, from a fixed day: the instance ends about two seconds later, and the
    // time it records is two days after its start, not two seconds.
    let s = Server::start_with(
        data.path(),
        procs.path(),
        &["--clock-speed", "86400", "--clock-start", "2025-03-01"],
    );
    let c = reqwest::Client::new();
    let started: Value = c
        .post(format!("{}/api/instances", s.url))
        .bearer_auth(&s.token)
        .json(&json!({"process": "reminder"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["id"].as_str().expect("an instance id").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let instance = loop {
        let instance: Value = c
            .get(format!("{}/api/instances/{id}", s.url))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if instance["state"] == "completed" {
            break instance;
        }
        assert!(
            Instant::now() < deadline,
            "the two-day timer did not fire within a minute at a day per second: {instance}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let fired: jiff::Timestamp = instance["variables"]["fired_at"]
        .as_str()
        .unwrap_or_else(|| panic!("fired_at recorded: {instance}"))
        .parse()
        .unwrap();
    let start: jiff::Timestamp = "2025-03-01T00:00:00Z".parse().unwrap();
    let waited = fired.duration_since(start);
    assert!(
        waited >= jiff::SignedDuration::from_hours(48)
            && waited < jiff::SignedDuration::from_hours(24 * 30),
        "fired at {fired}: not two days (and less than a month of process time) after {start}"
    );
}

#[test]
fn bad_clock_options_are_refused_with_their_name() {
    let procs = support::processes(&[("reminder.yaml", WAITS_TWO_DAYS)]);
    for (args, expected) in [
        (vec!["--clock-speed", "0.5"], "--clock-speed"),
        (vec!["--clock-speed", "fast"], "--clock-speed"),
        (
            vec!["--clock-speed", "60", "--clock-start", "March"],
            "--clock-start `March`",
        ),
        (vec!["--clock-start", "2025-03-01"], "--clock-speed"),
    ] {
        let data = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ciclo"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .arg("--processes")
            .arg(procs.path())
            .args(&args)
            .env_remove("CICLO_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            stderr.contains(expected),
            "{args:?}: the error does not name {expected}: {stderr}"
        );
    }
}

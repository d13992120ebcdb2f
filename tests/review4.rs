//! Review of issue 4 against the real `ciclo serve`: a long-polling external worker does not
//! hold up the server's stop.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, processes};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_answers_a_waiting_fetch_at_once() {
    let data = tempfile::tempdir().unwrap();
    let procs = processes(&[]);
    let server = Server::start(data.path(), procs.path());
    let client = reqwest::Client::new();
    let made: Value = client
        .post(format!("{}/api/tokens", server.url))
        .bearer_auth(&server.token)
        .json(&json!({"role": "worker", "label": "poller"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let worker = made["secret"].as_str().expect("secret").to_string();
    let fetch = |wait_ms: u64| {
        client
            .post(format!("{}/api/external-jobs/fetch-and-lock", server.url))
            .bearer_auth(&worker)
            .json(&json!({"worker": "w", "types": ["nothing"], "wait_ms": wait_ms}))
            .send()
    };
    let long_poll = tokio::spawn(fetch(30_000));
    // A full round trip after the long poll was sent, so that the server holds it.
    let quick = fetch(0).await.unwrap();
    assert!(quick.status().is_success(), "{}", quick.status());
    let stopped_at = Instant::now();
    // Before the fix the server answered the poll only after its 30 s, and stopped then.
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let answer = long_poll.await.unwrap().expect("the poll is answered");
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(answer.json::<Value>().await.unwrap(), json!([]));
    assert!(stopped_at.elapsed() < Duration::from_secs(10));
}

//! External workers against the real `ciclo serve` binary: a lease that runs out goes to
//! another worker, whose completion counts once while the first worker's late one is refused;
//! and the Python example worker (`examples/external-worker/worker.py`) scores a lead.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Server, processes};

const EXAMPLE: &str = include_str!("../examples/external-worker/score-lead.yaml");

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

async fn post(
    c: &reqwest::Client,
    s: &Server,
    token: &str,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let answer = c
        .post(format!("{}{path}", s.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = answer.status();
    let text = answer.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(c: &reqwest::Client, s: &Server, path: &str) -> Value {
    let answer = c
        .get(format!("{}{path}", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("request");
    assert!(
        answer.status().is_success(),
        "GET {path}: {}",
        answer.status()
    );
    answer.json().await.expect("json")
}

async fn worker_token(c: &reqwest::Client, s: &Server) -> String {
    let (status, made) = post(
        c,
        s,
        &s.token,
        "/api/tokens",
        json!({"role": "worker", "label": "test worker"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    made["secret"].as_str().expect("secret").to_string()
}

async fn start(c: &reqwest::Client, s: &Server, lead: Value) -> String {
    let (status, started) = post(
        c,
        s,
        &s.token,
        "/api/instances",
        json!({"process": "score-lead", "variables": {"lead": lead}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    started["id"].as_str().expect("id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_goes_to_a_second_worker_and_the_first_is_refused() {
    let data = tempfile::tempdir().expect("data");
    let procs = processes(&[("score-lead.yaml", EXAMPLE)]);
    let s = Server::start(data.path(), procs.path());
    let c = client();
    let worker = worker_token(&c, &s).await;
    let instance = start(&c, &s, json!({"email": "ada@example.com"})).await;
    let fetch = "/api/external-jobs/fetch-and-lock";

    // Worker A takes the job with a short lease, and does not answer in time.
    let (status, a) = post(
        &c,
        &s,
        &worker,
        fetch,
        json!({"worker": "a", "types": ["score-lead"], "lease_ms": 300}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a.as_array().map(Vec::len), Some(1), "{a}");
    let id = a[0]["id"].as_str().expect("id").to_string();
    let a_token = a[0]["lease_token"].as_str().expect("token").to_string();

    // Worker B polls (long polling, bounded by a deadline) until the lease ran out and B gets it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let b = loop {
        let (status, b) = post(
            &c,
            &s,
            &worker,
            fetch,
            json!({"worker": "b", "types": ["score-lead"], "lease_ms": 60000, "wait_ms": 1000}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{b}");
        if let Some(job) = b.as_array().and_then(|jobs| jobs.first()) {
            break job.clone();
        }
        assert!(Instant::now() < deadline, "B never got the job");
    };
    assert_eq!(b["id"], id.as_str(), "the same job");
    assert_eq!(b["attempt"], 1, "a lapsed lease uses up no retry");
    let b_token = b["lease_token"].as_str().expect("token");
    assert_ne!(b_token, a_token);

    let (status, body) = post(
        &c,
        &s,
        &worker,
        &format!("/api/external-jobs/{id}/complete"),
        json!({"worker": "b", "lease_token": b_token, "variables": {"score": 42}}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // A's late completion is refused, and changes nothing.
    let (status, refused) = post(
        &c,
        &s,
        &worker,
        &format!("/api/external-jobs/{id}/complete"),
        json!({"worker": "a", "lease_token": a_token, "variables": {"score": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["code"] == "lease_expired" || refused["code"] == "lease_not_held",
        "{refused}"
    );

    let detail = get(&c, &s, &format!("/api/instances/{instance}")).await;
    assert_eq!(detail["state"], "completed", "{detail}");
    assert_eq!(detail["variables"]["score"], 42, "B's variables: {detail}");
    let history = get(&c, &s, &format!("/api/instances/{instance}/history")).await;
    let lines = history["items"].as_array().expect("history lines");
    let done: Vec<_> = lines
        .iter()
        .filter(|l| l["what"] == "step" && l["step"] == "score")
        .collect();
    assert_eq!(done.len(), 1, "the step completed once: {history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_worker_scores_a_lead() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIPPED: python3 not found");
        return;
    }
    let data = tempfile::tempdir().expect("data");
    let procs = processes(&[("score-lead.yaml", EXAMPLE)]);
    let s = Server::start(data.path(), procs.path());
    let c = client();
    let token = worker_token(&c, &s).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/external-worker/worker.py"
    );
    let mut worker = std::process::Command::new("python3")
        .arg(script)
        .args(["--worker", "py-1", "--wait-ms", "1000"])
        .env("CICLO_URL", &s.url)
        .env("CICLO_TOKEN", &token)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the Python worker");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut worker);

    let good = start(
        &c,
        &s,
        json!({"email": "ada@acme.example", "company": "Acme", "employees": 120}),
    )
    .await;
    let bad = start(&c, &s, json!({"email": "nobody"})).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (good, bad) = loop {
        let g = get(&c, &s, &format!("/api/instances/{good}")).await;
        let b = get(&c, &s, &format!("/api/instances/{bad}")).await;
        if g["state"] == "completed" && b["state"] == "completed" {
            break (g, b);
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not finish: {g} {b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // 10 + 30 (own domain) + 20 (company) + 12 (120 employees / 10).
    assert_eq!(good["variables"]["score"], 72, "{good}");
    assert_eq!(
        bad["variables"]["rejected_because"], "the lead has no usable e-mail address",
        "{bad}"
    );
}

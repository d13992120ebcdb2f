//! The server as operators and clients use it: the real `ciclo serve` binary on port 0 with a
//! temporary data folder, driven over HTTP, killed with SIGKILL and stopped with SIGTERM.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Server, processes};

const APPROVAL: &str = r#"
process: approval
start: score
steps:
  score:
    set: { score: amount * 2 }
    goto: approve
  approve:
    task: Approve {{amount}}
    candidates: [managers]
    form: { decision: [approve, reject], note: { type: text, required: false } }
    goto: done
  done:
    end: true
"#;

const QUICK: &str = r#"
process: quick
start: calc
steps:
  calc:
    set: { doubled: n * 2 }
"#;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn get(c: &reqwest::Client, s: &Server, path: &str) -> Value {
    let r = c
        .get(format!("{}{path}", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("request");
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().await.expect("json")
}

/// Every item of a paginated list.
async fn all(c: &reqwest::Client, s: &Server, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(cur) => format!("{path}{sep}limit=500&cursor={cur}"),
            None => format!("{path}{sep}limit=500"),
        };
        let page = get(c, s, &url).await;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return items,
        }
    }
}

async fn deploy(c: &reqwest::Client, s: &Server, file: &str, yaml: &str) -> reqwest::Response {
    c.post(format!("{}/api/definitions?file={file}", s.url))
        .bearer_auth(&s.token)
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .send()
        .await
        .expect("deploy")
}

async fn start(
    c: &reqwest::Client,
    s: &Server,
    body: Value,
    key: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut r = c
        .post(format!("{}/api/instances", s.url))
        .bearer_auth(&s.token)
        .json(&body);
    if let Some(key) = key {
        r = r.header("Idempotency-Key", key);
    }
    r.send().await
}

/// Issue test 1: 200 instances started concurrently through the API, their tasks completed
/// through the API; all end; history shows each step with its actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_instances_end_to_end_over_http() {
    let data = tempfile::tempdir().unwrap();
    let empty = processes(&[]);
    let s = Server::start(data.path(), empty.path());
    let c = client();
    let r = deploy(&c, &s, "approval.yaml", APPROVAL).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap_or_default()
    );

    let mut starts = Vec::new();
    for i in 0..200 {
        let (c, url, token) = (c.clone(), s.url.clone(), s.token.clone());
        starts.push(tokio::spawn(async move {
            let r = c
                .post(format!("{url}/api/instances"))
                .bearer_auth(token)
                .json(&json!({"process": "approval", "variables": {"amount": i}, "business_key": format!("Q-{i}")}))
                .send()
                .await
                .expect("start");
            assert_eq!(r.status(), StatusCode::CREATED);
            let body: Value = r.json().await.unwrap();
            body["id"].as_str().unwrap().to_string()
        }));
    }
    let mut ids = HashSet::new();
    for h in starts {
        ids.insert(h.await.unwrap());
    }
    assert_eq!(ids.len(), 200);

    let tasks = all(&c, &s, "/api/tasks").await;
    assert_eq!(tasks.len(), 200);
    let mut completes = Vec::new();
    for t in tasks {
        let (c, url, token) = (c.clone(), s.url.clone(), s.token.clone());
        completes.push(tokio::spawn(async move {
            let path = format!(
                "{url}/api/tasks/{}/{}/complete",
                t["instance"].as_str().unwrap(),
                t["task"]
            );
            let r = c
                .post(path)
                .bearer_auth(token)
                .json(&json!({"values": {"decision": "approve"}}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "complete: {}", r.status());
        }));
    }
    for h in completes {
        h.await.unwrap();
    }
    let done = all(&c, &s, "/api/instances?definition=approval&state=completed").await;
    assert_eq!(done.len(), 200);
    let one = ids.iter().next().unwrap();
    let history = all(&c, &s, &format!("/api/instances/{one}/history")).await;
    let lines: Vec<String> = history
        .iter()
        .map(|h| {
            format!(
                "{} {} {}",
                h["what"].as_str().unwrap_or(""),
                h["step"].as_str().unwrap_or("-"),
                h["actor"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with("step score ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("task completed approve ")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| !l.ends_with(' ')),
        "every line has an actor: {lines:?}"
    );
    assert!(
        lines.last().is_some_and(|l| l.starts_with("completed")),
        "{lines:?}"
    );
}

/// Issue test 2: while 1,000 starts are in flight from concurrent clients, the server gets
/// SIGKILL; after a restart on the same data folder every start answered 2xx exists, none twice,
/// and all finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_thousand_starts_loses_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let procs = processes(&[("quick.yaml", QUICK)]);
    let s = Server::start(data.path(), procs.path());
    let c = client();
    let acknowledged: Arc<std::sync::Mutex<HashMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for worker in 0..16 {
        let (c, url, token) = (c.clone(), s.url.clone(), s.token.clone());
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            for i in (worker..1000).step_by(16) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let key = format!("start-{i}");
                let r = c
                    .post(format!("{url}/api/instances"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", &key)
                    .json(&json!({"process": "quick", "variables": {"n": i}, "business_key": key}))
                    .send()
                    .await;
                // A start cut off by the kill has no answer: it may or may not exist.
                if let Ok(r) = r
                    && r.status().is_success()
                    && let Ok(body) = r.json::<Value>().await
                {
                    acknowledged
                        .lock()
                        .unwrap()
                        .insert(key, body["id"].as_str().unwrap_or_default().to_string());
                }
            }
        }));
    }
    // Kill while starts are flowing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "starts did not flow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.kill();
    stop.store(true, Ordering::SeqCst);
    for h in clients {
        let _ = h.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() < 1000,
        "the kill came before every start: {}",
        acknowledged.len()
    );

    let s = Server::start(data.path(), procs.path());
    let listed = all(&c, &s, "/api/instances?definition=quick").await;
    let mut by_key: HashMap<String, Vec<&Value>> = HashMap::new();
    for i in &listed {
        by_key
            .entry(i["business_key"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(i);
    }
    for (key, id) in &acknowledged {
        let found = by_key
            .get(key)
            .unwrap_or_else(|| panic!("acknowledged start {key} ({id}) is missing"));
        assert_eq!(found.len(), 1, "{key} exists {} times", found.len());
        assert_eq!(found[0]["id"].as_str(), Some(id.as_str()));
        assert_eq!(found[0]["state"].as_str(), Some("completed"));
    }
    assert!(
        by_key.values().all(|v| v.len() == 1),
        "no start exists twice"
    );
    // A client retrying an unanswered start with its key gets one instance, not two.
    let r = start(
        &c,
        &s,
        json!({"process": "quick", "variables": {"n": 1}, "business_key": "start-999"}),
        Some("start-999"),
    )
    .await
    .unwrap();
    assert!(r.status().is_success());
    let again = start(
        &c,
        &s,
        json!({"process": "quick", "variables": {"n": 1}, "business_key": "start-999"}),
        Some("start-999"),
    )
    .await
    .unwrap();
    let (a, b): (Value, Value) = (r.json().await.unwrap(), again.json().await.unwrap());
    assert_eq!(a["id"], b["id"]);
}

/// Issue test 3: bad input is answered, never crashes the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_server_stays_up() {
    let data = tempfile::tempdir().unwrap();
    let procs = processes(&[("approval.yaml", APPROVAL)]);
    let s = Server::start(data.path(), procs.path());
    let c = client();
    let url = |p: &str| format!("{}{p}", s.url);
    let code = |v: &Value| v["code"].as_str().unwrap_or_default().to_string();

    // Malformed JSON.
    let r = c
        .post(url("/api/instances"))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body("{\"process\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(&r.json().await.unwrap()), "bad_request");
    // A body over the limit.
    let big = format!(
        "{{\"process\": \"approval\", \"variables\": {{\"x\": \"{}\"}}}}",
        "a".repeat((1 << 20) + 1024)
    );
    let r = c
        .post(url("/api/instances"))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // An unknown process.
    let r = start(&c, &s, json!({"process": "nope"}), None)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(code(&r.json().await.unwrap()), "not_found");
    // Variables that fail the form.
    let r = start(
        &c,
        &s,
        json!({"process": "approval", "variables": {"amount": 5}}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let task = &all(&c, &s, "/api/tasks").await[0];
    let complete = url(&format!(
        "/api/tasks/{}/{}/complete",
        task["instance"].as_str().unwrap(),
        task["task"]
    ));
    let r = c
        .post(&complete)
        .bearer_auth(&s.token)
        .json(&json!({"values": {"decision": "maybe"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.unwrap();
    assert_eq!(code(&body), "invalid_form");
    assert!(body.to_string().contains("decision"), "{body}");
    // A YAML with errors: 422 with line and column.
    let r = deploy(
        &c,
        &s,
        "bad.yaml",
        "process: bad\nstart: a\nsteps:\n  a:\n    set: { x: 1 + }\n",
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.unwrap();
    assert!(body.to_string().contains("bad.yaml:5:"), "{body}");
    // A send step whose e-mail template the server does not have: refused at deploy, not at
    // the first customer's e-mail.
    let r = deploy(
        &c,
        &s,
        "mail.yaml",
        "process: mail\nstart: m\nsteps:\n  m:\n    send: no-such-template\n    to: email\n",
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.unwrap();
    assert!(
        body.to_string().contains("CICLO-E0137") && body.to_string().contains("mail.yaml:5:11"),
        "{body}"
    );
    // No token: 401; a token of the wrong role: 403.
    let r = c.get(url("/api/instances")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(url("/api/instances"))
        .bearer_auth("ciclo_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .put(url("/api/users/ann"))
        .bearer_auth(&s.token)
        .json(&json!({"groups": ["managers"]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create user: {}", r.status());
    let r = c
        .post(url("/api/tokens"))
        .bearer_auth(&s.token)
        .json(&json!({"role": "user", "user": "ann"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create token: {}", r.status());
    let token: Value = r.json().await.unwrap();
    let ann = token["secret"]
        .as_str()
        .expect("the secret is returned once")
        .to_string();
    let r = deploy_as(&c, &s.url, &ann, APPROVAL).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(code(&r.json().await.unwrap()), "forbidden");
    // Still up.
    let r = c.get(url("/healthz")).send().await.unwrap();
    assert!(r.status().is_success());
}

async fn deploy_as(c: &reqwest::Client, url: &str, token: &str, yaml: &str) -> reqwest::Response {
    c.post(format!("{url}/api/definitions?file=x.yaml"))
        .bearer_auth(token)
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .send()
        .await
        .unwrap()
}

/// Issue test 5: SIGTERM during load: the server exits 0 (60 s bound only to catch a hang),
/// and no acknowledged work is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_exits_zero_and_keeps_acknowledged_work() {
    let data = tempfile::tempdir().unwrap();
    let procs = processes(&[("quick.yaml", QUICK)]);
    let s = Server::start(data.path(), procs.path());
    let c = client();
    let acknowledged: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for worker in 0..8 {
        let (c, url, token, acknowledged) = (
            c.clone(),
            s.url.clone(),
            s.token.clone(),
            acknowledged.clone(),
        );
        clients.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let r = c
                    .post(format!("{url}/api/instances"))
                    .bearer_auth(&token)
                    .json(&json!({"process": "quick", "variables": {"n": i}, "business_key": format!("w{worker}-{i}")}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        if let Ok(body) = r.json::<Value>().await {
                            acknowledged.lock().unwrap().push(body["id"].as_str().unwrap_or_default().to_string());
                        }
                    }
                    // The server is stopping: refused or cut connections end this client.
                    _ => break,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < 100 {
        assert!(Instant::now() < deadline, "no load");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = tokio::task::spawn_blocking(move || s.terminate(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    for h in clients {
        let _ = h.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let s = Server::start(data.path(), procs.path());
    let listed: HashSet<String> = all(&c, &s, "/api/instances?definition=quick")
        .await
        .iter()
        .map(|i| i["id"].as_str().unwrap_or_default().to_string())
        .collect();
    for id in &acknowledged {
        assert!(listed.contains(id), "acknowledged instance {id} lost");
    }
}

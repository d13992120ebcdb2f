//! QA review 3: behaviours of `ciclo serve` and its API found wrong while trying the server
//! as a new user and as an attacker. Each test states what should happen; the ones that fail
//! document a bug.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Server, processes};

const TABLES: &str = r#"
tables:
  band:
    hit: first
    inputs: [amount]
    outputs: [band]
    rules:
      - when: ["> 100"]
        then: ['"high"']
      - when: ["-"]
        then: ['"low"']
"#;

const APPROVAL: &str = r#"
process: approval
start: approve
steps:
  approve:
    task: Approve {{amount}}
    candidates: [managers]
    form: { decision: [approve, reject] }
"#;

const BROKEN_CALL: &str = r#"
process: broken-call
start: book
steps:
  book:
    call: erp.create-order
    input: { order: amount }
    retry: { attempts: 3, backoff: PT1S, max_backoff: PT1S }
"#;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn put_user(c: &reqwest::Client, s: &Server, name: &str, groups: &[&str]) {
    let r = c
        .put(format!("{}/api/users/{name}", s.url))
        .bearer_auth(&s.token)
        .json(&json!({ "groups": groups }))
        .send()
        .await
        .expect("put user");
    assert!(r.status().is_success(), "PUT user: {}", r.status());
}

async fn user_token(c: &reqwest::Client, s: &Server, user: &str) -> String {
    let r: Value = c
        .post(format!("{}/api/tokens", s.url))
        .bearer_auth(&s.token)
        .json(&json!({ "role": "user", "user": user }))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    r["secret"].as_str().expect("secret").to_string()
}

/// Starts `approval`; answers the instance id and the id of its open task.
async fn start_approval(c: &reqwest::Client, s: &Server) -> (String, u64) {
    let r: Value = c
        .post(format!("{}/api/instances", s.url))
        .bearer_auth(&s.token)
        .json(&json!({ "process": "approval", "variables": { "amount": 5 } }))
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    let task = r["position"][0]["waits_for"]["task"]
        .as_u64()
        .expect("waits for a task");
    (r["id"].as_str().expect("id").to_string(), task)
}

/// README, "From a terminal": `ciclo deploy processes/examples/` against a server started
/// from the repository root. The server deployed its process folder at start under names
/// relative to that folder (`examples/lead-tables.yaml`); the CLI sends the path as typed
/// (`processes/examples/lead-tables.yaml`), and the table library is refused as "already
/// declared in examples/lead-tables.yaml", so the documented command exits 1.
#[test]
fn readme_deploy_of_the_served_process_folder_succeeds() {
    let root = tempfile::tempdir().expect("temp");
    let examples = root.path().join("processes").join("examples");
    std::fs::create_dir_all(&examples).expect("mkdir");
    std::fs::write(examples.join("tables.yaml"), TABLES).expect("write");
    std::fs::write(examples.join("approval.yaml"), APPROVAL).expect("write");
    let data = tempfile::tempdir().expect("temp");
    let server = Server::start(data.path(), &root.path().join("processes"));
    let out = Command::new(env!("CARGO_BIN_EXE_ciclo"))
        .current_dir(root.path())
        .args(["deploy", "processes/examples/"])
        .args(["--server", &server.url, "--token", &server.token])
        .output()
        .expect("ciclo deploy runs");
    assert!(
        out.status.success(),
        "`ciclo deploy processes/examples/` (README) failed with {:?}:\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ciclo deploy processes/` on the shipped folder, against a server serving it: the ERP and
/// import mappings in `connectors/` and `imports/` are not processes and are not sent (they
/// were, and the command exited 1 with "2 of 22 file(s) not deployed").
#[test]
fn deploy_of_the_shipped_process_folder_skips_the_mappings() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = tempfile::tempdir().expect("temp");
    let server = Server::start(data.path(), &repo.join("processes"));
    let out = Command::new(env!("CARGO_BIN_EXE_ciclo"))
        .current_dir(repo)
        .args(["deploy", "processes/"])
        .args(["--server", &server.url, "--token", &server.token])
        .output()
        .expect("ciclo deploy runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "exit {:?}:\n{text}",
        out.status.code()
    );
    assert!(
        !text.contains("erp.yaml") && !text.contains("x-education"),
        "{text}"
    );
    assert!(text.contains("dunning"), "{text}");
}

/// The issue promises jobs with their last error; `/api/jobs` shows `last_error: null` even
/// after attempts failed (the engine never fills `JobRecord::last_error`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_shows_the_last_error_of_a_failed_attempt() {
    let procs = processes(&[("broken.yaml", BROKEN_CALL)]);
    let data = tempfile::tempdir().expect("temp");
    let s = Server::start(data.path(), procs.path());
    let c = client();
    let r: Value = c
        .post(format!("{}/api/instances", s.url))
        .bearer_auth(&s.token)
        .json(&json!({ "process": "broken-call", "variables": { "amount": 1 } }))
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    let id = r["id"].as_str().expect("id").to_string();
    // Wait until attempt 2 is queued: attempt 1 has failed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let job = loop {
        let jobs: Value = c
            .get(format!("{}/api/jobs?instance={id}", s.url))
            .bearer_auth(&s.token)
            .send()
            .await
            .expect("jobs")
            .json()
            .await
            .expect("json");
        if let Some(j) = jobs["items"]
            .as_array()
            .and_then(|a| a.first())
            .filter(|j| j["attempt"].as_u64().unwrap_or(0) >= 2)
        {
            break j.clone();
        }
        assert!(Instant::now() < deadline, "attempt 1 never failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        job["last_error"].is_string(),
        "a job retried after a failure shows no last_error: {job}"
    );
}

/// The same Idempotency-Key with a different body answers the first instance with 201, as if
/// the second request had been done. It should be refused (409 or 422), as Stripe and the
/// IETF Idempotency-Key draft do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_idempotency_key_with_another_body_is_refused() {
    let procs = processes(&[("approval.yaml", APPROVAL)]);
    let data = tempfile::tempdir().expect("temp");
    let s = Server::start(data.path(), procs.path());
    let c = client();
    let first = c
        .post(format!("{}/api/instances", s.url))
        .bearer_auth(&s.token)
        .header("Idempotency-Key", "k-1")
        .json(&json!({ "process": "approval", "business_key": "A", "variables": { "amount": 5 } }))
        .send()
        .await
        .expect("start");
    assert_eq!(first.status(), StatusCode::CREATED);
    let second = c
        .post(format!("{}/api/instances", s.url))
        .bearer_auth(&s.token)
        .header("Idempotency-Key", "k-1")
        .json(
            &json!({ "process": "approval", "business_key": "B", "variables": { "amount": 999 } }),
        )
        .send()
        .await
        .expect("start");
    let status = second.status();
    let body: Value = second.json().await.expect("json");
    assert!(
        status == StatusCode::CONFLICT || status == StatusCode::UNPROCESSABLE_ENTITY,
        "a reused Idempotency-Key with a different body got {status}: {body}"
    );
}

/// Reassigning a task accepts a user that does not exist and a name with a newline, which the
/// user API itself refuses; the task is then nobody's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_to_an_unknown_or_invalid_user_is_refused() {
    let procs = processes(&[("approval.yaml", APPROVAL)]);
    let data = tempfile::tempdir().expect("temp");
    let s = Server::start(data.path(), procs.path());
    let c = client();
    let (id, t) = start_approval(&c, &s).await;
    for assignee in ["nobody-exists", "bad name\n"] {
        let r = c
            .post(format!("{}/api/tasks/{id}/{t}/assign", s.url))
            .bearer_auth(&s.token)
            .json(&json!({ "assignee": assignee }))
            .send()
            .await
            .expect("assign");
        let status = r.status();
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
            "assigning to {assignee:?} got {status}: {}",
            r.text().await.unwrap_or_default()
        );
    }
    let task: Value = c
        .get(format!("{}/api/tasks/{id}/{t}", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("task")
        .json()
        .await
        .expect("json");
    assert!(
        task["assignee"].is_null(),
        "the task was assigned to an unknown or invalid user: {task}"
    );
}

/// `{"user": "bob"}` (a wrong field name) on assign is read as "no assignee" and silently
/// takes the task away from whoever held it. Unknown fields should be refused with 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_with_a_misspelt_field_does_not_unassign() {
    let procs = processes(&[("approval.yaml", APPROVAL)]);
    let data = tempfile::tempdir().expect("temp");
    let s = Server::start(data.path(), procs.path());
    let c = client();
    put_user(&c, &s, "anna", &["managers"]).await;
    put_user(&c, &s, "bob", &["managers"]).await;
    let (id, t) = start_approval(&c, &s).await;
    let r = c
        .post(format!("{}/api/tasks/{id}/{t}/assign", s.url))
        .bearer_auth(&s.token)
        .json(&json!({ "assignee": "anna" }))
        .send()
        .await
        .expect("assign");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(format!("{}/api/tasks/{id}/{t}/assign", s.url))
        .bearer_auth(&s.token)
        .json(&json!({ "user": "bob" }))
        .send()
        .await
        .expect("assign");
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a body with an unknown field was accepted and unassigned the task: {body}"
    );
}

/// The OpenAPI document says claim answers 409 when someone else holds the task; another
/// member of the candidate group gets 403 "neither assigned to you nor offered to one of
/// your groups", which is wrong on both counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claiming_a_task_someone_else_holds_is_409() {
    let procs = processes(&[("approval.yaml", APPROVAL)]);
    let data = tempfile::tempdir().expect("temp");
    let s = Server::start(data.path(), procs.path());
    let c = client();
    put_user(&c, &s, "anna", &["managers"]).await;
    put_user(&c, &s, "carl", &["managers"]).await;
    let anna = user_token(&c, &s, "anna").await;
    let carl = user_token(&c, &s, "carl").await;
    let (id, t) = start_approval(&c, &s).await;
    let r = c
        .post(format!("{}/api/tasks/{id}/{t}/claim", s.url))
        .bearer_auth(&anna)
        .send()
        .await
        .expect("claim");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(format!("{}/api/tasks/{id}/{t}/claim", s.url))
        .bearer_auth(&carl)
        .send()
        .await
        .expect("claim");
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

/// A negative time to live (`-PT1H`) is taken and the message dropped with 200; it should be
/// refused with 400 like any other bad ttl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_message_ttl_is_refused() {
    let procs = processes(&[("approval.yaml", APPROVAL)]);
    let data = tempfile::tempdir().expect("temp");
    let s = Server::start(data.path(), procs.path());
    let c = client();
    let r = c
        .post(format!("{}/api/messages", s.url))
        .bearer_auth(&s.token)
        .json(&json!({ "name": "nobody-waits", "key": "k", "ttl": "-PT1H" }))
        .send()
        .await
        .expect("message");
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

const FAN: &str = r#"
process: fan
start: t
steps:
  t:
    task: Item {{item}}
    candidates: [clerks]
    each: { in: items, as: item }
"#;

/// A multi-instance task over a list of 10,001 items is not a loop, but the runaway-loop
/// guard (`MAX_STEPS_PER_EVENT`) stops it after 10,000 steps and opens one incident per
/// remaining item ("stopped with the runaway loop"), flooding the incident list. A list
/// that is too long should be one clear incident (or a refusal), not thousands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_each_list_does_not_open_an_incident_per_item() {
    let procs = processes(&[("fan.yaml", FAN)]);
    let data = tempfile::tempdir().expect("temp");
    let s = Server::start(data.path(), procs.path());
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let items: Vec<u32> = (0..10_001).collect();
    let r = c
        .post(format!("{}/api/instances", s.url))
        .bearer_auth(&s.token)
        .json(&json!({ "process": "fan", "variables": { "items": items } }))
        .send()
        .await
        .expect("start");
    assert!(r.status().is_success(), "start: {}", r.status());
    let incidents: Value = c
        .get(format!("{}/api/incidents?limit=500", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("incidents")
        .json()
        .await
        .expect("json");
    let n = incidents["items"].as_array().map_or(0, Vec::len);
    assert!(
        n <= 1,
        "one start over 10,001 items opened {n}+ incidents, e.g. {}",
        incidents["items"][1]
    );
}

/// A data folder made with `ciclo serve --store redb` and served again without `--store`
/// reopens on redb: its instances are there. (The server opened a new, empty sled store
/// beside it, and the waiting instance seemed lost.)
#[tokio::test(flavor = "multi_thread")]
async fn a_redb_data_folder_reopens_on_redb_without_the_flag() {
    let folder = processes(&[("approval.yaml", APPROVAL)]);
    let data = tempfile::tempdir().expect("temp");
    let c = client();
    let first = Server::start_with(data.path(), folder.path(), &["--store", "redb"]);
    let (id, _) = start_approval(&c, &first).await;
    assert_eq!(first.terminate(Duration::from_secs(30)).code(), Some(0));
    assert!(data.path().join("store-redb").exists());

    let again = Server::start(data.path(), folder.path());
    let r = c
        .get(format!("{}/api/instances/{id}", again.url))
        .bearer_auth(&again.token)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK, "the instance is found again");
    assert!(
        !data.path().join("store").exists(),
        "no sled store was made beside the redb one"
    );
    assert_eq!(again.terminate(Duration::from_secs(30)).code(), Some(0));
}

//! The ERP end to end: the real `ciclo fake-erp` binary told to fail twice, the real
//! `ciclo serve` with the shipped ERP mapping, and processes with a `call: erp.create-order`
//! step. Retries keep their idempotency key and store one order; a blocked customer takes the
//! error boundary path.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Server;

const ORDER_ENTRY: &str = r#"
process: order-entry
start: send
steps:
  send:
    call: erp.create-order
    input: { order: order }
    output: { erp_number: result.number }
    retry: { attempts: 5, backoff: PT0.1S }
    on:
      - error: CUSTOMER_BLOCKED
        goto: blocked
    goto: done
  blocked:
    set: { blocked_reason: error.message }
  done:
    end: true
"#;

/// The `ciclo fake-erp` binary, stopped when dropped.
struct FakeErp {
    child: Child,
    url: String,
}

impl FakeErp {
    fn start(flags: &[&str]) -> FakeErp {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ciclo"))
            .args(["fake-erp", "--listen", "127.0.0.1:0"])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ciclo fake-erp starts");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("fake ERP output");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from fake-erp: {line:?}"))
            .to_string();
        FakeErp { child, url }
    }

    async fn received(&self) -> Value {
        reqwest::get(format!("{}/orders", self.url))
            .await
            .expect("GET /orders")
            .json()
            .await
            .expect("JSON")
    }
}

impl Drop for FakeErp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process folder with the shipped ERP mapping and the order-entry process.
fn process_folder() -> tempfile::TempDir {
    let dir = support::processes(&[("order-entry.yaml", ORDER_ENTRY)]);
    std::fs::create_dir(dir.path().join("connectors")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("processes/connectors/erp.yaml"),
        dir.path().join("connectors/erp.yaml"),
    )
    .unwrap();
    dir
}

fn start_server(data: &Path, processes: &Path, erp: &FakeErp) -> Server {
    Server::start_with_env(
        data,
        processes,
        &[],
        &[
            ("CICLO_ERP_URL", erp.url.as_str()),
            ("CICLO_SECRET_ERP_TOKEN", "e2e-token"),
        ],
    )
}

async fn start_order(c: &reqwest::Client, s: &Server, order: Value) -> String {
    let r = c
        .post(format!("{}/api/instances", s.url))
        .bearer_auth(&s.token)
        .json(&json!({"process": "order-entry", "variables": {"order": order}}))
        .send()
        .await
        .expect("start");
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

/// Polls the instance until it is no longer active (bounded).
async fn finished(c: &reqwest::Client, s: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let detail: Value = c
            .get(format!("{}/api/instances/{id}", s.url))
            .bearer_auth(&s.token)
            .send()
            .await
            .expect("get instance")
            .json()
            .await
            .expect("JSON");
        if detail["state"] != "active" {
            return detail;
        }
        assert!(
            Instant::now() < deadline,
            "the instance is still active: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue test: the ERP told to fail twice; three attempts with the same Idempotency-Key, one
/// order stored, the process continues with the ERP's order number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_attempts_with_one_key_store_one_order_and_the_process_continues() {
    let erp = FakeErp::start(&["--fail-next", "2"]);
    let data = tempfile::tempdir().unwrap();
    let processes = process_folder();
    let s = start_server(data.path(), processes.path(), &erp);
    let c = reqwest::Client::new();

    let id = start_order(
        &c,
        &s,
        json!({
            "number": "SO-100",
            "customer": {"code": "C1", "name": "Rossi SpA"},
            "lines": [{"sku": "A-1", "qty": 3, "price": 19.99}],
        }),
    )
    .await;
    let detail = finished(&c, &s, &id).await;
    assert_eq!(detail["state"], "completed", "{detail}");
    assert_eq!(detail["variables"]["erp_number"], "ERP-000001", "{detail}");

    let seen = erp.received().await;
    let calls = seen["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3, "{seen}");
    let key = &calls[0]["idempotency_key"];
    assert!(key.is_string(), "{seen}");
    assert!(calls.iter().all(|c| &c["idempotency_key"] == key), "{seen}");
    let statuses: Vec<_> = calls.iter().map(|c| c["status"].as_u64()).collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(201)]);
    let orders = seen["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{seen}");
    assert_eq!(orders[0]["calls"], 3);
    assert_eq!(orders[0]["order"]["reference"], "SO-100");
    // The price went through with every digit, as a number.
    assert_eq!(orders[0]["order"]["lines"][0]["price"].to_string(), "19.99");
}

/// Issue test: a 4xx business error from the ERP takes the error boundary path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_customer_takes_the_error_boundary_path() {
    let erp = FakeErp::start(&["--blocked-customer", "C9"]);
    let data = tempfile::tempdir().unwrap();
    let processes = process_folder();
    let s = start_server(data.path(), processes.path(), &erp);
    let c = reqwest::Client::new();

    let id = start_order(
        &c,
        &s,
        json!({"number": "SO-9", "customer": {"code": "C9"}, "lines": []}),
    )
    .await;
    let detail = finished(&c, &s, &id).await;
    assert_eq!(detail["state"], "completed", "{detail}");
    assert!(detail["variables"]["erp_number"].is_null(), "{detail}");
    let reason = detail["variables"]["blocked_reason"].as_str().unwrap_or("");
    assert!(reason.contains("C9 is blocked"), "{detail}");

    let history: Value = c
        .get(format!("{}/api/instances/{id}/history", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let steps: Vec<&str> = history
        .as_array()
        .or_else(|| history["items"].as_array())
        .expect("history lines")
        .iter()
        .filter_map(|h| h["step"].as_str())
        .collect();
    assert!(steps.contains(&"blocked"), "{history}");
    assert!(!steps.contains(&"done"), "{history}");
    // One call, no retry: a business answer is final.
    let seen = erp.received().await;
    assert_eq!(seen["calls"].as_array().unwrap().len(), 1, "{seen}");
    assert!(seen["orders"].as_array().unwrap().is_empty(), "{seen}");
}

/// With a mapping but no ERP address the server still starts (the quick start has no ERP),
/// says the mapping is not used, and an ERP step becomes an incident, not a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erp_mapping_without_an_address_is_not_used() {
    let data = tempfile::tempdir().unwrap();
    let processes = process_folder();
    let s = Server::start_with_env(data.path(), processes.path(), &[], &[]);
    let c = reqwest::Client::new();
    let id = start_order(
        &c,
        &s,
        json!({"number": "SO-1", "customer": "C1", "lines": []}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let incidents: Value = c
            .get(format!("{}/api/incidents", s.url))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let text = incidents.to_string();
        if text.contains(&id) {
            assert!(text.contains("no connector `erp`"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no incident: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

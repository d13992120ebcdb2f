//! The pages in a real browser: the real `ciclo serve`, data set up over the API, and
//! `tests/browser/inbox.mjs` driving Debian's chromium through playwright-core. It signs in,
//! decides a task (a bad value first), looks at the instance and definition pages, checks
//! that text from variables never runs as script, and leaves screenshots in
//! `target/browser-screenshots/` (or `$CICLO_SCREENSHOTS`) for a person to look at.
//!
//! Without chromium or `tests/browser/node_modules` the test says SKIPPED and passes, unless
//! `CICLO_REQUIRE_BROWSER=1` (CI), where it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::Server;

const ALERT: &str = "<script>alert(1)</script> & Co";
const FLAG: &str = "<script>window.__xss=1</script> & Co";
const PASSWORD: &str = "browser test password";

const QUOTE: &str = r#"process: quote
name: Quote approval
start: approve
steps:
  approve:
    task: Approve quote {{quote.number}} for {{quote.customer.name}}
    candidates: [sales-managers]
    form: { decision: [approve, reject], discount: { type: number, min: 0, max: 0.5 }, note: { type: text, required: false } }
    summary: "Quote {{quote.number}} for {{quote.customer.name}}: {{quote.total}} EUR"
    due: PT1H
    show:
      - { label: Customer, value: quote.customer.name }
      - label: Lines
        table: quote.lines
        columns: { Product: product, Qty: qty, List price: list_price, Net price: net_price }
      - { label: List total, value: quote.list_total, format: money }
      - { label: Effective discount, value: 1 - quote.total / quote.list_total, format: percent }
      - { label: Total, value: quote.total, format: money }
      - { label: Margin, value: quote.margin, format: percent }
      - { label: Valid until, value: quote.valid_until, format: date }
    then:
      - when: decision == "approve"
        goto: accepted
      - otherwise: rejected
  accepted:
    wait: { message: quote-accepted, key: quote.number }
    goto: done
  done: { end: true }
  rejected: { end: true }
"#;

fn quote(number: &str, customer: &str) -> Value {
    json!({
        "number": number,
        "customer": {"name": customer},
        "lines": [
            {"product": "Pump P-200", "qty": 4, "list_price": 1250, "net_price": 1062.5},
            {"product": customer, "qty": 1, "list_price": 800, "net_price": 680}
        ],
        "list_total": 5800,
        "total": 4930,
        "margin": 0.31,
        "valid_until": "2030-03-31"
    })
}

fn browser_missing() -> Option<String> {
    let chromium = std::env::var("CICLO_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let modules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    if !Path::new(&chromium).exists() {
        return Some(format!("no chromium at {chromium}"));
    }
    if !modules.exists() {
        return Some("tests/browser/node_modules is missing".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node".into());
    }
    None
}

async fn call(
    client: &reqwest::Client,
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut request = client
        .request(method, format!("{}{path}", server.url))
        .bearer_auth(&server.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn inbox_decision_instance_and_definition_pages_in_a_browser() {
    if let Some(why) = browser_missing() {
        assert!(
            std::env::var("CICLO_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "CICLO_REQUIRE_BROWSER=1 but {why}"
        );
        println!("SKIPPED: {why} (apt-get install chromium; cd tests/browser && npm ci)");
        return;
    }
    let data = tempfile::tempdir().expect("data folder");
    let processes = support::processes(&[]);
    let server = tokio::task::spawn_blocking({
        let (data, processes) = (data.path().to_path_buf(), processes.path().to_path_buf());
        move || Server::start(&data, &processes)
    })
    .await
    .expect("server");
    let c = reqwest::Client::new();
    use reqwest::Method;
    call(
        &c,
        &server,
        Method::PUT,
        "/api/users/anna",
        Some(json!({
            "display_name": "Anna Rossi", "groups": ["sales-managers", "ciclo-operators"]
        })),
    )
    .await;
    call(
        &c,
        &server,
        Method::PUT,
        "/api/users/anna/password",
        Some(json!({"password": PASSWORD})),
    )
    .await;
    // Two versions, so the definition page draws two diagrams.
    for source in [
        QUOTE.replace("name: Quote approval", "name: Quote approval (first)"),
        QUOTE.to_string(),
    ] {
        call(
            &c,
            &server,
            Method::POST,
            "/api/definitions",
            Some(json!({"file": "quote.yaml", "source": source})),
        )
        .await;
    }
    let first = call(
        &c,
        &server,
        Method::POST,
        "/api/instances",
        Some(json!({
            "process": "quote", "business_key": ALERT, "variables": {"quote": quote("Q-1", ALERT)}
        })),
    )
    .await;
    let instance = first["id"].as_str().expect("id").to_string();
    call(
        &c,
        &server,
        Method::POST,
        "/api/instances",
        Some(json!({
            "process": "quote", "business_key": FLAG, "variables": {"quote": quote("Q-2", FLAG)}
        })),
    )
    .await;

    let shots = std::env::var("CICLO_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots")
        });
    let _ = std::fs::create_dir_all(&shots);
    let output = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/inbox.mjs"))
        .env("CICLO_URL", &server.url)
        .env("CICLO_USER", "anna")
        .env("CICLO_PASSWORD", PASSWORD)
        .env("CICLO_INSTANCE", &instance)
        .env("CICLO_DEFINITION", "quote")
        .env("CICLO_CURRENT_STEP", "accepted")
        .env("CICLO_TEXTS", json!([ALERT, FLAG]).to_string())
        .env("CICLO_SCREENSHOTS", &shots)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the browser script failed:\n{stdout}"
    );
    assert!(stdout.contains("all browser checks passed"));

    // The decision reached the engine.
    let detail = call(
        &c,
        &server,
        Method::GET,
        &format!("/api/instances/{instance}"),
        None,
    )
    .await;
    assert_eq!(detail["position"][0]["step"], "accepted", "{detail}");
    assert_eq!(detail["variables"]["decision"], "approve");
    for name in [
        "inbox.png",
        "decision.png",
        "instance.png",
        "definition.png",
    ] {
        let bytes = std::fs::read(shots.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(bytes.len() > 1000, "{name} is {} bytes", bytes.len());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name} is not a PNG");
    }
    tokio::task::spawn_blocking(move || server.terminate(std::time::Duration::from_secs(60)))
        .await
        .expect("stopped");
}

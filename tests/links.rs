//! Approval by e-mail link in a real browser (issue 5, test 1): the real `ciclo serve` sends
//! through a real SMTP server started here (mailin-embedded); the test reads the e-mail,
//! checks the lead name is escaped in the HTML body and verbatim in the text body, and
//! `tests/browser/links.mjs` drives Debian's chromium: a link with one character changed
//! shows the refusal page (the task stays open), the real Approve link shows the decision page
//! with approve fixed, Confirm moves the instance on, and the link opened again says who
//! approved and when.
//!
//! The server's links start with its own address (the default `public_url` is
//! `http://<the address it listens on>`, taken after binding port 0), so the links in the
//! e-mail are opened as they are, not rewritten.
//!
//! Without chromium or `tests/browser/node_modules` the test says SKIPPED and passes, unless
//! `CICLO_REQUIRE_BROWSER=1` (CI), where it fails.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mail_parser::MessageParser;
use mailin_embedded::response::OK;
use mailin_embedded::{Handler, Response, SslConfig};
use serde_json::{Value, json};
use support::Server;

const NAME: &str = "<script>alert(1)</script> & Co";
const NAME_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co";

const QUOTE: &str = r#"process: quote-links
name: Quote approval by e-mail
start: approve
steps:
  approve:
    task: Approve quote {{quote.number}} for {{quote.customer.name}}
    candidates: [sales-managers]
    email: { to: quote.approver_email, name: quote.approver_name, template: approval-request }
    form: { decision: [approve, reject], comment: { type: text, required: false } }
    show:
      - { label: Customer, value: quote.customer.name }
      - { label: Total, value: quote.total, format: money }
    then:
      - when: decision == "approve"
        goto: accepted
      - otherwise: rejected
  accepted:
    wait: { message: quote-accepted, key: quote.number }
  rejected: { end: true }
"#;

/// Every message the SMTP server received, raw.
#[derive(Clone, Default)]
struct Recorder {
    inbox: Arc<Mutex<Vec<Vec<u8>>>>,
    current: Vec<u8>,
}

impl Handler for Recorder {
    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, _from: &str) -> Response {
        self.current.clear();
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        self.inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.current.clone());
        OK
    }
}

fn smtp_server() -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("addr").port();
    let recorder = Recorder::default();
    let inbox = recorder.inbox.clone();
    let mut server = mailin_embedded::Server::new(recorder);
    server
        .with_name("test.example")
        .with_ssl(SslConfig::None)
        .expect("no TLS")
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        if let Err(e) = server.serve() {
            eprintln!("the test SMTP server stopped: {e}");
        }
    });
    (port, inbox)
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
) -> (u16, Value) {
    let mut request = client
        .request(method, format!("{}{path}", server.url))
        .bearer_auth(&server.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The processes folder: the repository's `approval-request` template, nothing else.
fn processes() -> tempfile::TempDir {
    let dir = support::processes(&[]);
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("processes/templates/approval-request");
    let to = dir.path().join("templates/approval-request");
    std::fs::create_dir_all(&to).expect("template folder");
    for entry in std::fs::read_dir(&from).expect("the approval-request template") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
    }
    dir
}

/// The first `http...` URL after `label` in `text`.
fn url_after(text: &str, label: &str) -> String {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label} in {text}"));
    let rest = &text[at..];
    let start = rest.find("http").expect("a URL");
    rest[start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn approve_by_e_mail_link_in_a_browser() {
    let missing = browser_missing();
    if let Some(why) = &missing {
        assert!(
            std::env::var("CICLO_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "CICLO_REQUIRE_BROWSER=1 but {why}"
        );
    }
    let (smtp_port, inbox) = smtp_server();
    let data = tempfile::tempdir().expect("data folder");
    let processes = processes();
    let server = tokio::task::spawn_blocking({
        let (data, processes) = (data.path().to_path_buf(), processes.path().to_path_buf());
        let port = smtp_port.to_string();
        move || {
            Server::start_with_env(
                &data,
                &processes,
                &[],
                &[
                    ("CICLO_SMTP_HOST", "127.0.0.1"),
                    ("CICLO_SMTP_PORT", &port),
                    ("CICLO_SMTP_TLS", "none"),
                ],
            )
        }
    })
    .await
    .expect("server");
    let c = reqwest::Client::new();
    use reqwest::Method;
    let (status, body) = call(
        &c,
        &server,
        Method::POST,
        "/api/definitions",
        Some(json!({"file": "quote-links.yaml", "source": QUOTE})),
    )
    .await;
    assert!(status < 300, "{status} {body}");
    let (status, started) = call(
        &c,
        &server,
        Method::POST,
        "/api/instances",
        Some(
            json!({"process": "quote-links", "business_key": "Q-7", "variables": {"quote": {
            "number": "Q-7", "customer": {"name": NAME}, "total": 4930, "discount": 0.15,
            "approver_email": "anna@example.com", "approver_name": "Anna Rossi"}}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let instance = started["id"].as_str().expect("id").to_string();

    // The e-mail arrives (the PT0S timer, then the links.send job).
    let deadline = Instant::now() + Duration::from_secs(30);
    let raw = loop {
        if let Some(raw) = inbox.lock().unwrap_or_else(|p| p.into_inner()).first() {
            break raw.clone();
        }
        assert!(Instant::now() < deadline, "no e-mail within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let message = MessageParser::default().parse(&raw).expect("an e-mail");
    let html = message.body_html(0).expect("an HTML body").to_string();
    let text = message.body_text(0).expect("a text body").to_string();
    assert!(html.contains(NAME_ESCAPED), "{html}");
    assert!(!html.contains(NAME), "{html}");
    assert!(text.contains(NAME), "{text}");
    let subject = message.subject().expect("a subject");
    assert!(subject.contains(NAME), "{subject}");
    let approve = url_after(&text, "Approve:");
    let reject = url_after(&text, "Reject:");
    assert!(
        approve.starts_with(&format!("{}/links/", server.url)),
        "{approve}"
    );
    assert_ne!(approve, reject);
    assert!(html.contains(&approve) && html.contains(&reject), "{html}");

    let (status, detail) = call(
        &c,
        &server,
        Method::GET,
        &format!("/api/instances/{instance}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let task = detail["position"]
        .as_array()
        .expect("positions")
        .iter()
        .find_map(|p| p["waits_for"]["task"].as_u64())
        .unwrap_or_else(|| panic!("a task is open: {detail}"));

    if let Some(why) = missing {
        println!(
            "SKIPPED the browser part: {why} (apt-get install chromium; cd tests/browser && npm ci)"
        );
        return;
    }
    let mut tampered = approve.clone();
    let last = tampered.pop().expect("a token");
    tampered.push(if last == '0' { '1' } else { '0' });

    let shots = std::env::var("CICLO_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots")
        });
    let _ = std::fs::create_dir_all(&shots);
    // The refusal first, then the API must still show the task open, then the real link.
    let run = |step: &str| {
        let output = Command::new("node")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/links.mjs"))
            .env("CICLO_STEP", step)
            .env("CICLO_APPROVE", &approve)
            .env("CICLO_TAMPERED", &tampered)
            .env("CICLO_TEXT", NAME)
            .env("CICLO_SCREENSHOTS", &shots)
            .output()
            .expect("node runs");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        println!("{stdout}");
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        assert!(
            output.status.success(),
            "the browser script failed:\n{stdout}"
        );
        assert!(stdout.contains("all browser checks passed"));
    };
    run("tampered");
    let (status, _) = call(
        &c,
        &server,
        Method::GET,
        &format!("/api/tasks/{instance}/{task}"),
        None,
    )
    .await;
    assert_eq!(
        status, 200,
        "the task is still open after the tampered link"
    );
    run("approve");
    let (status, _) = call(
        &c,
        &server,
        Method::GET,
        &format!("/api/tasks/{instance}/{task}"),
        None,
    )
    .await;
    assert_eq!(status, 404, "the task is decided");
    let (_, detail) = call(
        &c,
        &server,
        Method::GET,
        &format!("/api/instances/{instance}"),
        None,
    )
    .await;
    assert_eq!(detail["position"][0]["step"], "accepted", "{detail}");
    assert_eq!(detail["variables"]["decision"], "approve");
    let bytes = std::fs::read(shots.join("link-decision.png")).expect("screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

    tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(60)))
        .await
        .expect("stopped");
}

//! E-mail decision links over plain HTTP, without a browser: the link page shows the decision
//! and changes nothing; the POST needs the double-submit CSRF cookie, decides once, and the
//! link then says who decided what and when; a tampered, expired or foreign link changes
//! nothing; a link decides only its own decision; a retried `links.send` job makes the same
//! links.

mod common;

use std::collections::BTreeMap;

use ciclo_engine::runtime::{JobOutcome, JobRequest};
use ciclo_web::links::{self, LinkOptions, LinkSecret};
use common::{Now as _, Server};
use jiff::SignedDuration;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;

const XSS: &str = "<script>alert(1)</script> & Co";
const XSS_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co";

const APPROVAL: &str = r#"process: approval
start: approve
steps:
  approve:
    task: Approve quote {{quote.number}} for {{quote.customer}}
    candidates: [sales-managers]
    email: { to: quote.approver_email, name: quote.approver_name, template: approval-request }
    form: { decision: [approve, reject], comment: { type: text, required: false } }
    show:
      - { label: Customer, value: quote.customer }
    then:
      - when: decision == "approve"
        goto: approved
      - otherwise: rejected
  approved:
    wait: { message: never, key: quote.number }
  rejected:
    end: true
"#;

/// A browser without JavaScript: follows no redirects, keeps cookies.
struct Browser {
    base: String,
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the first hidden `_csrf` field.
    fn csrf(&self) -> String {
        let marker = "name=\"_csrf\" value=\"";
        let at = self
            .text
            .find(marker)
            .unwrap_or_else(|| panic!("no _csrf field in {}", self.text))
            + marker.len();
        self.text[at..].split('"').next().unwrap_or("").to_string()
    }
}

impl Browser {
    fn new(server: &Server) -> Browser {
        Browser {
            base: server.base.clone(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: BTreeMap::new(),
        }
    }

    async fn send(&mut self, method: Method, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !cookie.is_empty() {
            request = request.header("cookie", cookie.join("; "));
        }
        if let Some(form) = form {
            let body: String = form
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        for value in headers.get_all(SET_COOKIE) {
            let text = value.to_str().expect("cookie text");
            let pair = text.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || text.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_string(), value.to_string());
                }
            }
        }
        let text = response.text().await.expect("body");
        Page {
            status,
            headers,
            text,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, None).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(Method::POST, path, Some(form)).await
    }
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(byte as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn options() -> LinkOptions {
    LinkOptions {
        secret: LinkSecret::from_bytes([42; 32]),
        ttl: SignedDuration::from_hours(7 * 24),
        public_url: "http://mail.example".into(),
    }
}

/// Deploys `APPROVAL` (once per server), starts a quote, fires the `PT0S` timer and runs the
/// `links.send` job through `links::issue` (twice: a retry must give the same links). Returns
/// the instance, its task and the paths of the links by decision.
async fn quote(s: &Server, number: &str) -> (String, u64, BTreeMap<String, String>) {
    let deployed = s.deploy("approval.yaml", APPROVAL).await;
    assert!(deployed.status.is_success(), "{}", deployed.text);
    let body = s
        .post(
            "/api/instances",
            &s.admin,
            json!({"process": "approval", "variables": {"quote": {
                "number": number, "customer": XSS,
                "approver_email": "anna@example.com", "approver_name": "Anna Rossi"}}}),
        )
        .await
        .expect(201);
    let id = body["id"].as_str().expect("id").to_string();
    let task = s.open_task(&id).await;
    let now = s.clock.now_ts();
    s.engine.fire_due_timers(now, 100).expect("timers");
    let jobs = s.engine.store().due_jobs(now, 100).expect("jobs");
    let job = jobs
        .iter()
        .find(|j| j.instance.to_string() == id)
        .expect("a links.send job");
    assert_eq!(
        (job.connector.as_str(), job.operation.as_str()),
        ("links", "send")
    );
    let request = |attempt| JobRequest {
        instance: job.instance,
        job: job.job,
        attempt,
        operation: job.operation.clone(),
        key: job.key.clone(),
        input: job.input.clone(),
    };
    let issued = links::issue(&s.engine, &options(), &request(1))
        .expect("issued")
        .expect("an address was given");
    let again = links::issue(&s.engine, &options(), &request(2))
        .expect("issued")
        .expect("an address was given");
    assert_eq!(
        issued.links, again.links,
        "a retried job sends the same links"
    );
    assert_eq!(issued.to, "anna@example.com");
    assert_eq!(issued.task.task, task);
    s.engine
        .job_result(job, JobOutcome::Done(Default::default()))
        .expect("job done");
    let paths = issued
        .links
        .into_iter()
        .map(|(decision, url)| {
            let path = url
                .strip_prefix("http://mail.example")
                .expect("public url")
                .to_string();
            (decision, path)
        })
        .collect();
    (id, task, paths)
}

/// Whether the task is still open, through the API.
async fn open(s: &Server, id: &str, task: u64) -> bool {
    let answer = s.get(&format!("/api/tasks/{id}/{task}"), &s.admin).await;
    match answer.status.as_u16() {
        200 => true,
        404 => false,
        other => panic!("{other}: {}", answer.text),
    }
}

fn tamper(path: &str) -> String {
    let mut text = path.to_string();
    let last = text.pop().expect("a token");
    text.push(if last == '0' { '1' } else { '0' });
    text
}

#[tokio::test]
async fn a_link_shows_the_decision_then_decides_once() {
    let s = Server::start().await;
    let (id, task, paths) = quote(&s, "Q-1").await;
    assert_eq!(paths.keys().collect::<Vec<_>>(), ["approve", "reject"]);
    let approve = &paths["approve"];

    // GET shows the decision page with the decision fixed, and decides nothing.
    let mut browser = Browser::new(&s);
    let page = browser.get(approve).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text
            .contains("<strong id=\"decision-decision\">approve</strong>"),
        "{}",
        page.text
    );
    assert!(page.text.contains("name=\"decision\" value=\"approve\""));
    assert!(
        !page.text.contains("type=\"radio\" name=\"decision\""),
        "no choice of another decision"
    );
    assert!(page.text.contains("name=\"comment\""), "the comment field");
    assert!(page.text.contains(">Confirm</button>"));
    assert!(page.text.contains(XSS_ESCAPED) && !page.text.contains(XSS));
    assert!(page.headers.get("content-security-policy").is_some());
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert!(open(&s, &id, task).await);
    let csrf = page.csrf();

    // A POST without the cookie's secret is refused.
    let mut stranger = Browser::new(&s);
    let refused = stranger
        .post(approve, &[("_csrf", &csrf), ("decision", "approve")])
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let refused = browser
        .post(approve, &[("_csrf", "0000"), ("decision", "approve")])
        .await;
    assert_eq!(refused.status, 403);
    // Another site's form is refused too.
    let mut request = browser
        .client
        .post(format!("{}{approve}", s.base))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_csrf={csrf}&decision=approve"));
    request = request.header("cookie", format!("ciclo_csrf={csrf}"));
    assert_eq!(request.send().await.expect("sent").status(), 403);
    assert!(open(&s, &id, task).await);

    // A link bound to approve cannot submit reject.
    let wrong = browser
        .post(approve, &[("_csrf", &csrf), ("decision", "reject")])
        .await;
    assert_eq!(wrong.status, 400, "{}", wrong.text);
    assert!(open(&s, &id, task).await);

    // Confirm decides, once.
    let done = browser
        .post(
            approve,
            &[
                ("_csrf", &csrf),
                ("decision", "approve"),
                ("comment", "fine <b>"),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.text);
    assert_eq!(done.location(), approve.as_str());
    assert!(!open(&s, &id, task).await);
    let detail = s
        .get(&format!("/api/instances/{id}"), &s.admin)
        .await
        .expect(200);
    assert_eq!(detail["variables"]["decision"], "approve", "{detail}");
    assert_eq!(detail["variables"]["comment"], "fine <b>");
    let history = s
        .get(&format!("/api/instances/{id}/history"), &s.admin)
        .await
        .expect(200);
    assert!(
        history
            .to_string()
            .contains("anna@example.com (e-mail link)"),
        "{history}"
    );

    // Afterwards the link (and its sibling) says who decided what and when.
    for path in [approve, &paths["reject"]] {
        let after = browser.get(path).await;
        assert_eq!(after.status, 200);
        assert!(
            after.text.contains(
                "Approved by Anna Rossi &lt;anna@example.com&gt; at 2027-01-04 09:00 UTC"
            ),
            "{}",
            after.text
        );
        assert!(!after.text.contains("<form method=\"post\" action=\"/links"));
    }
    // A second POST changes nothing.
    let again = browser
        .post(
            &paths["reject"],
            &[("_csrf", &csrf), ("decision", "reject")],
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert!(again.text.contains("Approved by"));
    let detail = s
        .get(&format!("/api/instances/{id}"), &s.admin)
        .await
        .expect(200);
    assert_eq!(detail["variables"]["decision"], "approve");
}

#[tokio::test]
async fn tampered_expired_and_foreign_links_change_nothing() {
    let s = Server::start().await;
    let (id, task, paths) = quote(&s, "Q-2").await;
    let (other_id, other_task, other_paths) = quote(&s, "Q-3").await;
    let mut browser = Browser::new(&s);

    // One character changed: the same page as any unknown link.
    let tampered = tamper(&paths["approve"]);
    let page = browser.get(&tampered).await;
    assert_eq!(page.status, 404);
    assert!(page.text.contains("This link is not valid"));
    let garbage = browser.get("/links/not-a-token").await;
    assert_eq!(garbage.status, 404);
    assert_eq!(
        garbage.text.replace("not-a-token", ""),
        page.text.replace(&tampered, ""),
        "no hint of why"
    );
    let csrf = browser.get(&paths["approve"]).await.csrf();
    let posted = browser
        .post(&tampered, &[("_csrf", &csrf), ("decision", "approve")])
        .await;
    assert_eq!(posted.status, 404);
    assert!(open(&s, &id, task).await);

    // A link of task A cannot decide task B: its token says which task, not the URL.
    let foreign = browser
        .post(
            &other_paths["approve"],
            &[("_csrf", &csrf), ("decision", "approve")],
        )
        .await;
    assert_eq!(foreign.status, 303);
    assert!(open(&s, &id, task).await, "A stays open");
    assert!(!open(&s, &other_id, other_task).await);

    // Expired: the engine's clock moves past seven days.
    s.clock.advance(SignedDuration::from_hours(7 * 24));
    let page = browser.get(&paths["approve"]).await;
    assert_eq!(page.status, 410, "{}", page.text);
    assert!(page.text.contains("This link has expired"));
    let posted = browser
        .post(
            &paths["approve"],
            &[("_csrf", &csrf), ("decision", "approve")],
        )
        .await;
    assert_eq!(posted.status, 410);
    assert!(open(&s, &id, task).await);
}

#[tokio::test]
async fn a_task_decided_in_the_inbox_retires_its_links() {
    let s = Server::start().await;
    let (id, task, paths) = quote(&s, "Q-4").await;
    s.post(
        &format!("/api/tasks/{id}/{task}/complete"),
        &s.admin,
        json!({"values": {"decision": "reject"}}),
    )
    .await
    .expect(204);
    let mut browser = Browser::new(&s);
    let page = browser.get(&paths["approve"]).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("already decided"), "{}", page.text);
    assert!(page.text.contains("Decided by"), "{}", page.text);
}

//! The e-mail connector against a real SMTP server started by the test (mailin-embedded on
//! 127.0.0.1:0): what it received is parsed back with mail-parser and checked header by header,
//! body by body, recipient by recipient.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ciclo_connectors::Outbox;
use ciclo_connectors::email::{EMAIL_REJECTED, EmailConnector, Sender, SmtpOptions, Templates};
use ciclo_engine::parse::Catalog;
use ciclo_engine::runtime::{
    Connector, Connectors, Engine, JobOutcome, JobRequest, Runtime, RuntimeOptions, StartOptions,
    SystemClock,
};
use ciclo_engine::store::{InstanceStatus, MemoryStore};
use ciclo_engine::{Value, Vars};
use mail_parser::MessageParser;
use mailin_embedded::response::{NO_MAILBOX, OK};
use mailin_embedded::{Handler, Response, Server, SslConfig};

/// One message as the server received it: the envelope and the raw bytes.
#[derive(Clone, Debug, Default)]
struct Received {
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

/// Records every message; refuses recipients whose address starts with `reject`.
#[derive(Clone)]
struct Recorder {
    inbox: Arc<Mutex<Vec<Received>>>,
    current: Received,
}

impl Handler for Recorder {
    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, from: &str) -> Response {
        self.current = Received {
            from: from.to_string(),
            ..Default::default()
        };
        OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        if to.trim_start_matches('<').starts_with("reject") {
            return NO_MAILBOX;
        }
        self.current.to.push(to.to_string());
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        self.inbox.lock().unwrap().push(self.current.clone());
        OK
    }
}

/// A real SMTP server on a free port, serving on its own thread for the rest of the test run.
struct SmtpServer {
    port: u16,
    inbox: Arc<Mutex<Vec<Received>>>,
}

impl SmtpServer {
    fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().unwrap().port();
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let mut server = Server::new(Recorder {
            inbox: inbox.clone(),
            current: Received::default(),
        });
        server
            .with_name("test.example")
            .with_ssl(SslConfig::None)
            .expect("no TLS")
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            // Its error type is not `Send`: report it here rather than return it.
            if let Err(e) = server.serve() {
                eprintln!("the test SMTP server stopped: {e}");
            }
        });
        SmtpServer { port, inbox }
    }

    fn received(&self) -> Vec<Received> {
        self.inbox.lock().unwrap().clone()
    }
}

fn templates() -> (tempfile::TempDir, Templates) {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "quote-email/subject.hbs",
            "Quote {{quote.number}} for {{company}}",
        ),
        (
            "quote-email/body.html.hbs",
            "<p>Dear {{company}},</p>\n<p><a href=\"{{link}}\">Your quote</a></p>\n",
        ),
        (
            "quote-email/body.txt.hbs",
            "Dear {{company}},\n\nYour quote: {{link}}\n",
        ),
        (
            "quote-email/subject.it.hbs",
            "Offerta {{quote.number}} per {{company}}",
        ),
        (
            "quote-email/body.html.it.hbs",
            "<p>Gentile {{company}},</p>\n<p><a href=\"{{link}}\">La sua offerta</a></p>\n",
        ),
        (
            "quote-email/body.txt.it.hbs",
            "Gentile {{company}},\n\nLa sua offerta: {{link}}\n",
        ),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let templates = Templates::load(dir.path()).expect("templates load");
    (dir, templates)
}

fn sender() -> Sender {
    Sender::parse(
        "Ciclo Sales <sales@acme.example>",
        Some("Help Desk <help@acme.example>"),
    )
    .unwrap()
}

fn connector(server: &SmtpServer) -> EmailConnector {
    let (_dir, templates) = templates();
    EmailConnector::smtp(
        &SmtpOptions::plain("127.0.0.1", server.port),
        sender(),
        templates,
    )
    .expect("connector")
}

fn request(key: &str, input: serde_json::Value) -> JobRequest {
    let Value::Map(mut input) = Value::from_json(input).unwrap() else {
        panic!("input must be an object")
    };
    input
        .entry("template".into())
        .or_insert(Value::from("quote-email"));
    JobRequest {
        instance: uuid::Uuid::nil(),
        job: 1,
        attempt: 1,
        operation: "send".into(),
        key: key.into(),
        input,
    }
}

fn sent(outcome: &JobOutcome) -> String {
    match outcome {
        JobOutcome::Done(out) => {
            assert_eq!(
                out.get("email_status"),
                Some(&Value::from("sent")),
                "{out:?}"
            );
            match out.get("message_id") {
                Some(Value::String(id)) => id.clone(),
                other => panic!("no message id: {other:?}"),
            }
        }
        other => panic!("not sent: {other:?}"),
    }
}

const LINK: &str = "https://x.example/a?b=1&c=2";

#[tokio::test]
async fn delivers_subject_both_bodies_and_one_recipient() {
    let server = SmtpServer::start();
    let email = connector(&server);
    let outcome = email
        .call(request(
            "inst-1",
            serde_json::json!({
                "to": "ann@customer.example",
                "quote": {"number": "Q-2027-001"},
                "company": "<script>alert(1)</script> & Co",
                "link": LINK,
            }),
        ))
        .await;
    let id = sent(&outcome);
    assert_eq!(id, "<inst-1@acme.example>");

    let received = server.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.to, vec!["ann@customer.example"]);
    assert!(r.from.contains("sales@acme.example"), "{}", r.from);

    let m = MessageParser::default().parse(&r.data).expect("parses");
    assert_eq!(
        m.subject(),
        Some("Quote Q-2027-001 for <script>alert(1)</script> & Co")
    );
    let to: Vec<_> = m.to().unwrap().iter().collect();
    assert_eq!(to.len(), 1);
    assert_eq!(to[0].address.as_deref(), Some("ann@customer.example"));
    let from = m.from().unwrap().first().unwrap();
    assert_eq!(from.name.as_deref(), Some("Ciclo Sales"));
    let reply_to = m.reply_to().unwrap().first().unwrap();
    assert_eq!(reply_to.address.as_deref(), Some("help@acme.example"));
    assert_eq!(m.message_id(), Some("inst-1@acme.example"));
    assert_eq!(
        m.header_raw("X-Ciclo-Idempotency-Key").map(str::trim),
        Some("inst-1")
    );

    // HTML escapes the variables...
    let html = m.body_html(0).unwrap();
    assert_eq!(
        html,
        "<p>Dear &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co,</p>\r\n\
         <p><a href=\"https://x.example/a?b&#x3D;1&amp;c&#x3D;2\">Your quote</a></p>\r\n"
    );
    // ...the text body does not: the link arrives byte for byte. (Line ends are CRLF, as MIME
    // requires of text on the wire.)
    let text = m.body_text(0).unwrap();
    assert_eq!(
        text,
        format!("Dear <script>alert(1)</script> & Co,\r\n\r\nYour quote: {LINK}\r\n")
    );
    // Not even transfer-encoded: the bytes on the wire hold the link as written.
    assert!(
        String::from_utf8_lossy(&r.data).contains(&format!("Your quote: {LINK}\r\n")),
        "the link was transfer-encoded"
    );
}

#[tokio::test]
async fn a_line_break_in_a_subject_variable_adds_no_header() {
    let server = SmtpServer::start();
    let email = connector(&server);
    let outcome = email
        .call(request(
            "inst-2",
            serde_json::json!({
                "to": "ann@customer.example",
                "quote": {"number": "Q-2"},
                "company": "ACME\r\nBcc: someone@example.net",
                "link": LINK,
            }),
        ))
        .await;
    sent(&outcome);
    let received = server.received();
    assert_eq!(received.len(), 1);
    // One recipient in the envelope: nobody got a hidden copy.
    assert_eq!(received[0].to, vec!["ann@customer.example"]);
    let m = MessageParser::default().parse(&received[0].data).unwrap();
    assert!(m.bcc().is_none(), "a Bcc header appeared");
    assert!(m.header_raw("Bcc").is_none());
    // The text reaches the bodies as text (it may start a line there, harmlessly), but no
    // line of the header section starts with it.
    let raw = String::from_utf8_lossy(&received[0].data);
    let headers = raw.split("\r\n\r\n").next().unwrap();
    assert!(
        !headers
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "{raw}"
    );
    assert_eq!(
        m.subject(),
        Some("Quote Q-2 for ACME  Bcc: someone@example.net")
    );
}

#[tokio::test]
async fn a_display_name_with_comma_and_accents_is_one_encoded_mailbox() {
    let server = SmtpServer::start();
    let email = connector(&server);
    let outcome = email
        .call(request(
            "inst-3",
            serde_json::json!({
                "to": "Müller, José <jose@example.com>",
                "quote": {"number": "Q-3"},
                "company": "Müller GmbH",
                "link": LINK,
            }),
        ))
        .await;
    sent(&outcome);
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].to, vec!["jose@example.com"]);
    let raw = String::from_utf8_lossy(&received[0].data).into_owned();
    let to_header = raw
        .split("\r\n")
        .skip_while(|l| !l.starts_with("To:"))
        .take_while(|l| l.starts_with("To:") || l.starts_with(' ') || l.starts_with('\t'))
        .collect::<Vec<_>>()
        .join("");
    // Non-ASCII never travels raw in a header: RFC 2047 encoded words carry it.
    assert!(to_header.is_ascii(), "{to_header}");
    assert!(
        to_header.to_ascii_lowercase().contains("=?utf-8?"),
        "{to_header}"
    );
    let m = MessageParser::default().parse(&received[0].data).unwrap();
    let to: Vec<_> = m.to().unwrap().iter().collect();
    assert_eq!(to.len(), 1, "{to_header}");
    assert_eq!(to[0].name.as_deref(), Some("Müller, José"));
    assert_eq!(to[0].address.as_deref(), Some("jose@example.com"));
    assert_eq!(m.subject(), Some("Quote Q-3 for Müller GmbH"));
}

#[tokio::test]
async fn do_not_email_sends_nothing_and_records_suppressed() {
    let server = SmtpServer::start();
    let email = connector(&server);
    let outcome = email
        .call(request(
            "inst-4",
            serde_json::json!({
                "to": "ann@customer.example",
                "do_not_email": true,
                "quote": {"number": "Q-4"},
                "company": "C",
                "link": LINK,
            }),
        ))
        .await;
    let mut expected = Vars::new();
    expected.insert("email_status".into(), Value::from("suppressed"));
    assert_eq!(outcome, JobOutcome::Done(expected));
    // A send that follows on the same connector arrives: the suppressed one never did.
    sent(
        &email
            .call(request(
                "inst-4b",
                serde_json::json!({
                    "to": "bob@customer.example",
                    "do_not_email": false,
                    "quote": {"number": "Q-4"},
                    "company": "C",
                    "link": LINK,
                }),
            ))
            .await,
    );
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].to, vec!["bob@customer.example"]);
}

#[tokio::test]
async fn the_locale_input_picks_the_variant() {
    let server = SmtpServer::start();
    let email = connector(&server);
    sent(
        &email
            .call(request(
                "inst-5",
                serde_json::json!({
                    "to": "gina@cliente.example",
                    "locale": "it",
                    "quote": {"number": "Q-5"},
                    "company": "Rossi S.p.A.",
                    "link": LINK,
                }),
            ))
            .await,
    );
    let received = server.received();
    let m = MessageParser::default().parse(&received[0].data).unwrap();
    assert_eq!(m.subject(), Some("Offerta Q-5 per Rossi S.p.A."));
    assert_eq!(
        m.body_text(0).unwrap(),
        format!("Gentile Rossi S.p.A.,\r\n\r\nLa sua offerta: {LINK}\r\n")
    );
    assert!(
        m.body_html(0)
            .unwrap()
            .contains("<p>Gentile Rossi S.p.A.,</p>")
    );
}

#[tokio::test]
async fn a_refused_recipient_is_a_business_error_and_a_dead_server_a_failure() {
    let server = SmtpServer::start();
    let email = connector(&server);
    let input = serde_json::json!({
        "to": "rejected@customer.example",
        "quote": {"number": "Q-6"},
        "company": "C",
        "link": LINK,
    });
    match email.call(request("inst-6", input.clone())).await {
        JobOutcome::BusinessError { code, .. } => assert_eq!(code, EMAIL_REJECTED),
        other => panic!("expected EMAIL_REJECTED, got {other:?}"),
    }
    assert!(server.received().is_empty());

    // Nothing listens on a port just released: a technical failure, retried by the engine.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_dir, templates) = templates();
    let dead =
        EmailConnector::smtp(&SmtpOptions::plain("127.0.0.1", port), sender(), templates).unwrap();
    let mut input = input;
    input["to"] = "ann@customer.example".into();
    assert!(matches!(
        dead.call(request("inst-7", input)).await,
        JobOutcome::Failed(_)
    ));
}

#[tokio::test]
async fn bad_addresses_and_missing_variables_are_clear_answers_not_panics() {
    let server = SmtpServer::start();
    let email = connector(&server);
    let outcome = email
        .call(request(
            "k1",
            serde_json::json!({"to": "ann@customer.example\r\nBcc: x@example.net"}),
        ))
        .await;
    assert!(
        matches!(&outcome, JobOutcome::BusinessError { code, .. } if code == "EMAIL_INVALID_ADDRESS"),
        "{outcome:?}"
    );
    let outcome = email
        .call(request(
            "k2",
            serde_json::json!({"to": "ann@customer.example", "company": "C", "link": LINK}),
        ))
        .await;
    assert_eq!(
        outcome,
        JobOutcome::Failed(
            "template `quote-email/subject.hbs`: the variable `quote.number` is missing".into()
        )
    );
    let outcome = email
        .call(request(
            "k3",
            serde_json::json!({"to": "ann@customer.example", "template": "nope"}),
        ))
        .await;
    assert!(matches!(&outcome, JobOutcome::Failed(e) if e.contains("no e-mail template `nope`")));
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn the_outbox_writes_the_same_mime_message_once_per_job() {
    let (_dir, templates) = templates();
    let folder = tempfile::tempdir().unwrap();
    let email = EmailConnector::outbox(Outbox::new(folder.path()), sender(), templates);
    let input = serde_json::json!({
        "to": "Müller, José <jose@example.com>",
        "quote": {"number": "Q-8"},
        "company": "ACME",
        "link": LINK,
    });
    for _ in 0..2 {
        sent(&email.call(request("inst-8", input.clone())).await);
    }
    let files: Vec<_> = std::fs::read_dir(folder.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(folder.path().join("inst-8.eml")).unwrap();
    let m = MessageParser::default().parse(&bytes).unwrap();
    assert_eq!(m.subject(), Some("Quote Q-8 for ACME"));
    assert_eq!(
        m.to().unwrap().first().unwrap().name.as_deref(),
        Some("Müller, José")
    );
    assert_eq!(
        m.body_text(0).unwrap(),
        format!("Dear ACME,\r\n\r\nYour quote: {LINK}\r\n")
    );
}

const QUOTE_PROCESS: &str = r#"
process: quote-mail
start: send
steps:
  send:
    send: quote-email
    to: customer.email
    input:
      quote: quote
      company: customer.company
      link: link
      locale: customer.locale
      do_not_email: customer.do_not_email
    goto: done
  done:
    end: true
"#;

/// Runs `vars` through the process with the runtime and the e-mail connector; returns the
/// instance's final variables.
async fn run_process(email: EmailConnector, vars: serde_json::Value) -> Vars {
    let engine = Engine::open(
        Arc::new(MemoryStore::new()),
        Arc::new(SystemClock),
        Catalog::standard(),
    )
    .expect("engine");
    engine
        .deploy("quote-mail.yaml", QUOTE_PROCESS)
        .expect("deploy");
    let engine = Arc::new(engine);
    let Value::Map(vars) = Value::from_json(vars).unwrap() else {
        panic!("vars must be an object")
    };
    let id = engine
        .start(
            "quote-mail",
            StartOptions {
                vars,
                ..Default::default()
            },
        )
        .expect("start");
    let mut connectors: Connectors = Default::default();
    connectors.insert("email".into(), Arc::new(email));
    let handle = Runtime::spawn(
        engine.clone(),
        connectors,
        RuntimeOptions {
            poll: Duration::from_millis(20),
            ..Default::default()
        },
    );
    // The runtime works on its own tasks: wait (bounded) for the instance to end.
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let (record, state) = engine.instance(id).unwrap().unwrap();
        if record.status != InstanceStatus::Active {
            assert_eq!(record.status, InstanceStatus::Completed);
            break state;
        }
        assert!(Instant::now() < deadline, "the instance did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    handle.shutdown().await;
    state.vars
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_step_run_by_the_runtime_delivers_to_the_smtp_server() {
    let server = SmtpServer::start();
    let vars = run_process(
        connector(&server),
        serde_json::json!({
            "customer": {
                "email": "Rossi, Gina <gina@cliente.example>",
                "company": "Rossi & Figli",
                "locale": "it",
                "do_not_email": false,
            },
            "quote": {"number": "Q-9"},
            "link": LINK,
        }),
    )
    .await;
    assert_eq!(vars.get("email_status"), Some(&Value::from("sent")));
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].to, vec!["gina@cliente.example"]);
    let m = MessageParser::default().parse(&received[0].data).unwrap();
    assert_eq!(m.subject(), Some("Offerta Q-9 per Rossi & Figli"));
    assert!(
        m.body_html(0)
            .unwrap()
            .contains("Gentile Rossi &amp; Figli")
    );
    assert!(m.body_text(0).unwrap().contains(LINK));
    let Some(Value::String(id)) = vars.get("message_id") else {
        panic!("no message_id in {vars:?}")
    };
    assert_eq!(
        m.message_id().map(|i| format!("<{i}>")).as_deref(),
        Some(id.as_str())
    );

    // The same process for a Do Not Email customer: the step records it, nothing is sent.
    let vars = run_process(
        connector(&server),
        serde_json::json!({
            "customer": {
                "email": "ann@customer.example",
                "company": "ACME",
                "locale": "en",
                "do_not_email": true,
            },
            "quote": {"number": "Q-10"},
            "link": LINK,
        }),
    )
    .await;
    assert_eq!(vars.get("email_status"), Some(&Value::from("suppressed")));
    assert_eq!(server.received().len(), 1);
}

/// The templates shipped with the example processes load, and every `send:` of the examples
/// has one, so the quick start's e-mails land in the outbox instead of failing.
#[test]
fn the_example_templates_load_and_cover_the_example_processes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let templates = Templates::load(&root.join("processes/templates")).expect("examples load");
    let names: Vec<&str> = templates.names().collect();
    for entry in std::fs::read_dir(root.join("processes/examples")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some(name) = line.trim().strip_prefix("send: ") {
                assert!(names.contains(&name.trim()), "no template for {name}");
            }
        }
    }
}

/// A certificate for `localhost` made for this test, and a login the server accepts.
struct Tls {
    _dir: tempfile::TempDir,
    cert_path: String,
    key_path: String,
    cert_pem: String,
}

fn tls_files() -> Tls {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("a self-signed certificate");
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let cert_pem = certified.cert.pem();
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    Tls {
        cert_path: cert_path.to_string_lossy().into_owned(),
        key_path: key_path.to_string_lossy().into_owned(),
        cert_pem,
        _dir: dir,
    }
}

/// The recorder, also accepting one login by AUTH PLAIN and noting who logged in.
#[derive(Clone)]
struct LoginRecorder {
    recorder: Recorder,
    logins: Arc<Mutex<Vec<String>>>,
}

impl Handler for LoginRecorder {
    fn mail(&mut self, ip: std::net::IpAddr, domain: &str, from: &str) -> Response {
        self.recorder.mail(ip, domain, from)
    }
    fn rcpt(&mut self, to: &str) -> Response {
        self.recorder.rcpt(to)
    }
    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.recorder.data(buf)
    }
    fn data_end(&mut self) -> Response {
        self.recorder.data_end()
    }
    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        if user == "ciclo" && password == "s3cret" {
            self.logins.lock().unwrap().push(user.to_string());
            mailin_embedded::response::AUTH_OK
        } else {
            mailin_embedded::response::INVALID_CREDENTIALS
        }
    }
}

/// What a TLS test server received: the messages, and the logins (user names) it saw.
type Inbox = Arc<Mutex<Vec<Received>>>;
type Logins = Arc<Mutex<Vec<String>>>;

/// A real SMTP server that offers STARTTLS with `tls`'s certificate and AUTH PLAIN (mailin
/// offers AUTH only once the connection is encrypted).
fn start_tls_server(tls: &Tls) -> (u16, Inbox, Logins) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().unwrap().port();
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let logins = Arc::new(Mutex::new(Vec::new()));
    let mut server = Server::new(LoginRecorder {
        recorder: Recorder {
            inbox: inbox.clone(),
            current: Received::default(),
        },
        logins: logins.clone(),
    });
    server
        .with_name("localhost")
        .with_ssl(SslConfig::SelfSigned {
            cert_path: tls.cert_path.clone(),
            key_path: tls.key_path.clone(),
        })
        .expect("TLS set-up")
        .with_auth(mailin_embedded::AuthMechanism::Plain)
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        if let Err(e) = server.serve() {
            eprintln!("the test SMTP server stopped: {e}");
        }
    });
    (port, inbox, logins)
}

fn tls_options(port: u16, roots: Option<&str>, password: &str) -> SmtpOptions {
    SmtpOptions {
        host: "localhost".into(),
        port: Some(port),
        security: ciclo_connectors::email::Security::StartTls,
        login: Some((
            "ciclo".into(),
            ciclo_connectors::email::Password::new(password),
        )),
        timeout: Duration::from_secs(10),
        extra_roots_pem: roots.map(|pem| pem.as_bytes().to_vec()),
    }
}

#[tokio::test]
async fn starttls_with_login_delivers_to_a_server_whose_ca_is_trusted() {
    let tls = tls_files();
    let (port, inbox, logins) = start_tls_server(&tls);
    let (_dir, templates) = templates();
    let email = EmailConnector::smtp(
        &tls_options(port, Some(&tls.cert_pem), "s3cret"),
        sender(),
        templates,
    )
    .expect("connector");
    let outcome = email
        .call(request(
            "tls-1",
            serde_json::json!({
                "to": "ann@customer.example",
                "quote": {"number": "Q-TLS-1"},
                "company": "ACME",
                "link": LINK,
            }),
        ))
        .await;
    sent(&outcome);
    assert_eq!(*logins.lock().unwrap(), vec!["ciclo".to_string()]);
    let received = inbox.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].to, vec!["ann@customer.example".to_string()]);
    let parsed = MessageParser::default().parse(&received[0].data).unwrap();
    assert!(parsed.subject().unwrap().contains("Q-TLS-1"));
}

#[tokio::test]
async fn starttls_refuses_an_untrusted_certificate_and_a_wrong_password_is_no_business_error() {
    let tls = tls_files();
    let (port, inbox, logins) = start_tls_server(&tls);
    let input = serde_json::json!({
        "to": "ann@customer.example",
        "quote": {"number": "Q-TLS-2"},
        "company": "ACME",
        "link": LINK,
    });

    // No extra root: the self-signed certificate is not trusted, nothing is sent, and the job
    // is a technical failure (retried, then an incident), never "sent".
    let (_dir, untrusted_templates) = templates();
    let untrusted = EmailConnector::smtp(
        &tls_options(port, None, "s3cret"),
        sender(),
        untrusted_templates,
    )
    .unwrap();
    match untrusted.call(request("tls-2", input.clone())).await {
        JobOutcome::Failed(message) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}")
        }
        other => panic!("an untrusted certificate must fail the job: {other:?}"),
    }

    // Trusted, wrong password: the server refuses the login (535), which is ours to fix in the
    // configuration, so a failure, not the business error EMAIL_REJECTED.
    let (_dir2, wrong_templates) = templates();
    let wrong = EmailConnector::smtp(
        &tls_options(port, Some(&tls.cert_pem), "wrong"),
        sender(),
        wrong_templates,
    )
    .unwrap();
    match wrong.call(request("tls-3", input)).await {
        JobOutcome::Failed(_) => {}
        other => panic!("a refused login must be a technical failure: {other:?}"),
    }
    assert!(inbox.lock().unwrap().is_empty());
    assert!(logins.lock().unwrap().is_empty());
}

#[test]
fn a_ca_file_that_is_not_pem_is_refused_at_start() {
    let (_dir, templates) = templates();
    let mut options = tls_options(1, None, "x");
    options.extra_roots_pem = Some(b"not a certificate".to_vec());
    let error = match EmailConnector::smtp(&options, sender(), templates) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a CA file without a certificate must be refused"),
    };
    assert!(error.contains("BEGIN CERTIFICATE"), "{error}");
}

/// The shipped lead-to-cash templates render with what the processes give them: amounts as
/// money in each language, a customer without a name greeted without a dangling space.
#[test]
fn the_shipped_letters_and_quotes_write_amounts_as_money() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let templates = Templates::load(&root.join("processes/templates")).expect("templates load");
    let quote = serde_json::json!({"quote": {
        "number": "Q-2025-7", "valid_until": "2025-05-01", "currency": "EUR",
        "customer": {"name": null, "email": "buyer@example.com"},
        "lines": [{"name": "Widget", "qty": 60, "list_price": 100, "net": 5100}],
        "total": 5100, "vat": 1122, "discount": 0.15,
    }});
    let en = templates.render("quote-email", None, &quote).expect("en");
    assert!(en.text.starts_with("Hello,"), "{}", en.text);
    assert!(
        en.text.contains("Total 5,100.00 EUR + VAT 1,122.00 EUR"),
        "{}",
        en.text
    );
    assert!(
        en.html.contains("<td>100.00</td><td>5,100.00</td>"),
        "{}",
        en.html
    );
    let it = templates
        .render("quote-email", Some("it"), &quote)
        .expect("it");
    assert!(
        it.text.contains("Totale 5.100,00 EUR + IVA 1.122,00 EUR"),
        "{}",
        it.text
    );

    let letter = serde_json::json!({
        "invoice": {"number": "2025/017", "due_date": "2025-03-31",
                    "customer": {"name": "Rossi srl"}},
        "letter": {"level": 2, "date": "2025-04-21", "currency": "EUR", "principal": 720,
                   "claims_interest": true, "interest": 6.15, "claims_compensation": true,
                   "compensation": 40, "fee": 0, "total": 766.15},
    });
    let en = templates
        .render("dunning-level-2", None, &letter)
        .expect("en");
    assert!(
        en.text.contains("Outstanding principal: 720.00 EUR"),
        "{}",
        en.text
    );
    assert!(en.text.contains("Total due: 766.15 EUR"), "{}", en.text);
    let it = templates
        .render("dunning-level-2", Some("it"), &letter)
        .expect("it");
    assert!(
        it.text.contains("Capitale da pagare: 720,00 EUR"),
        "{}",
        it.text
    );

    let approval = serde_json::json!({
        "quote": {"number": "Q-2025-7", "total": 12500, "discount": 0.1220833333,
                  "customer": {"name": "Acme"}},
        "person": {"name": "Sales manager"}, "task": {"title": "Approve quote Q-2025-7"},
        "links": {"approve": "https://x.example/l/a?t=1&u=2", "reject": "https://x.example/l/r"},
    });
    let en = templates
        .render("approval-request", None, &approval)
        .expect("en");
    assert!(en.text.contains("Total: 12,500.00 EUR"), "{}", en.text);
    assert!(en.text.contains("Discount: 12.21%"), "{}", en.text);
    assert!(
        en.text.contains("https://x.example/l/a?t=1&u=2"),
        "{}",
        en.text
    );
}

//! Test harness: the real router served on 127.0.0.1:0 over an engine on the in-memory store
//! with a manual clock, an admin token, and a real HTTP client.

#![allow(dead_code)]

use std::sync::Arc;

use ciclo_engine::parse::Catalog;
use ciclo_engine::runtime::{Engine, JobOutcome, ManualClock};
use ciclo_engine::store::{MemoryStore, Role, UserRecord};
use ciclo_web::{WebConfig, app, install_metrics};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A process that uses most of what the API shows: a user task with a form offered to a
/// group, a message wait, and a service call that can end in an incident.
/// A process whose one step waits for an external worker of type `score-lead`.
pub const SCORE: &str = r#"process: score
start: score
steps:
  score:
    call: external.score-lead
    input: { email: lead.email }
    output: { score: result.score }
    on:
      - error: BAD_LEAD
        goto: rejected
  rejected:
    set: { reason: error.message }
"#;

pub const ORDER: &str = r#"process: order
name: Order
start: review
steps:
  review:
    task: Review order {{order}}
    candidates: [sales]
    form: { decision: [approve, reject], amount: { type: number, min: 0, max: 100 } }
    then:
      - when: decision == "approve"
        goto: wait-payment
      - otherwise: rejected
  wait-payment:
    wait: { message: payment, key: order }
    goto: book
  book:
    call: erp.create-order
    input: { order: order }
    retry: { attempts: 1 }
    goto: done
  done:
    end: true
  rejected:
    end: true
"#;

pub struct Server {
    pub engine: Arc<Engine>,
    pub clock: Arc<ManualClock>,
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
}

pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    /// Asserts the status and returns the JSON body (null when empty).
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        if self.text.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts an error answer in our shape with this status and code.
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        let body = self.expect(status);
        assert_eq!(body["code"], code, "body: {body}");
        assert!(body["message"].is_string(), "body: {body}");
        assert!(body.get("details").is_some(), "body: {body}");
        body
    }
}

impl Server {
    pub async fn start() -> Server {
        Server::with_config(WebConfig::default()).await
    }

    pub async fn with_config(config: WebConfig) -> Server {
        let clock = Arc::new(ManualClock::new(
            "2027-01-04T09:00:00Z".parse().expect("instant"),
        ));
        let engine = Arc::new(
            Engine::open(
                Arc::new(MemoryStore::new()),
                clock.clone(),
                Catalog::standard(),
            )
            .expect("engine opens"),
        );
        let admin = engine
            .create_token(Role::Admin, None, Some("test admin"))
            .expect("admin token");
        let router = app(engine.clone(), config, install_metrics());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        Server {
            engine,
            clock,
            base,
            admin,
            client: reqwest::Client::new(),
        }
    }

    /// Any request; `token` None sends no Authorization header.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response.text().await.expect("body");
        Answer {
            status,
            content_type,
            text,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None, &[]).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(
            Method::POST,
            path,
            Some(token),
            Some(("application/json", body.to_string().into_bytes())),
            &[],
        )
        .await
    }

    pub async fn deploy(&self, file: &str, yaml: &str) -> Answer {
        self.post(
            "/api/definitions",
            &self.admin,
            json!({"file": file, "source": yaml}),
        )
        .await
    }

    /// Starts an `order` instance; returns its id.
    pub async fn start_order(&self, order: &str) -> String {
        let body = self
            .post(
                "/api/instances",
                &self.admin,
                json!({"process": "order", "variables": {"order": order}, "business_key": order}),
            )
            .await
            .expect(201);
        body["id"].as_str().expect("id").to_string()
    }

    /// A user with groups, and a `user` token acting for them.
    /// Deploys `SCORE` (once) and starts an instance waiting for an external worker.
    pub async fn start_external(&self) -> String {
        let deployed = self.deploy("score.yaml", SCORE).await;
        assert!(deployed.status.is_success(), "{}", deployed.text);
        let started = self
            .post(
                "/api/instances",
                &self.admin,
                json!({"process": "score", "variables": {"lead": {"email": "ada@example.com"}}}),
            )
            .await
            .expect(201);
        started["id"].as_str().expect("id").to_string()
    }

    /// Starts a `SCORE` instance and fetches its job as `worker`: the job id and lease token.
    pub async fn locked_external(&self, worker: &str, token: &str) -> (String, String) {
        let instance = self.start_external().await;
        let jobs = self
            .post(
                "/api/external-jobs/fetch-and-lock",
                token,
                json!({"worker": worker, "types": ["score-lead"], "max_jobs": 100}),
            )
            .await
            .expect(200);
        let job = jobs
            .as_array()
            .expect("a list")
            .iter()
            .find(|j| j["instance"] == instance.as_str())
            .expect("the new instance's job");
        (
            job["id"].as_str().expect("id").to_string(),
            job["lease_token"].as_str().expect("token").to_string(),
        )
    }

    pub fn user(&self, name: &str, groups: &[&str]) -> String {
        self.engine
            .put_user(UserRecord {
                name: name.into(),
                display_name: None,
                email: None,
                groups: groups.iter().map(|g| g.to_string()).collect(),
                password_hash: None,
                created_at: "2027-01-01T00:00:00Z".parse().expect("instant"),
            })
            .expect("user");
        self.engine
            .create_token(Role::User, Some(name), None)
            .expect("token")
    }

    pub fn token(&self, role: Role) -> String {
        self.engine
            .create_token(role, None, Some("test"))
            .expect("token")
    }

    /// Runs every due job (not the system's) once with `outcome`.
    pub fn run_jobs(&self, outcome: impl Fn() -> JobOutcome) -> usize {
        let now = self.clock.now_ts();
        let jobs = self.engine.store().due_jobs(now, 100).expect("due jobs");
        let n = jobs.len();
        for job in jobs {
            self.engine.job_result(&job, outcome()).expect("job result");
        }
        n
    }

    /// Drives an `order` instance to its approved, message-received state and fails its ERP
    /// call, which leaves an incident. Returns the instance id.
    pub async fn order_with_incident(&self, order: &str) -> String {
        let id = self.start_order(order).await;
        let task = self.open_task(&id).await;
        self.post(
            &format!("/api/tasks/{id}/{task}/complete"),
            &self.admin,
            json!({"values": {"decision": "approve", "amount": 10}}),
        )
        .await
        .expect(204);
        self.post(
            "/api/messages",
            &self.admin,
            json!({"name": "payment", "key": order}),
        )
        .await
        .expect(200);
        self.run_jobs(|| JobOutcome::Failed("ERP down".into()));
        id
    }

    /// The number of the open task of an instance.
    pub async fn open_task(&self, instance: &str) -> u64 {
        let detail = self
            .get(&format!("/api/instances/{instance}"), &self.admin)
            .await
            .expect(200);
        detail["position"][0]["waits_for"]["task"]
            .as_u64()
            .unwrap_or_else(|| panic!("no task waiting: {detail}"))
    }
}

/// `ManualClock` has no public getter besides the `Clock` trait; this names it.
pub trait Now {
    fn now_ts(&self) -> jiff::Timestamp;
}

impl Now for ManualClock {
    fn now_ts(&self) -> jiff::Timestamp {
        ciclo_engine::runtime::Clock::now(self)
    }
}

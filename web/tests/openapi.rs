//! The OpenAPI document: valid OpenAPI 3.1, every `$ref` resolves, every operation documents
//! its errors, and every path it lists answers a valid call with a status it documents.

mod common;

use std::collections::BTreeSet;

use ciclo_engine::store::{Role, UserRecord};
use common::{ORDER, Server};
use reqwest::Method;
use serde_json::{Value, json};

fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref"
                    && let Some(r) = v.as_str()
                {
                    out.insert(r.to_string());
                }
                refs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1_and_complete() {
    let s = Server::start().await;
    let answer = s.get("/api/openapi.json", &s.admin).await;
    assert_eq!(answer.status, 200);
    let spec = oas3::from_json(&answer.text).expect("parses as OpenAPI 3.1");
    assert_eq!(spec.openapi, "3.1.0");
    // Served and built documents agree.
    assert_eq!(
        answer.json(),
        serde_json::to_value(ciclo_web::openapi()).expect("json")
    );

    let doc = answer.json();
    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling reference {r}"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");

    let operations: Vec<_> = spec.operations().collect();
    // 3 system, 4 definitions, 6 instances, 1 leads, 1 messages, 5 tasks, 3 incidents and
    // jobs, 8 users (with the password) and tokens, 5 external jobs: a route lost from the
    // document shows here.
    assert_eq!(operations.len(), 36);
    for (path, method, op) in &operations {
        let statuses: BTreeSet<&str> = op
            .responses
            .as_ref()
            .map(|r| r.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert!(
            statuses.iter().any(|s| s.starts_with('2')),
            "{method} {path}: no success documented"
        );
        let open = path == "/healthz" || path == "/metrics";
        if !open {
            assert!(
                statuses.contains("401"),
                "{method} {path}: 401 not documented"
            );
        }
        if path.starts_with("/api/") && path != "/api/openapi.json" {
            assert!(
                statuses.contains("403"),
                "{method} {path}: 403 not documented"
            );
        }
        let has_body = op.request_body.is_some();
        if has_body {
            for code in ["400", "413"] {
                assert!(
                    statuses.contains(code),
                    "{method} {path}: {code} not documented"
                );
            }
        }
        // PUT creates what is missing, so it has no 404.
        if path.contains('{') && *method != Method::PUT && !statuses.contains("404") {
            panic!("{method} {path}: 404 not documented");
        }
    }
}

/// The smallest lead-intake: `POST /api/leads` starts it.
const LEAD_INTAKE: &str = "process: lead-intake\nsteps:\n  done: { end: true }\n";

/// What a minimal valid call of one operation needs: its concrete path and body.
struct Call {
    path: String,
    body: Option<Value>,
}

#[tokio::test]
async fn every_documented_operation_answers_a_documented_status() {
    let s = Server::start().await;
    s.deploy("order.yaml", ORDER).await.expect(201);
    s.deploy("lead-intake.yaml", LEAD_INTAKE).await.expect(201);
    s.engine
        .put_user(UserRecord {
            name: "root".into(),
            display_name: None,
            email: None,
            groups: vec!["sales".into()],
            password_hash: None,
            created_at: "2027-01-01T00:00:00Z".parse().expect("instant"),
        })
        .expect("user");
    // An admin acting for a user, so that claiming works too.
    let admin = s
        .engine
        .create_token(Role::Admin, Some("root"), Some("sweep"))
        .expect("token");
    let spec =
        oas3::from_json(serde_json::to_string(&ciclo_web::openapi()).expect("json")).expect("spec");

    let mut n = 0;
    for (template, method, op) in spec.operations() {
        // Each call gets fresh data, so destructive calls (cancel, delete) do not disturb others.
        let call = match (method.as_str(), template.as_str()) {
            (
                _,
                "/healthz" | "/metrics" | "/api/openapi.json" | "/api/definitions"
                | "/api/instances" | "/api/tasks" | "/api/incidents" | "/api/jobs" | "/api/users"
                | "/api/tokens",
            ) if method == Method::GET => Call {
                path: template.clone(),
                body: None,
            },
            ("POST", "/api/definitions") => Call {
                path: template.clone(),
                body: Some(json!({"file": "order.yaml", "source": ORDER})),
            },
            ("GET", "/api/definitions/{id}" | "/api/definitions/{id}/diagram.svg") => Call {
                path: template.replace("{id}", "order"),
                body: None,
            },
            ("POST", "/api/leads") => Call {
                path: template.clone(),
                body: Some(json!({"lead": {"email": "a@x.it"}})),
            },
            ("POST", "/api/instances") => Call {
                path: template.clone(),
                body: Some(json!({"process": "order", "variables": {"order": "S"}})),
            },
            (
                "GET" | "POST",
                "/api/instances/{id}"
                | "/api/instances/{id}/cancel"
                | "/api/instances/{id}/history"
                | "/api/instances/{id}/diagram.svg",
            ) => Call {
                path: template.replace("{id}", &s.start_order("S").await),
                body: method.as_str().eq("POST").then(|| json!({})),
            },
            ("POST", "/api/messages") => Call {
                path: template.clone(),
                body: Some(json!({"name": "payment", "key": "S", "ttl": "PT1M"})),
            },
            (
                _,
                "/api/tasks/{instance}/{task}"
                | "/api/tasks/{instance}/{task}/claim"
                | "/api/tasks/{instance}/{task}/complete"
                | "/api/tasks/{instance}/{task}/assign",
            ) => {
                let id = s.start_order("S").await;
                let task = s.open_task(&id).await;
                let body = match template.rsplit('/').next() {
                    Some("complete") => {
                        Some(json!({"values": {"decision": "reject", "amount": 0}}))
                    }
                    Some("assign") => Some(json!({"assignee": "root"})),
                    Some("claim") => Some(json!({})),
                    _ => None,
                };
                Call {
                    path: template
                        .replace("{instance}", &id)
                        .replace("{task}", &task.to_string()),
                    body,
                }
            }
            ("POST", "/api/incidents/{instance}/{incident}/retry") => {
                let id = s.order_with_incident("S").await;
                let incidents = s
                    .get(&format!("/api/incidents?instance={id}"), &admin)
                    .await
                    .expect(200);
                let number = incidents["items"][0]["incident"]
                    .as_u64()
                    .expect("incident");
                Call {
                    path: template
                        .replace("{instance}", &id)
                        .replace("{incident}", &number.to_string()),
                    body: None,
                }
            }
            ("GET" | "PUT" | "DELETE", "/api/users/{name}") => {
                if method != Method::PUT {
                    s.user("someone", &["sales"]);
                }
                Call {
                    path: template.replace("{name}", "someone"),
                    body: (method == Method::PUT).then(|| json!({"groups": ["sales"]})),
                }
            }
            ("PUT", "/api/users/{name}/password") => {
                s.user("someone", &["sales"]);
                Call {
                    path: template.replace("{name}", "someone"),
                    body: Some(json!({"password": "a long enough password"})),
                }
            }
            ("POST", "/api/tokens") => Call {
                path: template.clone(),
                body: Some(json!({"role": "operator", "label": "sweep"})),
            },
            ("DELETE", "/api/tokens/{hash}") => {
                let made = s
                    .post(
                        "/api/tokens",
                        &admin,
                        json!({"role": "user", "user": "root"}),
                    )
                    .await
                    .expect(201);
                Call {
                    path: template.replace("{hash}", made["token"]["hash"].as_str().expect("hash")),
                    body: None,
                }
            }
            ("POST", "/api/external-jobs/fetch-and-lock") => {
                s.start_external().await;
                Call {
                    path: template.clone(),
                    body: Some(json!({"worker": "sweep", "types": ["score-lead"]})),
                }
            }
            ("POST", p) if p.starts_with("/api/external-jobs/{id}/") => {
                let (id, token) = s.locked_external("sweep", &admin).await;
                let body = match template.rsplit('/').next() {
                    Some("extend") => json!({"lease_ms": 1000}),
                    Some("complete") => json!({"variables": {"score": 1}}),
                    Some("fail") => json!({"message": "down"}),
                    _ => json!({"code": "BAD_LEAD"}),
                };
                let mut body = body;
                body["worker"] = json!("sweep");
                body["lease_token"] = json!(token);
                Call {
                    path: template.replace("{id}", &id),
                    body: Some(body),
                }
            }
            (m, p) => panic!("the sweep has no call for {m} {p}: add one"),
        };
        let body = call
            .body
            .map(|b| ("application/json", b.to_string().into_bytes()));
        let answer = s
            .call(method.clone(), &call.path, Some(&admin), body, &[])
            .await;
        let documented: BTreeSet<String> = op
            .responses
            .as_ref()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default();
        let status = answer.status.as_u16().to_string();
        assert!(
            documented.contains(&status),
            "{method} {}: {status} is not among {documented:?}: {}",
            call.path,
            answer.text
        );
        assert!(
            answer.status.is_success(),
            "{method} {}: a minimal valid call failed with {status}: {}",
            call.path,
            answer.text
        );
        n += 1;
    }
    assert_eq!(n, 36);
}

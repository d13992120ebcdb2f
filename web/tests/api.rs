//! End-to-end tests of the HTTP API: the real router on a real socket, a real client.

mod common;

use ciclo_engine::runtime::JobOutcome;
use ciclo_engine::store::Role;
use ciclo_web::WebConfig;
use common::{ORDER, SCORE, Server};
use reqwest::Method;
use serde_json::{Value, json};

/// The opening tag of the SVG group drawn for `step`.
fn step_tag<'a>(svg: &'a str, step: &str) -> &'a str {
    node_tag(svg, &format!("step-{step}"))
}

/// The opening tag of the drawing's node with SVG id `id`.
fn node_tag<'a>(svg: &'a str, id: &str) -> &'a str {
    let at = svg
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no {id} in the drawing"));
    let start = svg[..at].rfind('<').expect("tag start");
    let end = at + svg[at..].find('>').expect("tag end");
    &svg[start..=end]
}

#[tokio::test]
async fn deploy_list_get_and_draw_definitions() {
    let s = Server::start().await;
    let deployed = s.deploy("order.yaml", ORDER).await.expect(201);
    assert_eq!(
        deployed,
        json!([{"process": "order", "version": 1, "unchanged": false}])
    );
    // The same text again stores nothing.
    let again = s.deploy("order.yaml", ORDER).await.expect(200);
    assert_eq!(again[0]["unchanged"], true);
    // YAML body with the file name in the query.
    let v2 = ORDER.replace("name: Order", "name: Order v2");
    let yaml = s
        .call(
            Method::POST,
            "/api/definitions?file=order.yaml",
            Some(&s.admin),
            Some(("application/yaml", v2.into_bytes())),
            &[],
        )
        .await
        .expect(201);
    assert_eq!(yaml[0]["version"], 2);

    let list = s.get("/api/definitions", &s.admin).await.expect(200);
    assert_eq!(
        list,
        json!({"items": [{"id": "order", "name": "Order v2", "latest_version": 2}], "next_cursor": null})
    );
    let one = s.get("/api/definitions/order", &s.admin).await.expect(200);
    assert_eq!(one["versions"].as_array().expect("versions").len(), 2);
    assert_eq!(one["versions"][0]["source"], ORDER);
    assert_eq!(one["versions"][1]["file"], "order.yaml");

    let svg = s
        .get("/api/definitions/order/diagram.svg?version=1", &s.admin)
        .await;
    assert_eq!(svg.status, 200);
    assert_eq!(svg.content_type, "image/svg+xml");
    assert!(
        svg.text.starts_with("<svg") && svg.text.contains("step-review"),
        "{}",
        svg.text
    );
    s.get("/api/definitions/order/diagram.svg?version=9", &s.admin)
        .await
        .expect_error(404, "not_found");
    s.get("/api/definitions/nope", &s.admin)
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn an_invalid_definition_is_refused_with_its_problems() {
    let s = Server::start().await;
    let broken = "process: broken\nstart: a\nsteps:\n  a:\n    goto: nowhere\n";
    let body = s
        .deploy("broken.yaml", broken)
        .await
        .expect_error(422, "invalid_definition");
    let problems = body["details"].as_array().expect("problems");
    assert!(!problems.is_empty());
    for p in problems {
        let location = p["location"].as_str().expect("location");
        let parts: Vec<&str> = location.split(':').collect();
        assert_eq!(parts.len(), 3, "{location}");
        assert_eq!(parts[0], "broken.yaml");
        assert!(
            parts[1].parse::<u32>().is_ok() && parts[2].parse::<u32>().is_ok(),
            "{location}"
        );
        assert!(
            p["code"].as_str().expect("code").starts_with("CICLO-"),
            "{p}"
        );
    }
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("broken.yaml:")
    );
}

#[tokio::test]
async fn start_is_idempotent_with_a_request_key() {
    let s = Server::start().await;
    s.deploy("order.yaml", ORDER).await.expect(201);
    let start = |key: &'static str| {
        let s = &s;
        async move {
            s.call(
                Method::POST,
                "/api/instances",
                Some(&s.admin),
                Some((
                    "application/json",
                    json!({"process": "order", "variables": {"order": "A-1"}})
                        .to_string()
                        .into_bytes(),
                )),
                &[("Idempotency-Key", key)],
            )
            .await
            .expect(201)["id"]
                .as_str()
                .expect("id")
                .to_string()
        }
    };
    let first = start("k-1").await;
    assert_eq!(start("k-1").await, first);
    assert_ne!(start("k-2").await, first);
    s.post("/api/instances", &s.admin, json!({"process": "nope"}))
        .await
        .expect_error(404, "not_found");
    s.post(
        "/api/instances",
        &s.admin,
        json!({"process": "order", "variables": [1]}),
    )
    .await
    .expect_error(400, "bad_request");
}

#[tokio::test]
async fn passed_gateways_are_marked_done_on_the_instance_diagram() {
    let s = Server::start().await;
    let yaml = r#"process: gates
start: route
steps:
  route:
    decide:
      - when: amount > 100
        goto: both
      - otherwise: small
  both:
    parallel: [check, ship]
  check:
    task: Check
    form: { ok: boolean }
    goto: join
  ship:
    task: Ship
    form: { ok: boolean }
    goto: join
  join:
    join: all
    goto: done
  small:
    end: true
  done:
    end: true
"#;
    s.deploy("gates.yaml", yaml).await.expect(201);
    let body = s
        .post(
            "/api/instances",
            &s.admin,
            json!({"process": "gates", "variables": {"amount": 500}}),
        )
        .await
        .expect(201);
    let id = body["id"].as_str().expect("id").to_string();
    let svg = s
        .get(&format!("/api/instances/{id}/diagram.svg"), &s.admin)
        .await;
    assert_eq!(svg.status, 200);
    for passed in ["route", "both"] {
        let tag = step_tag(&svg.text, passed);
        assert!(tag.contains("done") && !tag.contains("current"), "{tag}");
    }
    for open in ["check", "ship"] {
        assert!(step_tag(&svg.text, open).contains("current"));
    }
    assert!(!step_tag(&svg.text, "small").contains("done"));
    let history = s
        .get(&format!("/api/instances/{id}/history"), &s.admin)
        .await
        .expect(200);
    let text = history.to_string();
    assert!(
        text.contains("to both") && text.contains("2 paths"),
        "{text}"
    );
}

#[tokio::test]
async fn list_instances_with_filters_and_cursor_pages() {
    let s = Server::start().await;
    s.deploy("order.yaml", ORDER).await.expect(201);
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = s
            .post(
                "/api/instances",
                &s.admin,
                json!({"process": "order", "variables": {"order": format!("A-{i}"), "n": i}, "business_key": format!("bk-{}", i % 2)}),
            )
            .await
            .expect(201);
        ids.push(body["id"].as_str().expect("id").to_string());
    }
    s.post(
        &format!("/api/instances/{}/cancel", ids[4]),
        &s.admin,
        json!({}),
    )
    .await
    .expect(204);

    // Pages of two, following the cursor, give every instance once, oldest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/instances?limit=2".to_string(),
            Some(c) => format!("/api/instances?limit=2&cursor={c}"),
        };
        let page = s.get(&path, &s.admin).await.expect(200);
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|i| i["id"].as_str().expect("id").to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let ids_of = |v: serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["id"].as_str().expect("id").to_string())
            .collect()
    };
    let by_key = s
        .get("/api/instances?business_key=bk-1", &s.admin)
        .await
        .expect(200);
    assert_eq!(ids_of(by_key), vec![ids[1].clone(), ids[3].clone()]);
    let cancelled = s
        .get("/api/instances?state=cancelled&definition=order", &s.admin)
        .await
        .expect(200);
    assert_eq!(ids_of(cancelled), vec![ids[4].clone()]);
    // VALUE read as JSON when it parses (a number), else as a string.
    let by_number = s.get("/api/instances?var.n=3", &s.admin).await.expect(200);
    assert_eq!(ids_of(by_number), vec![ids[3].clone()]);
    let by_text = s
        .get("/api/instances?var.order=A-2", &s.admin)
        .await
        .expect(200);
    assert_eq!(ids_of(by_text), vec![ids[2].clone()]);
    let by_quoted = s
        .get("/api/instances?var.order=%22A-0%22&state=active", &s.admin)
        .await
        .expect(200);
    assert_eq!(ids_of(by_quoted), vec![ids[0].clone()]);
    let none = s
        .get("/api/instances?definition=other", &s.admin)
        .await
        .expect(200);
    assert_eq!(none["items"], json!([]));

    s.get("/api/instances?state=asleep", &s.admin)
        .await
        .expect_error(400, "bad_request");
    s.get("/api/instances?cursor=zzz", &s.admin)
        .await
        .expect_error(400, "bad_request");
    s.get("/api/instances?limit=0", &s.admin)
        .await
        .expect_error(400, "bad_request");
    // Over the maximum is lowered to it, not refused.
    s.get("/api/instances?limit=100000", &s.admin)
        .await
        .expect(200);
}

#[tokio::test]
async fn an_instance_shows_its_position_history_and_diagram() {
    let s = Server::start().await;
    s.deploy("order.yaml", ORDER).await.expect(201);
    let id = s.start_order("A-1").await;
    let detail = s
        .get(&format!("/api/instances/{id}"), &s.admin)
        .await
        .expect(200);
    assert_eq!(detail["state"], "active");
    assert_eq!(detail["definition"], "order");
    assert_eq!(detail["business_key"], "A-1");
    assert_eq!(detail["variables"], json!({"order": "A-1"}));
    assert_eq!(detail["position"].as_array().expect("position").len(), 1);
    assert_eq!(detail["position"][0]["step"], "review");
    assert_eq!(detail["position"][0]["waits_for"]["kind"], "task");

    // Approve: the instance moves on to wait for the payment message.
    let alice = s.user("alice", &["sales"]);
    let task = s.open_task(&id).await;
    s.post(
        &format!("/api/tasks/{id}/{task}/complete"),
        &alice,
        json!({"values": {"decision": "approve", "amount": 5}}),
    )
    .await
    .expect(204);
    let detail = s
        .get(&format!("/api/instances/{id}"), &s.admin)
        .await
        .expect(200);
    assert_eq!(detail["position"][0]["step"], "wait-payment");
    assert_eq!(
        detail["position"][0]["waits_for"],
        json!({"kind": "message", "message": "payment", "key": "A-1"})
    );
    assert_eq!(detail["variables"]["decision"], "approve");

    let svg = s
        .get(&format!("/api/instances/{id}/diagram.svg"), &s.admin)
        .await;
    assert_eq!(svg.status, 200);
    assert_eq!(svg.content_type, "image/svg+xml");
    assert!(
        step_tag(&svg.text, "wait-payment").contains("current"),
        "{}",
        step_tag(&svg.text, "wait-payment")
    );
    assert!(step_tag(&svg.text, "review").contains("done"));
    assert!(
        node_tag(&svg.text, "then-review").contains("done"),
        "the choice after review was passed: {}",
        node_tag(&svg.text, "then-review")
    );
    assert!(!step_tag(&svg.text, "book").contains("current"));

    s.post(&format!("/api/instances/{id}/cancel"), &s.admin, json!({}))
        .await
        .expect(204);
    let detail = s
        .get(&format!("/api/instances/{id}"), &s.admin)
        .await
        .expect(200);
    assert_eq!(detail["state"], "cancelled");
    assert_eq!(detail["position"], json!([]));

    let history = s
        .get(&format!("/api/instances/{id}/history"), &s.admin)
        .await
        .expect(200);
    let lines = history["items"].as_array().expect("items");
    let line = |what: &str| {
        lines
            .iter()
            .find(|l| l["what"] == what)
            .unwrap_or_else(|| panic!("no `{what}` in {lines:?}"))
    };
    assert_eq!(line("started")["actor"], "api:test admin");
    assert_eq!(line("task completed")["actor"], "alice");
    assert_eq!(line("task completed")["step"], "review");
    assert_eq!(line("cancelled")["actor"], "api:test admin");
    // Paged history continues after the cursor.
    let first = s
        .get(&format!("/api/instances/{id}/history?limit=1"), &s.admin)
        .await
        .expect(200);
    let next = first["next_cursor"].as_str().expect("cursor");
    let second = s
        .get(
            &format!("/api/instances/{id}/history?limit=1&cursor={next}"),
            &s.admin,
        )
        .await
        .expect(200);
    assert_eq!(second["items"][0]["seq"], 2);

    let unknown = "0190a5a0-0000-7000-8000-000000000000";
    s.get(&format!("/api/instances/{unknown}"), &s.admin)
        .await
        .expect_error(404, "not_found");
    s.post(
        &format!("/api/instances/{unknown}/cancel"),
        &s.admin,
        json!({}),
    )
    .await
    .expect_error(404, "not_found");
    s.get("/api/instances/not-a-uuid", &s.admin)
        .await
        .expect_error(400, "bad_request");
}

#[tokio::test]
async fn messages_are_delivered_buffered_deduplicated_or_dropped() {
    let s = Server::start().await;
    s.deploy("order.yaml", ORDER).await.expect(201);
    let dropped = s
        .post(
            "/api/messages",
            &s.admin,
            json!({"name": "payment", "key": "X"}),
        )
        .await
        .expect(200);
    assert_eq!(dropped, json!({"outcome": "dropped", "instances": []}));
    let buffered = s
        .post(
            "/api/messages",
            &s.admin,
            json!({"name": "payment", "key": "Y", "id": "m-1", "ttl": "P1D", "variables": {"paid": 12.50}}),
        )
        .await
        .expect(200);
    assert_eq!(buffered["outcome"], "buffered");
    let duplicate = s
        .post(
            "/api/messages",
            &s.admin,
            json!({"name": "payment", "key": "Y", "id": "m-1", "ttl": "PT1H"}),
        )
        .await
        .expect(200);
    assert_eq!(duplicate["outcome"], "duplicate");

    let id = s.start_order("Z").await;
    let task = s.open_task(&id).await;
    s.post(
        &format!("/api/tasks/{id}/{task}/complete"),
        &s.admin,
        json!({"values": {"decision": "approve", "amount": 1}}),
    )
    .await
    .expect(204);
    let delivered = s
        .post(
            "/api/messages",
            &s.admin,
            json!({"name": "payment", "key": "Z"}),
        )
        .await
        .expect(200);
    assert_eq!(
        delivered,
        json!({"outcome": "delivered", "instances": [id]})
    );

    s.post(
        "/api/messages",
        &s.admin,
        json!({"name": "payment", "ttl": "soon"}),
    )
    .await
    .expect_error(400, "bad_request");
    s.post("/api/messages", &s.admin, json!({"key": "no name"}))
        .await
        .expect_error(400, "bad_request");
}

#[tokio::test]
async fn tasks_are_claimed_and_completed_with_checked_form_values() {
    let s = Server::start().await;
    s.deploy("order.yaml", ORDER).await.expect(201);
    let alice = s.user("alice", &["sales"]);
    let bob = s.user("bob", &["warehouse"]);
    let carol = s.user("carol", &["sales"]);
    let id = s.start_order("A-1").await;

    // Offered to the group: alice and carol see it, bob does not.
    let mine = s.get("/api/tasks", &alice).await.expect(200);
    assert_eq!(mine["items"].as_array().expect("items").len(), 1);
    let task = mine["items"][0]["task"].as_u64().expect("task");
    assert_eq!(mine["items"][0]["instance"], id.as_str());
    assert_eq!(mine["items"][0]["title"], "Review order A-1");
    assert_eq!(
        s.get("/api/tasks", &bob).await.expect(200)["items"],
        json!([])
    );
    s.get(&format!("/api/tasks/{id}/{task}"), &bob)
        .await
        .expect_error(403, "forbidden");

    let one = s
        .get(&format!("/api/tasks/{id}/{task}"), &alice)
        .await
        .expect(200);
    assert_eq!(
        one["form"][0],
        json!({"name": "decision", "type": "choice", "required": true, "label": null, "options": ["approve", "reject"]})
    );
    assert_eq!(one["form"][1]["type"], "number");
    assert_eq!(one["form"][1]["max"], "100");

    let claimed = s
        .post(&format!("/api/tasks/{id}/{task}/claim"), &alice, json!({}))
        .await
        .expect(200);
    assert_eq!(claimed["assignee"], "alice");
    // Claimed by alice: carol no longer sees it and cannot take it.
    assert_eq!(
        s.get("/api/tasks", &carol).await.expect(200)["items"],
        json!([])
    );
    // Carol is in the task's group: alice was quicker, a conflict rather than a refusal.
    s.post(&format!("/api/tasks/{id}/{task}/claim"), &carol, json!({}))
        .await
        .expect_error(409, "conflict");
    // An operator sees every task.
    let operator = s.token(Role::Operator);
    assert_eq!(
        s.get("/api/tasks", &operator).await.expect(200)["items"]
            .as_array()
            .expect("items")
            .len(),
        1
    );

    let refused = s
        .post(
            &format!("/api/tasks/{id}/{task}/complete"),
            &alice,
            json!({"values": {"decision": "maybe", "amount": 500}}),
        )
        .await
        .expect_error(422, "invalid_form");
    let fields: Vec<&str> = refused["details"]
        .as_array()
        .expect("field errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    assert_eq!(fields, vec!["decision", "amount"], "{refused}");
    s.post(
        &format!("/api/tasks/{id}/{task}/complete"),
        &alice,
        json!({"values": {"decision": "reject", "amount": 0}}),
    )
    .await
    .expect(204);
    s.post(
        &format!("/api/tasks/{id}/{task}/complete"),
        &alice,
        json!({"values": {"decision": "reject", "amount": 0}}),
    )
    .await
    .expect_error(404, "not_found");
    let detail = s
        .get(&format!("/api/instances/{id}"), &s.admin)
        .await
        .expect(200);
    assert_eq!(detail["state"], "completed");
}

#[tokio::test]
async fn operators_reassign_tasks_and_users_may_not() {
    let s = Server::start().await;
    s.deploy("order.yaml", ORDER).await.expect(201);
    let alice = s.user("alice", &["sales"]);
    let bob = s.user("bob", &["warehouse"]);
    let id = s.start_order("A-1").await;
    let task = s.open_task(&id).await;
    s.post(
        &format!("/api/tasks/{id}/{task}/assign"),
        &alice,
        json!({"assignee": "alice"}),
    )
    .await
    .expect_error(403, "forbidden");
    let operator = s.token(Role::Operator);
    let assigned = s
        .post(
            &format!("/api/tasks/{id}/{task}/assign"),
            &operator,
            json!({"assignee": "bob"}),
        )
        .await
        .expect(200);
    assert_eq!(assigned["assignee"], "bob");
    // Now bob's, though not his group's; alice's group no longer sees it.
    assert_eq!(
        s.get("/api/tasks", &bob).await.expect(200)["items"]
            .as_array()
            .expect("items")
            .len(),
        1
    );
    assert_eq!(
        s.get("/api/tasks", &alice).await.expect(200)["items"],
        json!([])
    );
    let history = s
        .get(&format!("/api/instances/{id}/history"), &s.admin)
        .await
        .expect(200);
    assert!(
        history["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|l| l["what"] == "task assigned"
                && l["actor"] == "api:test"
                && l["detail"] == "to bob"),
        "{history}"
    );
    // Back to the groups.
    let back = s
        .post(
            &format!("/api/tasks/{id}/{task}/assign"),
            &operator,
            json!({"assignee": null}),
        )
        .await
        .expect(200);
    assert_eq!(back["assignee"], serde_json::Value::Null);
}

#[tokio::test]
async fn incidents_show_the_last_error_and_can_be_retried() {
    let s = Server::start().await;
    s.deploy("order.yaml", ORDER).await.expect(201);
    let id = s.order_with_incident("A-1").await;
    let incidents = s.get("/api/incidents", &s.admin).await.expect(200);
    let items = incidents["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{incidents}");
    assert_eq!(items[0]["instance"], id.as_str());
    assert_eq!(items[0]["step"], "book");
    assert!(
        items[0]["error"]
            .as_str()
            .expect("error")
            .contains("ERP down"),
        "{incidents}"
    );
    let number = items[0]["incident"].as_u64().expect("incident");
    let detail = s
        .get(&format!("/api/instances/{id}"), &s.admin)
        .await
        .expect(200);
    assert_eq!(detail["position"][0]["waits_for"]["kind"], "incident");

    s.post(
        &format!("/api/incidents/{id}/{number}/retry"),
        &s.admin,
        json!({}),
    )
    .await
    .expect(204);
    assert_eq!(
        s.get("/api/incidents", &s.admin).await.expect(200)["items"],
        json!([])
    );
    let jobs = s
        .get(&format!("/api/jobs?instance={id}"), &s.admin)
        .await
        .expect(200);
    assert_eq!(jobs["items"][0]["connector"], "erp");
    assert_eq!(jobs["items"][0]["operation"], "create-order");
    assert_eq!(
        s.get("/api/jobs", &s.admin).await.expect(200)["items"]
            .as_array()
            .expect("jobs")
            .len(),
        1
    );
    s.post(
        &format!("/api/incidents/{id}/{number}/retry"),
        &s.admin,
        json!({}),
    )
    .await
    .expect_error(404, "not_found");

    // The retried job may wait for its backoff.
    s.clock.advance(jiff::SignedDuration::from_hours(1));
    assert_eq!(s.run_jobs(|| JobOutcome::Done(Default::default())), 1);
    let detail = s
        .get(&format!("/api/instances/{id}"), &s.admin)
        .await
        .expect(200);
    assert_eq!(detail["state"], "completed");
}

#[tokio::test]
async fn tokens_and_roles_guard_every_call() {
    let s = Server::start().await;
    s.deploy("order.yaml", ORDER).await.expect(201);
    // No token, a malformed header, an unknown token: 401.
    s.call(Method::GET, "/api/definitions", None, None, &[])
        .await
        .expect_error(401, "unauthorized");
    s.call(
        Method::GET,
        "/api/definitions",
        None,
        None,
        &[("authorization", "Basic abc")],
    )
    .await
    .expect_error(401, "unauthorized");
    s.get("/api/definitions", "not-a-token")
        .await
        .expect_error(401, "unauthorized");

    let analyst = s.token(Role::Analyst);
    let operator = s.token(Role::Operator);
    let alice = s.user("alice", &["sales"]);
    // Analysts deploy and read; they do not start or correlate.
    s.deploy("order.yaml", ORDER).await.expect(200);
    s.post(
        "/api/definitions",
        &analyst,
        json!({"file": "o.yaml", "source": ORDER.replace("name: Order", "name: O")}),
    )
    .await
    .expect(201);
    s.get("/api/instances", &analyst).await.expect(200);
    s.post("/api/instances", &analyst, json!({"process": "order"}))
        .await
        .expect_error(403, "forbidden");
    s.post("/api/messages", &analyst, json!({"name": "x"}))
        .await
        .expect_error(403, "forbidden");
    s.get("/api/tasks", &analyst)
        .await
        .expect_error(403, "forbidden");
    // Operators run things but do not deploy or manage users.
    s.post(
        "/api/definitions",
        &operator,
        json!({"file": "o.yaml", "source": ORDER}),
    )
    .await
    .expect_error(403, "forbidden");
    s.post(
        "/api/instances",
        &operator,
        json!({"process": "order", "variables": {"order": "B"}}),
    )
    .await
    .expect(201);
    s.get("/api/users", &operator)
        .await
        .expect_error(403, "forbidden");
    // Users only work on tasks.
    s.get("/api/definitions", &alice)
        .await
        .expect_error(403, "forbidden");
    s.get("/api/instances", &alice)
        .await
        .expect_error(403, "forbidden");
    s.get("/api/incidents", &alice)
        .await
        .expect_error(403, "forbidden");
    s.get("/api/tasks", &alice).await.expect(200);

    // Admins manage users and tokens; a new token acts for its user.
    let created = s
        .call(
            Method::PUT,
            "/api/users/dave",
            Some(&s.admin),
            Some((
                "application/json",
                json!({"groups": ["sales"], "email": "dave@example.com"})
                    .to_string()
                    .into_bytes(),
            )),
            &[],
        )
        .await
        .expect(201);
    assert_eq!(created["groups"], json!(["sales"]));
    let updated = s
        .call(
            Method::PUT,
            "/api/users/dave",
            Some(&s.admin),
            Some((
                "application/json",
                json!({"groups": ["sales", "directors"]})
                    .to_string()
                    .into_bytes(),
            )),
            &[],
        )
        .await
        .expect(200);
    assert_eq!(updated["groups"], json!(["sales", "directors"]));
    let users = s.get("/api/users", &s.admin).await.expect(200);
    let names: Vec<&str> = users["items"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["alice", "dave"]);
    let token = s
        .post(
            "/api/tokens",
            &s.admin,
            json!({"role": "user", "user": "dave", "label": "dave's laptop"}),
        )
        .await
        .expect(201);
    let secret = token["secret"].as_str().expect("secret").to_string();
    assert_eq!(token["token"]["user"], "dave");
    assert_eq!(
        s.get("/api/tasks", &secret).await.expect(200)["items"]
            .as_array()
            .expect("tasks")
            .len(),
        1
    );
    let listed = s.get("/api/tokens", &s.admin).await.expect(200);
    assert!(
        !listed.to_string().contains(&secret),
        "a listed token shows its secret"
    );
    s.post(
        "/api/tokens",
        &s.admin,
        json!({"role": "user", "user": "nobody"}),
    )
    .await
    .expect_error(400, "bad_request");
    s.post("/api/tokens", &s.admin, json!({"role": "emperor"}))
        .await
        .expect_error(400, "bad_request");
    s.post("/api/tokens", &analyst, json!({"role": "admin"}))
        .await
        .expect_error(403, "forbidden");

    let hash = token["token"]["hash"].as_str().expect("hash");
    s.call(
        Method::DELETE,
        &format!("/api/tokens/{hash}"),
        Some(&s.admin),
        None,
        &[],
    )
    .await
    .expect(204);
    s.get("/api/tasks", &secret)
        .await
        .expect_error(401, "unauthorized");
    s.call(Method::DELETE, "/api/users/dave", Some(&s.admin), None, &[])
        .await
        .expect(204);
    s.call(Method::DELETE, "/api/users/dave", Some(&s.admin), None, &[])
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn bodies_over_the_limit_and_malformed_json_get_our_error_shape() {
    let s = Server::with_config(WebConfig {
        max_body_bytes: 2048,
        ..WebConfig::default()
    })
    .await;
    let big = json!({"file": "big.yaml", "source": "#".repeat(4096)});
    s.post("/api/definitions", &s.admin, big)
        .await
        .expect_error(413, "payload_too_large");
    let body = s
        .call(
            Method::POST,
            "/api/instances",
            Some(&s.admin),
            Some(("application/json", b"{\"process\": ".to_vec())),
            &[],
        )
        .await;
    assert!(body.content_type.starts_with("application/json"));
    body.expect_error(400, "bad_request");
    s.post("/api/instances", &s.admin, json!({"variables": {}}))
        .await
        .expect_error(400, "bad_request");
    s.get("/api/nothing-here", &s.admin)
        .await
        .expect_error(404, "not_found");
    s.call(
        Method::DELETE,
        "/api/definitions",
        Some(&s.admin),
        None,
        &[],
    )
    .await
    .expect_error(405, "method_not_allowed");
}

#[tokio::test]
async fn health_and_metrics_are_open_and_metrics_can_be_closed() {
    let s = Server::start().await;
    s.deploy("order.yaml", ORDER).await.expect(201);
    let id = s.start_order("A-1").await;
    s.get(&format!("/api/instances/{id}"), &s.admin)
        .await
        .expect(200);
    s.order_with_incident("A-2").await;

    let health = s
        .call(Method::GET, "/healthz", None, None, &[])
        .await
        .expect(200);
    assert_eq!(health, json!({"status": "ok"}));
    let metrics = s.call(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.content_type.starts_with("text/plain"));
    let text = metrics.text;
    // By route template, never by raw URL.
    assert!(text.contains("route=\"/api/instances/{id}\""), "{text}");
    assert!(!text.contains(&id), "a raw URL reached the metrics");
    assert!(text.contains("ciclo_http_requests_total"), "{text}");
    assert!(
        text.contains("ciclo_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("ciclo_instances_started_total{definition=\"order\"}"),
        "{text}"
    );
    assert!(text.contains("ciclo_jobs_total"), "{text}");
    assert!(text.contains("ciclo_step_seconds_bucket"), "{text}");
    assert!(text.contains("ciclo_store_commit_seconds_bucket"), "{text}");
    assert!(text.contains("ciclo_incidents_open"), "{text}");
    assert!(text.contains("ciclo_timers_pending"), "{text}");

    let closed = Server::with_config(WebConfig {
        public_metrics: false,
        ..WebConfig::default()
    })
    .await;
    closed
        .call(Method::GET, "/metrics", None, None, &[])
        .await
        .expect_error(401, "unauthorized");
    let ok = closed
        .call(Method::GET, "/metrics", Some(&closed.admin), None, &[])
        .await;
    assert_eq!(ok.status, 200);
    closed
        .call(Method::GET, "/healthz", None, None, &[])
        .await
        .expect(200);
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let s = Server::start().await;
    let response = reqwest::get(format!("{}/healthz", s.base))
        .await
        .expect("get");
    assert!(response.headers().get("x-request-id").is_some());
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/healthz", s.base))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("get");
    assert_eq!(response.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn external_workers_fetch_lock_and_answer_over_http() {
    let s = Server::start().await;
    let worker = s.token(Role::Worker);
    let user = s.user("ursula", &[]);
    let analyst = s.token(Role::Analyst);
    let fetch = json!({"worker": "w1", "types": ["score-lead"], "lease_ms": 60000});
    // Workers take jobs and nothing else; users and analysts take no jobs.
    s.get("/api/instances", &worker)
        .await
        .expect_error(403, "forbidden");
    s.get("/api/definitions", &worker)
        .await
        .expect_error(403, "forbidden");
    for other in [&user, &analyst] {
        s.post("/api/external-jobs/fetch-and-lock", other, fetch.clone())
            .await
            .expect_error(403, "forbidden");
    }
    assert_eq!(
        s.post("/api/external-jobs/fetch-and-lock", &worker, fetch.clone())
            .await
            .expect(200),
        json!([])
    );
    // Bad requests: 400 in the one error shape.
    for bad in [
        json!({"worker": "w1", "types": ["score-lead"], "lease_ms": 10}),
        json!({"worker": "w1", "types": ["score-lead"], "max_jobs": 0}),
        json!({"worker": "w1", "types": ["score-lead"], "max_jobs": 101}),
        json!({"worker": "w1", "types": ["score-lead"], "wait_ms": 30001}),
        json!({"worker": "w1", "types": ["bad type"]}),
        json!({"worker": "", "types": ["score-lead"]}),
        json!({"worker": "w1", "types": ["score-lead"], "colour": "red"}),
    ] {
        s.post("/api/external-jobs/fetch-and-lock", &worker, bad)
            .await
            .expect_error(400, "bad_request");
    }

    let instance = s.start_external().await;
    let jobs = s
        .post("/api/external-jobs/fetch-and-lock", &worker, fetch.clone())
        .await
        .expect(200);
    let job = &jobs[0];
    assert_eq!(job["type"], "score-lead");
    assert_eq!(job["instance"], instance.as_str());
    assert_eq!(job["process"], "score");
    assert_eq!(job["step"], "score");
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["variables"], json!({"email": "ada@example.com"}));
    assert_eq!(job["lease_expires_at"], "2027-01-04T09:01:00Z");
    let id = job["id"].as_str().expect("id");
    let token = job["lease_token"].as_str().expect("token");
    let path = |what: &str| format!("/api/external-jobs/{id}/{what}");
    let listed = s.get("/api/jobs", &s.admin).await.expect(200);
    assert_eq!(listed["items"][0]["connector"], "external");
    assert_eq!(listed["items"][0]["locked_by"], "w1");
    assert_eq!(listed["items"][0]["locked_until"], "2027-01-04T09:01:00Z");

    // Someone else's token, a bad id, an unknown job, inexact numbers.
    s.post(
        &path("complete"),
        &worker,
        json!({"worker": "w2", "lease_token": token}),
    )
    .await
    .expect_error(409, "lease_not_held");
    s.post(
        "/api/external-jobs/nonsense/complete",
        &worker,
        json!({"worker": "w1", "lease_token": token}),
    )
    .await
    .expect_error(400, "bad_request");
    s.post(
        &format!("/api/external-jobs/{instance}_999/complete"),
        &worker,
        json!({"worker": "w1", "lease_token": token}),
    )
    .await
    .expect_error(404, "job_not_found");
    s.call(
        Method::POST,
        &path("complete"),
        Some(&worker),
        Some((
            "application/json",
            format!(r#"{{"worker":"w1","lease_token":"{token}","variables":{{"score":1e400}}}}"#)
                .into_bytes(),
        )),
        &[],
    )
    .await
    .expect_error(400, "bad_request");

    let extended = s
        .post(
            &path("extend"),
            &worker,
            json!({"worker": "w1", "lease_token": token, "lease_ms": 120000}),
        )
        .await
        .expect(200);
    assert_eq!(extended["lease_expires_at"], "2027-01-04T09:02:00Z");
    s.clock.advance(jiff::SignedDuration::from_secs(90));
    s.post(
        &path("complete"),
        &worker,
        json!({"worker": "w1", "lease_token": token, "variables": {"score": 0.1}}),
    )
    .await
    .expect(204);
    let detail = s
        .get(&format!("/api/instances/{instance}"), &s.admin)
        .await
        .expect(200);
    assert_eq!(detail["state"], "completed");
    assert_eq!(detail["variables"]["score"], json!(0.1));
    s.post(
        &path("complete"),
        &worker,
        json!({"worker": "w1", "lease_token": token}),
    )
    .await
    .expect_error(409, "lease_not_held");

    // A lease that ran out: lease_expired. A business error takes the error path.
    let (id, token) = s.locked_external("w1", &worker).await;
    s.clock.advance(jiff::SignedDuration::from_secs(61));
    s.post(
        &format!("/api/external-jobs/{id}/fail"),
        &worker,
        json!({"worker": "w1", "lease_token": token, "message": "down"}),
    )
    .await
    .expect_error(409, "lease_expired");
    let again = s
        .post("/api/external-jobs/fetch-and-lock", &worker, fetch.clone())
        .await
        .expect(200);
    assert_eq!(again[0]["id"], id.as_str(), "the lapsed job goes out again");
    let token = again[0]["lease_token"].as_str().expect("token");
    s.post(
        &format!("/api/external-jobs/{id}/error"),
        &worker,
        json!({"worker": "w1", "lease_token": token, "code": "BAD_LEAD", "message": "no company"}),
    )
    .await
    .expect(204);
    let instance = id.rsplit_once('_').expect("id").0;
    let detail = s
        .get(&format!("/api/instances/{instance}"), &s.admin)
        .await
        .expect(200);
    assert_eq!(detail["variables"]["reason"], "no company");
}

#[tokio::test]
async fn a_waiting_fetch_answers_when_a_job_appears() {
    let s = Server::start().await;
    let worker = s.token(Role::Worker);
    s.deploy("score.yaml", SCORE).await.expect(201);
    let waiting = {
        let (client, base, worker) = (s.client.clone(), s.base.clone(), worker.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/api/external-jobs/fetch-and-lock"))
                .bearer_auth(worker)
                .json(&json!({"worker": "w1", "types": ["score-lead"], "wait_ms": 30000}))
                .send()
                .await
                .expect("send")
                .json::<Value>()
                .await
                .expect("json")
        })
    };
    let started = std::time::Instant::now();
    let instance = s.start_external().await;
    let jobs = waiting.await.expect("fetch");
    assert_eq!(jobs[0]["instance"], instance.as_str());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "answered when the job appeared, not at the end of the wait"
    );
    // Nothing to take: a short wait answers [] when it is over.
    let none = s
        .post(
            "/api/external-jobs/fetch-and-lock",
            &worker,
            json!({"worker": "w1", "types": ["score-lead"], "wait_ms": 300}),
        )
        .await
        .expect(200);
    assert_eq!(none, json!([]));
}

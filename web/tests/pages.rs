//! The pages over plain HTTP, without a browser: sign-in and its cookie, CSRF, lockout,
//! sign-out, who may see and complete which task, the analyst's read-only cockpit, security
//! headers, and escaping of text from variables.

mod common;

use std::collections::BTreeMap;

use ciclo_engine::store::Role;
use common::{ORDER, Server};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;

const XSS: &str = "<script>alert(1)</script> & Co";
const XSS_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co";
const PASSWORD: &str = "a long enough password";

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

    async fn sign_in(&mut self, name: &str, password: &str) -> Page {
        let form = self.get("/sign-in").await;
        assert_eq!(form.status, 200);
        let csrf = form.csrf();
        self.post(
            "/sign-in",
            &[("_csrf", &csrf), ("name", name), ("password", password)],
        )
        .await
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

/// A user with groups and a password.
async fn person(s: &Server, name: &str, groups: &[&str]) {
    s.user(name, groups);
    s.call(
        Method::PUT,
        &format!("/api/users/{name}/password"),
        Some(&s.admin),
        Some((
            "application/json",
            json!({"password": PASSWORD}).to_string().into_bytes(),
        )),
        &[],
    )
    .await
    .expect(204);
}

async fn signed_in(s: &Server, name: &str, groups: &[&str]) -> Browser {
    person(s, name, groups).await;
    let mut browser = Browser::new(s);
    let page = browser.sign_in(name, PASSWORD).await;
    assert_eq!(page.status, 303, "{}", page.text);
    assert_eq!(page.location(), "/");
    browser
}

async fn order_task(s: &Server, order: &str) -> (String, u64) {
    s.deploy("order.yaml", ORDER).await;
    let id = s.start_order(order).await;
    let task = s.open_task(&id).await;
    (id, task)
}

#[tokio::test]
async fn passwords_are_set_by_admins_and_checked() {
    let s = Server::start().await;
    s.user("anna", &["sales"]);
    let put = |name: &str, password: &str| {
        let body = json!({"password": password}).to_string().into_bytes();
        let path = format!("/api/users/{name}/password");
        let s = &s;
        async move {
            s.call(
                Method::PUT,
                &path,
                Some(&s.admin),
                Some(("application/json", body)),
                &[],
            )
            .await
        }
    };
    put("anna", "short").await.expect_error(400, "bad_request");
    put("nobody", PASSWORD).await.expect_error(404, "not_found");
    let user_token = s.token(Role::User);
    s.call(
        Method::PUT,
        "/api/users/anna/password",
        Some(&user_token),
        Some((
            "application/json",
            json!({"password": PASSWORD}).to_string().into_bytes(),
        )),
        &[],
    )
    .await
    .expect_error(403, "forbidden");

    // No password yet: cannot sign in, with the same message as a wrong password.
    let mut browser = Browser::new(&s);
    let page = browser.sign_in("anna", PASSWORD).await;
    assert_eq!(page.status, 401);
    assert!(page.text.contains("Wrong name or password."));

    put("anna", PASSWORD).await.expect(204);
    let stored = s.engine.user("anna").unwrap().unwrap();
    assert!(stored.password_hash.unwrap().starts_with("$argon2id$"));
    let page = browser.sign_in("anna", "wrong password!").await;
    assert_eq!(page.status, 401);
    assert!(page.text.contains("Wrong name or password."));
    let page = browser.sign_in("nobody", PASSWORD).await;
    assert_eq!(page.status, 401);
    assert!(page.text.contains("Wrong name or password."));

    let page = browser.sign_in("anna", PASSWORD).await;
    assert_eq!(page.status, 303);
    let cookie = page
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("ciclo_session="))
        .expect("session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    // The store keeps the id's hash, not the id.
    let id = &browser.cookies["ciclo_session"];
    assert!(s.engine.session(id).unwrap().is_none());
    assert!(
        s.engine
            .session(&ciclo_engine::auth::hash_secret(id))
            .unwrap()
            .is_some()
    );

    let inbox = browser.get("/").await;
    assert_eq!(inbox.status, 200);
    let header = |name: &str| {
        inbox
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    assert_eq!(
        header("content-security-policy"),
        "default-src 'self'; img-src 'self' data:; style-src 'self'"
    );
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("referrer-policy"), "same-origin");
    let css = browser.get("/static/ciclo.css").await;
    assert_eq!(css.status, 200);
    assert!(css.text.contains("@media"));
}

#[tokio::test]
async fn not_signed_in_goes_to_the_sign_in_page_and_sign_out_ends_the_session() {
    let s = Server::start().await;
    let mut anonymous = Browser::new(&s);
    let page = anonymous.get("/").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/sign-in");

    let mut browser = signed_in(&s, "anna", &["sales"]).await;
    let old_cookie = browser.cookies["ciclo_session"].clone();
    let inbox = browser.get("/").await;
    assert_eq!(inbox.status, 200);
    // Sign-out is a form with the CSRF token, too.
    let refused = browser.post("/sign-out", &[]).await;
    assert_eq!(refused.status, 403);
    let out = browser.post("/sign-out", &[("_csrf", &inbox.csrf())]).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location(), "/sign-in");
    // The old cookie no longer works, even if someone kept it.
    browser.cookies.insert("ciclo_session".into(), old_cookie);
    let page = browser.get("/").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/sign-in");
}

#[tokio::test]
async fn the_sign_in_form_needs_its_csrf_cookie() {
    let s = Server::start().await;
    person(&s, "anna", &["sales"]).await;
    let mut browser = Browser::new(&s);
    let form = browser.get("/sign-in").await;
    let csrf = form.csrf();
    browser.cookies.clear();
    let page = browser
        .post(
            "/sign-in",
            &[("_csrf", &csrf), ("name", "anna"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, 403);
    assert!(!browser.cookies.contains_key("ciclo_session"));
}

#[tokio::test]
async fn five_failures_lock_the_name_for_fifteen_minutes() {
    let s = Server::start().await;
    person(&s, "anna", &["sales"]).await;
    let mut browser = Browser::new(&s);
    for _ in 0..5 {
        let page = browser.sign_in("anna", "not the password").await;
        assert_eq!(page.status, 401);
    }
    // Now even the right password is refused, and the page says the account is locked.
    let page = browser.sign_in("anna", PASSWORD).await;
    assert_eq!(page.status, 429);
    assert!(page.text.contains("locked"), "{}", page.text);
    assert!(!page.text.contains("Wrong name or password"));
    let wrong = browser.sign_in("anna", "not the password").await;
    assert_eq!(wrong.text, page.text.replace(PASSWORD, "not the password"));
    // Another name is not locked.
    person(&s, "bruno", &["sales"]).await;
    assert_eq!(browser.sign_in("bruno", PASSWORD).await.status, 303);
    // After 15 minutes, the name is free again.
    s.clock.advance(jiff::SignedDuration::from_mins(16));
    assert_eq!(browser.sign_in("anna", PASSWORD).await.status, 303);
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_change_nothing() {
    let s = Server::start().await;
    let (id, task) = order_task(&s, "A-1").await;
    let mut browser = signed_in(&s, "anna", &["sales"]).await;
    let page = browser.get(&format!("/tasks/{id}/{task}")).await;
    assert_eq!(page.status, 200);
    let csrf = page.csrf();
    let complete = format!("/tasks/{id}/{task}/complete");
    let values = [("decision", "approve"), ("amount", "10")];
    let without = browser.post(&complete, &values).await;
    assert_eq!(without.status, 403);
    let wrong = browser
        .post(
            &complete,
            &[("_csrf", "0".repeat(64).as_str()), values[0], values[1]],
        )
        .await;
    assert_eq!(wrong.status, 403);
    let claim = browser
        .post(&format!("/tasks/{id}/{task}/claim"), &[])
        .await;
    assert_eq!(claim.status, 403);
    let record = s.engine.store().task(id.parse().unwrap(), task).unwrap();
    assert_eq!(record.expect("still open").assignee, None);

    // From another site, even with the token: refused.
    let foreign = s
        .client
        .post(format!("{}{complete}", s.base))
        .header(
            "cookie",
            format!("ciclo_session={}", browser.cookies["ciclo_session"]),
        )
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_csrf={csrf}&decision=approve&amount=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert!(
        s.engine
            .store()
            .task(id.parse().unwrap(), task)
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_bad_value_is_shown_next_to_its_field_then_a_good_one_completes() {
    let s = Server::start().await;
    let (id, task) = order_task(&s, "A-2").await;
    let mut browser = signed_in(&s, "anna", &["sales"]).await;
    let inbox = browser.get("/").await;
    assert!(
        inbox.text.contains(&format!("/tasks/{id}/{task}")),
        "{}",
        inbox.text
    );
    let page = browser.get(&format!("/tasks/{id}/{task}")).await;
    let csrf = page.csrf();
    // Claim first: a group task.
    let claimed = browser
        .post(&format!("/tasks/{id}/{task}/claim"), &[("_csrf", &csrf)])
        .await;
    assert_eq!(claimed.status, 303);
    let record = s
        .engine
        .store()
        .task(id.parse().unwrap(), task)
        .unwrap()
        .unwrap();
    assert_eq!(record.assignee.as_deref(), Some("anna"));

    let complete = format!("/tasks/{id}/{task}/complete");
    let bad = browser
        .post(
            &complete,
            &[("_csrf", &csrf), ("decision", "approve"), ("amount", "500")],
        )
        .await;
    assert_eq!(bad.status, 422);
    // The error is inside the amount field's block, and the value entered is kept.
    let field = &bad.text[bad.text.find("id=\"field-amount\"").expect("amount field")..];
    let field = &field[..field.find("</div>").unwrap()];
    assert!(field.contains("must be at most 100"), "{field}");
    assert!(field.contains("value=\"500\""), "{field}");
    assert!(bad.text.contains("value=\"approve\" checked"));

    let good = browser
        .post(
            &complete,
            &[("_csrf", &csrf), ("decision", "approve"), ("amount", "50")],
        )
        .await;
    assert_eq!(good.status, 303, "{}", good.text);
    assert_eq!(good.location(), "/?done=1");
    let detail = s
        .get(&format!("/api/instances/{id}"), &s.admin)
        .await
        .expect(200);
    assert_eq!(detail["position"][0]["step"], "wait-payment");
    assert_eq!(detail["variables"]["amount"], json!(50));
    let history = s
        .get(&format!("/api/instances/{id}/history"), &s.admin)
        .await
        .expect(200);
    assert!(history.to_string().contains("\"actor\":\"anna\""));
}

#[tokio::test]
async fn nobody_opens_or_completes_someone_elses_task() {
    let s = Server::start().await;
    let (id, task) = order_task(&s, "A-3").await;
    let mut bruno = signed_in(&s, "bruno", &["purchasing"]).await;
    let inbox = bruno.get("/").await;
    assert!(!inbox.text.contains(&format!("/tasks/{id}/{task}")));
    let page = bruno.get(&format!("/tasks/{id}/{task}")).await;
    assert_eq!(page.status, 403);
    let csrf = inbox.csrf();
    let post = bruno
        .post(
            &format!("/tasks/{id}/{task}/complete"),
            &[("_csrf", &csrf), ("decision", "approve"), ("amount", "1")],
        )
        .await;
    assert_eq!(post.status, 403);
    assert!(
        s.engine
            .store()
            .task(id.parse().unwrap(), task)
            .unwrap()
            .is_some()
    );
    let missing = bruno.get(&format!("/tasks/{id}/999")).await;
    assert_eq!(missing.status, 404);
    // A plain user has no cockpit.
    assert_eq!(bruno.get("/cockpit/instances").await.status, 403);
}

#[tokio::test]
async fn analysts_read_the_cockpit_but_do_not_retry_or_cancel() {
    let s = Server::start().await;
    s.deploy("order.yaml", ORDER).await;
    let id = s.order_with_incident("A-4").await;
    let mut analyst = signed_in(&s, "ada", &["ciclo-analysts"]).await;
    for path in [
        "/cockpit/definitions".to_string(),
        "/cockpit/definitions/order".to_string(),
        "/cockpit/instances".to_string(),
        format!("/cockpit/instances/{id}"),
        "/cockpit/incidents".to_string(),
        "/cockpit/timers".to_string(),
    ] {
        let page = analyst.get(&path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.text);
        assert!(!page.text.contains("/retry\""), "{path} offers a retry");
        assert!(!page.text.contains("/cancel\""), "{path} offers a cancel");
    }
    let incidents = s.engine.store().incidents().unwrap();
    assert_eq!(incidents.len(), 1);
    let retry = format!("/cockpit/incidents/{id}/{}/retry", incidents[0].incident);
    assert_eq!(analyst.get(&retry).await.status, 403);
    let csrf = analyst.get("/cockpit/incidents").await.csrf();
    assert_eq!(analyst.post(&retry, &[("_csrf", &csrf)]).await.status, 403);
    let cancel = format!("/cockpit/instances/{id}/cancel");
    assert_eq!(analyst.post(&cancel, &[("_csrf", &csrf)]).await.status, 403);
    assert_eq!(s.engine.store().incidents().unwrap().len(), 1);

    // An operator sees the buttons, confirms, and the incident is retried.
    let mut operator = signed_in(&s, "otto", &["ciclo-operators"]).await;
    let list = operator.get("/cockpit/incidents").await;
    assert!(list.text.contains(&retry), "{}", list.text);
    let confirm = operator.get(&retry).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.text.contains("ERP down"));
    let done = operator.post(&retry, &[("_csrf", &confirm.csrf())]).await;
    assert_eq!(done.status, 303);
    assert!(s.engine.store().incidents().unwrap().is_empty());
    let page = operator.get(&format!("/cockpit/instances/{id}")).await;
    assert!(page.text.contains(&cancel));
    let confirm = operator.get(&cancel).await;
    assert_eq!(confirm.status, 200);
    let done = operator.post(&cancel, &[("_csrf", &confirm.csrf())]).await;
    assert_eq!(done.status, 303);
    let detail = s
        .get(&format!("/api/instances/{id}"), &s.admin)
        .await
        .expect(200);
    assert_eq!(detail["state"], "cancelled");
}

#[tokio::test]
async fn text_from_variables_is_shown_as_text_on_every_page() {
    let s = Server::start().await;
    let (id, task) = order_task(&s, XSS).await;
    let mut browser = signed_in(&s, "anna", &["sales", "ciclo-admins"]).await;
    for path in [
        "/".to_string(),
        format!("/tasks/{id}/{task}"),
        "/cockpit/instances".to_string(),
        format!("/cockpit/instances/{id}"),
        format!("/cockpit/instances/{id}/cancel"),
    ] {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.text.contains(XSS_ESCAPED), "{path}: {}", page.text);
        assert!(!page.text.contains("<script>"), "{path}");
    }
}

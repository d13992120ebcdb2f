//! A fake ERP over HTTP JSON, for tests and demos (`ciclo fake-erp`): it stands in for the far
//! side of the ERP connector, so that what a real ERP must do for us is written down and tested.
//!
//! - `POST /orders` stores the JSON body and answers `201 {"order_number": "ERP-000001", ...}`.
//! - Every request must carry `Idempotency-Key`; a repeated key gets the first answer again
//!   (same status and body) and nothing is stored twice. This is the contract the connector
//!   relies on when the engine retries a job with the same key.
//! - A blocked customer (`customer.blocked == true`, or a customer code listed with
//!   `--blocked-customer`) gets `422 {"code": "CUSTOMER_BLOCKED", "message": ...}`: a business
//!   answer, not a failure.
//! - It can be told to fail the next N calls (503) or to answer slowly: at start, or through
//!   `POST /_control {"fail_next": N, "delay_ms": M, "blocked_customers": [...]}`.
//! - `GET /orders` lists what it received: the orders, and every call with its key and status.
//!
//! Everything is kept in memory; the fake forgets all when it stops.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

/// How the fake behaves when it starts.
#[derive(Clone, Debug, Default)]
pub struct FakeErpOptions {
    /// The next this many calls of `POST /orders` fail with 503 before doing anything.
    pub fail_next: u32,
    /// Every call of `POST /orders` waits this long before answering.
    pub delay: Duration,
    /// Customer codes whose orders are refused with `CUSTOMER_BLOCKED`.
    pub blocked_customers: BTreeSet<String>,
}

/// The fake's state, shared by its handlers.
#[derive(Clone, Default)]
pub struct FakeErp {
    state: Arc<Mutex<Ledger>>,
}

#[derive(Default)]
struct Ledger {
    options: FakeErpOptions,
    /// The first answer given to each idempotency key (failures are not answers: a retry after
    /// a 503 must be able to succeed).
    answers: HashMap<String, (u16, Value)>,
    orders: Vec<Value>,
    calls: Vec<Value>,
}

/// What `POST /_control` accepts; each field present replaces the current setting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    fail_next: Option<u32>,
    delay_ms: Option<u64>,
    blocked_customers: Option<BTreeSet<String>>,
}

impl FakeErp {
    pub fn new(options: FakeErpOptions) -> FakeErp {
        FakeErp {
            state: Arc::new(Mutex::new(Ledger {
                options,
                ..Default::default()
            })),
        }
    }

    /// The fake's routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/orders", post(create_order).get(list_orders))
            .route("/_control", post(control))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped or aborted.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router().into_make_service()).await
    }

    /// Binds `addr` (port 0 picks a free one), serves in the background, and returns the
    /// address it listens on with the task (abort it to stop).
    pub async fn spawn(
        self,
        addr: &str,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(error) = self.serve(listener).await {
                tracing::error!(%error, "the fake ERP stopped");
            }
        });
        Ok((local, task))
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A handler that panicked mid-update leaves nothing half-written that matters here.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn answer(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

async fn create_order(
    State(erp): State<FakeErp>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let delay = erp.ledger().options.delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut ledger = erp.ledger();
    let (status, reply) = decide(&mut ledger, key.as_deref(), &body);
    ledger.calls.push(json!({
        "idempotency_key": key,
        "status": status,
    }));
    answer(status, reply)
}

/// The answer to one `POST /orders`, with the ledger updated.
fn decide(ledger: &mut Ledger, key: Option<&str>, body: &[u8]) -> (u16, Value) {
    let Some(key) = key.filter(|k| !k.trim().is_empty()) else {
        return (
            400,
            json!({"code": "IDEMPOTENCY_KEY_MISSING", "message": "send an Idempotency-Key header"}),
        );
    };
    if ledger.options.fail_next > 0 {
        ledger.options.fail_next -= 1;
        return (
            503,
            json!({"code": "UNAVAILABLE", "message": "the fake ERP was told to fail this call"}),
        );
    }
    if let Some(first) = ledger.answers.get(key) {
        return first.clone();
    }
    let order: Value = match serde_json::from_slice(body) {
        Ok(order @ Value::Object(_)) => order,
        Ok(_) => {
            return (
                400,
                json!({"code": "BAD_ORDER", "message": "the order must be a JSON object"}),
            );
        }
        Err(e) => {
            return (
                400,
                json!({"code": "BAD_ORDER", "message": format!("the order is not JSON: {e}")}),
            );
        }
    };
    let reply = match blocked_customer(&ledger.options, &order) {
        Some(customer) => (
            422,
            json!({
                "code": "CUSTOMER_BLOCKED",
                "message": format!("customer {customer} is blocked"),
            }),
        ),
        None => {
            let number = format!("ERP-{:06}", ledger.orders.len() + 1);
            ledger.orders.push(json!({
                "order_number": number,
                "idempotency_key": key,
                "order": order,
            }));
            (201, json!({"order_number": number, "status": "accepted"}))
        }
    };
    ledger.answers.insert(key.to_string(), reply.clone());
    reply
}

/// The customer's name when the order must be refused: `customer.blocked == true`, or a
/// customer code (`customer` as text, or `customer.code`) on the blocked list.
fn blocked_customer(options: &FakeErpOptions, order: &Value) -> Option<String> {
    let customer = order.get("customer")?;
    let code = match customer {
        Value::String(code) => Some(code.clone()),
        Value::Object(map) => map.get("code").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    let flagged = customer.get("blocked") == Some(&Value::Bool(true));
    let listed = code
        .as_ref()
        .is_some_and(|c| options.blocked_customers.contains(c));
    (flagged || listed).then(|| code.unwrap_or_else(|| "(no code)".into()))
}

async fn list_orders(State(erp): State<FakeErp>) -> Json<Value> {
    let ledger = erp.ledger();
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    for call in &ledger.calls {
        if let Some(key) = call["idempotency_key"].as_str() {
            *per_key.entry(key).or_default() += 1;
        }
    }
    let orders: Vec<Value> = ledger
        .orders
        .iter()
        .map(|o| {
            let mut o = o.clone();
            let calls = o["idempotency_key"]
                .as_str()
                .and_then(|k| per_key.get(k))
                .copied()
                .unwrap_or(0);
            o["calls"] = json!(calls);
            o
        })
        .collect();
    Json(json!({ "orders": orders, "calls": ledger.calls }))
}

async fn control(State(erp): State<FakeErp>, body: axum::body::Bytes) -> Response {
    let control: Control = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return answer(
                400,
                json!({"code": "BAD_CONTROL", "message": format!("expected {{\"fail_next\": N, \"delay_ms\": M, \"blocked_customers\": [..]}}: {e}")}),
            );
        }
    };
    let mut ledger = erp.ledger();
    if let Some(n) = control.fail_next {
        ledger.options.fail_next = n;
    }
    if let Some(ms) = control.delay_ms {
        ledger.options.delay = Duration::from_millis(ms);
    }
    if let Some(list) = control.blocked_customers {
        ledger.options.blocked_customers = list;
    }
    answer(
        200,
        json!({
            "fail_next": ledger.options.fail_next,
            "delay_ms": ledger.options.delay.as_millis() as u64,
            "blocked_customers": ledger.options.blocked_customers,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(options: FakeErpOptions) -> Ledger {
        Ledger {
            options,
            ..Default::default()
        }
    }

    #[test]
    fn a_repeated_key_gets_the_first_answer_and_stores_once() {
        let mut l = ledger(FakeErpOptions::default());
        let first = decide(&mut l, Some("k1"), br#"{"customer": "C1"}"#);
        let again = decide(
            &mut l,
            Some("k1"),
            br#"{"customer": "C1", "changed": true}"#,
        );
        assert_eq!(first, again);
        assert_eq!(first.0, 201);
        assert_eq!(first.1["order_number"], "ERP-000001");
        assert_eq!(l.orders.len(), 1);
    }

    #[test]
    fn failures_are_not_remembered_answers() {
        let mut l = ledger(FakeErpOptions {
            fail_next: 2,
            ..Default::default()
        });
        assert_eq!(decide(&mut l, Some("k"), b"{}").0, 503);
        assert_eq!(decide(&mut l, Some("k"), b"{}").0, 503);
        assert_eq!(decide(&mut l, Some("k"), b"{}").0, 201);
        assert_eq!(l.orders.len(), 1);
    }

    #[test]
    fn blocked_customers_get_a_business_error() {
        let mut l = ledger(FakeErpOptions {
            blocked_customers: ["C9".to_string()].into(),
            ..Default::default()
        });
        let (status, body) = decide(&mut l, Some("a"), br#"{"customer": {"code": "C9"}}"#);
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("CUSTOMER_BLOCKED"))
        );
        let (status, _) = decide(&mut l, Some("b"), br#"{"customer": {"blocked": true}}"#);
        assert_eq!(status, 422);
        assert!(l.orders.is_empty());
    }

    #[test]
    fn a_call_without_key_or_json_is_refused() {
        let mut l = ledger(FakeErpOptions::default());
        assert_eq!(decide(&mut l, None, b"{}").0, 400);
        assert_eq!(decide(&mut l, Some("k"), b"not json").0, 400);
        assert!(l.orders.is_empty());
    }
}

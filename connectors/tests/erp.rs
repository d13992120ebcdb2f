//! The ERP connector against the fake ERP, both real HTTP on 127.0.0.1: retries keep their
//! idempotency key, business errors and failures are told apart, timeouts and refused
//! connections are failures, numbers keep every digit.

use std::path::Path;
use std::time::Duration;

use ciclo_connectors::{ErpConfig, ErpConnector, FakeErp, FakeErpOptions, Secrets};
use ciclo_engine::runtime::{Connector, JobOutcome, JobRequest};
use ciclo_engine::{Value, Vars};
use serde_json::{Value as Json, json};

/// The mapping shipped in `processes/connectors/erp.yaml`: the tests check the real file.
fn shipped() -> ErpConfig {
    ErpConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../processes/connectors/erp.yaml"))
        .expect("the shipped mapping loads")
}

fn secrets() -> Secrets {
    Secrets::from_pairs([("ERP_TOKEN".to_string(), "test-token".to_string())])
}

async fn fake(options: FakeErpOptions) -> String {
    let (addr, _task) = FakeErp::new(options)
        .spawn("127.0.0.1:0")
        .await
        .expect("the fake ERP listens");
    format!("http://{addr}")
}

fn request(key: &str, attempt: u32, order: Json) -> JobRequest {
    let mut input = Vars::new();
    input.insert(
        "order".into(),
        Value::from_json(order).expect("exact numbers"),
    );
    JobRequest {
        instance: uuid::Uuid::nil(),
        job: 1,
        attempt,
        operation: "create-order".into(),
        key: key.into(),
        input,
    }
}

fn order(customer: Json) -> Json {
    json!({
        "number": "SO-1",
        "customer": customer,
        "lines": [{"sku": "A-1", "qty": 2, "price": 19.99}],
    })
}

async fn received(url: &str) -> Json {
    reqwest::get(format!("{url}/orders"))
        .await
        .expect("GET /orders")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test]
async fn failures_are_retried_with_the_same_key_and_store_one_order() {
    let url = fake(FakeErpOptions {
        fail_next: 2,
        ..Default::default()
    })
    .await;
    let erp = ErpConnector::new(shipped(), &url, secrets()).unwrap();
    let customer = json!({"code": "C1", "name": "Rossi SpA"});
    for attempt in 1..=2 {
        let outcome = erp
            .call(request("inst-1-job-1", attempt, order(customer.clone())))
            .await;
        assert!(
            matches!(&outcome, JobOutcome::Failed(e) if e.contains("503")),
            "{outcome:?}"
        );
    }
    let outcome = erp
        .call(request("inst-1-job-1", 3, order(customer.clone())))
        .await;
    let mut expected = Vars::new();
    expected.insert("number".into(), Value::from("ERP-000001"));
    assert_eq!(outcome, JobOutcome::Done(expected.clone()));
    // A fourth attempt (say, after a crash before the answer was recorded) gets the same answer.
    let again = erp.call(request("inst-1-job-1", 4, order(customer))).await;
    assert_eq!(again, JobOutcome::Done(expected));

    let seen = received(&url).await;
    let orders = seen["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{seen}");
    assert_eq!(orders[0]["idempotency_key"], "inst-1-job-1");
    assert_eq!(orders[0]["calls"], 4);
    assert_eq!(orders[0]["order"]["reference"], "SO-1");
    assert_eq!(orders[0]["order"]["currency"], "EUR");
    let statuses: Vec<_> = seen["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [503, 503, 201, 201]);
}

#[tokio::test]
async fn a_blocked_customer_is_a_business_error_with_the_erps_code() {
    let url = fake(FakeErpOptions {
        blocked_customers: ["C9".to_string()].into(),
        ..Default::default()
    })
    .await;
    let erp = ErpConnector::new(shipped(), &url, secrets()).unwrap();
    let outcome = erp
        .call(request("k-9", 1, order(json!({"code": "C9"}))))
        .await;
    match outcome {
        JobOutcome::BusinessError { code, message } => {
            assert_eq!(code, "CUSTOMER_BLOCKED");
            assert!(message.contains("C9"), "{message}");
        }
        other => panic!("expected a business error, got {other:?}"),
    }
    assert!(
        received(&url).await["orders"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_4xx_without_a_code_gets_erp_and_the_status() {
    let url = fake(FakeErpOptions::default()).await;
    let config = ErpConfig::parse(
        Path::new("erp.yaml"),
        "create-order:\n  url: \"{{erp_url}}/no-such-endpoint\"\n",
    )
    .unwrap();
    let erp = ErpConnector::new(config, &url, Secrets::default()).unwrap();
    let outcome = erp.call(request("k", 1, order(json!("C1")))).await;
    assert!(
        matches!(&outcome, JobOutcome::BusinessError { code, .. } if code == "ERP_404"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_slow_erp_times_out_and_is_a_failure() {
    let url = fake(FakeErpOptions {
        delay: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    let config = ErpConfig::parse(
        Path::new("erp.yaml"),
        "create-order:\n  url: \"{{erp_url}}/orders\"\n  body: { customer: order.customer }\n  result: { number: $.order_number }\n  timeout: PT0.2S\n",
    )
    .unwrap();
    let erp = ErpConnector::new(config, &url, Secrets::default()).unwrap();
    let outcome = erp.call(request("k", 1, order(json!("C1")))).await;
    assert!(
        matches!(&outcome, JobOutcome::Failed(e) if e.contains("did not answer within")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_failure() {
    // Bind and drop a listener: its port is then very likely closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let erp = ErpConnector::new(shipped(), &format!("http://127.0.0.1:{port}"), secrets()).unwrap();
    let outcome = erp.call(request("k", 1, order(json!("C1")))).await;
    assert!(
        matches!(&outcome, JobOutcome::Failed(e) if e.contains("cannot reach the ERP")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn numbers_keep_every_digit_and_a_missing_result_is_a_failure() {
    let url = fake(FakeErpOptions::default()).await;
    let erp = ErpConnector::new(shipped(), &url, secrets()).unwrap();
    let mut o = order(json!("C1"));
    o["lines"][0]["price"] = serde_json::from_str("1234567890123456.123456789").unwrap();
    let outcome = erp.call(request("digits", 1, o)).await;
    assert!(matches!(outcome, JobOutcome::Done(_)), "{outcome:?}");
    let text = reqwest::get(format!("{url}/orders"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("1234567890123456.123456789"), "{text}");

    let config = ErpConfig::parse(
        Path::new("erp.yaml"),
        "create-order:\n  url: \"{{erp_url}}/orders\"\n  body: { customer: order.customer }\n  result: { number: $.erp.number }\n",
    )
    .unwrap();
    let erp = ErpConnector::new(config, &url, Secrets::default()).unwrap();
    let outcome = erp.call(request("other", 1, order(json!("C1")))).await;
    assert!(
        matches!(&outcome, JobOutcome::Failed(e) if e.contains("$.erp.number")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_unknown_operation_or_a_failing_body_expression_is_a_failure() {
    let url = fake(FakeErpOptions::default()).await;
    let erp = ErpConnector::new(shipped(), &url, secrets()).unwrap();
    let mut r = request("k", 1, order(json!("C1")));
    r.operation = "cancel-order".into();
    let outcome = erp.call(r).await;
    assert!(
        matches!(&outcome, JobOutcome::Failed(e) if e.contains("cancel-order")),
        "{outcome:?}"
    );
    let mut r = request("k", 1, order(json!("C1")));
    r.input.clear();
    let outcome = erp.call(r).await;
    assert!(
        matches!(&outcome, JobOutcome::Failed(e) if e.contains("body field")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn the_control_endpoint_changes_the_fakes_behaviour() {
    let url = fake(FakeErpOptions::default()).await;
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{url}/_control"))
        .json(&json!({"fail_next": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let erp = ErpConnector::new(shipped(), &url, secrets()).unwrap();
    let first = erp.call(request("c", 1, order(json!("C1")))).await;
    assert!(matches!(first, JobOutcome::Failed(_)), "{first:?}");
    let second = erp.call(request("c", 2, order(json!("C1")))).await;
    assert!(matches!(second, JobOutcome::Done(_)), "{second:?}");
    let r = c
        .post(format!("{url}/_control"))
        .json(&json!({"fail_nxt": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
}

/// The fake ERP behind TLS (tokio-rustls in front of its axum router), with a certificate for
/// `localhost` made for the test. Returns the `https://localhost:PORT` address and the
/// certificate's PEM.
async fn fake_over_tls() -> (String, String) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    use tokio_rustls::rustls;

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![certified.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let erp = FakeErp::new(FakeErpOptions::default());
    let router = erp.router();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: not an error here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("https://localhost:{port}"), cert_pem)
}

/// How many orders the fake behind TLS stored, asked over HTTPS too.
async fn orders_over_tls(url: &str, cert_pem: &str) -> usize {
    let client = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let seen: Json = client
        .get(format!("{url}/orders"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    seen["orders"].as_array().unwrap().len()
}

#[tokio::test]
async fn an_https_erp_is_reached_when_its_ca_is_trusted_and_refused_otherwise() {
    let (url, cert_pem) = fake_over_tls().await;
    let customer = json!({"code": "C1", "name": "Rossi SpA"});

    // Not trusted: the certificate is refused, the job fails (retried), nothing is stored.
    let untrusted = ErpConnector::new(shipped(), &url, secrets()).unwrap();
    let outcome = untrusted
        .call(request("tls-1", 1, order(customer.clone())))
        .await;
    assert!(matches!(&outcome, JobOutcome::Failed(_)), "{outcome:?}");
    assert_eq!(orders_over_tls(&url, &cert_pem).await, 0);

    // Trusted through the CA file: the order arrives over TLS and the number comes back.
    let trusted =
        ErpConnector::with_extra_roots(shipped(), &url, secrets(), Some(cert_pem.as_bytes()))
            .unwrap();
    let outcome = trusted.call(request("tls-2", 1, order(customer))).await;
    let mut expected = Vars::new();
    expected.insert("number".into(), Value::from("ERP-000001"));
    assert_eq!(outcome, JobOutcome::Done(expected));
    assert_eq!(orders_over_tls(&url, &cert_pem).await, 1);
}

#[test]
fn a_ca_file_without_certificates_is_refused_at_start() {
    // `let else`, not `expect_err`: the connector has no `Debug` to print if it were made.
    let Err(error) = ErpConnector::with_extra_roots(
        shipped(),
        "https://erp.example",
        secrets(),
        Some(b"nothing here"),
    ) else {
        panic!("a CA file without certificates was accepted");
    };
    let error = error.to_string();
    assert!(error.contains("CA file"), "{error}");
}

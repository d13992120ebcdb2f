//! The shipped quote processes (`processes/`), driven through the real engine on the memory
//! store with a manual clock: pricing from the price list, approval by the matrix, expiry,
//! a change voiding an approval, and quote to order with a recording ERP.

mod common;

use ciclo_engine::runtime::{JobOutcome, Message};
use ciclo_engine::store::{InstanceId, InstanceStatus, TaskRecord};
use ciclo_engine::{Value, Vars};
use common::*;
use jiff::SignedDuration;

const FILES: &[(&str, &str)] = &[
    (
        "data/price-list.yaml",
        include_str!("../../processes/data/price-list.yaml"),
    ),
    (
        "data/approval-matrix.yaml",
        include_str!("../../processes/data/approval-matrix.yaml"),
    ),
    (
        "quote-to-order.yaml",
        include_str!("../../processes/quote-to-order.yaml"),
    ),
    (
        "quote-approval.yaml",
        include_str!("../../processes/quote-approval.yaml"),
    ),
    (
        "opportunity-to-quote.yaml",
        include_str!("../../processes/opportunity-to-quote.yaml"),
    ),
];

fn harness() -> Harness {
    let h = Harness::new(&[]);
    for (file, text) in FILES {
        h.engine
            .deploy(file, text)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    h
}

fn all_tasks(h: &Harness) -> Vec<TaskRecord> {
    h.engine.store().tasks(1000).expect("tasks")
}

fn task(h: &Harness, step: &str) -> TaskRecord {
    all_tasks(h)
        .into_iter()
        .find(|t| t.step == step)
        .unwrap_or_else(|| panic!("no open task `{step}`: {:?}", all_tasks(h)))
}

fn complete(h: &Harness, step: &str, form: serde_json::Value) {
    let t = task(h, step);
    h.engine
        .complete_task(t.instance, t.task, vars(form), "tester")
        .unwrap_or_else(|e| panic!("complete {step}: {e}"));
}

fn child(h: &Harness, process: &str) -> InstanceId {
    h.engine
        .store()
        .instances(&ciclo_engine::store::InstanceFilter {
            process: Some(process.to_string()),
            ..Default::default()
        })
        .expect("instances")
        .into_iter()
        .find(|i| i.process == process)
        .unwrap_or_else(|| panic!("no instance of {process}"))
        .id
}

fn field<'v>(value: &'v Value, path: &[&str]) -> &'v Value {
    path.iter().fold(value, |v, key| match v {
        Value::Map(m) => m.get(*key).unwrap_or(&Value::Null),
        _ => &Value::Null,
    })
}

/// Starts an opportunity for 60 units of each widget (both tier modes) and qualifies it.
fn priced_opportunity(h: &Harness, extra_discount: &str) -> InstanceId {
    let id = h.start(
        "opportunity-to-quote",
        serde_json::json!({
            "opportunity": {
                "id": "OPP7",
                "owner": "sara",
                "owner_email": "sara@example.com",
                "customer": {"id": "C1", "name": "Acme", "email": "buyer@acme.example"},
            },
            "lines": [
                {"product": "WIDGET-STD", "qty": 60},
                {"product": "WIDGET-BAND", "qty": 60, "discount": extra_discount.parse::<f64>().unwrap()},
            ],
        }),
    );
    complete(
        h,
        "qualify",
        serde_json::json!({"close_date": "2027-03-31", "budget_confirmed": true}),
    );
    id
}

#[test]
fn test_2_tiers_all_units_and_per_band_from_the_shipped_price_list() {
    let h = harness();
    let id = priced_opportunity(&h, "0");
    let Value::List(priced) = h.var(id, "priced") else {
        panic!("{:?}", h.var(id, "priced"))
    };
    // 60 x 100.00, tiers 1-9 0%, 10-49 10%, 50+ 15%.
    assert_eq!(field(&priced[0], &["net"]), &num("5100.00"));
    assert_eq!(field(&priced[1], &["net"]), &num("5435.00"));
    let quote = h.var(id, "quote");
    assert_eq!(
        field(&quote, &["number"]),
        &Value::String("Q-2027-OPP7".into())
    );
    assert_eq!(field(&quote, &["total"]), &num("10535"));
    // VAT 22% of 10,535.00 = 2,317.70; valid 30 days from 2027-01-04.
    assert_eq!(field(&quote, &["vat"]), &num("2317.70"));
    assert_eq!(
        field(&quote, &["valid_until"]),
        &Value::Date("2027-02-03".parse().unwrap())
    );
    // 1 - 10,535 / 12,000 = 0.12208333...: over the 10% threshold.
    let discount = field(&quote, &["discount"]).clone();
    assert!(
        matches!(discount, Value::Number(d) if d > "0.122".parse().unwrap() && d < "0.1221".parse().unwrap())
    );
}

#[test]
fn a_price_outside_its_validity_or_minimum_is_refused_to_the_salesperson() {
    let h = harness();
    h.start(
        "opportunity-to-quote",
        serde_json::json!({
            "opportunity": {"id": "OPP8", "owner": "sara", "customer": {"id": "C1", "name": "Acme"}},
            "lines": [{"product": "SENSOR-OLD", "qty": 1}, {"product": "PALLET", "qty": 2}],
        }),
    );
    complete(
        &h,
        "qualify",
        serde_json::json!({"close_date": "2027-03-31", "budget_confirmed": true}),
    );
    let fix = task(&h, "fix-lines");
    assert_eq!(fix.assignee.as_deref(), Some("sara"));
    assert!(
        fix.title
            .contains("SENSOR-OLD: its price is not valid today"),
        "{}",
        fix.title
    );
    assert!(
        fix.title
            .contains("PALLET: under the minimum quantity of 5"),
        "{}",
        fix.title
    );
}

#[test]
fn test_6_rejected_the_salesperson_revises_it() {
    let h = harness();
    priced_opportunity(&h, "0");
    complete(&h, "manager", serde_json::json!({"decision": "reject"}));
    let revise = task(&h, "revise");
    assert_eq!(revise.assignee.as_deref(), Some("sara"));
    assert!(revise.title.contains("Q-2027-OPP7"));
}

#[test]
fn a_quote_that_expires_before_approval_is_expired_and_a_late_approval_is_refused() {
    let h = harness();
    priced_opportunity(&h, "0");
    let approval = child(&h, "quote-approval");
    let late = task(&h, "manager");
    // Escalation moves the task to the director after two days; nobody acts for 30 days.
    h.advance(SignedDuration::from_hours(24 * 31));
    assert_eq!(h.var(approval, "status"), Value::String("expired".into()));
    assert!(all_tasks(&h).iter().all(|t| t.instance != approval));
    let refused = h.engine.complete_task(
        late.instance,
        late.task,
        vars(serde_json::json!({"decision": "approve"})),
        "slow",
    );
    assert!(refused.is_err());
    assert_eq!(h.var(approval, "status"), Value::String("expired".into()));
}

fn start_order(h: &Harness, credit_limit: &str) -> InstanceId {
    let line =
        serde_json::json!({"product": "WIDGET-STD", "qty": 10, "list_price": 100, "net": 900});
    h.start(
        "quote-to-order",
        serde_json::json!({
            "quote": {"number": "Q-2027-9", "currency": "EUR", "lines": [line],
                      "total": 900, "vat": 198},
            "customer": {"id": "C1", "name": "Acme", "credit_limit": credit_limit.parse::<i64>().unwrap(), "open_balance": 0},
        }),
    )
}

fn accept(h: &Harness) {
    h.engine
        .correlate(Message {
            name: "quote-accepted".into(),
            key: "Q-2027-9".into(),
            ..Default::default()
        })
        .unwrap();
}

#[test]
fn quote_to_order_books_the_order_in_the_erp() {
    let h = harness();
    let id = start_order(&h, "5000");
    accept(&h);
    let mut sent = Vec::new();
    h.run_jobs(|j| {
        sent.push(j.clone());
        JobOutcome::Done(vars(serde_json::json!({"number": "ERP-42"})))
    });
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].connector.as_str(), sent[0].operation.as_str()),
        ("erp", "create-order")
    );
    assert_eq!(
        field(&sent[0].input["order"], &["number"]),
        &Value::String("SO-Q-2027-9".into())
    );
    assert_eq!(
        field(&sent[0].input["contract"], &["number"]),
        &Value::String("C-Q-2027-9".into())
    );
    assert_eq!(h.var(id, "erp_number"), Value::String("ERP-42".into()));
    assert_eq!(h.var(id, "status"), Value::String("booked".into()));
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
}

#[test]
fn an_erp_refusal_opens_a_task_for_a_person() {
    let h = harness();
    let id = start_order(&h, "5000");
    accept(&h);
    h.run_jobs(|_| JobOutcome::BusinessError {
        code: "CUSTOMER_BLOCKED".into(),
        message: "customer C1 is blocked".into(),
    });
    let refused = task(&h, "erp-refused");
    assert!(
        refused.title.contains("CUSTOMER_BLOCKED"),
        "{}",
        refused.title
    );
    assert_eq!(refused.candidates, ["order-desk"]);
    complete(&h, "erp-refused", serde_json::json!({"decision": "cancel"}));
    assert_eq!(h.var(id, "status"), Value::String("cancelled".into()));
}

#[test]
fn an_order_over_the_credit_limit_is_not_booked_without_a_person() {
    let h = harness();
    start_order(&h, "1000");
    accept(&h);
    let fix = task(&h, "fix-order");
    assert!(fix.title.contains("credit limit"), "{}", fix.title);
    assert_eq!(h.run_jobs(|_| JobOutcome::Done(Vars::new())), 0);
}

//! The shipped quote processes (`processes/`), driven through the real engine on the memory
//! store with a manual clock: pricing from the price list, approval by the matrix, expiry,
//! a change voiding an approval, and quote to order with a recording ERP.

mod common;

use ciclo_engine::runtime::{Correlation, JobOutcome, Message};
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

/// Moves the clock to `instant`, firing what falls due on the way.
fn advance_to(h: &Harness, instant: &str) {
    h.advance(ts(instant).duration_since(h.clock.now_ts()));
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

/// Test 6, rejected: the salesperson who owns the quote gets a task to revise it; the revised
/// quote discount is priced again and goes through a new approval, then it is sent.
#[test]
fn test_6_rejected_the_salesperson_revises_it() {
    let h = harness();
    let id = priced_opportunity(&h, "0");
    let first = child(&h, "quote-approval");
    assert_eq!(h.var(first, "levels"), Value::List(vec!["manager".into()]));
    complete(&h, "manager", serde_json::json!({"decision": "reject"}));
    assert!(
        jobs_of(&h, "email").is_empty(),
        "a rejected quote is not sent"
    );
    let revise = task(&h, "revise");
    assert_eq!(revise.instance, first);
    assert_eq!(revise.assignee.as_deref(), Some("sara"));
    assert!(revise.title.contains("Q-2027-OPP7"), "{}", revise.title);
    complete(&h, "revise", serde_json::json!({"quote_discount": 0.02}));
    // The opportunity hears of it through a system job and prices the quote again.
    h.run_jobs(|_| JobOutcome::Done(Vars::new()));
    assert_eq!(h.var(first, "status"), Value::String("revise".into()));
    assert_eq!(h.state(first).status, InstanceStatus::Completed);

    // Priced again with 2% off the whole quote: 10,535.00 x 0.98 = 10,324.30, an effective
    // discount of 1 - 10,324.30 / 12,000 = 13.96%: the manager approves again.
    let quote = h.var(id, "quote");
    assert_eq!(field(&quote, &["quote_discount"]), &num("0.02"));
    assert_eq!(field(&quote, &["total"]), &num("10324.30"));
    let manager = task(&h, "manager");
    assert_ne!(manager.instance, first);
    complete(&h, "manager", serde_json::json!({"decision": "approve"}));
    let mails = jobs_of(&h, "email");
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(text(&mails[0].input["template"]), "quote-email");
    assert_eq!(
        field(&mails[0].input["quote"], &["total"]),
        &num("10324.30")
    );
    assert_eq!(h.var(id, "status"), Value::String("sent".into()));
}

/// Test 6, the other side of the threshold: 9 units at list price (no tier, no discount, 900.00)
/// need no approval; the quote e-mail goes out at once and no task is opened.
#[test]
fn test_6_a_quote_within_the_thresholds_is_sent_without_approval() {
    let h = harness();
    let id = h.start(
        "opportunity-to-quote",
        serde_json::json!({
            "opportunity": {"id": "OPP9", "owner": "sara",
                            "customer": {"id": "C1", "name": "Acme", "email": "buyer@acme.example",
                                         "locale": "it"}},
            "lines": [{"product": "WIDGET-STD", "qty": 9}],
        }),
    );
    complete(
        &h,
        "qualify",
        serde_json::json!({"close_date": "2027-03-31", "budget_confirmed": true}),
    );
    let approval = child(&h, "quote-approval");
    assert_eq!(h.var(approval, "levels"), Value::List(vec![]));
    assert!(all_tasks(&h).is_empty(), "{:?}", all_tasks(&h));
    let mails = jobs_of(&h, "email");
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(text(&mails[0].input["template"]), "quote-email");
    assert_eq!(field(&mails[0].input["quote"], &["total"]), &num("900"));
    // In the customer's language.
    assert_eq!(text(&mails[0].input["locale"]), "it");
    assert_eq!(h.var(id, "status"), Value::String("sent".into()));
}

/// A sent quote the customer does not accept expires at the end of its `valid_until`, however
/// long the approval took: the timer is the quote's date, not 30 days from sending.
#[test]
fn a_sent_quote_not_accepted_expires_at_its_valid_until() {
    let h = harness();
    let id = priced_opportunity(&h, "0");
    // The manager does not act; after two days the task goes to the director, who approves
    // on day three.
    h.advance(SignedDuration::from_hours(24 * 3));
    complete(&h, "director", serde_json::json!({"decision": "approve"}));
    jobs_of(&h, "email");
    let order = child(&h, "quote-to-order");
    assert_eq!(
        field(&h.var(order, "quote"), &["valid_until"]),
        &Value::Date("2027-02-03".parse().unwrap())
    );
    advance_to(&h, "2027-02-03T22:59:59Z");
    assert_eq!(h.state(order).status, InstanceStatus::Active);
    h.advance(SignedDuration::from_secs(1));
    assert_eq!(h.var(order, "status"), Value::String("expired".into()));
    // The parent hears of its child's end through a system job.
    h.run_jobs(|_| JobOutcome::Done(Vars::new()));
    assert_eq!(h.var(id, "order_status"), Value::String("expired".into()));
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
}

/// The same for a quote handed to quote-to-order from outside (JSON, so `valid_until` is a
/// text): it expires at the start of the next day in Rome.
#[test]
fn quote_to_order_expires_at_the_end_of_valid_until() {
    let h = harness();
    let id = start_order(&h, "5000");
    advance_to(&h, "2027-02-03T22:59:59Z");
    assert_eq!(h.state(id).status, InstanceStatus::Active);
    h.advance(SignedDuration::from_secs(1));
    assert_eq!(h.var(id, "status"), Value::String("expired".into()));
    // A late acceptance finds nobody waiting: no order is made.
    let late = h
        .engine
        .correlate(Message {
            name: "quote-accepted".into(),
            key: "Q-2027-9".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(
        matches!(late, Correlation::Dropped | Correlation::Buffered),
        "{late:?}"
    );
    assert_eq!(h.run_jobs(|_| JobOutcome::Done(Vars::new())), 0);
    assert_eq!(h.var(id, "order"), Value::Null);
}

#[test]
fn a_quote_that_expires_before_approval_is_expired_and_a_late_approval_is_refused() {
    let h = harness();
    let id = priced_opportunity(&h, "0");
    let approval = child(&h, "quote-approval");
    let late = task(&h, "manager");
    // Escalation moves the task on after two days, up to the CFO; nobody acts. The quote is
    // valid until 2027-02-03: it expires at the start of 4 February in Rome (CET, +01:00).
    advance_to(&h, "2027-02-03T22:59:59Z");
    assert_eq!(h.state(approval).status, InstanceStatus::Active);
    assert_eq!(task(&h, "cfo").instance, approval);
    h.advance(SignedDuration::from_secs(1));
    assert_eq!(h.var(approval, "status"), Value::String("expired".into()));
    // The opportunity takes the status and ends (told through a system job); it starts no
    // quote-to-order.
    h.run_jobs(|_| JobOutcome::Done(Vars::new()));
    assert_eq!(h.var(id, "status"), Value::String("expired".into()));
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
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
    let line = serde_json::json!({"product": "WIDGET-STD", "name": "Widget", "qty": 10, "list_price": 100, "net": 900, "vat_rate": 0.22});
    h.start(
        "quote-to-order",
        serde_json::json!({
            "quote": {"number": "Q-2027-9", "currency": "EUR", "lines": [line],
                      "total": 900, "vat": 198, "valid_until": "2027-02-03"},
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
    assert_eq!(sent.len(), 2, "the ERP call, then the hand-over to billing");
    assert_eq!(
        (sent[0].connector.as_str(), sent[0].operation.as_str()),
        ("erp", "create-order")
    );
    // The booked order goes to order-to-cash in the shape it reads.
    assert_eq!(sent[1].connector, ciclo_engine::runtime::MESSAGE_CONNECTOR);
    assert_eq!(sent[1].input["name"], Value::String("order-placed".into()));
    let order = field(&sent[1].input["vars"], &["order"]);
    assert_eq!(
        field(order, &["number"]),
        &Value::String("SO-Q-2027-9".into())
    );
    let Value::List(lines) = field(order, &["lines"]) else {
        panic!("lines: {order:?}")
    };
    assert_eq!(
        field(&lines[0], &["description"]),
        &Value::String("Widget".into())
    );
    assert_eq!(
        field(&lines[0], &["unit_price"]).to_json(),
        serde_json::json!(90)
    );
    assert_eq!(
        field(&lines[0], &["vat_rate"]).to_json(),
        serde_json::json!(22)
    );
    assert_eq!(
        field(order, &["payment_terms", "net_days"]).to_json(),
        serde_json::json!(30)
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

fn jobs_of(h: &Harness, connector: &str) -> Vec<ciclo_engine::store::JobRecord> {
    let mut seen = Vec::new();
    h.run_jobs(|j| {
        seen.push(j.clone());
        JobOutcome::Done(Vars::new())
    });
    seen.into_iter()
        .filter(|j| j.connector == connector)
        .collect()
}

fn text(value: &Value) -> &str {
    match value {
        Value::String(s) => s,
        other => panic!("not a text: {other:?}"),
    }
}

/// A 25% manual discount on the per-band line: 60 x 100 per band is 5,435.00, less 25% is
/// 4,076.25; with the other line (5,100.00) 9,176.25 of 12,000.00 list, an effective discount
/// of 23.5%: over the director's 20%, so the manager and then the director approve.
#[test]
fn test_6_approved_through_the_tasks_the_quote_is_sent_and_quote_to_order_starts() {
    let h = harness();
    let id = priced_opportunity(&h, "0.25");
    let quote = h.var(id, "quote");
    let Value::List(lines) = field(&quote, &["lines"]).clone() else {
        panic!("{quote:?}")
    };
    assert_eq!(field(&lines[1], &["line_discount"]), &num("0.25"));
    assert_eq!(field(&lines[1], &["net"]), &num("4076.25"));
    assert_eq!(field(&quote, &["total"]), &num("9176.25"));
    let approval = child(&h, "quote-approval");
    assert_eq!(
        h.var(approval, "levels"),
        Value::List(vec!["manager".into(), "director".into()])
    );
    // The manager gets the decision by e-mail too: one link per option, to the level's
    // address in the approval matrix.
    h.advance(SignedDuration::from_secs(1));
    let links = jobs_of(&h, "links");
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(text(&links[0].input["to"]), "sales-managers@example.com");
    assert_eq!(text(&links[0].input["name"]), "Sales manager");
    assert_eq!(text(&links[0].input["step"]), "manager");
    complete(&h, "manager", serde_json::json!({"decision": "approve"}));
    assert!(
        jobs_of(&h, "email").is_empty(),
        "not sent before the director"
    );
    let director = task(&h, "director");
    assert_eq!(director.candidates, ["sales-directors"]);
    complete(&h, "director", serde_json::json!({"decision": "approve"}));

    // The quote e-mail: the HTML template of the quote, to the customer, with every value
    // that template reads (number, validity, lines with name, qty, list price and net,
    // totals, currency).
    let mails = jobs_of(&h, "email");
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0].input;
    assert_eq!(text(&mail["template"]), "quote-email");
    assert_eq!(text(&mail["to"]), "buyer@acme.example");
    let sent = &mail["quote"];
    assert_eq!(text(field(sent, &["number"])), "Q-2027-OPP7");
    assert_eq!(text(field(sent, &["customer", "name"])), "Acme");
    assert_eq!(
        field(sent, &["valid_until"]),
        &Value::Date("2027-02-03".parse().unwrap())
    );
    assert_eq!(field(sent, &["total"]), &num("9176.25"));
    // VAT 22% of 9,176.25 = 2,018.775, rounded half-up to 2,018.78.
    assert_eq!(field(sent, &["vat"]), &num("2018.78"));
    assert_eq!(text(field(sent, &["currency"])), "EUR");
    let Value::List(sent_lines) = field(sent, &["lines"]) else {
        panic!("{sent:?}")
    };
    assert_eq!(
        text(field(&sent_lines[1], &["name"])),
        "Widget, priced per band"
    );
    assert_eq!(field(&sent_lines[1], &["qty"]), &num("60"));
    assert_eq!(field(&sent_lines[1], &["list_price"]), &num("100.00"));
    assert_eq!(field(&sent_lines[1], &["net"]), &num("4076.25"));

    assert_eq!(h.var(approval, "status"), Value::String("sent".into()));
    assert_eq!(h.state(approval).status, InstanceStatus::Completed);
    assert_eq!(h.var(id, "status"), Value::String("sent".into()));
    assert!(
        h.engine.store().incidents().unwrap().is_empty(),
        "{:?}",
        h.history(id)
    );
    // quote-to-order waits for the customer's acceptance of the same quote.
    let order = child(&h, "quote-to-order");
    assert_eq!(h.var(order, "quote"), h.var(id, "quote"));
    assert_eq!(
        field(&h.var(order, "customer"), &["id"]),
        &Value::String("C1".into())
    );
    assert_eq!(h.state(order).status, InstanceStatus::Active);
}

/// A change of a priced field while the approval runs voids it, even half done: the
/// opportunity prices the changed lines again and asks for a new approval by the levels the
/// new quote needs.
#[test]
fn a_change_to_the_quote_voids_the_approval_and_prices_it_again() {
    let h = harness();
    let id = priced_opportunity(&h, "0.25");
    let first = child(&h, "quote-approval");
    complete(&h, "manager", serde_json::json!({"decision": "approve"}));
    let director = task(&h, "director");
    // The salesperson drops the manual discount and raises the quantity of the first line.
    h.engine
        .correlate(Message {
            name: "quote-changed".into(),
            key: "Q-2027-OPP7".into(),
            vars: vars(serde_json::json!({"lines": [
                {"product": "WIDGET-STD", "qty": 70},
                {"product": "WIDGET-BAND", "qty": 60},
            ]})),
            ..Default::default()
        })
        .unwrap();
    h.run_jobs(|_| JobOutcome::Done(Vars::new()));
    eprintln!(
        "{:?}\n{:?}\n{:?}",
        h.history(first),
        h.history(id),
        h.engine.store().incidents()
    );
    assert_eq!(h.var(first, "status"), Value::String("changed".into()));
    assert_eq!(h.state(first).status, InstanceStatus::Completed);
    assert!(
        all_tasks(&h)
            .iter()
            .all(|t| t.task != director.task || t.instance != director.instance)
    );
    // Priced again: 70 x 100 less 15% = 5,950.00; 5,435.00 per band; of 13,000.00 list.
    let quote = h.var(id, "quote");
    assert_eq!(field(&quote, &["total"]), &num("11385.00"));
    assert_eq!(field(&quote, &["list_total"]), &num("13000.00"));
    // A new approval, from the first level again: 12.4% needs the manager only.
    let approvals: Vec<_> = h
        .engine
        .store()
        .instances(&ciclo_engine::store::InstanceFilter {
            process: Some("quote-approval".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(approvals.len(), 2);
    let second = approvals.iter().find(|i| i.id != first).unwrap().id;
    assert_eq!(h.var(second, "levels"), Value::List(vec!["manager".into()]));
    let manager = task(&h, "manager");
    assert_eq!(manager.instance, second);
    complete(&h, "manager", serde_json::json!({"decision": "approve"}));
    let mails = jobs_of(&h, "email");
    assert_eq!(mails.len(), 1);
    assert_eq!(
        field(&mails[0].input["quote"], &["total"]),
        &num("11385.00")
    );
    assert_eq!(h.var(id, "status"), Value::String("sent".into()));
}

/// Nobody acts: every day a reminder to the level's mailbox; after the due date (two days)
/// the task moves to the next level, which is reminded in its turn and escalates again.
#[test]
fn reminders_every_day_and_escalation_to_the_next_level_after_the_due_date() {
    let h = harness();
    priced_opportunity(&h, "0.25");
    let approval = child(&h, "quote-approval");
    let manager = task(&h, "manager");
    assert_eq!(manager.due, Some(ts("2027-01-06T09:00:00Z")));

    let reminders = |h: &Harness| -> Vec<(String, String)> {
        jobs_of(h, "email")
            .iter()
            .map(|j| {
                assert_eq!(text(&j.input["template"]), "approval-reminder");
                (
                    text(&j.input["to"]).to_string(),
                    text(&j.input["level"]).to_string(),
                )
            })
            .collect()
    };
    h.advance(SignedDuration::from_hours(24));
    assert_eq!(
        reminders(&h),
        [(
            "sales-managers@example.com".to_string(),
            "sales manager".to_string()
        )]
    );
    assert_eq!(task(&h, "manager").task, manager.task);
    // Day two: the due date; the manager's task is taken away and the director has it.
    h.advance(SignedDuration::from_hours(24));
    // The day's reminder falls at the same instant as the escalation, and goes first.
    assert_eq!(
        reminders(&h),
        [(
            "sales-managers@example.com".to_string(),
            "sales manager".to_string()
        )]
    );
    assert!(all_tasks(&h).iter().all(|t| t.step != "manager"));
    let director = task(&h, "director");
    assert_eq!(director.instance, approval);
    assert_eq!(director.due, Some(ts("2027-01-08T09:00:00Z")));
    h.advance(SignedDuration::from_hours(24));
    assert_eq!(
        reminders(&h),
        [(
            "sales-directors@example.com".to_string(),
            "sales director".to_string()
        )]
    );
    // Day four: the director's due date; the CFO has it now.
    h.advance(SignedDuration::from_hours(24));
    assert_eq!(
        reminders(&h),
        [(
            "sales-directors@example.com".to_string(),
            "sales director".to_string()
        )]
    );
    assert!(all_tasks(&h).iter().all(|t| t.step != "director"));
    let cfo = task(&h, "cfo");
    assert_eq!(cfo.candidates, ["cfo"]);
    complete(&h, "cfo", serde_json::json!({"decision": "approve"}));
    assert_eq!(jobs_of(&h, "email").len(), 1);
    assert_eq!(h.var(approval, "status"), Value::String("sent".into()));
}

#[test]
fn an_opportunity_requested_by_message_is_configured_then_qualified_and_priced() {
    // A converted lead (lead-assignment) or a renewal (contract-renewal) asks for an
    // opportunity by message, without lines: its owner enters the first line.
    let h = harness();
    h.engine
        .correlate(Message {
            name: "opportunity-requested".into(),
            key: "lead:7927b2df".into(),
            vars: vars(serde_json::json!({"opportunity": {
                "id": "7927b2df",
                "source": "lead",
                "owner": "sara",
                "customer": {"id": "C9", "name": "Bianchi srl", "email": "buyer@bianchi.example"},
            }})),
            id: None,
            ttl: Some(SignedDuration::from_hours(24)),
        })
        .expect("correlate");
    let configure = task(&h, "configure");
    assert_eq!(configure.assignee.as_deref(), Some("sara"));
    assert!(
        configure.title.contains("Bianchi srl"),
        "{}",
        configure.title
    );
    // A quantity under 1 is refused by the form and changes nothing.
    let bad = h.engine.complete_task(
        configure.instance,
        configure.task,
        vars(serde_json::json!({"product": "WIDGET-STD", "qty": 0})),
        "sara",
    );
    assert!(bad.is_err(), "qty 0 was accepted");
    complete(
        &h,
        "configure",
        serde_json::json!({"product": " WIDGET-STD ", "qty": 60}),
    );
    complete(
        &h,
        "qualify",
        serde_json::json!({"close_date": "2027-03-31", "budget_confirmed": true}),
    );
    let id = configure.instance;
    let Value::List(priced) = h.var(id, "priced") else {
        panic!("not priced: {:?}", h.var(id, "priced"))
    };
    assert_eq!(priced.len(), 1);
    assert_eq!(field(&priced[0], &["product"]), &Value::from("WIDGET-STD"));
    let number = h.var(id, "quote").to_json()["number"].clone();
    assert!(
        number
            .as_str()
            .is_some_and(|n| n.starts_with("Q-") && n.ends_with("-7927b2df")),
        "quote number {number}"
    );
}

#[test]
fn a_renewal_opportunity_from_contract_renewal_gets_a_quote_numbered_after_the_contract() {
    // The shape contract-renewal publishes (no owner, no lines): the sales team configures it.
    let h = harness();
    h.engine
        .correlate(Message {
            name: "opportunity-requested".into(),
            key: "K-9".into(),
            vars: vars(serde_json::json!({"opportunity": {
                "id": "R-K-9", "source": "renewal", "contract": "K-9",
                "customer": {"id": "C9", "name": "Bianchi srl", "email": "buyer@bianchi.example"},
                "value": null, "close_by": "2027-12-31",
            }})),
            id: None,
            ttl: Some(SignedDuration::from_hours(24)),
        })
        .expect("correlate");
    let configure = task(&h, "configure");
    assert_eq!(configure.candidates, ["sales"]);
    complete(
        &h,
        "configure",
        serde_json::json!({"product": "WIDGET-STD", "qty": 5}),
    );
    complete(
        &h,
        "qualify",
        serde_json::json!({"close_date": "2027-12-15", "budget_confirmed": true}),
    );
    let number = h.var(configure.instance, "quote").to_json()["number"].clone();
    assert!(
        number
            .as_str()
            .is_some_and(|n| n.starts_with("Q-") && n.ends_with("-R-K-9")),
        "quote number {number}"
    );
}

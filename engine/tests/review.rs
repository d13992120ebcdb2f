//! QA review: behaviour checks written against the issue text and the docs. Tests that fail
//! document bugs found in review.

mod common;

use ciclo_engine::Value;
use ciclo_engine::runtime::{Correlation, EngineError, JobOutcome, Message};
use ciclo_engine::store::InstanceStatus;
use common::*;
use jiff::SignedDuration;

fn json_vars(v: serde_json::Value) -> ciclo_engine::Vars {
    vars(v)
}

#[test]
fn multi_instance_over_an_empty_list_completes_with_an_empty_collection() {
    let h = Harness::new(&[r#"
process: mi
start: each
steps:
  each:
    each: { in: items, as: it, collect: { out: it * 2 } }
    task: "Item {{it}}"
    goto: after
  after:
    set: { after: true }
"#]);
    let id = h.start("mi", serde_json::json!({"items": []}));
    let s = h.state(id);
    assert_eq!(s.status, InstanceStatus::Completed, "{:?}", h.history(id));
    assert_eq!(h.var(id, "after"), Value::Bool(true));
    assert_eq!(h.var(id, "out"), Value::List(vec![]));
}

#[test]
fn multi_instance_over_a_non_list_raises_an_incident_not_a_panic() {
    let h = Harness::new(&[r#"
process: mi
start: each
steps:
  each:
    each: { in: items, as: it }
    set: { x: it }
"#]);
    let id = h.start("mi", serde_json::json!({"items": 5}));
    let incidents = h.engine.store().incidents_of(id).unwrap();
    assert_eq!(incidents.len(), 1, "{:?}", h.history(id));
    assert!(
        incidents[0].error.contains("items"),
        "{}",
        incidents[0].error
    );
}

const WAITER: &str = r#"
process: waiter
start: wait
steps:
  wait:
    receive: ping
    key: k
    goto: done
  done:
    set: { got: true }
"#;

#[test]
fn a_message_is_delivered_to_every_instance_waiting_with_the_same_name_and_key() {
    let h = Harness::new(&[WAITER]);
    let a = h.start("waiter", serde_json::json!({"k": "K"}));
    let b = h.start("waiter", serde_json::json!({"k": "K"}));
    let c = h.start("waiter", serde_json::json!({"k": "other"}));
    let m = Message {
        name: "ping".into(),
        key: "K".into(),
        ..Default::default()
    };
    match h.engine.correlate(m).unwrap() {
        Correlation::Delivered(mut ids) => {
            ids.sort();
            let mut want = vec![a, b];
            want.sort();
            assert_eq!(ids, want);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.var(a, "got"), Value::Bool(true));
    assert_eq!(h.var(b, "got"), Value::Bool(true));
    assert_eq!(h.var(c, "got"), Value::Null);
}

#[test]
fn a_buffered_message_is_delivered_to_one_waiter_only_once() {
    let h = Harness::new(&[WAITER]);
    let m = Message {
        name: "ping".into(),
        key: "K".into(),
        ttl: Some(SignedDuration::from_hours(1)),
        ..Default::default()
    };
    assert_eq!(h.engine.correlate(m).unwrap(), Correlation::Buffered);
    let a = h.start("waiter", serde_json::json!({"k": "K"}));
    let b = h.start("waiter", serde_json::json!({"k": "K"}));
    h.run_jobs(|_| JobOutcome::Done(Default::default()));
    let got = [a, b]
        .iter()
        .filter(|i| h.var(**i, "got") == Value::Bool(true))
        .count();
    assert_eq!(got, 1, "exactly once");
}

/// A time to live far in the future (8000 years: the caller's input, later an HTTP field)
/// must be refused or clamped, not panic inside `Timestamp + SignedDuration`.
#[test]
fn a_huge_message_ttl_does_not_panic() {
    let h = Harness::new(&[WAITER]);
    let m = Message {
        name: "ping".into(),
        key: "K".into(),
        id: Some("id-1".into()),
        ttl: Some(SignedDuration::from_hours(24 * 365 * 8000)),
        ..Default::default()
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.engine.correlate(m)));
    assert!(r.is_ok(), "correlate panicked on a long time to live");
}

#[test]
fn a_boundary_timer_on_a_completed_task_never_fires() {
    let h = Harness::new(&[r#"
process: t
start: ask
steps:
  ask:
    task: Ask
    on:
      - timer: PT1H
        goto: late
    goto: done
  late:
    set: { late: true }
  done:
    set: { done: true }
"#]);
    let id = h.start("t", serde_json::json!({}));
    let t = h.tasks(id).pop().unwrap();
    h.engine
        .complete_task(id, t.task, Default::default(), "u")
        .unwrap();
    assert_eq!(h.advance(SignedDuration::from_hours(5)), 0);
    assert_eq!(h.var(id, "late"), Value::Null);
    assert_eq!(h.var(id, "done"), Value::Bool(true));
}

const ORDER: &str = r#"
process: order
start: send
steps:
  send:
    call: erp.create-order
    input: { number: order }
    output: { erp_number: result.number }
    retry: { attempts: 2, backoff: PT1S }
    goto: done
  done:
    end: true
"#;

#[test]
fn cancel_while_a_job_is_pending_ignores_the_late_answer() {
    let h = Harness::new(&[ORDER]);
    let id = h.start("order", serde_json::json!({"order": "SO-1"}));
    let job = h.engine.store().jobs_of(id).unwrap().pop().unwrap();
    h.engine.cancel(id, "ops").unwrap();
    assert!(
        h.engine.store().jobs_of(id).unwrap().is_empty(),
        "jobs are removed on cancel"
    );
    let late = h.engine.job_result(
        &job,
        JobOutcome::Done(json_vars(serde_json::json!({"number": "X"}))),
    );
    assert!(late.is_ok(), "{late:?}");
    assert_eq!(h.var(id, "erp_number"), Value::Null);
    assert_eq!(h.state(id).status, InstanceStatus::Cancelled);
    // Cancel twice.
    let again = h.engine.cancel(id, "ops");
    println!("cancel twice: {again:?}");
}

#[test]
fn retrying_an_incident_twice_is_refused_not_doubled() {
    let h = Harness::new(&[ORDER]);
    let id = h.start("order", serde_json::json!({"order": "SO-1"}));
    for _ in 0..2 {
        h.run_jobs(|_| JobOutcome::Failed("down".into()));
        h.clock.advance(SignedDuration::from_secs(10));
    }
    let inc = h.engine.store().incidents_of(id).unwrap();
    assert_eq!(inc.len(), 1);
    h.engine.retry_incident(id, inc[0].incident, "ops").unwrap();
    let second = h.engine.retry_incident(id, inc[0].incident, "ops");
    assert!(
        matches!(second, Err(EngineError::UnknownIncident { .. })),
        "{second:?}"
    );
    h.clock.advance(SignedDuration::from_secs(10));
    let runs = h.run_jobs(|_| JobOutcome::Done(json_vars(serde_json::json!({"number": "N"}))));
    assert_eq!(runs, 1, "one job, not two");
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
}

#[test]
fn retry_of_a_failed_retry_raises_a_new_incident() {
    let h = Harness::new(&[ORDER]);
    let id = h.start("order", serde_json::json!({"order": "SO-1"}));
    for round in 0..3 {
        for _ in 0..3 {
            h.run_jobs(|_| JobOutcome::Failed("down".into()));
            h.clock.advance(SignedDuration::from_hours(1));
        }
        let inc = h.engine.store().incidents_of(id).unwrap();
        assert_eq!(inc.len(), 1, "round {round}");
        h.engine.retry_incident(id, inc[0].incident, "ops").unwrap();
    }
    h.clock.advance(SignedDuration::from_hours(1));
    h.run_jobs(|_| JobOutcome::Done(json_vars(serde_json::json!({"number": "N"}))));
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
}

const FORM: &str = r#"
process: form
start: ask
steps:
  ask:
    task: Ask
    form:
      decision: [approve, reject]
      amount: number
      discount: { type: number, min: 0, max: 0.5 }
      when: date
      ok: boolean
      note: { type: text, required: false }
"#;

fn good_form() -> serde_json::Value {
    serde_json::json!({"decision": "approve", "amount": 10, "discount": 0.1, "when": "2027-01-01", "ok": true})
}

/// Each wrong value, on a fresh instance: the completion must be refused.
#[test]
fn form_values_of_the_wrong_type_are_refused() {
    let h = Harness::new(&[FORM]);
    let mut accepted = vec![];
    let cases: Vec<(&str, Option<serde_json::Value>)> = vec![
        ("amount", Some(serde_json::json!("ten"))),
        ("amount", Some(serde_json::json!(null))),
        ("amount", None),
        ("discount", Some(serde_json::json!(0.6))),
        ("discount", Some(serde_json::json!(-0.1))),
        ("when", Some(serde_json::json!("not a date"))),
        ("when", Some(serde_json::json!("2027-02-30"))),
        ("when", Some(serde_json::json!(5))),
        ("ok", Some(serde_json::json!(1))),
        ("decision", Some(serde_json::json!(["approve"]))),
        ("decision", Some(serde_json::json!("APPROVE"))),
        ("note", Some(serde_json::json!(5))),
    ];
    for (field, bad) in cases {
        let id = h.start("form", serde_json::json!({}));
        let t = h.tasks(id).pop().unwrap();
        let mut v = good_form();
        match &bad {
            Some(b) => v[field] = b.clone(),
            None => {
                v.as_object_mut().unwrap().remove(field);
            }
        }
        if h.engine.complete_task(id, t.task, vars(v), "u").is_ok() {
            accepted.push(format!(
                "{field} = {bad:?} (stored as {:?})",
                h.var(id, field)
            ));
        }
    }
    assert!(accepted.is_empty(), "accepted: {accepted:#?}");
}

#[test]
fn a_date_form_field_becomes_a_date_value() {
    let h = Harness::new(&[FORM]);
    let id = h.start("form", serde_json::json!({}));
    let t = h.tasks(id).pop().unwrap();
    h.engine
        .complete_task(id, t.task, vars(good_form()), "u")
        .unwrap();
    let when = h.var(id, "when");
    assert!(
        !matches!(when, Value::String(_)),
        "a date field should be usable in date arithmetic: {when:?}"
    );
}

#[test]
fn completing_a_task_of_another_instance_is_refused() {
    let h = Harness::new(&[FORM]);
    let a = h.start("form", serde_json::json!({}));
    let b = h.start("form", serde_json::json!({}));
    let ta = h.tasks(a).pop().unwrap();
    let good = serde_json::json!({"decision": "approve", "amount": 10, "discount": 0.1, "when": "2027-01-01", "ok": true});
    let r = h.engine.complete_task(b, ta.task, vars(good.clone()), "u");
    // Task ids may be per instance; if so the call completes b's own task, which is fine only if ids coincide.
    let tb = h.tasks(b).pop();
    println!(
        "cross complete: {r:?}, b task {:?}, a task {}",
        tb.map(|t| t.task),
        ta.task
    );
    let r = h.engine.complete_task(a, 999_999, vars(good), "u");
    assert!(matches!(r, Err(EngineError::UnknownTask { .. })), "{r:?}");
}

#[test]
fn interrupting_timer_on_a_subprocess_cancels_its_inner_tasks() {
    let h = Harness::new(&[r#"
process: sp
start: group
steps:
  group:
    subprocess:
      steps:
        split: { parallel: [a, b] }
        a: { task: A }
        b: { task: B }
    on:
      - timer: PT1H
        goto: timeout
    goto: done
  timeout:
    set: { timed_out: true }
  done:
    set: { done: true }
"#]);
    let id = h.start("sp", serde_json::json!({}));
    assert_eq!(h.tasks(id).len(), 2);
    h.advance(SignedDuration::from_hours(2));
    assert_eq!(h.var(id, "timed_out"), Value::Bool(true));
    assert_eq!(h.var(id, "done"), Value::Null);
    assert!(h.tasks(id).is_empty(), "inner tasks cancelled");
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
}

#[test]
fn non_interrupting_message_on_a_subprocess_keeps_it_running() {
    let h = Harness::new(&[r#"
process: sp
start: group
steps:
  group:
    subprocess:
      steps:
        a: { task: A }
    on:
      - message: poke
        key: k
        interrupt: false
        goto: poked
    goto: done
  poked:
    set: { poked: (poked ?? 0) + 1 }
  done:
    set: { done: true }
"#]);
    let id = h.start("sp", serde_json::json!({"k": "1"}));
    for _ in 0..2 {
        let m = Message {
            name: "poke".into(),
            key: "1".into(),
            ..Default::default()
        };
        let r = h.engine.correlate(m).unwrap();
        assert_eq!(r, Correlation::Delivered(vec![id]));
    }
    assert_eq!(h.var(id, "poked"), num("2"));
    let t = h.tasks(id).pop().unwrap();
    h.engine
        .complete_task(id, t.task, Default::default(), "u")
        .unwrap();
    assert_eq!(h.var(id, "done"), Value::Bool(true));
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
}

const CHILD_ERR: &str = r#"
process: child
start: fail
steps:
  fail:
    end: { error: NO_CREDIT, message: "no credit for {{who}}" }
"#;

#[test]
fn a_called_child_error_is_caught_by_the_call_activity_boundary() {
    let h = Harness::new(&[
        CHILD_ERR,
        r#"
process: parent
start: call
steps:
  call:
    process: child
    input: { who: name }
    on:
      - error: NO_CREDIT
        goto: caught
    goto: done
  caught:
    set: { caught: true }
  done:
    set: { done: true }
"#,
    ]);
    let id = h.start("parent", serde_json::json!({"name": "acme"}));
    h.run_jobs(|_| JobOutcome::Failed("no connector".into()));
    assert_eq!(
        h.var(id, "caught"),
        Value::Bool(true),
        "{:?}",
        h.history(id)
    );
    assert_eq!(h.var(id, "done"), Value::Null);
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
}

#[test]
fn an_uncaught_child_error_fails_the_parent() {
    let h = Harness::new(&[
        CHILD_ERR,
        r#"
process: parent
start: call
steps:
  call:
    process: child
    input: { who: name }
    goto: done
  done:
    set: { done: true }
"#,
    ]);
    let id = h.start("parent", serde_json::json!({"name": "acme"}));
    h.run_jobs(|_| JobOutcome::Failed("no connector".into()));
    let s = h.state(id);
    assert_eq!(s.status, InstanceStatus::Failed, "{:?}", h.history(id));
    assert_eq!(h.var(id, "done"), Value::Null);
}

#[test]
fn cancelling_a_parent_cancels_its_waiting_child() {
    let h = Harness::new(&[
        r#"
process: child
start: ask
steps:
  ask: { task: Child }
"#,
        r#"
process: parent
start: call
steps:
  call:
    process: child
"#,
    ]);
    let p = h.start("parent", serde_json::json!({}));
    h.run_jobs(|_| JobOutcome::Failed("x".into()));
    let child = h
        .engine
        .store()
        .tasks(100)
        .unwrap()
        .into_iter()
        .find(|t| t.process == "child")
        .unwrap();
    h.engine.cancel(p, "ops").unwrap();
    h.run_jobs(|_| JobOutcome::Failed("x".into()));
    let c = h.state(child.instance);
    assert_eq!(c.status, InstanceStatus::Cancelled);
    assert!(h.engine.store().tasks(100).unwrap().is_empty());
}

#[test]
fn runtime_expression_errors_name_the_variable_and_position() {
    let h = Harness::new(&[r#"
process: oops
start: calc
steps:
  calc:
    set: { x: lead.company.name }
"#]);
    let id = h.start("oops", serde_json::json!({"lead": {"name": "Acme"}}));
    let inc = h.engine.store().incidents_of(id).unwrap();
    assert_eq!(inc.len(), 1);
    let e = &inc[0].error;
    println!("incident: {e}");
    assert!(e.contains("lead.company.name"), "names the expression: {e}");
    assert!(e.contains("lead.company"), "names the variable: {e}");
    assert!(
        e.contains("column") || e.contains(":6:"),
        "gives a position: {e}"
    );
}

#[test]
fn overdue_cycle_fires_once_after_downtime() {
    let h = Harness::new(&[r#"
process: cyc
start: ask
steps:
  ask:
    task: Ask
    reminders: { every: P1D, goto: remind }
  remind:
    set: { n: (n ?? 0) + 1 }
"#]);
    let id = h.start("cyc", serde_json::json!({}));
    // Downtime: the clock jumps 10 days, then the runtime fires what is due.
    h.clock.advance(SignedDuration::from_hours(240));
    let now = h.clock.now_ts();
    h.engine.fire_due_timers(now, 100).unwrap();
    h.engine.fire_due_timers(now, 100).unwrap();
    assert_eq!(h.var(id, "n"), num("1"), "fires once, not 10 times");
    // The next one is a period after now, not in the past.
    let next = h.engine.store().next_timer().unwrap().unwrap();
    assert!(next.due > now, "{next:?}");
}

#[test]
fn dst_daily_timer_in_a_process_zone() {
    let h = Harness::new(&[r#"
process: dst
zone: Europe/Rome
start: ask
steps:
  ask:
    task: Ask
    on:
      - every: "30 2 * * *"
        interrupt: false
        goto: tick
  tick:
    set: { n: (n ?? 0) + 1 }
"#]);
    h.clock.set(ts("2027-03-27T12:00:00Z"));
    let id = h.start("dst", serde_json::json!({}));
    let t = h.engine.store().timers_of(id).unwrap();
    assert_eq!(
        t[0].due,
        ts("2027-03-28T01:30:00Z"),
        "02:30 in the gap runs at 03:30 CEST"
    );
    h.advance(SignedDuration::from_hours(24 * 3));
    assert_eq!(h.var(id, "n"), num("3"));
}

/// A loop without a wait state: the engine must not spin forever inside one transaction.
#[test]
fn a_tight_loop_without_wait_states_is_bounded() {
    let h = Harness::new(&[r#"
process: spin
start: inc
steps:
  inc:
    set: { i: i + 1 }
    then:
      - when: i < 100000000
        goto: inc
      - otherwise: done
  done:
    end: true
"#]);
    let (tx, rx) = std::sync::mpsc::channel();
    let engine_h = std::sync::Arc::new(h);
    let h2 = engine_h.clone();
    std::thread::spawn(move || {
        let id = h2.start("spin", serde_json::json!({"i": 0}));
        let _ = tx.send(id);
    });
    let r = rx.recv_timeout(std::time::Duration::from_secs(20));
    assert!(
        r.is_ok(),
        "start did not return within 20 s: the loop runs unbounded in one transaction"
    );
    let id = r.unwrap();
    println!(
        "status {:?}, incidents {:?}",
        engine_h.state(id).status,
        engine_h.engine.store().incidents_of(id).unwrap()
    );
}

#[test]
fn a_choice_form_with_number_options_accepts_a_number() {
    let h = Harness::new(&[r#"
process: rate
start: ask
steps:
  ask:
    task: Rate
    form: { rating: [1, 2, 3] }
"#]);
    let id = h.start("rate", serde_json::json!({}));
    let t = h.tasks(id).pop().unwrap();
    let r = h
        .engine
        .complete_task(id, t.task, vars(serde_json::json!({"rating": 2})), "u");
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(
        h.var(id, "rating"),
        num("2"),
        "a number option should stay a number"
    );
}

#[test]
fn unique_hit_policy_with_two_matches_raises_an_incident() {
    let h = Harness::new(&[r#"
process: u
tables:
  t:
    hit: unique
    inputs: [x]
    outputs: [y]
    rules:
      - when: ["> 1"]
        then: [1]
      - when: ["> 2"]
        then: [2]
start: r
steps:
  r: { rules: t, result: res }
"#]);
    let id = h.start("u", serde_json::json!({"x": 5}));
    let inc = h.engine.store().incidents_of(id).unwrap();
    assert_eq!(inc.len(), 1, "{:?}", h.history(id));
    println!("{}", inc[0].error);
}

#[test]
fn a_failing_condition_raises_an_incident_and_retry_reevaluates() {
    let h = Harness::new(&[r#"
process: c
start: ask
steps:
  ask:
    decide:
      - when: lead.score > 10
        goto: hot
      - otherwise: cold
  hot: { set: { t: '"hot"' } }
  cold: { set: { t: '"cold"' } }
"#]);
    let id = h.start("c", serde_json::json!({"lead": {}}));
    let inc = h.engine.store().incidents_of(id).unwrap();
    assert_eq!(inc.len(), 1, "{:?}", h.history(id));
    println!("incident: {}", inc[0].error);
    assert!(inc[0].error.contains("lead.score"), "{}", inc[0].error);
    h.engine.retry_incident(id, inc[0].incident, "ops").unwrap();
    let inc2 = h.engine.store().incidents_of(id).unwrap();
    assert_eq!(inc2.len(), 1, "still failing, one open incident");
}

/// An exclusive choice that feeds a `join: all`: only one of the two incoming paths can ever
/// arrive, so the instance waits forever at the join. `validate` accepts the file (exit 0)
/// although the issue asks it to catch "a flow that can never end".
#[test]
fn exclusive_choice_into_join_all_is_reported_or_does_not_hang() {
    let yaml = r#"
process: p
start: pick
steps:
  pick:
    decide:
      - when: x > 1
        goto: a
      - otherwise: b
  a: { set: { y: 1 }, goto: j }
  b: { set: { y: 2 }, goto: j }
  j: { join: all, goto: done }
  done: { set: { done: true } }
"#;
    let library = ciclo_engine::parse::load(
        &[("p.yaml".into(), yaml.into())],
        &ciclo_engine::parse::Catalog::standard(),
    );
    if library.problems.is_empty() {
        let h = Harness::new(&[yaml]);
        let id = h.start("p", serde_json::json!({"x": 5}));
        assert_eq!(
            h.state(id).status,
            InstanceStatus::Completed,
            "valid per `validate`, but stuck at the join: {:?}",
            h.history(id)
        );
    }
}

/// A parallel split where one branch ends on its own and the other goes to `join: all`.
#[test]
fn join_all_with_one_incoming_path_after_a_split() {
    let h = Harness::new(&[r#"
process: p
start: split
steps:
  split: { parallel: [a, b] }
  a: { set: { x: 1 }, goto: j }
  b: { end: true }
  j: { join: all, goto: done }
  done: { set: { done: true } }
"#]);
    let id = h.start("p", serde_json::json!({}));
    assert_eq!(h.var(id, "done"), Value::Bool(true), "{:?}", h.history(id));
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
}

/// Inclusive join after a loop: the branch that loops back must still be waited for.
#[test]
fn inclusive_join_waits_for_a_looping_branch() {
    let h = Harness::new(&[r#"
process: p
start: split
steps:
  split:
    branch:
      - when: true
        goto: a
      - when: true
        goto: b
      - otherwise: j
  a: { task: A, goto: j }
  b:
    task: B
    then:
      - when: again
        goto: b
      - otherwise: j
  j: { join: any, goto: done }
  done: { set: { n: (n ?? 0) + 1 } }
"#]);
    let id = h.start("p", serde_json::json!({}));
    let tasks = h.tasks(id);
    assert_eq!(tasks.len(), 2);
    let a = tasks.iter().find(|t| t.title == "A").unwrap().task;
    let b = tasks.iter().find(|t| t.title == "B").unwrap().task;
    h.engine
        .complete_task(id, b, vars(serde_json::json!({"again": true})), "u")
        .unwrap();
    h.engine
        .complete_task(id, a, Default::default(), "u")
        .unwrap();
    assert_eq!(
        h.var(id, "n"),
        Value::Null,
        "B is still running: the join must wait"
    );
    let b2 = h.tasks(id).pop().unwrap().task;
    h.engine
        .complete_task(id, b2, vars(serde_json::json!({"again": false})), "u")
        .unwrap();
    assert_eq!(h.var(id, "n"), num("1"));
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
}

/// MAX_STRING_BYTES (1 MiB) bounds the strings an evaluation produces, but `string()` of a
/// large list does not check it: here a ~6.9 MB string is produced.
#[test]
fn string_of_a_large_list_respects_the_string_limit() {
    use ciclo_engine::expr::{Context, Expr, MAX_STRING_BYTES};
    let mut scope = ciclo_engine::Vars::new();
    scope.insert(
        "huge".into(),
        Value::List((0..1_000_000).map(|i| Value::Number(i.into())).collect()),
    );
    let ctx = Context::utc(ts("2027-01-04T09:00:00Z"));
    let r = Expr::parse("string(huge)").unwrap().eval(&scope, &ctx);
    if let Ok(Value::String(s)) = &r {
        assert!(s.len() <= MAX_STRING_BYTES, "produced {} bytes", s.len());
    }
}

/// JSON numbers outside the decimal range: ARCHITECTURE.md says JSON numbers are read exactly.
/// Today `1e400` and a 33-digit integer silently become *strings* (so `amount > 100` later
/// fails with a confusing type error) and 1e-33 silently becomes 0.
#[test]
fn json_numbers_outside_the_decimal_range_are_not_silently_changed() {
    let mut wrong = vec![];
    for text in [
        "1e400",
        "123456789012345678901234567890123",
        "0.000000000000000000000000000000001",
    ] {
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        let v = std::panic::catch_unwind(|| Value::from_json(json)).expect("no panic");
        match &v {
            // Refused with a clear error is as good as exact: nothing changed silently.
            Err(_) => {}
            Ok(Value::Number(n)) if n.to_string() == text => {}
            Ok(other) => wrong.push(format!("{text} -> {other:?}")),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// An intermediate wait on a date already in the past fires at once (overdue), it does not
/// wait forever.
#[test]
fn a_wait_on_a_past_date_fires_at_once() {
    let h = Harness::new(&[r#"
process: past
start: w
steps:
  w: { wait: "2020-01-01T00:00", goto: done }
  done: { set: { done: true } }
"#]);
    let id = h.start("past", serde_json::json!({}));
    h.advance(SignedDuration::from_secs(1));
    assert_eq!(h.var(id, "done"), Value::Bool(true), "{:?}", h.history(id));
}

/// A cycle whose repetitions ended before the instance waits: what happens? It must not leave
/// the instance waiting forever without a trace.
#[test]
fn a_wait_on_an_expired_cycle_does_not_hang_silently() {
    let h = Harness::new(&[r#"
process: past
start: w
steps:
  w: { wait: "R2/2020-01-01T00:00/P1D", goto: done }
  done: { set: { done: true } }
"#]);
    let id = h.start("past", serde_json::json!({}));
    h.advance(SignedDuration::from_hours(48));
    let s = h.state(id);
    let incidents = h.engine.store().incidents_of(id).unwrap();
    let timers = h.engine.store().timers_of(id).unwrap();
    println!(
        "status {:?} done {:?} incidents {incidents:?} timers {timers:?}",
        s.status,
        h.var(id, "done")
    );
    assert!(
        h.var(id, "done") == Value::Bool(true) || !incidents.is_empty(),
        "the instance waits forever with no timer and no incident"
    );
}

//! Every element kind, run end to end through the engine on the in-memory store with a manual
//! clock: YAML in, events in, state and history out.

mod common;

use ciclo_engine::Value;
use ciclo_engine::runtime::{Correlation, EngineError, JobOutcome, Message, StartOptions};
use ciclo_engine::store::InstanceStatus;
use common::*;
use jiff::SignedDuration;

const SCORE: &str = r#"
process: score
start: score
steps:
  score:
    set: { score: amount * 2 }
    goto: check
  check:
    decide:
      - when: score > 100
        goto: approve
      - otherwise: done
  approve:
    set: { approved: true }
    goto: done
  done:
    end: true
"#;

#[test]
fn script_and_exclusive_gateway_run_to_the_end() {
    let h = Harness::new(&[SCORE]);
    let id = h.start("score", serde_json::json!({"amount": 500}));
    let s = h.state(id);
    assert_eq!(s.status, InstanceStatus::Completed);
    assert_eq!(s.vars["score"], num("1000"));
    assert_eq!(s.vars["approved"], Value::Bool(true));
    let low = h.start("score", serde_json::json!({"amount": 10}));
    assert_eq!(h.var(low, "approved"), Value::Null);
    assert_eq!(h.state(low).status, InstanceStatus::Completed);
}

#[test]
fn decimals_not_floats() {
    let h = Harness::new(&[r#"
process: money
start: calc
steps:
  calc:
    set:
      sum: 0.1 + 0.2
      vat: round(17.50 * 0.07, 2)
      third: 10 / 3
"#]);
    let id = h.start("money", serde_json::json!({}));
    assert_eq!(h.var(id, "sum"), num("0.3"));
    assert_eq!(h.var(id, "vat"), num("1.23"));
    assert!(matches!(h.var(id, "third"), Value::Number(n) if n.to_string().starts_with("3.333")));
}

const PAYMENT: &str = r#"
process: wait-payment
start: work
steps:
  work:
    call: test.prepare
    goto: wait
  wait:
    receive: payment
    key: invoice
    goto: done
  done:
    end: true
"#;

/// Issue test 3: a message sent before the instance waits is buffered for its time to live and
/// delivered exactly once; one whose time to live ran out never is; a repeated id has one
/// effect.
#[test]
fn early_message_is_buffered_and_correlated_once() {
    let h = Harness::new(&[PAYMENT]);
    let id = h.start("wait-payment", serde_json::json!({"invoice": "INV-1"}));
    h.clock.advance(SignedDuration::from_millis(1));
    let message = Message {
        name: "payment".into(),
        key: "INV-1".into(),
        vars: vars(serde_json::json!({"paid": 100})),
        id: Some("m-1".into()),
        ttl: Some(SignedDuration::from_mins(10)),
    };
    assert_eq!(
        h.engine.correlate(message.clone()).unwrap(),
        Correlation::Buffered
    );
    assert_eq!(
        h.engine.correlate(message.clone()).unwrap(),
        Correlation::Duplicate
    );
    assert_eq!(h.state(id).status, InstanceStatus::Active);
    h.run_jobs(|_| JobOutcome::Done(Default::default()));
    let s = h.state(id);
    assert_eq!(s.status, InstanceStatus::Completed);
    assert_eq!(s.vars["paid"], num("100"));
    assert!(
        h.engine
            .store()
            .messages("payment", "INV-1")
            .unwrap()
            .is_empty()
    );
    let received = h
        .history(id)
        .iter()
        .filter(|l| l.starts_with("message received"))
        .count();
    assert_eq!(received, 1);
    // The same id again, after delivery: still one effect.
    assert_eq!(h.engine.correlate(message).unwrap(), Correlation::Duplicate);

    // A second instance: its message's time to live runs out before it waits.
    let late = h.start("wait-payment", serde_json::json!({"invoice": "INV-2"}));
    let expiring = Message {
        name: "payment".into(),
        key: "INV-2".into(),
        vars: vars(serde_json::json!({"paid": 5})),
        id: Some("m-2".into()),
        ttl: Some(SignedDuration::from_secs(1)),
    };
    assert_eq!(h.engine.correlate(expiring).unwrap(), Correlation::Buffered);
    h.clock.advance(SignedDuration::from_secs(2));
    h.run_jobs(|_| JobOutcome::Done(Default::default()));
    let s = h.state(late);
    assert_eq!(
        s.status,
        InstanceStatus::Active,
        "an expired message is never delivered"
    );
    assert_eq!(s.vars.get("paid"), None);
    // A message with no time to live and nobody waiting is dropped.
    let dropped = Message {
        name: "payment".into(),
        key: "nobody".into(),
        ..Default::default()
    };
    assert_eq!(h.engine.correlate(dropped).unwrap(), Correlation::Dropped);
    // A fresh message for the waiting instance is delivered at once.
    let now = Message {
        name: "payment".into(),
        key: "INV-2".into(),
        vars: vars(serde_json::json!({"paid": 7})),
        ..Default::default()
    };
    assert_eq!(
        h.engine.correlate(now).unwrap(),
        Correlation::Delivered(vec![late])
    );
    assert_eq!(h.var(late, "paid"), num("7"));
}

const REMINDERS: &str = r#"
process: approve
start: approve
steps:
  approve:
    task: Approve
    form: { decision: [approve, reject] }
    reminders: { every: P1D, goto: remind }
    goto: done
  remind:
    set: { reminders: (reminders ?? 0) + 1 }
  done:
    end: true
"#;

/// Issue test 4: a non-interrupting reminder every day; after 2.5 days two have fired; once the
/// task completes, the timer is gone and nothing fires again.
#[test]
fn reminders_fire_daily_until_the_task_completes() {
    let h = Harness::new(&[REMINDERS]);
    let id = h.start("approve", serde_json::json!({}));
    h.advance(SignedDuration::from_hours(60));
    assert_eq!(h.var(id, "reminders"), num("2"));
    let task = h.tasks(id).pop().expect("open task");
    h.engine
        .complete_task(
            id,
            task.task,
            vars(serde_json::json!({"decision": "approve"})),
            "maria",
        )
        .unwrap();
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
    assert!(h.engine.store().timers_of(id).unwrap().is_empty());
    assert_eq!(h.advance(SignedDuration::from_hours(24 * 5)), 0);
    assert_eq!(h.var(id, "reminders"), num("2"));
    assert!(
        h.history(id)
            .contains(&"task completed approve by maria".to_string())
    );
}

#[test]
fn form_values_are_checked_and_duplicates_absorbed() {
    let h = Harness::new(&[REMINDERS]);
    let id = h.start("approve", serde_json::json!({}));
    let task = h.tasks(id).pop().expect("open task");
    let bad = h.engine.complete_task(
        id,
        task.task,
        vars(serde_json::json!({"decision": "maybe"})),
        "maria",
    );
    match bad {
        Err(EngineError::Refused(e)) => assert!(
            e.to_string()
                .contains("decision: must be one of approve, reject"),
            "{e}"
        ),
        other => panic!("expected a refused form, got {other:?}"),
    }
    assert_eq!(h.state(id).status, InstanceStatus::Active);
    h.engine
        .complete_task(
            id,
            task.task,
            vars(serde_json::json!({"decision": "reject"})),
            "maria",
        )
        .unwrap();
    let again = h.engine.complete_task(
        id,
        task.task,
        vars(serde_json::json!({"decision": "approve"})),
        "maria",
    );
    assert!(matches!(again, Err(EngineError::UnknownTask { .. })));
    assert_eq!(h.var(id, "decision"), Value::String("reject".into()));
}

const ORDER: &str = r#"
process: order
start: send
steps:
  send:
    call: erp.create-order
    input: { number: order }
    output: { erp_number: result.number }
    retry: { attempts: 3, backoff: PT1S }
    on:
      - error: CUSTOMER_BLOCKED
        goto: blocked
    goto: done
  blocked:
    task: Unblock customer
  done:
    end: true
"#;

#[test]
fn jobs_retry_with_the_same_key_then_raise_an_incident_that_can_be_retried() {
    let h = Harness::new(&[ORDER]);
    let id = h.start("order", serde_json::json!({"order": "SO-1"}));
    let mut keys = Vec::new();
    // Fails every time: 3 attempts, backoff between them, then an incident.
    for _ in 0..3 {
        h.run_jobs(|job| {
            keys.push(job.key.clone());
            JobOutcome::Failed("ERP down".into())
        });
        h.clock.advance(SignedDuration::from_secs(10));
    }
    assert_eq!(keys.len(), 3);
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "one idempotency key for every attempt: {keys:?}"
    );
    let incidents = h.engine.store().incidents_of(id).unwrap();
    assert_eq!(incidents.len(), 1);
    assert!(incidents[0].error.contains("ERP down"));
    assert!(h.engine.store().jobs_of(id).unwrap().is_empty());
    // Retrying the incident runs the job again; this time it works.
    h.engine
        .retry_incident(id, incidents[0].incident, "ops")
        .unwrap();
    // A retried incident starts a new round of attempts: the first runs at once, not after
    // a backoff grown from every attempt so far.
    let retried = h
        .engine
        .store()
        .jobs_of(id)
        .unwrap()
        .pop()
        .expect("job again");
    assert_eq!(retried.due, h.clock.now_ts());
    assert_eq!(retried.attempt, 4);
    h.clock.advance(SignedDuration::from_secs(10));
    h.run_jobs(|job| {
        keys.push(job.key.clone());
        JobOutcome::Done(vars(serde_json::json!({"number": "ERP-77"})))
    });
    assert_eq!(keys.len(), 4);
    assert_eq!(keys[3], keys[0]);
    assert_eq!(h.var(id, "erp_number"), Value::String("ERP-77".into()));
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
    assert!(h.engine.store().incidents_of(id).unwrap().is_empty());
}

#[test]
fn a_business_error_takes_the_error_boundary() {
    let h = Harness::new(&[ORDER]);
    let id = h.start("order", serde_json::json!({"order": "SO-2"}));
    h.run_jobs(|_| JobOutcome::BusinessError {
        code: "CUSTOMER_BLOCKED".into(),
        message: "credit hold".into(),
    });
    let tasks = h.tasks(id);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].title, "Unblock customer");
    let Value::Map(error) = h.var(id, "error") else {
        panic!("error variable")
    };
    assert_eq!(error["code"], Value::String("CUSTOMER_BLOCKED".into()));
}

#[test]
fn a_stale_job_answer_is_ignored() {
    let h = Harness::new(&[ORDER]);
    let id = h.start("order", serde_json::json!({"order": "SO-3"}));
    let first = h.engine.store().jobs_of(id).unwrap().pop().unwrap();
    h.engine
        .job_result(&first, JobOutcome::Failed("timeout".into()))
        .unwrap();
    // The first attempt answers again, late: nothing changes.
    h.engine
        .job_result(
            &first,
            JobOutcome::Done(vars(serde_json::json!({"number": "X"}))),
        )
        .unwrap();
    assert_eq!(h.var(id, "erp_number"), Value::Null);
    let second = h.engine.store().jobs_of(id).unwrap().pop().unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(second.key, first.key);
}

#[test]
fn parallel_fork_and_join() {
    let h = Harness::new(&[r#"
process: fork
start: split
steps:
  split:
    parallel: [a, b]
  a:
    task: A
    goto: both
  b:
    set: { b: true }
    goto: both
  both:
    join: all
    goto: after
  after:
    set: { joined: (joined ?? 0) + 1 }
"#]);
    let id = h.start("fork", serde_json::json!({}));
    assert_eq!(h.state(id).status, InstanceStatus::Active);
    assert_eq!(h.var(id, "joined"), Value::Null);
    let task = h.tasks(id).pop().unwrap();
    h.engine
        .complete_task(id, task.task, Default::default(), "u")
        .unwrap();
    assert_eq!(h.var(id, "joined"), num("1"));
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
}

#[test]
fn inclusive_fork_and_join_wait_only_for_the_paths_taken() {
    let h = Harness::new(&[r#"
process: incl
start: split
steps:
  split:
    branch:
      - when: amount > 10
        goto: a
      - when: amount > 100
        goto: b
      - otherwise: c
  a:
    task: A
    goto: merge
  b:
    task: B
    goto: merge
  c:
    set: { c: true }
    goto: merge
  merge:
    join: any
    goto: after
  after:
    set: { merged: (merged ?? 0) + 1 }
"#]);
    let one = h.start("incl", serde_json::json!({"amount": 50}));
    assert_eq!(h.tasks(one).len(), 1);
    let t = h.tasks(one).pop().unwrap();
    h.engine
        .complete_task(one, t.task, Default::default(), "u")
        .unwrap();
    assert_eq!(h.var(one, "merged"), num("1"));
    assert_eq!(h.state(one).status, InstanceStatus::Completed);

    let two = h.start("incl", serde_json::json!({"amount": 500}));
    assert_eq!(h.tasks(two).len(), 2);
    let t = h.tasks(two).pop().unwrap();
    h.engine
        .complete_task(two, t.task, Default::default(), "u")
        .unwrap();
    assert_eq!(
        h.var(two, "merged"),
        Value::Null,
        "waits for the other path"
    );
    let t = h.tasks(two).pop().unwrap();
    h.engine
        .complete_task(two, t.task, Default::default(), "u")
        .unwrap();
    assert_eq!(h.var(two, "merged"), num("1"));

    let none = h.start("incl", serde_json::json!({"amount": 1}));
    assert_eq!(h.var(none, "merged"), num("1"));
}

#[test]
fn event_based_gateway_takes_the_first_event() {
    let h = Harness::new(&[r#"
process: race
start: first
steps:
  first:
    race:
      - message: paid
        key: invoice
        goto: paid
      - timer: P30D
        goto: overdue
  paid:
    set: { outcome: '"paid"' }
  overdue:
    set: { outcome: '"overdue"' }
"#]);
    let a = h.start("race", serde_json::json!({"invoice": "A"}));
    let b = h.start("race", serde_json::json!({"invoice": "B"}));
    let m = Message {
        name: "paid".into(),
        key: "A".into(),
        ..Default::default()
    };
    assert_eq!(
        h.engine.correlate(m).unwrap(),
        Correlation::Delivered(vec![a])
    );
    h.advance(SignedDuration::from_hours(24 * 31));
    assert_eq!(h.var(a, "outcome"), Value::String("paid".into()));
    assert_eq!(h.var(b, "outcome"), Value::String("overdue".into()));
    assert!(h.engine.store().timers_of(a).unwrap().is_empty());
    assert!(
        h.engine
            .store()
            .subscriptions("paid", "B")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn intermediate_timer_and_interrupting_escalation() {
    let h = Harness::new(&[r#"
process: timers
start: pause
steps:
  pause:
    wait: P1D
    goto: review
  review:
    task: Review
    escalate: { after: P2D, goto: boss }
    goto: done
  boss:
    task: Boss reviews
    goto: done
  done:
    end: true
"#]);
    let id = h.start("timers", serde_json::json!({}));
    assert!(h.tasks(id).is_empty());
    h.advance(SignedDuration::from_hours(25));
    assert_eq!(h.tasks(id)[0].title, "Review");
    h.advance(SignedDuration::from_hours(49));
    let tasks = h.tasks(id);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].title, "Boss reviews");
}

#[test]
fn subprocess_error_end_is_caught_by_its_boundary() {
    let h = Harness::new(&[r#"
process: sub
start: group
steps:
  group:
    subprocess:
      start: check
      steps:
        check:
          decide:
            - when: amount > 100
              goto: fail
            - otherwise: fine
        fail:
          end: { error: TOO_MUCH, message: "amount {{amount}} too high" }
        fine:
          set: { inner: true }
    on:
      - error: TOO_MUCH
        goto: handle
    goto: done
  handle:
    set: { handled: true }
  done:
    end: true
"#]);
    let ok = h.start("sub", serde_json::json!({"amount": 5}));
    assert_eq!(h.var(ok, "inner"), Value::Bool(true));
    assert_eq!(h.var(ok, "handled"), Value::Null);
    assert_eq!(h.state(ok).status, InstanceStatus::Completed);
    let bad = h.start("sub", serde_json::json!({"amount": 500}));
    assert_eq!(h.var(bad, "handled"), Value::Bool(true));
    let Value::Map(error) = h.var(bad, "error") else {
        panic!("error var")
    };
    assert_eq!(
        error["message"],
        Value::String("amount 500 too high".into())
    );
}

#[test]
fn uncaught_error_fails_the_instance_and_terminate_ends_everything() {
    let h = Harness::new(&[
        r#"
process: boom
start: fail
steps:
  fail:
    end: { error: NOPE }
"#,
        r#"
process: term
start: split
steps:
  split:
    parallel: [wait, stop]
  wait:
    task: Never done
  stop:
    end: terminate
"#,
    ]);
    let a = h.start("boom", serde_json::json!({}));
    assert_eq!(h.state(a).status, InstanceStatus::Failed);
    let b = h.start("term", serde_json::json!({}));
    assert_eq!(h.state(b).status, InstanceStatus::Terminated);
    assert!(h.tasks(b).is_empty());
}

#[test]
fn multi_instance_parallel_and_sequential_collect_in_order() {
    let h = Harness::new(&[
        r#"
process: lines
start: totals
steps:
  totals:
    each: { in: lines, as: line, parallel: true, collect: { totals: line.qty * line.price } }
    set: { seen: (seen ?? 0) + 1 }
"#,
        r#"
process: approvals
start: ask
steps:
  ask:
    each: { in: approvers, as: who, parallel: false, collect: { answers: decision } }
    task: "Approve as {{who}}"
    form: { decision: [yes, no] }
"#,
    ]);
    let id = h.start(
        "lines",
        serde_json::json!({"lines": [{"qty": 2, "price": 1.5}, {"qty": 3, "price": 10}]}),
    );
    assert_eq!(h.var(id, "totals"), Value::List(vec![num("3"), num("30")]));
    assert_eq!(h.var(id, "seen"), num("2"));

    let seq = h.start(
        "approvals",
        serde_json::json!({"approvers": ["ann", "bob"]}),
    );
    let tasks = h.tasks(seq);
    assert_eq!(tasks.len(), 1, "sequential: one at a time");
    assert_eq!(tasks[0].title, "Approve as ann");
    h.engine
        .complete_task(
            seq,
            tasks[0].task,
            vars(serde_json::json!({"decision": "yes"})),
            "ann",
        )
        .unwrap();
    let tasks = h.tasks(seq);
    assert_eq!(tasks[0].title, "Approve as bob");
    h.engine
        .complete_task(
            seq,
            tasks[0].task,
            vars(serde_json::json!({"decision": "no"})),
            "bob",
        )
        .unwrap();
    assert_eq!(h.state(seq).status, InstanceStatus::Completed);
    assert_eq!(
        h.var(seq, "answers"),
        Value::List(vec![Value::from("yes"), Value::from("no")])
    );
}

#[test]
fn call_activity_maps_inputs_and_outputs() {
    let h = Harness::new(&[
        r#"
process: child
start: work
steps:
  work:
    set: { doubled: n * 2 }
"#,
        r#"
process: parent
start: call
steps:
  call:
    process: child
    input: { n: value }
    output: { result: child.doubled }
    goto: done
  done:
    end: true
"#,
        r#"
process: waiting-child
start: ask
steps:
  ask:
    task: Child task
"#,
        r#"
process: waiting-parent
start: call
steps:
  call:
    process: waiting-child
    goto: done
  done:
    set: { back: true }
"#,
    ]);
    let id = h.start("parent", serde_json::json!({"value": 21}));
    assert_eq!(h.var(id, "result"), num("42"));
    assert_eq!(h.state(id).status, InstanceStatus::Completed);

    // A child that waits: the parent wakes when it ends, through the durable job queue.
    let p = h.start("waiting-parent", serde_json::json!({}));
    let child_task = h
        .engine
        .store()
        .tasks(100)
        .unwrap()
        .into_iter()
        .find(|t| t.process == "waiting-child")
        .unwrap();
    h.engine
        .complete_task(
            child_task.instance,
            child_task.task,
            Default::default(),
            "u",
        )
        .unwrap();
    h.run_jobs(|_| JobOutcome::Failed("no connector".into()));
    assert_eq!(h.var(p, "back"), Value::Bool(true));
}

/// A call activity's `output:` is evaluated over the caller's variables, the child's being
/// under `child`: a bare name of the child's (`status: status`) raises an incident whose
/// message says to write `child.status`, and `child.status` brings the value back.
#[test]
fn call_activity_output_reads_the_child_under_child_and_says_so() {
    let child = r#"
process: approval
start: ask
steps:
  ask:
    task: Approve
    form: { decision: [approve, reject] }
    goto: decided
  decided: { set: { status: '"sent"' } }
"#;
    let wrong = r#"
process: wrong-caller
start: call
steps:
  call:
    process: approval
    output: { status: status }
    goto: done
  done: { end: true }
"#;
    let right = r#"
process: right-caller
start: call
steps:
  call:
    process: approval
    output: { status: child.status, extra: child.missing ?? "none" }
    then:
      - when: status == "sent"
        goto: done
      - otherwise: done
  done: { end: true }
"#;
    let h = Harness::new(&[child, wrong, right]);
    for (caller, expect_incident) in [("wrong-caller", true), ("right-caller", false)] {
        let id = h.start(caller, serde_json::json!({}));
        let task = h
            .engine
            .store()
            .tasks(100)
            .unwrap()
            .into_iter()
            .find(|t| t.process == "approval")
            .unwrap();
        h.engine
            .complete_task(
                task.instance,
                task.task,
                vars(serde_json::json!({"decision": "approve"})),
                "u",
            )
            .unwrap();
        h.run_jobs(|_| JobOutcome::Failed("no connector".into()));
        let incidents: Vec<_> = h
            .engine
            .store()
            .incidents()
            .unwrap()
            .into_iter()
            .filter(|i| i.instance == id)
            .collect();
        if expect_incident {
            assert_eq!(incidents.len(), 1, "{incidents:?}");
            assert_eq!(incidents[0].step, "call");
            assert!(
                incidents[0].error.contains("write `status: child.status`"),
                "{}",
                incidents[0].error
            );
            assert_eq!(h.state(id).status, InstanceStatus::Active);
        } else {
            assert!(incidents.is_empty(), "{incidents:?}");
            assert_eq!(h.var(id, "status"), Value::String("sent".into()));
            assert_eq!(h.var(id, "extra"), Value::String("none".into()));
            assert_eq!(h.state(id).status, InstanceStatus::Completed);
        }
    }
}

#[test]
fn decision_table_first_and_collect_sum() {
    let h = Harness::new(&[r#"
process: rate
tables:
  fit:
    hit: sum
    inputs: [country, employees]
    outputs: [points]
    rules:
      - when: [[IT, SM], "-"]
        then: [30]
      - when: ["-", "> 100"]
        then: [20]
  band:
    hit: first
    inputs: [fit]
    outputs: [band]
    rules:
      - when: [">= 50"]
        then: ['"hot"']
      - when: [">= 20"]
        then: ['"warm"']
      - when: ["-"]
        then: ['"cold"']
start: fit
steps:
  fit:
    rules: fit
    result: fit
    goto: band
  band:
    rules: band
    result: band
"#]);
    let hot = h.start(
        "rate",
        serde_json::json!({"country": "IT", "employees": 500}),
    );
    assert_eq!(h.var(hot, "fit"), num("50"));
    assert_eq!(h.var(hot, "band"), Value::from("hot"));
    let cold = h.start("rate", serde_json::json!({"country": "FR", "employees": 5}));
    assert_eq!(h.var(cold, "band"), Value::from("cold"));
}

#[test]
fn a_bad_expression_at_run_time_raises_an_incident() {
    let h = Harness::new(&[r#"
process: oops
start: calc
steps:
  calc:
    set: { x: amount / divisor }
"#]);
    let id = h.start("oops", serde_json::json!({"amount": 1, "divisor": 0}));
    let incidents = h.engine.store().incidents_of(id).unwrap();
    assert_eq!(incidents.len(), 1);
    assert!(
        incidents[0].error.contains("amount / divisor"),
        "{}",
        incidents[0].error
    );
    assert_eq!(h.state(id).status, InstanceStatus::Active);
}

#[test]
fn running_instances_keep_their_version() {
    let h = Harness::new(&[REMINDERS]);
    let old = h.start("approve", serde_json::json!({}));
    let v2 = REMINDERS.replace("task: Approve", "task: Approve now");
    let deployed = h.engine.deploy("p0.yaml", &v2).unwrap();
    assert_eq!(deployed[0].version, 2);
    assert!(h.engine.deploy("p0.yaml", &v2).unwrap()[0].unchanged);
    let new = h.start("approve", serde_json::json!({}));
    assert_eq!(h.state(old).version, 1);
    assert_eq!(h.state(new).version, 2);
    assert_eq!(h.tasks(new)[0].title, "Approve now");
    let t = h.tasks(old).pop().unwrap();
    h.engine
        .complete_task(
            old,
            t.task,
            vars(serde_json::json!({"decision": "approve"})),
            "u",
        )
        .unwrap();
    assert_eq!(h.state(old).status, InstanceStatus::Completed);
}

#[test]
fn message_start_and_request_keys() {
    let h = Harness::new(&[
        r#"
process: on-lead
start:
  goto: note
  message: lead-arrived
steps:
  note:
    set: { noted: true }
"#,
        SCORE,
    ]);
    let m = Message {
        name: "lead-arrived".into(),
        key: "L-1".into(),
        ..Default::default()
    };
    let Correlation::Started(id) = h.engine.correlate(m).unwrap() else {
        panic!("started")
    };
    assert_eq!(h.var(id, "noted"), Value::Bool(true));
    assert_eq!(h.state(id).business_key.as_deref(), Some("L-1"));

    let options = StartOptions {
        vars: vars(serde_json::json!({"amount": 1})),
        request_key: Some("req-1".into()),
        ..Default::default()
    };
    let a = h.engine.start("score", options.clone()).unwrap();
    let b = h.engine.start("score", options).unwrap();
    assert_eq!(a, b);
}

#[test]
fn retention_removes_old_finished_instances() {
    let h = Harness::new(&[SCORE, REMINDERS]);
    let done = h.start("score", serde_json::json!({"amount": 1}));
    let open = h.start("approve", serde_json::json!({}));
    h.clock.advance(SignedDuration::from_hours(24 * 40));
    assert_eq!(
        h.engine
            .remove_finished(SignedDuration::from_hours(24 * 30))
            .unwrap(),
        1
    );
    assert!(h.engine.instance(done).unwrap().is_none());
    assert!(h.engine.store().history(done).unwrap().is_empty());
    assert!(h.engine.instance(open).unwrap().is_some());
}

#[test]
fn history_names_each_step_and_actor() {
    let h = Harness::new(&[SCORE]);
    let id = h.start("score", serde_json::json!({"amount": 500}));
    let history = h.history(id);
    assert_eq!(history.first().map(String::as_str), Some("started by api"));
    assert!(
        history.contains(&"step score by api".to_string()),
        "{history:?}"
    );
    assert!(
        history.contains(&"step approve by api".to_string()),
        "{history:?}"
    );
    assert_eq!(history.last().map(String::as_str), Some("completed by api"));
}

#[test]
fn timer_start_event_starts_instances_on_schedule() {
    let h = Harness::new(&[r#"
process: daily
start:
  goto: report
  timer: "0 9 * * *"
  zone: Europe/Rome
steps:
  report:
    set: { ran: true }
"#]);
    // 2027-01-04T09:00Z is 10:00 in Rome: the first run is the next day at 08:00Z.
    h.engine.arm_start_timers().unwrap();
    h.engine.arm_start_timers().unwrap();
    let timers = h.engine.store().timers_of(uuid::Uuid::nil()).unwrap();
    assert_eq!(timers.len(), 1, "arming twice keeps one timer");
    assert_eq!(timers[0].due, ts("2027-01-05T08:00:00Z"));
    h.advance(SignedDuration::from_hours(24 * 3));
    let started = h
        .engine
        .store()
        .instances(&Default::default())
        .unwrap()
        .into_iter()
        .filter(|i| i.process == "daily")
        .count();
    assert_eq!(started, 3, "one instance per day");
}

/// After downtime, an overdue cycle fires once, not once per missed period, and carries on
/// from the next period after now.
#[test]
fn overdue_cycle_fires_once_after_downtime() {
    let h = Harness::new(&[REMINDERS]);
    let id = h.start("approve", serde_json::json!({}));
    // The server was down for five days: nothing fired meanwhile.
    h.clock.advance(SignedDuration::from_hours(24 * 5 + 1));
    let now = h.clock.now_ts();
    assert_eq!(h.engine.fire_due_timers(now, 100).unwrap(), 1);
    assert_eq!(h.engine.fire_due_timers(now, 100).unwrap(), 0);
    assert_eq!(h.var(id, "reminders"), num("1"));
    let next = h.engine.store().timers_of(id).unwrap()[0].due;
    assert!(
        next > now && next <= now + SignedDuration::from_hours(24),
        "{next}"
    );
}

#[test]
fn tasks_are_offered_to_groups_claimed_once_and_reassigned() {
    let h = Harness::new(&[r#"
process: offer
start: ask
steps:
  ask:
    task: Decide
    candidates: [sales-managers]
"#]);
    let id = h.start("offer", serde_json::json!({}));
    let managers = vec!["sales-managers".to_string()];
    assert_eq!(
        h.engine
            .tasks_for("ann", &managers, false, 10)
            .unwrap()
            .len(),
        1
    );
    assert!(
        h.engine
            .tasks_for("bob", &[], false, 10)
            .unwrap()
            .is_empty()
    );
    let task = h.tasks(id)[0].task;
    h.engine
        .assign_task(id, task, Some("ann"), "ann", true)
        .unwrap();
    let taken = h.engine.assign_task(id, task, Some("carl"), "carl", true);
    assert!(matches!(taken, Err(EngineError::TaskTaken { ref assignee, .. }) if assignee == "ann"));
    // Claimed: no longer offered to the rest of the group.
    assert!(
        h.engine
            .tasks_for("carl", &managers, false, 10)
            .unwrap()
            .is_empty()
    );
    h.engine
        .assign_task(id, task, Some("bob"), "admin", false)
        .unwrap();
    assert_eq!(h.engine.tasks_for("bob", &[], false, 10).unwrap().len(), 1);
    assert!(
        h.history(id)
            .contains(&"task assigned ask by admin".to_string())
    );
    assert!(
        h.history(id)
            .contains(&"task claimed ask by ann".to_string())
    );
}

/// Texts that are stored and shown later (business keys, message names and keys) cannot carry
/// control characters or be unbounded: a line break would fake a line in a terminal or a log.
#[test]
fn control_characters_and_huge_keys_are_refused() {
    let h = Harness::new(&[SCORE]);
    let options = |key: &str| StartOptions {
        vars: vars(serde_json::json!({"amount": 1})),
        business_key: Some(key.to_string()),
        ..Default::default()
    };
    for bad in [
        "Q-1\r\nfake line",
        "\u{1b}[31mRED",
        "\u{202E}evil",
        &"x".repeat(201),
    ] {
        let refused = h.engine.start("score", options(bad));
        assert!(
            matches!(refused, Err(EngineError::BadInput(_))),
            "{bad:?}: {refused:?}"
        );
    }
    assert!(
        h.engine
            .start("score", options("Q-2027/7 Müller & Co"))
            .is_ok()
    );
    let message = Message {
        name: "paid\u{0}".into(),
        key: "k".into(),
        ..Default::default()
    };
    assert!(matches!(
        h.engine.correlate(message),
        Err(EngineError::BadInput(_))
    ));
}

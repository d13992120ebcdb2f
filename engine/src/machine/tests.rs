//! The state machine alone: no store, no runtime, no tokio. Each test feeds events with an
//! explicit `now` and reads the commands back, as a compact text per command.

use jiff::Timestamp;

use super::*;
use crate::parse::{Catalog, load_one};

fn def(yaml: &str) -> Definition {
    load_one("t.yaml", yaml, &Catalog::standard()).unwrap_or_else(|p| {
        panic!(
            "{}",
            p.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn at(s: &str) -> Timestamp {
    s.parse().expect("instant")
}

fn begin(d: &Definition, now: Timestamp) -> (InstanceState, Vec<Command>) {
    let mut out = Vec::new();
    let request = StartRequest {
        id: uuid::Uuid::nil(),
        version: 1,
        start: 0,
        vars: Vars::new(),
        business_key: None,
        actor: "t".into(),
        parent: None,
    };
    let state = start(d, request, now, &mut out).expect("starts");
    (state, out)
}

/// A command as one short line, leaving out history.
fn brief(commands: &[Command]) -> Vec<String> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::History { .. } => None,
            Command::ScheduleTimer { timer, due, .. } => Some(format!("timer {timer} at {due}")),
            Command::CancelTimer { timer } => Some(format!("cancel timer {timer}")),
            Command::OpenTask { task, title, .. } => Some(format!("task {task} {title}")),
            Command::CancelTask { task } => Some(format!("close task {task}")),
            Command::EnqueueJob {
                job, attempt, due, ..
            } => Some(format!("job {job} attempt {attempt} at {due}")),
            Command::CancelJob { job } => Some(format!("cancel job {job}")),
            Command::Subscribe {
                subscription,
                name,
                key,
            } => Some(format!("subscribe {subscription} {name}/{key}")),
            Command::Unsubscribe { subscription } => Some(format!("unsubscribe {subscription}")),
            other => Some(format!("{other:?}")),
        })
        .collect()
}

#[test]
fn user_task_with_reminder_and_escalation() {
    let d = def(r#"
process: p
start: ask
steps:
  ask:
    task: Ask
    reminders: { every: PT1H, goto: nudge }
    escalate: { after: PT3H, goto: boss }
  nudge:
    set: { nudged: true }
  boss:
    task: Boss
"#);
    let now = at("2027-01-01T00:00:00Z");
    let (mut s, out) = begin(&d, now);
    assert_eq!(
        brief(&out),
        [
            "task 2 Ask",
            "timer 3 at 2027-01-01T01:00:00Z",
            "timer 4 at 2027-01-01T03:00:00Z"
        ]
    );
    // The reminder fires and re-arms; the task stays.
    let mut out = Vec::new();
    assert_eq!(
        apply(
            &d,
            &mut s,
            Event::TimerFired { timer: 3 },
            at("2027-01-01T01:00:00Z"),
            &mut out
        ),
        Ok(Applied::Changed)
    );
    assert_eq!(brief(&out), ["timer 3 at 2027-01-01T02:00:00Z"]);
    assert_eq!(s.vars.get("nudged"), Some(&Value::Bool(true)));
    // Escalation interrupts: task and reminder go, the boss gets a task.
    let mut out = Vec::new();
    apply(
        &d,
        &mut s,
        Event::TimerFired { timer: 4 },
        at("2027-01-01T03:00:00Z"),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        brief(&out),
        [
            "cancel timer 3",
            "cancel timer 4",
            "close task 2",
            "task 6 Boss"
        ]
    );
    // A late firing of the cancelled reminder is absorbed.
    let mut out = Vec::new();
    assert_eq!(
        apply(
            &d,
            &mut s,
            Event::TimerFired { timer: 3 },
            at("2027-01-01T04:00:00Z"),
            &mut out
        ),
        Ok(Applied::Ignored("no pending timer with this id"))
    );
    assert!(out.is_empty());
}

#[test]
fn job_retries_back_off_and_stale_answers_are_dropped() {
    let d = def(r#"
process: p
start: call
steps:
  call:
    call: erp.create-order
    retry: { attempts: 3, backoff: PT10S }
"#);
    let now = at("2027-01-01T00:00:00Z");
    let (mut s, out) = begin(&d, now);
    assert_eq!(brief(&out), ["job 2 attempt 1 at 2027-01-01T00:00:00Z"]);
    let mut out = Vec::new();
    apply(
        &d,
        &mut s,
        Event::JobFailed {
            job: 2,
            attempt: 1,
            error: "503".into(),
            retries_left: None,
        },
        now,
        &mut out,
    )
    .unwrap();
    let line = &brief(&out)[0];
    assert!(
        line.starts_with("job 2 attempt 2 at 2027-01-01T00:00:"),
        "{line}"
    );
    // Backoff 10 s with jitter between 0.8 and 1.2.
    let Some(Command::EnqueueJob { due, .. }) =
        out.iter().find(|c| matches!(c, Command::EnqueueJob { .. }))
    else {
        panic!()
    };
    let wait = due.duration_since(now).as_secs();
    assert!((8..=12).contains(&wait), "{wait}");
    // Same inputs, same jitter: the machine is a function.
    let (mut again, _) = begin(&d, now);
    let mut out2 = Vec::new();
    apply(
        &d,
        &mut again,
        Event::JobFailed {
            job: 2,
            attempt: 1,
            error: "503".into(),
            retries_left: None,
        },
        now,
        &mut out2,
    )
    .unwrap();
    assert_eq!(brief(&out), brief(&out2));
    // The first attempt's late success is stale.
    let mut out = Vec::new();
    assert_eq!(
        apply(
            &d,
            &mut s,
            Event::JobSucceeded {
                job: 2,
                attempt: 1,
                output: Vars::new()
            },
            now,
            &mut out
        ),
        Ok(Applied::Ignored("no job waiting with this id and attempt"))
    );
}

#[test]
fn events_on_a_finished_instance_are_absorbed() {
    let d = def("process: p\nstart: a\nsteps:\n  a:\n    set: { x: 1 }\n");
    let (mut s, _) = begin(&d, at("2027-01-01T00:00:00Z"));
    assert_eq!(s.status, InstanceStatus::Completed);
    let mut out = Vec::new();
    let r = apply(
        &d,
        &mut s,
        Event::TaskCompleted {
            task: 9,
            vars: Vars::new(),
            actor: "x".into(),
        },
        at("2027-01-02T00:00:00Z"),
        &mut out,
    );
    assert_eq!(r, Ok(Applied::Ignored("the instance has ended")));
    assert!(out.is_empty());
}

#[test]
fn a_refused_form_changes_nothing() {
    let d = def(r#"
process: p
start: ask
steps:
  ask:
    task: Ask
    form: { amount: { type: number, min: 0, max: 10 }, note: { type: text, required: false } }
"#);
    let (mut s, _) = begin(&d, at("2027-01-01T00:00:00Z"));
    let before = s.clone();
    let mut vars = Vars::new();
    vars.insert("amount".into(), Value::from(11i64));
    vars.insert("extra".into(), Value::from("x"));
    let mut out = Vec::new();
    let r = apply(
        &d,
        &mut s,
        Event::TaskCompleted {
            task: 2,
            vars,
            actor: "u".into(),
        },
        at("2027-01-01T00:00:00Z"),
        &mut out,
    );
    let Err(MachineError::InvalidForm(errors)) = r else {
        panic!("{r:?}")
    };
    let fields: Vec<_> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    assert_eq!(
        fields,
        [
            "extra: is not a field of this form (fields: amount, note)",
            "amount: must be at most 10"
        ]
    );
    assert_eq!(s, before);
    assert!(out.is_empty());
}

fn begin_with(d: &Definition, now: Timestamp, vars: serde_json::Value) -> Vec<Command> {
    begin_with_state(d, now, vars).1
}

fn begin_with_state(
    d: &Definition,
    now: Timestamp,
    vars: serde_json::Value,
) -> (InstanceState, Vec<Command>) {
    let mut out = Vec::new();
    let Ok(Value::Map(vars)) = Value::from_json(vars) else {
        panic!("vars must be an object")
    };
    let request = StartRequest {
        id: uuid::Uuid::nil(),
        version: 1,
        start: 0,
        vars,
        business_key: None,
        actor: "t".into(),
        parent: None,
    };
    let state = start(d, request, now, &mut out).expect("starts");
    (state, out)
}

/// A timer written as a template is evaluated when it is armed: a date fires at the start of
/// that day in the process zone, an instant then, a duration (or a text of one) from now;
/// on a boundary, in a race and after `escalate` alike.
#[test]
fn computed_timers_read_variables_when_armed() {
    let d = def(r#"
process: p
zone: Europe/Rome
start: pause
steps:
  pause:
    wait: "{{ until }}"
"#);
    let now = at("2027-01-04T09:00:00Z");
    let due = |vars: serde_json::Value| brief(&begin_with(&d, now, vars));
    // 2027-02-03 00:00 in Rome (CET, +01:00) is 2027-02-02T23:00Z.
    assert_eq!(
        due(serde_json::json!({"until": "2027-02-03"})),
        ["timer 2 at 2027-02-02T23:00:00Z"]
    );
    assert_eq!(
        due(serde_json::json!({"until": "2027-02-03T10:30:00Z"})),
        ["timer 2 at 2027-02-03T10:30:00Z"]
    );
    // A local date-time is read in the zone; in summer Rome is +02:00.
    assert_eq!(
        due(serde_json::json!({"until": "2027-07-01T09:00"})),
        ["timer 2 at 2027-07-01T07:00:00Z"]
    );
    assert_eq!(
        due(serde_json::json!({"until": "P2D"})),
        ["timer 2 at 2027-01-06T09:00:00Z"]
    );

    // Typed values, from expressions: a date, an instant, a duration.
    let typed = def(r#"
process: p
zone: Europe/Rome
start: decide
steps:
  decide:
    race:
      - timer: "{{ add_days(date(day), 1) }}"
        goto: a
      - timer: "{{ now() + duration('PT90M') }}"
        goto: a
      - timer: " {{ duration('P1M') }} "
        goto: a
  a: { end: true }
"#);
    assert_eq!(
        brief(&begin_with(
            &typed,
            now,
            serde_json::json!({"day": "2027-03-27"})
        )),
        [
            // 2027-03-28 is the spring change in Rome: the day starts at 00:00 CET.
            "timer 2 at 2027-03-27T23:00:00Z",
            "timer 3 at 2027-01-04T10:30:00Z",
            "timer 4 at 2027-02-04T09:00:00Z",
        ]
    );

    // A value that is none of these is an incident naming the step and the value.
    let out = begin_with(&d, now, serde_json::json!({"until": 42}));
    let Some(Command::RaiseIncident { step, error, .. }) = out
        .iter()
        .find(|c| matches!(c, Command::RaiseIncident { .. }))
    else {
        panic!("{:?}", brief(&out))
    };
    assert_eq!(step, "pause");
    assert!(error.contains("step `pause`"), "{error}");
    assert!(error.contains("a number (42)"), "{error}");
    let error = incident(&begin_with(
        &d,
        now,
        serde_json::json!({"until": "next week"}),
    ));
    assert!(error.contains("the text \"next week\""), "{error}");
    let out = begin_with(&d, now, serde_json::json!({}));
    let error = incident(&out);
    assert!(error.contains("unknown variable `until`"), "{error}");
    // A text is read as the same timer written out: a wrong date says why, and a cycle (a
    // computed timer fires once) or null is refused.
    let error = incident(&begin_with(
        &d,
        now,
        serde_json::json!({"until": "2027-02-30"}),
    ));
    assert!(error.contains("February 2027 has no day 30"), "{error}");
    let error = incident(&begin_with(&d, now, serde_json::json!({"until": "R/P1D"})));
    assert!(error.contains("the text \"R/P1D\"; expected"), "{error}");
    let error = incident(&begin_with(&d, now, serde_json::json!({"until": null})));
    assert!(
        error.starts_with("the timer `{{ until }}` of step `pause` gave null; expected a date"),
        "{error}"
    );
    // A date in the past fires at once: the runtime fires an overdue timer when it is due.
    assert_eq!(
        due(serde_json::json!({"until": "2020-01-01T00:00:00Z"})),
        ["timer 2 at 2020-01-01T00:00:00Z"]
    );
}

/// The error of the incident among `out`.
fn incident(out: &[Command]) -> String {
    out.iter()
        .find_map(|c| match c {
            Command::RaiseIncident { error, .. } => Some(error.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("an incident in {:?}", brief(out)))
}

#[test]
fn a_computed_escalation_and_boundary_timer() {
    let d = def(r#"
process: p
start: ask
steps:
  ask:
    task: Ask
    escalate: { after: "{{ deadline }}", goto: boss }
    on:
      - timer: "{{ patience }}"
        interrupt: false
        goto: nudge
  nudge: { set: { nudged: true } }
  boss: { task: Boss }
"#);
    let now = at("2027-01-04T09:00:00Z");
    let (mut s, out) = begin_with_state(
        &d,
        now,
        serde_json::json!({"deadline": "2027-01-05T12:00:00Z", "patience": "PT4H"}),
    );
    let timers: Vec<String> = brief(&out)
        .into_iter()
        .filter(|c| c.starts_with("timer"))
        .collect();
    assert_eq!(
        timers,
        // The `on:` timer, then the escalation.
        [
            "timer 3 at 2027-01-04T13:00:00Z",
            "timer 4 at 2027-01-05T12:00:00Z"
        ]
    );
    // The non-interrupting timer fires once, like a date: it is not armed again.
    let mut out = Vec::new();
    apply(
        &d,
        &mut s,
        Event::TimerFired { timer: 3 },
        at("2027-01-04T13:00:00Z"),
        &mut out,
    )
    .unwrap();
    assert_eq!(brief(&out), ["cancel timer 3"]);
    assert_eq!(s.vars.get("nudged"), Some(&Value::Bool(true)));
    // A late duplicate of it is absorbed.
    let before = s.clone();
    let mut out = Vec::new();
    let applied = apply(
        &d,
        &mut s,
        Event::TimerFired { timer: 3 },
        at("2027-01-04T13:00:01Z"),
        &mut out,
    );
    assert!(matches!(applied, Ok(Applied::Ignored(_))), "{applied:?}");
    assert_eq!(s, before);
    // The escalation at the computed deadline closes the task and opens the boss's.
    let mut out = Vec::new();
    apply(
        &d,
        &mut s,
        Event::TimerFired { timer: 4 },
        at("2027-01-05T12:00:00Z"),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        brief(&out),
        ["cancel timer 4", "close task 2", "task 6 Boss"]
    );
}

/// A computed timer that fails raises the incident before the step does anything: no task is
/// opened, no other timer armed, so retrying after the variable is fixed opens one task with
/// its timers, and nothing is left behind to fire later.
#[test]
fn a_failing_computed_timer_leaves_nothing_behind() {
    let d = def(r#"
process: p
start: ask
steps:
  ask:
    task: Ask
    on:
      - timer: PT1H
        interrupt: false
        goto: nudge
      - message: cancel
        key: order
        goto: boss
    escalate: { after: "{{ deadline }}", goto: boss }
  nudge: { set: { nudged: true } }
  boss: { task: Boss }
"#);
    let now = at("2027-01-04T09:00:00Z");
    let (mut s, out) = begin_with_state(&d, now, serde_json::json!({"order": "A-1"}));
    let incident_id = match out.as_slice() {
        [
            Command::History { .. },
            Command::RaiseIncident {
                incident, error, ..
            },
            Command::History { .. },
        ] => {
            assert!(error.contains("unknown variable `deadline`"), "{error}");
            *incident
        }
        other => panic!("only the incident, got {:?}", brief(other)),
    };
    assert!(s.timers.is_empty() && s.subscriptions.is_empty());

    s.vars.insert(
        "deadline".into(),
        Value::String("2027-01-05T09:00:00Z".into()),
    );
    let mut out = Vec::new();
    apply(
        &d,
        &mut s,
        Event::RetryIncident {
            incident: incident_id,
            actor: "t".into(),
        },
        now,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        brief(&out)
            .into_iter()
            .filter(|c| !c.starts_with("ResolveIncident"))
            .collect::<Vec<_>>(),
        [
            "task 3 Ask",
            "timer 4 at 2027-01-04T10:00:00Z",
            "subscribe 5 cancel/A-1",
            "timer 6 at 2027-01-05T09:00:00Z",
        ]
    );

    // A race whose timer fails subscribes to nothing.
    let race = def(r#"
process: p
start: wait-both
steps:
  wait-both:
    race:
      - message: paid
        key: order
        goto: done
      - timer: "{{ deadline }}"
        goto: done
  done: { end: true }
"#);
    let (s, out) = begin_with_state(&race, now, serde_json::json!({"order": "A-1"}));
    assert!(incident(&out).contains("unknown variable `deadline`"));
    assert!(s.subscriptions.is_empty() && s.timers.is_empty());
    assert!(
        !brief(&out).iter().any(|c| c.starts_with("subscribe")),
        "{:?}",
        brief(&out)
    );
}

#[test]
fn today_is_the_date_in_the_process_zone() {
    // 23:30 UTC on 4 January is already 5 January in Rome, still 4 January in UTC and New York.
    let now = at("2027-01-04T23:30:00Z");
    for (zone, expected) in [
        ("zone: Europe/Rome\n", "2027-01-05"),
        ("", "2027-01-04"),
        ("zone: America/New_York\n", "2027-01-04"),
    ] {
        let d = def(&format!(
            "process: t\n{zone}steps:\n  a:\n    set: {{ day: today() }}\n    goto: b\n  b:\n    task: Look\n"
        ));
        let (s, _) = begin(&d, now);
        assert_eq!(
            s.vars.get("day"),
            Some(&Value::Date(expected.parse().unwrap())),
            "{zone}"
        );
    }
}

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

//! The shipped lead-nurture process (`processes/lead-nurture.yaml` with its sequence in
//! `processes/data/nurture-sequence.yaml` and the scoring tables of lead-scoring.yaml), driven
//! by the real engine and a manual clock: the e-mails are the `email.send` jobs' inputs,
//! recorded as the mail connector would receive them.

mod common;

use std::path::Path;
use std::sync::Arc;

use ciclo_engine::Value;
use ciclo_engine::parse::Catalog;
use ciclo_engine::runtime::{
    Engine, JobOutcome, MESSAGE_CONNECTOR, ManualClock, Message, SYSTEM_CONNECTOR,
};
use ciclo_engine::store::{InstanceId, InstanceStatus, MemoryStore, Store};
use common::*;
use jiff::{SignedDuration, Timestamp};

fn shipped(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../processes")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One e-mail as the mail connector received it.
#[derive(Debug, Clone)]
struct Mail {
    instance: InstanceId,
    template: String,
    to: String,
    /// The local day (Europe/Rome) it went out.
    day: String,
}

struct World {
    h: Harness,
    mails: Vec<Mail>,
}

/// A lead the tables grade warm (checked by the tests that need it).
fn warm_lead(email: Option<&str>) -> serde_json::Value {
    let mut lead = serde_json::json!({
        "lead_number": "660737",
        "origin": "Landing Page Submission",
        "source": "Google",
        "occupation": "Unemployed",
        "specialization": "Finance Management",
        "do_not_email": false,
        "time_on_site": 400,
        "total_visits": 3,
        "last_activity": "Email Opened",
        "last_notable_activity": "Email Opened",
    });
    if let Some(email) = email {
        lead["email"] = email.into();
    }
    lead
}

/// The same person, later: came through the lead form, working, and read for a long time.
fn hot_lead(email: &str) -> serde_json::Value {
    let mut lead = warm_lead(Some(email));
    lead["origin"] = "Lead Add Form".into();
    lead["occupation"] = "Working Professional".into();
    lead["time_on_site"] = 1600.into();
    lead["last_activity"] = "Had a Phone Conversation".into();
    lead
}

impl World {
    /// Monday 2027-01-04, 10:00 in Rome, with the shipped lead files deployed.
    fn new() -> World {
        let clock = Arc::new(ManualClock::new(ts("2027-01-04T09:00:00Z")));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let engine = Engine::open(store, clock.clone(), Catalog::standard()).expect("engine");
        for file in [
            "data/nurture-sequence.yaml",
            "data/sales-teams.yaml",
            "lead-scoring.yaml",
            "lead-nurture.yaml",
            "lead-assignment.yaml",
            "lead-intake.yaml",
        ] {
            engine
                .deploy(file, &shipped(file))
                .unwrap_or_else(|e| panic!("deploy {file}: {e}"));
        }
        World {
            h: Harness { engine, clock },
            mails: Vec::new(),
        }
    }

    fn nurture(&mut self, key: &str, lead: serde_json::Value) -> InstanceId {
        let id = self.h.start(
            "lead-nurture",
            serde_json::json!({"lead": lead, "score": 0, "lead_key": key}),
        );
        self.run_jobs();
        id
    }

    /// Runs every due job: e-mails are recorded, messages published, system work done. Any
    /// other connector's job fails the test, so a process that calls one is noticed.
    fn run_jobs(&mut self) {
        loop {
            let now = self.h.clock.now_ts();
            let jobs = self.h.engine.store().due_jobs(now, 100).expect("jobs");
            if jobs.is_empty() {
                return;
            }
            for job in jobs {
                if job.connector == SYSTEM_CONNECTOR {
                    self.h.engine.run_system_job(&job).expect("system job");
                } else if job.connector == MESSAGE_CONNECTOR {
                    self.h.engine.run_message_job(&job).expect("publish");
                } else {
                    assert_eq!(
                        (job.connector.as_str(), job.operation.as_str()),
                        ("email", "send"),
                        "an unexpected job"
                    );
                    let text = |name: &str| match job.input.get(name) {
                        Some(Value::String(s)) => s.clone(),
                        other => panic!("{name}: {other:?}"),
                    };
                    assert_eq!(job.input.get("do_not_email"), Some(&Value::Bool(false)));
                    let day = now
                        .to_zoned(jiff::tz::TimeZone::get("Europe/Rome").unwrap())
                        .date()
                        .to_string();
                    self.mails.push(Mail {
                        instance: job.instance,
                        template: text("template"),
                        to: text("to"),
                        day,
                    });
                    let mut output = ciclo_engine::Vars::new();
                    output.insert("email_status".into(), Value::String("sent".into()));
                    self.h
                        .engine
                        .job_result(&job, JobOutcome::Done(output))
                        .expect("job result");
                }
            }
        }
    }

    /// Moves the clock an hour at a time to `until`, firing timers and running jobs as the
    /// runtime would.
    fn run_until(&mut self, until: &str) {
        let until: Timestamp = ts(until);
        self.run_jobs();
        while self.h.clock.now_ts() < until {
            let left = until.duration_since(self.h.clock.now_ts());
            self.h.advance(left.min(SignedDuration::from_hours(1)));
            self.run_jobs();
        }
    }

    fn send(&mut self, name: &str, key: &str, vars: serde_json::Value) {
        self.h
            .engine
            .correlate(Message {
                name: name.into(),
                key: key.into(),
                vars: common::vars(vars),
                id: None,
                ttl: Some(SignedDuration::from_hours(24)),
            })
            .expect("correlate");
        self.run_jobs();
    }

    fn mails_of(&self, id: InstanceId) -> Vec<(String, String)> {
        self.mails
            .iter()
            .filter(|m| m.instance == id)
            .map(|m| (m.day.clone(), m.template.clone()))
            .collect()
    }

    fn status(&self, id: InstanceId) -> InstanceStatus {
        self.h.engine.instance(id).unwrap().unwrap().0.status
    }

    fn text(&self, id: InstanceId, name: &str) -> String {
        match self.h.var(id, name) {
            Value::String(s) => s,
            other => panic!("{name}: {other:?}"),
        }
    }
}

fn day_mail(day: &str, template: &str) -> (String, String) {
    (day.to_string(), template.to_string())
}

#[test]
fn the_sequence_goes_out_on_its_days_then_ends() {
    let mut w = World::new();
    let id = w.nurture("lead:a1", warm_lead(Some("anna@example.com")));
    // Day 0 at once; the others at the first 09:00 run in Rome on or after their day.
    w.run_until("2027-01-25T12:00:00Z");
    assert_eq!(
        w.mails_of(id),
        [
            day_mail("2027-01-04", "nurture-welcome"),
            day_mail("2027-01-07", "nurture-resources"),
            day_mail("2027-01-11", "nurture-case-study"),
            day_mail("2027-01-18", "nurture-last-call"),
        ]
    );
    assert!(w.mails.iter().all(|m| m.to == "anna@example.com"));
    assert_eq!(w.status(id), InstanceStatus::Completed);
    assert_eq!(w.text(id, "outcome"), "sequence finished");
    assert_eq!(w.h.var(id, "sent"), num("4"));
}

#[test]
fn a_reply_an_opt_out_or_a_conversion_stops_the_sequence_at_once() {
    for (message, outcome) in [
        ("lead-reply", "replied"),
        ("lead-opt-out", "opted out"),
        ("lead-converted", "converted"),
    ] {
        let mut w = World::new();
        let id = w.nurture("lead:b2", warm_lead(Some("bruno@example.com")));
        w.run_until("2027-01-08T12:00:00Z");
        assert_eq!(w.mails_of(id).len(), 2, "{message}: two e-mails before it");
        w.send(message, "lead:b2", serde_json::json!({}));
        assert_eq!(w.status(id), InstanceStatus::Completed, "{message}");
        assert_eq!(w.text(id, "outcome"), outcome);
        // Nothing more, however long the clock runs, and no timer is left behind.
        w.run_until("2027-02-15T12:00:00Z");
        assert_eq!(w.mails_of(id).len(), 2, "{message}: e-mails after it");
        assert!(w.h.engine.store().timers_of(id).unwrap().is_empty());
    }
}

#[test]
fn a_do_not_email_lead_gets_nothing() {
    let mut w = World::new();
    let mut lead = warm_lead(Some("carla@example.com"));
    lead["do_not_email"] = true.into();
    let id = w.nurture("lead:c3", lead);
    w.run_until("2027-01-25T12:00:00Z");
    assert!(w.mails_of(id).is_empty());
    assert_eq!(w.text(id, "outcome"), "do not email");
    assert_eq!(w.status(id), InstanceStatus::Completed);
}

#[test]
fn a_lead_that_becomes_do_not_email_during_the_sequence_gets_nothing_more() {
    let mut w = World::new();
    let id = w.nurture("lead:c4", warm_lead(Some("carlo@example.com")));
    let mut now_opted_out = warm_lead(Some("carlo@example.com"));
    now_opted_out["do_not_email"] = true.into();
    w.send(
        "lead-activity",
        "lead:c4",
        serde_json::json!({"activity": {"source": "import", "at": "2027-01-05", "lead": now_opted_out}}),
    );
    w.run_until("2027-01-25T12:00:00Z");
    assert_eq!(w.mails_of(id), [day_mail("2027-01-04", "nurture-welcome")]);
    assert_eq!(w.text(id, "outcome"), "do not email");
}

#[test]
fn a_lead_without_an_e_mail_address_gets_a_call_task() {
    let mut w = World::new();
    let id = w.nurture("lead:d4", warm_lead(None));
    let tasks = w.h.tasks(id);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].step, "phone-call");
    assert_eq!(tasks[0].candidates, ["inside-sales"]);
    assert!(w.mails_of(id).is_empty());
    w.h.engine
        .complete_task(
            id,
            tasks[0].task,
            vars(serde_json::json!({"result": "interested"})),
            "dario",
        )
        .unwrap();
    w.run_jobs();
    assert_eq!(w.text(id, "outcome"), "hot");
    assert!(w.mails.is_empty());
}

#[test]
fn an_activity_is_scored_again_and_a_hot_lead_leaves_nurture_for_a_salesperson() {
    let mut w = World::new();
    let key = "email:elena@example.com";
    let intake = w.h.start(
        "lead-intake",
        serde_json::json!({"lead": warm_lead(Some("elena@example.com")), "lead_key": key}),
    );
    w.run_jobs();
    let rating = w.h.var(intake, "rating").to_json();
    assert_eq!(rating["grade"], "warm", "the test's lead must start warm");
    assert_eq!(w.mails.len(), 1, "the welcome e-mail");

    // A warm activity keeps it in nurture, recorded; a hot one takes it out at once.
    w.send(
        "lead-activity",
        key,
        serde_json::json!({"activity": {"source": "web", "at": "2027-01-05", "lead": warm_lead(Some("elena@example.com"))}}),
    );
    w.run_until("2027-01-07T12:00:00Z");
    assert_eq!(w.mails.len(), 2, "the sequence went on");
    w.send(
        "lead-activity",
        key,
        serde_json::json!({"activity": {"source": "web", "at": "2027-01-08", "lead": hot_lead("elena@example.com")}}),
    );
    assert_eq!(w.text(intake, "nurture_outcome"), "hot");
    let history = w.h.history(intake).join("\n");
    assert!(
        history.contains("assign"),
        "the lead went to assignment:\n{history}"
    );
    w.run_until("2027-01-25T12:00:00Z");
    assert_eq!(w.mails.len(), 2, "no e-mail after the lead became hot");
}

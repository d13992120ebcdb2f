//! The shipped dunning and customer-care processes (`processes/`), with their data files,
//! driven by the real engine and a manual clock: the letters are the `email.send` jobs'
//! inputs, recorded as a mail connector would receive them.

mod common;

use std::path::Path;
use std::sync::Arc;

use ciclo_engine::Value;
use ciclo_engine::parse::Catalog;
use ciclo_engine::runtime::{
    Engine, JobOutcome, MESSAGE_CONNECTOR, ManualClock, Message, SYSTEM_CONNECTOR,
};
use ciclo_engine::store::{InstanceId, MemoryStore, Store};
use common::*;
use jiff::{SignedDuration, Timestamp};

fn shipped(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../processes")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One letter as the mail connector received it.
#[derive(Debug, Clone)]
struct Letter {
    instance: InstanceId,
    template: String,
    to: String,
    letter: serde_json::Value,
}

impl Letter {
    /// An amount of the letter, as a decimal (`720.00` and `720` are the same amount).
    fn amount(&self, name: &str) -> rust_decimal::Decimal {
        self.field(name)
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn field(&self, name: &str) -> String {
        match &self.letter[name] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

fn dec(text: &str) -> rust_decimal::Decimal {
    text.parse().expect("test amount")
}

struct World {
    h: Harness,
    letters: Vec<Letter>,
}

impl World {
    /// The engine at `start` with the shipped data files and processes.
    fn new(start: &str) -> World {
        let clock = Arc::new(ManualClock::new(ts(start)));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let engine = Engine::open(store, clock.clone(), Catalog::standard()).expect("engine");
        for file in [
            "data/dunning-ladder.yaml",
            "data/late-payment-rates.yaml",
            "dunning.yaml",
            "customer-care.yaml",
        ] {
            engine
                .deploy(file, &shipped(file))
                .unwrap_or_else(|e| panic!("deploy {file}: {e}"));
        }
        World {
            h: Harness { engine, clock },
            letters: Vec::new(),
        }
    }

    fn dun(&self, number: &str, total: &str, due: &str, kind: &str) -> InstanceId {
        self.h.start(
            "dunning",
            serde_json::json!({"invoice": {
                "number": number,
                "total": total.parse::<serde_json::Number>().unwrap(),
                "currency": "EUR",
                "due_date": due,
                "customer": {"name": "Verdi srl", "kind": kind, "email": "ap@verdi.example"},
            }}),
        )
    }

    /// Runs every due job: letters are recorded, messages published, system work done.
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
                        ("email", "send")
                    );
                    let text = |name: &str| match job.input.get(name) {
                        Some(Value::String(s)) => s.clone(),
                        other => panic!("{name}: {other:?}"),
                    };
                    self.letters.push(Letter {
                        instance: job.instance,
                        template: text("template"),
                        to: text("to"),
                        letter: job.input.get("letter").expect("letter").to_json(),
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

    /// Moves the clock to `until` a day at a time, firing timers and running jobs as the
    /// runtime would.
    fn run_until(&mut self, until: &str) {
        let until: Timestamp = ts(until);
        self.run_jobs();
        while self.h.clock.now_ts() < until {
            let left = until.duration_since(self.h.clock.now_ts());
            self.h.advance(left.min(SignedDuration::from_hours(24)));
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

    fn pay(&mut self, number: &str, amount: &str, date: &str) {
        self.send(
            "payment-received",
            number,
            serde_json::json!({"payment": {
                "amount": amount.parse::<serde_json::Number>().unwrap(),
                "date": date,
            }}),
        );
    }

    fn letters_of(&self, id: InstanceId) -> Vec<&Letter> {
        self.letters.iter().filter(|l| l.instance == id).collect()
    }

    fn finished(&self, id: InstanceId) -> bool {
        ciclo_engine::runtime::is_finished(self.h.engine.instance(id).unwrap().unwrap().0.status)
    }
}

#[test]
fn a_partial_payment_lowers_the_principal_of_the_next_letter() {
    // Issue test 3: 1,220.00 due 2025-03-31, ladder +7 / +21, 500.00 paid on 2025-04-10.
    let mut w = World::new("2025-03-31T10:00:00Z");
    let id = w.dun("2025/017", "1220.00", "2025-03-31", "business");
    w.run_until("2025-04-10T10:00:00Z");
    let first = w.letters_of(id);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].template, "dunning-level-1");
    assert_eq!(first[0].to, "ap@verdi.example");
    assert_eq!(first[0].field("date"), "2025-04-07");
    assert_eq!(first[0].amount("principal"), dec("1220.00"));
    // Level 1 claims the compensation (business customer), not interest.
    assert_eq!(first[0].amount("compensation"), dec("40.00"));
    assert_eq!(first[0].field("claims_interest"), "false");
    assert_eq!(first[0].amount("total"), dec("1260.00"));

    w.pay("2025/017", "500.00", "2025-04-10");
    assert_eq!(w.h.var(id, "balance"), num("720.00"));
    w.run_until("2025-04-21T12:00:00Z");
    let letters = w.letters_of(id);
    assert_eq!(letters.len(), 2, "{letters:?}");
    let second = letters[1];
    assert_eq!(second.template, "dunning-level-2");
    assert_eq!(second.field("date"), "2025-04-21");
    assert_eq!(second.amount("principal"), dec("720.00"));
    // Interest, a separate line: 720.00 x 11.15% x 21/365 = 4.62 on what is open (2025-04-01
    // through 04-21) plus 500.00 x 11.15% x 10/365 = 1.53 on the part paid on 04-10.
    assert_eq!(second.amount("interest"), dec("6.15"));
    assert_eq!(second.field("claims_interest"), "true");
    // The compensation was claimed by the first letter: not again.
    assert_eq!(second.amount("compensation"), dec("0"));
    assert_eq!(second.field("claims_compensation"), "false");
    assert_eq!(second.amount("total"), dec("726.15"));
    assert!(!w.finished(id));
}

#[test]
fn a_payment_in_full_before_a_level_stops_its_letter() {
    let mut w = World::new("2025-03-31T10:00:00Z");
    let id = w.dun("2025/018", "1220.00", "2025-03-31", "business");
    w.run_until("2025-04-15T10:00:00Z");
    assert_eq!(w.letters_of(id).len(), 1);
    w.pay("2025/018", "1220.00", "2025-04-15");
    assert!(w.finished(id), "a payment in full closes the dunning");
    assert_eq!(w.h.var(id, "paid"), Value::Bool(true));
    // No timer or subscription is left: the pending reminders are gone.
    let state = w.h.state(id);
    assert!(state.timers.is_empty() && state.subscriptions.is_empty());
    w.run_until("2025-06-30T10:00:00Z");
    assert_eq!(w.letters_of(id).len(), 1, "the second letter is not sent");
}

#[test]
fn an_overpayment_closes_the_dunning_and_asks_accounting_to_refund_it() {
    let mut w = World::new("2025-03-31T10:00:00Z");
    let id = w.dun("2025/030", "1220.00", "2025-03-31", "business");
    w.run_until("2025-04-10T10:00:00Z");
    w.pay("2025/030", "500.00", "2025-04-10");
    w.pay("2025/030", "800.00", "2025-04-11");
    assert_eq!(w.h.var(id, "paid"), Value::Bool(true));
    assert_eq!(
        w.h.var(id, "overpaid")
            .to_json()
            .to_string()
            .parse::<rust_decimal::Decimal>(),
        Ok(dec("80.00"))
    );
    let task = w.h.tasks(id).into_iter().next().expect("refund task");
    assert_eq!(task.step, "refund");
    assert!(task.title.contains("80"), "{}", task.title);
    assert_eq!(task.candidates, ["accounting"]);
    w.h.engine
        .complete_task(
            id,
            task.task,
            common::vars(serde_json::json!({"decision": "refund"})),
            "carla",
        )
        .expect("complete");
    assert!(w.finished(id));
    // An exact payment asks nothing.
    let exact = w.dun("2025/031", "1220.00", "2025-03-31", "business");
    w.pay("2025/031", "1220.00", "2025-04-11");
    assert!(w.finished(exact) && w.h.tasks(exact).is_empty());
}

#[test]
fn a_payment_the_day_before_the_first_level_sends_nothing() {
    let mut w = World::new("2025-03-31T10:00:00Z");
    let id = w.dun("2025/019", "1220.00", "2025-03-31", "business");
    w.run_until("2025-04-06T20:00:00Z");
    w.pay("2025/019", "1220.00", "2025-04-06");
    w.run_until("2025-05-31T10:00:00Z");
    assert!(w.letters_of(id).is_empty());
    assert!(w.finished(id));
}

/// Issue test 4: one invoice with three letters and one with one letter.
fn compensation_claimed(kind: &str) -> (String, usize) {
    let mut w = World::new("2025-03-31T10:00:00Z");
    let three = w.dun("2025/020", "1000.00", "2025-03-31", kind);
    let one = w.dun("2025/021", "300.00", "2025-03-31", kind);
    w.run_until("2025-04-08T10:00:00Z");
    w.pay("2025/021", "300.00", "2025-04-08");
    w.run_until("2025-05-20T10:00:00Z");
    assert_eq!(w.letters_of(three).len(), 3);
    assert_eq!(w.letters_of(one).len(), 1);
    let total: rust_decimal::Decimal = w
        .letters
        .iter()
        .map(|l| {
            l.field("compensation")
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .sum();
    // The instance's own count agrees with the letters.
    let recorded = [three, one]
        .iter()
        .map(|id| match w.h.var(*id, "compensation_total") {
            Value::Number(n) => n,
            other => panic!("{other:?}"),
        })
        .sum::<rust_decimal::Decimal>();
    assert_eq!(total, recorded);
    (format!("{total:.2}"), w.letters.len())
}

#[test]
fn compensation_is_claimed_once_per_late_invoice_from_businesses_only() {
    assert_eq!(compensation_claimed("business"), ("80.00".to_string(), 4));
    assert_eq!(compensation_claimed("consumer"), ("0.00".to_string(), 4));
}

#[test]
fn the_third_letter_adds_its_fee_and_interest_to_date() {
    let mut w = World::new("2025-03-31T10:00:00Z");
    let id = w.dun("2025/022", "1000.00", "2025-03-31", "business");
    w.run_until("2025-05-16T10:00:00Z");
    let letters = w.letters_of(id);
    assert_eq!(letters.len(), 3);
    let third = letters[2];
    assert_eq!(third.template, "dunning-level-3");
    assert_eq!(third.field("date"), "2025-05-15");
    // 1000.00 x 11.15% x 45/365 = 13.7465... -> 13.75.
    assert_eq!(third.amount("interest"), dec("13.75"));
    assert_eq!(third.amount("fee"), dec("15.00"));
    assert_eq!(third.amount("total"), dec("1028.75"));
}

#[test]
fn an_open_care_case_pauses_the_ladder_which_resumes_at_the_next_level() {
    let mut w = World::new("2025-03-31T10:00:00Z");
    let id = w.dun("2025/023", "1000.00", "2025-03-31", "business");
    w.run_until("2025-04-10T10:00:00Z");
    assert_eq!(w.letters_of(id).len(), 1);
    // A customer-care case on the invoice opens a dispute.
    let case = w.h.start(
        "customer-care",
        serde_json::json!({"case": {
            "id": "C-7", "subject": "Wrong quantity on invoice 2025/023",
            "severity": "high", "customer": {"tier": "gold"},
            "invoice_number": "2025/023",
        }}),
    );
    w.run_jobs();
    assert_eq!(
        w.h.var(id, "on_hold"),
        Value::Bool(true),
        "{:?}\n{:?}\n{:?}",
        w.h.history(case),
        w.h.engine.store().incidents_of(case),
        w.h.var(case, "correlation")
    );
    // Past the day of level 2 (04-21): nothing goes out while the case is open.
    w.run_until("2025-05-05T10:00:00Z");
    assert_eq!(w.letters_of(id).len(), 1);
    // Closing the case closes the dispute; the ladder goes on at level 2, not 1.
    let task = w.h.tasks(case).into_iter().next().expect("care task");
    w.h.engine
        .complete_task(
            case,
            task.task,
            common::vars(serde_json::json!({"resolution": "credit note issued"})),
            "anna",
        )
        .expect("complete");
    w.run_jobs();
    assert_eq!(task.step, "escalated", "P1 is escalated after 4 hours");
    assert!(w.finished(case));
    assert_eq!(w.h.var(id, "on_hold"), Value::Bool(false));
    w.run_until("2025-05-20T10:00:00Z");
    let templates: Vec<(String, String)> = w
        .letters_of(id)
        .iter()
        .map(|l| (l.template.clone(), l.field("date")))
        .collect();
    assert_eq!(
        templates,
        [
            ("dunning-level-1".to_string(), "2025-04-07".to_string()),
            ("dunning-level-2".to_string(), "2025-05-06".to_string()),
            ("dunning-level-3".to_string(), "2025-05-15".to_string()),
        ]
    );
}

#[test]
fn interest_into_a_half_year_without_a_rate_is_an_incident_naming_it() {
    // Due 2026-06-15: level 2 (interest) on 2026-07-06 needs 2026 H2, which has no rate yet.
    let mut w = World::new("2026-06-15T10:00:00Z");
    let id = w.dun("2026/001", "1000.00", "2026-06-15", "business");
    w.run_until("2026-07-07T10:00:00Z");
    assert_eq!(w.letters_of(id).len(), 1, "level 1 claims no interest");
    let incidents = w.h.engine.store().incidents_of(id).unwrap();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert!(
        incidents[0].error.contains("2026-H2"),
        "{}",
        incidents[0].error
    );
    assert!(!w.finished(id));
}

#[test]
fn every_template_of_the_ladder_is_shipped_in_english_and_italian() {
    let ladder = shipped("data/dunning-ladder.yaml");
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../processes/templates");
    let mut seen = 0;
    for line in ladder.lines().filter(|l| l.contains("template: ")) {
        let name = line
            .split("template: ")
            .nth(1)
            .and_then(|rest| rest.split([',', ' ']).next())
            .unwrap();
        for part in [
            "subject.hbs",
            "body.html.hbs",
            "body.txt.hbs",
            "subject.it.hbs",
            "body.html.it.hbs",
            "body.txt.it.hbs",
        ] {
            assert!(templates.join(name).join(part).is_file(), "{name}/{part}");
        }
        seen += 1;
    }
    assert_eq!(seen, 3);
}

#[test]
fn a_contract_near_its_end_requests_a_new_opportunity() {
    let mut w = World::new("2025-10-01T10:00:00Z");
    for file in ["data/renewal-policy.yaml", "contract-renewal.yaml"] {
        w.h.engine.deploy(file, &shipped(file)).expect("deploy");
    }
    // A stand-in for the opportunity process, which starts on the message (test only).
    w.h.engine
        .deploy(
            "opportunity.yaml",
            "process: opportunity-stub\nstart: { goto: hold, message: opportunity-requested }\nsteps:\n  hold: { task: Quote the renewal, form: { ok: boolean } }\n",
        )
        .expect("deploy stub");
    let contract = w.h.start(
        "contract-renewal",
        serde_json::json!({"contract": {"number": "K-9", "end_date": "2025-12-31",
            "value": 12000, "customer": {"name": "Verdi srl"}}}),
    );
    // 60 days before 2025-12-31 is 2025-11-01.
    w.run_until("2025-10-31T20:00:00Z");
    assert!(!w.finished(contract));
    w.run_until("2025-11-01T20:00:00Z");
    assert!(w.finished(contract));
    assert_eq!(
        w.h.var(contract, "correlation"),
        Value::String("started".into())
    );
    let started =
        w.h.engine
            .store()
            .tasks(100)
            .unwrap()
            .into_iter()
            .find(|t| t.process == "opportunity-stub")
            .expect("the opportunity started");
    let opportunity = w.h.var(started.instance, "opportunity");
    assert_eq!(opportunity.to_json()["contract"], "K-9");
    assert_eq!(opportunity.to_json()["source"], "renewal");
    // The quote will be numbered after it (opportunity-to-quote's make-quote).
    assert_eq!(opportunity.to_json()["id"], "R-K-9");
}

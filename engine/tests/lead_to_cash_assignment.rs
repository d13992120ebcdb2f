//! The shipped lead-assignment process (`processes/lead-assignment.yaml`) with a teams file of
//! the test's own, driven by the real engine on the in-memory store and on sled in a temporary
//! folder, with a manual clock: which rule fires, the round-robin within a team and who it
//! skips, the default queue, the rotation across a reopen and under concurrent picks, and the
//! opportunity a conversion requests.

mod common;

use std::path::Path;
use std::sync::Arc;

use ciclo_engine::Value;
use ciclo_engine::runtime::{ASSIGN_CONNECTOR, MESSAGE_CONNECTOR, SYSTEM_CONNECTOR};
use ciclo_engine::store::{InstanceId, JobRecord, MemoryStore, SledOptions, SledStore, Store};
use common::*;

fn shipped(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../processes")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Three people in `india`, rotating; `partners` and `international` for the other rules.
const TEAMS: &str = r#"
teams:
  partners:
    members: [{ name: giulia }, { name: paolo }]
  india-finance:
    members: [{ name: priya }]
  india:
    members:
      - { name: anna, capacity: 10, absent: false }
      - { name: marco, capacity: 10, absent: false }
      - { name: sofia, capacity: 10, absent: false }
  international:
    members: [{ name: james }]
"#;

/// `anna` is absent, `marco` and `sofia` take one lead each at most.
const BUSY_TEAMS: &str = r#"
teams:
  india:
    members:
      - { name: anna, capacity: 10, absent: true }
      - { name: marco, capacity: 1 }
      - { name: sofia, capacity: 1, away: [{ from: "2027-08-02", to: "2027-08-20" }] }
"#;

fn harness(store: Arc<dyn Store>, teams: &str) -> Harness {
    let h = Harness::with_store(store, &[]);
    h.engine
        .deploy("data/sales-teams.yaml", teams)
        .expect("deploy teams");
    h.engine
        .deploy("lead-assignment.yaml", &shipped("lead-assignment.yaml"))
        .expect("deploy lead-assignment");
    h
}

fn lead(h: &Harness, key: &str, lead: serde_json::Value) -> InstanceId {
    h.start(
        "lead-assignment",
        serde_json::json!({ "lead": lead, "score": 42, "lead_key": key }),
    )
}

fn india(h: &Harness, key: &str) -> InstanceId {
    lead(
        h,
        key,
        serde_json::json!({ "external_id": key, "country": "India", "source": "Google",
                            "email": format!("{key}@example.in") }),
    )
}

/// Runs due jobs as the runtime would; returns the `message.publish` inputs it saw.
fn run(h: &Harness) -> Vec<JobRecord> {
    let mut published = Vec::new();
    loop {
        let jobs = h
            .engine
            .store()
            .due_jobs(h.clock.now_ts(), 100)
            .expect("due jobs");
        if jobs.is_empty() {
            return published;
        }
        for job in jobs {
            match job.connector.as_str() {
                SYSTEM_CONNECTOR => h.engine.run_system_job(&job).expect("system job"),
                ASSIGN_CONNECTOR => h.engine.run_assign_job(&job).expect("assign"),
                MESSAGE_CONNECTOR => {
                    published.push(job.clone());
                    h.engine.run_message_job(&job).expect("publish");
                }
                other => panic!("unexpected connector {other}"),
            }
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn assigned(h: &Harness, id: InstanceId) -> String {
    text(&h.var(id, "assigned_to"))
}

#[test]
fn the_first_matching_rule_wins_and_is_recorded() {
    let h = harness(Arc::new(MemoryStore::new()), TEAMS);
    // Both the partner-source rule and the India-finance rule match: the first one wins.
    let both = lead(
        &h,
        "L-1",
        serde_json::json!({ "country": "India", "source": "Reference",
                            "specialization": "Finance Management" }),
    );
    let finance = lead(
        &h,
        "L-2",
        serde_json::json!({ "country": "India", "source": "Google",
                            "specialization": "Finance Management" }),
    );
    run(&h);
    assert_eq!(
        text(&h.var(both, "assignment_rule")),
        "referral-or-partner-site"
    );
    assert_eq!(text(&h.var(both, "team")), "partners");
    assert_eq!(assigned(&h, both), "giulia");
    assert_eq!(text(&h.var(finance, "assignment_rule")), "india-finance");
    assert_eq!(assigned(&h, finance), "priya");
    let task = &h.tasks(both)[0];
    assert_eq!(task.assignee.as_deref(), Some("giulia"));
    assert_eq!(task.step, "qualify");
}

#[test]
fn round_robin_over_three_people_comes_back_to_the_first() {
    let h = harness(Arc::new(MemoryStore::new()), TEAMS);
    let picks: Vec<String> = (1..=4)
        .map(|i| {
            let id = india(&h, &format!("L-{i}"));
            run(&h);
            assigned(&h, id)
        })
        .collect();
    assert_eq!(picks, ["anna", "marco", "sofia", "anna"]);
    let rotation = h.engine.store().rotation("india").unwrap().expect("kept");
    assert_eq!((rotation.last.as_str(), rotation.picks), ("anna", 4));
}

#[test]
fn absent_and_full_people_are_skipped_and_nobody_left_means_the_queue() {
    let h = harness(Arc::new(MemoryStore::new()), BUSY_TEAMS);
    let first = india(&h, "L-1");
    run(&h);
    assert_eq!(assigned(&h, first), "marco", "anna is absent");
    let skipped = h.var(first, "skipped").to_json();
    assert_eq!(skipped[0]["name"], "anna");
    assert_eq!(skipped[0]["why"], "absent");

    let second = india(&h, "L-2");
    run(&h);
    assert_eq!(assigned(&h, second), "sofia", "marco has his one open task");

    let third = india(&h, "L-3");
    run(&h);
    assert_eq!(assigned(&h, third), "sales-queue");
    assert_eq!(h.var(third, "queued"), Value::Bool(true));
    assert_eq!(text(&h.var(third, "team")), "india");
    let task = &h.tasks(third)[0];
    assert_eq!(task.assignee, None);
    assert_eq!(task.candidates, ["sales-queue"]);

    // marco qualifies his lead: he has room again.
    let done = h.tasks(first)[0].task;
    h.engine
        .complete_task(
            first,
            done,
            vars(serde_json::json!({ "decision": "disqualify", "reason": "a student" })),
            "marco",
        )
        .expect("complete");
    assert_eq!(text(&h.var(first, "disqualify_reason")), "a student");
    assert_eq!(text(&h.var(first, "outcome")), "disqualified");
    let fourth = india(&h, "L-4");
    run(&h);
    assert_eq!(assigned(&h, fourth), "marco");

    // sofia is away from 2 to 20 August (and at capacity anyway): still skipped then.
    h.clock.set(ts("2027-08-10T09:00:00Z"));
    let fifth = india(&h, "L-5");
    run(&h);
    assert_eq!(assigned(&h, fifth), "sales-queue");
}

#[test]
fn no_matching_rule_sends_the_lead_to_the_default_queue() {
    let h = harness(Arc::new(MemoryStore::new()), TEAMS);
    let id = lead(
        &h,
        "L-9",
        serde_json::json!({ "country": "Italy", "source": "Google" }),
    );
    run(&h);
    assert_eq!(text(&h.var(id, "assignment_rule")), "default-queue");
    assert_eq!(h.var(id, "team"), Value::Null);
    assert_eq!(assigned(&h, id), "sales-queue");
    assert_eq!(h.tasks(id)[0].candidates, ["sales-queue"]);
}

#[test]
fn a_team_missing_from_the_data_file_is_an_incident_naming_it() {
    let h = harness(Arc::new(MemoryStore::new()), BUSY_TEAMS);
    let id = lead(
        &h,
        "L-7",
        serde_json::json!({ "country": "United States", "source": "Google" }),
    );
    run(&h);
    let incidents = h.engine.store().incidents_of(id).expect("incidents");
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert!(
        incidents[0].error.contains("`international`"),
        "{}",
        incidents[0].error
    );
}

#[test]
fn the_rotation_continues_after_reopening_the_sled_folder() {
    let dir = tempfile::tempdir().expect("temp");
    let open = || -> Arc<dyn Store> {
        Arc::new(SledStore::open(SledOptions::new(dir.path())).expect("sled opens"))
    };
    {
        let h = harness(open(), TEAMS);
        for (i, who) in ["anna", "marco"].iter().enumerate() {
            let id = india(&h, &format!("L-{i}"));
            run(&h);
            assert_eq!(assigned(&h, id), *who);
        }
    }
    let h = harness(open(), TEAMS);
    let id = india(&h, "L-3");
    run(&h);
    assert_eq!(assigned(&h, id), "sofia");
}

#[test]
fn two_leads_assigned_at_once_get_different_people() {
    let dir = tempfile::tempdir().expect("temp");
    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(SledOptions::new(dir.path())).expect("sled opens"));
    let h = Arc::new(harness(store, TEAMS));
    let a = india(&h, "L-A");
    let b = india(&h, "L-B");
    let jobs = h
        .engine
        .store()
        .due_jobs(h.clock.now_ts(), 100)
        .expect("jobs");
    assert_eq!(jobs.len(), 2);
    let threads: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let h = h.clone();
            std::thread::spawn(move || h.engine.run_assign_job(&job).expect("assign"))
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    run(&h);
    let mut people = vec![assigned(&h, a), assigned(&h, b)];
    people.sort();
    assert_eq!(people, ["anna", "marco"]);
}

#[test]
fn convert_publishes_opportunity_requested() {
    let h = harness(Arc::new(MemoryStore::new()), TEAMS);
    let id = lead(
        &h,
        "lead:P-1",
        serde_json::json!({ "external_id": "P-1", "country": "India", "source": "Google",
                            "email": "ravi@example.in", "name": "Ravi Kumar" }),
    );
    let announced = run(&h);
    assert_eq!(text(&announced[0].input["name"]), "lead-assigned");
    let task = h.tasks(id)[0].clone();
    assert_eq!(task.title, "Qualify Ravi Kumar");
    h.engine
        .complete_task(
            id,
            task.task,
            vars(serde_json::json!({ "decision": "convert" })),
            "anna",
        )
        .expect("complete");
    let published = run(&h);
    assert_eq!(published.len(), 1);
    let input = &published[0].input;
    assert_eq!(text(&input["name"]), "opportunity-requested");
    assert_eq!(text(&input["key"]), "lead:P-1");
    let opportunity = input["vars"].to_json()["opportunity"].clone();
    assert_eq!(
        opportunity,
        serde_json::json!({ "id": "P-1", "source": "lead", "lead": "lead:P-1", "owner": "anna",
            "customer": { "name": "Ravi Kumar", "email": "ravi@example.in", "country": "India" } })
    );
    assert_eq!(text(&h.var(id, "outcome")), "converted");
    assert_eq!(text(&h.var(id, "correlation")), "buffered");
}

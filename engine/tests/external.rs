//! External workers at the engine's API: fetch and lock with a lease, extend, complete, fail
//! and raise business errors; leases that run out go to another worker and late answers are
//! refused without changing anything. The clock is manual, so leases run out exactly when the
//! test moves it.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use ciclo_engine::runtime::{EngineError, LockedJob};
use ciclo_engine::store::{InstanceStatus, SledOptions, SledStore};
use common::*;
use jiff::SignedDuration;

const SCORE: &str = r#"
process: lead
start: score
steps:
  score:
    call: external.score-lead
    input: { email: lead.email }
    output: { score: result.score }
    retry: { attempts: 3, backoff: PT10S }
    on:
      - error: BAD_LEAD
        goto: rejected
  rejected:
    set: { reason: error.message }
"#;

fn types() -> Vec<String> {
    vec!["score-lead".to_string()]
}

const LEASE: Duration = Duration::from_secs(60);

fn fetch(h: &Harness, worker: &str) -> Vec<LockedJob> {
    h.engine
        .fetch_and_lock(worker, &types(), 10, LEASE, h.clock.now_ts())
        .expect("fetch")
}

fn token(job: &LockedJob) -> &str {
    job.job.lease_token.as_deref().expect("a lease token")
}

fn lead(h: &Harness) -> ciclo_engine::store::InstanceId {
    h.start(
        "lead",
        serde_json::json!({"lead": {"email": "ada@example.com"}}),
    )
}

#[test]
fn a_worker_fetches_locks_and_completes() {
    let h = Harness::new(&[SCORE]);
    let id = lead(&h);
    assert_eq!(
        h.run_jobs(|j| panic!("the runtime ran {j:?}")),
        0,
        "the runtime never sees external jobs"
    );
    let jobs = fetch(&h, "w1");
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.job.operation, "score-lead");
    assert_eq!(job.process, "lead");
    assert_eq!(job.step, "score");
    assert_eq!(job.retries_left, 2);
    assert_eq!(
        job.job.input,
        vars(serde_json::json!({"email": "ada@example.com"}))
    );
    assert_eq!(
        job.job.locked_until,
        Some(h.clock.now_ts() + SignedDuration::from_secs(60))
    );
    assert!(
        fetch(&h, "w2").is_empty(),
        "a locked job is not given again"
    );

    h.engine
        .complete_external(
            id,
            job.job.job,
            "w1",
            token(job),
            vars(serde_json::json!({"score": 87})),
        )
        .expect("complete");
    let state = h.state(id);
    assert_eq!(state.status, InstanceStatus::Completed);
    assert_eq!(h.var(id, "score"), num("87"));
    assert!(h.engine.store().jobs_of(id).unwrap().is_empty());
}

#[test]
fn two_fetchers_racing_never_get_the_same_job() {
    let h = Arc::new(Harness::new(&[SCORE]));
    let ids: Vec<_> = (0..20).map(|_| lead(&h)).collect();
    let barrier = Arc::new(Barrier::new(4));
    let fetchers: Vec<_> = (0..4)
        .map(|n| {
            let (h, barrier) = (h.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut mine = Vec::new();
                loop {
                    let got = h
                        .engine
                        .fetch_and_lock(&format!("w{n}"), &types(), 3, LEASE, h.clock.now_ts())
                        .expect("fetch");
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|j| (j.job.instance, j.job.job)));
                }
            })
        })
        .collect();
    let mut all: Vec<_> = fetchers
        .into_iter()
        .flat_map(|f| f.join().expect("fetcher"))
        .collect();
    assert_eq!(all.len(), 20, "every job was given out exactly once");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 20, "no job was given to two workers");
    assert!(ids.iter().all(|id| all.iter().any(|(i, _)| i == id)));
}

#[test]
fn an_expired_lease_goes_to_another_worker_and_the_late_answer_is_refused() {
    let h = Harness::new(&[SCORE]);
    let id = lead(&h);
    let first = fetch(&h, "w1").remove(0);
    h.clock.advance(SignedDuration::from_secs(59));
    assert!(fetch(&h, "w2").is_empty(), "the lease still holds");
    h.clock.advance(SignedDuration::from_secs(1));

    // The lease ran out: w1 may no longer answer, even before anyone else takes the job.
    let late = h.engine.complete_external(
        id,
        first.job.job,
        "w1",
        token(&first),
        vars(serde_json::json!({"score": 1})),
    );
    assert!(
        matches!(late, Err(EngineError::LeaseExpired { .. })),
        "{late:?}"
    );

    let second = fetch(&h, "w2").remove(0);
    assert_eq!(second.job.job, first.job.job);
    assert_eq!(
        second.job.attempt, 1,
        "a lease running out uses up no retry"
    );
    assert_ne!(
        token(&second),
        token(&first),
        "every fetch draws a new token"
    );
    let before = h.engine.store().job(id, first.job.job).unwrap();

    let late = h.engine.complete_external(
        id,
        first.job.job,
        "w1",
        token(&first),
        vars(serde_json::json!({"score": 1})),
    );
    assert!(
        matches!(late, Err(EngineError::LeaseNotHeld { .. })),
        "{late:?}"
    );
    let stolen = h.engine.complete_external(
        id,
        first.job.job,
        "w1",
        token(&second),
        vars(serde_json::json!({"score": 1})),
    );
    assert!(
        matches!(stolen, Err(EngineError::LeaseNotHeld { .. })),
        "another worker's token does not work: {stolen:?}"
    );
    assert_eq!(h.engine.store().job(id, first.job.job).unwrap(), before);
    assert_eq!(h.state(id).status, InstanceStatus::Active);

    h.engine
        .complete_external(
            id,
            second.job.job,
            "w2",
            token(&second),
            vars(serde_json::json!({"score": 2})),
        )
        .expect("w2 completes");
    let again = h.engine.complete_external(
        id,
        first.job.job,
        "w1",
        token(&first),
        vars(serde_json::json!({"score": 1})),
    );
    assert!(
        matches!(again, Err(EngineError::LeaseNotHeld { .. })),
        "{again:?}"
    );
    let twice = h.engine.complete_external(
        id,
        second.job.job,
        "w2",
        token(&second),
        vars(serde_json::json!({"score": 3})),
    );
    assert!(
        matches!(twice, Err(EngineError::LeaseNotHeld { .. })),
        "{twice:?}"
    );

    assert_eq!(h.state(id).status, InstanceStatus::Completed);
    assert_eq!(h.var(id, "score"), num("2"));
    let done = h
        .history(id)
        .into_iter()
        .filter(|line| line.starts_with("step score"))
        .count();
    assert_eq!(done, 1, "the step completed once: {:?}", h.history(id));
    let unknown = h
        .engine
        .complete_external(id, 999, "w1", "x", Default::default());
    assert!(
        matches!(unknown, Err(EngineError::JobNotFound { .. })),
        "{unknown:?}"
    );
}

#[test]
fn extending_keeps_the_lease() {
    let h = Harness::new(&[SCORE]);
    let id = lead(&h);
    let job = fetch(&h, "w1").remove(0);
    h.clock.advance(SignedDuration::from_secs(50));
    let until = h
        .engine
        .extend_lease(id, job.job.job, "w1", token(&job), LEASE)
        .expect("extend");
    assert_eq!(until, h.clock.now_ts() + SignedDuration::from_secs(60));
    h.clock.advance(SignedDuration::from_secs(50));
    assert!(fetch(&h, "w2").is_empty(), "the extended lease holds");
    let wrong = h
        .engine
        .extend_lease(id, job.job.job, "w2", token(&job), LEASE);
    assert!(
        matches!(wrong, Err(EngineError::LeaseNotHeld { .. })),
        "{wrong:?}"
    );
    h.engine
        .complete_external(
            id,
            job.job.job,
            "w1",
            token(&job),
            vars(serde_json::json!({"score": 5})),
        )
        .expect("complete after 100 s on a 60 s lease, extended");
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
    h.clock.advance(SignedDuration::from_secs(3600));
    let late = h
        .engine
        .extend_lease(id, job.job.job, "w1", token(&job), LEASE);
    assert!(
        matches!(late, Err(EngineError::LeaseNotHeld { .. })),
        "{late:?}"
    );
}

#[test]
fn failing_retries_as_the_worker_says_then_raises_an_incident() {
    let h = Harness::new(&[SCORE]);
    let id = lead(&h);
    let job = fetch(&h, "w1").remove(0);
    h.engine
        .fail_external(
            id,
            job.job.job,
            "w1",
            token(&job),
            "scoring service down",
            Some(1),
            Some(Duration::from_secs(30)),
        )
        .expect("fail");
    let retry = h
        .engine
        .store()
        .job(id, job.job.job)
        .unwrap()
        .expect("a retry");
    assert_eq!(retry.attempt, 2);
    assert_eq!(retry.due, h.clock.now_ts() + SignedDuration::from_secs(30));
    assert_eq!(retry.locked_until, None);
    assert_eq!(retry.last_error.as_deref(), Some("scoring service down"));
    assert!(fetch(&h, "w1").is_empty(), "not before retry_in");
    h.clock.advance(SignedDuration::from_secs(30));
    let job = fetch(&h, "w1").remove(0);
    assert_eq!(job.retries_left, 0);
    h.engine
        .fail_external(
            id,
            job.job.job,
            "w1",
            token(&job),
            "still down",
            Some(0),
            None,
        )
        .expect("fail");
    let incidents = h.engine.store().incidents_of(id).unwrap();
    assert_eq!(incidents.len(), 1);
    assert!(incidents[0].error.contains("still down"), "{incidents:?}");
    assert!(fetch(&h, "w1").is_empty());

    // Retrying the incident gives the job back to workers.
    h.engine
        .retry_incident(id, incidents[0].incident, "ops")
        .expect("retry");
    let job = fetch(&h, "w1").remove(0);
    h.engine
        .complete_external(
            id,
            job.job.job,
            "w1",
            token(&job),
            vars(serde_json::json!({"score": 9})),
        )
        .expect("complete");
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
}

#[test]
fn a_business_error_takes_the_error_path() {
    let h = Harness::new(&[SCORE]);
    let id = lead(&h);
    let job = fetch(&h, "w1").remove(0);
    let empty = h.engine.error_external(
        id,
        job.job.job,
        "w1",
        token(&job),
        " ",
        "",
        Default::default(),
    );
    assert!(matches!(empty, Err(EngineError::BadInput(_))), "{empty:?}");
    h.engine
        .error_external(
            id,
            job.job.job,
            "w1",
            token(&job),
            "BAD_LEAD",
            "no company",
            vars(serde_json::json!({"checked_by": "w1"})),
        )
        .expect("error");
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
    assert_eq!(h.var(id, "reason"), ciclo_engine::Value::from("no company"));
    assert_eq!(h.var(id, "checked_by"), ciclo_engine::Value::from("w1"));
}

#[test]
fn bad_requests_are_refused() {
    let h = Harness::new(&[SCORE]);
    let now = h.clock.now_ts();
    let bad = |worker: &str, types: &[String], lease: Duration| {
        h.engine.fetch_and_lock(worker, types, 1, lease, now)
    };
    assert!(matches!(
        bad("", &types(), LEASE),
        Err(EngineError::BadInput(_))
    ));
    assert!(matches!(
        bad("w\n1", &types(), LEASE),
        Err(EngineError::BadInput(_))
    ));
    assert!(matches!(
        bad("w1", &[], LEASE),
        Err(EngineError::BadInput(_))
    ));
    assert!(matches!(
        bad("w1", &["no spaces".to_string()], LEASE),
        Err(EngineError::BadInput(_))
    ));
    assert!(matches!(
        bad("w1", &types(), Duration::ZERO),
        Err(EngineError::BadInput(_))
    ));
    assert!(matches!(
        bad("w1", &types(), Duration::from_secs(2 * 24 * 3600)),
        Err(EngineError::BadInput(_))
    ));
}

#[test]
fn the_validator_accepts_any_well_formed_type_after_external() {
    let bad = SCORE.replace("external.score-lead", "external.score lead!");
    let problems =
        ciclo_engine::parse::load_one("p.yaml", &bad, &ciclo_engine::parse::Catalog::standard())
            .expect_err("a bad type is refused");
    assert!(
        problems.iter().any(|p| p.message.contains("score lead!")),
        "{problems:?}"
    );
    // Known even with an empty catalog.
    let any = SCORE.replace("score-lead", "anything_at-all9");
    ciclo_engine::parse::load_one("p.yaml", &any, &ciclo_engine::parse::Catalog::default())
        .expect("external is always known");
}

#[test]
fn on_disk_the_lease_and_its_answer_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let open = || Arc::new(SledStore::open(SledOptions::new(dir.path())).expect("open sled"));
    let (id, job, lease_token) = {
        let h = Harness::with_store(open(), &[SCORE]);
        let id = lead(&h);
        let job = fetch(&h, "w1").remove(0);
        (id, job.job.job, token(&job).to_string())
    };
    let h = Harness::with_store(open(), &[]);
    assert!(fetch(&h, "w2").is_empty(), "the lock survived the reopen");
    let stored = h.engine.store().job(id, job).unwrap().expect("job");
    assert_eq!(stored.lease_token.as_deref(), Some(lease_token.as_str()));
    h.engine
        .complete_external(
            id,
            job,
            "w1",
            &lease_token,
            vars(serde_json::json!({"score": 70})),
        )
        .expect("complete after reopening");
    drop(h);
    let h = Harness::with_store(open(), &[]);
    assert_eq!(h.state(id).status, InstanceStatus::Completed);
    assert_eq!(h.var(id, "score"), num("70"));
}

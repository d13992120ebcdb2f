//! The conformance suite every store passes: round trips of each record, atomic batches,
//! deletes, the orders the trait promises, message buffering and ids, request keys, bulk
//! removal of finished instances, users and API tokens, and concurrent commits.
//!
//! Each check is a function of `&dyn Store` so a new store runs the same suite by calling
//! `conformance_tests!` with a function that builds an empty store (see the bottom of
//! `memory.rs` and `sled.rs`). Checks start from an empty store and say what they expect in
//! full, so a failure names the property that broke.

use jiff::{Timestamp, ToSpan};
use uuid::Uuid;

use super::{
    Batch, DefinitionRecord, HistoryRecord, IncidentRecord, InstanceFilter, InstanceId,
    InstanceRecord, InstanceStatus, JobRecord, LinkRecord, LinkUse, MessageRecord, Op, Role,
    RotationRecord, SessionRecord, Store, SubscriptionRecord, TaskRecord, TimerRecord, TokenRecord,
    UserRecord,
};
use crate::value::{Value, Vars};

/// A store under test and whatever must live as long as it (a temporary folder). The store is
/// declared first so it is dropped (and closed) before the folder is deleted.
pub struct Fixture {
    pub store: Box<dyn Store>,
    #[expect(dead_code, reason = "held only so it is dropped after the store")]
    pub keep: Option<Box<dyn std::any::Any>>,
}

/// Generates one `#[test]` per check for the store built by `$make: fn() -> Fixture`.
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::store::conformance::conformance_tests!(@each $make;
            definitions_round_trip,
            instances_round_trip_and_replace,
            instance_listing_orders_filters_and_pages,
            timers_order_replace_and_delete,
            jobs_order_locks_replace_and_delete,
            external_jobs_by_type_apart_from_due_jobs,
            tasks_order_and_delete,
            subscriptions_by_name_and_key,
            messages_buffered_in_arrival_order,
            message_ids_expire,
            incidents_round_trip_and_delete,
            history_in_sequence_order,
            request_keys,
            users_round_trip_replace_and_delete,
            tokens_round_trip_order_and_delete,
            sessions_round_trip_replace_and_delete,
            links_round_trip_and_replace,
            rotations_round_trip_and_replace,
            batch_effects_all_visible_and_ordered,
            remove_finished_removes_exactly_the_old_finished,
            concurrent_commits_all_visible,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let fixture: $crate::store::conformance::Fixture = $make();
                $crate::store::conformance::$check(&*fixture.store);
            }
        )*
    };
}
pub(crate) use conformance_tests;

// ---------------------------------------------------------------------------------------------
// Builders

pub fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000 + second).expect("test instant in range")
}

/// Ids whose order is their number, like v7 UUIDs created one after another.
pub fn id(n: u128) -> InstanceId {
    Uuid::from_u128(n)
}

/// Variables with every kind of value, so encodings are exercised.
pub fn vars() -> Vars {
    let mut nested = Vars::new();
    nested.insert("city".into(), Value::from("Bologna"));
    let mut vars = Vars::new();
    vars.insert(
        "amount".into(),
        Value::Number("1234.50".parse().expect("decimal")),
    );
    vars.insert("approved".into(), Value::Bool(true));
    vars.insert("none".into(), Value::Null);
    vars.insert(
        "lines".into(),
        Value::List(vec![Value::from(1), Value::from("x")]),
    );
    vars.insert("address".into(), Value::Map(nested));
    vars.insert("due".into(), Value::Date(jiff::civil::date(2025, 3, 31)));
    vars.insert("sent".into(), Value::Instant(at(5)));
    vars.insert("wait".into(), Value::Duration(3.days().hours(2)));
    vars
}

pub fn instance(n: u128, process: &str, status: InstanceStatus) -> InstanceRecord {
    InstanceRecord {
        id: id(n),
        process: process.into(),
        version: 1,
        business_key: Some(format!("key-{n}")),
        status,
        started_at: at(0),
        ended_at: status.is_finished().then(|| at(100)),
        state: vec![1, 2, 3, n as u8],
    }
}

pub fn timer(instance: InstanceId, timer: u64, due: Timestamp) -> TimerRecord {
    TimerRecord {
        instance,
        timer,
        due,
        label: format!("reminder {timer}"),
    }
}

pub fn job(instance: InstanceId, job: u64, due: Timestamp) -> JobRecord {
    JobRecord {
        instance,
        job,
        attempt: 1,
        connector: "email".into(),
        operation: "send".into(),
        key: format!("{instance}-{job}"),
        input: vars(),
        due,
        locked_until: None,
        locked_by: None,
        lease_token: None,
        last_error: None,
    }
}

pub fn task(instance: InstanceId, task: u64, created_at: Timestamp) -> TaskRecord {
    TaskRecord {
        instance,
        task,
        process: "quote".into(),
        step: "approve".into(),
        title: format!("Approve {task}"),
        assignee: Some("anna".into()),
        candidates: vec!["sales".into(), "managers".into()],
        created_at,
        due: Some(at(1000)),
    }
}

pub fn subscription(name: &str, key: &str, instance: InstanceId, n: u64) -> SubscriptionRecord {
    SubscriptionRecord {
        name: name.into(),
        key: key.into(),
        instance,
        subscription: n,
        created_at: at(1),
    }
}

pub fn message(name: &str, key: &str, text: &str) -> MessageRecord {
    let mut vars = Vars::new();
    vars.insert("text".into(), Value::from(text));
    MessageRecord {
        seq: 999,
        id: Some(format!("id-{text}")),
        name: name.into(),
        key: key.into(),
        vars,
        received_at: at(2),
        expires_at: at(500),
    }
}

pub fn incident(instance: InstanceId, n: u64) -> IncidentRecord {
    IncidentRecord {
        instance,
        incident: n,
        step: "send-order".into(),
        job: Some(7),
        error: "ERP answered 500".into(),
        created_at: at(3),
    }
}

pub fn history(instance: InstanceId, seq: u64) -> HistoryRecord {
    HistoryRecord {
        instance,
        seq,
        at: at(seq as i64),
        actor: "system".into(),
        what: "step-entered".into(),
        step: Some(format!("step-{seq}")),
        detail: String::new(),
    }
}

pub fn user(name: &str) -> UserRecord {
    UserRecord {
        name: name.into(),
        display_name: Some(format!("{name} Rossi")),
        email: Some(format!("{name}@example.com")),
        groups: vec!["sales".into(), "managers".into()],
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        created_at: at(7),
    }
}

pub fn token(hash: &str, role: Role, created_at: Timestamp) -> TokenRecord {
    TokenRecord {
        hash: hash.into(),
        role,
        user: Some("anna".into()),
        label: Some(format!("{role} token")),
        created_at,
    }
}

pub fn commit(store: &dyn Store, ops: Vec<Op>) {
    store.commit(Batch { ops }).expect("commit");
}

fn all(store: &dyn Store) -> Vec<InstanceRecord> {
    store
        .instances(&InstanceFilter::default())
        .expect("instances")
}

// ---------------------------------------------------------------------------------------------
// Checks

pub fn definitions_round_trip(store: &dyn Store) {
    let definition = |process: &str, version| DefinitionRecord {
        process: process.into(),
        version,
        source: format!("process: {process}\nsteps: []\n"),
        file: format!("{process}.yaml"),
        deployed_at: at(version as i64),
    };
    assert_eq!(store.definitions().unwrap(), vec![]);
    // Prefix-sharing names check the key encoding keeps `quote` and `quote-x` apart.
    commit(
        store,
        vec![
            Op::PutDefinition(definition("quote-x", 1)),
            Op::PutDefinition(definition("quote", 2)),
            Op::PutDefinition(definition("quote", 1)),
            Op::PutDefinition(definition("lead", 1)),
        ],
    );
    let listed: Vec<(String, u32)> = store
        .definitions()
        .unwrap()
        .into_iter()
        .map(|d| (d.process, d.version))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("lead".into(), 1),
            ("quote".into(), 1),
            ("quote".into(), 2),
            ("quote-x".into(), 1)
        ]
    );
    assert_eq!(
        store.definition("quote", 2).unwrap(),
        Some(definition("quote", 2))
    );
    assert_eq!(store.definition("quote", 3).unwrap(), None);
    assert_eq!(store.definition("quot", 1).unwrap(), None);
}

pub fn instances_round_trip_and_replace(store: &dyn Store) {
    let mut record = instance(1, "quote", InstanceStatus::Active);
    record.business_key = None;
    record.state = (0..=255).collect();
    commit(store, vec![Op::PutInstance(record.clone())]);
    assert_eq!(store.instance(id(1)).unwrap(), Some(record.clone()));
    assert_eq!(store.instance(id(2)).unwrap(), None);

    record.status = InstanceStatus::Completed;
    record.ended_at = Some(at(50));
    record.state = vec![];
    commit(store, vec![Op::PutInstance(record.clone())]);
    assert_eq!(store.instance(id(1)).unwrap(), Some(record.clone()));
    assert_eq!(all(store), vec![record]);
}

pub fn instance_listing_orders_filters_and_pages(store: &dyn Store) {
    use InstanceStatus::*;
    // Written out of order: the listing is by id whatever the write order.
    let records = [
        instance(5, "quote", Active),
        instance(1, "quote", Active),
        instance(3, "lead", Completed),
        instance(2, "lead", Active),
        instance(4, "quote", Failed),
        instance(6, "quote", Active),
    ];
    commit(
        store,
        records.iter().cloned().map(Op::PutInstance).collect(),
    );
    let ids = |filter: InstanceFilter| -> Vec<u128> {
        store
            .instances(&filter)
            .unwrap()
            .into_iter()
            .map(|i| i.id.as_u128())
            .collect()
    };
    assert_eq!(ids(InstanceFilter::default()), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(
        ids(InstanceFilter {
            limit: 2,
            ..Default::default()
        }),
        vec![1, 2]
    );
    assert_eq!(
        ids(InstanceFilter {
            after: Some(id(2)),
            limit: 3,
            ..Default::default()
        }),
        vec![3, 4, 5]
    );
    assert_eq!(
        ids(InstanceFilter {
            after: Some(id(6)),
            ..Default::default()
        }),
        Vec::<u128>::new()
    );
    assert_eq!(
        ids(InstanceFilter {
            process: Some("quote".into()),
            ..Default::default()
        }),
        vec![1, 4, 5, 6]
    );
    assert_eq!(
        ids(InstanceFilter {
            process: Some("quote".into()),
            status: Some(Active),
            after: Some(id(1)),
            limit: 1,
            ..Default::default()
        }),
        vec![5],
        "the limit counts matching instances, not scanned ones"
    );
    assert_eq!(
        ids(InstanceFilter {
            status: Some(Completed),
            ..Default::default()
        }),
        vec![3]
    );
    assert_eq!(
        ids(InstanceFilter {
            business_key: Some("key-4".into()),
            ..Default::default()
        }),
        vec![4]
    );
    assert_eq!(
        ids(InstanceFilter {
            process: Some("invoice".into()),
            ..Default::default()
        }),
        Vec::<u128>::new()
    );

    // Paging with the cursor visits every instance once.
    let mut seen = vec![];
    let mut after = None;
    loop {
        let page = store
            .instances(&InstanceFilter {
                after,
                limit: 4,
                ..Default::default()
            })
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page.iter().map(|i| i.id.as_u128()));
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5, 6]);

    // Real v7 ids made one after another list in creation order.
    let made: Vec<InstanceRecord> = (0..20)
        .map(|_| InstanceRecord {
            id: Uuid::now_v7(),
            ..instance(0, "v7", Active)
        })
        .collect();
    commit(store, made.iter().cloned().map(Op::PutInstance).collect());
    let listed = store
        .instances(&InstanceFilter {
            process: Some("v7".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(listed, made);
}

pub fn timers_order_replace_and_delete(store: &dyn Store) {
    let (a, b) = (id(10), id(20));
    assert_eq!(store.next_timer().unwrap(), None);
    commit(
        store,
        vec![
            Op::PutTimer(timer(b, 1, at(30))),
            Op::PutTimer(timer(a, 2, at(10))),
            Op::PutTimer(timer(b, 0, at(10))),
            Op::PutTimer(timer(a, 1, at(10))),
            Op::PutTimer(timer(a, 3, at(20))),
        ],
    );
    let order = |timers: Vec<TimerRecord>| -> Vec<(u128, u64)> {
        timers
            .into_iter()
            .map(|t| (t.instance.as_u128(), t.timer))
            .collect()
    };
    // By due, then instance, then timer.
    assert_eq!(
        order(store.due_timers(at(100), 100).unwrap()),
        vec![(10, 1), (10, 2), (20, 0), (10, 3), (20, 1)]
    );
    assert_eq!(
        order(store.due_timers(at(20), 100).unwrap()),
        vec![(10, 1), (10, 2), (20, 0), (10, 3)],
        "a timer due exactly at `until` is due"
    );
    assert_eq!(
        order(store.due_timers(at(100), 2).unwrap()),
        vec![(10, 1), (10, 2)]
    );
    assert_eq!(store.due_timers(at(9), 100).unwrap(), vec![]);
    assert_eq!(store.next_timer().unwrap(), Some(timer(a, 1, at(10))));
    assert_eq!(
        store.timers_of(a).unwrap(),
        vec![
            timer(a, 1, at(10)),
            timer(a, 2, at(10)),
            timer(a, 3, at(20))
        ]
    );

    // Moving a timer leaves no trace at its old due time.
    commit(store, vec![Op::PutTimer(timer(a, 1, at(40)))]);
    assert_eq!(
        order(store.due_timers(at(100), 100).unwrap()),
        vec![(10, 2), (20, 0), (10, 3), (20, 1), (10, 1)]
    );
    commit(
        store,
        vec![
            Op::DeleteTimer {
                instance: a,
                timer: 2,
            },
            Op::DeleteTimer {
                instance: b,
                timer: 0,
            },
            // Deleting what is not there is not an error.
            Op::DeleteTimer {
                instance: b,
                timer: 9,
            },
        ],
    );
    assert_eq!(
        order(store.due_timers(at(100), 100).unwrap()),
        vec![(10, 3), (20, 1), (10, 1)]
    );
    assert_eq!(store.next_timer().unwrap(), Some(timer(a, 3, at(20))));
    assert_eq!(store.timers_of(b).unwrap(), vec![timer(b, 1, at(30))]);
    assert_eq!(store.timers_of(id(99)).unwrap(), vec![]);
}

pub fn jobs_order_locks_replace_and_delete(store: &dyn Store) {
    let (a, b) = (id(1), id(2));
    let mut locked = job(b, 1, at(5));
    locked.locked_until = Some(at(50));
    locked.locked_by = Some("worker-1".into());
    commit(
        store,
        vec![
            Op::PutJob(job(a, 1, at(20))),
            Op::PutJob(job(a, 2, at(10))),
            Op::PutJob(locked.clone()),
            Op::PutJob(job(b, 2, at(10))),
            Op::PutJob(job(b, 3, at(200))),
        ],
    );
    let order = |jobs: Vec<JobRecord>| -> Vec<(u128, u64)> {
        jobs.into_iter()
            .map(|j| (j.instance.as_u128(), j.job))
            .collect()
    };
    assert_eq!(store.job(b, 1).unwrap(), Some(locked.clone()));
    assert_eq!(store.job(b, 9).unwrap(), None);
    assert_eq!(
        order(store.due_jobs(at(30), 100).unwrap()),
        vec![(1, 2), (2, 2), (1, 1)],
        "a job locked until after now is not due"
    );
    assert_eq!(
        order(store.due_jobs(at(30), 1).unwrap()),
        vec![(1, 2)],
        "the limit counts returned jobs"
    );
    assert_eq!(
        order(store.due_jobs(at(50), 100).unwrap()),
        vec![(2, 1), (1, 2), (2, 2), (1, 1)],
        "a lock that ran out frees the job"
    );
    assert_eq!(order(store.due_jobs(at(9), 100).unwrap()), vec![]);
    assert_eq!(
        order(store.jobs_of(b).unwrap()),
        vec![(2, 1), (2, 2), (2, 3)]
    );

    // Retry with backoff: same job, later due, new attempt.
    let mut retry = job(a, 2, at(150));
    retry.attempt = 2;
    retry.last_error = Some("timeout".into());
    commit(store, vec![Op::PutJob(retry.clone())]);
    assert_eq!(store.job(a, 2).unwrap(), Some(retry));
    assert_eq!(
        order(store.due_jobs(at(160), 100).unwrap()),
        vec![(2, 1), (2, 2), (1, 1), (1, 2)]
    );
    commit(
        store,
        vec![
            Op::DeleteJob {
                instance: a,
                job: 1,
            },
            Op::DeleteJob {
                instance: b,
                job: 1,
            },
            Op::DeleteJob {
                instance: b,
                job: 7,
            },
        ],
    );
    assert_eq!(
        order(store.due_jobs(at(1000), 100).unwrap()),
        vec![(2, 2), (1, 2), (2, 3)]
    );
    assert_eq!(store.job(a, 1).unwrap(), None);
}

/// An external job of `job_type`.
pub fn external_job(instance: InstanceId, job: u64, job_type: &str, due: Timestamp) -> JobRecord {
    JobRecord {
        connector: super::EXTERNAL_CONNECTOR.into(),
        operation: job_type.into(),
        ..self::job(instance, job, due)
    }
}

pub fn external_jobs_by_type_apart_from_due_jobs(store: &dyn Store) {
    let (a, b, c) = (id(1), id(2), id(3));
    let mut locked = external_job(b, 2, "score", at(40));
    locked.locked_until = Some(at(40));
    locked.locked_by = Some("worker-1".into());
    locked.lease_token = Some("secret".into());
    commit(
        store,
        vec![
            Op::PutJob(job(a, 1, at(10))),
            Op::PutJob(external_job(a, 2, "score", at(20))),
            Op::PutJob(external_job(b, 1, "score", at(5))),
            Op::PutJob(locked.clone()),
            Op::PutJob(external_job(c, 1, "score-lead", at(1))),
            Op::PutJob(external_job(c, 2, "sc", at(1))),
        ],
    );
    let order = |jobs: Vec<JobRecord>| -> Vec<(u128, u64)> {
        jobs.into_iter()
            .map(|j| (j.instance.as_u128(), j.job))
            .collect()
    };
    assert_eq!(
        order(store.due_jobs(at(1000), 100).unwrap()),
        vec![(1, 1)],
        "the runtime never sees external jobs"
    );
    assert_eq!(
        order(store.due_external_jobs("score", at(30), 100).unwrap()),
        vec![(2, 1), (1, 2)],
        "only that type (not a longer or shorter name), due, free, earliest first"
    );
    assert_eq!(
        order(store.due_external_jobs("score", at(30), 1).unwrap()),
        vec![(2, 1)]
    );
    assert_eq!(
        order(store.due_external_jobs("score", at(40), 100).unwrap()),
        vec![(2, 1), (1, 2), (2, 2)],
        "a lease that ran out frees the job"
    );
    assert_eq!(
        order(store.due_external_jobs("none", at(40), 100).unwrap()),
        vec![]
    );
    assert_eq!(store.job(b, 2).unwrap(), Some(locked.clone()));
    assert_eq!(
        order(store.jobs_of(a).unwrap()),
        vec![(1, 1), (1, 2)],
        "an instance's jobs include its external ones"
    );
    assert_eq!(
        order(store.external_jobs(100).unwrap()),
        vec![(3, 2), (2, 1), (1, 2), (2, 2), (3, 1)],
        "by type, then due"
    );

    // Locking moves the job later; deleting removes it from the type's index.
    let mut relocked = locked.clone();
    relocked.due = at(90);
    relocked.locked_until = Some(at(90));
    commit(
        store,
        vec![
            Op::PutJob(relocked.clone()),
            Op::DeleteJob {
                instance: a,
                job: 2,
            },
        ],
    );
    assert_eq!(
        order(store.due_external_jobs("score", at(89), 100).unwrap()),
        vec![(2, 1)]
    );
    assert_eq!(store.job(b, 2).unwrap(), Some(relocked));
    assert_eq!(store.job(a, 2).unwrap(), None);

    // Removing a finished instance removes its external jobs.
    commit(
        store,
        vec![Op::PutInstance(instance(3, "p", InstanceStatus::Completed))],
    );
    assert_eq!(store.remove_finished(at(1000)).unwrap(), 1);
    assert_eq!(store.jobs_of(c).unwrap(), vec![]);
    assert_eq!(
        order(store.external_jobs(100).unwrap()),
        vec![(2, 1), (2, 2)]
    );
}

pub fn tasks_order_and_delete(store: &dyn Store) {
    let (a, b) = (id(1), id(2));
    commit(
        store,
        vec![
            Op::PutTask(task(a, 1, at(30))),
            Op::PutTask(task(b, 1, at(10))),
            Op::PutTask(task(a, 2, at(20))),
        ],
    );
    let order = |tasks: Vec<TaskRecord>| -> Vec<(u128, u64)> {
        tasks
            .into_iter()
            .map(|t| (t.instance.as_u128(), t.task))
            .collect()
    };
    assert_eq!(store.task(a, 2).unwrap(), Some(task(a, 2, at(20))));
    assert_eq!(store.task(a, 3).unwrap(), None);
    assert_eq!(
        order(store.tasks(100).unwrap()),
        vec![(2, 1), (1, 2), (1, 1)]
    );
    assert_eq!(order(store.tasks(2).unwrap()), vec![(2, 1), (1, 2)]);

    // Reassigning keeps one task.
    let mut reassigned = task(b, 1, at(10));
    reassigned.assignee = Some("bruno".into());
    commit(store, vec![Op::PutTask(reassigned.clone())]);
    assert_eq!(store.task(b, 1).unwrap(), Some(reassigned));
    assert_eq!(store.tasks(100).unwrap().len(), 3);

    commit(
        store,
        vec![Op::DeleteTask {
            instance: b,
            task: 1,
        }],
    );
    assert_eq!(order(store.tasks(100).unwrap()), vec![(1, 2), (1, 1)]);
    assert_eq!(store.task(b, 1).unwrap(), None);
}

pub fn subscriptions_by_name_and_key(store: &dyn Store) {
    let (a, b) = (id(1), id(2));
    commit(
        store,
        vec![
            Op::PutSubscription(subscription("paid", "INV-1", b, 1)),
            Op::PutSubscription(subscription("paid", "INV-1", a, 1)),
            Op::PutSubscription(subscription("paid", "INV-2", a, 2)),
            // Names and keys that would collide if simply concatenated.
            Op::PutSubscription(subscription("pa", "idINV-1", a, 3)),
            Op::PutSubscription(subscription("paid\0", "INV-1", a, 4)),
            Op::PutSubscription(subscription("paid", "\0INV-1", a, 5)),
        ],
    );
    let order = |subscriptions: Vec<SubscriptionRecord>| -> Vec<(u128, u64)> {
        subscriptions
            .into_iter()
            .map(|s| (s.instance.as_u128(), s.subscription))
            .collect()
    };
    assert_eq!(
        store.subscriptions("paid", "INV-1").unwrap(),
        vec![
            subscription("paid", "INV-1", a, 1),
            subscription("paid", "INV-1", b, 1)
        ]
    );
    assert_eq!(
        order(store.subscriptions("paid", "INV-2").unwrap()),
        vec![(1, 2)]
    );
    assert_eq!(
        order(store.subscriptions("pa", "idINV-1").unwrap()),
        vec![(1, 3)]
    );
    assert_eq!(
        order(store.subscriptions("paid\0", "INV-1").unwrap()),
        vec![(1, 4)]
    );
    assert_eq!(
        order(store.subscriptions("paid", "\0INV-1").unwrap()),
        vec![(1, 5)]
    );
    assert_eq!(order(store.subscriptions("paid", "INV-3").unwrap()), vec![]);
    assert_eq!(order(store.subscriptions("paid", "").unwrap()), vec![]);

    // Re-subscribing the same (instance, subscription) to another key moves it.
    commit(
        store,
        vec![Op::PutSubscription(subscription("paid", "INV-3", a, 1))],
    );
    assert_eq!(
        order(store.subscriptions("paid", "INV-1").unwrap()),
        vec![(2, 1)]
    );
    assert_eq!(
        order(store.subscriptions("paid", "INV-3").unwrap()),
        vec![(1, 1)]
    );

    commit(
        store,
        vec![
            Op::DeleteSubscription {
                instance: b,
                subscription: 1,
            },
            Op::DeleteSubscription {
                instance: b,
                subscription: 8,
            },
        ],
    );
    assert_eq!(order(store.subscriptions("paid", "INV-1").unwrap()), vec![]);
    assert_eq!(
        order(store.subscriptions("paid", "INV-2").unwrap()),
        vec![(1, 2)]
    );
}

pub fn messages_buffered_in_arrival_order(store: &dyn Store) {
    commit(
        store,
        vec![
            Op::PutMessage(message("paid", "INV-1", "first")),
            Op::PutMessage(message("paid", "INV-2", "other")),
        ],
    );
    commit(
        store,
        vec![Op::PutMessage(message("paid", "INV-1", "second"))],
    );
    commit(
        store,
        vec![Op::PutMessage(message("pai", "dINV-1", "third"))],
    );
    let texts = |messages: &[MessageRecord]| -> Vec<String> {
        messages
            .iter()
            .map(|m| match m.vars.get("text") {
                Some(Value::String(s)) => s.clone(),
                other => panic!("text expected, got {other:?}"),
            })
            .collect()
    };
    let inv1 = store.messages("paid", "INV-1").unwrap();
    assert_eq!(texts(&inv1), vec!["first", "second"]);
    let inv2 = store.messages("paid", "INV-2").unwrap();
    let other = store.messages("pai", "dINV-1").unwrap();
    assert_eq!(texts(&other), vec!["third"]);
    // The store assigns increasing sequences, unique across all messages, ignoring the given.
    let mut seqs: Vec<u64> = [&inv1[..], &inv2[..], &other[..]]
        .concat()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert!(inv1[0].seq < inv2[0].seq && inv2[0].seq < inv1[1].seq);
    assert!(inv1[1].seq < other[0].seq);
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 4);
    assert!(!seqs.contains(&999));
    let expected = MessageRecord {
        seq: inv1[0].seq,
        ..message("paid", "INV-1", "first")
    };
    assert_eq!(inv1[0], expected, "the record round trips apart from seq");

    commit(
        store,
        vec![
            Op::DeleteMessage { seq: inv1[0].seq },
            Op::DeleteMessage { seq: 123_456 },
        ],
    );
    assert_eq!(
        texts(&store.messages("paid", "INV-1").unwrap()),
        vec!["second"]
    );
    assert_eq!(
        texts(&store.messages("paid", "INV-2").unwrap()),
        vec!["other"]
    );

    // A later message never reuses a deleted sequence.
    commit(
        store,
        vec![Op::PutMessage(message("paid", "INV-1", "fourth"))],
    );
    let inv1 = store.messages("paid", "INV-1").unwrap();
    assert_eq!(texts(&inv1), vec!["second", "fourth"]);
    assert!(inv1[1].seq > other[0].seq);
}

pub fn message_ids_expire(store: &dyn Store) {
    assert!(!store.message_id_seen("m-1", at(0)).unwrap());
    commit(
        store,
        vec![Op::PutMessageId {
            id: "m-1".into(),
            until: at(100),
        }],
    );
    assert!(store.message_id_seen("m-1", at(0)).unwrap());
    assert!(store.message_id_seen("m-1", at(99)).unwrap());
    assert!(!store.message_id_seen("m-1", at(100)).unwrap());
    assert!(!store.message_id_seen("m-1", at(101)).unwrap());
    assert!(!store.message_id_seen("m-2", at(0)).unwrap());
    assert!(!store.message_id_seen("m-", at(0)).unwrap());
    // Seeing it again extends the memory.
    commit(
        store,
        vec![Op::PutMessageId {
            id: "m-1".into(),
            until: at(200),
        }],
    );
    assert!(store.message_id_seen("m-1", at(150)).unwrap());
}

pub fn incidents_round_trip_and_delete(store: &dyn Store) {
    let (a, b) = (id(1), id(2));
    let mut without_job = incident(a, 2);
    without_job.job = None;
    commit(
        store,
        vec![
            Op::PutIncident(incident(b, 1)),
            Op::PutIncident(without_job.clone()),
            Op::PutIncident(incident(a, 1)),
        ],
    );
    assert_eq!(
        store.incidents().unwrap(),
        vec![incident(a, 1), without_job.clone(), incident(b, 1)]
    );
    assert_eq!(
        store.incidents_of(a).unwrap(),
        vec![incident(a, 1), without_job.clone()]
    );
    commit(
        store,
        vec![Op::DeleteIncident {
            instance: a,
            incident: 1,
        }],
    );
    assert_eq!(store.incidents_of(a).unwrap(), vec![without_job]);
    assert_eq!(store.incidents_of(id(3)).unwrap(), vec![]);
}

pub fn history_in_sequence_order(store: &dyn Store) {
    let (a, b) = (id(1), id(2));
    commit(
        store,
        vec![
            Op::AppendHistory(history(a, 2)),
            Op::AppendHistory(history(b, 1)),
            Op::AppendHistory(history(a, 1)),
        ],
    );
    // 256 lines: sequences past one byte must still sort numerically.
    commit(
        store,
        (3..=300)
            .map(|seq| Op::AppendHistory(history(a, seq)))
            .collect(),
    );
    let lines = store.history(a).unwrap();
    assert_eq!(lines.len(), 300);
    assert!(lines.iter().zip(1..).all(|(h, seq)| h.seq == seq));
    assert_eq!(lines[0], history(a, 1));
    assert_eq!(store.history(b).unwrap(), vec![history(b, 1)]);
    assert_eq!(store.history(id(3)).unwrap(), vec![]);
}

pub fn request_keys(store: &dyn Store) {
    assert_eq!(store.request_key("start:quote:Q-1").unwrap(), None);
    commit(
        store,
        vec![
            Op::PutRequestKey {
                key: "start:quote:Q-1".into(),
                instance: id(1),
            },
            Op::PutRequestKey {
                key: "start:quote:Q-2".into(),
                instance: id(2),
            },
        ],
    );
    assert_eq!(store.request_key("start:quote:Q-1").unwrap(), Some(id(1)));
    assert_eq!(store.request_key("start:quote:Q-2").unwrap(), Some(id(2)));
    assert_eq!(store.request_key("start:quote:Q-").unwrap(), None);
}

pub fn users_round_trip_replace_and_delete(store: &dyn Store) {
    assert_eq!(store.users().unwrap(), vec![]);
    let mut bare = user("bruno");
    bare.display_name = None;
    bare.email = None;
    bare.groups = vec![];
    bare.password_hash = None;
    // Prefix-sharing names check the key encoding keeps `anna` and `anna.b` apart.
    commit(
        store,
        vec![
            Op::PutUser(user("anna.b")),
            Op::PutUser(bare.clone()),
            Op::PutUser(user("anna")),
        ],
    );
    assert_eq!(store.user("anna").unwrap(), Some(user("anna")));
    assert_eq!(store.user("bruno").unwrap(), Some(bare));
    assert_eq!(store.user("ann").unwrap(), None);
    let names =
        |users: Vec<UserRecord>| -> Vec<String> { users.into_iter().map(|u| u.name).collect() };
    assert_eq!(
        names(store.users().unwrap()),
        vec!["anna", "anna.b", "bruno"]
    );

    // Replacing keeps one user; the groups are the new ones, in the given order.
    let mut moved = user("anna");
    moved.groups = vec!["support".into(), "admins".into()];
    commit(store, vec![Op::PutUser(moved.clone())]);
    assert_eq!(store.user("anna").unwrap(), Some(moved));
    assert_eq!(store.users().unwrap().len(), 3);

    commit(
        store,
        vec![
            Op::DeleteUser {
                name: "anna".into(),
            },
            // Deleting what is not there is not an error.
            Op::DeleteUser {
                name: "nobody".into(),
            },
        ],
    );
    assert_eq!(store.user("anna").unwrap(), None);
    assert_eq!(names(store.users().unwrap()), vec!["anna.b", "bruno"]);
}

pub fn tokens_round_trip_order_and_delete(store: &dyn Store) {
    assert_eq!(store.tokens().unwrap(), vec![]);
    let mut service = token("c3", Role::Operator, at(10));
    service.user = None;
    service.label = None;
    commit(
        store,
        vec![
            Op::PutToken(token("b2", Role::Admin, at(30))),
            Op::PutToken(service.clone()),
            Op::PutToken(token("a1", Role::User, at(20))),
            // Same instant as `c3`: ties go by hash.
            Op::PutToken(token("d4", Role::Analyst, at(10))),
        ],
    );
    assert_eq!(store.token("c3").unwrap(), Some(service));
    assert_eq!(
        store.token("a1").unwrap(),
        Some(token("a1", Role::User, at(20)))
    );
    assert_eq!(store.token("a").unwrap(), None);
    let hashes =
        |tokens: Vec<TokenRecord>| -> Vec<String> { tokens.into_iter().map(|t| t.hash).collect() };
    assert_eq!(
        hashes(store.tokens().unwrap()),
        vec!["c3", "d4", "a1", "b2"],
        "by creation, then hash"
    );
    let roles: Vec<Role> = store.tokens().unwrap().iter().map(|t| t.role).collect();
    assert_eq!(
        roles,
        vec![Role::Operator, Role::Analyst, Role::User, Role::Admin]
    );

    // Replacing a token with another creation time moves it and leaves no trace behind.
    commit(store, vec![Op::PutToken(token("c3", Role::User, at(40)))]);
    assert_eq!(
        hashes(store.tokens().unwrap()),
        vec!["d4", "a1", "b2", "c3"]
    );
    commit(
        store,
        vec![
            Op::DeleteToken { hash: "a1".into() },
            Op::DeleteToken { hash: "zz".into() },
        ],
    );
    assert_eq!(store.token("a1").unwrap(), None);
    assert_eq!(hashes(store.tokens().unwrap()), vec!["d4", "b2", "c3"]);
}

pub fn session(hash: &str, user: &str, created_at: Timestamp) -> SessionRecord {
    SessionRecord {
        hash: hash.into(),
        user: user.into(),
        csrf: format!("csrf-{hash}"),
        created_at,
        last_seen: created_at,
    }
}

pub fn sessions_round_trip_replace_and_delete(store: &dyn Store) {
    assert_eq!(store.sessions().unwrap(), vec![]);
    commit(
        store,
        vec![
            Op::PutSession(session("b2", "bruno", at(20))),
            Op::PutSession(session("a1", "anna", at(10))),
            Op::PutSession(session("a1\u{0}x", "anna", at(30))),
        ],
    );
    assert_eq!(
        store.session("a1").unwrap(),
        Some(session("a1", "anna", at(10)))
    );
    assert_eq!(store.session("a").unwrap(), None);
    let hashes = |sessions: Vec<SessionRecord>| -> Vec<String> {
        sessions.into_iter().map(|s| s.hash).collect()
    };
    assert_eq!(
        hashes(store.sessions().unwrap()),
        vec!["a1", "a1\u{0}x", "b2"],
        "by hash"
    );

    // Replacing (a request seen later) keeps one session with the new time.
    let mut seen = session("a1", "anna", at(10));
    seen.last_seen = at(50);
    commit(store, vec![Op::PutSession(seen.clone())]);
    assert_eq!(store.session("a1").unwrap(), Some(seen));
    assert_eq!(store.sessions().unwrap().len(), 3);

    commit(
        store,
        vec![
            Op::DeleteSession { hash: "a1".into() },
            // Deleting what is not there is not an error.
            Op::DeleteSession { hash: "zz".into() },
        ],
    );
    assert_eq!(store.session("a1").unwrap(), None);
    assert_eq!(hashes(store.sessions().unwrap()), vec!["a1\u{0}x", "b2"]);
}

pub fn batch_effects_all_visible_and_ordered(store: &dyn Store) {
    let a = id(1);
    store
        .commit(Batch::default())
        .expect("an empty batch commits");
    let record = instance(1, "quote", InstanceStatus::Active);
    commit(
        store,
        vec![
            Op::PutInstance(record.clone()),
            Op::AppendHistory(history(a, 1)),
            Op::PutTimer(timer(a, 1, at(10))),
            Op::PutJob(job(a, 1, at(10))),
            Op::PutTask(task(a, 1, at(10))),
            Op::PutSubscription(subscription("paid", "INV-1", a, 1)),
            Op::PutIncident(incident(a, 1)),
            Op::PutMessage(message("paid", "INV-9", "early")),
            Op::PutMessageId {
                id: "m-1".into(),
                until: at(100),
            },
            Op::PutRequestKey {
                key: "start:Q-1".into(),
                instance: a,
            },
            // Later ops in a batch see earlier ones: this timer is put then moved, that one
            // put then deleted, so only the moved one remains, once.
            Op::PutTimer(timer(a, 2, at(5))),
            Op::PutTimer(timer(a, 2, at(15))),
            Op::PutTimer(timer(a, 3, at(1))),
            Op::DeleteTimer {
                instance: a,
                timer: 3,
            },
            Op::PutJob(job(a, 2, at(1))),
            Op::DeleteJob {
                instance: a,
                job: 2,
            },
            Op::PutMessage(message("paid", "INV-9", "late")),
        ],
    );
    assert_eq!(store.instance(a).unwrap(), Some(record));
    assert_eq!(store.history(a).unwrap(), vec![history(a, 1)]);
    assert_eq!(
        store.due_timers(at(100), 100).unwrap(),
        vec![timer(a, 1, at(10)), timer(a, 2, at(15))]
    );
    assert_eq!(store.timers_of(a).unwrap().len(), 2);
    assert_eq!(
        store.due_jobs(at(100), 100).unwrap(),
        vec![job(a, 1, at(10))]
    );
    assert_eq!(store.jobs_of(a).unwrap(), vec![job(a, 1, at(10))]);
    assert_eq!(store.tasks(10).unwrap(), vec![task(a, 1, at(10))]);
    assert_eq!(store.subscriptions("paid", "INV-1").unwrap().len(), 1);
    assert_eq!(store.incidents().unwrap(), vec![incident(a, 1)]);
    let buffered = store.messages("paid", "INV-9").unwrap();
    assert_eq!(buffered.len(), 2);
    assert!(buffered[0].seq < buffered[1].seq);
    assert!(store.message_id_seen("m-1", at(0)).unwrap());
    assert_eq!(store.request_key("start:Q-1").unwrap(), Some(a));
}

/// Gives instance `n` one of everything an instance can own.
pub fn instance_with_everything(record: InstanceRecord) -> Vec<Op> {
    let i = record.id;
    let n = i.as_u128();
    vec![
        Op::PutInstance(record),
        Op::AppendHistory(history(i, 1)),
        Op::AppendHistory(history(i, 2)),
        Op::PutTimer(timer(i, 1, at(10 + n as i64))),
        Op::PutJob(job(i, 1, at(10))),
        Op::PutTask(task(i, 1, at(n as i64))),
        Op::PutSubscription(subscription("paid", "INV-1", i, 1)),
        Op::PutSubscription(subscription("own", &format!("INV-{n}"), i, 2)),
        Op::PutIncident(incident(i, 1)),
        Op::PutRequestKey {
            key: format!("start:{n}"),
            instance: i,
        },
    ]
}

pub fn remove_finished_removes_exactly_the_old_finished(store: &dyn Store) {
    use InstanceStatus::*;
    let ended = |n, status, ended_at: Option<Timestamp>| InstanceRecord {
        ended_at,
        ..instance(n, "quote", status)
    };
    let records = [
        ended(1, Active, None),
        ended(2, Completed, Some(at(10))),
        ended(3, Failed, Some(at(20))),
        ended(4, Completed, Some(at(100))),
        ended(5, Terminated, Some(at(99))),
        ended(6, Cancelled, None),
        ended(7, Active, Some(at(10))),
    ];
    for record in &records {
        commit(store, instance_with_everything(record.clone()));
    }
    commit(
        store,
        vec![Op::PutMessage(message("paid", "INV-1", "kept"))],
    );

    assert_eq!(store.remove_finished(at(100)).unwrap(), 3);
    let kept: Vec<u128> = all(store).iter().map(|i| i.id.as_u128()).collect();
    assert_eq!(kept, vec![1, 4, 6, 7]);
    for n in [2, 3, 5] {
        let i = id(n);
        assert_eq!(store.instance(i).unwrap(), None);
        assert_eq!(store.history(i).unwrap(), vec![]);
        assert_eq!(store.timers_of(i).unwrap(), vec![]);
        assert_eq!(store.jobs_of(i).unwrap(), vec![]);
        assert_eq!(store.job(i, 1).unwrap(), None);
        assert_eq!(store.task(i, 1).unwrap(), None);
        assert_eq!(store.incidents_of(i).unwrap(), vec![]);
        assert_eq!(
            store.subscriptions("own", &format!("INV-{n}")).unwrap(),
            vec![]
        );
    }
    for n in [1, 4, 6, 7] {
        let i = id(n);
        assert!(store.instance(i).unwrap().is_some());
        assert_eq!(store.history(i).unwrap().len(), 2);
        assert_eq!(store.timers_of(i).unwrap().len(), 1);
        assert_eq!(store.jobs_of(i).unwrap().len(), 1);
        assert_eq!(store.incidents_of(i).unwrap().len(), 1);
        assert_eq!(
            store
                .subscriptions("own", &format!("INV-{n}"))
                .unwrap()
                .len(),
            1
        );
    }
    // The shared indexes hold only what is left.
    let owners = |instances: Vec<InstanceId>| -> Vec<u128> {
        instances.into_iter().map(|i| i.as_u128()).collect()
    };
    let kept_owners = vec![1, 4, 6, 7];
    assert_eq!(
        owners(
            store
                .due_timers(at(1000), 100)
                .unwrap()
                .into_iter()
                .map(|t| t.instance)
                .collect()
        ),
        kept_owners
    );
    assert_eq!(
        owners(
            store
                .due_jobs(at(1000), 100)
                .unwrap()
                .into_iter()
                .map(|j| j.instance)
                .collect()
        ),
        kept_owners
    );
    assert_eq!(
        owners(
            store
                .tasks(100)
                .unwrap()
                .into_iter()
                .map(|t| t.instance)
                .collect()
        ),
        kept_owners
    );
    assert_eq!(
        owners(
            store
                .subscriptions("paid", "INV-1")
                .unwrap()
                .into_iter()
                .map(|s| s.instance)
                .collect()
        ),
        kept_owners
    );
    assert_eq!(
        owners(
            store
                .incidents()
                .unwrap()
                .into_iter()
                .map(|i| i.instance)
                .collect()
        ),
        kept_owners
    );
    // Buffered messages belong to no instance; request keys outlive their instance.
    assert_eq!(store.messages("paid", "INV-1").unwrap().len(), 1);
    assert_eq!(store.request_key("start:2").unwrap(), Some(id(2)));

    assert_eq!(store.remove_finished(at(100)).unwrap(), 0);
    assert_eq!(store.remove_finished(at(101)).unwrap(), 1);
    let kept: Vec<u128> = all(store).iter().map(|i| i.id.as_u128()).collect();
    assert_eq!(kept, vec![1, 6, 7]);
}

pub fn concurrent_commits_all_visible(store: &dyn Store) {
    const THREADS: u128 = 8;
    const COMMITS: u128 = 200;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            scope.spawn(move || {
                for n in 0..COMMITS {
                    let i = id(thread * 1000 + n + 1);
                    let mut record = instance(0, "load", InstanceStatus::Active);
                    record.id = i;
                    commit(
                        store,
                        vec![
                            Op::PutInstance(record),
                            Op::AppendHistory(history(i, 1)),
                            Op::AppendHistory(history(i, 2)),
                            Op::PutMessage(message("load", "k", "m")),
                        ],
                    );
                }
            });
        }
    });
    let listed = all(store);
    assert_eq!(listed.len(), (THREADS * COMMITS) as usize);
    for thread in 0..THREADS {
        for n in 0..COMMITS {
            let i = id(thread * 1000 + n + 1);
            assert!(listed.binary_search_by_key(&i, |r| r.id).is_ok());
            assert_eq!(store.history(i).unwrap().len(), 2);
        }
    }
    let messages = store.messages("load", "k").unwrap();
    assert_eq!(messages.len(), (THREADS * COMMITS) as usize);
    assert!(
        messages.windows(2).all(|w| w[0].seq < w[1].seq),
        "concurrent messages get distinct increasing sequences"
    );
}

// ---------------------------------------------------------------------------------------------
// Durable stores: checks that reopen the same data folder, given a function that opens it.

/// Opens a durable store on a data folder (the same folder again on each call).
pub type Open<'a> = &'a dyn Fn(&std::path::Path) -> super::Result<Box<dyn Store>>;

/// Everything committed is there again after a reopen, and message sequences carry on after
/// the highest ever given, even past deleted messages.
pub fn reopening_keeps_everything(open: Open<'_>) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let open = || open(dir.path()).expect("open");
    let record = instance(1, "quote", InstanceStatus::Active);
    let store = open();
    commit(&*store, instance_with_everything(record.clone()));
    commit(
        &*store,
        vec![
            Op::PutMessage(message("paid", "INV-1", "a")),
            Op::PutMessageId {
                id: "m-1".into(),
                until: at(100),
            },
            Op::PutUser(user("anna")),
            Op::PutUser(user("bruno")),
            Op::PutToken(token("b2", Role::Admin, at(2))),
            Op::PutToken(token("a1", Role::User, at(3))),
        ],
    );
    let snapshot = |store: &dyn Store| {
        (
            store.history(id(1)).unwrap(),
            store.timers_of(id(1)).unwrap(),
            store.jobs_of(id(1)).unwrap(),
            store.tasks(10).unwrap(),
            store.subscriptions("paid", "INV-1").unwrap(),
            store.incidents().unwrap(),
            store.messages("paid", "INV-1").unwrap(),
            store.users().unwrap(),
            store.tokens().unwrap(),
        )
    };
    let before = snapshot(&*store);
    assert_eq!(before.0.len(), 2);
    assert_eq!(before.7.len(), 2);
    assert_eq!(before.8.len(), 2);
    drop(store);

    let store = open();
    assert_eq!(store.instance(id(1)).unwrap(), Some(record));
    assert_eq!(snapshot(&*store), before);
    assert!(store.message_id_seen("m-1", at(0)).unwrap());
    assert_eq!(store.request_key("start:1").unwrap(), Some(id(1)));
    assert_eq!(store.due_timers(at(1000), 10).unwrap(), before.1);
    assert_eq!(store.user("bruno").unwrap(), Some(user("bruno")));
    assert_eq!(
        store.token("a1").unwrap(),
        Some(token("a1", Role::User, at(3)))
    );

    let last = before.6[0].seq;
    commit(&*store, vec![Op::DeleteMessage { seq: last }]);
    drop(store);
    let store = open();
    commit(&*store, vec![Op::PutMessage(message("paid", "INV-1", "b"))]);
    let messages = store.messages("paid", "INV-1").unwrap();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].seq > last);
}

/// A second open of a folder in use fails with `Locked` naming the folder; once the first
/// store is closed, the folder opens again.
pub fn a_folder_in_use_is_locked(open: Open<'_>) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let first = open(dir.path()).expect("first open");
    match open(dir.path()) {
        Err(super::StoreError::Locked(path)) => {
            assert_eq!(path, dir.path().display().to_string());
            let message = super::StoreError::Locked(path).to_string();
            assert!(message.contains("in use by another process"), "{message}");
        }
        other => panic!("expected Locked, got {:?}", other.map(|_| "a store")),
    }
    drop(first);
    open(dir.path()).expect("free again after close");
}

/// Set in a child process started by `acknowledged_commits_survive_sigkill`: the data
/// folder the child writes to.
const CRASH_CHILD: &str = "CICLO_STORE_CRASH_CHILD";
const CHILD_THREADS: u128 = 4;

fn crash_instance(thread: u128, n: u128) -> InstanceRecord {
    let mut record = instance(0, "crash", InstanceStatus::Active);
    record.id = id((thread << 64) | (n + 1));
    record.state = vec![thread as u8; 300];
    record
}

fn crash_batch(record: &InstanceRecord) -> Vec<Op> {
    let i = record.id;
    vec![
        Op::PutInstance(record.clone()),
        Op::AppendHistory(history(i, 1)),
        Op::AppendHistory(history(i, 2)),
        Op::PutTimer(timer(i, 1, at(60))),
        Op::PutMessage(message("crash", &i.to_string(), "m")),
    ]
}

/// The child's side: commit forever from several threads, printing each acknowledged
/// commit, until the parent kills it.
fn crash_child(store: &dyn Store) -> ! {
    std::thread::scope(|scope| {
        for thread in 0..CHILD_THREADS {
            scope.spawn(move || {
                for n in 0.. {
                    let record = crash_instance(thread, n);
                    commit(store, crash_batch(&record));
                    println!("ack {thread} {n}");
                }
            });
        }
    });
    unreachable!("the child commits until it is killed")
}

/// "Answered means durable": a real child process commits in a loop and is killed with
/// SIGKILL; every commit it acknowledged must be there, whole, after a reopen, and every
/// commit that made it at all must be whole.
///
/// `test` is the full name of the calling test: the test binary runs itself again as the
/// child with that test alone, and the call then takes the child's side.
pub fn acknowledged_commits_survive_sigkill(test: &str, open: Open<'_>) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    if let Ok(path) = std::env::var(CRASH_CHILD) {
        let store = open(std::path::Path::new(&path)).expect("child opens the store");
        crash_child(&*store);
    }
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().unwrap();
    let (lines, acks) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 400 {
        let line = match acks.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(error) => {
                let _ = child.kill();
                panic!(
                    "the child stopped acknowledging after {} commits: {error}",
                    acknowledged.len()
                );
            }
        };
        let mut words = line.split_whitespace();
        if words.next() != Some("ack") {
            continue;
        }
        let mut number = || words.next().and_then(|w| w.parse::<u128>().ok());
        let (Some(thread), Some(n)) = (number(), number()) else {
            panic!("bad line from the child: {line}");
        };
        acknowledged.push((thread, n));
    }
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();

    let store = open(dir.path()).expect("reopen after kill");
    for &(thread, n) in &acknowledged {
        let expected = crash_instance(thread, n);
        assert_eq!(
            store.instance(expected.id).unwrap().as_ref(),
            Some(&expected),
            "acknowledged commit {thread}/{n} lost"
        );
    }
    // Every commit that is there at all is there whole, acknowledged or not.
    let present = all(&*store);
    assert!(present.len() >= acknowledged.len());
    for record in &present {
        let i = record.id;
        assert_eq!(store.history(i).unwrap().len(), 2, "history of {i}");
        assert_eq!(store.timers_of(i).unwrap().len(), 1, "timer of {i}");
        assert_eq!(
            store.messages("crash", &i.to_string()).unwrap().len(),
            1,
            "message of {i}"
        );
    }
    assert_eq!(
        store.due_timers(at(60), 100_000).unwrap().len(),
        present.len()
    );
}

/// 64 threads committing at once share flushes (group commit), and every commit is there.
pub fn concurrent_commits_share_flushes(store: &dyn Store, stats: impl Fn() -> super::StoreStats) {
    const THREADS: u128 = 64;
    const COMMITS: u128 = 20;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            scope.spawn(move || {
                for n in 0..COMMITS {
                    let mut record = instance(0, "load", InstanceStatus::Active);
                    record.id = id(thread * 1000 + n + 1);
                    commit(store, vec![Op::PutInstance(record)]);
                }
            });
        }
    });
    let stats = stats();
    assert_eq!(stats.commits, (THREADS * COMMITS) as u64);
    assert!(
        stats.flushes < stats.commits,
        "group commit: {} flushes for {} commits",
        stats.flushes,
        stats.commits
    );
    assert_eq!(
        store.instances(&InstanceFilter::default()).unwrap().len(),
        (THREADS * COMMITS) as usize
    );
}

pub fn link(hash: &str, decision: &str, siblings: &[&str]) -> LinkRecord {
    LinkRecord {
        hash: hash.into(),
        instance: id(1),
        task: 3,
        decision: decision.into(),
        email: "anna@example.com".into(),
        name: Some("Anna <A> & Co".into()),
        created_at: at(10),
        expires_at: at(1_000),
        siblings: siblings.iter().map(|s| s.to_string()).collect(),
        used: None,
    }
}

pub fn links_round_trip_and_replace(store: &dyn Store) {
    assert_eq!(store.link("a1").unwrap(), None);
    commit(
        store,
        vec![
            Op::PutLink(link("a1", "approve", &["r2"])),
            Op::PutLink(link("r2", "reject", &["a1"])),
        ],
    );
    assert_eq!(
        store.link("a1").unwrap(),
        Some(link("a1", "approve", &["r2"]))
    );
    assert_eq!(store.link("a").unwrap(), None, "no prefix match");

    // Using a link replaces the record, with who, when and what.
    let mut used = link("r2", "reject", &["a1"]);
    used.used = Some(LinkUse {
        by: "anna@example.com".into(),
        at: at(20),
        decision: "approve".into(),
    });
    commit(store, vec![Op::PutLink(used.clone())]);
    assert_eq!(store.link("r2").unwrap(), Some(used));
    assert_eq!(
        store.link("a1").unwrap(),
        Some(link("a1", "approve", &["r2"]))
    );
}

pub fn rotation(name: &str, last: &str, position: u64, picks: u64) -> RotationRecord {
    RotationRecord {
        name: name.into(),
        last: last.into(),
        position,
        picks,
        updated_at: at(30),
    }
}

pub fn rotations_round_trip_and_replace(store: &dyn Store) {
    assert_eq!(store.rotation("italy").unwrap(), None);
    commit(
        store,
        vec![
            Op::PutRotation(rotation("italy", "anna", 0, 1)),
            Op::PutRotation(rotation("italy-north", "marco", 2, 7)),
        ],
    );
    assert_eq!(
        store.rotation("italy").unwrap(),
        Some(rotation("italy", "anna", 0, 1))
    );
    assert_eq!(store.rotation("ital").unwrap(), None, "no prefix match");

    // Each pick replaces the record; the other rotation is untouched.
    commit(
        store,
        vec![Op::PutRotation(rotation("italy", "bruno", 1, 2))],
    );
    assert_eq!(
        store.rotation("italy").unwrap(),
        Some(rotation("italy", "bruno", 1, 2))
    );
    assert_eq!(
        store.rotation("italy-north").unwrap(),
        Some(rotation("italy-north", "marco", 2, 7))
    );
}

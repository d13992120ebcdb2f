//! Durable state behind one narrow interface: the records the runtime keeps, an atomic batch of
//! changes, and the queries the runtime needs. Three implementations pass one conformance suite
//! (`conformance`): `memory` (tests, benchmarks), `sled` (the embedded default) and `redb`
//! (the embedded store that reaches the commit rate sled cannot; see its module comment). A
//! PostgreSQL store comes later; the trait asks nothing a SQL table with indexes cannot answer,
//! and job acquisition is a separate call so it can become `FOR UPDATE SKIP LOCKED` with leases.
//!
//! The store knows nothing of the state machine: an instance's state is an opaque byte string
//! (`InstanceRecord::state`) next to the few fields that are queried.

use std::sync::atomic::AtomicU64;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::value::Vars;

mod codec;
#[cfg(test)]
mod conformance;
mod keys;
pub mod memory;
pub mod redb;
pub mod sled;

pub use self::redb::{RedbOptions, RedbStore};
pub use memory::MemoryStore;
pub use sled::{SledOptions, SledStore};

pub type InstanceId = Uuid;

/// The connector of jobs that external workers take over HTTP (`call: external.<type>`): the
/// runtime never runs them, and the stores keep them in an index of their own, by type, so
/// that any number of them waiting for a worker costs the runtime's look for due jobs nothing.
pub const EXTERNAL_CONNECTOR: &str = "external";

/// What a durable store's committer has done since the store was opened (sled and redb).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Non-empty batches committed.
    pub commits: u64,
    /// Group flushes: one per group of batches made durable together (for sled a `flush`
    /// plus a `sync_data`, for redb one durable transaction commit).
    pub flushes: u64,
    /// Time spent applying batches, in microseconds.
    pub apply_micros: u64,
    /// Time spent making groups durable (flush and sync, or commit), in microseconds.
    pub flush_micros: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    flushes: AtomicU64,
    apply_micros: AtomicU64,
    flush_micros: AtomicU64,
}

impl Counters {
    fn stats(&self) -> StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        StoreStats {
            commits: self.commits.load(Relaxed),
            flushes: self.flushes.load(Relaxed),
            apply_micros: self.apply_micros.load(Relaxed),
            flush_micros: self.flush_micros.load(Relaxed),
        }
    }
}

/// A store failure. Not a user's mistake: the server answers 5xx and the operator looks.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O: {0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the data folder {0} is in use by another process")]
    Locked(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A deployed version of a process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefinitionRecord {
    pub process: String,
    /// 1, 2, 3... per process.
    pub version: u32,
    /// The YAML as deployed.
    pub source: String,
    /// The file name it came from.
    pub file: String,
    pub deployed_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceStatus {
    Active,
    Completed,
    /// Ended by an error end event nobody caught, or by an unrecoverable problem.
    Failed,
    Terminated,
    Cancelled,
}

impl InstanceRecord {
    /// Whether `remove_finished(before)` removes this instance: finished, and ended strictly
    /// before `before`. A finished instance without `ended_at` is kept: its age is unknown.
    pub fn finished_before(&self, before: Timestamp) -> bool {
        self.status.is_finished() && self.ended_at.is_some_and(|ended| ended < before)
    }
}

impl InstanceStatus {
    pub fn is_finished(self) -> bool {
        !matches!(self, InstanceStatus::Active)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: InstanceId,
    pub process: String,
    pub version: u32,
    pub business_key: Option<String>,
    pub status: InstanceStatus,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    /// The state machine's state, encoded by the engine.
    pub state: Vec<u8>,
}

/// A pending timer. Identified by `(instance, timer)`; listed by `due`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimerRecord {
    pub instance: InstanceId,
    pub timer: u64,
    pub due: Timestamp,
    /// What the timer is for, for people (`reminder on approve`).
    pub label: String,
}

/// A job: one call of a connector for a service or send task. Identified by
/// `(instance, job)`. `key` is the idempotency key, the same on every attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub instance: InstanceId,
    pub job: u64,
    /// Attempt number, from 1.
    pub attempt: u32,
    pub connector: String,
    pub operation: String,
    pub key: String,
    pub input: Vars,
    /// Not to be run before this instant (backoff).
    pub due: Timestamp,
    /// Taken by a worker until this instant (`None`: free).
    pub locked_until: Option<Timestamp>,
    pub locked_by: Option<String>,
    pub last_error: Option<String>,
    /// The secret of the current lease of an external job: a worker must present it to
    /// extend, complete or fail the job. A new one is drawn on every fetch.
    pub lease_token: Option<String>,
}

impl JobRecord {
    /// Whether a worker may take this job at `now` as far as its lock goes: never locked, or
    /// the lock ran out (`locked_until <= now`). Whether it is due is a separate question.
    pub fn is_free_at(&self, now: Timestamp) -> bool {
        self.locked_until.is_none_or(|until| until <= now)
    }

    /// Whether external workers take this job (`call: external.<type>`); its type is
    /// `operation`. Such a job is listed by `due_external_jobs`, never by `due_jobs`.
    pub fn is_external(&self) -> bool {
        self.connector == EXTERNAL_CONNECTOR
    }
}

/// A user task waiting for a person. Identified by `(instance, task)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub instance: InstanceId,
    pub task: u64,
    pub process: String,
    pub step: String,
    pub title: String,
    pub assignee: Option<String>,
    pub candidates: Vec<String>,
    pub created_at: Timestamp,
    pub due: Option<Timestamp>,
}

/// An instance waiting for a message `name` with correlation `key`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub name: String,
    pub key: String,
    pub instance: InstanceId,
    pub subscription: u64,
    pub created_at: Timestamp,
}

/// A message that arrived before anyone waited for it, kept until `expires_at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Store-assigned sequence, for ordering and deletion.
    pub seq: u64,
    pub id: Option<String>,
    pub name: String,
    pub key: String,
    pub vars: Vars,
    pub received_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A job whose retries ran out, or another problem a person must look at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentRecord {
    pub instance: InstanceId,
    pub incident: u64,
    pub step: String,
    pub job: Option<u64>,
    pub error: String,
    pub created_at: Timestamp,
}

/// One line of an instance's audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub instance: InstanceId,
    /// Per-instance sequence from 1.
    pub seq: u64,
    pub at: Timestamp,
    /// Who did it: a user name, `system`, `timer`, a connector.
    pub actor: String,
    /// What happened (`started`, `step-entered`, `task-completed`, ...).
    pub what: String,
    pub step: Option<String>,
    pub detail: String,
}

/// A person who signs in to Ciclo. Identified by `name`; listed by name.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// The groups the user belongs to (task candidates name groups).
    pub groups: Vec<String>,
    /// argon2 PHC string, for the web sign-in (later).
    pub password_hash: Option<String>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for UserRecord {
    /// Leaves the password hash out: a hash in a log can still be cracked offline.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("display_name", &self.display_name)
            .field("email", &self.email)
            .field("groups", &self.groups)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// What an API token may do. Ordered from the most to the least powerful.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Analyst,
    Operator,
    User,
    /// An external worker: may only fetch, extend and answer external jobs.
    Worker,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Analyst,
        Role::Operator,
        Role::User,
        Role::Worker,
    ];

    /// The role's name as configuration, the API and the store write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Operator => "operator",
            Role::User => "user",
            Role::Worker => "worker",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is none of `Role::ALL`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: expected one of admin, analyst, operator, user, worker")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;

    /// Case-insensitive, so `Admin` in a configuration file is not a surprise.
    fn from_str(text: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| UnknownRole(text.to_string()))
    }
}

/// An API token. Identified by `hash`; listed by creation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Lowercase hex SHA-256 of the secret; the secret itself is never stored, so a copy of
    /// the store does not hand out working tokens.
    pub hash: String,
    pub role: Role,
    /// The user the token acts for, if any.
    pub user: Option<String>,
    /// What the token is for, for people (`ERP webhook`).
    pub label: Option<String>,
    pub created_at: Timestamp,
}

/// A signed-in web session. Identified by `hash`; listed by hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Lowercase hex SHA-256 of the session id in the cookie; the id itself is never stored.
    pub hash: String,
    pub user: String,
    /// The per-session secret every form of the pages carries (CSRF protection).
    pub csrf: String,
    pub created_at: Timestamp,
    /// The last request seen, for the idle timeout.
    pub last_seen: Timestamp,
}

/// A decision link sent by e-mail (a user task's `email:`). Identified by `hash`; the token
/// itself is never stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// Lowercase hex SHA-256 of the token in the link.
    pub hash: String,
    pub instance: InstanceId,
    pub task: u64,
    /// The decision the link makes (an option of the decision field).
    pub decision: String,
    /// The person the link was sent to: e-mail address and display name.
    pub email: String,
    pub name: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The hashes of the other links of the same task (one per other option), so using one
    /// link can retire all of them without a scan.
    pub siblings: Vec<String>,
    /// Set once the task was decided through this link, or through a sibling (then `by`
    /// and `decision` say what that one did).
    pub used: Option<LinkUse>,
}

/// Who used a link (or a sibling of it), when, and what was decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkUse {
    pub by: String,
    pub at: Timestamp,
    pub decision: String,
}

/// Where a round-robin rotation stands (`call: assign.round_robin`): one per rotation name (a
/// sales team), replaced on every pick, in the same write as the job answer that made the pick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RotationRecord {
    /// The rotation's name (the team).
    pub name: String,
    /// The member picked last; the next pick starts after them.
    pub last: String,
    /// Their position in the member list at that time, for when they have left the list.
    pub position: u64,
    /// How many picks this rotation has made.
    pub picks: u64,
    pub updated_at: Timestamp,
}

/// One change. A `Batch` of them is applied atomically.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    PutDefinition(DefinitionRecord),
    PutInstance(InstanceRecord),
    PutTimer(TimerRecord),
    DeleteTimer {
        instance: InstanceId,
        timer: u64,
    },
    PutJob(JobRecord),
    DeleteJob {
        instance: InstanceId,
        job: u64,
    },
    PutTask(TaskRecord),
    DeleteTask {
        instance: InstanceId,
        task: u64,
    },
    PutSubscription(SubscriptionRecord),
    DeleteSubscription {
        instance: InstanceId,
        subscription: u64,
    },
    /// Buffers a message; the store assigns `seq` (the value given is ignored).
    PutMessage(MessageRecord),
    DeleteMessage {
        seq: u64,
    },
    /// Remembers a message id until `until`, so a repeat is ignored.
    PutMessageId {
        id: String,
        until: Timestamp,
    },
    PutIncident(IncidentRecord),
    DeleteIncident {
        instance: InstanceId,
        incident: u64,
    },
    AppendHistory(HistoryRecord),
    /// Maps an idempotency key of a request (for example a start with a business key) to the
    /// instance it created.
    PutRequestKey {
        key: String,
        instance: InstanceId,
    },
    /// Creates or replaces the user `name`.
    PutUser(UserRecord),
    DeleteUser {
        name: String,
    },
    /// Creates or replaces the token `hash`.
    PutToken(TokenRecord),
    DeleteToken {
        hash: String,
    },
    /// Creates or replaces the web session `hash`.
    PutSession(SessionRecord),
    DeleteSession {
        hash: String,
    },
    /// Creates or replaces the e-mail link `hash`.
    PutLink(LinkRecord),
    /// Creates or replaces the rotation `name`.
    PutRotation(RotationRecord),
}

/// Changes applied all together or not at all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Which instances to list.
#[derive(Clone, Debug, Default)]
pub struct InstanceFilter {
    pub process: Option<String>,
    pub status: Option<InstanceStatus>,
    pub business_key: Option<String>,
    /// Only ids greater than this (cursor pagination, ids are time-ordered v7 UUIDs).
    pub after: Option<InstanceId>,
    /// At most this many; `0` means no limit (so `InstanceFilter::default()` lists all).
    pub limit: usize,
}

impl InstanceFilter {
    /// Whether `instance` passes the process, status and business-key filters (not the
    /// cursor or the limit, which the scan applies).
    pub fn matches(&self, instance: &InstanceRecord) -> bool {
        self.process.as_ref().is_none_or(|p| *p == instance.process)
            && self.status.is_none_or(|s| s == instance.status)
            && self
                .business_key
                .as_ref()
                .is_none_or(|k| instance.business_key.as_ref() == Some(k))
    }

    /// The limit as a count to `take`.
    pub fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            usize::MAX
        } else {
            self.limit
        }
    }
}

/// The store interface. Every method is blocking; the runtime calls it from blocking threads.
pub trait Store: Send + Sync + 'static {
    /// Applies `batch` atomically. Returns only once the batch is durable (for a durable
    /// store); concurrent callers share one flush (group commit).
    fn commit(&self, batch: Batch) -> Result<()>;

    fn definitions(&self) -> Result<Vec<DefinitionRecord>>;
    fn definition(&self, process: &str, version: u32) -> Result<Option<DefinitionRecord>>;

    fn instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>>;
    /// Instances in id order (oldest first), filtered.
    fn instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>>;
    /// Removes finished instances that ended before `before`, with everything they own
    /// (history, timers, tasks...). Returns how many were removed.
    fn remove_finished(&self, before: Timestamp) -> Result<usize>;

    /// Timers due at or before `until`, earliest first, at most `limit`.
    fn due_timers(&self, until: Timestamp, limit: usize) -> Result<Vec<TimerRecord>>;
    /// The earliest pending timer, if any (to know how long to sleep).
    fn next_timer(&self) -> Result<Option<TimerRecord>>;
    fn timers_of(&self, instance: InstanceId) -> Result<Vec<TimerRecord>>;

    fn job(&self, instance: InstanceId, job: u64) -> Result<Option<JobRecord>>;
    /// Jobs that are due at `now` and not locked (or whose lock expired), earliest first.
    /// External jobs (`JobRecord::is_external`) are never listed here.
    fn due_jobs(&self, now: Timestamp, limit: usize) -> Result<Vec<JobRecord>>;
    /// Every job of an instance, external ones included, by job number.
    fn jobs_of(&self, instance: InstanceId) -> Result<Vec<JobRecord>>;
    /// External jobs of type `job_type` (their `operation`) that are due at `now` and not
    /// locked (or whose lock ran out), earliest due first, at most `limit`. Only jobs of that
    /// type are looked at: the index is by type, then due time.
    fn due_external_jobs(
        &self,
        job_type: &str,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<JobRecord>>;
    /// Every external job, locked or not, by type and then due time, at most `limit`.
    fn external_jobs(&self, limit: usize) -> Result<Vec<JobRecord>>;

    fn task(&self, instance: InstanceId, task: u64) -> Result<Option<TaskRecord>>;
    /// All open tasks, in creation order, at most `limit`.
    fn tasks(&self, limit: usize) -> Result<Vec<TaskRecord>>;

    fn subscriptions(&self, name: &str, key: &str) -> Result<Vec<SubscriptionRecord>>;
    /// Buffered messages for `(name, key)` in arrival order (expired ones included: the
    /// caller checks `expires_at`).
    fn messages(&self, name: &str, key: &str) -> Result<Vec<MessageRecord>>;
    /// Whether a message id was seen and is still remembered at `now`, that is `now` is
    /// before the `until` it was put with.
    fn message_id_seen(&self, id: &str, now: Timestamp) -> Result<bool>;

    fn incidents(&self) -> Result<Vec<IncidentRecord>>;
    fn incidents_of(&self, instance: InstanceId) -> Result<Vec<IncidentRecord>>;

    fn history(&self, instance: InstanceId) -> Result<Vec<HistoryRecord>>;

    fn request_key(&self, key: &str) -> Result<Option<InstanceId>>;

    fn user(&self, name: &str) -> Result<Option<UserRecord>>;
    /// Every user, by name.
    fn users(&self) -> Result<Vec<UserRecord>>;

    /// The token whose secret hashes to `hash`.
    fn token(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Every token, oldest first (ties by hash).
    fn tokens(&self) -> Result<Vec<TokenRecord>>;

    /// The web session whose id hashes to `hash`.
    fn session(&self, hash: &str) -> Result<Option<SessionRecord>>;
    /// Every web session, by hash (to remove expired ones and a deleted user's).
    fn sessions(&self) -> Result<Vec<SessionRecord>>;

    /// The e-mail link whose token hashes to `hash`.
    fn link(&self, hash: &str) -> Result<Option<LinkRecord>>;

    /// Where the round-robin rotation `name` stands, if it has picked before.
    fn rotation(&self, name: &str) -> Result<Option<RotationRecord>>;
}

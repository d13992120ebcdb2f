//! The state of one instance, as the state machine keeps it between events, and the events and
//! commands that cross its boundary.
//!
//! Everything an instance owns (tokens, scopes, timers, subscriptions, jobs, tasks, incidents)
//! is identified by a number drawn from `InstanceState::next_id`, so that replaying the same
//! events gives the same ids.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::StepId;
use crate::store::{InstanceId, InstanceStatus};
use crate::value::{Value, Vars};

/// The state of one process instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceState {
    pub id: InstanceId,
    pub process: String,
    pub version: u32,
    pub business_key: Option<String>,
    pub status: InstanceStatus,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    /// Process variables (the root scope).
    pub vars: Vars,
    pub tokens: Vec<Token>,
    /// Scopes opened by embedded sub-processes and multi-instance runs.
    pub scopes: Vec<ScopeState>,
    pub timers: Vec<TimerState>,
    pub subscriptions: Vec<SubscriptionState>,
    /// The instance that called this one through a call activity, and its waiting token.
    pub parent: Option<ParentLink>,
    /// Why the instance failed, when it did.
    pub failure: Option<String>,
    pub next_id: u64,
    /// How many history lines the instance has written (the next one is numbered after it).
    pub history_len: u64,
}

impl InstanceState {
    pub(crate) fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
    pub fn token(&self, id: u64) -> Option<&Token> {
        self.tokens.iter().find(|t| t.id == id)
    }
    pub(crate) fn token_mut(&mut self, id: u64) -> Option<&mut Token> {
        self.tokens.iter_mut().find(|t| t.id == id)
    }
    /// How many user tasks the instance has open.
    pub fn tasks_open(&self) -> usize {
        self.tokens
            .iter()
            .filter(|t| matches!(t.wait, Wait::Task { .. }))
            .count()
    }
    pub fn scope(&self, id: u64) -> Option<&ScopeState> {
        self.scopes.iter().find(|s| s.id == id)
    }
    pub(crate) fn scope_mut(&mut self, id: u64) -> Option<&mut ScopeState> {
        self.scopes.iter_mut().find(|s| s.id == id)
    }
}

/// The caller of an instance started by a call activity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParentLink {
    pub instance: InstanceId,
    pub token: u64,
}

/// The root scope's id. Scopes with other ids live in `InstanceState::scopes`.
pub const ROOT_SCOPE: u64 = 0;

/// A position in the process: a token sits at one step, in one scope, waiting for something
/// or about to move.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub id: u64,
    pub step: StepId,
    pub scope: u64,
    /// True for a token that runs one item of a multi-instance step (it runs the step's own
    /// work, not the multi-instance loop again).
    pub item: bool,
    pub wait: Wait,
    /// Timers and subscriptions of the step's boundary events, cancelled when the step ends.
    pub boundaries: Vec<u64>,
}

/// What a token waits for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Wait {
    /// Nothing: the token is being moved in this very transition.
    Nothing,
    Task {
        task: u64,
    },
    Job {
        job: u64,
        attempt: u32,
        retries_left: u32,
    },
    /// An intermediate timer catch event.
    Timer {
        timer: u64,
    },
    /// A receive task or intermediate message catch.
    Message {
        subscription: u64,
    },
    /// An event-based gateway: one of these timers or subscriptions.
    Race {
        handles: Vec<u64>,
    },
    /// A join, for the other paths.
    Join,
    /// An embedded sub-process running in scope `scope`.
    Subprocess {
        scope: u64,
    },
    /// A multi-instance step running its items.
    Items(Box<ItemsState>),
    /// A call activity waiting for the child instance.
    Child {
        instance: Option<InstanceId>,
    },
    /// A problem a person must look at; a retry resumes as `resume` says.
    Incident {
        incident: u64,
        resume: Resume,
    },
}

/// What a retried incident does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Resume {
    /// Runs the step again (an expression failed on entry).
    Enter,
    /// Leaves the step again (its outgoing choice failed).
    Leave,
    /// Runs the job again, with the same idempotency key and a fresh set of retries.
    Job { job: u64, attempt: u32 },
}

/// Book-keeping of a multi-instance step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemsState {
    pub items: Vec<Value>,
    /// Items started so far (sequential runs start one at a time).
    pub started: usize,
    /// Items done so far.
    pub done: usize,
    /// One collected result per item, in item order.
    pub results: Vec<Value>,
    /// Scopes of the items still running.
    pub running: Vec<u64>,
}

/// A variable scope below the root: an embedded sub-process or one item of a multi-instance
/// step. Variables written while a scope is open go to the nearest scope that has them, else
/// to the root, so a sub-process shares the process's variables unless it shadows them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScopeState {
    pub id: u64,
    pub parent: u64,
    /// The token that waits for this scope to finish.
    pub owner: u64,
    /// For a multi-instance item: its index.
    pub item: Option<usize>,
    pub vars: Vars,
}

/// A pending timer of the instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimerState {
    pub id: u64,
    pub token: u64,
    pub purpose: Purpose,
    pub armed: Timestamp,
    pub due: Timestamp,
    pub fired: u32,
}

/// A message the instance waits for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionState {
    pub id: u64,
    pub token: u64,
    pub purpose: Purpose,
    pub name: String,
    pub key: String,
}

/// Why a timer or subscription exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    /// The token's own wait (intermediate catch, receive task).
    Catch,
    /// Boundary event number `n` of the token's step.
    Boundary(usize),
    /// Arm number `n` of an event-based gateway.
    Race(usize),
}

/// How a called child instance ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ChildOutcome {
    Completed,
    Error { code: String, message: String },
    Failed { reason: String },
}

/// Something that happened to an instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    TaskCompleted {
        task: u64,
        vars: Vars,
        actor: String,
    },
    TimerFired {
        timer: u64,
    },
    MessageReceived {
        subscription: u64,
        vars: Vars,
    },
    JobSucceeded {
        job: u64,
        attempt: u32,
        output: Vars,
    },
    /// A technical failure: retried while retries are left.
    JobFailed {
        job: u64,
        attempt: u32,
        error: String,
        /// Retries left as the answerer says (an external worker, as in Camunda); `None`:
        /// the step's retry policy decides. `Some(0)` raises an incident.
        #[serde(default)]
        retries_left: Option<u32>,
    },
    /// A business error from the connector: goes to the step's error boundary event.
    JobBusinessError {
        job: u64,
        attempt: u32,
        code: String,
        message: String,
        /// Variables set on the step's scope before the error is thrown (an external
        /// worker's); empty for connectors.
        #[serde(default)]
        vars: Vars,
    },
    /// The child instance of a call activity started.
    ChildStarted {
        token: u64,
        child: InstanceId,
    },
    ChildEnded {
        token: u64,
        outcome: ChildOutcome,
        vars: Vars,
    },
    RetryIncident {
        incident: u64,
        actor: String,
    },
    Cancel {
        actor: String,
    },
}

/// What the runtime must do after a transition. The runtime writes them with the new state in
/// one atomic batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    ScheduleTimer {
        timer: u64,
        due: Timestamp,
        label: String,
    },
    CancelTimer {
        timer: u64,
    },
    OpenTask {
        task: u64,
        step: String,
        title: String,
        assignee: Option<String>,
        candidates: Vec<String>,
        due: Option<Timestamp>,
    },
    CancelTask {
        task: u64,
    },
    EnqueueJob {
        job: u64,
        attempt: u32,
        connector: String,
        operation: String,
        /// The idempotency key: the same on every attempt of this job.
        key: String,
        input: Vars,
        due: Timestamp,
        step: String,
    },
    CancelJob {
        job: u64,
    },
    Subscribe {
        subscription: u64,
        name: String,
        key: String,
    },
    Unsubscribe {
        subscription: u64,
    },
    StartChild {
        token: u64,
        process: String,
        vars: Vars,
    },
    CancelChild {
        instance: InstanceId,
    },
    /// This instance was started by a call activity and has ended.
    NotifyParent {
        parent: ParentLink,
        outcome: ChildOutcome,
        vars: Vars,
    },
    RaiseIncident {
        incident: u64,
        step: String,
        job: Option<u64>,
        error: String,
    },
    ResolveIncident {
        incident: u64,
    },
    History {
        actor: String,
        what: String,
        step: Option<String>,
        detail: String,
    },
}

/// Whether an event changed the instance or was absorbed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Changed,
    /// Late or duplicate: the thing it answers is gone. Nothing changed.
    Ignored(&'static str),
}

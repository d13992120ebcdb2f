//! The validated, in-memory form of a process definition: what the YAML means, with every
//! node's position in the file so that later checks can point at it.
//!
//! `parse` builds it from YAML; `validate` checks the graph; `machine` runs it. Steps of a whole
//! file, embedded sub-processes included, live in one vector and refer to each other by index
//! (`StepId`), so the state machine never looks names up on its hot path.

use std::collections::HashMap;

use rust_decimal::Decimal;

use crate::expr::{Expr, Template, UnaryTest};
use crate::schedule::Schedule;

/// A position in a YAML file: 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub line: u32,
    pub col: u32,
}

/// Index of a step in `Definition::steps`.
pub type StepId = u32;

/// A process definition: one YAML file.
#[derive(Clone, Debug)]
pub struct Definition {
    /// The process id (`process: quote-approval`): what deploys and starts refer to.
    pub id: String,
    pub name: Option<String>,
    /// The file it was read from, for messages.
    pub file: String,
    /// Declared inputs (name -> type word), informative.
    pub inputs: Vec<(String, String)>,
    /// How instances start. A process has at least one start.
    pub starts: Vec<Start>,
    pub steps: Vec<Step>,
    /// Decision tables declared in this file (`tables:`).
    pub tables: Vec<DecisionTable>,
    /// The data files this version reads (`data.price_list`), as a map from the name in
    /// expressions to the file's value, copied in when the version is loaded so that it keeps
    /// the data it was deployed with; `Null` when it reads none.
    pub data: crate::value::Value,
    /// Step name -> index, for every step of the file (names are unique in a file).
    pub index: HashMap<String, StepId>,
    pub span: Span,
    /// The process's time zone (`zone:`, UTC when absent): `today()` is the date there, and
    /// timers without a zone of their own run in it.
    pub zone: jiff::tz::TimeZone,
}

impl Definition {
    pub fn step(&self, id: StepId) -> &Step {
        &self.steps[id as usize]
    }
    pub fn step_by_name(&self, name: &str) -> Option<&Step> {
        self.index.get(name).map(|&i| self.step(i))
    }
    pub fn table(&self, name: &str) -> Option<&DecisionTable> {
        self.tables.iter().find(|t| t.name == name)
    }
    /// The steps that sit directly in `container` (`None`: the process itself).
    pub fn children(&self, container: Option<StepId>) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(move |s| s.parent == container)
    }
}

/// A reference to a step by name, resolved to its index by `parse`.
#[derive(Clone, Debug)]
pub struct StepRef {
    pub name: String,
    pub id: StepId,
    pub span: Span,
}

/// A start event.
#[derive(Clone, Debug)]
pub struct Start {
    pub trigger: StartTrigger,
    pub target: StepRef,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum StartTrigger {
    /// Started by a person, the API or another process.
    None,
    /// Started when a message of this name arrives.
    Message { name: String },
    /// Started by a timer (a date, a cycle or cron).
    Timer { schedule: Schedule },
}

/// One step of a process.
#[derive(Clone, Debug)]
pub struct Step {
    pub name: String,
    pub id: StepId,
    /// The embedded sub-process this step belongs to (`None`: the process itself).
    pub parent: Option<StepId>,
    /// An optional human label for diagrams and task lists.
    pub label: Option<String>,
    pub kind: StepKind,
    /// Where the path goes when the step is done.
    pub next: Next,
    /// Boundary events attached to the step (`on:`).
    pub boundary: Vec<Boundary>,
    /// Multi-instance: run the step once per item of a list.
    pub multi: Option<MultiInstance>,
    pub span: Span,
}

/// Where a path goes after a step.
#[derive(Clone, Debug)]
pub enum Next {
    /// No `goto`: the path ends here (an implicit end event).
    End,
    Goto(StepRef),
    /// `then:` — an exclusive choice right after the step, first true branch wins.
    Choose(Choice),
}

/// An exclusive choice: the first branch whose condition is true, else `otherwise`.
#[derive(Clone, Debug)]
pub struct Choice {
    pub branches: Vec<Branch>,
    pub otherwise: Option<StepRef>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Branch {
    pub when: Expr,
    pub target: StepRef,
    pub span: Span,
}

/// An assignment `name: expression` (the name may be a dotted path `quote.total`).
#[derive(Clone, Debug)]
pub struct Assignment {
    pub target: String,
    pub value: Expr,
    pub span: Span,
}

/// What a step does.
#[derive(Clone, Debug)]
pub enum StepKind {
    /// `set:` — script task: assign variables.
    Script { assignments: Vec<Assignment> },
    /// `call:` a connector operation (`erp.create-order`) — service task, run as a job.
    Service {
        connector: String,
        operation: String,
        input: Vec<Assignment>,
        output: Vec<Assignment>,
        retry: RetryPolicy,
    },
    /// `send:` an e-mail template — send task, run as a job of the `email` connector.
    Send {
        template: String,
        to: Expr,
        input: Vec<Assignment>,
        retry: RetryPolicy,
    },
    /// `task:` — user task.
    User(UserTask),
    /// `rules:` a decision table — business-rule task; the result goes to `result`.
    Rules { table: String, result: String },
    /// `receive:` a message — receive task.
    Receive { message: MessageCatch },
    /// `wait:` — intermediate timer or message catch event.
    Wait { event: CatchEvent },
    /// `process:` — call activity: start another process and wait for it.
    CallProcess {
        process: String,
        input: Vec<Assignment>,
        output: Vec<Assignment>,
    },
    /// `decide:` — exclusive gateway.
    Decide(Choice),
    /// `parallel:` — parallel fork: every listed step starts.
    Parallel { branches: Vec<StepRef> },
    /// `branch:` — inclusive fork: every branch whose condition is true starts.
    Inclusive(Choice),
    /// `join: all` (parallel join, one token per incoming flow) or `join: any` (inclusive join:
    /// waits until no other path of its scope can still reach it).
    Join { inclusive: bool },
    /// `race:` — event-based gateway: the first event to happen wins.
    Race { events: Vec<RaceArm> },
    /// `subprocess:` — embedded sub-process; its steps have `parent` set to this step.
    Subprocess { start: StepRef },
    /// `end:` — end event.
    End(EndKind),
}

#[derive(Clone, Debug)]
pub enum EndKind {
    None,
    /// Throws a business error, caught by an `error` boundary event on an enclosing step.
    Error {
        code: String,
        message: Option<Template>,
    },
    /// Ends the whole instance at once.
    Terminate,
}

/// Retry policy of a job: attempts in all, and exponential backoff with jitter.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: jiff::SignedDuration,
    pub max_backoff: jiff::SignedDuration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: jiff::SignedDuration::from_secs(1),
            max_backoff: jiff::SignedDuration::from_secs(300),
        }
    }
}

#[derive(Clone, Debug)]
pub struct UserTask {
    pub title: Template,
    pub assignee: Option<Template>,
    /// Groups whose members may claim the task.
    pub candidates: Vec<String>,
    pub form: Vec<FormField>,
    /// When the task is due, from its creation (a duration schedule).
    pub due: Option<Schedule>,
    /// A template shown to the person deciding (for the inbox).
    pub summary: Option<Template>,
    /// What the task's page shows of the instance (`show:`), in order.
    pub show: Vec<ShowItem>,
    /// `email:` — decision links sent by e-mail when the task opens.
    pub email: Option<Box<EmailLinks>>,
}

/// A user task's `email:`: when the task opens, a generated step (`<task>.email`, a
/// `links.send` job started by a non-interrupting `PT0S` boundary timer) e-mails the person one
/// link per option of the decision field.
#[derive(Clone, Debug)]
pub struct EmailLinks {
    /// The e-mail template (`<processes>/templates/<name>`).
    pub template: String,
    /// The choice field the links decide; one link per option.
    pub field: String,
    /// The generated step that sends the e-mail.
    pub step: StepId,
}

/// The name of the step generated for a user task's `email:`. A `.` cannot appear in a step
/// name written in a file, so it never clashes with one.
pub fn email_step_name(task: &str) -> String {
    format!("{task}.email")
}

/// One entry of a user task's `show:` list: a labelled value, or a table of a list of maps.
#[derive(Clone, Debug)]
pub struct ShowItem {
    pub label: String,
    pub content: ShowContent,
    pub format: Option<ShowFormat>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ShowContent {
    /// One value: an expression over the instance's variables.
    Value(Expr),
    /// A list of maps as a table: the list, then per column its heading and an expression
    /// over the row's keys.
    Table {
        rows: Expr,
        columns: Vec<(String, Expr)>,
    },
}

/// How a shown value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShowFormat {
    /// Two decimals, thousands grouped: `12,500.00`.
    Money,
    /// A fraction as a percentage: `0.125` -> `12.5 %`.
    Percent,
    /// A date or an instant's date: `2026-03-01`.
    Date,
}

#[derive(Clone, Debug)]
pub struct FormField {
    pub name: String,
    pub kind: FieldKind,
    pub required: bool,
    pub label: Option<String>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FieldKind {
    Text,
    Number {
        min: Option<Decimal>,
        max: Option<Decimal>,
    },
    Boolean,
    Date,
    Choice(Vec<String>),
}

/// A message to wait for: its name and the correlation key (evaluated when the wait starts).
#[derive(Clone, Debug)]
pub struct MessageCatch {
    pub name: String,
    pub key: Option<Expr>,
}

/// The timer of a `wait:`, a race entry, an `on: - timer:` or an `escalate: after:`.
#[derive(Clone, Debug)]
pub enum TimerSpec {
    /// Written out in the file: a duration, a date-time, a cycle or cron.
    Fixed(Schedule),
    /// A template (`"{{ quote.valid_until }}"`) evaluated when the timer is armed. Its value:
    /// a date fires at the start of that day in `zone`; an instant, then; a duration, that
    /// long after arming; a text, read as one of these. Anything else is an incident.
    Computed {
        template: Template,
        zone: jiff::tz::TimeZone,
        zone_name: String,
    },
}

impl TimerSpec {
    /// The timer as written (a computed timer's template text).
    pub fn source(&self) -> &str {
        match self {
            TimerSpec::Fixed(schedule) => schedule.source(),
            TimerSpec::Computed { template, .. } => template.source(),
        }
    }

    /// The schedule of a timer written out in the file.
    pub fn fixed(&self) -> Option<&Schedule> {
        match self {
            TimerSpec::Fixed(schedule) => Some(schedule),
            TimerSpec::Computed { .. } => None,
        }
    }
}

#[derive(Clone, Debug)]
pub enum CatchEvent {
    Timer(TimerSpec),
    Message(MessageCatch),
}

#[derive(Clone, Debug)]
pub struct RaceArm {
    pub event: CatchEvent,
    pub target: StepRef,
    pub span: Span,
}

/// A boundary event on a task or sub-process.
#[derive(Clone, Debug)]
pub struct Boundary {
    pub event: BoundaryEvent,
    /// Interrupting events cancel the step; non-interrupting ones start a new path beside it.
    pub interrupting: bool,
    pub target: StepRef,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum BoundaryEvent {
    Timer(TimerSpec),
    Message(MessageCatch),
    /// Catches a business error with this code, or any when `None`.
    Error {
        code: Option<String>,
    },
}

/// Multi-instance: run a step once per item of a list.
#[derive(Clone, Debug)]
pub struct MultiInstance {
    /// The list to iterate over.
    pub items: Expr,
    /// The variable each run sees its item as (and `<as>_index`, from 0).
    pub item_var: String,
    pub parallel: bool,
    /// Collected results: after all runs, `collect.target` is the list of `collect.value`
    /// evaluated in each run's scope.
    pub collect: Option<Assignment>,
}

/// A decision table (business-rule task).
#[derive(Clone, Debug)]
pub struct DecisionTable {
    pub name: String,
    pub hit: HitPolicy,
    /// Input expressions, one per column.
    pub inputs: Vec<Expr>,
    /// Output names, one per output column.
    pub outputs: Vec<String>,
    pub rules: Vec<Rule>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HitPolicy {
    /// The first matching rule.
    First,
    /// Exactly one rule may match; several matching is an error.
    Unique,
    /// All matching rules, as a list of outputs.
    Collect,
    /// All matching rules, their (single) outputs summed.
    CollectSum,
}

#[derive(Clone, Debug)]
pub struct Rule {
    /// One test per input: a unary test such as `> 10`, `[1..5]`, `"a", "b"`, or `-` (any).
    pub when: Vec<UnaryTest>,
    /// One expression per output.
    pub then: Vec<Expr>,
    pub span: Span,
}

//! The pure state machine: `(definition, state, event, now) -> (state, commands)`.
//!
//! No I/O, no clock, no tokio: the caller passes `now`, and the runtime carries out the
//! returned commands (timers, tasks, jobs, subscriptions, history) in the same atomic write as
//! the new state. Replaying the same events on the same state gives the same result, ids
//! included, which is what lets an instance carry on after a crash from its last committed
//! state.
//!
//! A transition moves tokens until each one waits for something from outside (a person, a
//! timer, a message, a connector) or ends. Element kinds have their behaviour in one place
//! each: `enter` (what a step does when a token arrives), `leave` (where it goes after), and
//! the event handlers (what an answer from outside does to the waiting token).

mod state;

use std::collections::VecDeque;

use jiff::Timestamp;

use crate::expr::{Context, Scope};
use crate::model::{
    Assignment, Boundary, BoundaryEvent, CatchEvent, Choice, Definition, EndKind, FieldKind,
    MessageCatch, Next, StartTrigger, Step, StepId, StepKind, TimerSpec,
};
use crate::schedule::Schedule;
use crate::store::{InstanceId, InstanceStatus};
use crate::value::{Value, Vars};

pub use state::*;

/// How many steps one event may run before the machine stops the path with an incident.
pub const MAX_STEPS_PER_EVENT: usize = 10_000;

/// The most items a multi-instance step runs (each item is a path with its own scope).
pub const MAX_ITEMS: usize = 1_000;

/// A transition the machine refuses. Nothing changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MachineError {
    #[error("process `{process}` has no start number {index}")]
    NoSuchStart { process: String, index: usize },
    #[error("the form values are not valid: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    InvalidForm(Vec<FieldError>),
}

/// A form value that does not fit its field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// How an instance starts.
#[derive(Clone, Debug)]
pub struct StartRequest {
    pub id: InstanceId,
    pub version: u32,
    /// Which of the definition's starts (`Definition::starts`).
    pub start: usize,
    pub vars: Vars,
    pub business_key: Option<String>,
    pub actor: String,
    pub parent: Option<ParentLink>,
}

/// Creates an instance and runs it until every path waits or ends.
pub fn start(
    def: &Definition,
    request: StartRequest,
    now: Timestamp,
    out: &mut Vec<Command>,
) -> Result<InstanceState, MachineError> {
    let Some(start) = def.starts.get(request.start) else {
        return Err(MachineError::NoSuchStart {
            process: def.id.clone(),
            index: request.start,
        });
    };
    let mut state = InstanceState {
        id: request.id,
        process: def.id.clone(),
        version: request.version,
        business_key: request.business_key,
        status: InstanceStatus::Active,
        started_at: now,
        ended_at: None,
        vars: request.vars,
        tokens: Vec::new(),
        scopes: Vec::new(),
        timers: Vec::new(),
        subscriptions: Vec::new(),
        parent: request.parent,
        failure: None,
        next_id: 0,
        history_len: 0,
    };
    let trigger = match &start.trigger {
        StartTrigger::None => String::new(),
        StartTrigger::Message { name } => format!("message {name}"),
        StartTrigger::Timer { schedule } => format!("timer {}", schedule.source()),
    };
    let mut m = Machine::new(def, &mut state, now, out, request.actor);
    m.history("started", None, trigger);
    let t = m.new_token(start.target.id, ROOT_SCOPE, false);
    m.queue.push_back(t);
    m.run();
    Ok(state)
}

/// Applies one event to an instance.
pub fn apply(
    def: &Definition,
    state: &mut InstanceState,
    event: Event,
    now: Timestamp,
    out: &mut Vec<Command>,
) -> Result<Applied, MachineError> {
    if state.status.is_finished() {
        return Ok(Applied::Ignored("the instance has ended"));
    }
    let actor = match &event {
        Event::TaskCompleted { actor, .. }
        | Event::RetryIncident { actor, .. }
        | Event::Cancel { actor } => actor.clone(),
        Event::TimerFired { .. } => "timer".into(),
        Event::MessageReceived { .. } => "message".into(),
        Event::JobSucceeded { .. } | Event::JobFailed { .. } | Event::JobBusinessError { .. } => {
            "connector".into()
        }
        Event::ChildStarted { .. } | Event::ChildEnded { .. } => "system".into(),
    };
    let mut m = Machine::new(def, state, now, out, actor);
    let applied = m.handle(event)?;
    m.run();
    Ok(applied)
}

/// Checks form values against a user task's form; returns them with dates parsed.
pub fn check_form(step: &Step, vars: Vars) -> Result<Vars, MachineError> {
    let StepKind::User(task) = &step.kind else {
        return Ok(vars);
    };
    if task.form.is_empty() {
        return Ok(vars);
    }
    let mut errors = Vec::new();
    let mut checked = Vars::new();
    for (name, _) in vars.iter() {
        if !task.form.iter().any(|f| &f.name == name) {
            errors.push(FieldError {
                field: name.clone(),
                message: format!(
                    "is not a field of this form (fields: {})",
                    task.form
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    for field in &task.form {
        let value = vars.get(&field.name).cloned().unwrap_or(Value::Null);
        let empty = matches!(&value, Value::Null)
            || matches!(&value, Value::String(s) if s.trim().is_empty());
        if empty {
            if field.required {
                errors.push(FieldError {
                    field: field.name.clone(),
                    message: "is required".into(),
                });
            }
            continue;
        }
        match check_field(&field.kind, value) {
            Ok(v) => {
                checked.insert(field.name.clone(), v);
            }
            Err(message) => errors.push(FieldError {
                field: field.name.clone(),
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(MachineError::InvalidForm(errors))
    }
}

fn check_field(kind: &FieldKind, value: Value) -> Result<Value, String> {
    match (kind, value) {
        (FieldKind::Text, Value::String(s)) => Ok(Value::String(s)),
        (FieldKind::Text, other) => Err(format!("must be text, not a {}", other.type_name())),
        (FieldKind::Number { min, max }, value) => {
            let n = match value {
                Value::Number(n) => n,
                Value::String(s) => s
                    .trim()
                    .parse()
                    .map_err(|_| format!("must be a number, not `{s}`"))?,
                other => return Err(format!("must be a number, not a {}", other.type_name())),
            };
            if let Some(min) = min
                && n < *min
            {
                return Err(format!("must be at least {min}"));
            }
            if let Some(max) = max
                && n > *max
            {
                return Err(format!("must be at most {max}"));
            }
            Ok(Value::Number(n))
        }
        (FieldKind::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
        (FieldKind::Boolean, Value::String(s)) => match s.as_str() {
            "true" | "on" | "yes" => Ok(Value::Bool(true)),
            "false" | "off" | "no" => Ok(Value::Bool(false)),
            _ => Err(format!("must be true or false, not `{s}`")),
        },
        (FieldKind::Boolean, other) => Err(format!(
            "must be true or false, not a {}",
            other.type_name()
        )),
        (FieldKind::Date, Value::Date(d)) => Ok(Value::Date(d)),
        (FieldKind::Date, Value::String(s)) => s
            .trim()
            .parse::<jiff::civil::Date>()
            .map(Value::Date)
            .map_err(|_| format!("must be a date like 2025-03-31, not `{s}`")),
        (FieldKind::Date, other) => Err(format!("must be a date, not a {}", other.type_name())),
        (FieldKind::Choice(options), Value::String(s)) => {
            if options.iter().any(|o| o == &s) {
                Ok(Value::String(s))
            } else {
                Err(format!("must be one of {}, not `{s}`", options.join(", ")))
            }
        }
        (FieldKind::Choice(options), value @ (Value::Number(_) | Value::Bool(_)))
            if options.contains(&key_text(&value)) =>
        {
            Ok(value)
        }
        (FieldKind::Choice(options), other) => Err(format!(
            "must be one of {}, not a {}",
            options.join(", "),
            other.type_name()
        )),
    }
}

/// The variables a token sees: its scope chain, then the process variables, plus an optional
/// extra name (the `result` of a job, the variables of an ended child).
struct View<'a> {
    state: &'a InstanceState,
    scope: u64,
    extra: Option<(&'a str, &'a Value)>,
    /// The definition's data files (`data.price_list`); `Null` when it reads none, and then
    /// `data` is an ordinary variable name.
    data: &'a Value,
}

impl Scope for View<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        if let Some((extra, value)) = self.extra
            && extra == name
        {
            return Some(value);
        }
        if name == crate::expr::DATA_VARIABLE && !matches!(self.data, Value::Null) {
            return Some(self.data);
        }
        let mut scope = self.scope;
        while scope != ROOT_SCOPE {
            let Some(s) = self.state.scope(scope) else {
                break;
            };
            if let Some(v) = s.vars.get(name) {
                return Some(v);
            }
            scope = s.parent;
        }
        self.state.vars.get(name)
    }
}

/// Renders a value as a correlation key or a title part: text as is, numbers in plain form.
pub fn key_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.normalize().to_string(),
        Value::Null => String::new(),
        other => other.to_json().to_string(),
    }
}

struct Machine<'a> {
    def: &'a Definition,
    st: &'a mut InstanceState,
    now: Timestamp,
    out: &'a mut Vec<Command>,
    actor: String,
    queue: VecDeque<u64>,
}

/// A problem met while moving a token: it becomes an incident on that token.
type Trouble = String;

impl<'a> Machine<'a> {
    fn new(
        def: &'a Definition,
        st: &'a mut InstanceState,
        now: Timestamp,
        out: &'a mut Vec<Command>,
        actor: String,
    ) -> Self {
        Machine {
            def,
            st,
            now,
            out,
            actor,
            queue: VecDeque::new(),
        }
    }

    fn ctx(&self) -> Context {
        Context {
            now: self.now,
            zone: self.def.zone.clone(),
        }
    }

    fn history(&mut self, what: &str, step: Option<StepId>, detail: String) {
        self.out.push(Command::History {
            actor: self.actor.clone(),
            what: what.to_string(),
            step: step.map(|s| self.def.step(s).name.clone()),
            detail,
        });
    }

    fn new_token(&mut self, step: StepId, scope: u64, item: bool) -> u64 {
        let id = self.st.fresh_id();
        self.st.tokens.push(Token {
            id,
            step,
            scope,
            item,
            wait: Wait::Nothing,
            boundaries: Vec::new(),
        });
        id
    }

    fn step_of(&self, t: u64) -> Option<&'a Step> {
        let def = self.def;
        self.st.token(t).map(|tok| def.step(tok.step))
    }

    fn scope_of(&self, t: u64) -> u64 {
        self.st.token(t).map(|tok| tok.scope).unwrap_or(ROOT_SCOPE)
    }

    fn set_wait(&mut self, t: u64, wait: Wait) {
        if let Some(tok) = self.st.token_mut(t) {
            tok.wait = wait;
        }
    }

    // ----- evaluation -------------------------------------------------------------------

    fn eval(
        &self,
        t: u64,
        expr: &crate::expr::Expr,
        extra: Option<(&str, &Value)>,
    ) -> Result<Value, Trouble> {
        let view = View {
            state: self.st,
            scope: self.scope_of(t),
            extra,
            data: &self.def.data,
        };
        expr.eval(&view, &self.ctx())
            .map_err(|e| format!("expression `{}`: {}", expr.source(), e))
    }

    fn eval_bool(&self, t: u64, expr: &crate::expr::Expr) -> Result<bool, Trouble> {
        match self.eval(t, expr, None)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "condition `{}` gave a {}, expected true or false",
                expr.source(),
                other.type_name()
            )),
        }
    }

    fn render(&self, t: u64, template: &crate::expr::Template) -> Result<String, Trouble> {
        let view = View {
            state: self.st,
            scope: self.scope_of(t),
            extra: None,
            data: &self.def.data,
        };
        template
            .render(&view, &self.ctx())
            .map_err(|e| format!("template `{}`: {}", template.source(), e))
    }

    fn mapping(
        &self,
        t: u64,
        assignments: &[Assignment],
        extra: Option<(&str, &Value)>,
    ) -> Result<Vec<(String, Value)>, Trouble> {
        assignments
            .iter()
            .map(|a| Ok((a.target.clone(), self.eval(t, &a.value, extra)?)))
            .collect()
    }

    /// Completes the message of a call activity's failed `output:` mapping. The mapping is
    /// evaluated over this process's variables, the called process's being under `child`
    /// (as a service task's answer is under `result`); a bare name of the child's
    /// (`status: status`) is the usual mistake, so the message says how to write it.
    fn child_output_hint(
        &self,
        t: u64,
        outputs: &[Assignment],
        child: &Value,
        trouble: Trouble,
    ) -> Trouble {
        let Value::Map(child_vars) = child else {
            return trouble;
        };
        let view = View {
            state: self.st,
            scope: self.scope_of(t),
            extra: Some(("child", child)),
            data: &self.def.data,
        };
        // The first assignment that fails is the one the message is about.
        let Some(failing) = outputs
            .iter()
            .find(|a| a.value.eval(&view, &self.ctx()).is_err())
        else {
            return trouble;
        };
        let unknown: Vec<String> = failing
            .value
            .variables()
            .into_iter()
            .filter(|name| view.get(name).is_none())
            .collect();
        if let Some(name) = unknown.iter().find(|n| child_vars.contains_key(*n)) {
            return format!(
                "{trouble}: `{name}` is a variable of the called process, not of this one; \
                 an output reads the called process's variables under `child` \
                 (write `{target}: child.{name}`)",
                target = failing.target,
            );
        }
        if let Some(name) = unknown.first() {
            let mut names: Vec<&str> = child_vars.keys().map(String::as_str).take(20).collect();
            if child_vars.len() > names.len() {
                names.push("...");
            }
            return format!(
                "{trouble}: neither this process nor the called one has `{name}`; an output \
                 reads the called process's variables under `child` (it has: {})",
                names.join(", ")
            );
        }
        trouble
    }

    /// Writes a variable (a dotted path writes inside a map) to the nearest scope of `t` that
    /// has it, else to the process variables.
    fn set_var(&mut self, t: u64, path: &str, value: Value) {
        let mut parts = path.split('.');
        let root = parts.next().unwrap_or(path).to_string();
        let rest: Vec<&str> = parts.collect();
        let mut scope = self.scope_of(t);
        let mut target: Option<u64> = None;
        while scope != ROOT_SCOPE {
            let Some(s) = self.st.scope(scope) else { break };
            if s.vars.contains_key(&root) {
                target = Some(scope);
                break;
            }
            scope = s.parent;
        }
        let vars = match target {
            Some(id) => match self.st.scope_mut(id) {
                Some(s) => &mut s.vars,
                None => &mut self.st.vars,
            },
            None => &mut self.st.vars,
        };
        let mut slot = vars.entry(root).or_insert(Value::Null);
        for key in rest {
            if !matches!(slot, Value::Map(_)) {
                *slot = Value::Map(Default::default());
            }
            let Value::Map(map) = slot else {
                unreachable!("made a map just above")
            };
            slot = map.entry(key.to_string()).or_insert(Value::Null);
        }
        *slot = value;
    }

    fn schedule_first(&self, schedule: &Schedule) -> Option<Timestamp> {
        schedule.first_due(self.now)
    }

    // ----- the run loop -----------------------------------------------------------------

    fn run(&mut self) {
        let mut steps = 0usize;
        loop {
            while let Some(t) = self.queue.pop_front() {
                if self.st.status.is_finished() {
                    return;
                }
                steps += 1;
                if steps > MAX_STEPS_PER_EVENT {
                    // A loop without a wait state would otherwise run for ever inside one
                    // transaction, holding the instance. Stop it where it is.
                    self.incident(
                        t,
                        format!(
                            "more than {MAX_STEPS_PER_EVENT} steps ran without waiting for anything: \
                             a loop without a wait state? Fix the process and retry"
                        ),
                        Resume::Enter,
                    );
                    // Other tokens moved in this transaction stay where they are, to run on
                    // when the incident is retried.
                    for other in std::mem::take(&mut self.queue) {
                        if other != t && self.st.token(other).is_some() {
                            self.incident(
                                other,
                                "stopped with the runaway loop".into(),
                                Resume::Enter,
                            );
                        }
                    }
                    return;
                }
                if self.st.token(t).is_some()
                    && let Err(trouble) = self.enter(t)
                {
                    self.incident(t, trouble, Resume::Enter);
                }
            }
            if self.st.status.is_finished() || !self.fire_inclusive_joins() {
                return;
            }
        }
    }

    fn incident(&mut self, t: u64, error: String, resume: Resume) {
        let Some(step) = self.step_of(t) else { return };
        let incident = self.st.fresh_id();
        let job = match &resume {
            Resume::Job { job, .. } => Some(*job),
            _ => None,
        };
        self.out.push(Command::RaiseIncident {
            incident,
            step: step.name.clone(),
            job,
            error: error.clone(),
        });
        self.history("incident", Some(step.id), error);
        self.set_wait(t, Wait::Incident { incident, resume });
    }

    /// A token arrives at its step: do what the step does.
    fn enter(&mut self, t: u64) -> Result<(), Trouble> {
        let Some(tok) = self.st.token(t) else {
            return Ok(());
        };
        let item = tok.item;
        let step = self.def.step(tok.step);
        self.check_events(t, step, item)?;
        if step.multi.is_some() && !item {
            return self.start_items(t, step);
        }
        match &step.kind {
            StepKind::Script { assignments } => {
                let values = self.mapping(t, assignments, None)?;
                for (name, value) in values {
                    self.set_var(t, &name, value);
                }
                self.history("step", Some(step.id), String::new());
                self.leave(t);
            }
            StepKind::Rules { table, result } => {
                let Some(table) = self.def.table(table) else {
                    return Err(format!("decision table `{table}` is not deployed"));
                };
                let view = View {
                    state: self.st,
                    scope: self.scope_of(t),
                    extra: None,
                    data: &self.def.data,
                };
                let value = crate::decision::evaluate(table, &view, &self.ctx())
                    .map_err(|e| format!("decision table `{}`: {e}", table.name))?;
                self.set_var(t, result, value);
                self.history(
                    "step",
                    Some(step.id),
                    format!("decision table {}", table.name),
                );
                self.leave(t);
            }
            StepKind::Service {
                connector,
                operation,
                input,
                retry,
                ..
            } => {
                let input: Vars = self.mapping(t, input, None)?.into_iter().collect();
                self.enqueue_job(
                    t,
                    step,
                    connector,
                    operation,
                    input,
                    1,
                    retry.max_attempts.saturating_sub(1),
                );
                self.arm_boundaries(t, step)?;
            }
            StepKind::Send {
                template,
                to,
                input,
                retry,
            } => {
                let mut vars: Vars = self.mapping(t, input, None)?.into_iter().collect();
                vars.insert("to".into(), self.eval(t, to, None)?);
                vars.insert("template".into(), Value::String(template.clone()));
                self.enqueue_job(
                    t,
                    step,
                    "email",
                    "send",
                    vars,
                    1,
                    retry.max_attempts.saturating_sub(1),
                );
                self.arm_boundaries(t, step)?;
            }
            StepKind::User(task) => {
                let title = self.render(t, &task.title)?;
                let assignee = match &task.assignee {
                    Some(a) => Some(self.render(t, a)?).filter(|s| !s.is_empty()),
                    None => None,
                };
                let due = task.due.as_ref().and_then(|d| self.schedule_first(d));
                let id = self.st.fresh_id();
                self.out.push(Command::OpenTask {
                    task: id,
                    step: step.name.clone(),
                    title,
                    assignee,
                    candidates: task.candidates.clone(),
                    due,
                });
                self.set_wait(t, Wait::Task { task: id });
                self.history("waiting", Some(step.id), "user task".into());
                self.arm_boundaries(t, step)?;
            }
            StepKind::Receive { message } => {
                let sub = self.subscribe(t, message, Purpose::Catch)?;
                self.set_wait(t, Wait::Message { subscription: sub });
                self.history(
                    "waiting",
                    Some(step.id),
                    format!("message {}", message.name),
                );
                self.arm_boundaries(t, step)?;
            }
            StepKind::Wait { event } => {
                match event {
                    CatchEvent::Timer(schedule) => {
                        let timer = self.arm_timer(t, schedule, Purpose::Catch, &step.name)?;
                        self.set_wait(t, Wait::Timer { timer });
                    }
                    CatchEvent::Message(message) => {
                        let sub = self.subscribe(t, message, Purpose::Catch)?;
                        self.set_wait(t, Wait::Message { subscription: sub });
                    }
                }
                self.history("waiting", Some(step.id), String::new());
                self.arm_boundaries(t, step)?;
            }
            StepKind::CallProcess { process, input, .. } => {
                let vars: Vars = self.mapping(t, input, None)?.into_iter().collect();
                self.out.push(Command::StartChild {
                    token: t,
                    process: process.clone(),
                    vars,
                });
                self.set_wait(t, Wait::Child { instance: None });
                self.history("waiting", Some(step.id), format!("process {process}"));
                self.arm_boundaries(t, step)?;
            }
            StepKind::Decide(choice) => {
                let target = self.choose(t, choice)?;
                let to = format!("to {}", self.def.step(target).name);
                self.history("step", Some(step.id), to);
                self.move_to(t, target);
            }
            StepKind::Parallel { branches } => {
                let to = format!("{} paths", branches.len());
                self.history("step", Some(step.id), to);
                let scope = self.scope_of(t);
                for (i, branch) in branches.iter().enumerate() {
                    if i == 0 {
                        self.move_to(t, branch.id);
                    } else {
                        let nt = self.new_token(branch.id, scope, false);
                        self.queue.push_back(nt);
                    }
                }
            }
            StepKind::Inclusive(choice) => {
                let mut targets = Vec::new();
                for branch in &choice.branches {
                    if self.eval_bool(t, &branch.when)? {
                        targets.push(branch.target.id);
                    }
                }
                if targets.is_empty() {
                    match &choice.otherwise {
                        Some(o) => targets.push(o.id),
                        None => {
                            return Err(format!(
                                "no condition of `{}` is true and it has no `otherwise`",
                                step.name
                            ));
                        }
                    }
                }
                let names: Vec<&str> = targets
                    .iter()
                    .map(|&target| self.def.step(target).name.as_str())
                    .collect();
                let to = format!("to {}", names.join(", "));
                self.history("step", Some(step.id), to);
                let scope = self.scope_of(t);
                for (i, target) in targets.into_iter().enumerate() {
                    if i == 0 {
                        self.move_to(t, target);
                    } else {
                        let nt = self.new_token(target, scope, false);
                        self.queue.push_back(nt);
                    }
                }
            }
            StepKind::Join { inclusive } => {
                self.set_wait(t, Wait::Join);
                if !inclusive {
                    let scope = self.scope_of(t);
                    let waiting: Vec<u64> = self
                        .st
                        .tokens
                        .iter()
                        .filter(|o| o.step == step.id && o.scope == scope && o.wait == Wait::Join)
                        .map(|o| o.id)
                        .collect();
                    if waiting.len() >= incoming_flows(self.def, step.id) {
                        self.merge_at_join(t, &waiting);
                    }
                }
            }
            StepKind::Race { events } => {
                let mut handles = Vec::new();
                for (i, arm) in events.iter().enumerate() {
                    let h = match &arm.event {
                        CatchEvent::Timer(s) => {
                            self.arm_timer(t, s, Purpose::Race(i), &step.name)?
                        }
                        CatchEvent::Message(m) => self.subscribe(t, m, Purpose::Race(i))?,
                    };
                    handles.push(h);
                }
                self.set_wait(t, Wait::Race { handles });
                self.history("waiting", Some(step.id), "first event".into());
            }
            StepKind::Subprocess { start } => {
                let scope = self.open_scope(t, None, Vars::new());
                let inner = self.new_token(start.id, scope, false);
                self.set_wait(t, Wait::Subprocess { scope });
                self.arm_boundaries(t, step)?;
                self.queue.push_back(inner);
            }
            StepKind::End(kind) => {
                self.history("end", Some(step.id), String::new());
                match kind {
                    EndKind::None => self.end_token(t),
                    EndKind::Terminate => {
                        let scope = self.scope_of(t);
                        self.kill_tokens_of(scope);
                        self.scope_done(scope, InstanceStatus::Terminated);
                    }
                    EndKind::Error { code, message } => {
                        let message = match message {
                            Some(m) => self.render(t, m).unwrap_or_else(|e| e),
                            None => String::new(),
                        };
                        self.throw(t, code.clone(), message);
                    }
                }
            }
        }
        Ok(())
    }

    // The job's whole description is needed at once; a struct for it would only be unpacked
    // again here.
    #[allow(clippy::too_many_arguments)]
    fn enqueue_job(
        &mut self,
        t: u64,
        step: &Step,
        connector: &str,
        operation: &str,
        input: Vars,
        attempt: u32,
        retries_left: u32,
    ) {
        let job = match self.st.token(t).map(|tok| &tok.wait) {
            Some(Wait::Job { job, .. }) => *job,
            Some(Wait::Incident {
                resume: Resume::Job { job, .. },
                ..
            }) => *job,
            _ => self.st.fresh_id(),
        };
        // Backoff grows within one round of retries; a retried incident starts a new round,
        // whose first attempt runs at once (a person asked for it).
        let max_attempts = match &step.kind {
            StepKind::Service { retry, .. } | StepKind::Send { retry, .. } => retry.max_attempts,
            _ => 1,
        };
        let in_round = max_attempts.saturating_sub(retries_left).max(1);
        let due = if attempt == 1 || in_round == 1 {
            self.now
        } else {
            // A backoff past the end of time (a policy of thousands of years) waits until then.
            self.now
                .checked_add(self.backoff(step, job, attempt, in_round))
                .unwrap_or(Timestamp::MAX)
        };
        self.out.push(Command::EnqueueJob {
            job,
            attempt,
            connector: connector.to_string(),
            operation: operation.to_string(),
            key: format!("{}-{}", self.st.id, job),
            input,
            due,
            step: step.name.clone(),
        });
        self.set_wait(
            t,
            Wait::Job {
                job,
                attempt,
                retries_left,
            },
        );
        if attempt == 1 {
            self.history("waiting", Some(step.id), format!("{connector}.{operation}"));
        }
    }

    /// Exponential backoff with jitter. The jitter is drawn from the instance, job and attempt
    /// so that the machine stays a pure function (the same inputs give the same due time).
    fn backoff(&self, step: &Step, job: u64, attempt: u32, in_round: u32) -> jiff::SignedDuration {
        let policy = match &step.kind {
            StepKind::Service { retry, .. } | StepKind::Send { retry, .. } => retry.clone(),
            _ => Default::default(),
        };
        let base = policy.initial_backoff.as_millis().max(1) as f64;
        let exp = base * 2f64.powi(in_round.saturating_sub(2).min(30) as i32);
        let capped = exp.min(policy.max_backoff.as_millis().max(1) as f64);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self
            .st
            .id
            .as_bytes()
            .iter()
            .chain(job.to_le_bytes().iter())
            .chain(attempt.to_le_bytes().iter())
        {
            hash ^= *byte as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // A factor between 0.8 and 1.2 spreads retries of many jobs that failed together.
        let factor = 0.8 + (hash % 4001) as f64 / 10_000.0;
        jiff::SignedDuration::from_millis((capped * factor) as i64)
    }

    fn arm_timer(
        &mut self,
        t: u64,
        timer: &TimerSpec,
        purpose: Purpose,
        step: &str,
    ) -> Result<u64, Trouble> {
        let due = self.timer_due(t, timer, step)?;
        let id = self.st.fresh_id();
        self.st.timers.push(TimerState {
            id,
            token: t,
            purpose,
            armed: self.now,
            due,
            fired: 0,
        });
        let label = match purpose {
            Purpose::Catch => format!("wait at {step}"),
            Purpose::Boundary(_) => format!("timer on {step}"),
            Purpose::Race(_) => format!("race at {step}"),
        };
        self.out.push(Command::ScheduleTimer {
            timer: id,
            due,
            label,
        });
        Ok(id)
    }

    /// When a timer armed now fires. A computed one (`"{{ quote.valid_until }}"`) is its
    /// template's value read by [`crate::schedule::computed_due`]; a bad value is an incident
    /// on the step.
    fn timer_due(&self, t: u64, timer: &TimerSpec, step: &str) -> Result<Timestamp, Trouble> {
        match timer {
            TimerSpec::Fixed(schedule) => self
                .schedule_first(schedule)
                .ok_or_else(|| format!("timer `{}` can never fire", schedule.source())),
            TimerSpec::Computed {
                template,
                zone,
                zone_name,
            } => self.computed_due(t, template, zone_name, zone, step),
        }
    }

    fn computed_due(
        &self,
        t: u64,
        template: &crate::expr::Template,
        zone_name: &str,
        zone: &jiff::tz::TimeZone,
        step: &str,
    ) -> Result<Timestamp, Trouble> {
        let view = View {
            state: self.st,
            scope: self.scope_of(t),
            extra: None,
            data: &self.def.data,
        };
        let value = template
            .value(&view, &self.ctx())
            .map_err(|e| format!("the timer `{}` of step `{step}`: {e}", template.source()))?;
        crate::schedule::computed_due(&value, self.now, zone_name, zone)
            .map_err(|why| format!("the timer `{}` of step `{step}` {why}", template.source()))
    }

    fn subscribe(
        &mut self,
        t: u64,
        message: &MessageCatch,
        purpose: Purpose,
    ) -> Result<u64, Trouble> {
        let key = self.correlation_key(t, message)?;
        let id = self.st.fresh_id();
        self.st.subscriptions.push(SubscriptionState {
            id,
            token: t,
            purpose,
            name: message.name.clone(),
            key: key.clone(),
        });
        self.out.push(Command::Subscribe {
            subscription: id,
            name: message.name.clone(),
            key,
        });
        Ok(id)
    }

    /// The key a message catch waits for: its `key:` expression's value as text.
    fn correlation_key(&self, t: u64, message: &MessageCatch) -> Result<String, Trouble> {
        Ok(match &message.key {
            Some(k) => key_text(&self.eval(t, k, None)?),
            None => String::new(),
        })
    }

    /// Computes, arming nothing, every timer and correlation key the step arms when it is
    /// entered: its own (`wait`, `race`, `receive`) unless it is the owner of multi-instance
    /// items, and its boundary events unless it is one of those items. A computed timer or
    /// a key that fails then raises the incident before the step opens a task, starts a job
    /// or a child, or arms its other events, so nothing is left behind for the retry to
    /// duplicate. Arming later computes the same values: same variables, same `now`.
    fn check_events(&self, t: u64, step: &Step, item: bool) -> Result<(), Trouble> {
        let owner_of_items = step.multi.is_some() && !item;
        let own: Vec<&CatchEvent> = match &step.kind {
            _ if owner_of_items => Vec::new(),
            StepKind::Wait { event } => vec![event],
            StepKind::Race { events } => events.iter().map(|arm| &arm.event).collect(),
            _ => Vec::new(),
        };
        for event in own {
            match event {
                CatchEvent::Timer(timer) => {
                    self.timer_due(t, timer, &step.name)?;
                }
                CatchEvent::Message(message) => {
                    self.correlation_key(t, message)?;
                }
            }
        }
        if let StepKind::Receive { message } = &step.kind
            && !owner_of_items
        {
            self.correlation_key(t, message)?;
        }
        if item {
            return Ok(());
        }
        for boundary in &step.boundary {
            match &boundary.event {
                BoundaryEvent::Timer(timer) => {
                    self.timer_due(t, timer, &step.name)?;
                }
                BoundaryEvent::Message(message) => {
                    self.correlation_key(t, message)?;
                }
                BoundaryEvent::Error { .. } => {}
            }
        }
        Ok(())
    }

    /// Arms the timers and subscriptions of a step's boundary events (error boundaries need
    /// nothing armed: they are looked up when an error is thrown).
    fn arm_boundaries(&mut self, t: u64, step: &Step) -> Result<(), Trouble> {
        if self.st.token(t).is_some_and(|tok| tok.item) {
            // Items of a multi-instance step share the boundary events of the whole step.
            return Ok(());
        }
        let mut handles = Vec::new();
        for (i, b) in step.boundary.iter().enumerate() {
            match &b.event {
                BoundaryEvent::Timer(s) => {
                    handles.push(self.arm_timer(t, s, Purpose::Boundary(i), &step.name)?)
                }
                BoundaryEvent::Message(m) => {
                    handles.push(self.subscribe(t, m, Purpose::Boundary(i))?)
                }
                BoundaryEvent::Error { .. } => {}
            }
        }
        if let Some(tok) = self.st.token_mut(t) {
            tok.boundaries.extend(handles);
        }
        Ok(())
    }

    fn choose(&self, t: u64, choice: &Choice) -> Result<StepId, Trouble> {
        for branch in &choice.branches {
            if self.eval_bool(t, &branch.when)? {
                return Ok(branch.target.id);
            }
        }
        match &choice.otherwise {
            Some(o) => Ok(o.id),
            None => Err("no condition is true and there is no `otherwise`".into()),
        }
    }

    /// The step's work is done: follow its `goto` or `then`.
    fn leave(&mut self, t: u64) {
        let Some(tok) = self.st.token(t) else { return };
        let boundaries = tok.boundaries.clone();
        for h in boundaries {
            self.cancel_handle(h);
        }
        if let Some(tok) = self.st.token_mut(t) {
            tok.boundaries.clear();
            tok.wait = Wait::Nothing;
        }
        let Some(tok) = self.st.token(t) else { return };
        if tok.item {
            // One item of a multi-instance step is done; the step itself moves on when all are.
            self.end_token(t);
            return;
        }
        let step = self.def.step(tok.step);
        match &step.next {
            Next::End => self.end_token(t),
            Next::Goto(target) => self.move_to(t, target.id),
            Next::Choose(choice) => match self.choose(t, choice) {
                Ok(target) => self.move_to(t, target),
                Err(trouble) => self.incident(t, trouble, Resume::Leave),
            },
        }
    }

    fn move_to(&mut self, t: u64, target: StepId) {
        if let Some(tok) = self.st.token_mut(t) {
            tok.step = target;
            tok.item = false;
            tok.wait = Wait::Nothing;
            tok.boundaries.clear();
            self.queue.push_back(t);
        }
    }

    fn end_token(&mut self, t: u64) {
        let scope = self.scope_of(t);
        self.st.tokens.retain(|tok| tok.id != t);
        if !self.st.tokens.iter().any(|tok| tok.scope == scope) {
            self.scope_done(scope, InstanceStatus::Completed);
        }
    }

    /// Every path of `scope` has ended.
    fn scope_done(&mut self, scope: u64, root_status: InstanceStatus) {
        if scope == ROOT_SCOPE {
            self.finish(root_status, None);
            return;
        }
        let Some(s) = self.st.scope(scope).cloned() else {
            return;
        };
        let owner = s.owner;
        if let Some(index) = s.item {
            self.item_done(owner, scope, index);
        } else {
            self.st.scopes.retain(|x| x.id != scope);
            self.leave(owner);
        }
    }

    fn open_scope(&mut self, owner: u64, item: Option<usize>, vars: Vars) -> u64 {
        let id = self.st.fresh_id();
        let parent = self.scope_of(owner);
        self.st.scopes.push(ScopeState {
            id,
            parent,
            owner,
            item,
            vars,
        });
        id
    }

    // ----- multi-instance ---------------------------------------------------------------

    fn start_items(&mut self, t: u64, step: &Step) -> Result<(), Trouble> {
        let Some(multi) = &step.multi else {
            return Ok(());
        };
        let items = match self.eval(t, &multi.items, None)? {
            Value::List(items) => items,
            Value::Null => Vec::new(),
            other => {
                return Err(format!(
                    "`{}` is a {}, expected a list to run `{}` for each item",
                    multi.items.source(),
                    other.type_name(),
                    step.name
                ));
            }
        };
        if items.len() > MAX_ITEMS {
            return Err(format!(
                "`{}` has {} items, more than the {MAX_ITEMS} a multi-instance step runs at once: \
                 split the list, or run a called process per batch",
                multi.items.source(),
                items.len()
            ));
        }
        self.arm_boundaries(t, step)?;
        if items.is_empty() {
            if let Some(collect) = &multi.collect {
                self.set_var(t, &collect.target, Value::List(Vec::new()));
            }
            self.history("step", Some(step.id), "no items".into());
            self.leave(t);
            return Ok(());
        }
        let count = items.len();
        let state = ItemsState {
            results: vec![Value::Null; count],
            items,
            started: 0,
            done: 0,
            running: Vec::new(),
        };
        self.set_wait(t, Wait::Items(Box::new(state)));
        let first_batch = if multi.parallel { count } else { 1 };
        for _ in 0..first_batch {
            self.start_next_item(t, step);
        }
        Ok(())
    }

    fn start_next_item(&mut self, owner: u64, step: &Step) {
        let Some(multi) = &step.multi else { return };
        let Some(Wait::Items(items)) = self.st.token(owner).map(|tok| &tok.wait) else {
            return;
        };
        let index = items.started;
        let Some(item) = items.items.get(index).cloned() else {
            return;
        };
        let mut vars = Vars::new();
        vars.insert(multi.item_var.clone(), item);
        vars.insert(
            format!("{}_index", multi.item_var),
            Value::from(index as i64),
        );
        let scope = self.open_scope(owner, Some(index), vars);
        if let Some(Wait::Items(items)) = self.st.token_mut(owner).map(|tok| &mut tok.wait) {
            items.started += 1;
            items.running.push(scope);
        }
        let inner = self.new_token(step.id, scope, true);
        self.queue.push_back(inner);
    }

    fn item_done(&mut self, owner: u64, scope: u64, index: usize) {
        let Some(step) = self.step_of(owner) else {
            return;
        };
        let Some(multi) = &step.multi else { return };
        // The collected value is read in the item's scope, before it closes.
        let collected = match &multi.collect {
            Some(c) => {
                let view = View {
                    state: self.st,
                    scope,
                    extra: None,
                    data: &self.def.data,
                };
                match c.value.eval(&view, &self.ctx()) {
                    Ok(v) => v,
                    Err(e) => {
                        self.st.scopes.retain(|x| x.id != scope);
                        let trouble = format!("collecting `{}`: {e}", c.value.source());
                        self.interrupt(owner);
                        self.incident(owner, trouble, Resume::Enter);
                        return;
                    }
                }
            }
            None => Value::Null,
        };
        self.st.scopes.retain(|x| x.id != scope);
        let (all_done, more_to_start) = match self.st.token_mut(owner).map(|tok| &mut tok.wait) {
            Some(Wait::Items(items)) => {
                if let Some(slot) = items.results.get_mut(index) {
                    *slot = collected;
                }
                items.done += 1;
                items.running.retain(|s| *s != scope);
                (
                    items.done >= items.items.len(),
                    items.started < items.items.len(),
                )
            }
            _ => return,
        };
        if all_done {
            let results = match self
                .st
                .token_mut(owner)
                .map(|tok| std::mem::replace(&mut tok.wait, Wait::Nothing))
            {
                Some(Wait::Items(items)) => items.results,
                _ => Vec::new(),
            };
            if let Some(c) = &multi.collect {
                self.set_var(owner, &c.target, Value::List(results));
            }
            self.history("step", Some(step.id), "all items done".into());
            self.leave(owner);
        } else if !multi.parallel && more_to_start {
            self.start_next_item(owner, step);
        }
    }

    // ----- joins ------------------------------------------------------------------------

    fn merge_at_join(&mut self, t: u64, waiting: &[u64]) {
        for other in waiting {
            if *other != t {
                self.st.tokens.retain(|tok| tok.id != *other);
            }
        }
        let step = self.st.token(t).map(|tok| tok.step);
        self.history("step", step, format!("joined {} paths", waiting.len()));
        self.leave(t);
    }

    /// Fires every inclusive join that no other path of its scope can still reach. Returns
    /// whether one fired (then there is more work in the queue).
    fn fire_inclusive_joins(&mut self) -> bool {
        let candidates: Vec<(u64, StepId, u64)> = self
            .st
            .tokens
            .iter()
            .filter(|tok| {
                tok.wait == Wait::Join
                    && matches!(
                        self.def.step(tok.step).kind,
                        StepKind::Join { inclusive: true }
                    )
            })
            .map(|tok| (tok.id, tok.step, tok.scope))
            .collect();
        let mut fired = false;
        let mut done_joins: Vec<(StepId, u64)> = Vec::new();
        for (t, join, scope) in candidates {
            if done_joins.contains(&(join, scope)) || self.st.token(t).is_none() {
                continue;
            }
            let blocked = self.st.tokens.iter().any(|other| {
                other.scope == scope
                    && !(other.step == join && other.wait == Wait::Join)
                    && can_reach(self.def, other.step, join)
            });
            if !blocked {
                let waiting: Vec<u64> = self
                    .st
                    .tokens
                    .iter()
                    .filter(|o| o.step == join && o.scope == scope && o.wait == Wait::Join)
                    .map(|o| o.id)
                    .collect();
                done_joins.push((join, scope));
                self.merge_at_join(t, &waiting);
                fired = true;
            }
        }
        fired
    }

    // ----- ending, errors, cancelling ---------------------------------------------------

    fn finish(&mut self, status: InstanceStatus, failure: Option<(String, String)>) {
        let tokens: Vec<u64> = self.st.tokens.iter().map(|t| t.id).collect();
        for t in tokens {
            self.interrupt(t);
        }
        self.st.tokens.clear();
        self.st.scopes.clear();
        self.st.status = status;
        self.st.ended_at = Some(self.now);
        let what = match status {
            InstanceStatus::Completed => "completed",
            InstanceStatus::Failed => "failed",
            InstanceStatus::Terminated => "terminated",
            InstanceStatus::Cancelled => "cancelled",
            InstanceStatus::Active => "active",
        };
        let detail = failure
            .as_ref()
            .map(|(code, message)| format!("{code}: {message}"))
            .unwrap_or_default();
        if failure.is_some() {
            self.st.failure = Some(detail.clone());
        }
        self.history(what, None, detail);
        if let Some(parent) = self.st.parent.clone() {
            let outcome = match (status, failure) {
                (InstanceStatus::Completed | InstanceStatus::Terminated, _) => {
                    ChildOutcome::Completed
                }
                (_, Some((code, message))) if status == InstanceStatus::Failed => {
                    ChildOutcome::Error { code, message }
                }
                _ => ChildOutcome::Failed {
                    reason: format!("the called instance was {what}"),
                },
            };
            self.out.push(Command::NotifyParent {
                parent,
                outcome,
                vars: self.st.vars.clone(),
            });
        }
    }

    /// Throws a business error from token `t`: the nearest enclosing step with a matching
    /// error boundary event catches it; uncaught, the instance fails (and a calling process
    /// gets the error on its call activity).
    fn throw(&mut self, mut t: u64, code: String, message: String) {
        loop {
            let Some(step) = self.step_of(t) else { return };
            let caught = step.boundary.iter().find(|b| match &b.event {
                BoundaryEvent::Error { code: None } => true,
                BoundaryEvent::Error { code: Some(c) } => *c == code,
                _ => false,
            });
            if let Some(boundary) = caught {
                let is_item = self.st.token(t).is_some_and(|tok| tok.item);
                if !is_item {
                    self.interrupt(t);
                    let mut error = std::collections::BTreeMap::new();
                    error.insert("code".to_string(), Value::String(code.clone()));
                    error.insert("message".to_string(), Value::String(message.clone()));
                    self.set_var(t, "error", Value::Map(error));
                    self.history("error caught", Some(step.id), format!("{code}: {message}"));
                    self.move_to(t, boundary.target.id);
                    return;
                }
            }
            let scope = self.scope_of(t);
            if scope == ROOT_SCOPE {
                self.finish(InstanceStatus::Failed, Some((code, message)));
                return;
            }
            let Some(owner) = self.st.scope(scope).map(|s| s.owner) else {
                return;
            };
            t = owner;
        }
    }

    /// Cancels what `t` waits for and its boundary events, recursively for sub-processes.
    fn interrupt(&mut self, t: u64) {
        let Some(tok) = self.st.token_mut(t) else {
            return;
        };
        let wait = std::mem::replace(&mut tok.wait, Wait::Nothing);
        let boundaries = std::mem::take(&mut tok.boundaries);
        for h in boundaries {
            self.cancel_handle(h);
        }
        match wait {
            Wait::Nothing | Wait::Join => {}
            Wait::Task { task } => self.out.push(Command::CancelTask { task }),
            Wait::Job { job, .. } => self.out.push(Command::CancelJob { job }),
            Wait::Timer { timer } => self.cancel_handle(timer),
            Wait::Message { subscription } => self.cancel_handle(subscription),
            Wait::Race { handles } => {
                for h in handles {
                    self.cancel_handle(h);
                }
            }
            Wait::Subprocess { scope } => self.kill_scope(scope),
            Wait::Items(items) => {
                for scope in items.running {
                    self.kill_scope(scope);
                }
            }
            Wait::Child { instance } => {
                if let Some(instance) = instance {
                    self.out.push(Command::CancelChild { instance });
                }
            }
            Wait::Incident { incident, resume } => {
                self.out.push(Command::ResolveIncident { incident });
                if let Resume::Job { job, .. } = resume {
                    self.out.push(Command::CancelJob { job });
                }
            }
        }
    }

    fn kill_tokens_of(&mut self, scope: u64) {
        let tokens: Vec<u64> = self
            .st
            .tokens
            .iter()
            .filter(|t| t.scope == scope)
            .map(|t| t.id)
            .collect();
        for t in tokens {
            self.interrupt(t);
            self.st.tokens.retain(|tok| tok.id != t);
        }
    }

    fn kill_scope(&mut self, scope: u64) {
        self.kill_tokens_of(scope);
        self.st.scopes.retain(|s| s.id != scope);
    }

    fn cancel_handle(&mut self, h: u64) {
        if let Some(pos) = self.st.timers.iter().position(|x| x.id == h) {
            self.st.timers.remove(pos);
            self.out.push(Command::CancelTimer { timer: h });
        } else if let Some(pos) = self.st.subscriptions.iter().position(|x| x.id == h) {
            self.st.subscriptions.remove(pos);
            self.out.push(Command::Unsubscribe { subscription: h });
        }
    }

    // ----- events -----------------------------------------------------------------------

    fn handle(&mut self, event: Event) -> Result<Applied, MachineError> {
        match event {
            Event::TaskCompleted { task, vars, .. } => {
                let Some(t) = self.find(|w| matches!(w, Wait::Task { task: x } if *x == task))
                else {
                    return Ok(Applied::Ignored("no open task with this id"));
                };
                let Some(step) = self.step_of(t) else {
                    return Ok(Applied::Ignored("no step"));
                };
                let vars = check_form(step, vars)?;
                self.out.push(Command::CancelTask { task });
                for (name, value) in vars {
                    self.set_var(t, &name, value);
                }
                self.history("task completed", Some(step.id), String::new());
                self.leave(t);
                Ok(Applied::Changed)
            }
            Event::TimerFired { timer } => {
                let Some(ts) = self.st.timers.iter().find(|x| x.id == timer).cloned() else {
                    return Ok(Applied::Ignored("no pending timer with this id"));
                };
                self.timer_fired(ts);
                Ok(Applied::Changed)
            }
            Event::MessageReceived { subscription, vars } => {
                let Some(sub) = self
                    .st
                    .subscriptions
                    .iter()
                    .find(|x| x.id == subscription)
                    .cloned()
                else {
                    return Ok(Applied::Ignored("no subscription with this id"));
                };
                self.message_received(sub, vars);
                Ok(Applied::Changed)
            }
            Event::JobSucceeded {
                job,
                attempt,
                output,
            } => {
                let Some(t) = self.find_job(job, attempt) else {
                    return Ok(Applied::Ignored("no job waiting with this id and attempt"));
                };
                let Some(step) = self.step_of(t) else {
                    return Ok(Applied::Ignored("no step"));
                };
                let outputs: &[Assignment] = match &step.kind {
                    StepKind::Service { output, .. } => output,
                    _ => &[],
                };
                if outputs.is_empty() {
                    for (name, value) in output {
                        self.set_var(t, &name, value);
                    }
                } else {
                    let result = Value::Map(output);
                    match self.mapping(t, outputs, Some(("result", &result))) {
                        Ok(values) => {
                            for (name, value) in values {
                                self.set_var(t, &name, value);
                            }
                        }
                        Err(trouble) => {
                            self.incident(t, trouble, Resume::Enter);
                            return Ok(Applied::Changed);
                        }
                    }
                }
                self.history(
                    "step",
                    Some(step.id),
                    format!("job done (attempt {attempt})"),
                );
                self.leave(t);
                Ok(Applied::Changed)
            }
            Event::JobFailed {
                job,
                attempt,
                error,
                retries_left: answered_retries,
            } => {
                let Some(t) = self.find_job(job, attempt) else {
                    return Ok(Applied::Ignored("no job waiting with this id and attempt"));
                };
                let Some(step) = self.step_of(t) else {
                    return Ok(Applied::Ignored("no step"));
                };
                let retries_left = match self.st.token(t).map(|tok| &tok.wait) {
                    Some(Wait::Job { retries_left, .. }) => {
                        answered_retries.unwrap_or(*retries_left)
                    }
                    _ => 0,
                };
                self.history(
                    "job failed",
                    Some(step.id),
                    format!("attempt {attempt}: {error}"),
                );
                if retries_left > 0 {
                    self.retry_job(t, step, attempt + 1, retries_left - 1);
                } else {
                    self.incident(
                        t,
                        format!("{error} (after {attempt} attempts)"),
                        Resume::Job { job, attempt },
                    );
                }
                Ok(Applied::Changed)
            }
            Event::JobBusinessError {
                job,
                attempt,
                code,
                message,
                vars,
            } => {
                let Some(t) = self.find_job(job, attempt) else {
                    return Ok(Applied::Ignored("no job waiting with this id and attempt"));
                };
                for (name, value) in vars {
                    self.set_var(t, &name, value);
                }
                self.throw(t, code, message);
                Ok(Applied::Changed)
            }
            Event::ChildStarted { token, child } => match self.st.token_mut(token) {
                Some(tok) if matches!(tok.wait, Wait::Child { instance: None }) => {
                    tok.wait = Wait::Child {
                        instance: Some(child),
                    };
                    Ok(Applied::Changed)
                }
                _ => Ok(Applied::Ignored("no call activity waiting for a child")),
            },
            Event::ChildEnded {
                token,
                outcome,
                vars,
            } => {
                if !self
                    .st
                    .token(token)
                    .is_some_and(|tok| matches!(tok.wait, Wait::Child { .. }))
                {
                    return Ok(Applied::Ignored("no call activity waiting for a child"));
                }
                let Some(step) = self.step_of(token) else {
                    return Ok(Applied::Ignored("no step"));
                };
                match outcome {
                    ChildOutcome::Completed => {
                        let outputs: &[Assignment] = match &step.kind {
                            StepKind::CallProcess { output, .. } => output,
                            _ => &[],
                        };
                        let child = Value::Map(vars);
                        match self.mapping(token, outputs, Some(("child", &child))) {
                            Ok(values) => {
                                for (name, value) in values {
                                    self.set_var(token, &name, value);
                                }
                                self.history(
                                    "step",
                                    Some(step.id),
                                    "called process completed".into(),
                                );
                                self.leave(token);
                            }
                            Err(trouble) => {
                                let trouble =
                                    self.child_output_hint(token, outputs, &child, trouble);
                                self.incident(token, trouble, Resume::Leave)
                            }
                        }
                    }
                    ChildOutcome::Error { code, message } => {
                        self.set_wait(token, Wait::Nothing);
                        self.throw(token, code, message);
                    }
                    ChildOutcome::Failed { reason } => {
                        self.set_wait(token, Wait::Nothing);
                        self.incident(token, reason, Resume::Enter);
                    }
                }
                Ok(Applied::Changed)
            }
            Event::RetryIncident { incident, .. } => {
                let Some(t) = self
                    .find(|w| matches!(w, Wait::Incident { incident: x, .. } if *x == incident))
                else {
                    return Ok(Applied::Ignored("no open incident with this id"));
                };
                let Some(Wait::Incident { resume, .. }) =
                    self.st.token(t).map(|tok| tok.wait.clone())
                else {
                    return Ok(Applied::Ignored("no open incident with this id"));
                };
                self.out.push(Command::ResolveIncident { incident });
                let step = self.step_of(t);
                self.history("incident retried", step.map(|s| s.id), String::new());
                match resume {
                    Resume::Enter => {
                        // Boundary events armed before the failure are armed again on entry.
                        self.interrupt_boundaries(t);
                        self.set_wait(t, Wait::Nothing);
                        self.queue.push_back(t);
                    }
                    Resume::Leave => {
                        self.set_wait(t, Wait::Nothing);
                        self.leave(t);
                    }
                    Resume::Job { job, attempt } => {
                        if let Some(step) = step {
                            let retries = match &step.kind {
                                StepKind::Service { retry, .. } | StepKind::Send { retry, .. } => {
                                    retry.max_attempts
                                }
                                _ => 1,
                            };
                            self.set_wait(
                                t,
                                Wait::Job {
                                    job,
                                    attempt,
                                    retries_left: 0,
                                },
                            );
                            self.retry_job(t, step, attempt + 1, retries.saturating_sub(1));
                        }
                    }
                }
                Ok(Applied::Changed)
            }
            Event::Cancel { .. } => {
                self.finish(InstanceStatus::Cancelled, None);
                Ok(Applied::Changed)
            }
        }
    }

    fn interrupt_boundaries(&mut self, t: u64) {
        let Some(tok) = self.st.token_mut(t) else {
            return;
        };
        let boundaries = std::mem::take(&mut tok.boundaries);
        for h in boundaries {
            self.cancel_handle(h);
        }
    }

    fn retry_job(&mut self, t: u64, step: &Step, attempt: u32, retries_left: u32) {
        let (connector, operation, input) = match &step.kind {
            StepKind::Service {
                connector,
                operation,
                input,
                ..
            } => (
                connector.as_str(),
                operation.as_str(),
                self.mapping(t, input, None),
            ),
            StepKind::Send {
                template,
                to,
                input,
                ..
            } => {
                let vars = self.mapping(t, input, None).and_then(|mut v| {
                    v.push(("to".into(), self.eval(t, to, None)?));
                    v.push(("template".into(), Value::String(template.clone())));
                    Ok(v)
                });
                ("email", "send", vars)
            }
            _ => return,
        };
        match input {
            Ok(input) => {
                let input: Vars = input.into_iter().collect();
                self.enqueue_job(t, step, connector, operation, input, attempt, retries_left);
            }
            Err(trouble) => self.incident(t, trouble, Resume::Enter),
        }
    }

    fn find(&self, pred: impl Fn(&Wait) -> bool) -> Option<u64> {
        self.st.tokens.iter().find(|t| pred(&t.wait)).map(|t| t.id)
    }

    fn find_job(&self, job: u64, attempt: u32) -> Option<u64> {
        self.find(
            |w| matches!(w, Wait::Job { job: j, attempt: a, .. } if *j == job && *a == attempt),
        )
    }

    fn timer_fired(&mut self, ts: TimerState) {
        let t = ts.token;
        let Some(step) = self.step_of(t) else { return };
        match ts.purpose {
            Purpose::Catch => {
                self.st.timers.retain(|x| x.id != ts.id);
                self.history("timer fired", Some(step.id), String::new());
                self.leave(t);
            }
            Purpose::Race(i) => self.race_won(t, step, i, Vars::new()),
            Purpose::Boundary(i) => {
                let Some(boundary) = step.boundary.get(i) else {
                    return;
                };
                self.boundary_fired(t, step, boundary, "timer fired");
                if !boundary.interrupting {
                    // A cycle fires again; a missed period after downtime is skipped, so an
                    // overdue timer fires once. A computed timer fires once, like a date.
                    let schedule = match &boundary.event {
                        BoundaryEvent::Timer(TimerSpec::Fixed(s)) => Some(s),
                        BoundaryEvent::Timer(TimerSpec::Computed { .. }) => None,
                        _ => return,
                    };
                    let fired = ts.fired + 1;
                    match schedule.and_then(|s| s.next_after(self.now.max(ts.due), ts.armed, fired))
                    {
                        Some(due) => {
                            if let Some(x) = self.st.timers.iter_mut().find(|x| x.id == ts.id) {
                                x.fired = fired;
                                x.due = due;
                            }
                            self.out.push(Command::ScheduleTimer {
                                timer: ts.id,
                                due,
                                label: format!("timer on {}", step.name),
                            });
                        }
                        None => {
                            self.st.timers.retain(|x| x.id != ts.id);
                            if let Some(tok) = self.st.token_mut(t) {
                                tok.boundaries.retain(|h| *h != ts.id);
                            }
                            self.out.push(Command::CancelTimer { timer: ts.id });
                        }
                    }
                }
            }
        }
    }

    fn race_won(&mut self, t: u64, step: &Step, arm: usize, vars: Vars) {
        let StepKind::Race { events } = &step.kind else {
            return;
        };
        let Some(arm) = events.get(arm) else { return };
        if let Some(Wait::Race { handles }) = self.st.token(t).map(|tok| tok.wait.clone()) {
            for h in handles {
                self.cancel_handle(h);
            }
        }
        for (name, value) in vars {
            self.set_var(t, &name, value);
        }
        self.history(
            "step",
            Some(step.id),
            format!("went to {}", arm.target.name),
        );
        self.move_to(t, arm.target.id);
    }

    fn message_received(&mut self, sub: SubscriptionState, vars: Vars) {
        let t = sub.token;
        let Some(step) = self.step_of(t) else { return };
        match sub.purpose {
            Purpose::Catch => {
                self.st.subscriptions.retain(|x| x.id != sub.id);
                for (name, value) in vars {
                    self.set_var(t, &name, value);
                }
                self.history("message received", Some(step.id), sub.name.clone());
                self.leave(t);
            }
            Purpose::Race(i) => self.race_won(t, step, i, vars),
            Purpose::Boundary(i) => {
                let Some(boundary) = step.boundary.get(i) else {
                    return;
                };
                for (name, value) in vars {
                    self.set_var(t, &name, value);
                }
                self.boundary_fired(t, step, boundary, "message received");
            }
        }
    }

    /// A boundary event of `t`'s step happened: an interrupting one cancels the step and moves
    /// `t` to the event's path; a non-interrupting one starts that path beside the step.
    fn boundary_fired(&mut self, t: u64, step: &Step, boundary: &Boundary, what: &str) {
        self.history(
            what,
            Some(step.id),
            format!("boundary to {}", boundary.target.name),
        );
        if boundary.interrupting {
            self.interrupt(t);
            self.move_to(t, boundary.target.id);
        } else {
            let scope = self.scope_of(t);
            let nt = self.new_token(boundary.target.id, scope, false);
            self.queue.push_back(nt);
        }
    }
}

/// Targets of the flows that leave `step`, boundary events included.
pub fn successors(def: &Definition, step: StepId) -> Vec<StepId> {
    let s = def.step(step);
    let mut out = Vec::new();
    match &s.next {
        Next::End => {}
        Next::Goto(r) => out.push(r.id),
        Next::Choose(c) => {
            out.extend(c.branches.iter().map(|b| b.target.id));
            out.extend(c.otherwise.iter().map(|o| o.id));
        }
    }
    match &s.kind {
        StepKind::Decide(c) | StepKind::Inclusive(c) => {
            out.extend(c.branches.iter().map(|b| b.target.id));
            out.extend(c.otherwise.iter().map(|o| o.id));
        }
        StepKind::Parallel { branches } => out.extend(branches.iter().map(|b| b.id)),
        StepKind::Race { events } => out.extend(events.iter().map(|e| e.target.id)),
        _ => {}
    }
    out.extend(s.boundary.iter().map(|b| b.target.id));
    out
}

/// How many flows arrive at `join` from steps of its own container.
fn incoming_flows(def: &Definition, join: StepId) -> usize {
    let parent = def.step(join).parent;
    def.steps
        .iter()
        .filter(|s| s.parent == parent)
        .map(|s| {
            successors(def, s.id)
                .into_iter()
                .filter(|x| *x == join)
                .count()
        })
        .sum::<usize>()
        .max(1)
}

/// Whether a path from `from` can reach `target` without passing through `target`.
fn can_reach(def: &Definition, from: StepId, target: StepId) -> bool {
    let mut seen = vec![false; def.steps.len()];
    let mut stack = vec![from];
    while let Some(s) = stack.pop() {
        if s == target {
            return true;
        }
        if std::mem::replace(&mut seen[s as usize], true) {
            continue;
        }
        stack.extend(successors(def, s));
    }
    false
}

#[cfg(test)]
mod tests;

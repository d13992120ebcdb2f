//! Checks of a parsed definition as a whole: that every step can be reached and every path can
//! end, that jumps stay inside their sub-process, that exclusive choices have a default, and
//! that connectors, decision tables and called processes exist.
//!
//! `parse` has already resolved step names, so these checks work on the model alone and point
//! at the spans it keeps.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostics::Problem;
use crate::model::{Definition, Next, Span, Step, StepId, StepKind, StepRef};
use crate::parse::codes;
use crate::parse::suggest::{did_you_mean, list_words};
use crate::store::EXTERNAL_CONNECTOR;

/// What a definition may refer to outside itself.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Connector -> its operations; an empty list means any operation.
    pub connectors: BTreeMap<String, Vec<String>>,
    /// Known process ids for call activities; empty means "do not check".
    pub processes: BTreeSet<String>,
    /// The e-mail templates `send:` may name; `None` means "do not check" (no template folder
    /// at hand, as when a single file is validated on its own).
    pub templates: Option<BTreeSet<String>>,
}

impl Catalog {
    /// The connectors Ciclo ships with.
    pub fn standard() -> Catalog {
        let ops = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut connectors = BTreeMap::new();
        connectors.insert("email".to_string(), ops(&["send"]));
        // The ERP connector maps any operation to an endpoint; create-order is the one we know.
        connectors.insert("erp".to_string(), Vec::new());
        // The same list as `ciclo_connectors::einvoice::OPERATIONS` (the server uses that one).
        connectors.insert("einvoice".to_string(), ops(&["issue", "deliver", "render"]));
        connectors.insert(EXTERNAL_CONNECTOR.to_string(), Vec::new());
        // Built into the runtime: a process sends a message to others (runtime/publish.rs).
        connectors.insert("message".to_string(), ops(&["publish"]));
        // Built into the runtime: round-robin assignment within a team (runtime/engine/rotation.rs).
        connectors.insert("assign".to_string(), ops(&["round_robin"]));
        connectors.insert("test".to_string(), Vec::new());
        Catalog {
            connectors,
            processes: BTreeSet::new(),
            templates: None,
        }
    }
}

/// Why `name` cannot be the type of an external job (`call: external.<type>`), if it cannot:
/// 1 to 100 ASCII letters, digits, `-` and `_`, starting with a letter or digit, so that it
/// reads the same in YAML, JSON, URLs and logs.
pub fn external_job_type(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 100 {
        return Err(format!(
            "the job type `{name}` must have 1 to 100 characters"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "the job type `{}` may only have ASCII letters, digits, `-` and `_`, and must start with a letter or digit",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// A name a definition uses that lives outside it, with where it was written.
#[derive(Clone, Debug)]
pub enum Reference {
    Connector {
        connector: String,
        operation: String,
        connector_span: Span,
        operation_span: Span,
    },
    Table {
        name: String,
        span: Span,
    },
    Process {
        name: String,
        span: Span,
    },
    /// The e-mail template of a `send:` step.
    Template {
        name: String,
        span: Span,
    },
    /// A data file read by an expression: `data.<name>` (`Some`), or `data` used in another
    /// way (`None`: every file). Checked by `parse::load`, which knows the data files.
    Data {
        name: Option<String>,
        span: Span,
    },
}

fn problem(
    def: &Definition,
    span: Span,
    code: &'static str,
    message: String,
    hint: Option<String>,
) -> Problem {
    Problem {
        file: def.file.clone(),
        line: span.line,
        col: span.col,
        code,
        message,
        hint,
    }
}

/// Checks the references of `def` against the catalog and the decision tables known to the
/// whole library (`tables`, plus the definition's own).
pub fn references(
    def: &Definition,
    refs: &[Reference],
    catalog: &Catalog,
    tables: &BTreeSet<String>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for reference in refs {
        match reference {
            Reference::Connector {
                connector,
                operation,
                connector_span,
                operation_span,
            } if connector == EXTERNAL_CONNECTOR => {
                // Always known: any program may take jobs of any well-formed type.
                if let Err(message) = external_job_type(operation) {
                    problems.push(problem(
                        def,
                        *operation_span,
                        codes::INVALID_VALUE,
                        message,
                        Some("write `external.<type>`, such as `external.score-lead`".into()),
                    ));
                }
            }
            Reference::Connector {
                connector,
                operation,
                connector_span,
                operation_span,
            } => match catalog.connectors.get(connector) {
                None => {
                    let hint =
                        did_you_mean(connector, catalog.connectors.keys().map(String::as_str))
                            .map(|s| format!("did you mean `{s}`?"))
                            .or_else(|| {
                                Some(format!(
                                    "connectors: {}",
                                    list_words(catalog.connectors.keys().map(String::as_str))
                                ))
                            });
                    problems.push(problem(
                        def,
                        *connector_span,
                        codes::UNKNOWN_CONNECTOR,
                        format!("unknown connector `{connector}`"),
                        hint,
                    ));
                }
                Some(ops) if !ops.is_empty() && !ops.contains(operation) => {
                    let hint = did_you_mean(operation, ops.iter().map(String::as_str))
                        .map(|s| format!("did you mean `{s}`?"))
                        .or_else(|| {
                            Some(format!(
                                "operations: {}",
                                list_words(ops.iter().map(String::as_str))
                            ))
                        });
                    problems.push(problem(
                        def,
                        *operation_span,
                        codes::UNKNOWN_OPERATION,
                        format!("connector `{connector}` has no operation `{operation}`"),
                        hint,
                    ));
                }
                Some(_) => {}
            },
            Reference::Table { name, span } => {
                if name.is_empty() || def.table(name).is_some() || tables.contains(name) {
                    continue;
                }
                let known = def
                    .tables
                    .iter()
                    .map(|t| t.name.as_str())
                    .chain(tables.iter().map(String::as_str));
                let hint = did_you_mean(name, known)
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| {
                        Some(
                            "declare it under `tables:` in this file or in a table library file"
                                .into(),
                        )
                    });
                problems.push(problem(
                    def,
                    *span,
                    codes::UNKNOWN_TABLE,
                    format!("unknown decision table `{name}`"),
                    hint,
                ));
            }
            Reference::Process { name, span } => {
                if name.is_empty()
                    || catalog.processes.is_empty()
                    || catalog.processes.contains(name)
                {
                    continue;
                }
                let hint = did_you_mean(name, catalog.processes.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"));
                problems.push(problem(
                    def,
                    *span,
                    codes::UNKNOWN_PROCESS,
                    format!("unknown process `{name}`"),
                    hint,
                ));
            }
            Reference::Template { name, span } => {
                let Some(templates) = &catalog.templates else {
                    continue;
                };
                if name.is_empty() || templates.contains(name) {
                    continue;
                }
                let hint = did_you_mean(name, templates.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| {
                        Some(format!(
                            "add templates/{name}/subject.hbs, body.html.hbs and body.txt.hbs to the process folder"
                        ))
                    });
                problems.push(problem(
                    def,
                    *span,
                    codes::UNKNOWN_TEMPLATE,
                    format!("unknown e-mail template `{name}`"),
                    hint,
                ));
            }
            Reference::Data { .. } => {}
        }
    }
    problems
}

/// The steps a path can move to from `step`, with the reference that says so.
fn successors(step: &Step) -> Vec<&StepRef> {
    let mut out = Vec::new();
    match &step.next {
        Next::End => {}
        Next::Goto(target) => out.push(target),
        Next::Choose(choice) => {
            out.extend(choice.branches.iter().map(|b| &b.target));
            out.extend(choice.otherwise.iter());
        }
    }
    match &step.kind {
        StepKind::Decide(choice) | StepKind::Inclusive(choice) => {
            out.extend(choice.branches.iter().map(|b| &b.target));
            out.extend(choice.otherwise.iter());
        }
        StepKind::Parallel { branches } => out.extend(branches.iter()),
        StepKind::Race { events } => out.extend(events.iter().map(|e| &e.target)),
        _ => {}
    }
    out.extend(step.boundary.iter().map(|b| &b.target));
    out
}

/// Whether a path that arrives at `step` can finish there: an explicit `end`, or a step with no
/// way onward (an implicit end). Gateways name their targets, so they never end a path.
fn ends_path(step: &Step) -> bool {
    match &step.kind {
        StepKind::End(_) => true,
        StepKind::Decide(_)
        | StepKind::Inclusive(_)
        | StepKind::Parallel { .. }
        | StepKind::Race { .. } => false,
        _ => matches!(step.next, Next::End),
    }
}

fn resolved(def: &Definition, id: StepId) -> bool {
    (id as usize) < def.steps.len()
}

/// The graph checks: jumps across sub-process borders, choices without a default, unreachable
/// steps, and steps from which no end can be reached.
pub fn graph(def: &Definition) -> Vec<Problem> {
    let mut problems = Vec::new();

    // Jumps must stay in their container: a sub-process is left through its end, and entered
    // through its own start.
    let check_border = |problems: &mut Vec<Problem>, from: Option<StepId>, target: &StepRef| {
        if !resolved(def, target.id) {
            return;
        }
        let to = def.step(target.id).parent;
        if to == from {
            return;
        }
        let inside = |mut p: Option<StepId>, container: StepId| {
            while let Some(id) = p {
                if id == container {
                    return true;
                }
                p = if resolved(def, id) {
                    def.step(id).parent
                } else {
                    None
                };
            }
            false
        };
        let leaves = match from {
            Some(container) => !inside(to, container),
            None => false,
        };
        if leaves {
            problems.push(problem(
                def,
                target.span,
                codes::LEAVES_SUBPROCESS,
                format!(
                    "`{}` is outside this sub-process: a path cannot jump out of it",
                    target.name
                ),
                Some(
                    "end the path inside the sub-process and `goto` from the sub-process step"
                        .into(),
                ),
            ));
        } else {
            let sub = to.map(|id| def.step(id).name.clone()).unwrap_or_default();
            problems.push(problem(
                def,
                target.span,
                codes::ENTERS_SUBPROCESS,
                format!(
                    "`{}` is inside sub-process `{sub}`: a path cannot jump into it",
                    target.name
                ),
                Some(format!(
                    "`goto: {sub}` and let the sub-process's `start` choose its first step"
                )),
            ));
        }
    };
    for start in &def.starts {
        check_border(&mut problems, None, &start.target);
    }
    for step in &def.steps {
        for target in successors(step) {
            check_border(&mut problems, step.parent, target);
        }
        if let StepKind::Subprocess { start } = &step.kind {
            check_border(&mut problems, Some(step.id), start);
        }
    }

    // Exclusive choices need a default: when every condition is false the instance is stuck.
    for step in &def.steps {
        let choices = match (&step.kind, &step.next) {
            (StepKind::Decide(c), _) => vec![(c, "`decide`")],
            (StepKind::Inclusive(c), _) => vec![(c, "`branch`")],
            (_, Next::Choose(c)) => vec![(c, "`then`")],
            _ => vec![],
        };
        for (choice, what) in choices {
            if choice.otherwise.is_none() {
                let example = choice
                    .branches
                    .first()
                    .map(|b| b.target.name.as_str())
                    .unwrap_or("step");
                problems.push(problem(
                    def,
                    choice.span,
                    codes::NO_OTHERWISE,
                    format!("{what} in step `{}` has no `otherwise`: when no condition is true the instance gets stuck", step.name),
                    Some(format!("add `- otherwise: <step>` as the last entry, for example `- otherwise: {example}`")),
                ));
            }
        }
    }

    // An unresolved reference (already reported) breaks the graph: what it would make
    // unreachable or endless is noise until it is fixed.
    let broken = def
        .starts
        .iter()
        .map(|s| &s.target)
        .chain(def.steps.iter().flat_map(|s| {
            let mut refs = successors(s);
            if let StepKind::Subprocess { start } = &s.kind {
                refs.push(start);
            }
            refs
        }));
    if broken.into_iter().any(|r| !resolved(def, r.id)) {
        return problems;
    }

    // Reachability from the starts, following every kind of edge and into sub-processes.
    let n = def.steps.len();
    let mut reached = vec![false; n];
    let mut queue: Vec<StepId> = def
        .starts
        .iter()
        .map(|s| s.target.id)
        .filter(|&id| resolved(def, id))
        .collect();
    while let Some(id) = queue.pop() {
        if std::mem::replace(&mut reached[id as usize], true) {
            continue;
        }
        let step = def.step(id);
        let mut next: Vec<StepId> = successors(step).iter().map(|r| r.id).collect();
        if let StepKind::Subprocess { start } = &step.kind {
            next.push(start.id);
        }
        queue.extend(
            next.into_iter()
                .filter(|&t| resolved(def, t) && !reached[t as usize]),
        );
    }
    for step in &def.steps {
        let parent_reached = step
            .parent
            .is_none_or(|p| resolved(def, p) && reached[p as usize]);
        if !reached[step.id as usize]
            && parent_reached
            && def.index.get(&step.name) == Some(&step.id)
        {
            problems.push(problem(
                def,
                step.span,
                codes::UNREACHABLE,
                format!("step `{}` is never reached", step.name),
                Some(format!(
                    "add `goto: {}` to a step that should lead here, or remove it",
                    step.name
                )),
            ));
        }
    }

    // Every reached step must be able to reach an end of its own container.
    let mut can_end = vec![false; n];
    let mut changed = true;
    while changed {
        changed = false;
        for step in &def.steps {
            if can_end[step.id as usize] {
                continue;
            }
            let ok = ends_path(step)
                // An unresolved target is already reported; counting it as an exit avoids a
                // second, confusing problem about the same typo.
                || successors(step).iter().any(|r| !resolved(def, r.id) || can_end[r.id as usize]);
            if ok {
                can_end[step.id as usize] = true;
                changed = true;
            }
        }
    }
    // Reported once per container, at the first stuck step, naming the others.
    let mut stuck: BTreeMap<Option<StepId>, Vec<&Step>> = BTreeMap::new();
    for step in &def.steps {
        if reached[step.id as usize] && !can_end[step.id as usize] {
            stuck.entry(step.parent).or_default().push(step);
        }
    }
    for steps in stuck.values() {
        let first = steps[0];
        let names = list_words(steps.iter().map(|s| s.name.as_str()));
        problems.push(problem(
            def,
            first.span,
            codes::NEVER_ENDS,
            format!("the flow can never end from step `{}`: {names} loop without a way out", first.name),
            Some("give the loop an exit: a `then` or `decide` branch, or an `otherwise`, that leads to an end".into()),
        ));
    }

    // A `join: all` waits for a path on every incoming flow. Flows that do not all descend from
    // a parallel fork (an exclusive choice sends one path only) leave it waiting for ever.
    let mut predecessors: Vec<Vec<StepId>> = vec![Vec::new(); def.steps.len()];
    for step in &def.steps {
        for target in successors(step) {
            if resolved(def, target.id) {
                predecessors[target.id as usize].push(step.id);
            }
        }
    }
    for join in &def.steps {
        if !matches!(join.kind, StepKind::Join { inclusive: false }) {
            continue;
        }
        let incoming = &predecessors[join.id as usize];
        if incoming.len() < 2 {
            continue;
        }
        // Walk back from each incoming flow; reaching the beginning of the container without
        // meeting a `parallel:` step means that path can arrive alone.
        for &from in incoming {
            let mut seen = vec![false; def.steps.len()];
            let mut stack = vec![from];
            let mut alone = false;
            while let Some(id) = stack.pop() {
                if std::mem::replace(&mut seen[id as usize], true) {
                    continue;
                }
                let step = def.step(id);
                if matches!(step.kind, StepKind::Parallel { .. }) {
                    continue;
                }
                let before: Vec<StepId> = predecessors[id as usize]
                    .iter()
                    .copied()
                    .filter(|p| *p != join.id)
                    .collect();
                if before.is_empty() {
                    alone = true;
                    break;
                }
                stack.extend(before);
            }
            if alone {
                problems.push(problem(
                    def,
                    join.span,
                    codes::JOIN_NEVER_COMPLETES,
                    format!(
                        "`join: all` in step `{}` waits for all {} incoming paths, but the one from `{}` does not come from a `parallel:` step, so the others may never arrive",
                        join.name,
                        incoming.len(),
                        def.step(from).name
                    ),
                    Some("use `join: any` to wait only for the paths that were started, or start them with `parallel:`".into()),
                ));
                break;
            }
        }
    }
    problems
}

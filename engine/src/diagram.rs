//! Draws a process definition as a BPMN-style diagram: `svg` for web pages and
//! `ciclo graph`, `dot` for `ciclo graph --format dot` when someone wants Graphviz's own layout.
//!
//! The drawing uses BPMN's shapes (thin start circles, thick end circles, rounded tasks with a
//! type marker, diamonds for gateways, double circles for catch and boundary events) so that an
//! analyst who has seen BPMN reads it at once. Two things the YAML says implicitly are drawn
//! explicitly, as BPMN would: a step's `then:` is an exclusive gateway right after the step, and
//! a step without `goto` ends in a small end circle.
//!
//! The layout is layered, left to right, and written here because no crate draws BPMN shapes
//! (see DEPENDENCIES.md): a depth-first search sets the flows that close loops aside, every
//! node gets its longest-path layer, flows that skip layers get invisible bend points, a
//! barycenter pass orders each layer to reduce crossings, and the positions within a layer are
//! the least-squares fit to their neighbours under the spacing constraints (pool adjacent
//! violators). Flows are orthogonal; loops go around the drawing in lanes of their own.
//! Embedded sub-processes are drawn expanded: a large rounded rectangle holding their own
//! steps, laid out by the same code, because a collapsed box with its inside drawn elsewhere
//! makes the reader match the two by name.
//!
//! Everything here is pure and deterministic: the same definition gives the same bytes, which
//! lets tests and caches compare drawings. It never panics on a definition, even one that was
//! built by hand with dangling references.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use crate::model::{
    Boundary, BoundaryEvent, CatchEvent, Choice, Definition, EndKind, Next, StartTrigger, Step,
    StepKind, StepRef,
};

/// Where an instance is, to draw over its process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Highlight {
    /// Names of the steps where the instance is now.
    pub current: Vec<String>,
    /// Names of the steps the instance has already passed.
    pub done: Vec<String>,
}

/// A standalone SVG drawing of `def`, with the steps of `highlight` marked: `current` ones with
/// a thick coloured outline (CSS class `current`), `done` ones with a lighter fill (`done`).
/// Every step's group has `id="step-<name>"` and a `<title>`.
pub fn svg(def: &Definition, highlight: Option<&Highlight>) -> String {
    let mut graph = Graph::build(def);
    graph.layout();
    graph.render_svg(def, highlight)
}

/// Graphviz DOT text of the same graph as `svg` draws (same node ids), for people who prefer
/// Graphviz's layout or want to post-process the graph.
pub fn dot(def: &Definition) -> String {
    Graph::build(def).render_dot(def)
}

// Sizes, in SVG user units (pixels at 100%).
const FONT: f64 = 12.0;
const SMALL_FONT: f64 = 11.0;
const LINE: f64 = 15.0;
const SMALL_LINE: f64 = 13.0;
const TASK_W: f64 = 140.0;
const TASK_MIN_H: f64 = 64.0;
const EVENT_R: f64 = 18.0;
const IMPLICIT_END_R: f64 = 11.0;
const GATEWAY_HALF: f64 = 22.0;
const BOUNDARY_R: f64 = 12.0;
const BOUNDARY_STEP: f64 = 30.0;
/// Vertical room under a task per boundary event: its flow's first run and label.
const BOUNDARY_RUN: f64 = 17.0;
const NODE_GAP: f64 = 34.0;
const LAYER_GAP: f64 = 54.0;
const TRACK_GAP: f64 = 12.0;
const LANE_GAP: f64 = 12.0;
const MARGIN: f64 = 20.0;
const HEADER: f64 = 34.0;
const CONTAINER_PAD: f64 = 18.0;
const CONTAINER_TOP: f64 = 30.0;
const MARKER_ROOM: f64 = 14.0;
const EDGE_LABEL_W: f64 = 160.0;

const INK: &str = "#343a40";
const FLOW_INK: &str = "#495057";
const DETAIL_INK: &str = "#6c757d";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Glyph {
    Timer,
    Message,
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TaskMarker {
    User,
    Service,
    Send,
    Receive,
    Script,
    Rules,
    Call,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GatewayMarker {
    Exclusive,
    Parallel,
    Inclusive,
    EventBased,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndMark {
    Plain,
    Error,
    Terminate,
    /// The small end circle after a step without `goto`.
    Implicit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Start(Option<Glyph>),
    /// `multi`: `Some(parallel)` for a multi-instance step.
    Task {
        marker: TaskMarker,
        multi: Option<bool>,
    },
    Gateway(GatewayMarker),
    /// Intermediate catch event: a `wait:` step or an arm of a `race:`.
    Catch(Glyph),
    End(EndMark),
    /// An embedded sub-process, drawn expanded around its steps.
    Container {
        multi: Option<bool>,
    },
    /// A bend point of a flow that skips layers; never drawn.
    Dummy,
}

/// A boundary event sitting on the lower edge of its step.
#[derive(Clone, Debug)]
struct BoundaryMark {
    id: String,
    title: String,
    glyph: Glyph,
    interrupting: bool,
    x: f64,
    y: f64,
}

#[derive(Clone, Debug)]
struct Node {
    /// The SVG id: `step-<name>` for steps, `start-<n>`, `then-<step>`, `end-<step>`, ...
    id: String,
    /// The step this node draws (index in `Definition::steps`).
    step: Option<usize>,
    /// For the gateway of a step's `then:`, that step: the gateway was passed once the step
    /// was done and left.
    after: Option<usize>,
    /// CSS classes saying what it is, such as `task user` or `gateway exclusive`.
    class: &'static str,
    shape: Shape,
    /// The embedded sub-process the node sits in (index of its step), `None` at the top.
    scope: Option<usize>,
    title: String,
    /// Main text: inside tasks, under events, above gateways.
    text: Vec<String>,
    /// Secondary text in grey: a task's title or operation, an event's timer or message.
    detail: Vec<String>,
    w: f64,
    h: f64,
    /// Room taken by text and boundary flows above and below the shape.
    above: f64,
    below: f64,
    /// Width of the text drawn outside the shape (centered under events).
    text_w: f64,
    /// Center of the shape.
    x: f64,
    y: f64,
    layer: usize,
    boundaries: Vec<BoundaryMark>,
}

impl Node {
    fn new(id: String, class: &'static str, shape: Shape, scope: Option<usize>) -> Node {
        Node {
            id,
            step: None,
            after: None,
            class,
            shape,
            scope,
            title: String::new(),
            text: Vec::new(),
            detail: Vec::new(),
            w: 0.0,
            h: 0.0,
            above: 0.0,
            below: 0.0,
            text_w: 0.0,
            x: 0.0,
            y: 0.0,
            layer: 0,
            boundaries: Vec::new(),
        }
    }

    fn left(&self) -> f64 {
        self.x - self.w / 2.0
    }
    fn right(&self) -> f64 {
        self.x + self.w / 2.0
    }
    fn top(&self) -> f64 {
        self.y - self.h / 2.0
    }
    fn bottom(&self) -> f64 {
        self.y + self.h / 2.0
    }

    /// The box the node and its outside text cover.
    fn extent(&self) -> (f64, f64, f64, f64) {
        let half = (self.w.max(self.text_w)) / 2.0;
        let mut x0 = self.x - half;
        if matches!(self.shape, Shape::Gateway(_)) && !self.text.is_empty() {
            x0 = x0.min(self.x - 8.0 - self.text_w);
        }
        (
            x0,
            self.top() - self.above,
            self.x + half,
            self.bottom() + self.below,
        )
    }

    /// Sets the size from the shape and the text (containers are sized by their layout).
    fn size(&mut self) {
        let text_w = |node: &Node| {
            let main = node.text.iter().map(|t| text_width(t, FONT));
            let detail = node.detail.iter().map(|t| text_width(t, SMALL_FONT));
            main.chain(detail).fold(0.0, f64::max)
        };
        match self.shape {
            Shape::Task { marker, multi } => {
                self.w = TASK_W;
                let markers = multi.is_some() || marker == TaskMarker::Call;
                let block = LINE * self.text.len() as f64 + SMALL_LINE * self.detail.len() as f64;
                let room = if markers { MARKER_ROOM } else { 0.0 };
                self.h = TASK_MIN_H.max(26.0 + block + 12.0 + room);
            }
            Shape::Start(_)
            | Shape::Catch(_)
            | Shape::End(EndMark::Plain)
            | Shape::End(EndMark::Error)
            | Shape::End(EndMark::Terminate) => {
                self.w = 2.0 * EVENT_R;
                self.h = 2.0 * EVENT_R;
                let lines = LINE * self.text.len() as f64 + SMALL_LINE * self.detail.len() as f64;
                self.below = if lines > 0.0 { lines + 4.0 } else { 0.0 };
                self.text_w = text_w(self);
            }
            Shape::End(EndMark::Implicit) => {
                self.w = 2.0 * IMPLICIT_END_R;
                self.h = 2.0 * IMPLICIT_END_R;
            }
            Shape::Gateway(_) => {
                self.w = 2.0 * GATEWAY_HALF;
                self.h = 2.0 * GATEWAY_HALF;
                self.above = if self.text.is_empty() {
                    0.0
                } else {
                    LINE * self.text.len() as f64 + 6.0
                };
                self.text_w = text_w(self);
            }
            Shape::Container { .. } | Shape::Dummy => {}
        }
        if !self.boundaries.is_empty() {
            self.below = BOUNDARY_R + 6.0 + BOUNDARY_RUN * self.boundaries.len() as f64;
        }
    }
}

#[derive(Clone, Debug)]
struct Edge {
    from: usize,
    to: usize,
    /// The label, wrapped: a branch's condition, `otherwise`, a boundary event's trigger.
    label: Vec<String>,
    /// `otherwise`: drawn with BPMN's default-flow slash.
    default: bool,
    /// The boundary event of `from` this flow leaves from.
    boundary: Option<usize>,
    scope: Option<usize>,
    /// Both ends in the same scope (always, for a definition that passed validation).
    local: bool,
    /// Closes a loop: drawn around the drawing instead of through it.
    back: bool,
    /// `from`, the bend points of the layers it skips, `to`.
    chain: Vec<usize>,
    points: Vec<(f64, f64)>,
    /// Bottom-left corner of the label.
    label_at: (f64, f64),
}

impl Edge {
    fn label_w(&self) -> f64 {
        self.label
            .iter()
            .map(|l| text_width(l, SMALL_FONT))
            .fold(0.0, f64::max)
    }
}

/// How one hop of a flow (between adjacent layers) is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hop {
    Straight,
    /// From the top or bottom corner of a diamond straight to the target's height.
    Vertex,
    /// Right, then up or down in the channel between the layers, then right.
    Jog,
    /// Down from a boundary event to the target's height, then right.
    BoundaryDown,
    /// Down from a boundary event a little, right to the channel, up or down, right.
    BoundaryJog,
}

/// Who needs a vertical track in a channel between two layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TrackKey {
    /// Jogs leaving the same node share one track: they fan out from one point.
    Jog(usize),
    Boundary(usize, usize),
    BackOut(usize),
    BackIn(usize),
}

struct Graph<'a> {
    def: &'a Definition,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    /// Node of each step, by index in `Definition::steps`.
    step_node: Vec<Option<usize>>,
    width: f64,
    height: f64,
}

/// The sub-process a step is drawn in: its `parent`, when that is a sub-process step of this
/// definition and the parent chain does not loop back to the step (a hand-built definition
/// could say so; such a step is drawn at the top level instead of recursing forever).
fn container_of(def: &Definition, index: usize) -> Option<usize> {
    let parent = def.steps[index].parent? as usize;
    let step = def.steps.get(parent)?;
    if parent == index || !matches!(step.kind, StepKind::Subprocess { .. }) {
        return None;
    }
    let mut up = step.parent;
    for _ in 0..def.steps.len() {
        match up {
            Some(p) if p as usize == index => return None,
            Some(p) => up = def.steps.get(p as usize).and_then(|s| s.parent),
            None => break,
        }
    }
    Some(parent)
}

fn catch_text(event: &CatchEvent) -> (Glyph, String) {
    match event {
        CatchEvent::Timer(schedule) => (Glyph::Timer, schedule_text(schedule.source())),
        CatchEvent::Message(message) => (Glyph::Message, message.name.clone()),
    }
}

/// `every: P1D` is stored as the cycle `R/P1D`; analysts wrote `every`, so show that.
fn schedule_text(source: &str) -> String {
    match source.strip_prefix("R/") {
        Some(rest) => format!("every {rest}"),
        None => source.to_string(),
    }
}

fn boundary_text(boundary: &Boundary) -> (Glyph, String) {
    match &boundary.event {
        BoundaryEvent::Timer(schedule) => (Glyph::Timer, schedule_text(schedule.source())),
        BoundaryEvent::Message(message) => (Glyph::Message, message.name.clone()),
        BoundaryEvent::Error { code: Some(code) } => (Glyph::Error, code.clone()),
        BoundaryEvent::Error { code: None } => (Glyph::Error, "any error".to_string()),
    }
}

/// Whether a step without `goto` ends its path visibly: gateways send their paths on through
/// their own branches, and end events are already ends.
fn ends_path(kind: &StepKind) -> bool {
    !matches!(
        kind,
        StepKind::Decide(_)
            | StepKind::Inclusive(_)
            | StepKind::Parallel { .. }
            | StepKind::Race { .. }
            | StepKind::End(_)
    )
}

fn multi_of(step: &Step) -> Option<bool> {
    step.multi.as_ref().map(|m| m.parallel)
}

/// The node of a step, with its shape, texts and tooltip.
fn step_node(step: &Step, index: usize, scope: Option<usize>) -> Node {
    let name = step.label.clone().unwrap_or_else(|| step.name.clone());
    // The tooltip names the step as the YAML does, with its label when it has one.
    let who = match &step.label {
        Some(label) => format!("{}: {label}", step.name),
        None => step.name.clone(),
    };
    let task = |marker, class, what: &str, detail: String| {
        let mut node = Node::new(
            format!("step-{}", step.name),
            class,
            Shape::Task {
                marker,
                multi: multi_of(step),
            },
            scope,
        );
        node.text = wrap(&name, TASK_W - 20.0, FONT * 1.08, 2);
        node.detail = wrap(&detail, TASK_W - 16.0, SMALL_FONT, 2);
        node.title = if detail.is_empty() {
            format!("{who} ({what})")
        } else {
            format!("{who} ({what}): {detail}")
        };
        node
    };
    let event = |shape, class, what: &str, detail: String| {
        let mut node = Node::new(format!("step-{}", step.name), class, shape, scope);
        node.text = wrap(&name, 120.0, FONT, 2);
        node.detail = wrap(&detail, 120.0, SMALL_FONT, 2);
        node.title = if detail.is_empty() {
            format!("{who} ({what})")
        } else {
            format!("{who} ({what}): {detail}")
        };
        node
    };
    let gateway = |marker, class, what: &str| {
        let mut node = Node::new(
            format!("step-{}", step.name),
            class,
            Shape::Gateway(marker),
            scope,
        );
        node.text = wrap(&name, 130.0, FONT, 2);
        node.title = format!("{who} ({what})");
        node
    };
    let mut node = match &step.kind {
        StepKind::Script { assignments } => {
            let targets: Vec<&str> = assignments.iter().map(|a| a.target.as_str()).collect();
            task(
                TaskMarker::Script,
                "task script",
                "script task",
                format!("set {}", targets.join(", ")),
            )
        }
        StepKind::Service {
            connector,
            operation,
            ..
        } => task(
            TaskMarker::Service,
            "task service",
            "service task",
            format!("{connector}.{operation}"),
        ),
        StepKind::Send { template, .. } => {
            task(TaskMarker::Send, "task send", "send task", template.clone())
        }
        StepKind::User(user) => task(
            TaskMarker::User,
            "task user",
            "user task",
            user.title.source().to_string(),
        ),
        StepKind::Rules { table, result } => task(
            TaskMarker::Rules,
            "task rules",
            "business rule task",
            format!("{table} \u{2192} {result}"),
        ),
        StepKind::Receive { message } => task(
            TaskMarker::Receive,
            "task receive",
            "receive task",
            message.name.clone(),
        ),
        StepKind::CallProcess { process, .. } => task(
            TaskMarker::Call,
            "task call",
            "call activity",
            format!("process {process}"),
        ),
        StepKind::Wait { event: catch } => {
            let (glyph, detail) = catch_text(catch);
            event(
                Shape::Catch(glyph),
                "event catch",
                "intermediate catch event",
                detail,
            )
        }
        StepKind::End(EndKind::None) => event(
            Shape::End(EndMark::Plain),
            "event end",
            "end event",
            String::new(),
        ),
        StepKind::End(EndKind::Error { code, .. }) => event(
            Shape::End(EndMark::Error),
            "event end error",
            "error end event",
            code.clone(),
        ),
        StepKind::End(EndKind::Terminate) => event(
            Shape::End(EndMark::Terminate),
            "event end terminate",
            "terminate end event",
            String::new(),
        ),
        StepKind::Decide(_) => gateway(
            GatewayMarker::Exclusive,
            "gateway exclusive",
            "exclusive gateway",
        ),
        StepKind::Parallel { .. } => gateway(
            GatewayMarker::Parallel,
            "gateway parallel",
            "parallel gateway",
        ),
        StepKind::Inclusive(_) => gateway(
            GatewayMarker::Inclusive,
            "gateway inclusive",
            "inclusive gateway",
        ),
        StepKind::Join { inclusive: true } => gateway(
            GatewayMarker::Inclusive,
            "gateway inclusive join",
            "inclusive join",
        ),
        StepKind::Join { inclusive: false } => gateway(
            GatewayMarker::Parallel,
            "gateway parallel join",
            "parallel join",
        ),
        StepKind::Race { .. } => gateway(
            GatewayMarker::EventBased,
            "gateway event-based",
            "event-based gateway",
        ),
        StepKind::Subprocess { .. } => {
            let mut node = Node::new(
                format!("step-{}", step.name),
                "subprocess",
                Shape::Container {
                    multi: multi_of(step),
                },
                scope,
            );
            node.text = vec![name.clone()];
            node.title = format!("{who} (sub-process)");
            node
        }
    };
    if let Some(multi) = &step.multi {
        let how = if multi.parallel {
            "in parallel"
        } else {
            "one after the other"
        };
        let _ = write!(
            node.title,
            "; once per item of {} {how}",
            multi.items.source()
        );
    }
    node.step = Some(index);
    for (k, boundary) in step.boundary.iter().enumerate() {
        let (glyph, text) = boundary_text(boundary);
        let kind = if boundary.interrupting {
            "interrupting"
        } else {
            "non-interrupting"
        };
        node.boundaries.push(BoundaryMark {
            id: format!("boundary-{}-{k}", step.name),
            title: format!("{text} ({kind}) \u{2192} {}", boundary.target.name),
            glyph,
            interrupting: boundary.interrupting,
            x: 0.0,
            y: 0.0,
        });
    }
    node.size();
    node
}

impl<'a> Graph<'a> {
    fn build(def: &'a Definition) -> Graph<'a> {
        let count = def.steps.len();
        let mut graph = Graph {
            def,
            nodes: Vec::new(),
            edges: Vec::new(),
            step_node: vec![None; count],
            width: 0.0,
            height: 0.0,
        };
        let mut start_nodes = Vec::new();
        for (i, start) in def.starts.iter().enumerate() {
            let (glyph, detail, what) = match &start.trigger {
                StartTrigger::None => (None, String::new(), "start event".to_string()),
                StartTrigger::Message { name } => (
                    Some(Glyph::Message),
                    name.clone(),
                    format!("message start event: {name}"),
                ),
                StartTrigger::Timer { schedule } => (
                    Some(Glyph::Timer),
                    schedule_text(schedule.source()),
                    format!("timer start event: {}", schedule.source()),
                ),
            };
            let mut node = Node::new(
                format!("start-{i}"),
                "event start",
                Shape::Start(glyph),
                None,
            );
            node.detail = wrap(&detail, 120.0, SMALL_FONT, 2);
            node.title = what;
            node.size();
            start_nodes.push(graph.push(node));
        }
        for (i, step) in def.steps.iter().enumerate() {
            let node = step_node(step, i, container_of(def, i));
            graph.step_node[i] = Some(graph.push(node));
        }
        for (start, &node) in def.starts.iter().zip(&start_nodes) {
            if let Some(target) = graph.target(&start.target) {
                graph.edge(node, target, None, false, None);
            }
        }
        for (i, step) in def.steps.iter().enumerate() {
            let Some(me) = graph.step_node[i] else {
                continue;
            };
            let scope = graph.nodes[me].scope;
            match &step.kind {
                StepKind::Decide(choice) | StepKind::Inclusive(choice) => {
                    graph.choice_edges(me, choice);
                }
                StepKind::Parallel { branches } => {
                    for branch in branches {
                        if let Some(target) = graph.target(branch) {
                            graph.edge(me, target, None, false, None);
                        }
                    }
                }
                StepKind::Race { events } => {
                    // BPMN draws an event-based gateway followed by the catch events it waits
                    // for, each leading on to its own path.
                    for (k, arm) in events.iter().enumerate() {
                        let (glyph, text) = catch_text(&arm.event);
                        let mut node = Node::new(
                            format!("race-{}-{k}", step.name),
                            "event catch",
                            Shape::Catch(glyph),
                            scope,
                        );
                        node.detail = wrap(&text, 120.0, SMALL_FONT, 2);
                        node.title = format!("{text} (event of {})", step.name);
                        node.size();
                        let arm_node = graph.push(node);
                        graph.edge(me, arm_node, None, false, None);
                        if let Some(target) = graph.target(&arm.target) {
                            graph.edge(arm_node, target, None, false, None);
                        }
                    }
                }
                StepKind::Subprocess { start } => {
                    let mut node = Node::new(
                        format!("start-{}", step.name),
                        "event start",
                        Shape::Start(None),
                        Some(i),
                    );
                    node.title = format!("start of {}", step.name);
                    node.size();
                    let inner = graph.push(node);
                    if let Some(target) = graph.target(start) {
                        graph.edge(inner, target, None, false, None);
                    }
                }
                _ => {}
            }
            match &step.next {
                Next::End => {
                    if ends_path(&step.kind) {
                        let mut node = Node::new(
                            format!("end-{}", step.name),
                            "event end implicit",
                            Shape::End(EndMark::Implicit),
                            scope,
                        );
                        node.title = format!("the path ends after {}", step.name);
                        node.size();
                        let end = graph.push(node);
                        graph.edge(me, end, None, false, None);
                    }
                }
                Next::Goto(target) => {
                    if let Some(target) = graph.target(target) {
                        graph.edge(me, target, None, false, None);
                    }
                }
                Next::Choose(choice) => {
                    let mut node = Node::new(
                        format!("then-{}", step.name),
                        "gateway exclusive then",
                        Shape::Gateway(GatewayMarker::Exclusive),
                        scope,
                    );
                    node.title = format!("choice after {}", step.name);
                    node.after = Some(i);
                    node.size();
                    let gateway = graph.push(node);
                    graph.edge(me, gateway, None, false, None);
                    graph.choice_edges(gateway, choice);
                }
            }
            for (k, boundary) in step.boundary.iter().enumerate() {
                if let Some(target) = graph.target(&boundary.target) {
                    let (_, text) = boundary_text(boundary);
                    graph.edge(me, target, Some(&text), false, Some(k));
                }
            }
        }
        graph
    }

    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The node a reference points at; `None` for a dangling reference.
    fn target(&self, target: &StepRef) -> Option<usize> {
        self.step_node.get(target.id as usize).copied().flatten()
    }

    fn edge(
        &mut self,
        from: usize,
        to: usize,
        label: Option<&str>,
        default: bool,
        boundary: Option<usize>,
    ) {
        let scope = self.nodes[from].scope;
        self.edges.push(Edge {
            from,
            to,
            label: label
                .map(|l| wrap(l, EDGE_LABEL_W, SMALL_FONT, 3))
                .unwrap_or_default(),
            default,
            boundary,
            scope,
            local: scope == self.nodes[to].scope,
            back: false,
            chain: vec![from, to],
            points: Vec::new(),
            label_at: (0.0, 0.0),
        });
    }

    fn choice_edges(&mut self, from: usize, choice: &Choice) {
        for branch in &choice.branches {
            if let Some(target) = self.target(&branch.target) {
                self.edge(from, target, Some(branch.when.source()), false, None);
            }
        }
        if let Some(otherwise) = &choice.otherwise
            && let Some(target) = self.target(otherwise)
        {
            self.edge(from, target, Some("otherwise"), true, None);
        }
    }

    // ----- layout -----

    fn layout(&mut self) {
        let (w, h) = self.layout_scope(None, 0);
        self.place(None, MARGIN, MARGIN + HEADER, 0);
        // Flows between scopes only exist in hand-built definitions; a straight line is enough.
        for e in 0..self.edges.len() {
            if !self.edges[e].local {
                let (from, to) = (
                    &self.nodes[self.edges[e].from],
                    &self.nodes[self.edges[e].to],
                );
                let start = (from.right(), from.y);
                let end = (to.left(), to.y);
                self.edges[e].points = vec![start, end];
                self.edges[e].label_at = ((start.0 + end.0) / 2.0, (start.1 + end.1) / 2.0 - 4.0);
            }
        }
        let title_w = text_width(&self.heading(), 14.0);
        self.width = (w + 2.0 * MARGIN).max(title_w + 2.0 * MARGIN);
        self.height = h + 2.0 * MARGIN + HEADER;
    }

    fn heading(&self) -> String {
        match &self.def.name {
            Some(name) => format!("{name} ({})", self.def.id),
            None => self.def.id.clone(),
        }
    }

    /// Lays out the nodes of one scope relative to its own top-left corner and returns its
    /// size. Sub-processes in it are laid out first, since their size is their content's.
    fn layout_scope(&mut self, scope: Option<usize>, depth: usize) -> (f64, f64) {
        let containers: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| {
                self.nodes[n].scope == scope
                    && matches!(self.nodes[n].shape, Shape::Container { .. })
            })
            .collect();
        for c in containers {
            let inner = match self.nodes[c].step {
                // The scope chain cannot loop (see `container_of`), so depth is bounded by the
                // number of steps; the check keeps a broken invariant from recursing forever.
                Some(step) if depth <= self.def.steps.len() => {
                    self.layout_scope(Some(step), depth + 1)
                }
                _ => (0.0, 0.0),
            };
            let node = &mut self.nodes[c];
            let multi = matches!(node.shape, Shape::Container { multi: Some(_) });
            let title_w = node
                .text
                .iter()
                .map(|t| text_width(t, FONT * 1.08))
                .fold(0.0, f64::max);
            node.w = (inner.0 + 2.0 * CONTAINER_PAD)
                .max(title_w + 2.0 * CONTAINER_PAD)
                .max(TASK_W);
            node.h =
                (inner.1 + CONTAINER_TOP + CONTAINER_PAD + if multi { MARKER_ROOM } else { 0.0 })
                    .max(TASK_MIN_H);
            if !node.boundaries.is_empty() {
                node.below = BOUNDARY_R + 6.0 + BOUNDARY_RUN * node.boundaries.len() as f64;
            }
        }

        let members: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].scope == scope && self.nodes[n].shape != Shape::Dummy)
            .collect();
        if members.is_empty() {
            return (0.0, 0.0);
        }
        let edges: Vec<usize> = (0..self.edges.len())
            .filter(|&e| self.edges[e].scope == scope && self.edges[e].local)
            .collect();

        self.mark_back_edges(&members, &edges);
        let layer_count = self.assign_layers(&members, &edges);
        self.insert_bend_points(scope, &edges);
        let mut layers = self.initial_order(&members, &edges, layer_count);
        self.reduce_crossings(&mut layers, &edges);
        self.assign_heights(&layers, &edges);
        self.route(&layers, &edges);
        self.normalize(scope)
    }

    /// Marks the flows that close a loop, found by a depth-first search from the starts that
    /// follows flows in the order they are written, so the loop is cut where the analyst wrote
    /// the jump back (`revise` going back to `check`), not somewhere in the middle.
    fn mark_back_edges(&mut self, members: &[usize], edges: &[usize]) {
        let mut out: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &e in edges {
            out.entry(self.edges[e].from).or_default().push(e);
        }
        let mut roots: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&n| matches!(self.nodes[n].shape, Shape::Start(_)))
            .collect();
        roots.extend(
            members
                .iter()
                .copied()
                .filter(|&n| !matches!(self.nodes[n].shape, Shape::Start(_))),
        );
        // 0: not seen, 1: on the stack, 2: done.
        let mut state: BTreeMap<usize, u8> = BTreeMap::new();
        let empty = Vec::new();
        for root in roots {
            if state.get(&root).copied().unwrap_or(0) != 0 {
                continue;
            }
            state.insert(root, 1);
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                let list = out.get(&node).unwrap_or(&empty);
                if *next < list.len() {
                    let e = list[*next];
                    *next += 1;
                    let to = self.edges[e].to;
                    match state.get(&to).copied().unwrap_or(0) {
                        0 => {
                            state.insert(to, 1);
                            stack.push((to, 0));
                        }
                        1 => self.edges[e].back = true,
                        _ => {}
                    }
                } else {
                    state.insert(node, 2);
                    stack.pop();
                }
            }
        }
    }

    /// Longest-path layering over the forward flows; returns the number of layers.
    fn assign_layers(&mut self, members: &[usize], edges: &[usize]) -> usize {
        let forward: Vec<usize> = edges
            .iter()
            .copied()
            .filter(|&e| !self.edges[e].back)
            .collect();
        let mut indegree: BTreeMap<usize, usize> = members.iter().map(|&n| (n, 0)).collect();
        let mut out: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &e in &forward {
            *indegree.entry(self.edges[e].to).or_default() += 1;
            out.entry(self.edges[e].from)
                .or_default()
                .push(self.edges[e].to);
        }
        let mut layer: BTreeMap<usize, usize> = members.iter().map(|&n| (n, 0)).collect();
        let mut queue: VecDeque<usize> = members
            .iter()
            .copied()
            .filter(|n| indegree[n] == 0)
            .collect();
        let mut order = Vec::new();
        while let Some(n) = queue.pop_front() {
            order.push(n);
            for &t in out.get(&n).map(Vec::as_slice).unwrap_or(&[]) {
                let candidate = layer[&n] + 1;
                if let Some(l) = layer.get_mut(&t) {
                    *l = (*l).max(candidate);
                }
                if let Some(d) = indegree.get_mut(&t) {
                    *d -= 1;
                    if *d == 0 {
                        queue.push_back(t);
                    }
                }
            }
        }
        // A step nothing leads to (a hand-built definition, or an inner start) sits just before
        // its first successor rather than far left with a long flow.
        for &n in order.iter().rev() {
            if indegree_zero_source(n, &forward, &self.edges)
                && !matches!(self.nodes[n].shape, Shape::Start(_))
            {
                let next = out.get(&n).into_iter().flatten().map(|t| layer[t]).min();
                if let Some(next) = next
                    && next > 0
                {
                    layer.insert(n, next - 1);
                }
            }
        }
        let mut count = 0;
        for (&n, &l) in &layer {
            self.nodes[n].layer = l;
            count = count.max(l + 1);
        }
        count
    }

    /// Gives every forward flow that skips layers a bend point in each layer it crosses, so
    /// that crossing reduction and routing see it and it never cuts through a shape.
    fn insert_bend_points(&mut self, scope: Option<usize>, edges: &[usize]) {
        for &e in edges {
            let (from, to) = (self.edges[e].from, self.edges[e].to);
            let mut chain = vec![from];
            if !self.edges[e].back {
                let (a, b) = (self.nodes[from].layer, self.nodes[to].layer);
                for layer in a + 1..b {
                    let mut dummy = Node::new(String::new(), "", Shape::Dummy, scope);
                    dummy.layer = layer;
                    chain.push(self.push(dummy));
                }
            }
            chain.push(to);
            self.edges[e].chain = chain;
        }
    }

    /// The hops of forward flows: (from, to, edge, whether it leaves from a boundary event).
    fn hops(&self, edges: &[usize]) -> Vec<(usize, usize, usize, bool)> {
        let mut hops = Vec::new();
        for &e in edges {
            let edge = &self.edges[e];
            if edge.back {
                continue;
            }
            for (i, pair) in edge.chain.windows(2).enumerate() {
                hops.push((pair[0], pair[1], e, i == 0 && edge.boundary.is_some()));
            }
        }
        hops
    }

    /// Breadth-first from the starts, so that the first branch of a choice starts on top.
    fn initial_order(
        &self,
        members: &[usize],
        edges: &[usize],
        layer_count: usize,
    ) -> Vec<Vec<usize>> {
        let hops = self.hops(edges);
        let mut out: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(a, b, _, _) in &hops {
            out.entry(a).or_default().push(b);
        }
        let mut seen: BTreeSet<usize> = BTreeSet::new();
        let mut layers = vec![Vec::new(); layer_count];
        let mut roots: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&n| matches!(self.nodes[n].shape, Shape::Start(_)))
            .collect();
        roots.extend(members.iter().copied());
        for root in roots {
            if !seen.insert(root) {
                continue;
            }
            let mut queue = VecDeque::from([root]);
            while let Some(n) = queue.pop_front() {
                if let Some(layer) = layers.get_mut(self.nodes[n].layer) {
                    layer.push(n);
                }
                for &t in out.get(&n).map(Vec::as_slice).unwrap_or(&[]) {
                    if seen.insert(t) {
                        queue.push_back(t);
                    }
                }
            }
        }
        layers
    }

    /// Barycenter sweeps, down and up, keeping the order with the fewest crossings.
    fn reduce_crossings(&self, layers: &mut [Vec<usize>], edges: &[usize]) {
        let hops = self.hops(edges);
        let mut preds: BTreeMap<usize, Vec<(usize, bool)>> = BTreeMap::new();
        let mut succs: BTreeMap<usize, Vec<(usize, bool)>> = BTreeMap::new();
        for &(a, b, _, boundary) in &hops {
            preds.entry(b).or_default().push((a, boundary));
            succs.entry(a).or_default().push((b, boundary));
        }
        let positions = |layers: &[Vec<usize>]| {
            let mut pos: BTreeMap<usize, f64> = BTreeMap::new();
            for layer in layers {
                for (i, &n) in layer.iter().enumerate() {
                    pos.insert(n, i as f64);
                }
            }
            pos
        };
        let crossings = |layers: &[Vec<usize>]| {
            let pos = positions(layers);
            let mut by_layer: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
            for &(a, b, _, boundary) in &hops {
                let bias = if boundary { 0.5 } else { 0.0 };
                by_layer
                    .entry(self.nodes[a].layer)
                    .or_default()
                    .push((pos[&a] + bias, pos[&b]));
            }
            let mut count = 0usize;
            for list in by_layer.values() {
                for i in 0..list.len() {
                    for j in i + 1..list.len() {
                        let (p, q) = (list[i], list[j]);
                        if (p.0 - q.0) * (p.1 - q.1) < 0.0 {
                            count += 1;
                        }
                    }
                }
            }
            count
        };
        let mut best = layers.to_vec();
        let mut best_count = crossings(layers);
        for round in 0..12 {
            let down = round % 2 == 0;
            let order: Vec<usize> = if down {
                (1..layers.len()).collect()
            } else {
                (0..layers.len().saturating_sub(1)).rev().collect()
            };
            for l in order {
                let pos = positions(layers);
                let neighbours = if down { &preds } else { &succs };
                // Boundary flows are exceptions: BPMN hangs them below the normal path. So they
                // do not pull their step or target around, and a step reached only through
                // one goes to the bottom of its layer.
                let key = |n: usize| {
                    let list = neighbours.get(&n).map(Vec::as_slice).unwrap_or(&[]);
                    let normal: Vec<f64> =
                        list.iter().filter(|x| !x.1).map(|x| pos[&x.0]).collect();
                    if !normal.is_empty() {
                        normal.iter().sum::<f64>() / normal.len() as f64
                    } else if down && !list.is_empty() {
                        1000.0 + list.iter().map(|x| pos[&x.0]).sum::<f64>() / list.len() as f64
                    } else {
                        pos[&n]
                    }
                };
                let mut keyed: Vec<(f64, usize)> = layers[l].iter().map(|&n| (key(n), n)).collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
                layers[l] = keyed.into_iter().map(|(_, n)| n).collect();
            }
            let count = crossings(layers);
            if count < best_count {
                best_count = count;
                best = layers.to_vec();
            }
        }
        layers.clone_from_slice(&best);
    }

    /// Vertical room wanted between two neighbours of a layer.
    fn separation(&self, a: usize, b: usize) -> f64 {
        let (na, nb) = (&self.nodes[a], &self.nodes[b]);
        let gap = match (na.shape == Shape::Dummy, nb.shape == Shape::Dummy) {
            (true, true) => 20.0,
            (true, false) | (false, true) => 26.0,
            (false, false) => NODE_GAP,
        };
        na.h / 2.0 + na.below + gap + nb.above + nb.h / 2.0
    }

    /// Heights: each layer is placed as close as the spacing allows to the mean height of its
    /// neighbours in the layer before (forward sweeps) or after (backward sweeps), so straight
    /// runs come out straight and a gateway sits between its branches.
    fn assign_heights(&mut self, layers: &[Vec<usize>], edges: &[usize]) {
        let hops = self.hops(edges);
        let mut preds: BTreeMap<usize, Vec<(usize, bool)>> = BTreeMap::new();
        let mut succs: BTreeMap<usize, Vec<(usize, bool)>> = BTreeMap::new();
        for &(a, b, _, boundary) in &hops {
            preds.entry(b).or_default().push((a, boundary));
            succs.entry(a).or_default().push((b, boundary));
        }
        for layer in layers {
            let mut y = 0.0;
            for (i, &n) in layer.iter().enumerate() {
                if i > 0 {
                    y += self.separation(layer[i - 1], n);
                }
                self.nodes[n].y = y;
            }
            let shift = y / 2.0;
            for &n in layer {
                self.nodes[n].y -= shift;
            }
        }
        // Where a boundary flow would like its target: under the step, not level with it.
        let drop = |node: &Node| node.h / 2.0 + node.below + 20.0;
        for round in 0..13 {
            let forward = round % 2 == 0;
            let order: Vec<usize> = if forward {
                (1..layers.len()).collect()
            } else {
                (0..layers.len().saturating_sub(1)).rev().collect()
            };
            for l in order {
                let desired: Vec<f64> = layers[l]
                    .iter()
                    .map(|&n| {
                        let list = if forward {
                            preds.get(&n)
                        } else {
                            succs.get(&n)
                        };
                        match list {
                            Some(list) if !list.is_empty() => {
                                let sum: f64 = list
                                    .iter()
                                    .map(|&(m, boundary)| {
                                        let other = &self.nodes[m];
                                        match (boundary, forward) {
                                            (false, _) => other.y,
                                            (true, true) => other.y + drop(other),
                                            (true, false) => other.y - drop(&self.nodes[n]),
                                        }
                                    })
                                    .sum();
                                sum / list.len() as f64
                            }
                            _ => self.nodes[n].y,
                        }
                    })
                    .collect();
                let gaps: Vec<f64> = layers[l]
                    .windows(2)
                    .map(|pair| self.separation(pair[0], pair[1]))
                    .collect();
                // Bend points weigh more: a long flow then stays straight and the shapes make
                // room for it, rather than the flow zigzagging around them.
                let weights: Vec<f64> = layers[l]
                    .iter()
                    .map(|&n| {
                        if self.nodes[n].shape == Shape::Dummy {
                            3.0
                        } else {
                            1.0
                        }
                    })
                    .collect();
                let placed = fit_in_order(&desired, &gaps, &weights);
                for (&n, y) in layers[l].iter().zip(placed) {
                    self.nodes[n].y = y;
                }
            }
        }
    }

    /// Columns, boundary positions, then the points of every flow of the scope.
    fn route(&mut self, layers: &[Vec<usize>], edges: &[usize]) {
        let layer_count = layers.len();
        let hops = self.hops(edges);

        // Boundary events: the one whose flow goes deepest sits leftmost, so the runs going
        // down and right from them do not cross.
        // Content top and bottom, for the lanes of the flows that close loops.
        let (mut top, mut bottom) = (f64::MAX, f64::MIN);
        for layer in layers {
            for &n in layer {
                let node = &self.nodes[n];
                if node.shape != Shape::Dummy {
                    top = top.min(node.top() - node.above);
                    bottom = bottom.max(node.bottom() + node.below);
                }
            }
        }
        let mut lane_of: BTreeMap<usize, f64> = BTreeMap::new();
        let (mut top_lanes, mut bottom_lanes) = (0.0, 0.0);
        for &e in edges {
            if self.edges[e].back {
                let (a, b) = (
                    &self.nodes[self.edges[e].from],
                    &self.nodes[self.edges[e].to],
                );
                // Loops go over the top, where no boundary flow hangs and where the eye
                // expects them, unless both ends sit far down a tall drawing.
                let highest = a.y.min(b.y);
                if highest - top <= 3.0 * (bottom - highest) {
                    top_lanes += 1.0;
                    lane_of.insert(e, top - 14.0 - LANE_GAP * (top_lanes - 1.0));
                } else {
                    bottom_lanes += 1.0;
                    lane_of.insert(e, bottom + 14.0 + LANE_GAP * (bottom_lanes - 1.0));
                }
            }
        }

        // Where each boundary flow's target is, to order the boundary events.
        let mut target_y: BTreeMap<(usize, usize), f64> = BTreeMap::new();
        for &e in edges {
            let edge = &self.edges[e];
            if let Some(k) = edge.boundary {
                let y = match lane_of.get(&e) {
                    Some(&lane) => lane,
                    None => self.nodes[edge.chain[1]].y,
                };
                target_y.insert((edge.from, k), y);
            }
        }
        for layer in layers {
            for &n in layer {
                let count = self.nodes[n].boundaries.len();
                if count == 0 {
                    continue;
                }
                let mut slots: Vec<usize> = (0..count).collect();
                slots.sort_by(|&a, &b| {
                    let ya = target_y.get(&(n, a)).copied().unwrap_or(f64::MIN);
                    let yb = target_y.get(&(n, b)).copied().unwrap_or(f64::MIN);
                    yb.total_cmp(&ya)
                });
                let node = &self.nodes[n];
                // Left to right along the lower edge, leaving the middle free when the
                // multi-instance or call-activity marker is there.
                let markers = matches!(
                    node.shape,
                    Shape::Task { multi: Some(_), .. }
                        | Shape::Task {
                            marker: TaskMarker::Call,
                            ..
                        }
                        | Shape::Container { multi: Some(_) }
                );
                let mut spots: Vec<f64> = Vec::new();
                if markers {
                    let mut left = 20.0;
                    let mut right = node.w - 20.0;
                    let mut spare = Vec::new();
                    while left <= node.w / 2.0 - 24.0 {
                        spots.push(node.left() + left);
                        left += BOUNDARY_STEP;
                    }
                    while right >= node.w / 2.0 + 24.0 {
                        spare.push(node.left() + right);
                        right -= BOUNDARY_STEP;
                    }
                    spots.extend(spare.into_iter().rev());
                    spots.truncate(count);
                } else {
                    let mut offset = 22.0_f64.min(node.w / 2.0);
                    while spots.len() < count && offset <= node.w - BOUNDARY_R {
                        spots.push(node.left() + offset);
                        offset += BOUNDARY_STEP;
                    }
                }
                if spots.len() < count {
                    let step = (node.w - 2.0 * BOUNDARY_R) / count as f64;
                    spots = (0..count)
                        .map(|i| node.left() + BOUNDARY_R + step * (i as f64 + 0.5))
                        .collect();
                }
                for (rank, &k) in slots.iter().enumerate() {
                    let x = spots[rank];
                    let y = self.nodes[n].bottom();
                    // Relative to the step's center until the columns are known.
                    let center = self.nodes[n].x;
                    let mark = &mut self.nodes[n].boundaries[k];
                    mark.x = x - center;
                    mark.y = y;
                }
            }
        }

        // How each hop goes, and who needs a track in which channel. Channel `g` lies before
        // layer `g`: channel 0 is the left margin, channel `layer_count` the right one.
        let mut kinds: BTreeMap<(usize, usize), Hop> = BTreeMap::new();
        let mut tracks: BTreeMap<usize, Vec<(TrackKey, i32, f64)>> = BTreeMap::new();
        let add_track = |tracks: &mut BTreeMap<usize, Vec<(TrackKey, i32, f64)>>,
                         gap: usize,
                         key,
                         class,
                         sort| {
            let list = tracks.entry(gap).or_default();
            if !list.iter().any(|(k, _, _)| *k == key) {
                list.push((key, class, sort));
            }
        };
        let mut hop_index: BTreeMap<usize, usize> = BTreeMap::new();
        for &(a, b, e, boundary) in &hops {
            let i = *hop_index.entry(e).and_modify(|i| *i += 1).or_insert(0);
            let (na, nb) = (&self.nodes[a], &self.nodes[b]);
            let gap = na.layer + 1;
            let kind = if boundary {
                let k = self.edges[e].boundary.unwrap_or(0);
                let start = na.bottom() + BOUNDARY_R;
                if nb.y >= start + 18.0 && self.column_clear(layers, a, start, nb.y) {
                    Hop::BoundaryDown
                } else {
                    let class = if nb.y > na.y { 1 } else { 2 };
                    add_track(&mut tracks, gap, TrackKey::Boundary(a, k), class, na.y);
                    Hop::BoundaryJog
                }
            } else if (nb.y - na.y).abs() < 0.5 {
                Hop::Straight
            } else if i == 0
                && matches!(na.shape, Shape::Gateway(_))
                && (nb.y - na.y).abs() > na.h / 2.0 + 10.0
                && self.column_clear(layers, a, na.y, nb.y)
            {
                Hop::Vertex
            } else {
                // A labelled jog takes the leftmost track, its label then has the rest of the
                // channel. Going down, the upper source takes the track further right; going
                // up, the lower one: then no run crosses another's vertical.
                let labelled = i == 0 && !self.edges[e].label.is_empty();
                let class = if labelled {
                    -1
                } else if nb.y > na.y {
                    1
                } else {
                    2
                };
                let sort = if nb.y > na.y { -na.y } else { na.y };
                add_track(&mut tracks, gap, TrackKey::Jog(a), class, sort);
                Hop::Jog
            };
            kinds.insert((e, i), kind);
        }
        for &e in edges {
            if self.edges[e].back {
                let (a, b) = (
                    &self.nodes[self.edges[e].from],
                    &self.nodes[self.edges[e].to],
                );
                // A loop climbs right after its source, clear of the labels of the gateways
                // in the next layer.
                add_track(&mut tracks, a.layer + 1, TrackKey::BackOut(e), -2, a.y);
                add_track(&mut tracks, b.layer, TrackKey::BackIn(e), 0, b.y);
            }
        }
        for list in tracks.values_mut() {
            list.sort_by(|x, y| x.1.cmp(&y.1).then(x.2.total_cmp(&y.2)).then(x.0.cmp(&y.0)));
        }

        // Column widths and channel widths: wide enough for the tracks and the labels.
        let column_w: Vec<f64> = layers
            .iter()
            .map(|layer| {
                layer
                    .iter()
                    .map(|&n| self.nodes[n].w.max(self.nodes[n].text_w))
                    .fold(0.0, f64::max)
            })
            .collect();
        let mut channel_w = vec![0.0; layer_count + 1];
        for (g, width) in channel_w.iter_mut().enumerate() {
            let track_count = tracks.get(&g).map_or(0, Vec::len) as f64;
            let inner = g > 0 && g < layer_count;
            let base = if inner { LAYER_GAP } else { 8.0 };
            *width = base.max((track_count + 1.0) * TRACK_GAP);
        }
        for &(a, _, e, _) in &hops {
            let edge = &self.edges[e];
            if edge.chain.first() == Some(&a) && !edge.label.is_empty() && edge.boundary.is_none() {
                let node = &self.nodes[a];
                let g = node.layer + 1;
                let slack = (column_w[node.layer] - node.w) / 2.0;
                let need = match kinds.get(&(e, 0)) {
                    Some(Hop::Jog) => {
                        let index = tracks
                            .get(&g)
                            .and_then(|list| list.iter().position(|t| t.0 == TrackKey::Jog(a)))
                            .unwrap_or(0);
                        TRACK_GAP * (index as f64 + 1.0) + edge.label_w() + 20.0
                    }
                    Some(Hop::Vertex) => edge.label_w() + 20.0 - slack - node.w / 2.0,
                    _ => {
                        let turn = tracks
                            .get(&g)
                            .and_then(|list| list.iter().position(|t| t.0 == TrackKey::Jog(a)))
                            .map_or(0.0, |index| TRACK_GAP * (index as f64 + 1.0));
                        turn + edge.label_w() + 20.0 - slack
                    }
                };
                channel_w[g] = channel_w[g].max(need);
            }
        }
        let mut column_x = vec![0.0; layer_count];
        let mut x = channel_w[0];
        for l in 0..layer_count {
            column_x[l] = x;
            x += column_w[l] + channel_w[l + 1];
        }
        for layer in layers {
            for &n in layer {
                let l = self.nodes[n].layer;
                let center = column_x[l] + column_w[l] / 2.0;
                let node = &mut self.nodes[n];
                node.x = center;
                for mark in &mut node.boundaries {
                    mark.x += center;
                }
            }
        }
        let mut track_x: BTreeMap<TrackKey, (usize, f64)> = BTreeMap::new();
        for (&g, list) in &tracks {
            let start = if g == 0 {
                0.0
            } else {
                column_x[g - 1] + column_w[g - 1]
            };
            let end = start + channel_w[g];
            let count = list.len() as f64;
            // Tracks spread over the channel, or packed to the left when a label follows one.
            let packed = list.iter().any(|t| t.1 < 0);
            for (j, (key, _, _)) in list.iter().enumerate() {
                let x = if packed {
                    start + TRACK_GAP * (j as f64 + 1.0)
                } else {
                    start + (end - start) * (j as f64 + 1.0) / (count + 1.0)
                };
                track_x.insert(*key, (g, x));
            }
        }

        // Points.
        for &e in edges {
            let edge = self.edges[e].clone();
            let from = &self.nodes[edge.from];
            let boundary_mark = edge
                .boundary
                .and_then(|k| from.boundaries.get(k).map(|m| (k, m.x, m.y)));
            // Depth of a boundary flow's first run: the leftmost event runs deepest.
            let run_y = |k: usize| {
                let rank = boundary_rank(from, k);
                let count = from.boundaries.len();
                from.bottom() + BOUNDARY_R + 6.0 + BOUNDARY_RUN * (count - rank) as f64 - 4.0
            };
            let mut points: Vec<(f64, f64)> = Vec::new();
            let mut label_at = (from.right() + 5.0, from.y - 4.0);
            if edge.back {
                let to = &self.nodes[edge.to];
                let lane = lane_of.get(&e).copied().unwrap_or(top - 14.0);
                let out_x = track_x
                    .get(&TrackKey::BackOut(e))
                    .map_or(from.right() + 10.0, |t| t.1);
                let in_x = track_x
                    .get(&TrackKey::BackIn(e))
                    .map_or(to.left() - 10.0, |t| t.1);
                match boundary_mark {
                    Some((k, bx, by)) => {
                        let y = run_y(k);
                        points.extend([(bx, by + BOUNDARY_R), (bx, y), (out_x, y)]);
                        label_at = (bx + 5.0, y - 4.0);
                    }
                    None => points.extend([(from.right(), from.y), (out_x, from.y)]),
                }
                points.extend([(out_x, lane), (in_x, lane), (in_x, to.y), (to.left(), to.y)]);
            } else {
                for (i, pair) in edge.chain.windows(2).enumerate() {
                    let (a, b) = (&self.nodes[pair[0]], &self.nodes[pair[1]]);
                    let target = (b.left(), b.y);
                    let kind = kinds.get(&(e, i)).copied().unwrap_or(Hop::Straight);
                    let jog_x = |key| {
                        track_x
                            .get(&key)
                            .map_or((a.right() + b.left()) / 2.0, |t| t.1)
                    };
                    if i == 0 {
                        match (kind, boundary_mark) {
                            (Hop::BoundaryDown, Some((_, bx, by))) => {
                                points.extend([(bx, by + BOUNDARY_R), (bx, b.y)]);
                                label_at = (bx + 5.0, b.y - 4.0);
                            }
                            (Hop::BoundaryJog, Some((k, bx, by))) => {
                                let x = jog_x(TrackKey::Boundary(pair[0], k));
                                let y = run_y(k);
                                points.extend([(bx, by + BOUNDARY_R), (bx, y), (x, y), (x, b.y)]);
                                label_at = (bx + 5.0, y - 4.0);
                            }
                            (Hop::Vertex, _) => {
                                let corner = if b.y < a.y { a.top() } else { a.bottom() };
                                points.extend([(a.x, corner), (a.x, b.y)]);
                                label_at = (a.x + 5.0, b.y - 4.0);
                            }
                            (Hop::Jog, _) => {
                                let x = jog_x(TrackKey::Jog(pair[0]));
                                points.extend([(a.right(), a.y), (x, a.y), (x, b.y)]);
                                label_at = (x + 5.0, b.y - 4.0);
                            }
                            _ => {
                                // After the point where the jogs from the same gateway turn
                                // off, so the label and the default slash are this flow's own.
                                let x = track_x
                                    .get(&TrackKey::Jog(pair[0]))
                                    .map_or(a.right(), |t| t.1.max(a.right()));
                                points.push((a.right(), a.y));
                                label_at = (x + 5.0, a.y - 4.0);
                            }
                        }
                    } else if kind == Hop::Jog {
                        // From the height the flow arrived at (a straight hop before may
                        // have kept its own, a fraction off the bend point's).
                        let x = jog_x(TrackKey::Jog(pair[0]));
                        let y = points.last().map_or(a.y, |p| p.1);
                        points.extend([(x, y), (x, b.y)]);
                    }
                    // A straight hop joins nodes less than half a unit apart in height: it
                    // keeps the height it arrives at, so it stays horizontal.
                    let target = match (kind, points.last()) {
                        (Hop::Straight, Some(&(_, y))) if (y - b.y).abs() < 0.5 => (b.left(), y),
                        _ => target,
                    };
                    points.push(target);
                }
            }
            let edge = &mut self.edges[e];
            edge.points = simplify(points);
            edge.label_at = label_at;
        }
    }

    /// Whether a run in `node`'s column from `y0` down or up to `y1`, then right, misses every
    /// other shape of that layer and does not run along another flow passing through it.
    fn column_clear(&self, layers: &[Vec<usize>], node: usize, y0: f64, y1: f64) -> bool {
        let (low, high) = (y0.min(y1), y0.max(y1));
        let Some(layer) = layers.get(self.nodes[node].layer) else {
            return true;
        };
        layer.iter().all(|&other| {
            let n = &self.nodes[other];
            if n.shape == Shape::Dummy {
                return (n.y - y1).abs() >= 12.0;
            }
            other == node || n.bottom() + n.below + 4.0 < low || n.top() - n.above - 4.0 > high
        })
    }

    /// Moves the scope's drawing so its top-left corner is at (0, 0); returns its size.
    fn normalize(&mut self, scope: Option<usize>) -> (f64, f64) {
        let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for node in self
            .nodes
            .iter()
            .filter(|n| n.scope == scope && n.shape != Shape::Dummy)
        {
            let (a, b, c, d) = node.extent();
            x0 = x0.min(a);
            y0 = y0.min(b);
            x1 = x1.max(c);
            y1 = y1.max(d);
        }
        for edge in self.edges.iter().filter(|e| e.scope == scope && e.local) {
            for &(x, y) in &edge.points {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
            if !edge.label.is_empty() {
                let (lx, ly) = edge.label_at;
                x1 = x1.max(lx + 8.0 + edge.label_w());
                y0 = y0.min(ly - SMALL_LINE * edge.label.len() as f64);
            }
        }
        if x0 > x1 || y0 > y1 {
            return (0.0, 0.0);
        }
        self.shift(scope, -x0, -y0);
        (x1 - x0, y1 - y0)
    }

    fn shift(&mut self, scope: Option<usize>, dx: f64, dy: f64) {
        for node in self.nodes.iter_mut().filter(|n| n.scope == scope) {
            node.x += dx;
            node.y += dy;
            for mark in &mut node.boundaries {
                mark.x += dx;
                mark.y += dy;
            }
        }
        for edge in self
            .edges
            .iter_mut()
            .filter(|e| e.scope == scope && e.local)
        {
            for point in &mut edge.points {
                point.0 += dx;
                point.1 += dy;
            }
            edge.label_at.0 += dx;
            edge.label_at.1 += dy;
        }
    }

    /// Moves a laid-out scope to its place in the drawing, then its sub-processes' insides.
    fn place(&mut self, scope: Option<usize>, dx: f64, dy: f64, depth: usize) {
        self.shift(scope, dx, dy);
        if depth > self.def.steps.len() {
            return;
        }
        let containers: Vec<(usize, f64, f64)> = self
            .nodes
            .iter()
            .filter(|n| n.scope == scope && matches!(n.shape, Shape::Container { .. }))
            .filter_map(|n| {
                n.step
                    .map(|s| (s, n.left() + CONTAINER_PAD, n.top() + CONTAINER_TOP))
            })
            .collect();
        for (step, x, y) in containers {
            self.place(Some(step), x, y, depth + 1);
        }
    }

    fn depth(&self, node: &Node) -> usize {
        let mut depth = 0;
        let mut scope = node.scope;
        while let Some(s) = scope {
            depth += 1;
            if depth > self.def.steps.len() {
                break;
            }
            scope = self
                .step_node
                .get(s)
                .copied()
                .flatten()
                .and_then(|n| self.nodes[n].scope);
        }
        depth
    }

    // ----- SVG -----

    fn render_svg(&self, def: &Definition, highlight: Option<&Highlight>) -> String {
        let mut out = String::new();
        let (w, h) = (num(self.width), num(self.height));
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(out, "<title>{}</title>", esc(&self.heading()));
        out.push_str(concat!(
            "<defs>\n",
            r##"<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#495057"/></marker>"##,
            "\n<style>",
            ".current .shape{stroke:#e8590c;stroke-width:4px}",
            ".done .shape{fill:#d3f9d8}",
            ".flow path{fill:none}",
            "</style>\n</defs>\n"
        ));
        let _ = writeln!(
            out,
            r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
        );
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" font-size="14" font-weight="bold" fill="#212529">{}</text>"##,
            num(MARGIN),
            num(MARGIN + 10.0),
            esc(&self.heading())
        );

        let class_of = |node: &Node| {
            let mut class = String::from(node.class);
            if let (Some(step), Some(hl)) = (node.step.and_then(|s| def.steps.get(s)), highlight) {
                if hl.current.contains(&step.name) {
                    class.push_str(" current");
                }
                if hl.done.contains(&step.name) {
                    class.push_str(" done");
                }
            }
            if let (Some(step), Some(hl)) = (node.after.and_then(|s| def.steps.get(s)), highlight)
                && hl.done.contains(&step.name)
                && !hl.current.contains(&step.name)
            {
                class.push_str(" done");
            }
            class
        };

        // Sub-processes first, outer before inner, so what they hold is drawn over them.
        let mut containers: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| matches!(self.nodes[n].shape, Shape::Container { .. }))
            .collect();
        containers.sort_by_key(|&n| (self.depth(&self.nodes[n]), n));
        for n in containers {
            let node = &self.nodes[n];
            self.render_node(&mut out, node, &class_of(node));
        }
        for (i, edge) in self.edges.iter().enumerate() {
            render_edge(&mut out, i, edge);
        }
        for node in &self.nodes {
            if !matches!(node.shape, Shape::Container { .. } | Shape::Dummy) {
                self.render_node(&mut out, node, &class_of(node));
            }
        }
        for node in &self.nodes {
            for mark in &node.boundaries {
                render_boundary(&mut out, mark);
            }
        }
        for edge in &self.edges {
            let (mut x, y) = edge.label_at;
            if edge.default && edge.local {
                // Room for the default slash before the text.
                x += 8.0;
            }
            let count = edge.label.len();
            for (i, line) in edge.label.iter().enumerate() {
                let line_y = y - SMALL_LINE * (count - 1 - i) as f64;
                let style = if edge.default {
                    r#" font-style="italic""#
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    r##"<text class="flow-label" x="{}" y="{}" font-size="11" fill="#495057"{style} stroke="#ffffff" stroke-width="3" stroke-linejoin="round" paint-order="stroke">{}</text>"##,
                    num(x),
                    num(line_y),
                    esc(line)
                );
            }
        }
        out.push_str("</svg>\n");
        out
    }

    fn render_node(&self, out: &mut String, node: &Node, class: &str) {
        let _ = writeln!(out, r#"<g id="{}" class="{}">"#, esc(&node.id), esc(class));
        let _ = writeln!(out, "<title>{}</title>", esc(&node.title));
        let (x, y) = (node.x, node.y);
        match node.shape {
            Shape::Task { marker, multi } => {
                let thick = marker == TaskMarker::Call;
                let _ = writeln!(
                    out,
                    r##"<rect class="shape" x="{}" y="{}" width="{}" height="{}" rx="10" fill="#ffffff" stroke="{INK}" stroke-width="{}"/>"##,
                    num(node.left()),
                    num(node.top()),
                    num(node.w),
                    num(node.h),
                    if thick { "3.5" } else { "1.5" }
                );
                task_marker(out, marker, node.left() + 7.0, node.top() + 7.0);
                let markers = multi.is_some() || thick;
                let room = if markers { MARKER_ROOM } else { 0.0 };
                let block = LINE * node.text.len() as f64 + SMALL_LINE * node.detail.len() as f64;
                let text_top = node.top() + 22.0_f64.max((node.h - room - block) / 2.0 + 2.0);
                let mut line_y = text_top + 11.0;
                for line in &node.text {
                    text(out, x, line_y, "middle", r#" font-weight="bold""#, line);
                    line_y += LINE;
                }
                line_y -= 1.0;
                for line in &node.detail {
                    text(out, x, line_y, "middle", &detail_attrs(), line);
                    line_y += SMALL_LINE;
                }
                bottom_markers(out, x, node.bottom() - 4.0, multi, thick);
            }
            Shape::Container { multi } => {
                let _ = writeln!(
                    out,
                    r##"<rect class="shape" x="{}" y="{}" width="{}" height="{}" rx="14" fill="#f8f9fa" stroke="{INK}" stroke-width="1.5"/>"##,
                    num(node.left()),
                    num(node.top()),
                    num(node.w),
                    num(node.h)
                );
                if let Some(line) = node.text.first() {
                    text(
                        out,
                        node.left() + 12.0,
                        node.top() + 19.0,
                        "start",
                        r#" font-weight="bold""#,
                        line,
                    );
                }
                bottom_markers(out, x, node.bottom() - 4.0, multi, false);
            }
            Shape::Gateway(marker) => {
                let r = GATEWAY_HALF;
                let _ = writeln!(
                    out,
                    r##"<polygon class="shape" points="{},{} {},{} {},{} {},{}" fill="#fff9db" stroke="{INK}" stroke-width="1.5"/>"##,
                    num(x),
                    num(y - r),
                    num(x + r),
                    num(y),
                    num(x),
                    num(y + r),
                    num(x - r),
                    num(y)
                );
                gateway_marker(out, marker, x, y);
                let count = node.text.len();
                for (i, line) in node.text.iter().enumerate() {
                    let line_y = node.top() - 6.0 - LINE * (count - 1 - i) as f64;
                    text(out, x - 8.0, line_y, "end", "", line);
                }
            }
            Shape::Start(glyph) => {
                circle(out, x, y, EVENT_R, "#ebfbee", "#2b8a3e", 1.5, true);
                match glyph {
                    Some(Glyph::Message) => envelope(out, x, y, 17.0, 12.0, false),
                    Some(Glyph::Timer) => clock(out, x, y, 11.0),
                    _ => {}
                }
                self.event_text(out, node);
            }
            Shape::Catch(glyph) => {
                circle(out, x, y, EVENT_R, "#ffffff", INK, 1.5, true);
                circle(out, x, y, EVENT_R - 3.5, "none", INK, 1.2, false);
                event_glyph(out, glyph, x, y);
                self.event_text(out, node);
            }
            Shape::End(mark) => {
                let r = if mark == EndMark::Implicit {
                    IMPLICIT_END_R
                } else {
                    EVENT_R
                };
                circle(out, x, y, r, "#fff5f5", "#c92a2a", 3.5, true);
                match mark {
                    EndMark::Error => lightning(out, x, y, 18.0, true),
                    EndMark::Terminate => circle(out, x, y, 10.0, "#343a40", "#343a40", 1.0, false),
                    EndMark::Plain | EndMark::Implicit => {}
                }
                self.event_text(out, node);
            }
            Shape::Dummy => {}
        }
        out.push_str("</g>\n");
    }

    fn event_text(&self, out: &mut String, node: &Node) {
        let mut y = node.bottom() + 4.0 + 11.0;
        for line in &node.text {
            text(out, node.x, y, "middle", "", line);
            y += LINE;
        }
        for line in &node.detail {
            text(out, node.x, y - 1.0, "middle", &detail_attrs(), line);
            y += SMALL_LINE;
        }
    }

    // ----- DOT -----

    fn render_dot(&self, def: &Definition) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", quote(&def.id));
        let _ = writeln!(
            out,
            "  graph [rankdir=LR, fontname=\"sans-serif\", label={}, labelloc=t];",
            quote(&self.heading())
        );
        out.push_str("  node [fontname=\"sans-serif\", fontsize=12];\n");
        out.push_str("  edge [fontname=\"sans-serif\", fontsize=11];\n");
        self.dot_scope(&mut out, None, 1, 0);
        for edge in &self.edges {
            let (from, to) = (&self.nodes[edge.from], &self.nodes[edge.to]);
            let mut attrs = Vec::new();
            if !edge.label.is_empty() {
                attrs.push(format!("label={}", quote(&edge.label.join(" "))));
            }
            if edge.default {
                // Graphviz has no default-flow slash; a bar at the tail is the nearest mark.
                attrs.push("dir=both, arrowtail=tee".to_string());
            }
            if let Some(mark) = edge.boundary.and_then(|k| from.boundaries.get(k)) {
                if !mark.interrupting {
                    attrs.push("style=dashed".to_string());
                }
                attrs.push(format!("tooltip={}", quote(&mark.title)));
            }
            let attrs = if attrs.is_empty() {
                String::new()
            } else {
                format!(" [{}]", attrs.join(", "))
            };
            let _ = writeln!(out, "  {} -> {}{attrs};", quote(&from.id), quote(&to.id));
        }
        out.push_str("}\n");
        out
    }

    fn dot_scope(&self, out: &mut String, scope: Option<usize>, indent: usize, depth: usize) {
        let pad = "  ".repeat(indent);
        for node in self.nodes.iter().filter(|n| n.scope == scope) {
            let mut label: Vec<String> = node.text.clone();
            label.extend(node.detail.iter().cloned());
            let label = label.join("\n");
            let attrs = match node.shape {
                Shape::Task { marker, .. } => {
                    let style = if marker == TaskMarker::Call {
                        "\"rounded,bold\""
                    } else {
                        "rounded"
                    };
                    format!("shape=box, style={style}, label={}", quote(&label))
                }
                Shape::Container { .. } => format!(
                    "shape=box, style=\"rounded,dashed\", label={}",
                    quote(&format!("{label} [+]"))
                ),
                Shape::Gateway(marker) => {
                    let mark = match marker {
                        GatewayMarker::Exclusive => "X",
                        GatewayMarker::Parallel => "+",
                        GatewayMarker::Inclusive => "O",
                        GatewayMarker::EventBased => "(E)",
                    };
                    format!(
                        "shape=diamond, width=0.5, height=0.5, fixedsize=true, label={}, xlabel={}",
                        quote(mark),
                        quote(&label)
                    )
                }
                Shape::Start(_) => format!(
                    "shape=circle, width=0.35, label=\"\", xlabel={}",
                    quote(&label)
                ),
                Shape::Catch(_) => {
                    format!(
                        "shape=doublecircle, width=0.3, label=\"\", xlabel={}",
                        quote(&label)
                    )
                }
                Shape::End(mark) => {
                    let width = if mark == EndMark::Implicit {
                        "0.2"
                    } else {
                        "0.35"
                    };
                    format!(
                        "shape=circle, penwidth=3, width={width}, label=\"\", xlabel={}",
                        quote(&label)
                    )
                }
                Shape::Dummy => continue,
            };
            let _ = writeln!(
                out,
                "{pad}{} [{attrs}, tooltip={}];",
                quote(&node.id),
                quote(&node.title)
            );
            if let (Shape::Container { .. }, Some(step)) = (node.shape, node.step)
                && depth <= self.def.steps.len()
            {
                let _ = writeln!(
                    out,
                    "{pad}subgraph {} {{",
                    quote(&format!("cluster_{}", node.id))
                );
                let _ = writeln!(out, "{pad}  label={}; style=rounded;", quote(&label));
                self.dot_scope(out, Some(step), indent + 1, depth + 1);
                let _ = writeln!(out, "{pad}}}");
                let _ = writeln!(
                    out,
                    "{pad}{} -> {} [style=dotted, arrowhead=none];",
                    quote(&node.id),
                    quote(&format!("start-{}", self.def.steps[step].name))
                );
            }
        }
    }
}

/// Whether `n` has no forward flow coming in.
fn indegree_zero_source(n: usize, forward: &[usize], edges: &[Edge]) -> bool {
    !forward.iter().any(|&e| edges[e].to == n)
}

/// Rank of boundary event `k` among its step's events, left to right.
fn boundary_rank(node: &Node, k: usize) -> usize {
    let Some(mark) = node.boundaries.get(k) else {
        return 0;
    };
    node.boundaries.iter().filter(|m| m.x < mark.x).count()
}

/// Least-squares positions for items in a fixed order: item `i` wants to be at `desired[i]`,
/// with weight `weights[i]`, and must be at least `gaps[i - 1]` below item `i - 1`. Subtracting the cumulative gaps turns
/// this into isotonic regression, solved exactly by pooling adjacent violators.
fn fit_in_order(desired: &[f64], gaps: &[f64], weights: &[f64]) -> Vec<f64> {
    let mut offsets = Vec::with_capacity(desired.len());
    let mut offset = 0.0;
    for i in 0..desired.len() {
        if i > 0 {
            offset += gaps.get(i - 1).copied().unwrap_or(0.0);
        }
        offsets.push(offset);
    }
    // Blocks of (weighted sum, weight, count) whose means increase.
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new();
    for (i, (d, o)) in desired.iter().zip(&offsets).enumerate() {
        let w = weights.get(i).copied().unwrap_or(1.0).max(0.001);
        blocks.push(((d - o) * w, w, 1));
        while blocks.len() >= 2 {
            let (s2, w2, c2) = blocks[blocks.len() - 1];
            let (s1, w1, c1) = blocks[blocks.len() - 2];
            if s1 / w1 > s2 / w2 {
                blocks.pop();
                blocks.pop();
                blocks.push((s1 + s2, w1 + w2, c1 + c2));
            } else {
                break;
            }
        }
    }
    let mut out = Vec::with_capacity(desired.len());
    for (sum, weight, count) in blocks {
        let mean = sum / weight;
        for _ in 0..count {
            out.push(mean + offsets[out.len()]);
        }
    }
    out
}

/// Drops repeated points and the middle of straight runs.
fn simplify(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(points.len());
    for p in points {
        if let Some(&last) = out.last()
            && (last.0 - p.0).abs() < 0.01
            && (last.1 - p.1).abs() < 0.01
        {
            continue;
        }
        if out.len() >= 2 {
            let (a, b) = (out[out.len() - 2], out[out.len() - 1]);
            let same_x = (a.0 - b.0).abs() < 0.01 && (b.0 - p.0).abs() < 0.01;
            let same_y = (a.1 - b.1).abs() < 0.01 && (b.1 - p.1).abs() < 0.01;
            if same_x || same_y {
                out.pop();
            }
        }
        out.push(p);
    }
    out
}

fn render_edge(out: &mut String, index: usize, edge: &Edge) {
    if edge.points.len() < 2 {
        return;
    }
    let mut class = String::from("flow");
    if edge.default {
        class.push_str(" default");
    }
    if edge.boundary.is_some() {
        class.push_str(" boundary-flow");
    }
    let _ = writeln!(out, r#"<g id="flow-{index}" class="{class}">"#);
    let mut d = String::new();
    for (i, (x, y)) in edge.points.iter().enumerate() {
        let _ = write!(
            d,
            "{}{},{}",
            if i == 0 { "M" } else { " L" },
            num(*x),
            num(*y)
        );
    }
    let _ = writeln!(
        out,
        r#"<path d="{d}" fill="none" stroke="{FLOW_INK}" stroke-width="1.4" stroke-linejoin="round" marker-end="url(#arrow)"/>"#
    );
    if edge.default && edge.local {
        // BPMN marks the default flow with a short slash across its start. Flows from one
        // gateway can share their first run, so the slash goes where this flow is alone: at
        // the start of the run its label sits on.
        let (x, y) = (edge.label_at.0 + 4.0, edge.label_at.1 + 4.0);
        let _ = writeln!(
            out,
            r#"<path class="default-mark" d="M{},{} L{},{}" stroke="{FLOW_INK}" stroke-width="1.4"/>"#,
            num(x - 3.0),
            num(y + 5.0),
            num(x + 3.0),
            num(y - 5.0)
        );
    } else if edge.default {
        let (a, b) = (edge.points[0], edge.points[1]);
        let length = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt().max(0.01);
        let (dx, dy) = ((b.0 - a.0) / length, (b.1 - a.1) / length);
        let along = 9.0_f64.min(length / 2.0);
        let (cx, cy) = (a.0 + dx * along, a.1 + dy * along);
        // The slash leans 60 degrees off the flow.
        let (sx, sy) = (dx * 0.5 - dy * 0.866, dx * 0.866 + dy * 0.5);
        let _ = writeln!(
            out,
            r#"<path class="default-mark" d="M{},{} L{},{}" stroke="{FLOW_INK}" stroke-width="1.4"/>"#,
            num(cx - sx * 6.0),
            num(cy - sy * 6.0),
            num(cx + sx * 6.0),
            num(cy + sy * 6.0)
        );
    }
    out.push_str("</g>\n");
}

fn render_boundary(out: &mut String, mark: &BoundaryMark) {
    let class = if mark.interrupting {
        "boundary"
    } else {
        "boundary non-interrupting"
    };
    let _ = writeln!(out, r#"<g id="{}" class="{class}">"#, esc(&mark.id));
    let _ = writeln!(out, "<title>{}</title>", esc(&mark.title));
    let dash = if mark.interrupting {
        ""
    } else {
        r#" stroke-dasharray="3,2""#
    };
    for r in [BOUNDARY_R, BOUNDARY_R - 3.0] {
        let _ = writeln!(
            out,
            r##"<circle cx="{}" cy="{}" r="{}" fill="{}" stroke="{INK}" stroke-width="1.3"{dash}/>"##,
            num(mark.x),
            num(mark.y),
            num(r),
            if r == BOUNDARY_R { "#ffffff" } else { "none" }
        );
    }
    match mark.glyph {
        Glyph::Timer => clock(out, mark.x, mark.y, 7.0),
        Glyph::Message => envelope(out, mark.x, mark.y, 11.0, 8.0, false),
        Glyph::Error => lightning(out, mark.x, mark.y, 11.0, false),
    }
    out.push_str("</g>\n");
}

// ----- glyphs -----

fn detail_attrs() -> String {
    format!(r#" font-size="11" fill="{DETAIL_INK}""#)
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, attrs: &str, content: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="{anchor}"{attrs}>{}</text>"#,
        num(x),
        num(y),
        esc(content)
    );
}

#[allow(clippy::too_many_arguments)]
fn circle(
    out: &mut String,
    x: f64,
    y: f64,
    r: f64,
    fill: &str,
    stroke: &str,
    width: f64,
    shape: bool,
) {
    let class = if shape { r#" class="shape""# } else { "" };
    let _ = writeln!(
        out,
        r#"<circle{class} cx="{}" cy="{}" r="{}" fill="{fill}" stroke="{stroke}" stroke-width="{}"/>"#,
        num(x),
        num(y),
        num(r),
        num(width)
    );
}

fn envelope(out: &mut String, x: f64, y: f64, w: f64, h: f64, filled: bool) {
    let (x0, y0) = (x - w / 2.0, y - h / 2.0);
    let (fill, flap) = if filled {
        (INK, "#ffffff")
    } else {
        ("#ffffff", INK)
    };
    let _ = writeln!(
        out,
        r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{fill}" stroke="{INK}" stroke-width="1"/><path d="M{},{} L{},{} L{},{}" fill="none" stroke="{flap}" stroke-width="1"/>"#,
        num(x0),
        num(y0),
        num(w),
        num(h),
        num(x0),
        num(y0),
        num(x),
        num(y0 + h * 0.55),
        num(x0 + w),
        num(y0)
    );
}

fn clock(out: &mut String, x: f64, y: f64, r: f64) {
    let _ = write!(
        out,
        r##"<circle cx="{}" cy="{}" r="{}" fill="#ffffff" stroke="{INK}" stroke-width="1.2"/>"##,
        num(x),
        num(y),
        num(r)
    );
    let mut ticks = String::new();
    for i in 0..12 {
        let angle = std::f64::consts::PI * 2.0 * i as f64 / 12.0;
        let (s, c) = angle.sin_cos();
        let _ = write!(
            ticks,
            "M{},{} L{},{} ",
            num(x + s * r * 0.78),
            num(y - c * r * 0.78),
            num(x + s * r * 0.95),
            num(y - c * r * 0.95)
        );
    }
    let _ = writeln!(
        out,
        r#"<path d="{ticks}M{},{} L{},{} L{},{}" fill="none" stroke="{INK}" stroke-width="1"/>"#,
        num(x),
        num(y - r * 0.65),
        num(x),
        num(y),
        num(x + r * 0.45),
        num(y - r * 0.15)
    );
}

fn lightning(out: &mut String, x: f64, y: f64, size: f64, filled: bool) {
    let shape = [
        (-0.45, 0.5),
        (-0.15, -0.5),
        (0.12, 0.08),
        (0.45, -0.5),
        (0.2, 0.5),
        (-0.08, -0.05),
    ];
    let points: Vec<String> = shape
        .iter()
        .map(|(px, py)| format!("{},{}", num(x + px * size), num(y + py * size)))
        .collect();
    let fill = if filled { INK } else { "none" };
    let _ = writeln!(
        out,
        r#"<polygon points="{}" fill="{fill}" stroke="{INK}" stroke-width="1" stroke-linejoin="round"/>"#,
        points.join(" ")
    );
}

fn event_glyph(out: &mut String, glyph: Glyph, x: f64, y: f64) {
    match glyph {
        Glyph::Timer => clock(out, x, y, 10.0),
        Glyph::Message => envelope(out, x, y, 16.0, 11.0, false),
        Glyph::Error => lightning(out, x, y, 16.0, false),
    }
}

/// The small type marker in a task's top-left corner, in a 14 x 14 box at (`x`, `y`).
fn task_marker(out: &mut String, marker: TaskMarker, x: f64, y: f64) {
    let p = |dx: f64, dy: f64| format!("{},{}", num(x + dx), num(y + dy));
    match marker {
        TaskMarker::User => {
            let _ = writeln!(
                out,
                r##"<circle cx="{}" cy="{}" r="3.2" fill="#ffffff" stroke="{INK}" stroke-width="1.1"/><path d="M{} C{} {} {} Z" fill="#ffffff" stroke="{INK}" stroke-width="1.1"/>"##,
                num(x + 7.0),
                num(y + 4.0),
                p(0.5, 14.0),
                p(0.5, 7.0),
                p(13.5, 7.0),
                p(13.5, 14.0)
            );
        }
        TaskMarker::Service | TaskMarker::Call => {
            let (cx, cy) = (x + 7.0, y + 7.0);
            let mut points = Vec::new();
            for i in 0..32 {
                let angle = std::f64::consts::PI * 2.0 * i as f64 / 32.0;
                let r = if (i / 2) % 2 == 0 { 7.0 } else { 5.0 };
                let (s, c) = angle.sin_cos();
                points.push(format!("{},{}", num(cx + s * r), num(cy - c * r)));
            }
            let _ = writeln!(
                out,
                r##"<polygon points="{}" fill="#ffffff" stroke="{INK}" stroke-width="1"/><circle cx="{}" cy="{}" r="2.2" fill="#ffffff" stroke="{INK}" stroke-width="1"/>"##,
                points.join(" "),
                num(cx),
                num(cy)
            );
        }
        TaskMarker::Send => envelope(out, x + 8.0, y + 6.0, 16.0, 11.0, true),
        TaskMarker::Receive => envelope(out, x + 8.0, y + 6.0, 16.0, 11.0, false),
        TaskMarker::Script => {
            let _ = writeln!(
                out,
                r##"<path d="M{} L{} C{} {} {} C{} {} {} L{} C{} {} {} C{} {} {} Z" fill="#ffffff" stroke="{INK}" stroke-width="1"/><path d="M{} L{} M{} L{} M{} L{}" stroke="{INK}" stroke-width="0.9"/>"##,
                p(3.0, 0.0),
                p(13.0, 0.0),
                p(10.0, 3.0),
                p(13.0, 8.0),
                p(11.0, 14.0),
                p(11.0, 14.0),
                p(11.0, 14.0),
                p(11.0, 14.0),
                p(1.0, 14.0),
                p(4.0, 11.0),
                p(1.0, 6.0),
                p(3.0, 0.0),
                p(3.0, 0.0),
                p(3.0, 0.0),
                p(3.0, 0.0),
                p(4.0, 3.5),
                p(10.0, 3.5),
                p(4.5, 7.0),
                p(10.5, 7.0),
                p(4.0, 10.5),
                p(10.0, 10.5)
            );
        }
        TaskMarker::Rules => {
            let _ = writeln!(
                out,
                r##"<rect x="{}" y="{}" width="16" height="12" fill="#ffffff" stroke="{INK}" stroke-width="1"/><rect x="{}" y="{}" width="16" height="3.5" fill="{INK}"/><path d="M{} L{} M{} L{}" stroke="{INK}" stroke-width="0.9"/>"##,
                num(x),
                num(y + 1.0),
                num(x),
                num(y + 1.0),
                p(0.0, 8.5),
                p(16.0, 8.5),
                p(5.5, 4.5),
                p(5.5, 13.0)
            );
        }
    }
}

fn gateway_marker(out: &mut String, marker: GatewayMarker, x: f64, y: f64) {
    match marker {
        GatewayMarker::Exclusive => {
            let _ = writeln!(
                out,
                r#"<path d="M{},{} L{},{} M{},{} L{},{}" stroke="{INK}" stroke-width="3.5" stroke-linecap="round"/>"#,
                num(x - 7.0),
                num(y - 7.0),
                num(x + 7.0),
                num(y + 7.0),
                num(x + 7.0),
                num(y - 7.0),
                num(x - 7.0),
                num(y + 7.0)
            );
        }
        GatewayMarker::Parallel => {
            let _ = writeln!(
                out,
                r#"<path d="M{},{} L{},{} M{},{} L{},{}" stroke="{INK}" stroke-width="3.5" stroke-linecap="round"/>"#,
                num(x - 10.0),
                num(y),
                num(x + 10.0),
                num(y),
                num(x),
                num(y - 10.0),
                num(x),
                num(y + 10.0)
            );
        }
        GatewayMarker::Inclusive => circle(out, x, y, 9.5, "none", INK, 2.8, false),
        GatewayMarker::EventBased => {
            circle(out, x, y, 12.0, "none", INK, 1.1, false);
            circle(out, x, y, 9.5, "none", INK, 1.1, false);
            let points: Vec<String> = (0..5)
                .map(|i| {
                    let angle = std::f64::consts::PI * 2.0 * i as f64 / 5.0;
                    let (s, c) = angle.sin_cos();
                    format!("{},{}", num(x + s * 6.0), num(y - c * 6.0))
                })
                .collect();
            let _ = writeln!(
                out,
                r#"<polygon points="{}" fill="none" stroke="{INK}" stroke-width="1.1"/>"#,
                points.join(" ")
            );
        }
    }
}

/// Multi-instance bars and the call activity's `+`, centred at the bottom of a task.
fn bottom_markers(out: &mut String, x: f64, bottom: f64, multi: Option<bool>, plus: bool) {
    let both = multi.is_some() && plus;
    let bars_x = if both { x - 9.0 } else { x };
    let plus_x = if both { x + 9.0 } else { x };
    if let Some(parallel) = multi {
        let mut d = String::new();
        for i in 0..3 {
            let offset = (i as f64 - 1.0) * 4.0;
            if parallel {
                let _ = write!(
                    d,
                    "M{},{} L{},{} ",
                    num(bars_x + offset),
                    num(bottom - 12.0),
                    num(bars_x + offset),
                    num(bottom)
                );
            } else {
                let _ = write!(
                    d,
                    "M{},{} L{},{} ",
                    num(bars_x - 6.0),
                    num(bottom - 6.0 + offset),
                    num(bars_x + 6.0),
                    num(bottom - 6.0 + offset)
                );
            }
        }
        let _ = writeln!(
            out,
            r#"<path class="multi-instance {}" d="{}" stroke="{INK}" stroke-width="2"/>"#,
            if parallel { "parallel" } else { "sequential" },
            d.trim_end()
        );
    }
    if plus {
        let _ = writeln!(
            out,
            r##"<rect x="{}" y="{}" width="12" height="12" fill="#ffffff" stroke="{INK}" stroke-width="1"/><path d="M{},{} L{},{} M{},{} L{},{}" stroke="{INK}" stroke-width="1.3"/>"##,
            num(plus_x - 6.0),
            num(bottom - 12.0),
            num(plus_x - 3.5),
            num(bottom - 6.0),
            num(plus_x + 3.5),
            num(bottom - 6.0),
            num(plus_x),
            num(bottom - 9.5),
            num(plus_x),
            num(bottom - 2.5)
        );
    }
}

// ----- text -----

/// A number for SVG: one decimal at most, no `-0`, never `NaN`.
fn num(value: f64) -> String {
    if !value.is_finite() {
        return "0".to_string();
    }
    let rounded = (value * 10.0).round() / 10.0;
    if rounded == 0.0 {
        "0".to_string()
    } else if rounded.fract() == 0.0 {
        format!("{}", rounded as i64)
    } else {
        format!("{rounded:.1}")
    }
}

/// XML-escapes text for element content and attribute values. Characters XML 1.0 cannot hold
/// at all (most control characters) become U+FFFD so the document stays well-formed.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A DOT double-quoted string.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Estimated width of `text` in a sans-serif font of `size` pixels. Fonts differ; the table is
/// on the wide side (DejaVu Sans, the usual fallback) so text fits in most viewers.
fn text_width(text: &str, size: f64) -> f64 {
    let em: f64 = text
        .chars()
        .map(|c| match c {
            'i' | 'l' | 'j' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' | ' ' => 0.32,
            '(' | ')' | '[' | ']' | 'f' | 't' | 'r' | 'I' | '-' | '{' | '}' | '"' => 0.42,
            'm' | 'w' => 0.92,
            'M' | 'W' => 0.98,
            'A'..='Z' | '_' | '=' | '<' | '>' | '+' | '~' | '#' | '%' | '&' | '@' => 0.72,
            c if c.is_ascii() => 0.62,
            _ => 0.9,
        })
        .sum();
    em * size
}

/// Greedy word wrap to `max_w`; words longer than a line are cut, preferably after `.`, `-`,
/// `_` or `/`; past `max_lines` the last line ends with an ellipsis.
fn wrap(text: &str, max_w: f64, size: f64, max_lines: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let candidate = if current.is_empty() {
            word.to_string()
        } else {
            format!("{current} {word}")
        };
        if text_width(&candidate, size) <= max_w {
            current = candidate;
            continue;
        }
        if !current.is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        current = word.to_string();
        while text_width(&current, size) > max_w {
            let chars: Vec<char> = current.chars().collect();
            let mut fit = 1;
            while fit < chars.len()
                && text_width(&chars[..=fit].iter().collect::<String>(), size) <= max_w
            {
                fit += 1;
            }
            let cut = (1..fit)
                .rev()
                .find(|&i| matches!(chars[i - 1], '.' | '-' | '_' | '/'))
                .filter(|&i| i * 2 >= fit)
                .unwrap_or(fit);
            lines.push(chars[..cut].iter().collect());
            current = chars[cut..].iter().collect();
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        if let Some(last) = lines.last_mut() {
            while !last.is_empty() && text_width(&format!("{last}\u{2026}"), size) > max_w {
                last.pop();
            }
            last.push('\u{2026}');
        }
    }
    lines
}

#[cfg(test)]
mod tests;

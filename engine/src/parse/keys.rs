//! The keys of the process language: one table per YAML map, each key with its meaning and
//! the shape of its value.
//!
//! The parser checks unknown keys against these tables and the JSON Schema is generated from
//! them, so what editors suggest and what the loader accepts cannot drift apart.

/// One key of a YAML map.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub name: &'static str,
    /// What the key means, shown by editors on hover.
    pub doc: &'static str,
    pub shape: Shape,
    pub required: bool,
}

/// The shape of a key's value, for the JSON Schema.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// A lowercase id: letters, digits, `-`, `_`.
    Id,
    /// Any text.
    Text,
    /// A text with `{{ expression }}` parts.
    Template,
    /// An expression: a string, or a number or boolean literal.
    Expr,
    /// A timer: ISO 8601 duration, date-time or cycle, or a cron expression.
    Timer,
    /// An IANA time zone name.
    Zone,
    Bool,
    Integer,
    Number,
    /// The name of a step.
    StepName,
    /// A list of step names.
    StepNames,
    /// A list of words.
    Words,
    /// A map of names to expressions (`input:`, `set:`).
    Mapping,
    /// A map of names to type words (`inputs:`).
    TypeWords,
    /// One of these words.
    Enum(&'static [&'static str]),
    /// The literal `true`.
    True,
    /// A map with exactly these keys.
    Object(&'static [Key]),
    /// A list of maps with these keys.
    ListOf(&'static [Key]),
    /// Any one of these shapes.
    OneOf(&'static [Shape]),
    /// A map of step names to steps (`steps:`).
    Steps,
    /// The fields of a user task form.
    Form,
    /// The decision tables of a file.
    Tables,
    /// A decision-table row's input cells.
    Cells,
    /// A decision-table row's output expressions.
    Exprs,
}

const fn key(name: &'static str, doc: &'static str, shape: Shape) -> Key {
    Key {
        name,
        doc,
        shape,
        required: false,
    }
}

const fn required(name: &'static str, doc: &'static str, shape: Shape) -> Key {
    Key {
        name,
        doc,
        shape,
        required: true,
    }
}

/// Top-level keys of a process file.
pub const PROCESS: &[Key] = &[
    required(
        "process",
        "The process id: lowercase letters, digits, `-` and `_`.",
        Shape::Id,
    ),
    key("name", "A readable name for the process.", Shape::Text),
    key(
        "zone",
        "Default IANA time zone of the process's timers (default UTC).",
        Shape::Zone,
    ),
    key(
        "inputs",
        "The variables the process expects, name -> type word (informative).",
        Shape::TypeWords,
    ),
    key(
        "start",
        "How an instance starts: a step name, or a map (or list of maps) with `goto` and `message` or `timer`. Default: the first step.",
        Shape::OneOf(&[Shape::StepName, Shape::Object(START), Shape::ListOf(START)]),
    ),
    key(
        "tables",
        "Decision tables used by `rules:` steps.",
        Shape::Tables,
    ),
    required("steps", "The steps of the process, by name.", Shape::Steps),
];

/// Top-level keys of a table library file.
pub const TABLE_FILE: &[Key] = &[required(
    "tables",
    "Decision tables, by name.",
    Shape::Tables,
)];

/// Keys of a start map.
pub const START: &[Key] = &[
    required("goto", "The first step.", Shape::StepName),
    key(
        "message",
        "Start when a message of this name arrives.",
        Shape::Text,
    ),
    key(
        "timer",
        "Start on a timer (duration, date-time, cycle or cron).",
        Shape::Timer,
    ),
    key("zone", "Time zone of the timer.", Shape::Zone),
];

/// Keys of a decision table.
pub const TABLE: &[Key] = &[
    key(
        "hit",
        "Which rules apply: first (default), unique, collect or sum.",
        Shape::Enum(&["first", "unique", "collect", "sum"]),
    ),
    required("inputs", "Input expressions, one per column.", Shape::Exprs),
    required(
        "outputs",
        "Output names, one per output column.",
        Shape::Words,
    ),
    required("rules", "The rows of the table.", Shape::ListOf(RULE)),
];

/// Keys of a decision-table rule.
pub const RULE: &[Key] = &[
    required(
        "when",
        "One cell per input: a list of values, a number, a boolean or a test such as \"> 100\" or \"-\".",
        Shape::Cells,
    ),
    required("then", "One expression per output.", Shape::Exprs),
];

/// Keys every step may have besides its kind key.
pub const COMMON: &[Key] = &[
    key(
        "label",
        "A readable label for diagrams and task lists.",
        Shape::Text,
    ),
    key("goto", "The next step.", Shape::StepName),
    key(
        "then",
        "An exclusive choice right after the step: `- when: ... goto: ...` and `- otherwise: ...`.",
        Shape::ListOf(BRANCH),
    ),
    key(
        "on",
        "Boundary events: errors, timers and messages that leave the step.",
        Shape::ListOf(BOUNDARY),
    ),
    key(
        "each",
        "Run the step once per item of a list.",
        Shape::Object(EACH),
    ),
];

/// A step kind: the key that says what the step does, and the keys only it may have.
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    pub key: Key,
    pub extras: &'static [Key],
    /// Whether the kind names its own targets (gateways), so `goto`/`then` do not apply.
    pub routes_itself: bool,
    /// Whether boundary events and multi-instance apply (tasks and sub-processes).
    pub is_activity: bool,
}

const fn kind(key: Key, extras: &'static [Key], is_activity: bool) -> Kind {
    Kind {
        key,
        extras,
        routes_itself: false,
        is_activity,
    }
}

const fn gateway(key: Key) -> Kind {
    Kind {
        key,
        extras: &[],
        routes_itself: true,
        is_activity: false,
    }
}

pub const RETRY_KEY: Key = key("retry", "Retry policy of the job.", Shape::Object(RETRY));
pub const INPUT_KEY: Key = key(
    "input",
    "Values passed in, name -> expression.",
    Shape::Mapping,
);
pub const OUTPUT_KEY: Key = key(
    "output",
    "Variables set from the result, name -> expression over `result`.",
    Shape::Mapping,
);

/// Every step kind, in the order the docs present them.
pub const KINDS: &[Kind] = &[
    kind(
        key(
            "set",
            "Script task: set variables, name -> expression.",
            Shape::Mapping,
        ),
        &[],
        true,
    ),
    kind(
        key(
            "call",
            "Service task: call a connector operation, `connector.operation`.",
            Shape::Text,
        ),
        &[INPUT_KEY, OUTPUT_KEY, RETRY_KEY],
        true,
    ),
    kind(
        key(
            "send",
            "Send task: send the e-mail template of this name.",
            Shape::Text,
        ),
        &[
            required("to", "The recipient's address, an expression.", Shape::Expr),
            INPUT_KEY,
            RETRY_KEY,
        ],
        true,
    ),
    kind(
        key(
            "task",
            "User task: a person decides; the value is the task title (a template).",
            Shape::Template,
        ),
        USER_TASK,
        true,
    ),
    kind(
        key(
            "rules",
            "Business-rule task: evaluate the decision table of this name.",
            Shape::Text,
        ),
        &[required(
            "result",
            "The variable that receives the table's result.",
            Shape::Text,
        )],
        true,
    ),
    kind(
        key(
            "receive",
            "Receive task: wait for a message of this name.",
            Shape::Text,
        ),
        &[key(
            "key",
            "Correlation key, an expression (for example `invoice.number`).",
            Shape::Expr,
        )],
        true,
    ),
    kind(
        key(
            "wait",
            "Wait for a timer (a duration, date or cron, or a template such as \"{{ quote.valid_until }}\") or a message.",
            Shape::OneOf(&[Shape::Timer, Shape::Object(WAIT)]),
        ),
        &[],
        false,
    ),
    kind(
        key(
            "process",
            "Call activity: start the process with this id and wait for it.",
            Shape::Id,
        ),
        &[INPUT_KEY, OUTPUT_KEY],
        true,
    ),
    gateway(key(
        "decide",
        "Exclusive gateway: the first true `when` wins, else `otherwise`.",
        Shape::ListOf(BRANCH),
    )),
    gateway(key(
        "parallel",
        "Parallel fork: every listed step starts.",
        Shape::StepNames,
    )),
    gateway(key(
        "branch",
        "Inclusive fork: every branch whose `when` is true starts.",
        Shape::ListOf(BRANCH),
    )),
    kind(
        key(
            "join",
            "Join paths: `all` waits for every incoming path, `any` for those that can still come.",
            Shape::Enum(&["all", "any"]),
        ),
        &[],
        false,
    ),
    gateway(key(
        "race",
        "Event-based gateway: the first event to happen wins.",
        Shape::ListOf(RACE),
    )),
    kind(
        key(
            "subprocess",
            "Embedded sub-process with its own `start` and `steps`.",
            Shape::Object(SUBPROCESS),
        ),
        &[],
        true,
    ),
    Kind {
        key: key(
            "end",
            "End event: `true`, `terminate`, or `{ error: CODE, message: ... }`.",
            Shape::OneOf(&[Shape::True, Shape::Enum(&["terminate"]), Shape::Object(END)]),
        ),
        extras: &[],
        routes_itself: true,
        is_activity: false,
    },
];

pub const USER_TASK: &[Key] = &[
    key(
        "assignee",
        "Who the task is for, a template such as \"{{quote.owner}}\".",
        Shape::Template,
    ),
    key(
        "candidates",
        "Groups whose members may claim the task.",
        Shape::Words,
    ),
    key(
        "form",
        "The fields the person fills in: a list = choice; text, number, boolean or date.",
        Shape::Form,
    ),
    key(
        "summary",
        "What the person deciding is shown, a template.",
        Shape::Template,
    ),
    key(
        "show",
        "What the task's page shows: `- { label: Total, value: quote.total, format: money }` or `- { label: Lines, table: quote.lines, columns: { Product: name } }`.",
        Shape::ListOf(SHOW),
    ),
    key(
        "due",
        "When the task is due, a duration such as P2D.",
        Shape::Timer,
    ),
    key(
        "reminders",
        "A repeating non-interrupting timer: `{ every: P1D, goto: remind }`.",
        Shape::Object(REMINDERS),
    ),
    key(
        "escalate",
        "An interrupting timer: `{ after: P3D, goto: director }`.",
        Shape::Object(ESCALATE),
    ),
    key(
        "email",
        "E-mail the decision as links, one per option: `{ to: quote.approver_email, template: approval-request }`.",
        Shape::Object(EMAIL),
    ),
];

pub const EMAIL: &[Key] = &[
    required(
        "to",
        "The approver's e-mail address, an expression.",
        Shape::Expr,
    ),
    required(
        "template",
        "The e-mail template (`processes/templates/<name>`); it gets `links.<option>`.",
        Shape::Text,
    ),
    key(
        "name",
        "The approver's name, an expression (shown on the page after use).",
        Shape::Expr,
    ),
    key(
        "field",
        "The choice field the links decide (default: the form's first choice field).",
        Shape::Text,
    ),
];

/// Keys of one entry of a user task's `show:`.
pub const SHOW: &[Key] = &[
    required(
        "label",
        "What the value is called on the page.",
        Shape::Text,
    ),
    key("value", "The value, an expression.", Shape::Expr),
    key(
        "table",
        "A list of maps to show as a table, an expression.",
        Shape::Expr,
    ),
    key(
        "columns",
        "The table's columns: heading -> expression over a row's keys.",
        Shape::Mapping,
    ),
    key(
        "format",
        "How to write the value.",
        Shape::Enum(&["money", "percent", "date"]),
    ),
];

pub const REMINDERS: &[Key] = &[
    required(
        "every",
        "How often, a duration (P1D) or a cron expression.",
        Shape::Timer,
    ),
    required("goto", "The step each reminder starts.", Shape::StepName),
    key("zone", "Time zone of the timer.", Shape::Zone),
];

pub const ESCALATE: &[Key] = &[
    required(
        "after",
        "How long after the task opens, a duration (P3D), or a template computed when the task opens.",
        Shape::Timer,
    ),
    required(
        "goto",
        "The step the task escalates to; the task is cancelled.",
        Shape::StepName,
    ),
    key("zone", "Time zone of the timer.", Shape::Zone),
];

pub const RETRY: &[Key] = &[
    key(
        "attempts",
        "Attempts in all, at least 1 (default 3).",
        Shape::Integer,
    ),
    key(
        "backoff",
        "Wait before the first retry, a duration (default PT1S).",
        Shape::Timer,
    ),
    key(
        "max_backoff",
        "Longest wait between retries (default PT5M).",
        Shape::Timer,
    ),
];

/// Keys of a branch of `decide`, `branch` or `then`.
pub const BRANCH: &[Key] = &[
    key("when", "The condition, an expression.", Shape::Expr),
    key("goto", "The step this branch goes to.", Shape::StepName),
    key(
        "otherwise",
        "The step to go to when no condition is true.",
        Shape::StepName,
    ),
];

/// Keys of a boundary event (`on:`).
pub const BOUNDARY: &[Key] = &[
    key(
        "error",
        "Catch a business error with this code, or `any`.",
        Shape::Text,
    ),
    key(
        "timer",
        "A timer that fires once; a template (\"{{ quote.valid_until }}\") is computed when armed.",
        Shape::Timer,
    ),
    key("every", "A timer that repeats.", Shape::Timer),
    key("message", "A message of this name.", Shape::Text),
    key(
        "key",
        "The message's correlation key, an expression.",
        Shape::Expr,
    ),
    key("zone", "Time zone of the timer.", Shape::Zone),
    key(
        "interrupt",
        "Whether the event cancels the step (default true).",
        Shape::Bool,
    ),
    required("goto", "The step the event leads to.", Shape::StepName),
];

/// Keys of a `wait:` map.
pub const WAIT: &[Key] = &[
    key(
        "timer",
        "A timer: duration, date-time, cycle or cron, or a template computed when armed.",
        Shape::Timer,
    ),
    key("zone", "Time zone of the timer.", Shape::Zone),
    key("message", "A message of this name.", Shape::Text),
    key(
        "key",
        "The message's correlation key, an expression.",
        Shape::Expr,
    ),
];

/// Keys of an arm of `race:`.
pub const RACE: &[Key] = &[
    key(
        "timer",
        "A timer: duration, date-time, cycle or cron, or a template computed when armed.",
        Shape::Timer,
    ),
    key("zone", "Time zone of the timer.", Shape::Zone),
    key("message", "A message of this name.", Shape::Text),
    key(
        "key",
        "The message's correlation key, an expression.",
        Shape::Expr,
    ),
    required("goto", "The step this event leads to.", Shape::StepName),
];

pub const SUBPROCESS: &[Key] = &[
    key(
        "start",
        "The first step inside (default: the first one).",
        Shape::StepName,
    ),
    required(
        "steps",
        "The steps inside, by name (unique in the whole file).",
        Shape::Steps,
    ),
];

pub const EACH: &[Key] = &[
    required("in", "The list to go through, an expression.", Shape::Expr),
    required("as", "The name each run sees its item as.", Shape::Text),
    key(
        "parallel",
        "Run all items at once (default true) or one after another.",
        Shape::Bool,
    ),
    key(
        "collect",
        "Collect one value per run: `{ name: expression }`.",
        Shape::Mapping,
    ),
];

pub const END: &[Key] = &[
    required("error", "The business error code thrown.", Shape::Text),
    key(
        "message",
        "A message for the error, a template.",
        Shape::Template,
    ),
];

/// Keys of a form field written as a map.
pub const FIELD: &[Key] = &[
    required(
        "type",
        "text, number, boolean, date, or a list of choices.",
        Shape::OneOf(&[Shape::Enum(FIELD_TYPES), Shape::Words]),
    ),
    key(
        "required",
        "Whether the field must be filled in (default true).",
        Shape::Bool,
    ),
    key("label", "The field's label.", Shape::Text),
    key("min", "Smallest number allowed.", Shape::Number),
    key("max", "Largest number allowed.", Shape::Number),
];

pub const FIELD_TYPES: &[&str] = &["text", "number", "boolean", "date"];

/// Every key a step may have, whatever its kind.
pub fn all_step_keys() -> impl Iterator<Item = &'static Key> {
    COMMON
        .iter()
        .chain(KINDS.iter().map(|k| &k.key))
        .chain(KINDS.iter().flat_map(|k| k.extras.iter()))
}

pub fn find_kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.key.name == name)
}

//! The stable codes of definition problems. docs/errors.md lists the same table (a test checks
//! that every code here is documented there), so a code never changes meaning once released.

pub const YAML_SYNTAX: &str = "CICLO-E0101";
pub const DUPLICATE_KEY: &str = "CICLO-E0102";
pub const UNKNOWN_KEY: &str = "CICLO-E0103";
pub const MISSING_KEY: &str = "CICLO-E0104";
pub const WRONG_TYPE: &str = "CICLO-E0105";
pub const TEMPLATE_AS_MAP: &str = "CICLO-E0106";
pub const INVALID_VALUE: &str = "CICLO-E0107";
pub const NOT_A_PROCESS_FILE: &str = "CICLO-E0108";
pub const NO_KIND: &str = "CICLO-E0110";
pub const TWO_KINDS: &str = "CICLO-E0111";
pub const MISPLACED_GOTO: &str = "CICLO-E0112";
pub const DUPLICATE_STEP: &str = "CICLO-E0113";
pub const UNKNOWN_STEP: &str = "CICLO-E0114";
pub const LEAVES_SUBPROCESS: &str = "CICLO-E0115";
pub const ENTERS_SUBPROCESS: &str = "CICLO-E0116";
pub const UNREACHABLE: &str = "CICLO-E0117";
pub const NEVER_ENDS: &str = "CICLO-E0118";
pub const NO_OTHERWISE: &str = "CICLO-E0119";
pub const BAD_EXPRESSION: &str = "CICLO-E0120";
pub const BAD_TEMPLATE: &str = "CICLO-E0121";
pub const BAD_TEST: &str = "CICLO-E0122";
pub const CELL_COUNT: &str = "CICLO-E0123";
pub const BAD_TIMER: &str = "CICLO-E0125";
pub const TIMER_NEVER_FIRES: &str = "CICLO-E0126";
pub const UNKNOWN_ZONE: &str = "CICLO-E0127";
pub const UNKNOWN_CONNECTOR: &str = "CICLO-E0130";
pub const UNKNOWN_OPERATION: &str = "CICLO-E0131";
pub const UNKNOWN_TABLE: &str = "CICLO-E0132";
pub const UNKNOWN_PROCESS: &str = "CICLO-E0133";
pub const DUPLICATE_NAME: &str = "CICLO-E0134";
pub const NOT_AN_ACTIVITY: &str = "CICLO-E0135";
pub const JOIN_NEVER_COMPLETES: &str = "CICLO-E0136";
pub const UNKNOWN_TEMPLATE: &str = "CICLO-E0137";
pub const UNKNOWN_DATA: &str = "CICLO-E0138";

/// Every code with a one-line meaning, for docs and tooling.
pub const ALL: &[(&str, &str)] = &[
    (YAML_SYNTAX, "the file is not valid YAML"),
    (DUPLICATE_KEY, "a map has the same key twice"),
    (UNKNOWN_KEY, "a key the language does not know here"),
    (MISSING_KEY, "a required key is missing"),
    (WRONG_TYPE, "a value has the wrong type"),
    (
        TEMPLATE_AS_MAP,
        "a bare {{ template }} that YAML read as a map",
    ),
    (
        INVALID_VALUE,
        "a value of the right type that is not allowed",
    ),
    (
        NOT_A_PROCESS_FILE,
        "the file is neither a process nor a table library",
    ),
    (NO_KIND, "a step says nothing about what it does"),
    (TWO_KINDS, "a step has two kind keys"),
    (
        MISPLACED_GOTO,
        "`goto` together with `then`, or on a step that routes itself",
    ),
    (DUPLICATE_STEP, "two steps have the same name"),
    (UNKNOWN_STEP, "a reference to a step that does not exist"),
    (
        LEAVES_SUBPROCESS,
        "a jump from inside a sub-process to a step outside it",
    ),
    (
        ENTERS_SUBPROCESS,
        "a jump into a sub-process from outside it",
    ),
    (UNREACHABLE, "a step no path reaches"),
    (NEVER_ENDS, "steps from which the flow can never end"),
    (NO_OTHERWISE, "a choice without `otherwise`"),
    (BAD_EXPRESSION, "an expression that does not parse"),
    (BAD_TEMPLATE, "a template that does not parse"),
    (BAD_TEST, "a decision-table cell that does not parse"),
    (
        CELL_COUNT,
        "a decision-table rule with the wrong number of cells",
    ),
    (BAD_TIMER, "a malformed timer"),
    (TIMER_NEVER_FIRES, "a timer that can never fire"),
    (UNKNOWN_ZONE, "an unknown time zone"),
    (UNKNOWN_CONNECTOR, "an unknown connector"),
    (UNKNOWN_OPERATION, "an unknown connector operation"),
    (UNKNOWN_TABLE, "an unknown decision table"),
    (UNKNOWN_PROCESS, "an unknown process in a call activity"),
    (DUPLICATE_NAME, "a process id or table name declared twice"),
    (
        NOT_AN_ACTIVITY,
        "boundary events or multi-instance on a step that is not a task or sub-process",
    ),
    (
        JOIN_NEVER_COMPLETES,
        "a `join: all` fed by paths that do not all start together",
    ),
    (
        UNKNOWN_TEMPLATE,
        "a `send:` names an e-mail template that does not exist",
    ),
    (
        UNKNOWN_DATA,
        "an expression reads `data.<name>` but no data file has that name",
    ),
];

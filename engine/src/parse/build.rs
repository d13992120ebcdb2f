//! Turns one file's YAML tree into a `Definition` (or a list of decision tables), reporting
//! every problem it meets instead of stopping at the first: an analyst fixing a file wants the
//! whole list at once.
//!
//! Step names are collected first (the whole file, sub-processes included) so that `goto` can
//! point forward; references that fail to resolve keep the id `UNRESOLVED` and leave a problem,
//! so a definition with problems is never handed to the runtime.

use std::collections::HashMap;

use rust_decimal::Decimal;

use super::codes;
use super::keys::{self, Key, Kind};
use super::suggest::{count, did_you_mean, list_all, list_words};
use super::yaml::{self, Node, Scalar, SourceMap, YamlIssue};
use crate::diagnostics::Problem;
use crate::expr::{Expr, Template, UnaryTest};
use crate::model::*;
use crate::schedule::Schedule;
use crate::validate::Reference;
use crate::value::Value;

/// The id of a step reference that names no step.
pub const UNRESOLVED: StepId = StepId::MAX;

/// What a file holds.
pub enum Parsed {
    Process {
        definition: Box<Definition>,
        references: Vec<Reference>,
    },
    Tables(Vec<DecisionTable>),
    /// Nothing usable (empty, not YAML, or neither kind of file).
    Nothing,
}

/// Reads a data file (`data/price-list.yaml`) into a value: maps, lists, texts, booleans,
/// null and numbers read exactly as decimals. Problems carry the file's line and column.
pub fn parse_data_file(file: &str, text: &str) -> (Option<Value>, Vec<Problem>) {
    let (root, issues) = yaml::read(text);
    let mut parser = FileParser {
        file: file.to_string(),
        text,
        map: SourceMap::new(text),
        problems: Vec::new(),
        zone: None,
        names: HashMap::new(),
        slots: Vec::new(),
        references: Vec::new(),
    };
    parser.yaml_issues(issues);
    let value = root.and_then(|root| parser.data_value(&root));
    if value.is_none() && parser.problems.is_empty() {
        parser.report(
            Span { line: 1, col: 1 },
            codes::NOT_A_PROCESS_FILE,
            "the data file is empty".into(),
            Some("a data file holds a map, such as `products: [...]`".into()),
        );
    }
    let value = value.filter(|_| parser.problems.is_empty());
    (value, parser.problems)
}

/// Reads one file. Problems are in file order only after the caller sorts them.
pub fn parse_file(file: &str, text: &str) -> (Parsed, Vec<Problem>) {
    let (root, issues) = yaml::read(text);
    let mut parser = FileParser {
        file: file.to_string(),
        text,
        map: SourceMap::new(text),
        problems: Vec::new(),
        zone: None,
        names: HashMap::new(),
        slots: Vec::new(),
        references: Vec::new(),
    };
    parser.yaml_issues(issues);
    let Some(root) = root else {
        if parser.problems.is_empty() {
            parser.report(
                Span { line: 1, col: 1 },
                codes::NOT_A_PROCESS_FILE,
                "the file is empty".into(),
                Some("a process file starts with `process: <id>`; a table library has only `tables:`".into()),
            );
        }
        return (Parsed::Nothing, parser.problems);
    };
    let parsed = parser.file(&root);
    (parsed, parser.problems)
}

impl FileParser<'_, '_> {
    /// Reports what the YAML reader found wrong.
    fn yaml_issues(&mut self, issues: Vec<YamlIssue>) {
        for issue in issues {
            match issue {
                YamlIssue::Syntax { span, message } => {
                    let hint = self.syntax_hint(span);
                    self.report(
                        span,
                        codes::YAML_SYNTAX,
                        format!("YAML syntax error: {message}"),
                        hint,
                    );
                }
                YamlIssue::DuplicateKey { span, key, first } => self.report(
                    span,
                    codes::DUPLICATE_KEY,
                    format!("duplicate key `{key}` (first at line {})", first.line),
                    Some("remove one of them: YAML would silently keep only one".into()),
                ),
            }
        }
    }

    /// A YAML node of a data file as a value; `None` (and a problem) where it cannot be one.
    fn data_value(&mut self, node: &Node) -> Option<Value> {
        if let Some(items) = node.as_seq() {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                list.push(self.data_value(item)?);
            }
            return Some(Value::List(list));
        }
        if let Some(entries) = node.as_map() {
            let mut map = std::collections::BTreeMap::new();
            for (key, value) in entries {
                let Some(Scalar::Str(name) | Scalar::Number(name)) = key.scalar() else {
                    self.report(
                        key.span,
                        codes::WRONG_TYPE,
                        format!(
                            "a key of a data file must be a text, found {}",
                            key.type_name()
                        ),
                        None,
                    );
                    return None;
                };
                let name = name.to_string();
                map.insert(name, self.data_value(value)?);
            }
            return Some(Value::Map(map));
        }
        Some(match node.scalar()? {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Str(s) => Value::String(s.to_string()),
            Scalar::Number(t) => match parse_decimal(t) {
                Some(d) => Value::Number(d),
                None => {
                    self.report(
                        node.span,
                        codes::INVALID_VALUE,
                        format!("`{t}` is not a decimal number"),
                        Some("numbers are decimals with at most 28 digits".into()),
                    );
                    return None;
                }
            },
        })
    }
}

struct Slot<'n> {
    name: String,
    span: Span,
    node: &'n Node,
    parent: Option<StepId>,
    /// For a step generated from a user task's `email:`, the task (`node` is then the
    /// `email:` map).
    email_of: Option<StepId>,
}

struct FileParser<'t, 'n> {
    file: String,
    text: &'t str,
    map: SourceMap,
    problems: Vec<Problem>,
    /// The process's default time zone for timers.
    zone: Option<String>,
    /// Step name -> id of its first declaration.
    names: HashMap<String, StepId>,
    slots: Vec<Slot<'n>>,
    references: Vec<Reference>,
}

/// What the value of a key should have been, for "wrong type" messages.
type Expected = &'static str;

impl<'t, 'n> FileParser<'t, 'n> {
    fn report(&mut self, span: Span, code: &'static str, message: String, hint: Option<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            line: span.line,
            col: span.col,
            code,
            message,
            hint,
        });
    }

    fn syntax_hint(&self, span: Span) -> Option<String> {
        // A value that starts with `{{` is the classic way to break YAML with a template; the
        // parser's own message ("did not find expected ',' or '}'") does not say so.
        let line = self
            .text
            .lines()
            .nth(span.line.saturating_sub(1) as usize)?;
        if line.contains("{{") {
            Some(
                "a value with {{ }} that starts with `{` must be in quotes: \"{{ x }} ...\"".into(),
            )
        } else {
            None
        }
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: Expected) {
        if let Some(template) = node.as_misread_template() {
            self.report(
                node.span,
                codes::TEMPLATE_AS_MAP,
                format!("this looks like a template but YAML read it as a map; put it in quotes: \"{template}\""),
                None,
            );
            return;
        }
        self.report(
            node.span,
            codes::WRONG_TYPE,
            format!("{what} should be {expected}, found {}", node.type_name()),
            None,
        );
    }

    /// Reports keys of `node` that are not in `allowed` and required keys that are missing.
    /// `context` names the map in messages ("step `approve`", "this rule").
    fn check_keys(&mut self, node: &Node, allowed: &[&Key], context: &str) {
        let Some(entries) = node.as_map() else { return };
        for (key, _) in entries {
            let Some(name) = key.text() else {
                self.wrong_type(key, "a key", "a word");
                continue;
            };
            if allowed.iter().any(|k| k.name == name) {
                continue;
            }
            let hint = did_you_mean(name, allowed.iter().map(|k| k.name))
                .map(|s| format!("did you mean `{s}`?"))
                .or_else(|| {
                    Some(format!(
                        "allowed here: {}",
                        list_words(allowed.iter().map(|k| k.name))
                    ))
                });
            self.report(
                key.span,
                codes::UNKNOWN_KEY,
                format!("unknown key `{name}` in {context}"),
                hint,
            );
        }
        for k in allowed.iter().filter(|k| k.required) {
            if node.get(k.name).is_none() {
                self.report(
                    node.span,
                    codes::MISSING_KEY,
                    format!("{context} needs `{}`", k.name),
                    Some(doc_hint(k.doc)),
                );
            }
        }
    }

    fn key_span(node: &Node, key: &str) -> Span {
        node.as_map()
            .and_then(|entries| entries.iter().find(|(k, _)| k.text() == Some(key)))
            .map(|(k, _)| k.span)
            .unwrap_or(node.span)
    }

    // ---- scalars -------------------------------------------------------------------------

    /// A text value (a name, a word). Numbers and booleans are taken as written.
    fn text(&mut self, node: &Node, what: &str) -> Option<String> {
        match node.scalar() {
            Some(Scalar::Str(s)) | Some(Scalar::Number(s)) => Some(s.to_string()),
            Some(Scalar::Bool(_)) => node.text().map(str::to_string),
            Some(Scalar::Null) => {
                self.report(
                    node.span,
                    codes::WRONG_TYPE,
                    format!("{what} is empty"),
                    None,
                );
                None
            }
            None => {
                self.wrong_type(node, what, "a text");
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.scalar() {
            Some(Scalar::Bool(b)) => Some(b),
            _ => {
                self.wrong_type(node, what, "true or false");
                None
            }
        }
    }

    fn decimal(&mut self, node: &Node, what: &str) -> Option<Decimal> {
        let parsed = match node.scalar() {
            Some(Scalar::Number(t)) => parse_decimal(t),
            _ => None,
        };
        if parsed.is_none() {
            self.wrong_type(node, what, "a number");
        }
        parsed
    }

    fn id(&mut self, node: &Node, what: &str) -> Option<String> {
        let id = self.text(node, what)?;
        let ok = id
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            self.report(
                node.span,
                codes::INVALID_VALUE,
                format!("`{id}` is not a valid {what}"),
                Some("use lowercase letters, digits, `-` and `_`, such as `quote-approval`".into()),
            );
        }
        Some(id)
    }

    /// A list of words; a single word is taken as a list of one.
    fn words(&mut self, node: &Node, what: &str) -> Vec<String> {
        match node.as_seq() {
            Some(items) => items
                .iter()
                .filter_map(|item| self.text(item, what))
                .collect(),
            None if node.as_map().is_none() => self.text(node, what).into_iter().collect(),
            None => {
                self.wrong_type(node, what, "a list of words");
                Vec::new()
            }
        }
    }

    // ---- expressions, templates, timers --------------------------------------------------

    /// An expression. YAML numbers, booleans and null are literals; a string is an expression.
    fn expr(&mut self, node: &Node, what: &str) -> Option<Expr> {
        let source = match node.scalar() {
            Some(Scalar::Str(s)) => s.to_string(),
            Some(Scalar::Number(t)) => match parse_decimal(t) {
                Some(d) => d.to_string(),
                None => {
                    self.report(
                        node.span,
                        codes::INVALID_VALUE,
                        format!("`{t}` is not a decimal number"),
                        None,
                    );
                    return None;
                }
            },
            Some(Scalar::Bool(b)) => b.to_string(),
            Some(Scalar::Null) => "null".to_string(),
            None => {
                if let Some(template) = node.as_misread_template() {
                    // In an expression the braces are not needed at all; quoting them would
                    // only trade this problem for a bad expression.
                    let inner = template
                        .trim_start_matches("{{")
                        .trim_end_matches("}}")
                        .trim();
                    self.report(
                        node.span,
                        codes::TEMPLATE_AS_MAP,
                        format!("this looks like a template but YAML read it as a map; an expression needs no braces: write `{inner}`"),
                        None,
                    );
                    return None;
                }
                self.wrong_type(node, what, "an expression");
                return None;
            }
        };
        match Expr::parse(&source) {
            Ok(expr) => {
                self.data_references(node, expr.data_references());
                Some(expr)
            }
            Err(error) => {
                let at = self.map.locate(node, error.offset);
                self.report(
                    at,
                    codes::BAD_EXPRESSION,
                    format!("bad expression `{source}`: {}", error.message),
                    None,
                );
                None
            }
        }
    }

    /// Records the data files an expression or template in `node` reads, with where.
    fn data_references(&mut self, node: &Node, found: Vec<(Option<String>, usize)>) {
        for (name, offset) in found {
            let span = self.map.locate(node, offset);
            self.references.push(Reference::Data { name, span });
        }
    }

    fn template(&mut self, node: &Node, what: &str) -> Option<Template> {
        let source = match node.scalar() {
            Some(Scalar::Null) => {
                self.report(
                    node.span,
                    codes::WRONG_TYPE,
                    format!("{what} is empty"),
                    None,
                );
                return None;
            }
            Some(_) => node.text().unwrap_or_default().to_string(),
            None => {
                self.wrong_type(node, what, "a text");
                return None;
            }
        };
        match Template::parse(&source) {
            Ok(template) => {
                self.data_references(node, template.data_references());
                Some(template)
            }
            Err(error) => {
                let at = self.map.locate(node, error.offset);
                self.report(
                    at,
                    codes::BAD_TEMPLATE,
                    format!("bad template `{source}`: {}", error.message),
                    None,
                );
                None
            }
        }
    }

    /// Reports a zone that the time-zone database does not know. When the machine has no
    /// database at all we cannot tell, and leave the check to the scheduler.
    fn check_zone(&mut self, node: &Node) -> Option<String> {
        let zone = self.text(node, "a time zone")?;
        let db = jiff::tz::db();
        if db.get(&zone).is_err() {
            let names: Vec<String> = db.available().map(|n| n.as_str().to_string()).collect();
            if !names.is_empty() {
                let hint = did_you_mean(&zone, names.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| Some("use an IANA name such as Europe/Rome or UTC".into()));
                self.report(
                    node.span,
                    codes::UNKNOWN_ZONE,
                    format!("unknown time zone `{zone}`"),
                    hint,
                );
                // Reported once here; timers read in it are checked in UTC instead of
                // repeating the same problem on each of them.
                return None;
            }
        }
        Some(zone)
    }

    /// A timer that fires once: written out (a schedule), or computed when armed from a
    /// template (`"{{ quote.valid_until }}"`). Its syntax and data files are checked here, and
    /// a template that reads no variable (`"{{ 'next week' }}"`) is computed here too, so a
    /// value that can never be a timer is a problem of the file, not an incident later.
    fn timer_spec(&mut self, node: &Node, zone: Option<&Node>) -> Option<TimerSpec> {
        let Some(Scalar::Str(written)) = node.scalar() else {
            return self.schedule(node, zone, "").map(TimerSpec::Fixed);
        };
        if !written.contains("{{") {
            return self.schedule(node, zone, "").map(TimerSpec::Fixed);
        }
        let template = self.template(node, "the timer")?;
        let zone_name = match zone {
            Some(z) => self.check_zone(z),
            None => self.zone.clone(),
        }
        .unwrap_or_else(|| "UTC".to_string());
        match jiff::tz::TimeZone::get(&zone_name) {
            Ok(zone) => {
                if template.variables().is_empty() {
                    self.check_constant_timer(node, &template, &zone_name, &zone);
                }
                Some(TimerSpec::Computed {
                    template,
                    zone,
                    zone_name,
                })
            }
            Err(_) => {
                self.report(
                    node.span,
                    codes::BAD_TIMER,
                    format!(
                        "unknown time zone `{zone_name}` for the timer `{}`",
                        template.source()
                    ),
                    None,
                );
                None
            }
        }
    }

    /// Computes a timer template that reads no variable, as the machine will when it arms it,
    /// and reports a value that is no timer. `now()` is read as the Unix epoch: only the kind
    /// of value matters here, and a time in the past is a timer that fires at once.
    fn check_constant_timer(
        &mut self,
        node: &Node,
        template: &Template,
        zone_name: &str,
        zone: &jiff::tz::TimeZone,
    ) {
        let ctx = crate::expr::Context {
            now: jiff::Timestamp::UNIX_EPOCH,
            zone: zone.clone(),
        };
        let problem = match template.value(&crate::value::Vars::new(), &ctx) {
            Ok(value) => crate::schedule::computed_due(&value, ctx.now, zone_name, zone).err(),
            Err(error) => Some(format!("cannot be computed: {error}")),
        };
        if let Some(why) = problem {
            self.report(
                node.span,
                codes::BAD_TIMER,
                format!("the timer `{}` {why}", template.source()),
                Some("a computed timer is a date, an instant or a duration, such as \"{{ add_days(quote.valid_until, 1) }}\" or \"{{ duration('P30D') }}\"".into()),
            );
        }
    }

    /// A timer. `prefix` is prepended to the written text (`R/` for `every: P1D`) and taken off
    /// error offsets again so they point into what the analyst wrote.
    fn schedule(&mut self, node: &Node, zone: Option<&Node>, prefix: &str) -> Option<Schedule> {
        let written = match node.scalar() {
            Some(Scalar::Str(s)) | Some(Scalar::Number(s)) => s.to_string(),
            _ => {
                self.wrong_type(
                    node,
                    "a timer",
                    "a duration such as P3D, a date-time or a cron expression",
                );
                return None;
            }
        };
        if written.contains("{{") {
            self.report(
                node.span,
                codes::BAD_TIMER,
                format!("the timer `{written}` cannot be computed here"),
                Some("a computed timer (`{{ }}`) fires once: write it in `wait`, a race's `timer`, an `on: - timer:` or `escalate: after`; `due`, `every` and `reminders` take a duration or cron".into()),
            );
            return None;
        }
        let zone = match zone {
            Some(z) => self.check_zone(z),
            None => self.zone.clone(),
        };
        let source = format!("{prefix}{written}");
        match Schedule::parse(&source, zone.as_deref()) {
            Ok(schedule) => {
                if let Err(error) = schedule.check_can_fire() {
                    let at = self
                        .map
                        .locate(node, error.offset.saturating_sub(prefix.len()));
                    self.report(
                        at,
                        codes::TIMER_NEVER_FIRES,
                        format!("timer `{written}` can never fire: {}", error.message),
                        None,
                    );
                }
                Some(schedule)
            }
            Err(error) => {
                let at = self
                    .map
                    .locate(node, error.offset.saturating_sub(prefix.len()));
                self.report(
                    at,
                    codes::BAD_TIMER,
                    format!("bad timer `{written}`: {}", error.message),
                    Some("write a duration (P3D, PT1H), a date-time (2027-01-01T09:00), a cycle (R/P1D) or cron (\"0 9 * * MON\")".into()),
                );
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<jiff::SignedDuration> {
        let text = self.text(node, what)?;
        match text.parse::<jiff::SignedDuration>() {
            Ok(d) if !d.is_negative() => Some(d),
            _ => {
                self.report(
                    node.span,
                    codes::INVALID_VALUE,
                    format!("`{text}` is not a duration in hours, minutes or seconds"),
                    Some("write it like PT1S, PT5M or PT2H".into()),
                );
                None
            }
        }
    }

    /// `name: expression` pairs (`set:`, `input:`, `output:`).
    fn mapping(&mut self, node: &Node, what: &str) -> Vec<Assignment> {
        if node.is_null() {
            return Vec::new();
        }
        let Some(entries) = node.as_map() else {
            self.wrong_type(node, what, "a map of names to expressions");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, value) in entries {
            let Some(target) = self.text(key, "a variable name") else {
                continue;
            };
            if !is_variable_path(&target) {
                self.report(
                    key.span,
                    codes::INVALID_VALUE,
                    format!("`{target}` is not a variable name"),
                    Some("use letters, digits and `_`, not starting with a digit; `a.b` sets field `b` of map `a`".into()),
                );
                continue;
            }
            if let Some(value) = self.expr(value, &format!("`{target}`")) {
                out.push(Assignment {
                    target,
                    value,
                    span: key.span,
                });
            }
        }
        out
    }

    // ---- the file ------------------------------------------------------------------------

    fn file(&mut self, root: &'n Node) -> Parsed {
        if root.as_map().is_none() {
            self.report(
                root.span,
                codes::NOT_A_PROCESS_FILE,
                format!("a process file is a map of keys, found {}", root.type_name()),
                Some("a process file starts with `process: <id>`; a table library has only `tables:`".into()),
            );
            return Parsed::Nothing;
        }
        if root.get("process").is_none() && root.get("steps").is_none() {
            if let Some(tables) = root.get("tables") {
                self.check_keys(root, &refs(keys::TABLE_FILE), "a table library");
                return Parsed::Tables(self.tables(tables));
            }
            self.report(
                root.span,
                codes::NOT_A_PROCESS_FILE,
                "this file is neither a process nor a table library".into(),
                Some("a process file starts with `process: <id>`; a table library has only `tables:`".into()),
            );
            return Parsed::Nothing;
        }
        self.check_keys(root, &refs(keys::PROCESS), "the process");
        let id = root
            .get("process")
            .and_then(|n| self.id(n, "process id"))
            .unwrap_or_default();
        let name = root.get("name").and_then(|n| self.text(n, "`name`"));
        if let Some(zone) = root.get("zone") {
            self.zone = self.check_zone(zone);
        }
        let mut inputs = Vec::new();
        if let Some(node) = root.get("inputs") {
            match node.as_map() {
                Some(entries) => {
                    for (k, v) in entries {
                        if let (Some(k), Some(v)) =
                            (self.text(k, "an input name"), self.text(v, "an input type"))
                        {
                            inputs.push((k, v));
                        }
                    }
                }
                None if node.is_null() => {}
                None => self.wrong_type(node, "`inputs`", "a map of names to type words"),
            }
        }
        let tables = root
            .get("tables")
            .map(|t| self.tables(t))
            .unwrap_or_default();

        let steps_node = root.get("steps");
        if let Some(steps) = steps_node {
            self.collect(steps, None);
        }
        let starts = self.starts(root);
        let steps: Vec<Step> = (0..self.slots.len())
            .map(|i| self.step(i as StepId))
            .collect();
        let definition = Definition {
            id,
            name,
            file: self.file.clone(),
            inputs,
            starts,
            steps,
            tables,
            data: Value::Null,
            index: self.names.clone(),
            span: root.span,
            zone: self
                .zone
                .as_deref()
                .and_then(|name| jiff::tz::TimeZone::get(name).ok())
                .unwrap_or(jiff::tz::TimeZone::UTC),
        };
        Parsed::Process {
            definition: Box::new(definition),
            references: std::mem::take(&mut self.references),
        }
    }

    /// Registers the steps of a container, depth first, so ids follow file order with each
    /// sub-process's steps right after it.
    fn collect(&mut self, steps: &'n Node, parent: Option<StepId>) {
        let Some(entries) = steps.as_map() else {
            if !steps.is_null() {
                self.wrong_type(steps, "`steps`", "a map of step names to steps");
            }
            return;
        };
        for (key, node) in entries {
            let Some(name) = self.text(key, "a step name") else {
                continue;
            };
            let valid = name
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_');
            if !valid {
                self.report(
                    key.span,
                    codes::INVALID_VALUE,
                    format!("`{name}` is not a valid step name"),
                    Some("use letters, digits, `-` and `_`, such as `send-quote`".into()),
                );
            }
            let id = self.slots.len() as StepId;
            match self.names.get(&name) {
                Some(&first) => {
                    let first_line = self.slots[first as usize].span.line;
                    self.report(
                        key.span,
                        codes::DUPLICATE_STEP,
                        format!("a step named `{name}` already exists (line {first_line})"),
                        Some(
                            "step names must be unique in the whole file, sub-processes included"
                                .into(),
                        ),
                    );
                }
                None => {
                    self.names.insert(name.clone(), id);
                }
            }
            self.slots.push(Slot {
                name: name.clone(),
                span: key.span,
                node,
                parent,
                email_of: None,
            });
            // A user task's `email:` gets a generated step right after the task; its name
            // cannot clash with a written one (a `.` is not allowed in step names).
            if node.get("task").is_some()
                && let Some(email) = node.get("email").filter(|e| e.as_map().is_some())
            {
                let generated = email_step_name(&name);
                self.names
                    .insert(generated.clone(), self.slots.len() as StepId);
                self.slots.push(Slot {
                    name: generated,
                    span: FileParser::key_span(node, "email"),
                    node: email,
                    parent,
                    email_of: Some(id),
                });
            }
            if let Some(inner) = node.get("subprocess").and_then(|s| s.get("steps")) {
                self.collect(inner, Some(id));
            }
        }
    }

    fn step_ref(&mut self, node: &Node, container: Option<StepId>) -> StepRef {
        let name = self.text(node, "a step name").unwrap_or_default();
        let id = match self.names.get(&name) {
            Some(&id) => id,
            None => {
                if !name.is_empty() {
                    let siblings: Vec<&str> = self
                        .slots
                        .iter()
                        .filter(|s| s.parent == container)
                        .map(|s| s.name.as_str())
                        .collect();
                    let hint = did_you_mean(&name, siblings.iter().copied())
                        .map(|s| format!("did you mean `{s}`?"))
                        .or_else(|| {
                            (!siblings.is_empty()).then(|| {
                                format!("steps here: {}", list_words(siblings.iter().copied()))
                            })
                        });
                    self.report(
                        node.span,
                        codes::UNKNOWN_STEP,
                        format!("there is no step named `{name}`"),
                        hint,
                    );
                }
                UNRESOLVED
            }
        };
        StepRef {
            name,
            id,
            span: node.span,
        }
    }

    /// The first step of a container, the default start.
    fn first_step(&self, container: Option<StepId>, span: Span) -> Option<StepRef> {
        let (id, slot) = self
            .slots
            .iter()
            .enumerate()
            .find(|(_, s)| s.parent == container)?;
        Some(StepRef {
            name: slot.name.clone(),
            id: id as StepId,
            span,
        })
    }

    fn starts(&mut self, root: &Node) -> Vec<Start> {
        let Some(node) = root.get("start") else {
            let span = FileParser::key_span(root, "steps");
            if self.first_step(None, span).is_none() && root.get("steps").is_some() {
                self.report(
                    span,
                    codes::MISSING_KEY,
                    "the process has no steps".into(),
                    Some("add at least one step under `steps:`".into()),
                );
            }
            return self
                .first_step(None, span)
                .map(|target| Start {
                    trigger: StartTrigger::None,
                    target,
                    span,
                })
                .into_iter()
                .collect();
        };
        let items: Vec<&Node> = match node.as_seq() {
            Some(items) => items.iter().collect(),
            None => vec![node],
        };
        let mut starts = Vec::new();
        for item in items {
            if item.as_map().is_none() {
                if item.scalar().is_some() {
                    let target = self.step_ref(item, None);
                    starts.push(Start {
                        trigger: StartTrigger::None,
                        target,
                        span: item.span,
                    });
                } else {
                    self.wrong_type(item, "`start`", "a step name or a map with `goto`");
                }
                continue;
            }
            self.check_keys(item, &refs(keys::START), "this start");
            let Some(goto) = item.get("goto") else {
                continue;
            };
            let target = self.step_ref(goto, None);
            let trigger = match (item.get("message"), item.get("timer")) {
                (Some(_), Some(timer)) => {
                    self.report(
                        timer.span,
                        codes::INVALID_VALUE,
                        "a start has either `message` or `timer`, not both".into(),
                        Some("write two starts in a list".into()),
                    );
                    continue;
                }
                (Some(message), None) => match self.text(message, "`message`") {
                    Some(name) => StartTrigger::Message { name },
                    None => continue,
                },
                (None, Some(timer)) => match self.schedule(timer, item.get("zone"), "") {
                    Some(schedule) => StartTrigger::Timer { schedule },
                    None => continue,
                },
                (None, None) => StartTrigger::None,
            };
            starts.push(Start {
                trigger,
                target,
                span: item.span,
            });
        }
        starts
    }

    // ---- steps ---------------------------------------------------------------------------

    fn step(&mut self, id: StepId) -> Step {
        let (name, span, node, parent) = {
            let slot = &self.slots[id as usize];
            (slot.name.clone(), slot.span, slot.node, slot.parent)
        };
        if let Some(task) = self.slots[id as usize].email_of {
            return self.email_step(id, task, node);
        }
        let mut step = Step {
            name: name.clone(),
            id,
            parent,
            label: None,
            kind: StepKind::End(EndKind::None),
            next: Next::End,
            boundary: Vec::new(),
            multi: None,
            span,
        };
        let Some(entries) = node.as_map() else {
            if node.is_null() {
                self.report(
                    span,
                    codes::NO_KIND,
                    format!("step `{name}` is empty"),
                    Some(format!(
                        "give it one of: {}",
                        list_all(keys::KINDS.iter().map(|k| k.key.name))
                    )),
                );
            } else {
                self.wrong_type(
                    node,
                    &format!("step `{name}`"),
                    "a map such as `{ set: ..., goto: ... }`",
                );
            }
            return step;
        };
        let context = format!("step `{name}`");

        let kinds: Vec<(&Node, &'static Kind)> = entries
            .iter()
            .filter_map(|(k, _)| Some((k, keys::find_kind(k.text()?)?)))
            .collect();
        let kind = kinds.first().map(|(_, k)| *k);
        if let Some((second, second_kind)) = kinds.get(1) {
            self.report(
                second.span,
                codes::TWO_KINDS,
                format!(
                    "step `{name}` has two kinds, `{}` and `{}`",
                    kinds[0].1.key.name, second_kind.key.name
                ),
                Some("a step does one thing: split it into two steps joined by `goto`".into()),
            );
        }

        // Unknown keys: anything not common, not a kind, and not an extra of this step's kind.
        let problems_before = self.problems.len();
        for (key, _) in entries {
            let Some(key_name) = key.text() else { continue };
            let known = keys::COMMON.iter().any(|k| k.name == key_name)
                || keys::find_kind(key_name).is_some()
                || kind.is_some_and(|k| k.extras.iter().any(|e| e.name == key_name));
            if known {
                continue;
            }
            let owner = keys::KINDS
                .iter()
                .find(|k| k.extras.iter().any(|e| e.name == key_name));
            match (owner, kind) {
                (Some(owner), Some(kind)) => self.report(
                    key.span,
                    codes::UNKNOWN_KEY,
                    format!("`{key_name}` does not belong to a `{}` step", kind.key.name),
                    Some(format!(
                        "`{key_name}` belongs to `{}` steps",
                        owner.key.name
                    )),
                ),
                (Some(_), None) => {}
                (None, _) => {
                    let allowed: Vec<&str> = keys::COMMON
                        .iter()
                        .chain(kind.map(|k| k.extras).unwrap_or(&[]))
                        .map(|k| k.name)
                        .chain(keys::KINDS.iter().map(|k| k.key.name))
                        .collect();
                    let hint = did_you_mean(key_name, allowed.iter().copied())
                        .map(|s| format!("did you mean `{s}`?"));
                    self.report(
                        key.span,
                        codes::UNKNOWN_KEY,
                        format!("unknown key `{key_name}` in {context}"),
                        hint,
                    );
                }
            }
        }
        let Some(kind) = kind else {
            // An unknown key is most likely the misspelt kind (`tsk:`): one problem is enough.
            if self.problems.len() == problems_before {
                self.report(
                    span,
                    codes::NO_KIND,
                    format!("step `{name}` does not say what it does"),
                    Some(format!(
                        "give it one of: {}",
                        list_all(keys::KINDS.iter().map(|k| k.key.name))
                    )),
                );
            }
            // Still follow its `goto`, `then` and `on`, so the steps after it are not reported
            // as unreachable because of this one mistake.
            self.flow(&mut step, node, &keys::KINDS[0], parent);
            return step;
        };
        for extra in kind.extras.iter().filter(|e| e.required) {
            if node.get(extra.name).is_none() {
                self.report(
                    span,
                    codes::MISSING_KEY,
                    format!("{context} needs `{}`", extra.name),
                    Some(doc_hint(extra.doc)),
                );
            }
        }
        self.flow(&mut step, node, kind, parent);
        for key in ["on", "each"] {
            if node.get(key).is_some() && !kind.is_activity {
                self.report(
                    FileParser::key_span(node, key),
                    codes::NOT_AN_ACTIVITY,
                    format!(
                        "`{key}` applies to tasks and sub-processes, not to a `{}` step",
                        kind.key.name
                    ),
                    None,
                );
            }
        }
        let value = node.get(kind.key.name).unwrap_or(node);
        step.kind = self.kind(kind, value, node, id, parent, &mut step.boundary);
        step
    }

    /// The keys every step shares: `label`, `goto`/`then`, `on` and `each`.
    fn flow(&mut self, step: &mut Step, node: &Node, kind: &Kind, parent: Option<StepId>) {
        step.label = node.get("label").and_then(|n| self.text(n, "`label`"));
        step.next = self.next(node, kind, parent);
        if let Some(on) = node.get("on") {
            step.boundary = self.boundaries(on, parent);
        }
        if let Some(each) = node.get("each") {
            step.multi = self.multi(each);
        }
    }

    fn next(&mut self, node: &Node, kind: &Kind, parent: Option<StepId>) -> Next {
        let goto = node.get("goto");
        let then = node.get("then");
        if kind.routes_itself {
            for key in ["goto", "then"] {
                if node.get(key).is_some() {
                    let why = if kind.key.name == "end" {
                        "an `end` step ends its path".to_string()
                    } else {
                        format!("a `{}` step names its targets itself", kind.key.name)
                    };
                    self.report(
                        FileParser::key_span(node, key),
                        codes::MISPLACED_GOTO,
                        format!("`{key}` does not apply here: {why}"),
                        Some(format!("remove `{key}`")),
                    );
                }
            }
            return Next::End;
        }
        match (goto, then) {
            (Some(_), Some(_)) => {
                self.report(
                    FileParser::key_span(node, "then"),
                    codes::MISPLACED_GOTO,
                    "a step has either `goto` or `then`, not both".into(),
                    Some("put the default path in `then` as `- otherwise: <step>`".into()),
                );
                Next::End
            }
            (Some(goto), None) => Next::Goto(self.step_ref(goto, parent)),
            (None, Some(then)) => Next::Choose(self.choice(
                FileParser::key_span(node, "then"),
                then,
                parent,
                "`then`",
            )),
            (None, None) => Next::End,
        }
    }

    fn choice(&mut self, span: Span, node: &Node, container: Option<StepId>, what: &str) -> Choice {
        let mut choice = Choice {
            branches: Vec::new(),
            otherwise: None,
            span,
        };
        let Some(items) = node.as_seq() else {
            self.wrong_type(
                node,
                what,
                "a list of `- when: ... goto: ...` and `- otherwise: ...`",
            );
            return choice;
        };
        for item in items {
            if item.as_map().is_none() {
                self.wrong_type(
                    item,
                    "a branch",
                    "a map with `when` and `goto`, or `otherwise`",
                );
                continue;
            }
            self.check_keys(item, &refs(keys::BRANCH), "this branch");
            if let Some(otherwise) = item.get("otherwise") {
                if let Some(extra) = item.get("when").or(item.get("goto")) {
                    self.report(
                        extra.span,
                        codes::INVALID_VALUE,
                        "`otherwise` stands alone: it takes no `when` or `goto`".into(),
                        Some("write `- otherwise: <step>`".into()),
                    );
                }
                if choice.otherwise.is_some() {
                    self.report(
                        otherwise.span,
                        codes::INVALID_VALUE,
                        "a choice has only one `otherwise`".into(),
                        None,
                    );
                    continue;
                }
                choice.otherwise = Some(self.step_ref(otherwise, container));
                continue;
            }
            if choice.otherwise.is_some() {
                self.report(
                    item.span,
                    codes::INVALID_VALUE,
                    "a branch after `otherwise` is never taken".into(),
                    Some("put `- otherwise: <step>` last".into()),
                );
            }
            let when = match item.get("when") {
                Some(when) => self.expr(when, "`when`"),
                None => {
                    self.report(
                        item.span,
                        codes::MISSING_KEY,
                        "this branch needs `when`".into(),
                        Some("the condition, an expression".into()),
                    );
                    None
                }
            };
            let target = match item.get("goto") {
                Some(goto) => self.step_ref(goto, container),
                None => {
                    self.report(
                        item.span,
                        codes::MISSING_KEY,
                        "this branch needs `goto`".into(),
                        Some("the step this branch goes to".into()),
                    );
                    continue;
                }
            };
            if let Some(when) = when {
                choice.branches.push(Branch {
                    when,
                    target,
                    span: item.span,
                });
            }
        }
        choice
    }

    fn kind(
        &mut self,
        kind: &Kind,
        value: &Node,
        node: &Node,
        id: StepId,
        parent: Option<StepId>,
        boundary: &mut Vec<Boundary>,
    ) -> StepKind {
        let input = |this: &mut Self| {
            node.get("input")
                .map(|n| this.mapping(n, "`input`"))
                .unwrap_or_default()
        };
        let output = |this: &mut Self| {
            node.get("output")
                .map(|n| this.mapping(n, "`output`"))
                .unwrap_or_default()
        };
        let retry = |this: &mut Self| node.get("retry").map(|n| this.retry(n)).unwrap_or_default();
        match kind.key.name {
            "set" => StepKind::Script {
                assignments: self.mapping(value, "`set`"),
            },
            "call" => {
                let text = self.text(value, "`call`").unwrap_or_default();
                let (connector, operation) = match text.split_once('.') {
                    Some((c, o)) if !c.is_empty() && !o.is_empty() => {
                        (c.to_string(), o.to_string())
                    }
                    _ => {
                        if !text.is_empty() {
                            self.report(
                                value.span,
                                codes::INVALID_VALUE,
                                format!("`{text}` does not name a connector operation"),
                                Some(
                                    "write `connector.operation`, such as `erp.create-order`"
                                        .into(),
                                ),
                            );
                        }
                        (text.clone(), String::new())
                    }
                };
                if !operation.is_empty() {
                    let operation_at = self.map.locate(value, connector.len() + 1);
                    self.references.push(Reference::Connector {
                        connector: connector.clone(),
                        operation: operation.clone(),
                        connector_span: self.map.locate(value, 0),
                        operation_span: operation_at,
                    });
                }
                StepKind::Service {
                    connector,
                    operation,
                    input: input(self),
                    output: output(self),
                    retry: retry(self),
                }
            }
            "send" => {
                let template = self.text(value, "`send`").unwrap_or_default();
                self.references.push(Reference::Template {
                    name: template.clone(),
                    span: value.span,
                });
                let to = node.get("to").and_then(|n| self.expr(n, "`to`"));
                let input = input(self);
                let retry = retry(self);
                match to {
                    Some(to) => StepKind::Send {
                        template,
                        to,
                        input,
                        retry,
                    },
                    None => StepKind::End(EndKind::None),
                }
            }
            "task" => self.user_task(value, node, parent, boundary),
            "rules" => {
                let table = self.text(value, "`rules`").unwrap_or_default();
                self.references.push(Reference::Table {
                    name: table.clone(),
                    span: value.span,
                });
                let result = node
                    .get("result")
                    .and_then(|n| self.text(n, "`result`"))
                    .unwrap_or_default();
                StepKind::Rules { table, result }
            }
            "receive" => {
                let name = self.text(value, "`receive`").unwrap_or_default();
                let key = node.get("key").and_then(|n| self.expr(n, "`key`"));
                StepKind::Receive {
                    message: MessageCatch { name, key },
                }
            }
            "wait" => match self.catch_event(value, "`wait`") {
                Some(event) => StepKind::Wait { event },
                None => StepKind::End(EndKind::None),
            },
            "process" => {
                let process = self.id(value, "process id").unwrap_or_default();
                self.references.push(Reference::Process {
                    name: process.clone(),
                    span: value.span,
                });
                StepKind::CallProcess {
                    process,
                    input: input(self),
                    output: output(self),
                }
            }
            "decide" => StepKind::Decide(self.choice(
                FileParser::key_span(node, "decide"),
                value,
                parent,
                "`decide`",
            )),
            "branch" => StepKind::Inclusive(self.choice(
                FileParser::key_span(node, "branch"),
                value,
                parent,
                "`branch`",
            )),
            "parallel" => {
                let branches = match value.as_seq() {
                    Some(items) => items.iter().map(|i| self.step_ref(i, parent)).collect(),
                    None => {
                        self.wrong_type(value, "`parallel`", "a list of step names");
                        Vec::new()
                    }
                };
                StepKind::Parallel { branches }
            }
            "join" => match value.text() {
                Some("all") => StepKind::Join { inclusive: false },
                Some("any") => StepKind::Join { inclusive: true },
                _ => {
                    self.report(
                        value.span,
                        codes::INVALID_VALUE,
                        "`join` is `all` or `any`".into(),
                        Some("`all` waits for every incoming path; `any` for the paths that can still arrive".into()),
                    );
                    StepKind::Join { inclusive: false }
                }
            },
            "race" => {
                let mut events = Vec::new();
                match value.as_seq() {
                    Some(items) => {
                        for item in items {
                            if item.as_map().is_none() {
                                self.wrong_type(
                                    item,
                                    "a `race` entry",
                                    "a map with `message` or `timer`, and `goto`",
                                );
                                continue;
                            }
                            self.check_keys(item, &refs(keys::RACE), "this `race` entry");
                            let event = self.catch_event(item, "a `race` entry");
                            let target = item.get("goto").map(|g| self.step_ref(g, parent));
                            if let (Some(event), Some(target)) = (event, target) {
                                events.push(RaceArm {
                                    event,
                                    target,
                                    span: item.span,
                                });
                            }
                        }
                    }
                    None => self.wrong_type(value, "`race`", "a list of events with `goto`"),
                }
                StepKind::Race { events }
            }
            "subprocess" => {
                if value.as_map().is_none() {
                    self.wrong_type(value, "`subprocess`", "a map with `steps`");
                    return StepKind::Subprocess {
                        start: StepRef {
                            name: String::new(),
                            id: UNRESOLVED,
                            span: value.span,
                        },
                    };
                }
                self.check_keys(value, &refs(keys::SUBPROCESS), "this sub-process");
                let start = match value.get("start") {
                    Some(start) => self.step_ref(start, Some(id)),
                    None => match self.first_step(Some(id), value.span) {
                        Some(first) => first,
                        None => {
                            if value.get("steps").is_some() {
                                self.report(
                                    value.span,
                                    codes::MISSING_KEY,
                                    "this sub-process has no steps".into(),
                                    None,
                                );
                            }
                            StepRef {
                                name: String::new(),
                                id: UNRESOLVED,
                                span: value.span,
                            }
                        }
                    },
                };
                StepKind::Subprocess { start }
            }
            "end" => StepKind::End(self.end(value)),
            _ => StepKind::End(EndKind::None),
        }
    }

    fn end(&mut self, value: &Node) -> EndKind {
        match value.scalar() {
            Some(Scalar::Bool(true)) => return EndKind::None,
            Some(Scalar::Str("terminate")) => return EndKind::Terminate,
            _ => {}
        }
        if value.as_map().is_none() {
            self.report(
                value.span,
                codes::INVALID_VALUE,
                format!(
                    "`end` is `true`, `terminate` or `{{ error: CODE }}`, found {}",
                    describe(value)
                ),
                None,
            );
            return EndKind::None;
        }
        self.check_keys(value, &refs(keys::END), "this end");
        let code = value
            .get("error")
            .and_then(|n| self.text(n, "`error`"))
            .unwrap_or_default();
        if code.trim().is_empty()
            && let Some(node) = value.get("error")
        {
            self.report(
                node.span,
                codes::INVALID_VALUE,
                "an error end needs an error code".into(),
                Some("write a code that an `on: - error:` can catch, for example `error: CUSTOMER_BLOCKED`".into()),
            );
        }
        let message = value
            .get("message")
            .and_then(|n| self.template(n, "`message`"));
        EndKind::Error { code, message }
    }

    /// `wait:` and race entries: a timer (a scalar, or `timer:`) or a message.
    fn catch_event(&mut self, value: &Node, what: &str) -> Option<CatchEvent> {
        if value.scalar().is_some() {
            return self.timer_spec(value, None).map(CatchEvent::Timer);
        }
        if value.as_map().is_none() {
            self.wrong_type(value, what, "a timer or a map with `timer` or `message`");
            return None;
        }
        if what == "`wait`" {
            self.check_keys(value, &refs(keys::WAIT), "this `wait`");
        }
        match (value.get("timer"), value.get("message")) {
            (Some(timer), None) => {
                if let Some(key) = value.get("key") {
                    self.report(
                        key.span,
                        codes::INVALID_VALUE,
                        "`key` goes with `message`, not `timer`".into(),
                        None,
                    );
                }
                self.timer_spec(timer, value.get("zone"))
                    .map(CatchEvent::Timer)
            }
            (None, Some(message)) => {
                if let Some(zone) = value.get("zone") {
                    self.report(
                        zone.span,
                        codes::INVALID_VALUE,
                        "`zone` goes with `timer`, not `message`".into(),
                        None,
                    );
                }
                let name = self.text(message, "`message`")?;
                let key = value.get("key").and_then(|k| self.expr(k, "`key`"));
                Some(CatchEvent::Message(MessageCatch { name, key }))
            }
            (Some(_), Some(message)) => {
                self.report(
                    message.span,
                    codes::INVALID_VALUE,
                    format!("{what} waits for a `timer` or a `message`, not both"),
                    None,
                );
                None
            }
            (None, None) => {
                self.report(
                    value.span,
                    codes::MISSING_KEY,
                    format!("{what} needs `timer` or `message`"),
                    None,
                );
                None
            }
        }
    }

    fn user_task(
        &mut self,
        value: &Node,
        node: &Node,
        parent: Option<StepId>,
        boundary: &mut Vec<Boundary>,
    ) -> StepKind {
        let title = self.template(value, "the task title");
        let assignee = node
            .get("assignee")
            .and_then(|n| self.template(n, "`assignee`"));
        let candidates = node
            .get("candidates")
            .map(|n| self.words(n, "`candidates`"))
            .unwrap_or_default();
        let form = node.get("form").map(|n| self.form(n)).unwrap_or_default();
        let summary = node
            .get("summary")
            .and_then(|n| self.template(n, "`summary`"));
        let show = node.get("show").map(|n| self.show(n)).unwrap_or_default();
        let due = node.get("due").and_then(|n| self.schedule(n, None, ""));
        if let Some(reminders) = node.get("reminders") {
            if reminders.as_map().is_some() {
                self.check_keys(reminders, &refs(keys::REMINDERS), "`reminders`");
                let timer = reminders.get("every").and_then(|every| {
                    let prefix = if every.text().is_some_and(|t| t.starts_with('P')) {
                        "R/"
                    } else {
                        ""
                    };
                    self.schedule(every, reminders.get("zone"), prefix)
                });
                let target = reminders.get("goto").map(|g| self.step_ref(g, parent));
                if let (Some(timer), Some(target)) = (timer, target) {
                    boundary.push(Boundary {
                        event: BoundaryEvent::Timer(TimerSpec::Fixed(timer)),
                        interrupting: false,
                        target,
                        span: FileParser::key_span(node, "reminders"),
                    });
                }
            } else {
                self.wrong_type(
                    reminders,
                    "`reminders`",
                    "a map such as `{ every: P1D, goto: remind }`",
                );
            }
        }
        if let Some(escalate) = node.get("escalate") {
            if escalate.as_map().is_some() {
                self.check_keys(escalate, &refs(keys::ESCALATE), "`escalate`");
                let timer = escalate
                    .get("after")
                    .and_then(|after| self.timer_spec(after, escalate.get("zone")));
                let target = escalate.get("goto").map(|g| self.step_ref(g, parent));
                if let (Some(timer), Some(target)) = (timer, target) {
                    boundary.push(Boundary {
                        event: BoundaryEvent::Timer(timer),
                        interrupting: true,
                        target,
                        span: FileParser::key_span(node, "escalate"),
                    });
                }
            } else {
                self.wrong_type(
                    escalate,
                    "`escalate`",
                    "a map such as `{ after: P3D, goto: director }`",
                );
            }
        }
        let email = node
            .get("email")
            .and_then(|email| self.email_links(email, node, &form, boundary))
            .map(Box::new);
        match title {
            Some(title) => StepKind::User(UserTask {
                title,
                assignee,
                candidates,
                form,
                due,
                summary,
                show,
                email,
            }),
            None => StepKind::End(EndKind::None),
        }
    }

    /// A user task's `email:`: checks its keys, names the decision field, and attaches the
    /// non-interrupting `PT0S` timer that starts the generated `links.send` step as soon as
    /// the task opens (the same desugaring as `reminders:`, to a step of our own).
    fn email_links(
        &mut self,
        email: &Node,
        node: &Node,
        form: &[FormField],
        boundary: &mut Vec<Boundary>,
    ) -> Option<EmailLinks> {
        if email.as_map().is_none() {
            self.wrong_type(
                email,
                "`email`",
                "a map such as `{ to: quote.approver_email, template: approval-request }`",
            );
            return None;
        }
        self.check_keys(email, &refs(keys::EMAIL), "`email`");
        // The timer first, so that a mistake below does not also leave the generated step
        // unreached.
        let generated = self
            .slots
            .iter()
            .position(|s| s.email_of.is_some() && std::ptr::eq(s.node, email))
            .map(|i| i as StepId)?;
        let step_name = self.slots[generated as usize].name.clone();
        let schedule = Schedule::parse("PT0S", None).ok()?;
        boundary.push(Boundary {
            event: BoundaryEvent::Timer(TimerSpec::Fixed(schedule)),
            interrupting: false,
            target: StepRef {
                name: step_name,
                id: generated,
                span: FileParser::key_span(node, "email"),
            },
            span: FileParser::key_span(node, "email"),
        });
        let template_node = email.get("template")?;
        let template = self.text(template_node, "`template`")?;
        self.references.push(Reference::Template {
            name: template.clone(),
            span: template_node.span,
        });
        let field = match email.get("field") {
            Some(field_node) => {
                let name = self.text(field_node, "`field`")?;
                match form.iter().find(|f| f.name == name) {
                    Some(f) if matches!(f.kind, FieldKind::Choice(_)) => name,
                    Some(_) => {
                        self.report(
                            field_node.span,
                            codes::INVALID_VALUE,
                            format!("form field `{name}` is not a choice"),
                            Some(
                                "links decide a choice field: `decision: [approve, reject]`".into(),
                            ),
                        );
                        return None;
                    }
                    None => {
                        let hint = did_you_mean(&name, form.iter().map(|f| f.name.as_str()))
                            .map(|s| format!("did you mean `{s}`?"));
                        self.report(
                            field_node.span,
                            codes::INVALID_VALUE,
                            format!("the form has no field `{name}`"),
                            hint,
                        );
                        return None;
                    }
                }
            }
            None => match form.iter().find(|f| matches!(f.kind, FieldKind::Choice(_))) {
                Some(f) => f.name.clone(),
                None => {
                    self.report(
                        FileParser::key_span(node, "email"),
                        codes::INVALID_VALUE,
                        "`email` sends one link per option of a choice field, and the form has none".into(),
                        Some("add a field such as `decision: [approve, reject]` to `form`".into()),
                    );
                    return None;
                }
            },
        };
        Some(EmailLinks {
            template,
            field,
            step: generated,
        })
    }

    /// The step generated for a user task's `email:`: `call: links.send` with the recipient
    /// and the task's step name as input; the connector finds the rest (template, decision
    /// field) in the definition. It ends its path.
    fn email_step(&mut self, id: StepId, task: StepId, email: &Node) -> Step {
        let slot = &self.slots[id as usize];
        let (name, span, parent) = (slot.name.clone(), slot.span, slot.parent);
        let task_name = self.slots[task as usize].name.clone();
        let mut input = Vec::new();
        for key in ["to", "name"] {
            if let Some(value) = email.get(key)
                && let Some(expr) = self.expr(value, &format!("`{key}`"))
            {
                input.push(Assignment {
                    target: key.into(),
                    value: expr,
                    span: value.span,
                });
            }
        }
        if let Ok(literal) = Expr::parse(&format!("'{task_name}'")) {
            input.push(Assignment {
                target: "step".into(),
                value: literal,
                span,
            });
        }
        Step {
            name,
            id,
            parent,
            label: Some("E-mail links".into()),
            kind: StepKind::Service {
                connector: "links".into(),
                operation: "send".into(),
                input,
                output: Vec::new(),
                retry: RetryPolicy::default(),
            },
            next: Next::End,
            boundary: Vec::new(),
            multi: None,
            span,
        }
    }

    /// A user task's `show:`: a list of `{label, value | table + columns, format}`.
    fn show(&mut self, node: &Node) -> Vec<ShowItem> {
        let expected = "a list such as `- { label: Total, value: quote.total }`";
        let Some(items) = node.as_seq() else {
            if !node.is_null() {
                self.wrong_type(node, "`show`", expected);
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            if item.as_map().is_none() {
                self.wrong_type(
                    item,
                    "an entry of `show`",
                    "a map with `label` and `value` or `table`",
                );
                continue;
            }
            self.check_keys(item, &refs(keys::SHOW), "this entry of `show`");
            let label = item.get("label").and_then(|l| self.text(l, "`label`"));
            let format = item.get("format").and_then(|f| match f.text() {
                Some("money") => Some(ShowFormat::Money),
                Some("percent") => Some(ShowFormat::Percent),
                Some("date") => Some(ShowFormat::Date),
                _ => {
                    self.report(
                        f.span,
                        codes::INVALID_VALUE,
                        format!("unknown format `{}`", f.text().unwrap_or("?")),
                        Some("use money, percent or date".into()),
                    );
                    None
                }
            });
            let content = match (item.get("value"), item.get("table"), item.get("columns")) {
                (Some(value), None, None) => self.expr(value, "`value`").map(ShowContent::Value),
                (None, Some(table), Some(columns)) => {
                    let rows = self.expr(table, "`table`");
                    let columns = self.show_columns(columns);
                    rows.map(|rows| ShowContent::Table { rows, columns })
                }
                (None, Some(table), None) => {
                    self.report(
                        table.span,
                        codes::MISSING_KEY,
                        "`table` needs `columns`".into(),
                        Some("write `columns: { Product: name, Qty: qty }`".into()),
                    );
                    None
                }
                (Some(value), Some(_), _) | (Some(value), None, Some(_)) => {
                    self.report(
                        value.span,
                        codes::INVALID_VALUE,
                        "an entry of `show` has a `value`, or a `table` with `columns`, not both"
                            .into(),
                        None,
                    );
                    None
                }
                (None, None, _) => {
                    self.report(
                        item.span,
                        codes::MISSING_KEY,
                        "an entry of `show` needs `value`, or `table` with `columns`".into(),
                        None,
                    );
                    None
                }
            };
            if let (Some(label), Some(content)) = (label, content) {
                out.push(ShowItem {
                    label,
                    content,
                    format,
                    span: item.span,
                });
            }
        }
        out
    }

    fn show_columns(&mut self, node: &Node) -> Vec<(String, Expr)> {
        let Some(entries) = node.as_map() else {
            self.wrong_type(node, "`columns`", "a map of headings to expressions");
            return Vec::new();
        };
        let mut columns = Vec::new();
        for (key, value) in entries {
            let heading = self.text(key, "a column heading");
            let expr = self.expr(value, "a column");
            if let (Some(heading), Some(expr)) = (heading, expr) {
                columns.push((heading, expr));
            }
        }
        columns
    }

    fn form(&mut self, node: &Node) -> Vec<FormField> {
        let Some(entries) = node.as_map() else {
            if !node.is_null() {
                self.wrong_type(node, "`form`", "a map of field names to types");
            }
            return Vec::new();
        };
        let mut fields = Vec::new();
        for (key, value) in entries {
            let Some(name) = self.text(key, "a field name") else {
                continue;
            };
            let mut field = FormField {
                name,
                kind: FieldKind::Text,
                required: true,
                label: None,
                span: key.span,
            };
            let type_node = if value.as_map().is_some() {
                self.check_keys(
                    value,
                    &refs(keys::FIELD),
                    &format!("field `{}`", field.name),
                );
                if let Some(r) = value.get("required") {
                    field.required = self.boolean(r, "`required`").unwrap_or(true);
                }
                field.label = value.get("label").and_then(|l| self.text(l, "`label`"));
                value.get("type")
            } else {
                Some(value)
            };
            if let Some(type_node) = type_node {
                field.kind = self.field_kind(type_node);
            }
            if value.as_map().is_some() {
                let min = value.get("min").and_then(|m| self.decimal(m, "`min`"));
                let max = value.get("max").and_then(|m| self.decimal(m, "`max`"));
                match &mut field.kind {
                    FieldKind::Number { min: lo, max: hi } => {
                        *lo = min;
                        *hi = max;
                    }
                    _ => {
                        if min.is_some() || max.is_some() {
                            self.report(
                                FileParser::key_span(
                                    value,
                                    if min.is_some() { "min" } else { "max" },
                                ),
                                codes::INVALID_VALUE,
                                "`min` and `max` apply to number fields".into(),
                                None,
                            );
                        }
                    }
                }
            }
            fields.push(field);
        }
        fields
    }

    fn field_kind(&mut self, node: &Node) -> FieldKind {
        if node.as_seq().is_some() {
            return FieldKind::Choice(self.words(node, "a choice"));
        }
        match node.text() {
            Some("text") => FieldKind::Text,
            Some("number") => FieldKind::Number {
                min: None,
                max: None,
            },
            Some("boolean") => FieldKind::Boolean,
            Some("date") => FieldKind::Date,
            Some(other) => {
                let hint = did_you_mean(other, keys::FIELD_TYPES.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| Some("use text, number, boolean, date, or a list of choices such as [approve, reject]".into()));
                self.report(
                    node.span,
                    codes::INVALID_VALUE,
                    format!("unknown field type `{other}`"),
                    hint,
                );
                FieldKind::Text
            }
            None => {
                self.wrong_type(
                    node,
                    "a field type",
                    "text, number, boolean, date or a list of choices",
                );
                FieldKind::Text
            }
        }
    }

    fn retry(&mut self, node: &Node) -> RetryPolicy {
        let mut policy = RetryPolicy::default();
        if node.as_map().is_none() {
            self.wrong_type(
                node,
                "`retry`",
                "a map such as `{ attempts: 5, backoff: PT1S }`",
            );
            return policy;
        }
        self.check_keys(node, &refs(keys::RETRY), "`retry`");
        if let Some(attempts) = node.get("attempts") {
            match attempts
                .text()
                .and_then(|t| t.parse::<u32>().ok())
                .filter(|n| *n >= 1)
            {
                Some(n)
                    if attempts
                        .scalar()
                        .is_some_and(|s| matches!(s, Scalar::Number(_))) =>
                {
                    policy.max_attempts = n
                }
                _ => self.report(
                    attempts.span,
                    codes::INVALID_VALUE,
                    "`attempts` is a whole number, at least 1".into(),
                    None,
                ),
            }
        }
        if let Some(d) = node
            .get("backoff")
            .and_then(|n| self.duration(n, "`backoff`"))
        {
            policy.initial_backoff = d;
        }
        if let Some(d) = node
            .get("max_backoff")
            .and_then(|n| self.duration(n, "`max_backoff`"))
        {
            policy.max_backoff = d;
        }
        policy
    }

    fn boundaries(&mut self, node: &Node, container: Option<StepId>) -> Vec<Boundary> {
        let Some(items) = node.as_seq() else {
            self.wrong_type(
                node,
                "`on`",
                "a list of events such as `- error: any` with `goto`",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            if item.as_map().is_none() {
                self.wrong_type(
                    item,
                    "a boundary event",
                    "a map with `error`, `timer`, `every` or `message`, and `goto`",
                );
                continue;
            }
            let before = self.problems.len();
            self.check_keys(item, &refs(keys::BOUNDARY), "this boundary event");
            let misspelt = self.problems.len() > before;
            let triggers: Vec<&str> = ["error", "timer", "every", "message"]
                .into_iter()
                .filter(|k| item.get(k).is_some())
                .collect();
            if triggers.len() > 1 {
                self.report(
                    FileParser::key_span(item, triggers[1]),
                    codes::INVALID_VALUE,
                    format!(
                        "a boundary event has one trigger, found `{}` and `{}`",
                        triggers[0], triggers[1]
                    ),
                    Some("write one event per list entry".into()),
                );
                continue;
            }
            let interrupting = match item.get("interrupt") {
                Some(i) => self.boolean(i, "`interrupt`").unwrap_or(true),
                None => true,
            };
            let event = match triggers.first().copied() {
                Some("error") => {
                    if !interrupting {
                        self.report(
                            FileParser::key_span(item, "interrupt"),
                            codes::INVALID_VALUE,
                            "an error always interrupts the step".into(),
                            Some("remove `interrupt: false`".into()),
                        );
                    }
                    item.get("error")
                        .and_then(|e| self.text(e, "`error`"))
                        .map(|code| BoundaryEvent::Error {
                            code: if code == "any" { None } else { Some(code) },
                        })
                }
                Some("timer") => item
                    .get("timer")
                    .and_then(|t| self.timer_spec(t, item.get("zone")))
                    .map(BoundaryEvent::Timer),
                Some("every") => item
                    .get("every")
                    .and_then(|t| {
                        let prefix = if t.text().is_some_and(|t| t.starts_with('P')) {
                            "R/"
                        } else {
                            ""
                        };
                        self.schedule(t, item.get("zone"), prefix)
                    })
                    .map(|s| BoundaryEvent::Timer(TimerSpec::Fixed(s))),
                Some(_) => item
                    .get("message")
                    .and_then(|m| self.text(m, "`message`"))
                    .map(|name| {
                        let key = item.get("key").and_then(|k| self.expr(k, "`key`"));
                        BoundaryEvent::Message(MessageCatch { name, key })
                    }),
                None => {
                    // A misspelt trigger (`eror:`) was just reported as an unknown key.
                    if !misspelt {
                        self.report(
                            item.span,
                            codes::MISSING_KEY,
                            "this boundary event needs `error`, `timer`, `every` or `message`"
                                .into(),
                            None,
                        );
                    }
                    None
                }
            };
            let target = item.get("goto").map(|g| self.step_ref(g, container));
            if let (Some(event), Some(target)) = (event, target) {
                out.push(Boundary {
                    event,
                    interrupting,
                    target,
                    span: item.span,
                });
            }
        }
        out
    }

    fn multi(&mut self, node: &Node) -> Option<MultiInstance> {
        if node.as_map().is_none() {
            self.wrong_type(
                node,
                "`each`",
                "a map such as `{ in: quote.lines, as: line }`",
            );
            return None;
        }
        self.check_keys(node, &refs(keys::EACH), "`each`");
        let items = node.get("in").and_then(|n| self.expr(n, "`in`"));
        let item_var = node.get("as").and_then(|n| self.text(n, "`as`"));
        let parallel = match node.get("parallel") {
            Some(p) => self.boolean(p, "`parallel`").unwrap_or(true),
            None => true,
        };
        let collect = match node.get("collect") {
            Some(c) => {
                let mut all = self.mapping(c, "`collect`");
                if all.len() > 1 {
                    self.report(
                        c.span,
                        codes::INVALID_VALUE,
                        "`collect` gathers one value: `{ name: expression }`".into(),
                        Some("collect a map instead, or use two steps".into()),
                    );
                }
                if all.is_empty() {
                    None
                } else {
                    Some(all.remove(0))
                }
            }
            None => None,
        };
        Some(MultiInstance {
            items: items?,
            item_var: item_var?,
            parallel,
            collect,
        })
    }

    // ---- decision tables -----------------------------------------------------------------

    fn tables(&mut self, node: &Node) -> Vec<DecisionTable> {
        let Some(entries) = node.as_map() else {
            if !node.is_null() {
                self.wrong_type(node, "`tables`", "a map of table names to tables");
            }
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(|(k, v)| self.table(k, v))
            .collect()
    }

    fn table(&mut self, key: &Node, node: &Node) -> Option<DecisionTable> {
        let name = self.text(key, "a table name")?;
        if node.as_map().is_none() {
            self.wrong_type(
                node,
                &format!("table `{name}`"),
                "a map with `inputs`, `outputs` and `rules`",
            );
            return None;
        }
        let context = format!("table `{name}`");
        self.check_keys(node, &refs(keys::TABLE), &context);
        let hit = match node.get("hit") {
            None => HitPolicy::First,
            Some(h) => match h.text() {
                Some("first") => HitPolicy::First,
                Some("unique") => HitPolicy::Unique,
                Some("collect") => HitPolicy::Collect,
                Some("sum") => HitPolicy::CollectSum,
                other => {
                    let hint = other
                        .and_then(|o| {
                            did_you_mean(o, ["first", "unique", "collect", "sum"].into_iter())
                        })
                        .map(|s| format!("did you mean `{s}`?"))
                        .or_else(|| Some("use first, unique, collect or sum".into()));
                    self.report(
                        h.span,
                        codes::INVALID_VALUE,
                        format!("unknown hit policy {}", describe(h)),
                        hint,
                    );
                    HitPolicy::First
                }
            },
        };
        let inputs: Vec<Expr> = match node.get("inputs") {
            Some(n) => self
                .list(n, "`inputs`")
                .iter()
                .filter_map(|i| self.expr(i, "an input"))
                .collect(),
            None => Vec::new(),
        };
        let input_count = node.get("inputs").map(|n| self.len(n)).unwrap_or(0);
        let outputs = node
            .get("outputs")
            .map(|n| self.words(n, "`outputs`"))
            .unwrap_or_default();
        if hit == HitPolicy::CollectSum && outputs.len() > 1 {
            self.report(
                FileParser::key_span(node, "outputs"),
                codes::INVALID_VALUE,
                "`hit: sum` adds up a single output".into(),
                Some("keep one output, or use `hit: collect`".into()),
            );
        }
        let mut rules = Vec::new();
        if let Some(rows) = node.get("rules") {
            match rows.as_seq() {
                Some(rows) => {
                    for row in rows {
                        if let Some(rule) = self.rule(row, input_count, outputs.len()) {
                            rules.push(rule);
                        }
                    }
                }
                None => self.wrong_type(rows, "`rules`", "a list of `- when: [...] then: [...]`"),
            }
        }
        Some(DecisionTable {
            name,
            hit,
            inputs,
            outputs,
            rules,
            span: key.span,
        })
    }

    fn len(&self, node: &Node) -> usize {
        node.as_seq().map_or(1, <[Node]>::len)
    }

    /// A list; a single value is taken as a list of one.
    fn list<'a>(&mut self, node: &'a Node, what: &str) -> Vec<&'a Node> {
        match node.as_seq() {
            Some(items) => items.iter().collect(),
            None if node.as_map().is_some() => {
                self.wrong_type(node, what, "a list");
                Vec::new()
            }
            None => vec![node],
        }
    }

    fn rule(&mut self, row: &Node, inputs: usize, outputs: usize) -> Option<Rule> {
        if row.as_map().is_none() {
            self.wrong_type(row, "a rule", "a map with `when` and `then`");
            return None;
        }
        self.check_keys(row, &refs(keys::RULE), "this rule");
        let (when_node, then_node) = (row.get("when")?, row.get("then")?);
        let cells = self.list(when_node, "`when`");
        if cells.len() != inputs {
            self.report(
                when_node.span,
                codes::CELL_COUNT,
                format!(
                    "this rule has {} but the table has {}",
                    count(cells.len(), "`when` cell"),
                    count(inputs, "input")
                ),
                Some("write one cell per input; `-` matches anything".into()),
            );
        }
        let values = self.list(then_node, "`then`");
        if values.len() != outputs {
            self.report(
                then_node.span,
                codes::CELL_COUNT,
                format!(
                    "this rule has {} but the table has {}",
                    count(values.len(), "`then` value"),
                    count(outputs, "output")
                ),
                Some("write one expression per output".into()),
            );
        }
        let when: Vec<UnaryTest> = cells.iter().filter_map(|c| self.cell(c)).collect();
        let then: Vec<Expr> = values
            .iter()
            .filter_map(|v| self.expr(v, "an output"))
            .collect();
        (when.len() == cells.len() && then.len() == values.len()).then_some(Rule {
            when,
            then,
            span: row.span,
        })
    }

    /// A `when` cell: a list of literal values (any of them), a number or boolean (equals), or
    /// a unary test written as a string (`> 100`, `[1..5]`, `-`).
    fn cell(&mut self, node: &Node) -> Option<UnaryTest> {
        let (source, from_text) = match (node.as_seq(), node.scalar()) {
            (Some(items), _) => {
                let mut parts = Vec::new();
                for item in items {
                    match item.scalar() {
                        Some(Scalar::Str(s)) => parts.push(quote(s)),
                        Some(Scalar::Number(n)) => parts.push(
                            parse_decimal(n)
                                .map(|d| d.to_string())
                                .unwrap_or_else(|| n.to_string()),
                        ),
                        Some(Scalar::Bool(b)) => parts.push(b.to_string()),
                        Some(Scalar::Null) => parts.push("null".into()),
                        None => {
                            self.wrong_type(item, "a value in a list cell", "a literal value");
                            return None;
                        }
                    }
                }
                (parts.join(", "), false)
            }
            (None, Some(Scalar::Str(s))) => (s.to_string(), true),
            (None, Some(Scalar::Number(n))) => (
                parse_decimal(n)
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| n.to_string()),
                false,
            ),
            (None, Some(Scalar::Bool(b))) => (b.to_string(), false),
            (None, Some(Scalar::Null)) => ("-".to_string(), false),
            (None, None) => {
                self.wrong_type(
                    node,
                    "a `when` cell",
                    "a list of values, a number, a boolean or a test such as \"> 100\"",
                );
                return None;
            }
        };
        match UnaryTest::parse(&source) {
            Ok(test) => Some(test),
            Err(error) => {
                // Only a cell the analyst wrote as text maps offsets back; a list cell was
                // rewritten by us, so point at the cell itself.
                let at = if from_text {
                    self.map.locate(node, error.offset)
                } else {
                    node.span
                };
                self.report(
                    at,
                    codes::BAD_TEST,
                    format!("bad cell `{source}`: {}", error.message),
                    None,
                );
                None
            }
        }
    }
}

fn refs(keys: &'static [Key]) -> Vec<&'static Key> {
    keys.iter().collect()
}

fn describe(node: &Node) -> String {
    match node.text() {
        Some(t) => format!("`{t}`"),
        None => node.type_name().to_string(),
    }
}

/// A YAML number as a decimal: `1`, `0.25`, `1e3`. Infinity and NaN are not numbers here.
fn parse_decimal(text: &str) -> Option<Decimal> {
    let t = text.strip_prefix('+').unwrap_or(text);
    if t.contains(['e', 'E']) && !t.starts_with("0x") {
        return Decimal::from_scientific(t).ok();
    }
    if let Some(hex) = t.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(Decimal::from);
    }
    if let Some(oct) = t.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok().map(Decimal::from);
    }
    t.parse::<Decimal>().ok()
}

/// A text as an expression string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A key's documentation as a hint: "the process id: ..." rather than "The process id: ...".
fn doc_hint(doc: &str) -> String {
    let doc = doc.trim_end_matches('.');
    let mut chars = doc.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Whether `text` is a variable name or a dotted path of names (`quote.total`): what an
/// expression can read back.
fn is_variable_path(text: &str) -> bool {
    text.split('.').all(|part| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || c == '_')
    })
}

//! A small YAML document tree with the position of every key and value.
//!
//! We build our own tree from saphyr's event parser rather than deserialising with serde so
//! that we control what analysts see: duplicate keys are reported (most YAML libraries keep the
//! last one silently), every node knows its line and column, and a bare `{{ x }}` that YAML
//! reads as a nested map can be recognised and explained. The parser follows YAML 1.2, so `NO`
//! stays a string.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::model::Span;

/// The most nodes one file may expand to: guards against alias bombs (`&a [*b, *b, ...]`).
const MAX_NODES: usize = 200_000;
/// The deepest nesting accepted: guards against stack exhaustion on `[[[[[[...`.
const MAX_DEPTH: usize = 200;

/// A YAML node with its position.
#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    /// Where the node starts (for a quoted scalar: its opening quote).
    pub span: Span,
    /// Character index of the node's first character in the source, to map offsets inside
    /// scalars back to lines and columns.
    pub start: usize,
    /// Character index just past the node.
    pub end: usize,
}

#[derive(Clone, Debug)]
pub enum Value {
    Scalar {
        text: String,
        style: ScalarStyle,
    },
    Seq(Vec<Node>),
    /// Entries in file order; keys may be any node (YAML allows `{a: 1}: x`).
    Map(Vec<(Node, Node)>),
}

/// What a scalar means under the YAML 1.2 core schema.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    /// A number, in its source spelling (`1`, `0.5`, `1e3`).
    Number(&'a str),
    Str(&'a str),
}

impl Node {
    /// The scalar's text, whatever its type (`true`, `12`, `hello`); `None` for collections.
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The scalar read with the YAML 1.2 core schema: only plain scalars can be null, booleans
    /// or numbers; anything quoted is a string.
    pub fn scalar(&self) -> Option<Scalar<'_>> {
        let Value::Scalar { text, style } = &self.value else {
            return None;
        };
        if *style != ScalarStyle::Plain {
            return Some(Scalar::Str(text));
        }
        Some(match text.as_str() {
            "" | "~" | "null" | "Null" | "NULL" => Scalar::Null,
            "true" | "True" | "TRUE" => Scalar::Bool(true),
            "false" | "False" | "FALSE" => Scalar::Bool(false),
            t if is_yaml_number(t) => Scalar::Number(t),
            t => Scalar::Str(t),
        })
    }

    pub fn is_null(&self) -> bool {
        matches!(self.scalar(), Some(Scalar::Null))
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The value of `key` in a map node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.text() == Some(key))
            .map(|(_, v)| v)
    }

    /// A word for the node's type, as error messages show it.
    pub fn type_name(&self) -> &'static str {
        match self.scalar() {
            None => match self.value {
                Value::Seq(_) => "a list",
                _ => "a map",
            },
            Some(Scalar::Null) => "nothing",
            Some(Scalar::Bool(_)) => "a boolean",
            Some(Scalar::Number(_)) => "a number",
            Some(Scalar::Str(_)) => "a text",
        }
    }

    /// When YAML read a bare template such as `{{ quote.number }}` as a map holding a map,
    /// the template the author meant to write.
    pub fn as_misread_template(&self) -> Option<String> {
        let [(inner, outer_value)] = self.as_map()? else {
            return None;
        };
        let [(expr, inner_value)] = inner.as_map()? else {
            return None;
        };
        if !outer_value.is_null() || !inner_value.is_null() {
            return None;
        }
        let text = expr.text()?;
        Some(format!("{{{{ {} }}}}", text.trim()))
    }
}

fn is_yaml_number(t: &str) -> bool {
    let body = t.strip_prefix(['-', '+']).unwrap_or(t);
    if body.is_empty() {
        return false;
    }
    if matches!(body, ".inf" | ".Inf" | ".INF") || matches!(t, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    if let Some(hex) = t.strip_prefix("0x") {
        return !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    if let Some(oct) = t.strip_prefix("0o") {
        return !oct.is_empty() && oct.chars().all(|c| c.is_digit(8));
    }
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (!int.is_empty() || !frac.is_empty())
                && int.chars().all(|c| c.is_ascii_digit())
                && frac.chars().all(|c| c.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.chars().all(|c| c.is_ascii_digit()),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
            !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
        }
    };
    mantissa_ok && exponent_ok
}

/// A problem found while reading the YAML itself.
#[derive(Clone, Debug, PartialEq)]
pub enum YamlIssue {
    /// The text is not YAML; nothing could be read.
    Syntax { span: Span, message: String },
    /// A map has the same key twice; `first` is where it appeared first.
    DuplicateKey {
        span: Span,
        key: String,
        first: Span,
    },
}

/// Reads the first document of `text`. An empty file gives `None` without issues. Duplicate
/// keys are reported but the tree is still returned (the first occurrence wins, which is what
/// an analyst reading top to bottom expects until they fix it).
pub fn read(text: &str) -> (Option<Node>, Vec<YamlIssue>) {
    // The parser is a third-party state machine fed arbitrary analyst input; a bug there must
    // become a problem report, never take down a server that is loading definitions.
    let outcome = std::panic::catch_unwind(|| Builder::default().run(text));
    match outcome {
        Ok(result) => result,
        Err(_) => (
            None,
            vec![YamlIssue::Syntax {
                span: Span { line: 1, col: 1 },
                message: "the YAML reader failed on this file".into(),
            }],
        ),
    }
}

#[derive(Default)]
struct Builder {
    anchors: HashMap<usize, Node>,
    nodes: usize,
    issues: Vec<YamlIssue>,
}

enum Frame {
    Seq {
        items: Vec<Node>,
        anchor: usize,
        span: Span,
        start: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        anchor: usize,
        span: Span,
        start: usize,
    },
}

fn span_of(m: &saphyr_parser::Marker) -> Span {
    Span {
        line: m.line() as u32,
        col: m.col() as u32 + 1,
    }
}

impl Builder {
    fn run(mut self, text: &str) -> (Option<Node>, Vec<YamlIssue>) {
        let mut parser = Parser::new_from_str(text);
        let mut stack: Vec<Frame> = Vec::new();
        let mut root: Option<Node> = None;
        loop {
            let (event, span) = match parser.next_event() {
                None => break,
                Some(Ok(pair)) => pair,
                Some(Err(error)) => {
                    let issue = YamlIssue::Syntax {
                        span: span_of(error.marker()),
                        message: error.info().to_string(),
                    };
                    return (None, vec![issue]);
                }
            };
            let at = span_of(&span.start);
            let (start, end) = (span.start.index(), span.end.index());
            let finished = match event {
                Event::StreamEnd => break,
                Event::DocumentEnd => None,
                Event::DocumentStart(_) if root.is_some() => {
                    // A second document would be silently ignored: say so instead.
                    self.issues.push(YamlIssue::Syntax {
                        span: at,
                        message: "a second YAML document starts here, but a file holds one \
                                  process (or one set of tables): move it to a file of its own"
                            .into(),
                    });
                    break;
                }
                Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => None,
                Event::Alias(id) => match self.anchors.get(&id) {
                    Some(node) => {
                        let mut node = node.clone();
                        self.nodes += count(&node);
                        node.span = at;
                        Some(node)
                    }
                    None => {
                        let message = "this alias refers to an unknown anchor".to_string();
                        return (None, vec![YamlIssue::Syntax { span: at, message }]);
                    }
                },
                Event::Scalar(text, style, anchor, _tag) => {
                    let node = Node {
                        value: Value::Scalar {
                            text: text.into_owned(),
                            style,
                        },
                        span: at,
                        start,
                        end,
                    };
                    self.nodes += 1;
                    if anchor != 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    Some(node)
                }
                Event::SequenceStart(anchor, _) => {
                    stack.push(Frame::Seq {
                        items: Vec::new(),
                        anchor,
                        span: at,
                        start,
                    });
                    None
                }
                Event::MappingStart(anchor, _) => {
                    stack.push(Frame::Map {
                        entries: Vec::new(),
                        key: None,
                        anchor,
                        span: at,
                        start,
                    });
                    None
                }
                Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                    Some(Frame::Seq {
                        items,
                        anchor,
                        span,
                        start,
                    }) => {
                        self.nodes += 1;
                        let node = Node {
                            value: Value::Seq(items),
                            span,
                            start,
                            end,
                        };
                        if anchor != 0 {
                            self.anchors.insert(anchor, node.clone());
                        }
                        Some(node)
                    }
                    Some(Frame::Map {
                        entries,
                        anchor,
                        span,
                        start,
                        ..
                    }) => {
                        self.nodes += 1;
                        let node = Node {
                            value: Value::Map(entries),
                            span,
                            start,
                            end,
                        };
                        if anchor != 0 {
                            self.anchors.insert(anchor, node.clone());
                        }
                        Some(node)
                    }
                    None => None,
                },
            };
            if self.nodes > MAX_NODES || stack.len() > MAX_DEPTH {
                let message = "the file is too large or too deeply nested".to_string();
                return (None, vec![YamlIssue::Syntax { span: at, message }]);
            }
            if let Some(node) = finished {
                match stack.last_mut() {
                    None => {
                        if root.is_none() {
                            root = Some(node);
                        }
                    }
                    Some(Frame::Seq { items, .. }) => items.push(node),
                    Some(Frame::Map { entries, key, .. }) => match key.take() {
                        None => *key = Some(node),
                        Some(k) => {
                            let duplicate = k.text().and_then(|name| {
                                entries
                                    .iter()
                                    .find(|(e, _)| e.text() == Some(name))
                                    .map(|(e, _)| e.span)
                            });
                            match duplicate {
                                Some(first) => self.issues.push(YamlIssue::DuplicateKey {
                                    span: k.span,
                                    key: k.text().unwrap_or_default().to_string(),
                                    first,
                                }),
                                None => entries.push((k, node)),
                            }
                        }
                    },
                }
            }
        }
        (root, self.issues)
    }
}

fn count(node: &Node) -> usize {
    match &node.value {
        Value::Scalar { .. } => 1,
        Value::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
    }
}

/// Maps positions inside a scalar's value back to the file, so that an error at byte 7 of an
/// expression points at the right column even when the scalar is quoted or escaped.
pub struct SourceMap {
    chars: Vec<char>,
    /// Line and column of every character index (plus one past the end).
    positions: Vec<Span>,
}

impl SourceMap {
    pub fn new(text: &str) -> SourceMap {
        let chars: Vec<char> = text.chars().collect();
        let mut positions = Vec::with_capacity(chars.len() + 1);
        let (mut line, mut col) = (1u32, 1u32);
        for &c in &chars {
            positions.push(Span { line, col });
            if c == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        positions.push(Span { line, col });
        SourceMap { chars, positions }
    }

    /// The position of byte `offset` of `node`'s value. The value's characters are matched
    /// in order against the raw source, skipping what YAML removed (quotes, escapes, folded
    /// line breaks and indentation); when that fails, the node's own position is the answer.
    pub fn locate(&self, node: &Node, offset: usize) -> Span {
        let Some(value) = node.text() else {
            return node.span;
        };
        let mut cut = offset.min(value.len());
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        let wanted = value[..cut].chars().count();
        let end = node.end.min(self.chars.len());
        let mut raw = node.start.min(end);
        for (i, c) in value.chars().enumerate() {
            // A numeric escape (`\u00e9`) stands for one character of the value.
            let mut escape = 0;
            while raw < end && self.chars[raw] != c {
                if self.chars[raw] == '\\' {
                    escape = match self.chars.get(raw + 1) {
                        Some('x') => 4,
                        Some('u') => 6,
                        Some('U') => 10,
                        _ => 0,
                    };
                    if escape > 0 {
                        break;
                    }
                }
                raw += 1;
            }
            if raw >= end {
                // The offset points past the value's end (a missing closing parenthesis, say):
                // point just after the last character we could match.
                break;
            }
            if i == wanted {
                return self.positions[raw];
            }
            raw += escape.max(1);
        }
        if raw >= end && wanted < value.chars().count() {
            return node.span;
        }
        // `wanted` is the end of the value: the position right after its last character.
        self.positions.get(raw).copied().unwrap_or(node.span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The position of byte `offset` inside the value of key `key` of the root map.
    fn locate(text: &str, key: &str, offset: usize) -> (u32, u32) {
        let (root, issues) = read(text);
        assert!(issues.is_empty(), "{issues:?}");
        let root = root.unwrap();
        let node = root.get(key).unwrap();
        let at = SourceMap::new(text).locate(node, offset);
        (at.line, at.col)
    }

    #[test]
    fn offsets_in_plain_scalars_add_to_the_column() {
        let text = "x: 1\nwhen: score > > 1\n";
        assert_eq!(locate(text, "when", 0), (2, 7));
        assert_eq!(locate(text, "when", 8), (2, 15));
        // An offset at the very end (a missing operand) points just past the value.
        assert_eq!(locate(text, "when", 11), (2, 18));
    }

    #[test]
    fn offsets_in_quoted_scalars_skip_quotes_and_escapes() {
        assert_eq!(locate("when: 'a + )'\n", "when", 4), (1, 12));
        assert_eq!(locate("when: \"a + )\"\n", "when", 4), (1, 12));
        // `it''s` is one quote in the value: offset 5 is the `)` after it.
        assert_eq!(locate("when: 'it''s )'\n", "when", 5), (1, 14));
        assert_eq!(locate("when: \"\\\"x\\\" )\"\n", "when", 4), (1, 14));
    }

    #[test]
    fn offsets_after_numeric_escapes() {
        // `\u00e9` is one character of the value: offset 5 (`é + `, é two bytes) is the `*`.
        assert_eq!(locate("when: \"\\u00e9 + * 1\"\n", "when", 5), (1, 17));
    }

    #[test]
    fn offsets_count_characters_not_bytes() {
        // `é` is two bytes: byte offset 4 is the fourth character.
        assert_eq!(locate("when: né + )\n", "when", 4), (1, 10));
    }

    #[test]
    fn offsets_in_block_scalars_find_their_line() {
        let text = "when: |\n  a > 1 and\n  b >\n";
        assert_eq!(locate(text, "when", 0), (2, 3));
        assert_eq!(locate(text, "when", 12), (3, 5));
    }

    #[test]
    fn yaml_1_2_keeps_no_a_string_and_reads_numbers() {
        let (root, _) = read("a: NO\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: 1e3\ng: 0x1F\nh: 1.2.3\n");
        let root = root.unwrap();
        assert_eq!(root.get("a").unwrap().scalar(), Some(Scalar::Str("NO")));
        assert_eq!(root.get("b").unwrap().scalar(), Some(Scalar::Number("1.5")));
        assert_eq!(root.get("c").unwrap().scalar(), Some(Scalar::Bool(true)));
        assert_eq!(root.get("d").unwrap().scalar(), Some(Scalar::Null));
        assert_eq!(root.get("e").unwrap().scalar(), Some(Scalar::Str("1")));
        assert_eq!(root.get("f").unwrap().scalar(), Some(Scalar::Number("1e3")));
        assert_eq!(
            root.get("g").unwrap().scalar(),
            Some(Scalar::Number("0x1F"))
        );
        assert_eq!(root.get("h").unwrap().scalar(), Some(Scalar::Str("1.2.3")));
    }

    #[test]
    fn duplicate_keys_are_reported_and_the_first_wins() {
        let (root, issues) = read("a: 1\nb: 2\na: 3\n");
        assert_eq!(root.unwrap().get("a").unwrap().text(), Some("1"));
        assert_eq!(
            issues,
            [YamlIssue::DuplicateKey {
                span: Span { line: 3, col: 1 },
                key: "a".into(),
                first: Span { line: 1, col: 1 }
            }]
        );
    }

    #[test]
    fn aliases_expand_and_bombs_are_refused() {
        let (root, issues) = read("a: &x [1, 2]\nb: *x\n");
        assert!(issues.is_empty());
        assert_eq!(root.unwrap().get("b").unwrap().as_seq().unwrap().len(), 2);

        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = format!("*a{}", i - 1);
            bomb.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let (root, issues) = read(&bomb);
        assert!(root.is_none());
        assert!(
            matches!(&issues[0], YamlIssue::Syntax { message, .. } if message.contains("too large"))
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("a: {}{}\n", "[".repeat(5000), "]".repeat(5000));
        let (root, issues) = read(&text);
        assert!(root.is_none());
        assert_eq!(issues.len(), 1);
    }
}

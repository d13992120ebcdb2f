//! Text with `{{ expression }}` parts, such as task titles and e-mail subjects.
//!
//! Each part is an ordinary expression; rendering formats its value the way people read it
//! (see [`display_value`]). Parse errors point into the template's own text.

use super::eval::{Evaluator, check_text};
use super::lexer::{Lexer, Tok};
use super::parser::{Node, parse_expression};
use super::{Context, ExprError, Scope, display_value};
use crate::value::Value;

/// A text with `{{ expression }}` parts, such as a task title.
#[derive(Clone, Debug)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug)]
enum Part {
    /// Literal text: a byte range of the source.
    Text(usize, usize),
    Expr(Node),
}

impl Template {
    /// Parses `source`; error offsets are byte positions in `source`.
    pub fn parse(source: &str) -> Result<Template, ExprError> {
        let mut parts = Vec::new();
        let mut pos = 0;
        while let Some(found) = source[pos..].find("{{") {
            let open = pos + found;
            if open > pos {
                parts.push(Part::Text(pos, open));
            }
            let close = find_close(source, open)?;
            if source[open + 2..close].trim().is_empty() {
                return Err(ExprError::new("`{{ }}` has no expression inside", open));
            }
            parts.push(Part::Expr(parse_expression(
                source,
                open + 2,
                close,
                false,
            )?));
            pos = close + 2;
        }
        if pos < source.len() {
            parts.push(Part::Text(pos, source.len()));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates every part and joins the text. Null shows as nothing.
    pub fn render(&self, scope: &dyn Scope, ctx: &Context) -> Result<String, ExprError> {
        let mut evaluator = Evaluator::new(&self.source, scope, ctx, None);
        let mut out = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Text(start, end) => out.push_str(&self.source[*start..*end]),
                Part::Expr(node) => {
                    out.push_str(&display_value(&*evaluator.eval(node)?));
                    check_text(out.len(), node.start)?;
                }
            }
        }
        Ok(out)
    }

    /// The template's value: when it is one `{{ expression }}` (spaces around it aside), the
    /// expression's value with its type (a date stays a date); otherwise the rendered text.
    pub fn value(&self, scope: &dyn Scope, ctx: &Context) -> Result<Value, ExprError> {
        let mut expressions = self.parts.iter().filter_map(|part| match part {
            Part::Expr(node) => Some(node),
            Part::Text(..) => None,
        });
        let blank_text = self.parts.iter().all(|part| match part {
            Part::Text(start, end) => self.source[*start..*end].trim().is_empty(),
            Part::Expr(_) => true,
        });
        if let (Some(node), None, true) = (expressions.next(), expressions.next(), blank_text) {
            let mut evaluator = Evaluator::new(&self.source, scope, ctx, None);
            return evaluator.eval(node).map(std::borrow::Cow::into_owned);
        }
        self.render(scope, ctx).map(Value::String)
    }

    /// The root variable names the parts read, each once, in order of appearance.
    pub fn variables(&self) -> Vec<String> {
        let mut names = Vec::new();
        for part in &self.parts {
            if let Part::Expr(node) = part {
                node.collect_variables(&mut names);
            }
        }
        names
    }

    /// The data files the parts read, as [`super::Expr::data_references`] (offsets in the
    /// template's source).
    pub fn data_references(&self) -> Vec<(Option<String>, usize)> {
        let mut out = Vec::new();
        for part in &self.parts {
            if let Part::Expr(node) = part {
                node.collect_data_references(&mut out);
            }
        }
        out
    }
}

/// Finds the `}}` that closes the part opened at `open`, lexing the expression so that
/// braces inside texts and map literals do not end it early.
fn find_close(source: &str, open: usize) -> Result<usize, ExprError> {
    let mut lexer = Lexer::new(source, open + 2, source.len());
    let mut depth = 0usize;
    loop {
        let token = lexer.next_token()?;
        match token.tok {
            Tok::End => return Err(ExprError::new("`{{` is not closed by `}}`", open)),
            Tok::LBrace | Tok::LBracket | Tok::LParen => depth += 1,
            Tok::RBrace if depth == 0 => {
                if source[token.end..].starts_with('}') {
                    return Ok(token.start);
                }
                return Err(ExprError::new("unexpected `}`, expected `}}`", token.start));
            }
            Tok::RBrace | Tok::RBracket | Tok::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
}

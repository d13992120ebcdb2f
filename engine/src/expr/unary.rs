//! Decision-table cells: DMN-style unary tests such as `> 10`, `[1..5]`, `"a", "b"`,
//! `not("x")`, `-`, or a boolean expression over `?`, the input.
//!
//! As in DMN, an ordering test or a range does not match a null input rather than failing:
//! a missing input simply falls through to rules that test for it (`null`, `-`).

use std::cmp::Ordering;

use super::eval::{Evaluator, a_type, order};
use super::lexer::Tok;
use super::parser::{BinOp, Node, Parser};
use super::{Context, ExprError, Scope};
use crate::value::Value;

/// A decision-table cell: `> 10`, `[1..5]`, `"a", "b"`, `not("x")`, or `-` (anything).
#[derive(Clone, Debug)]
pub struct UnaryTest {
    source: String,
    test: Test,
}

#[derive(Clone, Debug)]
enum Test {
    Any,
    AnyOf(Vec<Positive>),
    NoneOf(Vec<Positive>),
}

#[derive(Clone, Debug)]
enum Positive {
    /// `< v`, `<= v`, `> v`, `>= v`, `!= v`, `== v`.
    Compare { op: BinOp, value: Node, at: usize },
    /// `[low..high]`, with `(`/`)` (or `]`/`[`) for an excluded end.
    Range {
        low: Node,
        low_inclusive: bool,
        high: Node,
        high_inclusive: bool,
        at: usize,
    },
    /// A bare value: the input equals it.
    Equals(Node),
    /// An expression using `?`: it must be true.
    Condition(Node),
}

impl UnaryTest {
    pub fn parse(source: &str) -> Result<UnaryTest, ExprError> {
        let mut parser = Parser::new(source, 0, source.len(), true)?;
        let any = match parser.peek() {
            Tok::End => true,
            Tok::Minus => parser.peek_at(1) == &Tok::End,
            _ => false,
        };
        let test = if any {
            Test::Any
        } else if parser.peek() == &Tok::Not
            && parser.peek_at(1) == &Tok::LParen
            && closes_at_end(&parser)
        {
            parser.advance();
            parser.advance();
            let tests = positives(&mut parser)?;
            parser.expect(&Tok::RParen, "`,` or `)`")?;
            parser.expect_end()?;
            Test::NoneOf(tests)
        } else {
            let tests = positives(&mut parser)?;
            parser.expect_end()?;
            Test::AnyOf(tests)
        };
        Ok(UnaryTest {
            source: source.to_string(),
            test,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `input` passes this test.
    pub fn matches(
        &self,
        input: &Value,
        scope: &dyn Scope,
        ctx: &Context,
    ) -> Result<bool, ExprError> {
        let tests = match &self.test {
            Test::Any => return Ok(true),
            Test::AnyOf(tests) | Test::NoneOf(tests) => tests,
        };
        let mut evaluator = Evaluator::new(&self.source, scope, ctx, Some(input));
        let mut any = false;
        for test in tests {
            if test.matches(&mut evaluator, input)? {
                any = true;
                break;
            }
        }
        Ok(any == matches!(self.test, Test::AnyOf(_)))
    }

    /// The root variable names the cell reads (not counting `?`).
    pub fn variables(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Test::AnyOf(tests) | Test::NoneOf(tests) = &self.test {
            for test in tests {
                match test {
                    Positive::Compare { value, .. } => value.collect_variables(&mut names),
                    Positive::Range { low, high, .. } => {
                        low.collect_variables(&mut names);
                        high.collect_variables(&mut names);
                    }
                    Positive::Equals(node) | Positive::Condition(node) => {
                        node.collect_variables(&mut names)
                    }
                }
            }
        }
        names
    }
}

/// Whether the `(` after a leading `not` closes just before the end, as in `not("a", "b")`,
/// rather than starting an expression such as `not(? > 5) and ? < 10`.
fn closes_at_end(parser: &Parser<'_>) -> bool {
    let tokens = parser.tokens();
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(1) {
        match token.tok {
            Tok::LParen => depth += 1,
            Tok::RParen => {
                depth -= 1;
                if depth == 0 {
                    return tokens.get(i + 1).is_some_and(|t| t.tok == Tok::End);
                }
            }
            Tok::End => return false,
            _ => {}
        }
    }
    false
}

/// A comma-separated list of tests.
fn positives(parser: &mut Parser<'_>) -> Result<Vec<Positive>, ExprError> {
    let mut tests = vec![positive(parser)?];
    while parser.eat(&Tok::Comma) {
        tests.push(positive(parser)?);
    }
    Ok(tests)
}

fn positive(parser: &mut Parser<'_>) -> Result<Positive, ExprError> {
    let op = match parser.peek() {
        Tok::Lt => Some(BinOp::Lt),
        Tok::Le => Some(BinOp::Le),
        Tok::Gt => Some(BinOp::Gt),
        Tok::Ge => Some(BinOp::Ge),
        Tok::NotEq => Some(BinOp::Ne),
        Tok::EqEq => Some(BinOp::Eq),
        _ => None,
    };
    if let Some(op) = op {
        let at = parser.advance().start;
        let value = parser.expression()?;
        return Ok(Positive::Compare { op, value, at });
    }
    if matches!(parser.peek(), Tok::LBracket | Tok::LParen | Tok::RBracket)
        && let Some(range) = range(parser)?
    {
        return Ok(range);
    }
    let node = parser.expression()?;
    Ok(if node.uses_input() {
        Positive::Condition(node)
    } else {
        Positive::Equals(node)
    })
}

/// Tries to read `[low..high]`; gives back `None` (and rewinds) when the bracket opens a list
/// or a parenthesised expression instead.
fn range(parser: &mut Parser<'_>) -> Result<Option<Positive>, ExprError> {
    let mark = parser.mark();
    let open = parser.advance();
    let low = match parser.expression() {
        Ok(low) if parser.peek() == &Tok::DotDot => low,
        _ => {
            parser.reset(mark);
            return Ok(None);
        }
    };
    parser.advance();
    let high = parser.expression()?;
    let high_inclusive = match parser.peek() {
        Tok::RBracket => true,
        Tok::RParen | Tok::LBracket => false,
        _ => {
            let mut err = parser.unexpected();
            err.message = format!("{}, expected `]` or `)` to close the range", err.message);
            return Err(err);
        }
    };
    parser.advance();
    Ok(Some(Positive::Range {
        low,
        low_inclusive: open.tok == Tok::LBracket,
        high,
        high_inclusive,
        at: open.start,
    }))
}

impl Positive {
    fn matches<'a>(
        &'a self,
        evaluator: &mut Evaluator<'a>,
        input: &Value,
    ) -> Result<bool, ExprError> {
        match self {
            Positive::Equals(node) => Ok(*evaluator.eval(node)? == *input),
            Positive::Condition(node) => match &*evaluator.eval(node)? {
                Value::Bool(b) => Ok(*b),
                other => Err(evaluator.type_error(node, other, "a boolean")),
            },
            Positive::Compare { op, value, at } => {
                let bound = evaluator.eval(value)?;
                match op {
                    BinOp::Eq => return Ok(*bound == *input),
                    BinOp::Ne => return Ok(*bound != *input),
                    _ => {}
                }
                let Some(ordering) = ordered(evaluator, input, &bound, value, *at)? else {
                    return Ok(false);
                };
                Ok(match op {
                    BinOp::Lt => ordering == Ordering::Less,
                    BinOp::Le => ordering != Ordering::Greater,
                    BinOp::Gt => ordering == Ordering::Greater,
                    _ => ordering != Ordering::Less,
                })
            }
            Positive::Range {
                low,
                low_inclusive,
                high,
                high_inclusive,
                at,
            } => {
                let low_value = evaluator.eval(low)?;
                let Some(from_low) = ordered(evaluator, input, &low_value, low, *at)? else {
                    return Ok(false);
                };
                let high_value = evaluator.eval(high)?;
                let Some(from_high) = ordered(evaluator, input, &high_value, high, *at)? else {
                    return Ok(false);
                };
                let above_low = from_low == Ordering::Greater
                    || (*low_inclusive && from_low == Ordering::Equal);
                let below_high = from_high == Ordering::Less
                    || (*high_inclusive && from_high == Ordering::Equal);
                Ok(above_low && below_high)
            }
        }
    }
}

/// Orders the input against a bound; `None` when either is null (no match, as in DMN).
fn ordered(
    evaluator: &Evaluator<'_>,
    input: &Value,
    bound: &Value,
    bound_node: &Node,
    at: usize,
) -> Result<Option<Ordering>, ExprError> {
    if matches!(input, Value::Null) || matches!(bound, Value::Null) {
        return Ok(None);
    }
    order(input, bound).map(Some).map_err(|why| {
        ExprError::new(
            format!(
                "{why}: the input is {} and {} is {}",
                a_type(input),
                evaluator.describe(bound_node),
                a_type(bound)
            ),
            at,
        )
    })
}

//! Turns tokens into the expression tree that evaluation walks.
//!
//! Precedence, loosest first: `if .. then .. else`, `or`, `and`, `not`, comparisons and `in`
//! (not chainable), `??`, `+ -`, `* / %`, prefix `-` and `!`, then postfix `.field`, `?.field`,
//! `[index]` and calls. `??` binds tighter than comparisons (as in Swift and Kotlin, unlike
//! JavaScript) so that `score ?? 0 > 100` means `(score ?? 0) > 100`, which is what an analyst
//! means. Functions are resolved here, so an unknown name is a parse error with a suggestion.

use super::functions::{self, Func};
use super::lexer::{Tok, Token, tokenize};
use super::{ExprError, MAX_NESTING, MAX_SOURCE_BYTES, MAX_TREE_DEPTH};
use crate::value::Value;

/// The root variable through which expressions read the data files (`data.price_list`).
pub(crate) const DATA_VARIABLE: &str = "data";

/// A node of the expression tree with the byte range of its source (`start..end`, used to
/// name the value in messages) and `at`, the offset errors about it point to (the operator
/// of a binary node, the name of a call).
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
    pub at: usize,
    depth: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::NotIn => "not in",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Literal(Value),
    /// A root variable, looked up in the scope.
    Var(Box<str>),
    /// `?`: the input of a decision-table cell.
    Input,
    Field {
        target: Box<Node>,
        name: Box<str>,
        safe: bool,
    },
    Index {
        target: Box<Node>,
        index: Box<Node>,
        safe: bool,
    },
    Neg(Box<Node>),
    Not(Box<Node>),
    Binary {
        op: BinOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Coalesce(Box<Node>, Box<Node>),
    If {
        cond: Box<Node>,
        then: Box<Node>,
        otherwise: Box<Node>,
    },
    Call {
        func: Func,
        args: Vec<Node>,
    },
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
    /// `[element for var in list if filter]`: `var` is bound to each item in turn while
    /// `element` and `filter` are evaluated, shadowing any variable of that name.
    Comprehension {
        element: Box<Node>,
        var: Box<str>,
        list: Box<Node>,
        filter: Option<Box<Node>>,
    },
}

impl Node {
    fn children(&self) -> Vec<&Node> {
        match &self.kind {
            Kind::Literal(_) | Kind::Var(_) | Kind::Input => Vec::new(),
            Kind::Field { target, .. } | Kind::Neg(target) | Kind::Not(target) => vec![target],
            Kind::Index { target, index, .. } => vec![target, index],
            Kind::Binary { lhs, rhs, .. }
            | Kind::And(lhs, rhs)
            | Kind::Or(lhs, rhs)
            | Kind::Coalesce(lhs, rhs) => vec![lhs, rhs],
            Kind::If {
                cond,
                then,
                otherwise,
            } => vec![cond, then, otherwise],
            Kind::Call { args, .. } | Kind::List(args) => args.iter().collect(),
            Kind::Map(entries) => entries.iter().map(|(_, node)| node).collect(),
            Kind::Comprehension {
                element,
                list,
                filter,
                ..
            } => {
                let mut children: Vec<&Node> = vec![list, element];
                children.extend(filter.as_deref());
                children
            }
        }
    }

    /// Adds the root variables this node reads to `names`, skipping ones already there.
    pub fn collect_variables(&self, names: &mut Vec<String>) {
        if let Kind::Var(name) = &self.kind {
            if !names.iter().any(|n| **n == **name) {
                names.push(name.to_string());
            }
            return;
        }
        if let Kind::Comprehension {
            element,
            var,
            list,
            filter,
        } = &self.kind
        {
            // The loop variable is not a variable of the scope: leave it out, but keep the
            // names the element and the filter read besides it.
            list.collect_variables(names);
            let mut inner = Vec::new();
            element.collect_variables(&mut inner);
            if let Some(filter) = filter {
                filter.collect_variables(&mut inner);
            }
            for name in inner {
                if *name != **var && !names.contains(&name) {
                    names.push(name);
                }
            }
            return;
        }
        for child in self.children() {
            child.collect_variables(names);
        }
    }

    /// Adds the uses of the root variable `data` (the data files) to `out`: `Some(name)` with
    /// the offset of `name` for `data.name`, `None` for any other use (`data[key]`, `data`
    /// alone), which needs every file. A comprehension variable called `data` hides it.
    pub fn collect_data_references(&self, out: &mut Vec<(Option<String>, usize)>) {
        match &self.kind {
            Kind::Var(name) if &**name == DATA_VARIABLE => out.push((None, self.start)),
            Kind::Field { target, name, .. } if matches!(&target.kind, Kind::Var(root) if &**root == DATA_VARIABLE) =>
            {
                out.push((Some(name.to_string()), target.end + 1));
            }
            Kind::Comprehension {
                element,
                var,
                list,
                filter,
            } => {
                list.collect_data_references(out);
                if &**var != DATA_VARIABLE {
                    element.collect_data_references(out);
                    if let Some(filter) = filter {
                        filter.collect_data_references(out);
                    }
                }
            }
            _ => {
                for child in self.children() {
                    child.collect_data_references(out);
                }
            }
        }
    }

    /// Whether `?` (the decision-table input) appears in this node.
    pub fn uses_input(&self) -> bool {
        matches!(self.kind, Kind::Input) || self.children().into_iter().any(Node::uses_input)
    }

    fn literal(&self) -> Option<&Value> {
        match &self.kind {
            Kind::Literal(value) => Some(value),
            _ => None,
        }
    }
}

/// Parses `src[start..end]` as one expression. `input_allowed` lets `?` stand for the input
/// of a decision-table cell.
pub(crate) fn parse_expression(
    src: &str,
    start: usize,
    end: usize,
    input_allowed: bool,
) -> Result<Node, ExprError> {
    let mut parser = Parser::new(src, start, end, input_allowed)?;
    if parser.peek() == &Tok::End {
        return Err(ExprError::new("the expression is empty", start));
    }
    let node = parser.expression()?;
    parser.expect_end()?;
    Ok(node)
}

pub(crate) struct Parser<'s> {
    src: &'s str,
    tokens: Vec<Token>,
    pos: usize,
    nesting: u32,
    input_allowed: bool,
}

impl<'s> Parser<'s> {
    pub fn new(
        src: &'s str,
        start: usize,
        end: usize,
        input_allowed: bool,
    ) -> Result<Parser<'s>, ExprError> {
        if end - start > MAX_SOURCE_BYTES {
            return Err(ExprError::new(
                format!("the expression is longer than {MAX_SOURCE_BYTES} bytes"),
                start,
            ));
        }
        Ok(Parser {
            src,
            tokens: tokenize(src, start, end)?,
            pos: 0,
            nesting: 0,
            input_allowed,
        })
    }

    pub fn peek(&self) -> &Tok {
        &self.tokens[self.pos].tok
    }

    pub fn peek_at(&self, ahead: usize) -> &Tok {
        let i = (self.pos + ahead).min(self.tokens.len() - 1);
        &self.tokens[i].tok
    }

    pub fn token(&self) -> &Token {
        &self.tokens[self.pos]
    }

    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Saves the position for backtracking (decision-table ranges versus lists).
    pub fn mark(&self) -> (usize, u32) {
        (self.pos, self.nesting)
    }

    pub fn reset(&mut self, mark: (usize, u32)) {
        (self.pos, self.nesting) = mark;
    }

    pub fn advance(&mut self) -> Token {
        let token = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    pub fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.advance();
            true
        } else {
            false
        }
    }

    pub fn unexpected(&self) -> ExprError {
        let token = self.token();
        if token.tok == Tok::End {
            ExprError::new("unexpected end of expression", token.start)
        } else {
            ExprError::new(
                format!("unexpected `{}`", &self.src[token.start..token.end]),
                token.start,
            )
        }
    }

    pub fn expect(&mut self, tok: &Tok, what: &str) -> Result<Token, ExprError> {
        if self.peek() == tok {
            return Ok(self.advance());
        }
        let mut err = self.unexpected();
        err.message = format!("{}, expected {what}", err.message);
        Err(err)
    }

    pub fn expect_end(&self) -> Result<(), ExprError> {
        if self.peek() == &Tok::End {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(ExprError::new(
                format!("the expression nests more than {MAX_NESTING} levels deep"),
                self.token().start,
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    /// Builds a node, refusing trees deeper than evaluation may recurse.
    fn node(&self, kind: Kind, start: usize, end: usize, at: usize) -> Result<Node, ExprError> {
        let mut node = Node {
            kind,
            start,
            end,
            at,
            depth: 1,
        };
        node.depth = 1 + node.children().iter().map(|c| c.depth).max().unwrap_or(0);
        if node.depth > MAX_TREE_DEPTH {
            return Err(ExprError::new(
                format!("the expression is too deeply nested (more than {MAX_TREE_DEPTH} levels)"),
                at,
            ));
        }
        Ok(node)
    }

    fn binary(&self, op: BinOp, lhs: Node, rhs: Node, at: usize) -> Result<Node, ExprError> {
        let (start, end) = (lhs.start, rhs.end);
        self.node(
            Kind::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            },
            start,
            end,
            at,
        )
    }

    /// Any expression, including `if .. then .. else`.
    pub fn expression(&mut self) -> Result<Node, ExprError> {
        self.enter()?;
        let result = if self.peek() == &Tok::If {
            self.conditional()
        } else {
            self.or()
        };
        self.leave();
        result
    }

    fn conditional(&mut self) -> Result<Node, ExprError> {
        let if_token = self.advance();
        let cond = self.expression()?;
        self.expect(&Tok::Then, "`then`")?;
        let then = self.expression()?;
        self.expect(&Tok::Else, "`else` (an `if` needs both branches)")?;
        let otherwise = self.expression()?;
        let end = otherwise.end;
        self.node(
            Kind::If {
                cond: Box::new(cond),
                then: Box::new(then),
                otherwise: Box::new(otherwise),
            },
            if_token.start,
            end,
            if_token.start,
        )
    }

    fn or(&mut self) -> Result<Node, ExprError> {
        let mut lhs = self.and()?;
        while matches!(self.peek(), Tok::Or | Tok::PipePipe) {
            let at = self.advance().start;
            let rhs = self.and()?;
            let (start, end) = (lhs.start, rhs.end);
            lhs = self.node(Kind::Or(Box::new(lhs), Box::new(rhs)), start, end, at)?;
        }
        Ok(lhs)
    }

    fn and(&mut self) -> Result<Node, ExprError> {
        let mut lhs = self.not()?;
        while matches!(self.peek(), Tok::And | Tok::AmpAmp) {
            let at = self.advance().start;
            let rhs = self.not()?;
            let (start, end) = (lhs.start, rhs.end);
            lhs = self.node(Kind::And(Box::new(lhs), Box::new(rhs)), start, end, at)?;
        }
        Ok(lhs)
    }

    /// The word `not` binds loosely, as in Python: `not a == b` is `not (a == b)`.
    fn not(&mut self) -> Result<Node, ExprError> {
        if self.peek() != &Tok::Not {
            return self.comparison();
        }
        let at = self.advance().start;
        self.enter()?;
        let operand = self.not();
        self.leave();
        let operand = operand?;
        let end = operand.end;
        self.node(Kind::Not(Box::new(operand)), at, end, at)
    }

    fn comparison_op(&self) -> Option<(BinOp, usize)> {
        let op = match self.peek() {
            Tok::EqEq => BinOp::Eq,
            Tok::NotEq => BinOp::Ne,
            Tok::Lt => BinOp::Lt,
            Tok::Le => BinOp::Le,
            Tok::Gt => BinOp::Gt,
            Tok::Ge => BinOp::Ge,
            Tok::In => BinOp::In,
            Tok::Not if self.peek_at(1) == &Tok::In => return Some((BinOp::NotIn, 2)),
            _ => return None,
        };
        Some((op, 1))
    }

    fn comparison(&mut self) -> Result<Node, ExprError> {
        let lhs = self.coalesce()?;
        let Some((op, len)) = self.comparison_op() else {
            return Ok(lhs);
        };
        let at = self.token().start;
        for _ in 0..len {
            self.advance();
        }
        let rhs = self.coalesce()?;
        if self.comparison_op().is_some() {
            return Err(ExprError::new(
                "comparisons cannot be chained: join them with `and`",
                self.token().start,
            ));
        }
        self.binary(op, lhs, rhs, at)
    }

    /// `a ?? b ?? c` groups to the right, `a ?? (b ?? c)`: the value is the same either way,
    /// but only so is `b` on the left of a `??`, where a missing variable reads as null.
    fn coalesce(&mut self) -> Result<Node, ExprError> {
        let first = self.additive()?;
        let mut rest = Vec::new();
        while self.peek() == &Tok::QuestionQuestion {
            let at = self.advance().start;
            rest.push((at, self.additive()?));
        }
        // Fold from the right: operand i and the `??` after it wrap what follows.
        let mut operands = Vec::with_capacity(rest.len() + 1);
        let mut ats = Vec::with_capacity(rest.len());
        operands.push(first);
        for (at, node) in rest {
            ats.push(at);
            operands.push(node);
        }
        let mut rhs = operands.pop().expect("at least the first operand");
        while let (Some(lhs), Some(at)) = (operands.pop(), ats.pop()) {
            let (start, end) = (lhs.start, rhs.end);
            rhs = self.node(Kind::Coalesce(Box::new(lhs), Box::new(rhs)), start, end, at)?;
        }
        Ok(rhs)
    }

    fn additive(&mut self) -> Result<Node, ExprError> {
        let mut lhs = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => BinOp::Add,
                Tok::Minus => BinOp::Sub,
                _ => return Ok(lhs),
            };
            let at = self.advance().start;
            let rhs = self.multiplicative()?;
            lhs = self.binary(op, lhs, rhs, at)?;
        }
    }

    fn multiplicative(&mut self) -> Result<Node, ExprError> {
        let mut lhs = self.prefix()?;
        loop {
            let op = match self.peek() {
                Tok::Star => BinOp::Mul,
                Tok::Slash => BinOp::Div,
                Tok::Percent => BinOp::Rem,
                _ => return Ok(lhs),
            };
            let at = self.advance().start;
            let rhs = self.prefix()?;
            lhs = self.binary(op, lhs, rhs, at)?;
        }
    }

    /// Prefix `-` and `!`; the symbol `!` binds tightly as in JavaScript.
    fn prefix(&mut self) -> Result<Node, ExprError> {
        let negate = match self.peek() {
            Tok::Minus => true,
            Tok::Bang => false,
            _ => return self.postfix(),
        };
        let at = self.advance().start;
        self.enter()?;
        let operand = self.prefix();
        self.leave();
        let operand = operand?;
        let end = operand.end;
        if negate {
            // Fold `-5` into a literal so that negative numbers cost nothing at evaluation.
            if let Some(Value::Number(n)) = operand.literal() {
                return self.node(Kind::Literal(Value::Number(-*n)), at, end, at);
            }
            self.node(Kind::Neg(Box::new(operand)), at, end, at)
        } else {
            self.node(Kind::Not(Box::new(operand)), at, end, at)
        }
    }

    fn postfix(&mut self) -> Result<Node, ExprError> {
        let mut node = self.primary()?;
        loop {
            match self.peek() {
                Tok::Dot | Tok::QuestionDot => {
                    let dot = self.advance();
                    let safe = dot.tok == Tok::QuestionDot;
                    if safe && self.peek() == &Tok::LBracket {
                        node = self.index(node, true)?;
                        continue;
                    }
                    let name_token = self.advance();
                    let name = match &name_token.tok {
                        Tok::Ident(name) => name.clone(),
                        // Keywords are fine as field names: `order.in`, `flags.not`.
                        Tok::True
                        | Tok::False
                        | Tok::Null
                        | Tok::And
                        | Tok::Or
                        | Tok::Not
                        | Tok::In
                        | Tok::If
                        | Tok::Then
                        | Tok::Else => self.src[name_token.start..name_token.end].to_string(),
                        _ => {
                            self.pos -= usize::from(name_token.tok != Tok::End);
                            let mut err = self.unexpected();
                            err.message = format!("{}, expected a field name", err.message);
                            return Err(err);
                        }
                    };
                    let start = node.start;
                    node = self.node(
                        Kind::Field {
                            target: Box::new(node),
                            name: name.into(),
                            safe,
                        },
                        start,
                        name_token.end,
                        dot.start,
                    )?;
                }
                Tok::LBracket => node = self.index(node, false)?,
                _ => return Ok(node),
            }
        }
    }

    fn index(&mut self, target: Node, safe: bool) -> Result<Node, ExprError> {
        let open = self.advance();
        let index = self.expression()?;
        let close = self.expect(&Tok::RBracket, "`]`")?;
        let start = target.start;
        self.node(
            Kind::Index {
                target: Box::new(target),
                index: Box::new(index),
                safe,
            },
            start,
            close.end,
            open.start,
        )
    }

    fn primary(&mut self) -> Result<Node, ExprError> {
        let token = self.token().clone();
        let literal = |value| Kind::Literal(value);
        let kind = match &token.tok {
            Tok::Number(n) => literal(Value::Number(*n)),
            Tok::Str(s) => literal(Value::String(s.clone())),
            Tok::True => literal(Value::Bool(true)),
            Tok::False => literal(Value::Bool(false)),
            Tok::Null => literal(Value::Null),
            Tok::Question => {
                if !self.input_allowed {
                    return Err(ExprError::new(
                        "`?` stands for the input only in decision-table cells",
                        token.start,
                    ));
                }
                Kind::Input
            }
            Tok::Ident(name) => {
                if self.peek_at(1) == &Tok::LParen {
                    return self.call(name.clone(), token.start);
                }
                Kind::Var(name.as_str().into())
            }
            Tok::LParen => {
                self.advance();
                let mut inner = self.expression()?;
                let close = self.expect(&Tok::RParen, "`)`")?;
                // The parentheses belong to the value's text, so messages quote `(a + b)`.
                inner.start = token.start;
                inner.end = close.end;
                return Ok(inner);
            }
            Tok::LBracket => return self.list(),
            Tok::LBrace => return self.map(),
            Tok::If => {
                self.enter()?;
                let node = self.conditional();
                self.leave();
                return node;
            }
            _ => return Err(self.unexpected()),
        };
        self.advance();
        self.node(kind, token.start, token.end, token.start)
    }

    fn call(&mut self, name: String, start: usize) -> Result<Node, ExprError> {
        let Some(spec) = functions::lookup(&name) else {
            let mut message = format!("unknown function `{name}`");
            if let Some(close) = functions::suggest(&name) {
                message.push_str(&format!(": did you mean `{close}`?"));
            }
            return Err(ExprError::new(message, start));
        };
        self.advance(); // the name
        self.advance(); // `(`
        let mut args = Vec::new();
        self.enter()?;
        let close = loop {
            if self.peek() == &Tok::RParen {
                break self.advance();
            }
            args.push(self.expression()?);
            if !self.eat(&Tok::Comma) {
                break self.expect(&Tok::RParen, "`,` or `)`")?;
            }
        };
        self.leave();
        if args.len() < spec.min_args || args.len() > spec.max_args {
            let expected = match (spec.min_args, spec.max_args) {
                (min, max) if min == max => format!("{min}"),
                (min, usize::MAX) => format!("at least {min}"),
                (min, max) => format!("{min} to {max}"),
            };
            return Err(ExprError::new(
                format!(
                    "`{name}` takes {expected} argument{}, not {}",
                    if spec.max_args == 1 && spec.min_args == 1 {
                        ""
                    } else {
                        "s"
                    },
                    args.len()
                ),
                start,
            ));
        }
        self.node(
            Kind::Call {
                func: spec.func,
                args,
            },
            start,
            close.end,
            start,
        )
    }

    fn list(&mut self) -> Result<Node, ExprError> {
        let open = self.advance();
        self.enter()?;
        let mut items = Vec::new();
        let close = loop {
            if self.peek() == &Tok::RBracket {
                break self.advance();
            }
            let item = self.expression()?;
            if items.is_empty() && matches!(self.peek(), Tok::Ident(word) if word == "for") {
                let node = self.comprehension(open.start, item);
                self.leave();
                return node;
            }
            items.push(item);
            if !self.eat(&Tok::Comma) {
                break self.expect(&Tok::RBracket, "`,` or `]`")?;
            }
        };
        self.leave();
        // A list of constants is built once here rather than at every evaluation, which keeps
        // `status in ["open", "won"]` cheap.
        let kind = if items.iter().all(|item| item.literal().is_some()) {
            Kind::Literal(Value::List(
                items
                    .into_iter()
                    .map(|item| match item.kind {
                        Kind::Literal(value) => value,
                        _ => Value::Null,
                    })
                    .collect(),
            ))
        } else {
            Kind::List(items)
        };
        self.node(kind, open.start, close.end, open.start)
    }

    /// The rest of `[element for var in list if filter]`, from `for`.
    fn comprehension(&mut self, start: usize, element: Node) -> Result<Node, ExprError> {
        self.advance(); // `for`
        let var_token = self.advance();
        let Tok::Ident(var) = var_token.tok.clone() else {
            self.pos -= usize::from(var_token.tok != Tok::End);
            let mut err = self.unexpected();
            err.message = format!(
                "{}, expected a name for each item (`[x * 2 for x in list]`)",
                err.message
            );
            return Err(err);
        };
        self.expect(&Tok::In, "`in` (`for x in list`)")?;
        let list = self.expression()?;
        let filter = if self.eat(&Tok::If) {
            Some(Box::new(self.expression()?))
        } else {
            None
        };
        let close = self.expect(&Tok::RBracket, "`]` or `if` and a condition")?;
        self.node(
            Kind::Comprehension {
                element: Box::new(element),
                var: var.into(),
                list: Box::new(list),
                filter,
            },
            start,
            close.end,
            var_token.start,
        )
    }

    fn map(&mut self) -> Result<Node, ExprError> {
        let open = self.advance();
        self.enter()?;
        let mut entries: Vec<(String, Node)> = Vec::new();
        let close = loop {
            if self.peek() == &Tok::RBrace {
                break self.advance();
            }
            let key_token = self.advance();
            let key = match &key_token.tok {
                Tok::Ident(name) => name.clone(),
                Tok::Str(text) => text.clone(),
                _ => {
                    self.pos -= usize::from(key_token.tok != Tok::End);
                    let mut err = self.unexpected();
                    err.message = format!("{}, expected a key (a name or a text)", err.message);
                    return Err(err);
                }
            };
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(ExprError::new(
                    format!("the key `{key}` appears twice"),
                    key_token.start,
                ));
            }
            self.expect(&Tok::Colon, "`:`")?;
            entries.push((key, self.expression()?));
            if !self.eat(&Tok::Comma) {
                break self.expect(&Tok::RBrace, "`,` or `}`")?;
            }
        };
        self.leave();
        let kind = if entries.iter().all(|(_, node)| node.literal().is_some()) {
            Kind::Literal(Value::Map(
                entries
                    .into_iter()
                    .map(|(key, node)| match node.kind {
                        Kind::Literal(value) => (key, value),
                        _ => (key, Value::Null),
                    })
                    .collect(),
            ))
        } else {
            Kind::Map(entries)
        };
        self.node(kind, open.start, close.end, open.start)
    }
}

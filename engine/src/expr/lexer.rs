//! Splits expression text into tokens, one at a time, each with its byte range in the source.
//!
//! The lexer works on a window `start..end` of a larger text so that template parts and
//! decision-table cells report offsets into the text the analyst wrote. It produces tokens
//! one by one because a template only knows where a `{{ ... }}` part ends by lexing it.

use rust_decimal::Decimal;

use super::ExprError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Number(Decimal),
    Str(String),
    Ident(String),
    True,
    False,
    Null,
    And,
    Or,
    Not,
    In,
    If,
    Then,
    Else,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Colon,
    Dot,
    DotDot,
    QuestionDot,
    QuestionQuestion,
    Question,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    AmpAmp,
    PipePipe,
    Bang,
    End,
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

pub(crate) struct Lexer<'s> {
    src: &'s str,
    pos: usize,
    end: usize,
}

impl<'s> Lexer<'s> {
    pub fn new(src: &'s str, start: usize, end: usize) -> Lexer<'s> {
        Lexer {
            src,
            pos: start,
            end,
        }
    }

    fn peek_char(&self) -> Option<char> {
        self.src[self.pos..self.end].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        let mut chars = self.src[self.pos..self.end].chars();
        chars.next();
        chars.next()
    }

    pub fn skip_whitespace(&mut self) {
        while let Some(c) = self.peek_char() {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    pub fn next_token(&mut self) -> Result<Token, ExprError> {
        self.skip_whitespace();
        let start = self.pos;
        let Some(c) = self.peek_char() else {
            return Ok(Token {
                tok: Tok::End,
                start: self.end,
                end: self.end,
            });
        };
        let tok = if c.is_ascii_digit() {
            self.number()?
        } else if c == '"' || c == '\'' {
            self.string(c)?
        } else if c.is_alphabetic() || c == '_' {
            self.word()
        } else {
            let second = self.peek_second();
            let (tok, len) = match (c, second) {
                ('=', Some('=')) => (Tok::EqEq, 2),
                ('!', Some('=')) => (Tok::NotEq, 2),
                ('<', Some('=')) => (Tok::Le, 2),
                ('>', Some('=')) => (Tok::Ge, 2),
                ('&', Some('&')) => (Tok::AmpAmp, 2),
                ('|', Some('|')) => (Tok::PipePipe, 2),
                ('?', Some('?')) => (Tok::QuestionQuestion, 2),
                ('?', Some('.')) => (Tok::QuestionDot, 2),
                ('.', Some('.')) => (Tok::DotDot, 2),
                ('+', _) => (Tok::Plus, 1),
                ('-', _) => (Tok::Minus, 1),
                ('*', _) => (Tok::Star, 1),
                ('/', _) => (Tok::Slash, 1),
                ('%', _) => (Tok::Percent, 1),
                ('(', _) => (Tok::LParen, 1),
                (')', _) => (Tok::RParen, 1),
                ('[', _) => (Tok::LBracket, 1),
                (']', _) => (Tok::RBracket, 1),
                ('{', _) => (Tok::LBrace, 1),
                ('}', _) => (Tok::RBrace, 1),
                (',', _) => (Tok::Comma, 1),
                (':', _) => (Tok::Colon, 1),
                ('.', _) => (Tok::Dot, 1),
                ('?', _) => (Tok::Question, 1),
                ('<', _) => (Tok::Lt, 1),
                ('>', _) => (Tok::Gt, 1),
                ('!', _) => (Tok::Bang, 1),
                ('=', _) => {
                    return Err(ExprError::new(
                        "`=` alone is not an operator: write `==` to compare",
                        start,
                    ));
                }
                ('&', _) => return Err(ExprError::new("write `and` (or `&&`), not `&`", start)),
                ('|', _) => return Err(ExprError::new("write `or` (or `||`), not `|`", start)),
                _ => {
                    return Err(ExprError::new(format!("unexpected character `{c}`"), start));
                }
            };
            self.pos += len;
            tok
        };
        Ok(Token {
            tok,
            start,
            end: self.pos,
        })
    }

    fn number(&mut self) -> Result<Tok, ExprError> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        while self.pos < self.end && bytes[self.pos].is_ascii_digit() {
            self.pos += 1;
        }
        // A point belongs to the number only when a digit follows, so `1..5` is a range and
        // `xs.0` stays an error rather than a strange number.
        if self.pos + 1 < self.end
            && bytes[self.pos] == b'.'
            && bytes[self.pos + 1].is_ascii_digit()
        {
            self.pos += 1;
            while self.pos < self.end && bytes[self.pos].is_ascii_digit() {
                self.pos += 1;
            }
        }
        let text = &self.src[start..self.pos];
        if self.pos < self.end && (bytes[self.pos].is_ascii_alphabetic() || bytes[self.pos] == b'_')
        {
            return Err(ExprError::new(
                format!("a number cannot be followed by a letter here (`{text}` then a word)"),
                self.pos,
            ));
        }
        text.parse::<Decimal>()
            .map(Tok::Number)
            .map_err(|_| ExprError::new(format!("the number `{text}` is too large"), start))
    }

    fn string(&mut self, quote: char) -> Result<Tok, ExprError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek_char() else {
                return Err(ExprError::new(
                    format!("the text starting here is not closed by {quote}"),
                    start,
                ));
            };
            let at = self.pos;
            self.pos += c.len_utf8();
            if c == quote {
                return Ok(Tok::Str(out));
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some(escaped) = self.peek_char() else {
                return Err(ExprError::new(
                    format!("the text starting here is not closed by {quote}"),
                    start,
                ));
            };
            self.pos += escaped.len_utf8();
            match escaped {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                '\\' | '"' | '\'' => out.push(escaped),
                'u' => out.push(self.unicode_escape(at)?),
                other => {
                    return Err(ExprError::new(
                        format!(
                            "unknown escape `\\{other}` (use \\n, \\t, \\r, \\\\, \\\", \\' or \\u{{...}})"
                        ),
                        at,
                    ));
                }
            }
        }
    }

    /// Reads the `{XXXX}` of a `\u{XXXX}` escape.
    fn unicode_escape(&mut self, at: usize) -> Result<char, ExprError> {
        let bad = || ExprError::new("a unicode escape looks like `\\u{e9}`", at);
        if self.peek_char() != Some('{') {
            return Err(bad());
        }
        self.pos += 1;
        let digits_start = self.pos;
        while let Some(c) = self.peek_char() {
            if c == '}' {
                break;
            }
            if !c.is_ascii_hexdigit() || self.pos - digits_start >= 6 {
                return Err(bad());
            }
            self.pos += 1;
        }
        if self.peek_char() != Some('}') {
            return Err(bad());
        }
        let digits = &self.src[digits_start..self.pos];
        self.pos += 1;
        u32::from_str_radix(digits, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(bad)
    }

    fn word(&mut self) -> Tok {
        let start = self.pos;
        while let Some(c) = self.peek_char() {
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            self.pos += c.len_utf8();
        }
        match &self.src[start..self.pos] {
            "true" => Tok::True,
            "false" => Tok::False,
            "null" => Tok::Null,
            "and" => Tok::And,
            "or" => Tok::Or,
            "not" => Tok::Not,
            "in" => Tok::In,
            "if" => Tok::If,
            "then" => Tok::Then,
            "else" => Tok::Else,
            word => Tok::Ident(word.to_string()),
        }
    }
}

/// Lexes all of `src[start..end]`, ending with a `Tok::End` token.
pub(crate) fn tokenize(src: &str, start: usize, end: usize) -> Result<Vec<Token>, ExprError> {
    let mut lexer = Lexer::new(src, start, end);
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next_token()?;
        let done = token.tok == Tok::End;
        tokens.push(token);
        if done {
            return Ok(tokens);
        }
    }
}

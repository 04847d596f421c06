//! Recursive-descent parser for STIX patterns.
//!
//! Precedence, loosest first: `FOLLOWEDBY`, observation `OR`, observation
//! `AND`, then qualifiers, which bind to the observation expression just
//! before them. Inside `[...]`, `OR` is looser than `AND`. Recursion only
//! happens at parentheses and brackets, so the nesting depth limit bounds
//! the stack whatever the input.

use super::ast::*;
use super::error::{ErrorKind, PatternError, Span};
use super::lexer::{Keyword, Lexer, Tok, Token};
use super::validate;

/// Bounds that keep hostile patterns from exhausting memory or stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest pattern text accepted, in bytes. Default 1 MiB: large enough
    /// for feeds that pack thousands of hashes into one `OR` list.
    pub max_pattern_bytes: usize,
    /// Deepest nesting of brackets and parentheses. Default 64.
    pub max_depth: usize,
    /// Most elements in one `IN (...)` set. Default 65,536.
    pub max_set_len: usize,
    /// Largest `REPEATS n TIMES`. Default 10,000: every repetition needs
    /// its own observation, which a stream has to keep in memory.
    pub max_repeats: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pattern_bytes: 1 << 20,
            max_depth: 64,
            max_set_len: 65_536,
            max_repeats: 10_000,
        }
    }
}

/// Parses `text` as a STIX 2.1 pattern with the default [`Limits`].
///
/// Beyond the grammar, it checks what makes a pattern unusable: invalid
/// regular expressions, `ISSUBSET`/`ISSUPERSET` operands that are not IP
/// networks, qualifier values, and literals that no valid value of a
/// well-known property can equal (such as a 40-digit `SHA-256`).
///
/// ```
/// use sightline::pattern::{parse, ObservationExpr};
///
/// let pattern = parse("[ipv4-addr:value = '198.51.100.7'] WITHIN 60 SECONDS")?;
/// assert!(matches!(pattern.root, ObservationExpr::Qualified(..)));
///
/// let err = parse("[ipv4-addr:value = ]").unwrap_err();
/// assert_eq!(err.column, 20);
/// # Ok::<(), sightline::pattern::PatternError>(())
/// ```
///
/// # Errors
///
/// Returns a [`PatternError`] naming the position, what was found and what
/// was expected.
pub fn parse(text: &str) -> Result<Pattern, PatternError> {
    parse_with_limits(text, &Limits::default())
}

/// Parses `text` with explicit [`Limits`].
///
/// # Errors
///
/// As [`parse`], plus [`ErrorKind::Limit`] when a limit is exceeded.
pub fn parse_with_limits(text: &str, limits: &Limits) -> Result<Pattern, PatternError> {
    if text.len() > limits.max_pattern_bytes {
        let kind = ErrorKind::Limit {
            what: "pattern length in bytes",
            actual: text.len(),
            limit: limits.max_pattern_bytes,
        };
        return Err(PatternError::new(kind, Span::new(0, 0), text));
    }
    let mut parser = Parser::new(text, limits)?;
    let root = parser.observation_expressions()?;
    if parser.token.tok != Tok::Eof {
        return Err(parser.unexpected(
            "an observation operator (AND, OR, FOLLOWEDBY), a qualifier or the end of the pattern",
        ));
    }
    Ok(Pattern { root })
}

struct Parser<'a> {
    text: &'a str,
    lexer: Lexer<'a>,
    token: Token,
    limits: &'a Limits,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, limits: &'a Limits) -> Result<Parser<'a>, PatternError> {
        let mut lexer = Lexer::new(text);
        let token = lexer.next_token()?;
        Ok(Parser {
            text,
            lexer,
            token,
            limits,
            depth: 0,
        })
    }

    fn advance(&mut self) -> Result<Token, PatternError> {
        let next = self.lexer.next_token()?;
        Ok(std::mem::replace(&mut self.token, next))
    }

    fn at_keyword(&self, kw: Keyword) -> bool {
        self.token.tok == Tok::Kw(kw)
    }

    fn error(&self, kind: ErrorKind, span: Span) -> PatternError {
        PatternError::new(kind, span, self.text)
    }

    fn unexpected(&self, expected: &'static str) -> PatternError {
        let found = describe(&self.token, self.text);
        self.error(ErrorKind::Unexpected { expected, found }, self.token.span)
    }

    fn expect(&mut self, tok: Tok, expected: &'static str) -> Result<Token, PatternError> {
        if self.token.tok == tok {
            self.advance()
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn expect_keyword(&mut self, kw: Keyword, expected: &'static str) -> Result<(), PatternError> {
        self.expect(Tok::Kw(kw), expected).map(drop)
    }

    /// Enters one level of brackets or parentheses.
    fn enter(&mut self) -> Result<(), PatternError> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            let kind = ErrorKind::Limit {
                what: "nesting depth",
                actual: self.depth,
                limit: self.limits.max_depth,
            };
            return Err(self.error(kind, self.token.span));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    // ---- observation expressions -------------------------------------

    fn observation_expressions(&mut self) -> Result<ObservationExpr, PatternError> {
        self.chain(
            Keyword::FollowedBy,
            ObservationExpr::FollowedBy,
            Self::observation_or,
        )
    }

    fn observation_or(&mut self) -> Result<ObservationExpr, PatternError> {
        self.chain(Keyword::Or, ObservationExpr::Or, Self::observation_and)
    }

    fn observation_and(&mut self) -> Result<ObservationExpr, PatternError> {
        self.chain(
            Keyword::And,
            ObservationExpr::And,
            Self::observation_qualified,
        )
    }

    /// Parses `operand (KW operand)*` into one flat node (observation or
    /// comparison level alike).
    fn chain<T>(
        &mut self,
        kw: Keyword,
        make: fn(Vec<T>) -> T,
        operand: fn(&mut Self) -> Result<T, PatternError>,
    ) -> Result<T, PatternError> {
        let first = operand(self)?;
        if !self.at_keyword(kw) {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.at_keyword(kw) {
            self.advance()?;
            items.push(operand(self)?);
        }
        Ok(make(items))
    }

    /// An observation expression followed by any qualifiers.
    fn observation_qualified(&mut self) -> Result<ObservationExpr, PatternError> {
        let mut expr = self.observation_primary()?;
        let mut seen: Vec<&'static str> = Vec::new();
        loop {
            let start = self.token.span;
            let qualifier = match self.token.tok {
                Tok::Kw(Keyword::Within) => self.within()?,
                Tok::Kw(Keyword::Repeats) => self.repeats()?,
                Tok::Kw(Keyword::Start) => self.start_stop()?,
                _ => return Ok(expr),
            };
            let keyword = qualifier.keyword();
            if seen.contains(&keyword) {
                let span = start.to(self.previous_end());
                return Err(self.error(ErrorKind::DuplicateQualifier(keyword), span));
            }
            seen.push(keyword);
            expr = ObservationExpr::Qualified(Box::new(expr), qualifier);
        }
    }

    /// A span ending where the last consumed token ended (the current token
    /// starts after it, possibly past white space).
    fn previous_end(&self) -> Span {
        Span::new(self.token.span.start, self.token.span.start)
    }

    fn observation_primary(&mut self) -> Result<ObservationExpr, PatternError> {
        match self.token.tok {
            Tok::LBrack => {
                self.enter()?;
                let open = self.advance()?.span;
                let comparison = self.comparison_or()?;
                let close = self.expect(Tok::RBrack, "']' or a comparison operator (AND, OR)")?;
                validate::same_object(&comparison)
                    .map_err(|kind| self.error(kind, open.to(close.span)))?;
                self.leave();
                Ok(ObservationExpr::Observation(comparison))
            }
            Tok::LParen => {
                self.enter()?;
                self.advance()?;
                let inner = self.observation_expressions()?;
                self.expect(
                    Tok::RParen,
                    "')' or an observation operator (AND, OR, FOLLOWEDBY)",
                )?;
                self.leave();
                Ok(inner)
            }
            _ => Err(self.unexpected("'[' or '(' starting an observation expression")),
        }
    }

    fn within(&mut self) -> Result<Qualifier, PatternError> {
        self.advance()?;
        let token = self.advance()?;
        let seconds = match token.tok {
            Tok::Int(n) if n > 0 => Seconds::Int(n as u64),
            Tok::Float(f) if f > 0.0 => Seconds::Float(f),
            Tok::Int(_) | Tok::Float(_) => {
                let kind = ErrorKind::BadQualifier(
                    "WITHIN needs a number of seconds greater than 0".into(),
                );
                return Err(self.error(kind, token.span));
            }
            _ => {
                let found = describe(&token, self.text);
                let kind = ErrorKind::Unexpected {
                    expected: "a number of seconds after WITHIN",
                    found,
                };
                return Err(self.error(kind, token.span));
            }
        };
        self.expect_keyword(Keyword::Seconds, "SECONDS")?;
        Ok(Qualifier::Within(seconds))
    }

    fn repeats(&mut self) -> Result<Qualifier, PatternError> {
        self.advance()?;
        let token = self.advance()?;
        let count = match token.tok {
            Tok::Int(n) if n > 0 => n,
            Tok::Int(_) => {
                let kind = ErrorKind::BadQualifier("REPEATS needs a count greater than 0".into());
                return Err(self.error(kind, token.span));
            }
            _ => {
                let found = describe(&token, self.text);
                let kind = ErrorKind::Unexpected {
                    expected: "a whole number after REPEATS",
                    found,
                };
                return Err(self.error(kind, token.span));
            }
        };
        if count > i64::from(self.limits.max_repeats) {
            let kind = ErrorKind::Limit {
                what: "REPEATS count",
                actual: usize::try_from(count).unwrap_or(usize::MAX),
                limit: self.limits.max_repeats as usize,
            };
            return Err(self.error(kind, token.span));
        }
        self.expect_keyword(Keyword::Times, "TIMES")?;
        Ok(Qualifier::Repeats(count as u32))
    }

    fn start_stop(&mut self) -> Result<Qualifier, PatternError> {
        let first = self.advance()?.span;
        let start = self.timestamp("a timestamp literal t'…' after START")?;
        self.expect_keyword(Keyword::Stop, "STOP")?;
        let stop = self.timestamp("a timestamp literal t'…' after STOP")?;
        if start >= stop {
            let kind = ErrorKind::BadQualifier(format!(
                "START {start} is not before STOP {stop}: the interval would be empty"
            ));
            return Err(self.error(kind, first.to(self.previous_end())));
        }
        Ok(Qualifier::StartStop { start, stop })
    }

    fn timestamp(
        &mut self,
        expected: &'static str,
    ) -> Result<crate::stix::timestamp::Timestamp, PatternError> {
        match self.token.tok {
            Tok::Time(ts) => {
                self.advance()?;
                Ok(ts)
            }
            _ => Err(self.unexpected(expected)),
        }
    }

    // ---- comparison expressions --------------------------------------

    fn comparison_or(&mut self) -> Result<ComparisonExpr, PatternError> {
        self.chain(Keyword::Or, ComparisonExpr::Or, Self::comparison_and)
    }

    fn comparison_and(&mut self) -> Result<ComparisonExpr, PatternError> {
        self.chain(Keyword::And, ComparisonExpr::And, Self::comparison_primary)
    }

    fn comparison_primary(&mut self) -> Result<ComparisonExpr, PatternError> {
        match self.token.tok {
            Tok::LParen => {
                self.enter()?;
                self.advance()?;
                let inner = self.comparison_or()?;
                self.expect(Tok::RParen, "')' or a comparison operator (AND, OR)")?;
                self.leave();
                Ok(inner)
            }
            Tok::Kw(Keyword::Exists) => {
                self.advance()?;
                let path = self.object_path()?;
                Ok(ComparisonExpr::Test(PropTest {
                    path,
                    negated: false,
                    op: Comparison::Exists,
                }))
            }
            Tok::Kw(Keyword::Not) if self.lookahead_is_exists()? => {
                self.advance()?;
                self.advance()?;
                let path = self.object_path()?;
                Ok(ComparisonExpr::Test(PropTest {
                    path,
                    negated: true,
                    op: Comparison::Exists,
                }))
            }
            _ => self.property_test().map(ComparisonExpr::Test),
        }
    }

    /// True when the token after the current one is `EXISTS`.
    fn lookahead_is_exists(&self) -> Result<bool, PatternError> {
        let mut probe = Lexer::new(self.text);
        // Re-lex from the end of the current token; the lexer is cheap and
        // this only runs on `NOT` at the start of a comparison.
        probe.seek(self.token.span.end);
        Ok(probe.next_token()?.tok == Tok::Kw(Keyword::Exists))
    }

    fn property_test(&mut self) -> Result<PropTest, PatternError> {
        let path_start = self.token.span;
        let path = self.object_path()?;
        let negated = self.at_keyword(Keyword::Not);
        if negated {
            self.advance()?;
        }
        let op_token = self.advance()?;
        let op = match op_token.tok {
            Tok::Eq => Comparison::Eq(self.primitive_literal()?),
            Tok::Ne => Comparison::Ne(self.primitive_literal()?),
            Tok::Lt => Comparison::Lt(self.orderable_literal()?),
            Tok::Le => Comparison::Le(self.orderable_literal()?),
            Tok::Gt => Comparison::Gt(self.orderable_literal()?),
            Tok::Ge => Comparison::Ge(self.orderable_literal()?),
            Tok::Kw(Keyword::In) => Comparison::In(self.set_literal()?),
            Tok::Kw(Keyword::Like) => Comparison::Like(self.string_literal("LIKE")?),
            Tok::Kw(Keyword::Matches) => Comparison::Matches(self.string_literal("MATCHES")?),
            Tok::Kw(Keyword::IsSubset) => Comparison::IsSubset(self.string_literal("ISSUBSET")?),
            Tok::Kw(Keyword::IsSuperset) => {
                Comparison::IsSuperset(self.string_literal("ISSUPERSET")?)
            }
            _ => {
                let found = describe(&op_token, self.text);
                let expected = if negated {
                    "a comparison operator after NOT"
                } else {
                    "a comparison operator (=, !=, <, <=, >, >=, IN, LIKE, MATCHES, ISSUBSET, ISSUPERSET)"
                };
                let kind = ErrorKind::Unexpected { expected, found };
                return Err(self.error(kind, op_token.span));
            }
        };
        let test = PropTest { path, negated, op };
        let span = path_start.to(self.previous_end());
        validate::property_test(&test).map_err(|kind| self.error(kind, span))?;
        Ok(test)
    }

    fn object_path(&mut self) -> Result<ObjectPath, PatternError> {
        let type_token = self.advance()?;
        if !matches!(type_token.tok, Tok::Ident { .. }) {
            let found = describe(&type_token, self.text);
            let kind = ErrorKind::Unexpected {
                expected: "an object path such as file:name",
                found,
            };
            return Err(self.error(kind, type_token.span));
        }
        let object_type = self.text[type_token.span.start..type_token.span.end].to_string();
        self.expect(Tok::Colon, "':' after the object type")?;

        let mut steps = vec![PathStep::Key(self.property_name()?)];
        loop {
            match self.token.tok {
                Tok::Dot => {
                    self.advance()?;
                    steps.push(PathStep::Key(self.property_name()?));
                }
                Tok::LBrack => {
                    self.advance()?;
                    let index = self.advance()?;
                    steps.push(match index.tok {
                        Tok::Int(n) => PathStep::Index(n),
                        Tok::Star => PathStep::AnyIndex,
                        _ => {
                            let found = describe(&index, self.text);
                            let kind = ErrorKind::Unexpected {
                                expected: "a list index (an integer or *)",
                                found,
                            };
                            return Err(self.error(kind, index.span));
                        }
                    });
                    self.expect(Tok::RBrack, "']' closing the list index")?;
                }
                _ => return Ok(ObjectPath { object_type, steps }),
            }
        }
    }

    /// A property or dictionary key: a bare identifier or a quoted string.
    fn property_name(&mut self) -> Result<String, PatternError> {
        let token = self.advance()?;
        let text = &self.text[token.span.start..token.span.end];
        match token.tok {
            Tok::Ident { hyphen: false } => Ok(text.to_string()),
            Tok::Ident { hyphen: true } => {
                Err(self.error(ErrorKind::HyphenInProperty(text.to_string()), token.span))
            }
            Tok::Str(name) => Ok(name),
            _ => {
                let found = describe(&token, self.text);
                let kind = ErrorKind::Unexpected {
                    expected: "a property name (an identifier or a quoted string)",
                    found,
                };
                Err(self.error(kind, token.span))
            }
        }
    }

    // ---- literals ----------------------------------------------------

    fn primitive_literal(&mut self) -> Result<Literal, PatternError> {
        if let Tok::Bool(b) = self.token.tok {
            self.advance()?;
            return Ok(Literal::Bool(b));
        }
        self.literal("a literal value")
    }

    fn orderable_literal(&mut self) -> Result<Literal, PatternError> {
        if matches!(self.token.tok, Tok::Bool(_)) {
            return Err(self.unexpected("an orderable literal (booleans have no order)"));
        }
        self.literal("an orderable literal")
    }

    fn literal(&mut self, expected: &'static str) -> Result<Literal, PatternError> {
        let literal = match &self.token.tok {
            Tok::Str(s) => Literal::Str(s.clone()),
            Tok::Int(n) => Literal::Int(*n),
            Tok::Float(f) => Literal::Float(*f),
            Tok::Hex(b) => Literal::Hex(b.clone()),
            Tok::Binary(b) => Literal::Binary(b.clone()),
            Tok::Time(t) => Literal::Timestamp(*t),
            _ => return Err(self.unexpected(expected)),
        };
        self.advance()?;
        Ok(literal)
    }

    fn set_literal(&mut self) -> Result<Vec<Literal>, PatternError> {
        let open = self.expect(Tok::LParen, "'(' starting the IN set")?.span;
        let mut items = Vec::new();
        if self.token.tok == Tok::RParen {
            self.advance()?;
            return Ok(items);
        }
        loop {
            items.push(self.primitive_literal()?);
            if items.len() > self.limits.max_set_len {
                let kind = ErrorKind::Limit {
                    what: "IN set size",
                    actual: items.len(),
                    limit: self.limits.max_set_len,
                };
                return Err(self.error(kind, open.to(self.previous_end())));
            }
            match self.advance()? {
                Token {
                    tok: Tok::Comma, ..
                } => continue,
                Token {
                    tok: Tok::RParen, ..
                } => return Ok(items),
                token => {
                    let found = describe(&token, self.text);
                    let kind = ErrorKind::Unexpected {
                        expected: "',' or ')' in the IN set",
                        found,
                    };
                    return Err(self.error(kind, token.span));
                }
            }
        }
    }

    fn string_literal(&mut self, operator: &'static str) -> Result<String, PatternError> {
        match &self.token.tok {
            Tok::Str(s) => {
                let s = s.clone();
                self.advance()?;
                Ok(s)
            }
            _ => Err(self.unexpected(match operator {
                "LIKE" => "a string literal after LIKE",
                "MATCHES" => "a string literal after MATCHES",
                "ISSUBSET" => "a string literal after ISSUBSET",
                _ => "a string literal after ISSUPERSET",
            })),
        }
    }
}

/// Describes a token for "found …" in messages.
fn describe(token: &Token, text: &str) -> String {
    let raw = &text[token.span.start..token.span.end];
    match &token.tok {
        Tok::Eof => "the end of the pattern".into(),
        Tok::Kw(_) => format!("keyword {raw}"),
        Tok::Ident { .. } if Keyword::is_reserved(&raw.to_ascii_uppercase()) => {
            format!("{raw:?} (keywords are written in upper case)")
        }
        Tok::Ident { .. }
            if raw.eq_ignore_ascii_case("true") || raw.eq_ignore_ascii_case("false") =>
        {
            format!("{raw:?} (booleans are written true and false)")
        }
        Tok::Ident { .. } => format!("identifier {raw:?}"),
        Tok::Str(_) => format!("string {raw}"),
        Tok::Int(_) | Tok::Float(_) => format!("number {raw}"),
        Tok::Bool(_) => format!("boolean {raw}"),
        Tok::Hex(_) | Tok::Binary(_) | Tok::Time(_) => format!("literal {raw}"),
        _ => format!("'{raw}'"),
    }
}

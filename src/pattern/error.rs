//! Errors of the pattern lexer, parser and validator.
//!
//! Every error carries the byte span of the offending text, so that callers
//! can point at it (`sightline check` draws a caret under it), and says what
//! was found and what was expected.

use std::fmt;

use crate::stix::timestamp::TimestampError;

/// A byte range in the pattern text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
}

impl Span {
    /// A span covering `start..end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// What went wrong, without the position.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ErrorKind {
    /// A character that starts no token.
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    /// A string literal without its closing quote.
    #[error("string literal is not closed: expected a closing quote (')")]
    UnterminatedString,
    /// A backslash followed by something other than `'` or `\`.
    #[error("invalid escape \\{0} in string literal: only \\' and \\\\ are allowed")]
    BadEscape(char),
    /// A number that does not follow the grammar or does not fit.
    #[error("invalid number {text:?}: {reason}")]
    BadNumber {
        /// The text as written.
        text: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An `h'…'` literal that is not pairs of hex digits.
    #[error("invalid hex literal: {0}")]
    BadHex(&'static str),
    /// A `b'…'` literal that is not padded base64.
    #[error("invalid binary literal: {0}")]
    BadBase64(String),
    /// A `t'…'` literal that is not a valid UTC timestamp.
    #[error("invalid timestamp literal: {0}")]
    BadTimestamp(TimestampError),
    /// The parser met a token it cannot use here.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the grammar allows at this point.
        expected: &'static str,
        /// A description of the token that is there.
        found: String,
    },
    /// An unquoted property name containing a hyphen.
    #[error("property name {0:?} contains '-': quote it, as in .'{0}'")]
    HyphenInProperty(String),
    /// The same qualifier kind applied twice to one expression.
    #[error("{0} is applied twice to the same observation expression")]
    DuplicateQualifier(&'static str),
    /// A qualifier with a value it cannot take.
    #[error("{0}")]
    BadQualifier(String),
    /// `AND` inside `[...]` joining comparisons that start from different
    /// object types, which no single object can satisfy (§9.5).
    #[error(
        "AND joins comparisons on different object types ({0}): no single object can \
         satisfy them; use separate [...] observation expressions, or OR"
    )]
    MixedObjectTypes(String),
    /// A `MATCHES` regular expression that cannot be run.
    #[error("regular expression cannot be used: {0}")]
    BadRegex(String),
    /// An `ISSUBSET`/`ISSUPERSET` operand that is not an IP address or CIDR.
    #[error("{0:?} is not an IPv4 or IPv6 address or CIDR block")]
    BadCidr(String),
    /// A literal that can never be a valid value of a well-known property.
    #[error("{path}: {reason}")]
    InvalidValue {
        /// The object path, as printed.
        path: String,
        /// Why the value cannot occur.
        reason: String,
    },
    /// A configured limit was exceeded.
    #[error("{what} {actual} exceeds the limit of {limit}")]
    Limit {
        /// What was measured ("pattern length in bytes", "nesting depth", …).
        what: &'static str,
        /// The measured value.
        actual: usize,
        /// The limit in force.
        limit: usize,
    },
}

/// A pattern error with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct PatternError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Where in the pattern text.
    pub span: Span,
    /// One-based column (in characters) of `span.start`.
    pub column: usize,
}

impl PatternError {
    /// Builds an error for `span` of `text`, computing the column.
    pub fn new(kind: ErrorKind, span: Span, text: &str) -> PatternError {
        let start = span.start.min(text.len());
        let column = text.char_indices().take_while(|(i, _)| *i < start).count() + 1;
        PatternError { kind, span, column }
    }

    /// Renders the pattern on one line with a caret line under the error,
    /// for terminals. Tabs and newlines in the pattern are shown as spaces
    /// so the caret stays aligned.
    pub fn render(&self, text: &str) -> String {
        let shown: String = text
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .collect();
        let start = self.span.start.min(text.len());
        let end = self.span.end.clamp(start, text.len());
        let width = text
            .get(start..end)
            .map(|s| s.chars().count())
            .unwrap_or(1)
            .max(1);
        let pad = " ".repeat(self.column - 1);
        format!("  {shown}\n  {pad}{}", "^".repeat(width))
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.kind)
    }
}

impl std::error::Error for PatternError {}

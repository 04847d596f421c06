//! Tokenizer for STIX patterns.
//!
//! Follows the lexical rules of the STIX 2.1 pattern grammar: upper-case
//! keywords, lower-case `true`/`false`, identifiers that may contain `-`
//! (only object types may use them unquoted), `h'…'`, `b'…'` and `t'…'`
//! literals, integers and floats without exponents, and `/* … */` and `//`
//! comments. Literal values are decoded here, so the parser sees typed
//! values and every malformed literal is reported at its own position.

use base64::Engine as _;

use super::error::{ErrorKind, PatternError, Span};
use crate::stix::timestamp::Timestamp;

/// The reserved words of the pattern language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keyword {
    And,
    Or,
    Not,
    FollowedBy,
    Like,
    Matches,
    IsSuperset,
    IsSubset,
    Last,
    In,
    Start,
    Stop,
    Seconds,
    Within,
    Repeats,
    Times,
    Exists,
}

impl Keyword {
    fn from_word(word: &str) -> Option<Keyword> {
        Some(match word {
            "AND" => Keyword::And,
            "OR" => Keyword::Or,
            "NOT" => Keyword::Not,
            "FOLLOWEDBY" => Keyword::FollowedBy,
            "LIKE" => Keyword::Like,
            "MATCHES" => Keyword::Matches,
            "ISSUPERSET" => Keyword::IsSuperset,
            "ISSUBSET" => Keyword::IsSubset,
            "LAST" => Keyword::Last,
            "IN" => Keyword::In,
            "START" => Keyword::Start,
            "STOP" => Keyword::Stop,
            "SECONDS" => Keyword::Seconds,
            "WITHIN" => Keyword::Within,
            "REPEATS" => Keyword::Repeats,
            "TIMES" => Keyword::Times,
            "EXISTS" => Keyword::Exists,
            _ => return None,
        })
    }

    /// True when `word` would be read as a keyword or boolean, and so must
    /// be quoted when used as a property name.
    pub(crate) fn is_reserved(word: &str) -> bool {
        Keyword::from_word(word).is_some() || word == "true" || word == "false"
    }
}

/// One token kind with its decoded value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    LBrack,
    RBrack,
    LParen,
    RParen,
    Colon,
    Dot,
    Comma,
    Star,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Kw(Keyword),
    /// An identifier; `hyphen` is true when it contains `-`.
    Ident {
        hyphen: bool,
    },
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Hex(Vec<u8>),
    Binary(Vec<u8>),
    Time(Timestamp),
    Eof,
}

/// A token and where it came from.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// Splits pattern text into tokens, one at a time.
pub(crate) struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(text: &'a str) -> Lexer<'a> {
        Lexer { text, pos: 0 }
    }

    /// Moves to byte offset `pos` (a token boundary).
    pub(crate) fn seek(&mut self, pos: usize) {
        self.pos = pos;
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek_byte(&self, ahead: usize) -> Option<u8> {
        self.bytes().get(self.pos + ahead).copied()
    }

    fn error(&self, kind: ErrorKind, start: usize, end: usize) -> PatternError {
        PatternError::new(kind, Span::new(start, end), self.text)
    }

    /// Returns the next token, or `Tok::Eof` at the end.
    pub(crate) fn next_token(&mut self) -> Result<Token, PatternError> {
        self.skip_trivia()?;
        let start = self.pos;
        let Some(c) = self.text[start..].chars().next() else {
            return Ok(Token {
                tok: Tok::Eof,
                span: Span::new(start, start),
            });
        };
        let tok = match c {
            '[' => self.punct(Tok::LBrack, 1),
            ']' => self.punct(Tok::RBrack, 1),
            '(' => self.punct(Tok::LParen, 1),
            ')' => self.punct(Tok::RParen, 1),
            ':' => self.punct(Tok::Colon, 1),
            ',' => self.punct(Tok::Comma, 1),
            '*' => self.punct(Tok::Star, 1),
            '=' if self.peek_byte(1) == Some(b'=') => self.punct(Tok::Eq, 2),
            '=' => self.punct(Tok::Eq, 1),
            '!' if self.peek_byte(1) == Some(b'=') => self.punct(Tok::Ne, 2),
            '<' if self.peek_byte(1) == Some(b'>') => self.punct(Tok::Ne, 2),
            '<' if self.peek_byte(1) == Some(b'=') => self.punct(Tok::Le, 2),
            '<' => self.punct(Tok::Lt, 1),
            '>' if self.peek_byte(1) == Some(b'=') => self.punct(Tok::Ge, 2),
            '>' => self.punct(Tok::Gt, 1),
            '\'' => Tok::Str(self.string_body()?),
            'h' | 'b' | 't' if self.peek_byte(1) == Some(b'\'') => self.prefixed_literal(c)?,
            '.' if self.peek_byte(1).is_some_and(|b| b.is_ascii_digit()) => self.number()?,
            '.' => self.punct(Tok::Dot, 1),
            '+' | '-' | '0'..='9' => self.number()?,
            c if c.is_ascii_alphabetic() || c == '_' => self.word(),
            other => {
                let end = start + other.len_utf8();
                return Err(self.error(ErrorKind::UnexpectedChar(other), start, end));
            }
        };
        Ok(Token {
            tok,
            span: Span::new(start, self.pos),
        })
    }

    fn punct(&mut self, tok: Tok, len: usize) -> Tok {
        self.pos += len;
        tok
    }

    /// Skips white space (the grammar's Unicode set) and comments.
    fn skip_trivia(&mut self) -> Result<(), PatternError> {
        loop {
            let rest = &self.text[self.pos..];
            if let Some(c) = rest.chars().next().filter(|c| is_pattern_space(*c)) {
                self.pos += c.len_utf8();
            } else if rest.starts_with("//") {
                self.pos += rest.find(['\r', '\n']).unwrap_or(rest.len());
            } else if let Some(body) = rest.strip_prefix("/*") {
                match body.find("*/") {
                    Some(end) => self.pos += end + 4,
                    None => {
                        let kind = ErrorKind::Unexpected {
                            expected: "'*/' closing the comment",
                            found: "the end of the pattern".into(),
                        };
                        return Err(self.error(kind, self.pos, self.text.len()));
                    }
                }
            } else {
                return Ok(());
            }
        }
    }

    /// Reads an identifier or keyword.
    fn word(&mut self) -> Tok {
        let start = self.pos;
        let mut hyphen = false;
        while let Some(b) = self.peek_byte(0) {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => {}
                b'-' => hyphen = true,
                _ => break,
            }
            self.pos += 1;
        }
        let word = &self.text[start..self.pos];
        // Keywords contain no hyphen, so only the leading part can be one;
        // the grammar's longest-match rule makes `AND-x` an identifier.
        match word {
            "true" => Tok::Bool(true),
            "false" => Tok::Bool(false),
            _ => match Keyword::from_word(word) {
                Some(kw) => Tok::Kw(kw),
                None => Tok::Ident { hyphen },
            },
        }
    }

    /// Reads the body of a quoted string starting at the opening quote and
    /// returns its unescaped value.
    fn string_body(&mut self) -> Result<String, PatternError> {
        let open = self.pos;
        self.pos += 1;
        let mut value = String::new();
        let mut chunk_start = self.pos;
        loop {
            let Some(b) = self.peek_byte(0) else {
                return Err(self.error(ErrorKind::UnterminatedString, open, self.text.len()));
            };
            match b {
                b'\'' => {
                    value.push_str(&self.text[chunk_start..self.pos]);
                    self.pos += 1;
                    return Ok(value);
                }
                b'\\' => {
                    value.push_str(&self.text[chunk_start..self.pos]);
                    let escaped = self.text[self.pos + 1..].chars().next();
                    match escaped {
                        Some(c @ ('\'' | '\\')) => value.push(c),
                        Some(c) => {
                            let end = self.pos + 1 + c.len_utf8();
                            return Err(self.error(ErrorKind::BadEscape(c), self.pos, end));
                        }
                        None => {
                            let kind = ErrorKind::UnterminatedString;
                            return Err(self.error(kind, open, self.text.len()));
                        }
                    }
                    self.pos += 2;
                    chunk_start = self.pos;
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Reads `h'…'`, `b'…'` or `t'…'`.
    fn prefixed_literal(&mut self, prefix: char) -> Result<Tok, PatternError> {
        let start = self.pos;
        self.pos += 1;
        let body = self.string_body()?;
        let err = |kind| Err(self.error(kind, start, self.pos));
        match prefix {
            'h' => match decode_hex(&body) {
                Ok(bytes) => Ok(Tok::Hex(bytes)),
                Err(reason) => err(ErrorKind::BadHex(reason)),
            },
            'b' => {
                if body.is_empty() {
                    return err(ErrorKind::BadBase64("it must not be empty".into()));
                }
                // Line feeds inside base64 are allowed and ignored (§9.2).
                let compact: String = body.chars().filter(|c| !matches!(c, '\n' | '\r')).collect();
                match base64::engine::general_purpose::STANDARD.decode(&compact) {
                    Ok(bytes) => Ok(Tok::Binary(bytes)),
                    Err(e) => err(ErrorKind::BadBase64(e.to_string())),
                }
            }
            _ => match Timestamp::parse_stix(&body) {
                Ok(ts) => Ok(Tok::Time(ts)),
                Err(e) => err(ErrorKind::BadTimestamp(e)),
            },
        }
    }

    /// Reads an integer (`[+-]?(0|[1-9][0-9]*)`) or a float
    /// (`[+-]?[0-9]*\.[0-9]+`).
    fn number(&mut self) -> Result<Tok, PatternError> {
        let start = self.pos;
        if matches!(self.peek_byte(0), Some(b'+' | b'-')) {
            self.pos += 1;
        }
        let int_start = self.pos;
        while self.peek_byte(0).is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let int_digits = self.pos - int_start;
        let mut is_float = false;
        if self.peek_byte(0) == Some(b'.') {
            is_float = true;
            self.pos += 1;
            let frac_start = self.pos;
            while self.peek_byte(0).is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            if self.pos == frac_start {
                return Err(self.bad_number(start, "a digit must follow the decimal point"));
            }
        } else if int_digits == 0 {
            let found = self.text[start..].chars().next().unwrap_or('-');
            let kind = ErrorKind::UnexpectedChar(found);
            return Err(self.error(kind, start, start + found.len_utf8()));
        }
        // A number running straight into a letter (`12abc`) is no token.
        if self
            .peek_byte(0)
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        {
            return Err(self.bad_number(start, "a number cannot be followed by a letter"));
        }

        let text = &self.text[start..self.pos];
        if is_float {
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Tok::Float(v)),
                _ => Err(self.bad_number(start, "it does not fit in a 64-bit float")),
            }
        } else {
            let digits = &self.text[int_start..self.pos];
            if digits.len() > 1 && digits.starts_with('0') {
                return Err(self.bad_number(start, "leading zeros are not allowed"));
            }
            match text.parse::<i64>() {
                Ok(v) => Ok(Tok::Int(v)),
                Err(_) => Err(self.bad_number(start, "it does not fit in a 64-bit integer")),
            }
        }
    }

    fn bad_number(&self, start: usize, reason: &'static str) -> PatternError {
        let text = self.text[start..self.pos].to_string();
        self.error(ErrorKind::BadNumber { text, reason }, start, self.pos)
    }
}

/// The grammar's white space: ASCII blanks plus the Unicode space separators
/// it lists.
fn is_pattern_space(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t'
            | '\r'
            | '\n'
            | '\u{0B}'
            | '\u{0C}'
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

fn decode_hex(text: &str) -> Result<Vec<u8>, &'static str> {
    if text.len() % 2 != 0 {
        return Err("it must have an even number of hex digits");
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| match (hex_value(pair[0]), hex_value(pair[1])) {
            (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
            _ => Err("it may contain only the digits 0-9, a-f and A-F"),
        })
        .collect()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Result<Vec<Tok>, ErrorKind> {
        let mut lexer = Lexer::new(text);
        let mut out = Vec::new();
        loop {
            let token = lexer.next_token().map_err(|e| e.kind)?;
            if token.tok == Tok::Eof {
                return Ok(out);
            }
            out.push(token.tok);
        }
    }

    #[test]
    fn operators_take_the_longest_form() {
        assert_eq!(
            toks("= == != <> < <= > >=").unwrap(),
            vec![
                Tok::Eq,
                Tok::Eq,
                Tok::Ne,
                Tok::Ne,
                Tok::Lt,
                Tok::Le,
                Tok::Gt,
                Tok::Ge
            ]
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(
            toks("0 +5 -12 .5 -0.25 3.0").unwrap(),
            vec![
                Tok::Int(0),
                Tok::Int(5),
                Tok::Int(-12),
                Tok::Float(0.5),
                Tok::Float(-0.25),
                Tok::Float(3.0)
            ]
        );
        assert!(matches!(toks("007"), Err(ErrorKind::BadNumber { .. })));
        assert!(matches!(toks("1."), Err(ErrorKind::BadNumber { .. })));
        assert!(matches!(
            toks("99999999999999999999"),
            Err(ErrorKind::BadNumber { .. })
        ));
        assert!(matches!(toks("12abc"), Err(ErrorKind::BadNumber { .. })));
        assert!(matches!(toks("- 1"), Err(ErrorKind::UnexpectedChar('-'))));
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(
            toks(r"'it\'s \\ ok'").unwrap(),
            vec![Tok::Str(r"it's \ ok".into())]
        );
        assert_eq!(toks("'ünï'").unwrap(), vec![Tok::Str("ünï".into())]);
        assert_eq!(toks(r"'a\n'"), Err(ErrorKind::BadEscape('n')));
        assert_eq!(toks("'open"), Err(ErrorKind::UnterminatedString));
        assert_eq!(toks(r"'ends\"), Err(ErrorKind::UnterminatedString));
    }

    #[test]
    fn prefixed_literals() {
        assert_eq!(toks("h'00fF'").unwrap(), vec![Tok::Hex(vec![0, 255])]);
        assert_eq!(toks("h''").unwrap(), vec![Tok::Hex(vec![])]);
        assert!(matches!(toks("h'abc'"), Err(ErrorKind::BadHex(_))));
        assert!(matches!(toks("h'zz'"), Err(ErrorKind::BadHex(_))));
        assert_eq!(toks("b'QUJD'").unwrap(), vec![Tok::Binary(b"ABC".to_vec())]);
        assert_eq!(toks("b'QQ=='").unwrap(), vec![Tok::Binary(b"A".to_vec())]);
        assert!(matches!(toks("b'QQ'"), Err(ErrorKind::BadBase64(_))));
        assert!(matches!(toks("b'QQ='"), Err(ErrorKind::BadBase64(_))));
        assert!(matches!(toks("b''"), Err(ErrorKind::BadBase64(_))));
        assert!(matches!(
            toks("t'2020-01-01T00:00:00Z'").unwrap()[0],
            Tok::Time(_)
        ));
        assert!(matches!(
            toks("t'2020-02-30T00:00:00Z'"),
            Err(ErrorKind::BadTimestamp(_))
        ));
        assert!(matches!(
            toks("t'2020-01-01T00:00:00+01:00'"),
            Err(ErrorKind::BadTimestamp(_))
        ));
    }

    #[test]
    fn words() {
        assert_eq!(
            toks("AND and ANDROID network-traffic true FALSE").unwrap(),
            vec![
                Tok::Kw(Keyword::And),
                Tok::Ident { hyphen: false },
                Tok::Ident { hyphen: false },
                Tok::Ident { hyphen: true },
                Tok::Bool(true),
                Tok::Ident { hyphen: false },
            ]
        );
        // A prefix letter not followed by a quote is an ordinary identifier.
        assert_eq!(toks("h t b").unwrap().len(), 3);
    }

    #[test]
    fn comments_and_unicode_space_are_skipped() {
        assert_eq!(
            toks("/* x */ [\u{3000}] // tail").unwrap(),
            vec![Tok::LBrack, Tok::RBrack]
        );
        assert!(matches!(toks("/* open"), Err(ErrorKind::Unexpected { .. })));
    }

    #[test]
    fn stray_characters_are_errors() {
        assert_eq!(toks("§"), Err(ErrorKind::UnexpectedChar('§')));
        assert_eq!(toks("^"), Err(ErrorKind::UnexpectedChar('^')));
    }
}

//! Canonical printing of patterns.
//!
//! The printed form is normalised (one space around operators, `=` and `!=`
//! rather than `==` and `<>`, property names quoted only when they must be)
//! and parses back to the same tree: parentheses are written exactly where
//! the tree needs them and nowhere else.

use std::fmt::{self, Display, Formatter, Write as _};

use base64::Engine as _;

use super::ast::*;
use super::lexer::Keyword;

impl Display for Pattern {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}

/// Binding strength of observation operators, loosest first.
fn observation_rank(expr: &ObservationExpr) -> u8 {
    match expr {
        ObservationExpr::FollowedBy(_) => 0,
        ObservationExpr::Or(_) => 1,
        ObservationExpr::And(_) => 2,
        ObservationExpr::Qualified(..) | ObservationExpr::Observation(_) => 3,
    }
}

impl Display for ObservationExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            ObservationExpr::Observation(c) => write!(f, "[{c}]"),
            ObservationExpr::And(items) => join_observations(f, items, " AND ", 2),
            ObservationExpr::Or(items) => join_observations(f, items, " OR ", 1),
            ObservationExpr::FollowedBy(items) => join_observations(f, items, " FOLLOWEDBY ", 0),
            ObservationExpr::Qualified(inner, qualifier) => {
                // A qualifier binds to the expression just before it, so
                // anything wider than a bracket or another qualifier needs
                // parentheses; so does a chain that already has a qualifier
                // of this kind, which the parser would refuse unparenthesised.
                if observation_rank(inner) == 3 && !chain_has(inner, qualifier) {
                    write!(f, "{inner} {qualifier}")
                } else {
                    write!(f, "({inner}) {qualifier}")
                }
            }
        }
    }
}

/// True when the unparenthesised qualifier chain ending in `expr` already
/// holds a qualifier of the same kind as `qualifier`.
fn chain_has(mut expr: &ObservationExpr, qualifier: &Qualifier) -> bool {
    while let ObservationExpr::Qualified(inner, q) = expr {
        if q.keyword() == qualifier.keyword() {
            return true;
        }
        expr = inner;
    }
    false
}

/// Writes operands joined by `sep`; an operand whose operator binds as
/// loosely as (or looser than) this one is parenthesised, which also keeps
/// explicitly nested same-operator groups nested.
fn join_observations(
    f: &mut Formatter<'_>,
    items: &[ObservationExpr],
    sep: &str,
    rank: u8,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        if observation_rank(item) <= rank {
            write!(f, "({item})")?;
        } else {
            write!(f, "{item}")?;
        }
    }
    Ok(())
}

impl Display for Qualifier {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Qualifier::Within(Seconds::Int(n)) => write!(f, "WITHIN {n} SECONDS"),
            Qualifier::Within(Seconds::Float(x)) => {
                write!(f, "WITHIN {} SECONDS", float_text(*x))
            }
            Qualifier::Repeats(n) => write!(f, "REPEATS {n} TIMES"),
            Qualifier::StartStop { start, stop } => write!(f, "START t'{start}' STOP t'{stop}'"),
        }
    }
}

impl Display for ComparisonExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            ComparisonExpr::Test(t) => t.fmt(f),
            ComparisonExpr::And(items) => join_comparisons(f, items, " AND ", |c| {
                matches!(c, ComparisonExpr::And(_) | ComparisonExpr::Or(_))
            }),
            ComparisonExpr::Or(items) => {
                join_comparisons(f, items, " OR ", |c| matches!(c, ComparisonExpr::Or(_)))
            }
        }
    }
}

fn join_comparisons(
    f: &mut Formatter<'_>,
    items: &[ComparisonExpr],
    sep: &str,
    needs_parens: fn(&ComparisonExpr) -> bool,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        if needs_parens(item) {
            write!(f, "({item})")?;
        } else {
            write!(f, "{item}")?;
        }
    }
    Ok(())
}

impl Display for PropTest {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let not = if self.negated { "NOT " } else { "" };
        if let Comparison::Exists = self.op {
            return write!(f, "{not}EXISTS {}", self.path);
        }
        write!(f, "{} {not}{} ", self.path, self.op.operator())?;
        match &self.op {
            Comparison::Eq(v)
            | Comparison::Ne(v)
            | Comparison::Lt(v)
            | Comparison::Le(v)
            | Comparison::Gt(v)
            | Comparison::Ge(v) => v.fmt(f),
            Comparison::In(items) => {
                f.write_char('(')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    item.fmt(f)?;
                }
                f.write_char(')')
            }
            Comparison::Like(s)
            | Comparison::Matches(s)
            | Comparison::IsSubset(s)
            | Comparison::IsSuperset(s) => write_quoted(f, s),
            Comparison::Exists => Ok(()),
        }
    }
}

impl Display for ObjectPath {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.object_type)?;
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                PathStep::Key(name) => {
                    if i > 0 {
                        f.write_char('.')?;
                    }
                    if is_bare_name(name) {
                        f.write_str(name)?;
                    } else {
                        write_quoted(f, name)?;
                    }
                }
                PathStep::Index(n) => write!(f, "[{n}]")?,
                PathStep::AnyIndex => f.write_str("[*]")?,
            }
        }
        Ok(())
    }
}

/// True when `name` can be written without quotes: an identifier without
/// `-` that is not a keyword.
fn is_bare_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !Keyword::is_reserved(name)
    // `h'…'`, `b'…'` and `t'…'` only start literals when a quote
    // follows, so single letters are safe as property names.
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write_quoted(f, s),
            Literal::Int(n) => write!(f, "{n}"),
            Literal::Float(x) => f.write_str(&float_text(*x)),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Hex(bytes) => {
                f.write_str("h'")?;
                for b in bytes {
                    write!(f, "{b:02x}")?;
                }
                f.write_char('\'')
            }
            Literal::Binary(bytes) => {
                let text = base64::engine::general_purpose::STANDARD.encode(bytes);
                write!(f, "b'{text}'")
            }
            Literal::Timestamp(t) => write!(f, "t'{t}'"),
        }
    }
}

/// A float in the grammar's form: digits, a point, digits; no exponent.
fn float_text(x: f64) -> String {
    // Rust prints the shortest text that reads back to the same float and
    // never uses an exponent, so only a missing ".0" needs adding.
    let text = format!("{x}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

fn write_quoted(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('\'')?;
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char('\'')
}

//! The syntax tree of a STIX pattern.
//!
//! Chains of one operator written without parentheses (`a AND b AND c`) are
//! kept flat as one node with several operands; parentheses around a
//! same-operator group keep it as a nested node. Every operator of the
//! language is associative, so this changes no meaning, and it keeps the
//! tree shallow for the long `OR` lists that feeds produce. Printing (see
//! `print.rs`) reproduces exactly this shape, so `parse(print(ast)) == ast`.

use crate::stix::timestamp::Timestamp;

/// A parsed pattern: one observation expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    /// The top observation expression.
    pub root: ObservationExpr,
}

/// An expression over observations (the part outside `[...]`).
#[derive(Clone, Debug, PartialEq)]
pub enum ObservationExpr {
    /// `[ comparison ]`: one observation holding a matching object.
    Observation(ComparisonExpr),
    /// `a AND b AND …`: every operand, on distinct observations.
    And(Vec<ObservationExpr>),
    /// `a OR b OR …`: any operand.
    Or(Vec<ObservationExpr>),
    /// `a FOLLOWEDBY b FOLLOWEDBY …`: every operand, on distinct
    /// observations, each operand's observations no earlier than the
    /// previous operand's.
    FollowedBy(Vec<ObservationExpr>),
    /// An expression with a qualifier applied.
    Qualified(Box<ObservationExpr>, Qualifier),
}

/// A qualifier applied to an observation expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Qualifier {
    /// `WITHIN n SECONDS`.
    Within(Seconds),
    /// `REPEATS n TIMES`.
    Repeats(u32),
    /// `START t'…' STOP t'…'`.
    StartStop {
        /// Inclusive start of the interval.
        start: Timestamp,
        /// Exclusive end of the interval.
        stop: Timestamp,
    },
}

impl Qualifier {
    /// The qualifier's keyword, for messages.
    pub fn keyword(&self) -> &'static str {
        match self {
            Qualifier::Within(_) => "WITHIN",
            Qualifier::Repeats(_) => "REPEATS",
            Qualifier::StartStop { .. } => "START/STOP",
        }
    }
}

/// A positive number of seconds as written: integer or float.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Seconds {
    /// Written as an integer.
    Int(u64),
    /// Written with a decimal point.
    Float(f64),
}

impl Seconds {
    /// The duration in nanoseconds (saturating for absurd values).
    pub fn as_nanos(self) -> i128 {
        match self {
            Seconds::Int(s) => i128::from(s) * 1_000_000_000,
            Seconds::Float(s) => (s * 1e9).round() as i128,
        }
    }
}

/// An expression inside `[...]`, evaluated against one cyber-observable.
#[derive(Clone, Debug, PartialEq)]
pub enum ComparisonExpr {
    /// All operands hold.
    And(Vec<ComparisonExpr>),
    /// Any operand holds.
    Or(Vec<ComparisonExpr>),
    /// One property test.
    Test(PropTest),
}

/// A test of one object path: `path [NOT] op value`, or `EXISTS path`.
#[derive(Clone, Debug, PartialEq)]
pub struct PropTest {
    /// The property tested.
    pub path: ObjectPath,
    /// True when written with `NOT`: the test's result is inverted, but only
    /// where the path resolves to a value (a missing property is never a
    /// match, with or without `NOT`).
    pub negated: bool,
    /// The comparison.
    pub op: Comparison,
}

/// The comparison operators and their operands.
#[derive(Clone, Debug, PartialEq)]
pub enum Comparison {
    /// `=` or `==`.
    Eq(Literal),
    /// `!=` or `<>`.
    Ne(Literal),
    /// `<`.
    Lt(Literal),
    /// `<=`.
    Le(Literal),
    /// `>`.
    Gt(Literal),
    /// `>=`.
    Ge(Literal),
    /// `IN (v, …)`.
    In(Vec<Literal>),
    /// `LIKE 'pattern'` with `%` and `_` wildcards.
    Like(String),
    /// `MATCHES 'regex'`.
    Matches(String),
    /// `ISSUBSET 'cidr'`.
    IsSubset(String),
    /// `ISSUPERSET 'cidr'`.
    IsSuperset(String),
    /// `EXISTS path`.
    Exists,
}

impl Comparison {
    /// The operator as written in canonical form.
    pub fn operator(&self) -> &'static str {
        match self {
            Comparison::Eq(_) => "=",
            Comparison::Ne(_) => "!=",
            Comparison::Lt(_) => "<",
            Comparison::Le(_) => "<=",
            Comparison::Gt(_) => ">",
            Comparison::Ge(_) => ">=",
            Comparison::In(_) => "IN",
            Comparison::Like(_) => "LIKE",
            Comparison::Matches(_) => "MATCHES",
            Comparison::IsSubset(_) => "ISSUBSET",
            Comparison::IsSuperset(_) => "ISSUPERSET",
            Comparison::Exists => "EXISTS",
        }
    }
}

/// A constant in a pattern.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// A string `'…'`.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float (written with a decimal point).
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `h'…'`: bytes written in hex.
    Hex(Vec<u8>),
    /// `b'…'`: bytes written in base64.
    Binary(Vec<u8>),
    /// `t'…'`: a UTC timestamp.
    Timestamp(Timestamp),
}

/// `type:step.step[...]`: where to find a value in a cyber-observable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectPath {
    /// The cyber-observable type, such as `file` or `x-acme-widget`.
    pub object_type: String,
    /// The steps from the object to the value; never empty, and the first
    /// step is always a [`PathStep::Key`].
    pub steps: Vec<PathStep>,
}

/// One step of an object path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathStep {
    /// A property or dictionary key (`.name` or `.'quoted name'`).
    Key(String),
    /// A list position (`[n]`); positions outside `0..len`, negative ones
    /// included, reach nothing (§9.7.2).
    Index(i64),
    /// Any list element (`[*]`).
    AnyIndex,
}

impl ObservationExpr {
    /// Visits every comparison expression of every `[...]`, left to right.
    pub fn for_each_observation<'a>(&'a self, f: &mut impl FnMut(&'a ComparisonExpr)) {
        match self {
            ObservationExpr::Observation(c) => f(c),
            ObservationExpr::And(v) | ObservationExpr::Or(v) | ObservationExpr::FollowedBy(v) => {
                v.iter().for_each(|e| e.for_each_observation(f))
            }
            ObservationExpr::Qualified(e, _) => e.for_each_observation(f),
        }
    }
}

impl ComparisonExpr {
    /// Visits every property test, left to right.
    pub fn for_each_test<'a>(&'a self, f: &mut impl FnMut(&'a PropTest)) {
        match self {
            ComparisonExpr::Test(t) => f(t),
            ComparisonExpr::And(v) | ComparisonExpr::Or(v) => {
                v.iter().for_each(|e| e.for_each_test(f))
            }
        }
    }
}

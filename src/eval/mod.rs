//! The reference interpreter: evaluates a pattern against a set of
//! observations with the semantics of STIX 2.1 §9.
//!
//! It is written to be obviously correct, not fast: it enumerates every way
//! the pattern can be satisfied. The compiled matcher is tested against it.
//!
//! # Model
//!
//! An observation is a time interval `[first_observed, last_observed]` seen
//! `number_observed` times; each of those times is one *instance*, and an
//! instance can be used once per match (§9.5.2: AND, FOLLOWEDBY and REPEATS
//! need different observations). A *binding* is one way of satisfying an
//! observation expression: how many instances of each observation it uses.
//! Its time span runs from the earliest `first_observed` to the latest
//! `last_observed` of the observations it uses.
//!
//! - `[c]`: one instance of any observation holding an object that satisfies
//!   `c`.
//! - `a OR b`: the bindings of either.
//! - `a AND b`: a binding of each, together within the instance counts.
//! - `a FOLLOWEDBY b`: as AND, and every observation of `b` starts no
//!   earlier than every observation of `a` ends (`last(a) <= first(b)`).
//! - `a REPEATS n TIMES`: `n` bindings of `a`, together within the counts.
//! - `a WITHIN x SECONDS`: bindings whose span is shorter than `x` seconds:
//!   `last - first < x`; the boundary itself is outside, as §9.5.1 says.
//! - `a START s STOP e`: bindings whose every observation overlaps the
//!   interval `[s, e)`: `first_observed < e` and `last_observed >= s`.

mod compare;
pub mod regex;

use std::collections::{BTreeMap, BTreeSet};

pub(crate) use compare::{Reached, resolve};
pub use compare::{object_matches, observation_matches};

use crate::pattern::{ComparisonExpr, ObservationExpr, Pattern, Qualifier};
use crate::stix::observation::Observation;
use crate::stix::timestamp::Timestamp;

/// Returns `text` in Unicode normalisation form C.
pub(crate) fn nfc(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    text.nfc().collect()
}

/// Upper bound on the bindings one sub-expression may produce while
/// evaluating; past it the evaluation stops with [`EvalError::TooLarge`].
pub const MAX_BINDINGS: usize = 100_000;

/// Why an evaluation could not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The enumeration grew past [`MAX_BINDINGS`].
    #[error("evaluation needs more than {MAX_BINDINGS} partial matches")]
    TooLarge,
}

/// The observations a pattern is evaluated over, as the binding
/// enumeration sees them: their intervals and counts, and which `[...]`
/// observation expressions (leaves, numbered left to right from 0) each one
/// satisfies.
///
/// The reference interpreter answers `leaf_matches` by evaluating the
/// comparison expression; the streaming matcher answers it from the leaf
/// hits it has recorded, so both share this enumeration.
pub trait ObservationSet {
    /// Number of observations.
    fn len(&self) -> usize;
    /// True when there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `first_observed` and `last_observed` of observation `i`.
    fn interval(&self, i: usize) -> (Timestamp, Timestamp);
    /// `number_observed` of observation `i`.
    fn count(&self, i: usize) -> u32;
    /// True when observation `i` satisfies leaf `leaf` (whose comparison
    /// expression is `comparison`).
    fn leaf_matches(&self, leaf: usize, comparison: &ComparisonExpr, i: usize) -> bool;
}

impl ObservationSet for [Observation] {
    fn len(&self) -> usize {
        <[Observation]>::len(self)
    }

    fn interval(&self, i: usize) -> (Timestamp, Timestamp) {
        (self[i].first_observed, self[i].last_observed)
    }

    fn count(&self, i: usize) -> u32 {
        self[i].number_observed
    }

    fn leaf_matches(&self, _leaf: usize, comparison: &ComparisonExpr, i: usize) -> bool {
        observation_matches(comparison, &self[i])
    }
}

/// One way of satisfying a pattern: the observations used, by index into
/// the evaluated set, with how many of each one's instances.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Binding {
    /// (observation index, instances used), sorted by index.
    pub uses: Vec<(usize, u32)>,
}

impl Binding {
    /// The indices of the observations used.
    pub fn observations(&self) -> impl Iterator<Item = usize> + '_ {
        self.uses.iter().map(|(i, _)| *i)
    }

    /// Earliest `first_observed` and latest `last_observed` of the
    /// observations used.
    pub fn span<S: ObservationSet + ?Sized>(&self, set: &S) -> (Timestamp, Timestamp) {
        let mut span = None::<(Timestamp, Timestamp)>;
        for i in self.observations() {
            let (first, last) = set.interval(i);
            span = Some(match span {
                None => (first, last),
                Some((f, l)) => (f.min(first), l.max(last)),
            });
        }
        span.unwrap_or((Timestamp::EPOCH, Timestamp::EPOCH))
    }

    /// Both bindings together, or `None` when that would use more instances
    /// of an observation than it has.
    fn join<S: ObservationSet + ?Sized>(&self, other: &Binding, set: &S) -> Option<Binding> {
        let mut counts: BTreeMap<usize, u32> = self.uses.iter().copied().collect();
        for &(i, n) in &other.uses {
            let total = counts.entry(i).or_insert(0);
            *total += n;
            if *total > set.count(i) {
                return None;
            }
        }
        Some(Binding {
            uses: counts.into_iter().collect(),
        })
    }
}

/// True when `pattern` matches the set `observations`.
///
/// # Errors
///
/// Returns [`EvalError::TooLarge`] when enumerating would need more than
/// [`MAX_BINDINGS`] partial matches (only contrived inputs get there).
pub fn matches(pattern: &Pattern, observations: &[Observation]) -> Result<bool, EvalError> {
    Ok(first_binding(pattern, observations)?.is_some())
}

/// One binding that satisfies `pattern`, if any: the smallest in index
/// order, so that the answer is deterministic.
///
/// # Errors
///
/// As [`matches`].
pub fn first_binding(
    pattern: &Pattern,
    observations: &[Observation],
) -> Result<Option<Binding>, EvalError> {
    Ok(bindings(&pattern.root, observations)?.into_iter().next())
}

/// Every binding of `expr` over `set`.
///
/// # Errors
///
/// As [`matches`].
pub fn bindings<S: ObservationSet + ?Sized>(
    expr: &ObservationExpr,
    set: &S,
) -> Result<BTreeSet<Binding>, EvalError> {
    let mut next_leaf = 0;
    bindings_from(expr, set, &mut next_leaf)
}

fn bindings_from<S: ObservationSet + ?Sized>(
    expr: &ObservationExpr,
    set: &S,
    next_leaf: &mut usize,
) -> Result<BTreeSet<Binding>, EvalError> {
    let result = match expr {
        ObservationExpr::Observation(comparison) => {
            let leaf = *next_leaf;
            *next_leaf += 1;
            (0..set.len())
                .filter(|&i| set.leaf_matches(leaf, comparison, i))
                .map(|i| Binding { uses: vec![(i, 1)] })
                .collect()
        }
        ObservationExpr::Or(items) => {
            let mut all = BTreeSet::new();
            for item in items {
                all.extend(bindings_from(item, set, next_leaf)?);
                check_size(&all)?;
            }
            all
        }
        ObservationExpr::And(items) | ObservationExpr::FollowedBy(items) => {
            let ordered = matches!(expr, ObservationExpr::FollowedBy(_));
            let mut acc = bindings_from(&items[0], set, next_leaf)?;
            for item in &items[1..] {
                let next = bindings_from(item, set, next_leaf)?;
                acc = join_all(&acc, &next, set, |a, b| {
                    !ordered || a.span(set).1 <= b.span(set).0
                })?;
            }
            acc
        }
        ObservationExpr::Qualified(inner, qualifier) => {
            let inner_set = bindings_from(inner, set, next_leaf)?;
            qualify(inner_set, qualifier, set)?
        }
    };
    check_size(&result)?;
    Ok(result)
}

fn qualify<S: ObservationSet + ?Sized>(
    bindings: BTreeSet<Binding>,
    qualifier: &Qualifier,
    set: &S,
) -> Result<BTreeSet<Binding>, EvalError> {
    Ok(match qualifier {
        Qualifier::Within(seconds) => {
            let limit = seconds.as_nanos();
            bindings
                .into_iter()
                .filter(|b| {
                    let (first, last) = b.span(set);
                    last.nanos_since(first) < limit
                })
                .collect()
        }
        Qualifier::StartStop { start, stop } => bindings
            .into_iter()
            .filter(|b| {
                b.observations().all(|i| {
                    let (first, last) = set.interval(i);
                    first < *stop && last >= *start
                })
            })
            .collect(),
        Qualifier::Repeats(n) => {
            let mut acc = bindings.clone();
            for _ in 1..*n {
                if acc.is_empty() {
                    break;
                }
                acc = join_all(&acc, &bindings, set, |_, _| true)?;
            }
            acc
        }
    })
}

/// Every pairwise join of `left` and `right` that fits the instance counts
/// and satisfies `accept`.
fn join_all<S: ObservationSet + ?Sized>(
    left: &BTreeSet<Binding>,
    right: &BTreeSet<Binding>,
    set: &S,
    accept: impl Fn(&Binding, &Binding) -> bool,
) -> Result<BTreeSet<Binding>, EvalError> {
    let mut out = BTreeSet::new();
    for a in left {
        for b in right {
            if accept(a, b) {
                if let Some(joined) = a.join(b, set) {
                    out.insert(joined);
                    check_size(&out)?;
                }
            }
        }
    }
    Ok(out)
}

fn check_size(set: &BTreeSet<Binding>) -> Result<(), EvalError> {
    if set.len() > MAX_BINDINGS {
        Err(EvalError::TooLarge)
    } else {
        Ok(())
    }
}

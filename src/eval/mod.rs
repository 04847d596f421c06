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

pub use compare::{object_matches, observation_matches};

use crate::pattern::{ObservationExpr, Pattern, Qualifier};
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

/// One way of satisfying a pattern: the observations used, by index into
/// the evaluated slice, with how many of each one's instances.
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
    pub fn span(&self, observations: &[Observation]) -> (Timestamp, Timestamp) {
        let mut first = None::<Timestamp>;
        let mut last = None::<Timestamp>;
        for i in self.observations() {
            let o = &observations[i];
            first = Some(first.map_or(o.first_observed, |f| f.min(o.first_observed)));
            last = Some(last.map_or(o.last_observed, |l| l.max(o.last_observed)));
        }
        (
            first.unwrap_or(Timestamp::EPOCH),
            last.unwrap_or(Timestamp::EPOCH),
        )
    }

    /// Both bindings together, or `None` when that would use more instances
    /// of an observation than it has.
    fn join(&self, other: &Binding, observations: &[Observation]) -> Option<Binding> {
        let mut counts: BTreeMap<usize, u32> = self.uses.iter().copied().collect();
        for &(i, n) in &other.uses {
            let total = counts.entry(i).or_insert(0);
            *total += n;
            if *total > observations[i].number_observed {
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

/// Every binding of `expr` over `observations`.
///
/// # Errors
///
/// As [`matches`].
pub fn bindings(
    expr: &ObservationExpr,
    observations: &[Observation],
) -> Result<BTreeSet<Binding>, EvalError> {
    let set = match expr {
        ObservationExpr::Observation(comparison) => observations
            .iter()
            .enumerate()
            .filter(|(_, o)| observation_matches(comparison, o))
            .map(|(i, _)| Binding { uses: vec![(i, 1)] })
            .collect(),
        ObservationExpr::Or(items) => {
            let mut all = BTreeSet::new();
            for item in items {
                all.extend(bindings(item, observations)?);
                check_size(&all)?;
            }
            all
        }
        ObservationExpr::And(items) => {
            let mut acc = bindings(&items[0], observations)?;
            for item in &items[1..] {
                let next = bindings(item, observations)?;
                acc = join_all(&acc, &next, observations, |_, _| true)?;
            }
            acc
        }
        ObservationExpr::FollowedBy(items) => {
            let mut acc = bindings(&items[0], observations)?;
            for item in &items[1..] {
                let next = bindings(item, observations)?;
                acc = join_all(&acc, &next, observations, |a, b| {
                    a.span(observations).1 <= b.span(observations).0
                })?;
            }
            acc
        }
        ObservationExpr::Qualified(inner, qualifier) => {
            let inner_set = bindings(inner, observations)?;
            qualify(inner_set, qualifier, observations)?
        }
    };
    check_size(&set)?;
    Ok(set)
}

fn qualify(
    set: BTreeSet<Binding>,
    qualifier: &Qualifier,
    observations: &[Observation],
) -> Result<BTreeSet<Binding>, EvalError> {
    Ok(match qualifier {
        Qualifier::Within(seconds) => {
            let limit = seconds.as_nanos();
            set.into_iter()
                .filter(|b| {
                    let (first, last) = b.span(observations);
                    last.nanos_since(first) < limit
                })
                .collect()
        }
        Qualifier::StartStop { start, stop } => set
            .into_iter()
            .filter(|b| {
                b.observations().all(|i| {
                    let o = &observations[i];
                    o.first_observed < *stop && o.last_observed >= *start
                })
            })
            .collect(),
        Qualifier::Repeats(n) => {
            let mut acc = set.clone();
            for _ in 1..*n {
                acc = join_all(&acc, &set, observations, |_, _| true)?;
                if acc.is_empty() {
                    break;
                }
            }
            acc
        }
    })
}

/// Every pairwise join of `left` and `right` that fits the instance counts
/// and satisfies `accept`.
fn join_all(
    left: &BTreeSet<Binding>,
    right: &BTreeSet<Binding>,
    observations: &[Observation],
    accept: impl Fn(&Binding, &Binding) -> bool,
) -> Result<BTreeSet<Binding>, EvalError> {
    let mut out = BTreeSet::new();
    for a in left {
        for b in right {
            if accept(a, b) {
                if let Some(joined) = a.join(b, observations) {
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

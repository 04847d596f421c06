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

pub(crate) use compare::{Reached, for_each_reached, for_each_reached_in_property, is_ref_key};
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

/// The bindings of `expr` over `set` that decide it: every binding, except
/// that where only spans matter (see [`Context`]) a `[c] REPEATS n TIMES`
/// yields only the soonest-ending binding for each start. There is a
/// binding exactly when the expression holds.
///
/// # Errors
///
/// As [`matches`].
pub fn bindings<S: ObservationSet + ?Sized>(
    expr: &ObservationExpr,
    set: &S,
) -> Result<BTreeSet<Binding>, EvalError> {
    bindings_including(expr, set, None)
}

/// The bindings of `expr` over `set`; with `required`, only bindings that
/// use observation `required`, which is what a stream needs when that
/// observation has just arrived. With `required` the set may leave out
/// bindings other than the first (the smallest): there is one exactly when
/// some binding uses `required`.
///
/// # Errors
///
/// As [`matches`].
pub fn bindings_including<S: ObservationSet + ?Sized>(
    expr: &ObservationExpr,
    set: &S,
    required: Option<usize>,
) -> Result<BTreeSet<Binding>, EvalError> {
    let mut next_leaf = 0;
    let context = Context {
        span_limit: None,
        windows: Vec::new(),
        span_only: true,
        required,
        first_only: required.is_some(),
    };
    let found = bindings_from(expr, set, &mut next_leaf, &context)?;
    Ok(match required {
        Some(r) => found
            .into_iter()
            .filter(|b| b.observations().any(|i| i == r))
            .collect(),
        None => found,
    })
}

/// What the enclosing expressions ask of a sub-expression's bindings. Both
/// restrictions are safe to apply early: joining bindings only widens their
/// span and adds observations.
#[derive(Clone)]
struct Context {
    /// The smallest enclosing `WITHIN`, in nanoseconds: no binding whose
    /// span reaches it can be part of a match.
    span_limit: Option<i128>,
    /// Enclosing `START`/`STOP` intervals that every observation must
    /// overlap.
    windows: Vec<(Timestamp, Timestamp)>,
    /// Only the span and observations of a binding matter above, not which
    /// instances it uses (no `AND`, `FOLLOWEDBY` or `REPEATS` encloses it):
    /// one binding per start time is enough.
    span_only: bool,
    /// Observation every reported binding must use (see
    /// [`bindings_including`]).
    required: Option<usize>,
    /// Only the smallest binding that uses `required` is wanted from this
    /// expression (it is the whole pattern, or an `OR` operand of it, under
    /// qualifiers only): a stream asks for one binding per new hit.
    first_only: bool,
}

impl Context {
    fn fits<S: ObservationSet + ?Sized>(&self, binding: &Binding, set: &S) -> bool {
        match self.span_limit {
            Some(limit) => {
                let (first, last) = binding.span(set);
                last.nanos_since(first) < limit
            }
            None => true,
        }
    }

    fn observation_allowed<S: ObservationSet + ?Sized>(&self, i: usize, set: &S) -> bool {
        let (first, last) = set.interval(i);
        self.windows
            .iter()
            .all(|(start, stop)| first < *stop && last >= *start)
    }

    fn nested(&self) -> Context {
        Context {
            span_only: false,
            first_only: false,
            ..self.clone()
        }
    }
}

fn bindings_from<S: ObservationSet + ?Sized>(
    expr: &ObservationExpr,
    set: &S,
    next_leaf: &mut usize,
    context: &Context,
) -> Result<BTreeSet<Binding>, EvalError> {
    let result = match expr {
        ObservationExpr::Observation(comparison) => {
            let leaf = *next_leaf;
            *next_leaf += 1;
            (0..set.len())
                .filter(|&i| context.observation_allowed(i, set))
                .filter(|&i| set.leaf_matches(leaf, comparison, i))
                .map(|i| Binding { uses: vec![(i, 1)] })
                .filter(|b| context.fits(b, set))
                .collect()
        }
        ObservationExpr::Or(items) => {
            let mut all = BTreeSet::new();
            for item in items {
                all.extend(bindings_from(item, set, next_leaf, context)?);
                check_size(&all)?;
            }
            all
        }
        ObservationExpr::And(items) | ObservationExpr::FollowedBy(items) => {
            let ordered = matches!(expr, ObservationExpr::FollowedBy(_));
            let inner = context.nested();
            let mut acc = bindings_from(&items[0], set, next_leaf, &inner)?;
            for (k, item) in items.iter().enumerate().skip(1) {
                let next = bindings_from(item, set, next_leaf, &inner)?;
                // The last join of an expression that only needs its
                // smallest binding using the required observation can skip
                // the pairs without it.
                let last = k + 1 == items.len();
                let keep = if last && context.first_only {
                    Keep::FirstUsing(context.required)
                } else {
                    Keep::All
                };
                acc = join_all(&acc, &next, set, context, keep, |a, b| {
                    !ordered || a.span(set).1 <= b.span(set).0
                })?;
            }
            acc
        }
        ObservationExpr::Qualified(inner, qualifier) => {
            qualified(inner, qualifier, set, next_leaf, context)?
        }
    };
    check_size(&result)?;
    Ok(result)
}

fn qualified<S: ObservationSet + ?Sized>(
    inner: &ObservationExpr,
    qualifier: &Qualifier,
    set: &S,
    next_leaf: &mut usize,
    context: &Context,
) -> Result<BTreeSet<Binding>, EvalError> {
    match qualifier {
        Qualifier::Within(seconds) => {
            let limit = seconds.as_nanos();
            let tighter = context.span_limit.map_or(limit, |l| l.min(limit));
            let within = Context {
                span_limit: Some(tighter),
                ..context.clone()
            };
            bindings_from(inner, set, next_leaf, &within)
        }
        Qualifier::StartStop { start, stop } => {
            let mut windows = context.windows.clone();
            windows.push((*start, *stop));
            let bounded = Context {
                windows,
                ..context.clone()
            };
            bindings_from(inner, set, next_leaf, &bounded)
        }
        Qualifier::Repeats(n) => {
            if context.span_only {
                if let ObservationExpr::Observation(comparison) = inner {
                    let leaf = *next_leaf;
                    *next_leaf += 1;
                    return Ok(repeats_of_leaf(comparison, leaf, *n, set, context));
                }
            }
            let once = bindings_from(inner, set, next_leaf, &context.nested())?;
            repeats(&once, *n, set, context)
        }
    }
}

/// `n` pairwise joinable bindings of `once`, as combinations with
/// repetition (each multiset of bindings is built once, in index order, not
/// in every order; one binding may repeat when the instance counts allow).
fn repeats<S: ObservationSet + ?Sized>(
    once: &BTreeSet<Binding>,
    n: u32,
    set: &S,
    context: &Context,
) -> Result<BTreeSet<Binding>, EvalError> {
    let items: Vec<&Binding> = once.iter().collect();
    // Partial combinations: the joined binding and the index of the last
    // item used.
    let mut partial: Vec<(Binding, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, b)| ((*b).clone(), i))
        .collect();
    for _ in 1..n {
        let mut next = Vec::new();
        for (binding, last) in &partial {
            for (j, item) in items.iter().enumerate().skip(*last) {
                if let Some(joined) = binding.join(item, set) {
                    if context.fits(&joined, set) {
                        next.push((joined, j));
                        if next.len() > MAX_BINDINGS {
                            return Err(EvalError::TooLarge);
                        }
                    }
                }
            }
        }
        partial = next;
        if partial.is_empty() {
            break;
        }
    }
    Ok(partial.into_iter().map(|(b, _)| b).collect())
}

/// `[c] REPEATS n TIMES` where only spans matter above: for each possible
/// earliest observation, the binding that ends soonest. Any other binding
/// with the same start ends no sooner, so it can satisfy nothing more.
fn repeats_of_leaf<S: ObservationSet + ?Sized>(
    comparison: &ComparisonExpr,
    leaf: usize,
    n: u32,
    set: &S,
    context: &Context,
) -> BTreeSet<Binding> {
    // Each hit with its interval and count, read once: a stream asks this
    // for every new hit over a window of hundreds.
    let hits: Vec<Hit> = (0..set.len())
        .filter(|&i| context.observation_allowed(i, set))
        .filter(|&i| set.leaf_matches(leaf, comparison, i))
        .map(|i| {
            let (first, last) = set.interval(i);
            Hit {
                index: i,
                first,
                last,
                count: set.count(i),
            }
        })
        .collect();
    let required = match context.required {
        Some(r) => match hits.iter().find(|h| h.index == r) {
            Some(hit) => Some(*hit),
            None => return BTreeSet::new(),
        },
        None => None,
    };
    let mut by_end = hits.clone();
    by_end.sort_by_key(|h| (h.last, h.index));

    let mut out = BTreeSet::new();
    // Instances of each observation in the binding being built, by index,
    // and the indices set so far (to reset them): constant-time lookups
    // even when `n` is in the thousands.
    let mut used = vec![0u32; set.len()];
    let mut touched: Vec<usize> = Vec::new();
    let mut counts: Vec<(usize, u32)> = Vec::new();
    for start in &hits {
        for &i in &touched {
            used[i] = 0;
        }
        touched.clear();
        let mut taken = 0u32;
        // The start, and the required observation, are always in.
        for must in std::iter::once(start).chain(required.as_ref()) {
            if must.first < start.first || used[must.index] > 0 {
                continue;
            }
            used[must.index] = 1;
            touched.push(must.index);
            taken += 1;
        }
        let has_required = required.is_none_or(|r| used[r.index] > 0);
        if !has_required || taken > n {
            continue;
        }
        // An observation that ends before the start begins also begins
        // before it: skip all of those at once.
        let eligible = by_end.partition_point(|h| h.last < start.first);
        for hit in &by_end[eligible..] {
            if taken == n {
                break;
            }
            if hit.first < start.first {
                continue;
            }
            let slot = &mut used[hit.index];
            if *slot == 0 {
                touched.push(hit.index);
            }
            let more = (hit.count - *slot).min(n - taken);
            *slot += more;
            taken += more;
        }
        if taken == n {
            counts.clear();
            counts.extend(
                touched
                    .iter()
                    .map(|&i| (i, used[i]))
                    .filter(|(_, c)| *c > 0),
            );
            counts.sort_unstable();
            // Every binding here uses the required observation, so when
            // only the first is wanted, larger ones need not be built.
            let smallest = out.first().is_none_or(|b: &Binding| counts < b.uses);
            if context.first_only && !smallest {
                continue;
            }
            let binding = Binding {
                uses: counts.clone(),
            };
            if context.fits(&binding, set) {
                if context.first_only {
                    out.clear();
                }
                out.insert(binding);
            }
        }
    }
    out
}

/// One observation that satisfies a leaf, as [`repeats_of_leaf`] reads it.
#[derive(Clone, Copy)]
struct Hit {
    index: usize,
    first: Timestamp,
    last: Timestamp,
    count: u32,
}

/// Which joined bindings [`join_all`] keeps.
#[derive(Clone, Copy)]
enum Keep {
    /// Every one.
    All,
    /// Only the smallest that uses the observation, if one is given.
    FirstUsing(Option<usize>),
}

/// Every pairwise join of `left` and `right` that fits the instance counts
/// and satisfies `accept`, or only the one `keep` asks for.
fn join_all<S: ObservationSet + ?Sized>(
    left: &BTreeSet<Binding>,
    right: &BTreeSet<Binding>,
    set: &S,
    context: &Context,
    keep: Keep,
    accept: impl Fn(&Binding, &Binding) -> bool,
) -> Result<BTreeSet<Binding>, EvalError> {
    let required = match keep {
        Keep::FirstUsing(required) => required,
        Keep::All => None,
    };
    let uses = |b: &Binding, r: usize| b.observations().any(|i| i == r);
    let mut out = BTreeSet::new();
    for a in left {
        let a_uses = required.is_none_or(|r| uses(a, r));
        for b in right {
            if !a_uses && required.is_some_and(|r| !uses(b, r)) {
                continue;
            }
            if accept(a, b) {
                if let Some(joined) = a.join(b, set) {
                    if context.fits(&joined, set) {
                        if let Keep::FirstUsing(_) = keep {
                            if out.first().is_some_and(|first| *first <= joined) {
                                continue;
                            }
                            out.clear();
                        }
                        out.insert(joined);
                        check_size(&out)?;
                    }
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

//! The STIX 2.1 Patterning Language (§9): lexer, parser, syntax tree,
//! validation and canonical printing.
//!
//! This is the first stage of the flow: indicator patterns are parsed here,
//! then evaluated by [`crate::eval`] (the reference interpreter) or compiled
//! by the matcher.
//!
//! ```
//! use sightline::pattern::parse;
//!
//! let pattern = parse("[file:hashes.'SHA-256' = 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f'
//!                       OR file:name == 'evil.exe']")?;
//! // Printing gives the canonical form, which parses back to the same tree.
//! let text = pattern.to_string();
//! assert!(text.ends_with("OR file:name = 'evil.exe']"));
//! assert_eq!(parse(&text)?, pattern);
//! # Ok::<(), sightline::pattern::PatternError>(())
//! ```

mod ast;
mod error;
mod lexer;
mod parser;
mod print;
pub(crate) mod validate;

pub use ast::{
    Comparison, ComparisonExpr, Literal, ObjectPath, ObservationExpr, PathStep, Pattern, PropTest,
    Qualifier, Seconds,
};
pub use error::{ErrorKind, PatternError, Span};
pub use parser::{Limits, parse, parse_with_limits};

//! Turning input into observations: JSON documents from files and pipes,
//! and (for the `stix` format) observed-data taken as it is.

pub mod decoder;
pub mod documents;
pub mod fields;
pub mod mapping;
pub(crate) mod prefilter;

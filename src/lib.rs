//! Sightline: a streaming STIX 2.1 threat-intelligence matcher.
//!
//! Indicators carry STIX patterns; log events become observations; every
//! observation set that satisfies a pattern is a sighting. The modules
//! follow that flow:
//!
//! - [`pattern`]: the pattern language (parse, validate, print);
//! - [`eval`]: the reference interpreter, the oracle for correctness;
//! - [`matcher`]: the compiled matcher, fast on millions of indicators;
//! - [`observe`]: input documents and their observations;
//! - [`pipeline`]: document in, STIX objects out (shared by the commands),
//!   and the Kafka workers around it;
//! - [`stix`]: STIX data types (timestamps, observations, IP networks);
//! - [`telemetry`]: metrics and probes of the Kafka workers;
//! - [`config`]: configuration of the Kafka workers;
//! - [`taxii`]: TAXII 2.1 client (indicators in) and server (sightings out);
//! - [`cli`]: the `sightline` command line.

pub mod cli;
pub mod config;
pub mod eval;
pub mod matcher;
pub mod memory;
pub mod observe;
pub mod pattern;
pub mod pipeline;
pub mod stix;
pub mod taxii;
pub mod telemetry;

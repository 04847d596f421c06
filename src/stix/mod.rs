//! STIX 2.1 data: timestamps, IP networks, indicators, observations.

pub mod indicator;
pub mod net;
pub mod observation;
pub mod sco;
pub mod sighting;
pub mod timestamp;

//! STIX 2.1 data: timestamps, IP networks, observations.

pub mod net;
pub mod observation;
pub mod timestamp;

//! TAXII 2.1: pull indicators from a server, serve sightings to partners.
//!
//! The client side (`client`, `checkpoint`, `sink`) polls one collection of
//! a remote API root, page by page, and hands new indicators to a sink
//! (a JSON lines file, or the indicators topic: `kafka`).
//! The server side (`store`, `query`, `server`, `auth`, `ingest`) keeps
//! what `match`/`run` emitted (files, or the sightings topic) in SQLite
//! and serves it as a read-only API root. `tls` builds the rustls configurations both sides use.

pub mod auth;
pub mod checkpoint;
pub mod client;
pub mod ingest;
pub mod kafka;
pub mod query;
pub mod server;
pub mod sink;
pub mod store;
pub mod tls;

use crate::stix::timestamp::Timestamp;

/// The TAXII 2.1 media type, sent on every response and request.
pub const TAXII_MEDIA_TYPE: &str = "application/taxii+json;version=2.1";

/// The media type of the STIX 2.1 objects the collections hold.
pub const STIX_MEDIA_TYPE: &str = "application/stix+json;version=2.1";

/// Formats microseconds since the epoch as a TAXII timestamp: UTC with
/// exactly six fraction digits, as TAXII 2.1 §2 asks.
pub fn format_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let whole = Timestamp::from_parts(secs, 0).to_string();
    format!("{}.{fraction:06}Z", whole.trim_end_matches('Z'))
}

/// Reads a timestamp (RFC 3339, any fraction length) as microseconds since
/// the epoch; finer digits are dropped. `None` when it is not a timestamp.
pub fn parse_micros(text: &str) -> Option<i64> {
    let at = Timestamp::parse_rfc3339(text).ok()?;
    i64::try_from(at.unix_nanos().div_euclid(1000)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_six_fraction_digits() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        let micros = parse_micros("2026-11-20T09:00:02.5Z").unwrap_or_default();
        assert_eq!(format_micros(micros), "2026-11-20T09:00:02.500000Z");
        assert_eq!(
            parse_micros("2026-11-20T09:00:02.123456789Z"),
            Some(micros - 500_000 + 123_456)
        );
        assert_eq!(parse_micros("yesterday"), None);
    }
}

//! The URL query parameters of the TAXII 2.1 object endpoints (§3.4):
//! `added_after`, `limit`, `next` and `match[<field>]`, read into a
//! [`Filter`] the store can run.
//!
//! Decisions: a malformed or repeated parameter is refused (400); unknown
//! parameters and unknown `match[...]` fields are ignored, as §3.4 allows;
//! a `limit` above the server's maximum is lowered to it, however many
//! digits it has.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::parse_micros;

/// Most objects one page holds, whatever the client asks for.
pub const MAX_PAGE_OBJECTS: usize = 1000;

/// Page size when the client gives no `limit`.
pub const DEFAULT_PAGE_OBJECTS: usize = 100;

/// Most values one `match[...]` parameter may list.
pub const MAX_MATCH_VALUES: usize = 100;

/// Why a query string is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A parameter that may appear once appeared again.
    #[error("parameter {0} is given more than once")]
    Repeated(String),
    /// `added_after` is not a timestamp.
    #[error("added_after {0:?} is not an RFC 3339 timestamp")]
    AddedAfter(String),
    /// `limit` is not a positive integer.
    #[error("limit {0:?} is not a positive integer")]
    Limit(String),
    /// `next` is not a token this server issued.
    #[error("next {0:?} is not a paging token of this server")]
    Next(String),
    /// A `match[...]` value list is empty or has an empty element.
    #[error("{0} has an empty value")]
    EmptyValue(String),
    /// A `match[...]` parameter lists too many values.
    #[error("{field} lists {count} values, more than the limit of {MAX_MATCH_VALUES}")]
    TooManyValues {
        /// The parameter name.
        field: String,
        /// How many values it listed.
        count: usize,
    },
    /// A `match[version]` value is wrong or repeated.
    #[error("match[version] {0}")]
    Version(String),
}

/// A position in a collection: the `date_added` of the last object served
/// and its row, so that objects sharing one `date_added` page correctly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `date_added` of the last object served, microseconds since the epoch.
    pub date_added_us: i64,
    /// Store row of that object (ties on `date_added` are ordered by row).
    pub seq: i64,
}

impl Cursor {
    /// The opaque `next` token for this position.
    pub fn token(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.date_added_us, self.seq))
    }

    /// Reads a token made by [`Cursor::token`].
    pub fn from_token(token: &str) -> Option<Cursor> {
        if token.len() > 64 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (date, seq) = text.split_once('.')?;
        Some(Cursor {
            date_added_us: date.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// Which versions of each object are asked for (`match[version]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionFilter {
    /// Every version (`all`).
    pub all: bool,
    /// The earliest version (`first`).
    pub first: bool,
    /// The latest version (`last`, the default).
    pub last: bool,
    /// Exact versions, microseconds since the epoch.
    pub exact_us: Vec<i64>,
}

impl Default for VersionFilter {
    fn default() -> VersionFilter {
        VersionFilter {
            all: false,
            first: false,
            last: true,
            exact_us: Vec::new(),
        }
    }
}

impl VersionFilter {
    /// Every version, as the versions endpoint lists them.
    pub fn every() -> VersionFilter {
        VersionFilter {
            all: true,
            first: false,
            last: false,
            exact_us: Vec::new(),
        }
    }

    fn parse(text: &str) -> Result<VersionFilter, QueryError> {
        let mut filter = VersionFilter {
            last: false,
            ..VersionFilter::default()
        };
        let values = split_values("match[version]", text)?;
        for value in &values {
            let seen = match *value {
                "all" => std::mem::replace(&mut filter.all, true),
                "first" => std::mem::replace(&mut filter.first, true),
                "last" => std::mem::replace(&mut filter.last, true),
                other => {
                    let micros = parse_micros(other).ok_or_else(|| {
                        QueryError::Version(format!(
                            "{other:?} is not all, first, last or a timestamp"
                        ))
                    })?;
                    let seen = filter.exact_us.contains(&micros);
                    filter.exact_us.push(micros);
                    seen
                }
            };
            if seen {
                return Err(QueryError::Version(format!(
                    "{value:?} is given more than once"
                )));
            }
        }
        if filter.all && values.len() > 1 {
            return Err(QueryError::Version(
                "all cannot be combined with other values".into(),
            ));
        }
        Ok(filter)
    }
}

/// Everything a request asks of an object, manifest or versions endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Only objects added after this instant (microseconds since the epoch).
    pub added_after_us: Option<i64>,
    /// Most objects in the page (already capped by [`MAX_PAGE_OBJECTS`]).
    pub limit: usize,
    /// Continue after this position.
    pub next: Option<Cursor>,
    /// `match[id]`: only these ids.
    pub ids: Option<Vec<String>>,
    /// `match[type]`: only these types.
    pub types: Option<Vec<String>>,
    /// `match[version]`.
    pub versions: VersionFilter,
    /// `match[spec_version]`: only these; `None` is the latest per object.
    pub spec_versions: Option<Vec<String>>,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            added_after_us: None,
            limit: DEFAULT_PAGE_OBJECTS,
            next: None,
            ids: None,
            types: None,
            versions: VersionFilter::default(),
            spec_versions: None,
        }
    }
}

impl Filter {
    /// Reads a raw query string (`None` when the URL has none).
    ///
    /// # Errors
    ///
    /// Returns [`QueryError`] for a malformed or repeated parameter.
    pub fn parse(query: Option<&str>) -> Result<Filter, QueryError> {
        let mut filter = Filter::default();
        let mut seen: Vec<String> = Vec::new();
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes());
        for (key, value) in pairs {
            let known = matches!(
                key.as_ref(),
                "added_after"
                    | "limit"
                    | "next"
                    | "match[id]"
                    | "match[type]"
                    | "match[version]"
                    | "match[spec_version]"
            );
            if !known {
                continue;
            }
            if seen.iter().any(|k| *k == key) {
                return Err(QueryError::Repeated(key.into_owned()));
            }
            seen.push(key.to_string());
            filter.apply(&key, &value)?;
        }
        Ok(filter)
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<(), QueryError> {
        let owned = |values: Vec<&str>| Some(values.into_iter().map(String::from).collect());
        match key {
            "added_after" => {
                let micros =
                    parse_micros(value).ok_or_else(|| QueryError::AddedAfter(shorten(value)))?;
                self.added_after_us = Some(micros);
            }
            "limit" => self.limit = parse_limit(value)?,
            "next" => {
                let cursor =
                    Cursor::from_token(value).ok_or_else(|| QueryError::Next(shorten(value)))?;
                self.next = Some(cursor);
            }
            "match[id]" => self.ids = owned(split_values(key, value)?),
            "match[type]" => self.types = owned(split_values(key, value)?),
            "match[spec_version]" => self.spec_versions = owned(split_values(key, value)?),
            "match[version]" => self.versions = VersionFilter::parse(value)?,
            _ => {}
        }
        Ok(())
    }
}

/// A positive integer of any length, capped at [`MAX_PAGE_OBJECTS`].
fn parse_limit(value: &str) -> Result<usize, QueryError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QueryError::Limit(shorten(value)));
    }
    let digits = value.trim_start_matches('0');
    if digits.is_empty() {
        return Err(QueryError::Limit(shorten(value)));
    }
    Ok(digits
        .parse::<usize>()
        .map_or(MAX_PAGE_OBJECTS, |n| n.min(MAX_PAGE_OBJECTS)))
}

/// The comma-separated values of one `match[...]` parameter.
fn split_values<'a>(field: &str, value: &'a str) -> Result<Vec<&'a str>, QueryError> {
    let values: Vec<&str> = value.split(',').collect();
    if values.len() > MAX_MATCH_VALUES {
        return Err(QueryError::TooManyValues {
            field: field.to_string(),
            count: values.len(),
        });
    }
    if values.iter().any(|v| v.is_empty()) {
        return Err(QueryError::EmptyValue(field.to_string()));
    }
    Ok(values)
}

/// A value short enough to quote in an error message.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<Filter, QueryError> {
        Filter::parse(Some(query))
    }

    #[test]
    fn defaults_without_a_query() {
        let filter = Filter::parse(None).unwrap_or_default();
        assert_eq!(filter, Filter::default());
        assert!(filter.versions.last);
    }

    #[test]
    fn match_fields_and_paging() -> Result<(), QueryError> {
        let cursor = Cursor {
            date_added_us: 1_700_000_000_000_000,
            seq: 42,
        };
        let query = format!(
            "match%5Btype%5D=indicator,sighting&match[id]=x--1&limit=7&next={}&unknown=1",
            cursor.token()
        );
        let filter = parse(&query)?;
        assert_eq!(
            filter.types,
            Some(vec!["indicator".into(), "sighting".into()])
        );
        assert_eq!(filter.ids, Some(vec!["x--1".into()]));
        assert_eq!(filter.limit, 7);
        assert_eq!(filter.next, Some(cursor));
        Ok(())
    }

    #[test]
    fn limits_are_positive_and_capped() {
        assert_eq!(parse("limit=5").map(|f| f.limit), Ok(5));
        let huge = format!("limit={}", "9".repeat(10_000));
        assert_eq!(parse(&huge).map(|f| f.limit), Ok(MAX_PAGE_OBJECTS));
        for bad in [
            "limit=0",
            "limit=-3",
            "limit=ten",
            "limit=",
            "limit=1.5",
            "limit=000",
        ] {
            assert!(matches!(parse(bad), Err(QueryError::Limit(_))), "{bad}");
        }
    }

    #[test]
    fn versions() -> Result<(), QueryError> {
        let filter = parse("match[version]=first,2016-01-01T01:01:01.000Z,last")?;
        assert!(filter.versions.first && filter.versions.last && !filter.versions.all);
        assert_eq!(filter.versions.exact_us.len(), 1);
        assert!(parse("match[version]=all")?.versions.all);
        for bad in ["all,last", "last,last", "sometime", "", "first,,last"] {
            assert!(parse(&format!("match[version]={bad}")).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn refused_queries() {
        assert!(matches!(
            parse("limit=1&limit=2"),
            Err(QueryError::Repeated(_))
        ));
        assert!(matches!(
            parse("added_after=never"),
            Err(QueryError::AddedAfter(_))
        ));
        assert!(matches!(parse("next=garbage!"), Err(QueryError::Next(_))));
        let many = vec!["a"; MAX_MATCH_VALUES + 1].join(",");
        let query = format!("match[type]={many}");
        assert!(matches!(
            parse(&query),
            Err(QueryError::TooManyValues { .. })
        ));
    }
}

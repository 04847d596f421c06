//! `sightline taxii pull`: reads one collection of a TAXII 2.1 API root,
//! every page, and hands the new objects to a sink.
//!
//! Paging follows `next` when the server gives one and otherwise
//! `added_after` set to the page's `X-TAXII-Date-Added-Last` (§3.5).
//! Objects are de-duplicated by (id, version) within a run and, at the
//! boundary, across runs (see `checkpoint`). Requests are retried with
//! exponential backoff on connection failures, timeouts, 429 and 5xx
//! (honouring `Retry-After`); other statuses fail at once with the status,
//! the URL and the server's error title.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::checkpoint::{CheckpointError, Position};
use super::sink::{IndicatorSink, SinkError};
use super::tls::{TlsError, client_config};
use super::{TAXII_MEDIA_TYPE, format_micros, parse_micros};

/// Largest response body read, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Most (id, version) keys remembered within one run for de-duplication;
/// past it the memory is cleared and de-duplication starts over.
const MAX_SEEN_KEYS: usize = 1_000_000;

/// Longest wait a `Retry-After` header may impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API root URL or collection id cannot be used.
    #[error("{url}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("GET {url}: HTTP {status}{}: {hint}", title.as_ref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Status {
        /// The request URL.
        url: String,
        /// The status code.
        status: StatusCode,
        /// The `title` (and `description`) of the TAXII error body, if any.
        title: Option<String>,
        /// What the status most likely means here.
        hint: &'static str,
    },
    /// The server could not be reached (after every retry).
    #[error("GET {url}: {reason} (after {attempts} attempt(s))")]
    Transport {
        /// The request URL.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The error and its causes.
        reason: String,
    },
    /// The response is not what TAXII 2.1 defines.
    #[error("GET {url}: malformed response: {reason}")]
    Malformed {
        /// The request URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The collection exists but these credentials may not read it.
    #[error("{url}: the collection says can_read is false for these credentials")]
    CannotRead {
        /// The collection URL.
        url: String,
    },
    /// The HTTP client cannot be built.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    /// TLS material cannot be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The destination failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The checkpoint cannot be written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

impl ClientError {
    /// Whether trying again later cannot help (bad credentials, missing
    /// collection, bad configuration), as opposed to an outage.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::Status { status, .. } => {
                status.is_client_error() && *status != StatusCode::TOO_MANY_REQUESTS
            }
            ClientError::Transport { .. } | ClientError::Malformed { .. } => false,
            _ => true,
        }
    }
}

/// How the client authenticates.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No `Authorization` header.
    #[default]
    None,
    /// HTTP Basic.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// Connection settings of the client.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Credentials sent with every request.
    pub credentials: Credentials,
    /// A PEM file of extra trusted CAs.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Time allowed for one request, connection to last byte.
    pub timeout: Duration,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each next one, up to 30 s.
    pub backoff: Duration,
}

/// What to pull.
#[derive(Debug, Clone)]
pub struct PullRequest {
    /// The API root URL (ending in '/').
    pub api_root: String,
    /// The collection id.
    pub collection: String,
    /// Page size asked for (`limit`).
    pub limit: usize,
    /// Object types asked for (`match[type]`); others are dropped.
    pub types: Vec<String>,
}

/// What one pull run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PullReport {
    /// Pages fetched.
    pub pages: usize,
    /// Objects written to the sink.
    pub written: usize,
    /// Objects dropped as already taken.
    pub duplicates: usize,
    /// Objects dropped for their type or for lacking an id.
    pub dropped: usize,
}

/// What a server's discovery resource and API roots offer.
#[derive(Debug)]
pub struct Discovery {
    /// The server's title.
    pub title: String,
    /// Each API root, in the order the server lists them.
    pub roots: Vec<ApiRoot>,
}

/// One API root.
#[derive(Debug)]
pub struct ApiRoot {
    /// Its URL, resolved against the discovery URL.
    pub url: String,
    /// Its title ("" when it could not be read).
    pub title: String,
    /// Its collections, or why they could not be listed (a root may
    /// refuse these credentials while others accept them).
    pub collections: Result<Vec<CollectionInfo>, ClientError>,
}

/// One collection, as its API root lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionInfo {
    /// The collection id (what `pull --collection` takes).
    pub id: String,
    /// Its title.
    pub title: String,
    /// Whether these credentials may read it.
    pub can_read: bool,
    /// Whether these credentials may write it.
    pub can_write: bool,
}

/// A TAXII 2.1 client.
pub struct Client {
    http: reqwest::Client,
    settings: ClientSettings,
}

/// A fetched JSON resource and its date headers.
struct Fetched {
    body: Value,
    added_last: Option<String>,
}

impl Client {
    /// Builds a client.
    ///
    /// # Errors
    ///
    /// Fails when the CA file cannot be read or TLS cannot be set up.
    pub fn new(settings: ClientSettings) -> Result<Client, ClientError> {
        let tls = client_config(settings.ca_cert.as_deref())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("sightline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Setup(causes(&e)))?;
        Ok(Client { http, settings })
    }

    /// Reads the discovery resource at `url`, then each API root it lists
    /// and that root's collections.
    ///
    /// # Errors
    ///
    /// Fails when the discovery resource cannot be read or is malformed;
    /// an API root that fails is reported in its entry instead.
    pub async fn discover(&self, url: &str) -> Result<Discovery, ClientError> {
        let base = Url::parse(url).map_err(|e| bad_url(url, e.to_string()))?;
        let fetched = self.get(&base, &[]).await?;
        let text = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let listed = fetched
            .body
            .get("api_roots")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut roots = Vec::new();
        for entry in &listed {
            let Some(root) = entry.as_str() else {
                return Err(ClientError::Malformed {
                    url: base.to_string(),
                    reason: "api_roots holds a value that is not a URL string".into(),
                });
            };
            let mut root_url = base.join(root).map_err(|e| bad_url(root, e.to_string()))?;
            if !root_url.path().ends_with('/') {
                root_url.set_path(&format!("{}/", root_url.path()));
            }
            let title = match self.get(&root_url, &[]).await {
                Ok(info) => text(&info.body, "title"),
                Err(_) => String::new(),
            };
            let collections = match root_url.join("collections/") {
                Ok(list_url) => self.collections(&list_url).await,
                Err(e) => Err(bad_url(root, e.to_string())),
            };
            roots.push(ApiRoot {
                url: root_url.to_string(),
                title,
                collections,
            });
        }
        Ok(Discovery {
            title: text(&fetched.body, "title"),
            roots,
        })
    }

    async fn collections(&self, url: &Url) -> Result<Vec<CollectionInfo>, ClientError> {
        let fetched = self.get(url, &[]).await?;
        let listed = match fetched.body.get("collections") {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => {
                return Err(ClientError::Malformed {
                    url: url.to_string(),
                    reason: "collections is not a list".into(),
                });
            }
        };
        Ok(listed
            .iter()
            .map(|c| CollectionInfo {
                id: c
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                title: c
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                can_read: c.get("can_read").and_then(Value::as_bool).unwrap_or(false),
                can_write: c.get("can_write").and_then(Value::as_bool).unwrap_or(false),
            })
            .collect())
    }

    /// Checks that `collection` exists under `api_root` and can be read.
    ///
    /// # Errors
    ///
    /// Fails with the server's status (404 for a missing collection) or
    /// [`ClientError::CannotRead`].
    pub async fn check_collection(&self, request: &PullRequest) -> Result<(), ClientError> {
        let url = collection_url(request)?;
        let fetched = self.get(&url, &[]).await?;
        match fetched.body.get("can_read") {
            Some(Value::Bool(true)) => Ok(()),
            Some(Value::Bool(false)) => Err(ClientError::CannotRead {
                url: url.to_string(),
            }),
            _ => Err(ClientError::Malformed {
                url: url.to_string(),
                reason: "the collection resource has no boolean can_read".into(),
            }),
        }
    }

    /// Fetches every page added since `position` and writes the new
    /// objects to `sink`. After each page is flushed, `saved` receives the
    /// new position (to persist it).
    ///
    /// # Errors
    ///
    /// Fails on the first request, sink or checkpoint error; what was
    /// flushed and saved before it stays done.
    pub async fn pull(
        &self,
        request: &PullRequest,
        mut position: Position,
        sink: &mut dyn IndicatorSink,
        saved: &mut dyn FnMut(&Position) -> Result<(), ClientError>,
    ) -> Result<PullReport, ClientError> {
        let url = collection_url(request)?
            .join("objects/")
            .map_err(|e| bad_url(&request.api_root, e.to_string()))?;
        let boundary: HashSet<(String, String)> = position.recent.iter().cloned().collect();
        // Ask from just before the last date taken: objects sharing it may
        // not all have been on the last page.
        let mut added_after = position.added_last.as_deref().map(one_micro_earlier);
        let mut next: Option<String> = None;
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let mut report = PullReport::default();

        loop {
            let mut query = vec![("limit".to_string(), request.limit.to_string())];
            if !request.types.is_empty() {
                query.push(("match[type]".into(), request.types.join(",")));
            }
            if let Some(after) = &added_after {
                query.push(("added_after".into(), after.clone()));
            }
            if let Some(token) = &next {
                query.push(("next".into(), token.clone()));
            }
            let fetched = self.get(&url, &query).await?;
            let page = Envelope::read(&url, &fetched.body)?;
            report.pages += 1;

            let mut fresh = Vec::new();
            let mut keys = Vec::with_capacity(page.objects.len());
            for object in page.objects {
                let Some(key) = object_key(object) else {
                    report.dropped += 1;
                    continue;
                };
                keys.push(key.clone());
                let kind = object
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !request.types.is_empty() && !request.types.iter().any(|t| t == kind) {
                    report.dropped += 1;
                    continue;
                }
                if seen.len() >= MAX_SEEN_KEYS {
                    seen.clear();
                }
                if boundary.contains(&key) || !seen.insert(key) {
                    report.duplicates += 1;
                    continue;
                }
                fresh.push(object.clone());
            }
            sink.write(&fresh)?;
            sink.flush()?;
            report.written += fresh.len();
            if let Some(last) = &fetched.added_last {
                position = Position {
                    added_last: Some(last.clone()),
                    recent: keys,
                };
                saved(&position)?;
            }

            if !page.more {
                return Ok(report);
            }
            // Some servers keep one `next` token for a whole paging
            // session, so a repeated token is progress as long as objects
            // keep coming.
            let progressed = match (page.next, &fetched.added_last) {
                (Some(token), _) => {
                    let same = next.replace(token.to_string()).as_deref() == Some(token);
                    !same || !page.objects.is_empty()
                }
                (None, Some(last)) => {
                    next = None;
                    added_after.replace(last.clone()).as_ref() != Some(last)
                }
                (None, None) => {
                    return Err(ClientError::Malformed {
                        url: url.to_string(),
                        reason: "more is true but there is neither next nor \
                                 X-TAXII-Date-Added-Last to continue from"
                            .into(),
                    });
                }
            };
            if !progressed {
                return Err(ClientError::Malformed {
                    url: url.to_string(),
                    reason:
                        "more is true but the server sends no objects and the same continuation"
                            .into(),
                });
            }
        }
    }

    /// GETs `url` with retries; the body must be JSON.
    async fn get(&self, url: &Url, query: &[(String, String)]) -> Result<Fetched, ClientError> {
        let attempts = self.settings.attempts.max(1);
        let mut wait = self.settings.backoff;
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let mut builder = self
                .http
                .get(url.clone())
                .query(query)
                .header(ACCEPT, TAXII_MEDIA_TYPE);
            builder = match &self.settings.credentials {
                Credentials::None => builder,
                Credentials::Basic { user, password } => builder.basic_auth(user, Some(password)),
                Credentials::Bearer(token) => builder.bearer_auth(token),
            };
            let delay = match builder.send().await {
                Ok(response) if response.status().is_success() => break response,
                Ok(response) if attempt < attempts && retryable(response.status()) => {
                    retry_after(response.headers()).unwrap_or(wait)
                }
                Ok(response) => return Err(status_error(url, response).await),
                Err(e) if attempt < attempts && (e.is_connect() || e.is_timeout()) => wait,
                Err(e) => {
                    return Err(ClientError::Transport {
                        url: url.to_string(),
                        attempts: attempt,
                        reason: causes(&e),
                    });
                }
            };
            tokio::time::sleep(delay).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        };

        let added_last = response
            .headers()
            .get("x-taxii-date-added-last")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_limited(url, response).await?;
        let body = serde_json::from_slice(&bytes).map_err(|e| ClientError::Malformed {
            url: url.to_string(),
            reason: format!("not JSON: {e}"),
        })?;
        Ok(Fetched { body, added_last })
    }
}

/// The parts of an envelope the client uses.
struct Envelope<'a> {
    more: bool,
    next: Option<&'a str>,
    objects: &'a [Value],
}

impl<'a> Envelope<'a> {
    fn read(url: &Url, body: &'a Value) -> Result<Envelope<'a>, ClientError> {
        let malformed = |reason: &str| ClientError::Malformed {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let map = body
            .as_object()
            .ok_or_else(|| malformed("the envelope is not a JSON object"))?;
        let more = match map.get("more") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(more)) => *more,
            Some(_) => return Err(malformed("more is not a boolean")),
        };
        let next = match map.get("next") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(malformed("next is not a string")),
        };
        let objects = match map.get("objects") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(items)) => items.as_slice(),
            Some(_) => return Err(malformed("objects is not a list")),
        };
        Ok(Envelope {
            more,
            next,
            objects,
        })
    }
}

/// (id, version) of a STIX object; the version is `modified`, else
/// `created`, else empty.
fn object_key(object: &Value) -> Option<(String, String)> {
    let id = object.get("id")?.as_str()?;
    let version = ["modified", "created"]
        .iter()
        .find_map(|k| object.get(k).and_then(Value::as_str))
        .unwrap_or_default();
    Some((id.to_string(), version.to_string()))
}

/// The collection URL: `{api_root}collections/{id}/`.
fn collection_url(request: &PullRequest) -> Result<Url, ClientError> {
    let mut root = request.api_root.clone();
    if !root.ends_with('/') {
        root.push('/');
    }
    let base = Url::parse(&root).map_err(|e| bad_url(&request.api_root, e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(bad_url(
            &request.api_root,
            "the scheme must be http or https".into(),
        ));
    }
    let id = &request.collection;
    let safe = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
    if id.is_empty() || !id.chars().all(safe) || id.chars().all(|c| c == '.') {
        return Err(bad_url(
            id,
            "a collection id is letters, digits, '-', '.', '_' or '~'".into(),
        ));
    }
    base.join(&format!("collections/{id}/"))
        .map_err(|e| bad_url(&request.api_root, e.to_string()))
}

fn bad_url(url: &str, reason: String) -> ClientError {
    ClientError::BadUrl {
        url: url.to_string(),
        reason,
    }
}

/// The timestamp one microsecond before `text` (as the server wrote it,
/// when it cannot be read).
fn one_micro_earlier(text: &str) -> String {
    parse_micros(text).map_or_else(|| text.to_string(), |m| format_micros(m - 1))
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `Retry-After` in seconds (the HTTP-date form is not used by TAXII
/// servers in practice and is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The error for a non-success status, with the TAXII error title.
async fn status_error(url: &Url, response: reqwest::Response) -> ClientError {
    let status = response.status();
    let hint = match status.as_u16() {
        400 => "the server refused the query parameters",
        401 => "authentication failed; check --user/--password or --token",
        403 => "these credentials may not read this collection",
        404 => "no such API root or collection; check --url and --collection",
        406 => "the server does not serve application/taxii+json;version=2.1",
        413 => "the server finds the request too large; try a smaller --limit",
        415 => "the server refused the request's media type",
        429 => "the server is rate limiting; retries were exhausted",
        500..=599 => "the server failed; retries were exhausted",
        _ => "unexpected status",
    };
    let title = match read_limited(url, response).await {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|body| {
                let title = body.get("title")?.as_str()?.to_string();
                Some(match body.get("description").and_then(Value::as_str) {
                    Some(description) => format!("{title}: {description}"),
                    None => title,
                })
            }),
        Err(_) => None,
    };
    ClientError::Status {
        url: url.to_string(),
        status,
        title,
        hint,
    }
}

/// Reads a response body, refusing more than [`MAX_RESPONSE_BYTES`].
async fn read_limited(url: &Url, mut response: reqwest::Response) -> Result<Vec<u8>, ClientError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(ClientError::Malformed {
                        url: url.to_string(),
                        reason: format!("the body exceeds {MAX_RESPONSE_BYTES} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(ClientError::Transport {
                    url: url.to_string(),
                    attempts: 1,
                    reason: causes(&e),
                });
            }
        }
    }
}

/// An error and its causes, joined by ": ".
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(root: &str, collection: &str) -> PullRequest {
        PullRequest {
            api_root: root.into(),
            collection: collection.into(),
            limit: 10,
            types: vec!["indicator".into()],
        }
    }

    #[test]
    fn collection_urls() {
        let url = collection_url(&request("http://127.0.0.1:5000/api1", "abc-1"));
        assert_eq!(
            url.map(|u| u.to_string()).ok().as_deref(),
            Some("http://127.0.0.1:5000/api1/collections/abc-1/")
        );
        for (root, id) in [
            ("ftp://x/", "a"),
            ("not a url", "a"),
            ("http://x/", "../a"),
            ("http://x/", ".."),
        ] {
            assert!(matches!(
                collection_url(&request(root, id)),
                Err(ClientError::BadUrl { .. })
            ));
        }
    }

    #[test]
    fn envelopes() {
        let url = Url::parse("http://x/").unwrap_or_else(|e| panic!("{e}"));
        let body = serde_json::json!({"more": true, "next": "t", "objects": [{"id": "a"}]});
        let page = Envelope::read(&url, &body);
        assert!(page.is_ok_and(|p| p.more && p.next == Some("t") && p.objects.len() == 1));
        let empty = serde_json::json!({});
        assert!(Envelope::read(&url, &empty).is_ok_and(|p| !p.more && p.objects.is_empty()));
        for bad in [
            serde_json::json!([]),
            serde_json::json!({"more": "yes"}),
            serde_json::json!({"objects": {}}),
        ] {
            assert!(Envelope::read(&url, &bad).is_err());
        }
    }

    #[test]
    fn boundary_goes_one_microsecond_back() {
        assert_eq!(
            one_micro_earlier("2017-01-27T13:49:59.997000Z"),
            "2017-01-27T13:49:59.996999Z"
        );
        assert_eq!(one_micro_earlier("junk"), "junk");
    }
}

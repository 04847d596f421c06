//! `sightline taxii serve`: a read-only TAXII 2.1 API root over the store.
//!
//! Endpoints (all under `/taxii2/`): discovery, the API root
//! `/taxii2/{name}/`, its collections, and for each collection its objects,
//! one object, its versions and the manifest. Writing (POST objects,
//! DELETE an object) answers 405; status resources do not exist (404).
//! Every response is `application/taxii+json;version=2.1`, errors are
//! TAXII error messages, and requests pass one guard first: the `Accept`
//! header (406 when it allows no TAXII 2.1 content) and the credentials
//! (401 with challenges).

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::auth::{Access, AuthConfig, Denied};
use super::query::{Filter, VersionFilter};
use super::store::{Collection, Page, Store, StoreError};
use super::{STIX_MEDIA_TYPE, TAXII_MEDIA_TYPE};

/// Most connections served at once; further ones wait to be accepted.
pub const MAX_CONNECTIONS: usize = 256;

/// Time a client has to send its request headers or finish the TLS
/// handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request body the API root admits (it takes none: it is
/// read-only), as advertised in `max_content_length`.
const MAX_CONTENT_LENGTH: u64 = 0;

/// What the server serves.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Name of the API root, served at `/taxii2/{name}/`.
    pub api_root: String,
    /// Who may read what.
    pub auth: AuthConfig,
    /// The collections listed (sightings always; indicators when loaded).
    pub collections: Vec<Collection>,
}

struct Shared {
    store: Mutex<Store>,
    settings: ServerSettings,
}

/// A failed request: its status and a TAXII error message.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    title: &'static str,
    description: String,
}

impl ApiError {
    fn new(status: StatusCode, title: &'static str, description: impl Into<String>) -> ApiError {
        ApiError {
            status,
            title,
            description: description.into(),
        }
    }

    fn not_found(description: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not found", description)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        eprintln!("error: taxii serve: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            "the object store failed; the server log has the details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "title": self.title,
            "description": self.description,
            "http_status": self.status.as_str(),
        });
        taxii_response(self.status, body.to_string(), HeaderMap::new())
    }
}

fn taxii_response(status: StatusCode, body: String, mut headers: HeaderMap) -> Response {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(TAXII_MEDIA_TYPE),
    );
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn json_response(body: &Value) -> Response {
    taxii_response(StatusCode::OK, body.to_string(), HeaderMap::new())
}

/// The router of the API, over an opened store.
pub fn router(store: Store, settings: ServerSettings) -> Router {
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        settings,
    });
    let collection = "/taxii2/{root}/collections/{collection}";
    Router::new()
        .route("/taxii2/", get(discovery))
        .route("/taxii2/{root}/", get(api_root))
        .route("/taxii2/{root}/status/{status}/", get(status))
        .route("/taxii2/{root}/collections/", get(collections))
        .route(&format!("{collection}/"), get(collection_info))
        .route(&format!("{collection}/manifest/"), get(manifest))
        .route(
            &format!("{collection}/objects/"),
            get(objects).post(read_only),
        )
        .route(
            &format!("{collection}/objects/{{object}}/"),
            get(object).delete(read_only),
        )
        .route(
            &format!("{collection}/objects/{{object}}/versions/"),
            get(versions),
        )
        .fallback(unknown_path)
        .method_not_allowed_fallback(read_only)
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// Checks `Accept` and the credentials before any endpoint runs.
async fn guard(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    let auth = &shared.settings.auth;
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let access = match auth.check(authorization) {
        Ok(access) => access,
        Err(denied) => {
            let description = match denied {
                Denied::Missing => "this server needs HTTP Basic or bearer credentials",
                Denied::Invalid => "the credentials given are not accepted",
            };
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", description)
                .into_response();
            for challenge in auth.challenges() {
                response.headers_mut().append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            return response;
        }
    };
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .map(HeaderValue::as_bytes);
    if !accepts_taxii(accept) {
        return ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not acceptable",
            format!("this server answers {TAXII_MEDIA_TYPE}; the Accept header allows none of it"),
        )
        .into_response();
    }
    request.extensions_mut().insert(access);
    next.run(request).await
}

/// Whether an `Accept` header admits TAXII 2.1 JSON. A missing header
/// admits anything; so do `*/*`, `application/*` and
/// `application/taxii+json` without a version or with version 2.1.
pub fn accepts_taxii(accept: Option<&[u8]>) -> bool {
    let Some(accept) = accept else {
        return true;
    };
    let Ok(accept) = std::str::from_utf8(accept) else {
        return false;
    };
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut version = None;
        let mut refused = false;
        for parameter in parts {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().trim_matches('"');
            if name == "version" {
                version = Some(value.to_string());
            } else if name == "q" {
                refused = value.parse::<f32>().is_ok_and(|q| q <= 0.0);
            }
        }
        let versioned = version.is_none_or(|v| v == "2.1");
        !refused
            && match media.as_str() {
                "*/*" | "application/*" => true,
                "application/taxii+json" => versioned,
                _ => false,
            }
    })
}

async fn unknown_path() -> ApiError {
    ApiError::not_found("no TAXII resource at this path (TAXII paths end in '/')")
}

async fn read_only() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        "this API root is read-only: it answers GET only",
    )
}

async fn status() -> ApiError {
    ApiError::not_found("this API root is read-only and keeps no status resources")
}

fn root_path(shared: &Shared) -> String {
    format!("/taxii2/{}/", shared.settings.api_root)
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    let root = root_path(&shared);
    json_response(&json!({
        "title": "Sightline",
        "description": "Sightings of STIX 2.1 indicators, with their observed-data and \
                        cyber-observables",
        "default": root,
        "api_roots": [root],
    }))
}

fn check_root(shared: &Shared, root: &str) -> Result<(), ApiError> {
    if root == shared.settings.api_root {
        Ok(())
    } else {
        Err(ApiError::not_found("no such API root"))
    }
}

async fn api_root(
    State(shared): State<Arc<Shared>>,
    Path(root): Path<String>,
) -> Result<Response, ApiError> {
    check_root(&shared, &root)?;
    Ok(json_response(&json!({
        "title": "Sightline sightings",
        "description": "Read-only sightings produced by sightline",
        "versions": [TAXII_MEDIA_TYPE],
        "max_content_length": MAX_CONTENT_LENGTH,
    })))
}

fn collection_resource(collection: Collection, access: Access) -> Value {
    let (title, description) = match collection {
        Collection::Sightings => (
            "Sightings",
            "Sightings with the observed-data, cyber-observables and identities they cite",
        ),
        Collection::Indicators => ("Indicators", "The indicators the sightings refer to"),
    };
    json!({
        "id": collection.id(),
        "title": title,
        "description": description,
        "alias": collection.alias(),
        "can_read": access.can_read(collection),
        "can_write": false,
        "media_types": [STIX_MEDIA_TYPE],
    })
}

async fn collections(
    State(shared): State<Arc<Shared>>,
    axum::Extension(access): axum::Extension<Access>,
    Path(root): Path<String>,
) -> Result<Response, ApiError> {
    check_root(&shared, &root)?;
    let listed: Vec<Value> = shared
        .settings
        .collections
        .iter()
        .map(|c| collection_resource(*c, access))
        .collect();
    Ok(json_response(&json!({ "collections": listed })))
}

/// The collection a request names, if it exists and may be read.
fn readable(
    shared: &Shared,
    access: Access,
    root: &str,
    key: &str,
) -> Result<Collection, ApiError> {
    check_root(shared, root)?;
    let collection = Collection::find(key)
        .filter(|c| shared.settings.collections.contains(c))
        .ok_or_else(|| ApiError::not_found("no such collection"))?;
    if !access.can_read(collection) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "these credentials may not read this collection",
        ));
    }
    Ok(collection)
}

async fn collection_info(
    State(shared): State<Arc<Shared>>,
    axum::Extension(access): axum::Extension<Access>,
    Path((root, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_root(&shared, &root)?;
    let collection = Collection::find(&key)
        .filter(|c| shared.settings.collections.contains(c))
        .ok_or_else(|| ApiError::not_found("no such collection"))?;
    Ok(json_response(&collection_resource(collection, access)))
}

fn parse_filter(query: Option<&str>) -> Result<Filter, ApiError> {
    Filter::parse(query)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad request", e.to_string()))
}

/// Runs a store query off the reactor. With `object`, the object must
/// exist in the collection (404 otherwise).
async fn run_query(
    shared: Arc<Shared>,
    collection: Collection,
    filter: Filter,
    object: Option<String>,
) -> Result<Page, ApiError> {
    let joined = tokio::task::spawn_blocking(move || {
        let store = shared
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(id) = &object {
            if !store.contains(collection, id)? {
                return Ok(None);
            }
        }
        store.query(collection, &filter).map(Some)
    })
    .await;
    match joined {
        Ok(Ok(Some(page))) => Ok(page),
        Ok(Ok(None)) => Err(ApiError::not_found("no such object in this collection")),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => {
            eprintln!("error: taxii serve: query task failed: {e}");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
                "the query failed",
            ))
        }
    }
}

/// `X-TAXII-Date-Added-First`/`-Last` of a page (none when it is empty).
fn date_headers(page: &Page) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let ends = [
        ("x-taxii-date-added-first", page.rows.first()),
        ("x-taxii-date-added-last", page.rows.last()),
    ];
    for (name, row) in ends {
        if let Some(value) = row.and_then(|r| HeaderValue::from_str(&r.date_added()).ok()) {
            headers.insert(name, value);
        }
    }
    headers
}

/// A paged resource: `more`, `next` and the list under `key` (left out
/// when empty, as TAXII lists may not be). The items are JSON texts.
fn paged_body(page: &Page, key: &str, items: impl Iterator<Item = String>) -> String {
    let mut body = format!("{{\"more\":{}", page.more);
    if let Some(token) = page.next_token() {
        body.push_str(&format!(",\"next\":{}", Value::from(token)));
    }
    let mut first = true;
    for item in items {
        body.push_str(if first { ",\"" } else { "," });
        if first {
            body.push_str(key);
            body.push_str("\":[");
            first = false;
        }
        body.push_str(&item);
    }
    if !first {
        body.push(']');
    }
    body.push('}');
    body
}

fn envelope(page: &Page) -> Response {
    let body = paged_body(page, "objects", page.rows.iter().map(|r| r.json.clone()));
    taxii_response(StatusCode::OK, body, date_headers(page))
}

type ObjectPath = Path<(String, String, String)>;

async fn objects(
    State(shared): State<Arc<Shared>>,
    axum::Extension(access): axum::Extension<Access>,
    Path((root, key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let collection = readable(&shared, access, &root, &key)?;
    let filter = parse_filter(query.as_deref())?;
    let page = run_query(shared, collection, filter, None).await?;
    Ok(envelope(&page))
}

async fn object(
    State(shared): State<Arc<Shared>>,
    axum::Extension(access): axum::Extension<Access>,
    Path((root, key, id)): ObjectPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let collection = readable(&shared, access, &root, &key)?;
    let filter = Filter {
        ids: Some(vec![id.clone()]),
        types: None,
        ..parse_filter(query.as_deref())?
    };
    let page = run_query(shared, collection, filter, Some(id)).await?;
    Ok(envelope(&page))
}

async fn versions(
    State(shared): State<Arc<Shared>>,
    axum::Extension(access): axum::Extension<Access>,
    Path((root, key, id)): ObjectPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let collection = readable(&shared, access, &root, &key)?;
    let filter = Filter {
        ids: Some(vec![id.clone()]),
        types: None,
        versions: VersionFilter::every(),
        ..parse_filter(query.as_deref())?
    };
    let page = run_query(shared, collection, filter, Some(id)).await?;
    let items = page
        .rows
        .iter()
        .map(|r| Value::from(r.version.clone()).to_string());
    let body = paged_body(&page, "versions", items);
    Ok(taxii_response(StatusCode::OK, body, date_headers(&page)))
}

async fn manifest(
    State(shared): State<Arc<Shared>>,
    axum::Extension(access): axum::Extension<Access>,
    Path((root, key)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let collection = readable(&shared, access, &root, &key)?;
    let filter = parse_filter(query.as_deref())?;
    let page = run_query(shared, collection, filter, None).await?;
    let items = page.rows.iter().map(|r| {
        let media_type = format!("application/stix+json;version={}", r.spec_version);
        json!({
            "id": r.id,
            "date_added": r.date_added(),
            "version": r.version,
            "media_type": media_type,
        })
        .to_string()
    });
    let body = paged_body(&page, "objects", items);
    Ok(taxii_response(StatusCode::OK, body, date_headers(&page)))
}

/// Serves `app` on `listener` (with TLS when `tls` is given) until
/// `shutdown` completes.
///
/// # Errors
///
/// Fails only when the listener itself fails; a failing connection is
/// logged and dropped.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            () = &mut shutdown => return Ok(()),
        };
        let Ok(permit) = permit else {
            return Ok(());
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return Ok(()),
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_transient(&e) => {
                // Out of file descriptors, or one client gave up: pause
                // briefly rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let service = TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            // A failed connection concerns one client (it hung up or sent
            // garbage): there is nothing to report.
            let _ = match tls {
                None => http.serve_connection(TokioIo::new(stream), service).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            http.serve_connection(TokioIo::new(stream), service).await
                        }
                        Ok(Err(_)) | Err(_) => return,
                    }
                }
            };
        });
    }
}

/// Accept errors that concern one connection, not the listener.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e
        .raw_os_error()
        .is_some_and(|code| code == 24 || code == 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        assert!(accepts_taxii(None));
        for yes in [
            "application/taxii+json;version=2.1",
            "application/taxii+json",
            "*/*",
            "text/html, application/taxii+json ; version=2.1",
            "application/*",
        ] {
            assert!(accepts_taxii(Some(yes.as_bytes())), "{yes}");
        }
        for no in [
            "application/taxii+json;version=2.0",
            "text/html",
            "application/json",
            "application/taxii+json;q=0",
            "application/vnd.oasis.taxii+json;version=2.0",
        ] {
            assert!(!accepts_taxii(Some(no.as_bytes())), "{no}");
        }
    }
}

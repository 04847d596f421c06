//! `sightline taxii pull` and `sightline taxii serve`: TAXII 2.1 in and out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use crate::taxii::auth::{AuthConfig, Scope};
use crate::taxii::checkpoint::Checkpoint;
use crate::taxii::client::{Client, ClientError, ClientSettings, Credentials, PullRequest};
use crate::taxii::ingest::{self, IngestReport, Keep};
use crate::taxii::kafka::{KafkaSink, follow_topic};
use crate::taxii::server::{self, ServerSettings};
use crate::taxii::sink::{IndicatorSink, JsonLinesFile};
use crate::taxii::store::{Collection, Store};
use crate::taxii::tls;

/// Arguments of `sightline taxii`.
#[derive(Debug, Args)]
pub struct TaxiiArgs {
    #[command(subcommand)]
    command: TaxiiCommand,
}

#[derive(Debug, Subcommand)]
enum TaxiiCommand {
    /// List a server's API roots and their collections (discovery).
    Discover(DiscoverArgs),
    /// Poll one TAXII 2.1 collection for indicators (every page) and write
    /// them as JSON lines, remembering where it stopped.
    Pull(PullArgs),
    /// Serve sightings (and optionally the indicators they cite) as a
    /// read-only TAXII 2.1 API root, stored in SQLite.
    Serve(ServeArgs),
}

/// How to reach a TAXII server: credentials, trust, patience.
#[derive(Debug, Args)]
struct ConnectArgs {
    /// HTTP Basic user name.
    #[arg(
        long,
        value_name = "U",
        requires = "password",
        conflicts_with = "token"
    )]
    user: Option<String>,

    /// HTTP Basic password (or SIGHTLINE_TAXII_PASSWORD, which keeps it
    /// out of the process list).
    #[arg(
        long,
        value_name = "P",
        requires = "user",
        env = "SIGHTLINE_TAXII_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,

    /// Bearer token (or SIGHTLINE_TAXII_TOKEN).
    #[arg(
        long,
        value_name = "T",
        env = "SIGHTLINE_TAXII_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    /// PEM file of CA certificates to trust beside the public roots.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,

    /// Seconds allowed for one request.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    timeout: u64,

    /// Attempts per request on connection errors, timeouts, 429 and 5xx.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    attempts: u32,
}

impl ConnectArgs {
    /// A client with these settings.
    fn client(&self) -> anyhow::Result<Client> {
        let credentials = match (&self.user, &self.password, &self.token) {
            (Some(user), Some(password), _) => Credentials::Basic {
                user: user.clone(),
                password: password.clone(),
            },
            (_, _, Some(token)) => Credentials::Bearer(token.clone()),
            _ => Credentials::None,
        };
        Ok(Client::new(ClientSettings {
            credentials,
            ca_cert: self.ca_cert.clone(),
            timeout: Duration::from_secs(self.timeout.max(1)),
            attempts: self.attempts,
            backoff: Duration::from_millis(500),
        })?)
    }
}

/// Arguments of `sightline taxii discover`.
#[derive(Debug, Args)]
struct DiscoverArgs {
    /// The discovery URL, e.g. https://taxii.example/taxii2/.
    #[arg(long, value_name = "DISCOVERY_URL")]
    url: String,

    #[command(flatten)]
    connect: ConnectArgs,
}

/// Arguments of `sightline taxii pull`.
#[derive(Debug, Args)]
struct PullArgs {
    /// The API root URL, e.g. https://taxii.example/api1/.
    #[arg(long, value_name = "API_ROOT_URL")]
    url: String,

    /// The collection id.
    #[arg(long, value_name = "ID")]
    collection: String,

    #[command(flatten)]
    connect: ConnectArgs,

    /// Append the objects to this file as JSON lines (the form `sightline
    /// match --indicators` reads).
    #[arg(long, value_name = "PATH", required_unless_present = "brokers")]
    output: Option<PathBuf>,

    /// Kafka brokers, to write to the indicators topic instead of a file.
    #[arg(
        long,
        value_name = "B",
        conflicts_with = "output",
        requires = "indicators_topic"
    )]
    brokers: Option<String>,

    /// The indicators topic (with --brokers).
    #[arg(long, value_name = "T", requires = "brokers")]
    indicators_topic: Option<String>,

    /// Remember here (JSON) where each collection was left, to continue
    /// from there on the next run.
    #[arg(long, value_name = "PATH")]
    checkpoint: Option<PathBuf>,

    /// Pull once and exit, instead of polling.
    #[arg(long, conflicts_with = "interval")]
    once: bool,

    /// Seconds between polls.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    interval: u64,

    /// Objects per page asked for.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    limit: u64,

    /// Object types to ask for (match[type]); repeat or separate with
    /// commas.
    #[arg(
        long = "type",
        value_name = "TYPE",
        value_delimiter = ',',
        default_value = "indicator"
    )]
    types: Vec<String>,
}

/// Arguments of `sightline taxii serve`.
#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is
    /// printed on standard error).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9500")]
    listen: SocketAddr,

    /// SQLite database holding the served objects (created when missing).
    #[arg(long, value_name = "PATH")]
    db: PathBuf,

    /// Objects to serve: JSON lines (or bundles) as `sightline match`
    /// writes them ("-" for standard input). Read before serving starts;
    /// objects already stored are not stored twice.
    #[arg(long, value_name = "PATH|-")]
    from: Option<PathBuf>,

    /// Keep reading --from as it grows (JSON lines only).
    #[arg(long, requires = "from")]
    follow: bool,

    /// Kafka brokers, to read the sightings topic instead of a file.
    #[arg(
        long,
        value_name = "B",
        conflicts_with = "from",
        requires = "sightings_topic"
    )]
    brokers: Option<String>,

    /// The sightings topic (with --brokers).
    #[arg(long, value_name = "T", requires = "brokers")]
    sightings_topic: Option<String>,

    /// Consumer group for the sightings topic; offsets are committed
    /// after each stored batch, so a restart goes on where it stopped.
    #[arg(long, value_name = "ID", default_value = "sightline-taxii")]
    group: String,

    /// Indicators to serve in the `indicators` collection (a file as
    /// `sightline match --indicators` takes).
    #[arg(long, value_name = "PATH")]
    indicators: Option<PathBuf>,

    /// Name of the API root, served at /taxii2/NAME/.
    #[arg(long, value_name = "NAME", default_value = "sightline")]
    api_root: String,

    /// HTTP Basic user name (reads every collection).
    #[arg(long, value_name = "U", requires = "password")]
    user: Option<String>,

    /// HTTP Basic password (or SIGHTLINE_TAXII_PASSWORD, which keeps it
    /// out of the process list).
    #[arg(
        long,
        value_name = "P",
        requires = "user",
        env = "SIGHTLINE_TAXII_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,

    /// Bearer token that reads every collection; may be repeated (or
    /// SIGHTLINE_TAXII_TOKENS, comma-separated).
    #[arg(
        long,
        value_name = "T",
        env = "SIGHTLINE_TAXII_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    token: Vec<String>,

    /// Bearer token that reads one collection (its alias or id); may be
    /// repeated.
    #[arg(long, value_name = "COLLECTION=TOKEN")]
    token_for: Vec<String>,

    /// PEM certificate chain, to serve HTTPS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Runs `sightline taxii`.
///
/// # Errors
///
/// Fails when the command cannot run: bad options, unreachable or
/// refusing server, unwritable output, unusable database.
pub fn run(args: &TaxiiArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match &args.command {
        TaxiiCommand::Discover(args) => runtime.block_on(discover(args)),
        TaxiiCommand::Pull(args) => runtime.block_on(pull(args)),
        TaxiiCommand::Serve(args) => runtime.block_on(serve(args)),
    }
}

async fn discover(args: &DiscoverArgs) -> anyhow::Result<ExitCode> {
    let client = args.connect.client()?;
    let server = client.discover(&args.url).await?;
    println!("server: {}", server.title);
    for root in &server.roots {
        println!("api root: {} ({})", root.url, root.title);
        match &root.collections {
            Ok(collections) if collections.is_empty() => println!("  no collections"),
            Ok(collections) => {
                for c in collections {
                    let yes = |b: bool| if b { "yes" } else { "no" };
                    println!(
                        "  collection {}  read: {}  write: {}  {}",
                        c.id,
                        yes(c.can_read),
                        yes(c.can_write),
                        c.title
                    );
                }
            }
            Err(e) => println!("  collections not readable: {e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn pull(args: &PullArgs) -> anyhow::Result<ExitCode> {
    let mut sink: Box<dyn IndicatorSink> = match (&args.output, &args.brokers) {
        (Some(path), _) => Box::new(JsonLinesFile::append(path)?),
        (None, Some(brokers)) => {
            let topic = args
                .indicators_topic
                .as_deref()
                .unwrap_or("stix.indicators");
            Box::new(KafkaSink::new(brokers, topic)?)
        }
        (None, None) => bail!("give --output FILE or --brokers B --indicators-topic T"),
    };
    let client = args.connect.client()?;
    let request = PullRequest {
        api_root: args.url.clone(),
        collection: args.collection.clone(),
        limit: usize::try_from(args.limit).unwrap_or(usize::MAX),
        types: args
            .types
            .iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect(),
    };
    let mut checkpoint = match &args.checkpoint {
        Some(path) => Checkpoint::load(path)?,
        None => Checkpoint::default(),
    };
    client.check_collection(&request).await?;

    let interval = Duration::from_secs(args.interval.max(1));
    loop {
        let position = checkpoint.position(&request.api_root, &request.collection);
        let mut save = |position: &crate::taxii::checkpoint::Position| {
            checkpoint.set(&request.api_root, &request.collection, position.clone());
            match &args.checkpoint {
                Some(path) => checkpoint.save(path).map_err(ClientError::from),
                None => Ok(()),
            }
        };
        match client
            .pull(&request, position, sink.as_mut(), &mut save)
            .await
        {
            Ok(report) => eprintln!(
                "{} new objects from {} page(s) of collection {} ({} already taken, {} dropped)",
                report.written, report.pages, request.collection, report.duplicates, report.dropped
            ),
            Err(e) if args.once || e.is_permanent() => return Err(e.into()),
            Err(e) => eprintln!("warning: {e}; trying again in {}s", interval.as_secs()),
        }
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown_signal() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn auth_config(args: &ServeArgs) -> anyhow::Result<AuthConfig> {
    let mut auth = AuthConfig::default();
    if let (Some(user), Some(password)) = (&args.user, &args.password) {
        auth = auth.with_basic(user.clone(), password.clone());
    }
    for token in &args.token {
        auth = auth.with_token(token.clone(), Scope::All);
    }
    for entry in &args.token_for {
        let Some((name, token)) = entry.split_once('=') else {
            bail!("--token-for {entry:?}: expected COLLECTION=TOKEN");
        };
        let Some(collection) = Collection::find(name) else {
            bail!("--token-for: no collection {name:?} (sightings or indicators)");
        };
        if token.is_empty() {
            bail!("--token-for {name}: the token is empty");
        }
        auth = auth.with_token(token.to_string(), Scope::Only(collection));
    }
    Ok(auth)
}

fn report_ingest(name: &Path, report: &IngestReport) {
    eprintln!(
        "{}: {} objects stored, {} already stored, {} refused, {} unreadable, {} skipped",
        name.display(),
        report.stored.added,
        report.stored.duplicates,
        report.stored.refused,
        report.unreadable,
        report.skipped
    );
}

async fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let valid_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if args.api_root.is_empty() || !args.api_root.chars().all(valid_name) {
        bail!(
            "--api-root {:?}: use letters, digits, '-' and '_'",
            args.api_root
        );
    }
    let auth = auth_config(args)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            tls::server_config(cert, key)?,
        ))),
        _ => None,
    };

    // Files are loaded before the port opens, so the first client sees
    // them; standard input and followed files are read while serving.
    let mut store = Store::open(&args.db)?;
    if let Some(path) = &args.indicators {
        let report = ingest::load(&mut store, path, Keep::Indicators)?;
        report_ingest(path, &report);
    }
    let stdin = args.from.as_ref().is_some_and(|p| p.as_os_str() == "-");
    if args.follow && stdin {
        bail!("--follow needs a file; standard input is read until it ends anyway");
    }
    let reads_later = args.follow || stdin;
    if let Some(path) = args.from.as_ref().filter(|_| !reads_later) {
        let report = ingest::load(&mut store, path, Keep::All)?;
        report_ingest(path, &report);
    }
    let mut collections = vec![Collection::Sightings];
    if args.indicators.is_some() || store.count(Collection::Indicators)? > 0 {
        collections.push(Collection::Indicators);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let topic = args.brokers.clone().zip(args.sightings_topic.clone());
    let reader = match args.from.clone().filter(|_| reads_later) {
        None if topic.is_some() => {
            let (brokers, topic) = topic.unwrap_or_default();
            let mut writer = Store::open(&args.db)?;
            let (group, stop) = (args.group.clone(), stop.clone());
            Some(tokio::task::spawn_blocking(move || {
                match follow_topic(&mut writer, &brokers, &topic, &group, &stop) {
                    Ok(report) => report_ingest(Path::new(&topic), &report),
                    Err(e) => eprintln!("error: {e}"),
                }
            }))
        }
        Some(path) => {
            let mut writer = Store::open(&args.db)?;
            let (follow, stop) = (args.follow, stop.clone());
            Some(tokio::task::spawn_blocking(move || {
                let result = if follow {
                    ingest::follow(&mut writer, &path, Duration::from_secs(1), &stop)
                } else {
                    ingest::load(&mut writer, &path, Keep::All)
                };
                match result {
                    Ok(report) => report_ingest(&path, &report),
                    Err(e) => eprintln!("error: {e}"),
                }
            }))
        }
        None => None,
    };

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let app = server::router(
        store,
        ServerSettings {
            api_root: args.api_root.clone(),
            auth,
            collections,
        },
    );
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("listening on {scheme}://{address}/taxii2/");
    server::serve(listener, app, tls, shutdown_signal()).await?;
    stop.store(true, Ordering::Relaxed);
    if let Some(reader) = reader {
        if args.follow || args.brokers.is_some() {
            let _ = reader.await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

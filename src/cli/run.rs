//! `sightline run`: Kafka workers. Without brokers it runs the same
//! pipeline over files and standard streams, like `match`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;

use super::matching::{Format, MatchArgs};
use crate::config::{Overrides, RunConfig};

/// Arguments of `sightline run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file (TOML); see examples/sightline.toml. Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Kafka bootstrap servers (host:port,...).
    #[arg(long, value_name = "HOST:PORT,...")]
    brokers: Option<String>,

    /// Consumer group of the event topics.
    #[arg(long, value_name = "ID")]
    group: Option<String>,

    /// Topic of STIX indicators (read in full by every worker).
    #[arg(long, value_name = "TOPIC")]
    indicators_topic: Option<String>,

    /// Topic of events (replaces the config's [[events]] list).
    #[arg(long, value_name = "TOPIC")]
    events_topic: Option<String>,

    /// Format of the events: auto, stix, ecs, ocsf, zeek, suricata.
    #[arg(long, value_enum)]
    format: Option<Format>,

    /// A mapping file (TOML) for a log format of your own.
    #[arg(long, value_name = "FILE")]
    mapping: Option<PathBuf>,

    /// Topic the sightings and their evidence objects are written to.
    #[arg(long, value_name = "TOPIC")]
    sightings_topic: Option<String>,

    /// Topic of messages that could not be used.
    #[arg(long, value_name = "TOPIC")]
    dead_letter_topic: Option<String>,

    /// Address of /metrics, /health and /ready (IP:PORT).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,

    /// Name of the sensor identity.
    #[arg(long, value_name = "NAME")]
    sensor_name: Option<String>,

    /// Aggregation window in seconds of event time (0: one sighting per
    /// hit).
    #[arg(long, value_name = "SECONDS")]
    aggregate_window: Option<u32>,

    /// Without brokers: the indicator file.
    #[arg(long, value_name = "PATH")]
    indicators: Option<PathBuf>,

    /// Without brokers: the events ("-" for standard input).
    #[arg(long, value_name = "PATH|-")]
    events: Option<PathBuf>,

    /// Without brokers: where sightings go ("-" for standard output).
    #[arg(long, short, value_name = "PATH|-", default_value = "-")]
    output: PathBuf,
}

/// Runs workers until SIGTERM, or the file pipeline until its input ends.
///
/// # Errors
///
/// On a bad configuration, or when the worker cannot start.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => RunConfig::from_file(path)?,
        None => RunConfig::default(),
    };
    config.apply_env(std::env::vars());
    let format_name = args
        .format
        .and_then(|f| clap::ValueEnum::to_possible_value(&f))
        .map(|v| v.get_name().to_string());

    let has_brokers = args.brokers.is_some() || config.kafka.brokers.is_some();
    if !has_brokers {
        return run_files(&args);
    }
    if args.indicators.is_some() || args.events.is_some() {
        bail!("--indicators and --events are for runs without brokers; the worker reads topics");
    }
    let overrides = Overrides {
        brokers: args.brokers.clone(),
        group: args.group.clone(),
        indicators_topic: args.indicators_topic.clone(),
        events_topic: args.events_topic.clone(),
        format: format_name,
        mapping: args.mapping.clone(),
        sightings_topic: args.sightings_topic.clone(),
        dead_letter_topic: args.dead_letter_topic.clone(),
        metrics_addr: args.metrics_addr.clone(),
        sensor_name: args.sensor_name.clone(),
        aggregate_window_seconds: args.aggregate_window,
    };
    let worker = config.resolve(&overrides)?;
    init_logging();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sightline")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(crate::pipeline::worker::run(worker))?;
    Ok(ExitCode::SUCCESS)
}

/// The broker-less form: the `match` pipeline over files and streams.
fn run_files(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let (Some(indicators), Some(events)) = (&args.indicators, &args.events) else {
        bail!(
            "no brokers configured: give --brokers (or a config with [kafka] brokers), \
             or --indicators PATH and --events PATH|- to run over files"
        );
    };
    let window = args.aggregate_window.unwrap_or(3600);
    let files = MatchArgs {
        indicators: indicators.clone(),
        events: events.clone(),
        format: args.format.unwrap_or(Format::Auto),
        mapping: args.mapping.clone(),
        output: args.output.clone(),
        bundle: false,
        rejects: None,
        no_aggregate: window == 0,
        aggregate_window: window,
        sensor_name: args
            .sensor_name
            .clone()
            .unwrap_or_else(|| "sightline".into()),
    };
    super::matching::run(&files)
}

/// Structured logs on standard error: `SIGHTLINE_LOG` is the filter
/// (default "info"), `SIGHTLINE_LOG_FORMAT=json` writes JSON lines.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SIGHTLINE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let json = std::env::var("SIGHTLINE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("warning: logging not set up: {e}");
    }
}

//! `sightline match`: indicators and observations from files or pipes,
//! sightings out as JSON lines. No broker needed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::matcher::{Catalog, IndicatorError, IndicatorRecord};
use crate::observe::decoder::Decoder;
use crate::observe::documents::{Documents, RawDocuments};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::stix::indicator::{IndicatorUpdate, document_objects, read_indicator};
use crate::stix::sighting::bundle;

/// Input formats of events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Detect per document: STIX, Suricata, Zeek, OCSF, ECS (and the
    /// --mapping format, tried first).
    Auto,
    /// STIX observed-data (2.0 `objects` or 2.1 `object_refs` in bundles),
    /// as bundles, arrays or JSON lines.
    Stix,
    /// Elastic Common Schema events, JSON lines.
    Ecs,
    /// OCSF events, JSON lines.
    Ocsf,
    /// Zeek JSON logs (conn, dns, http, ssl, x509, files, smtp, notice).
    Zeek,
    /// Suricata EVE JSON (alert, flow, dns, http, tls, fileinfo, smtp).
    Suricata,
}

/// Arguments of `sightline match`.
#[derive(Debug, Args)]
pub struct MatchArgs {
    /// Indicators: a STIX bundle, a JSON array of objects, one object, or
    /// JSON lines of any of these. Objects other than indicators are
    /// ignored.
    #[arg(long, value_name = "PATH")]
    pub(super) indicators: PathBuf,

    /// Events to match ("-" for standard input).
    #[arg(long, value_name = "PATH|-")]
    pub(super) events: PathBuf,

    /// Format of the events.
    #[arg(long, value_enum, default_value = "auto")]
    pub(super) format: Format,

    /// A mapping file (TOML) for a log format of your own; see
    /// src/observe/MAPPINGS.md. Used alone unless --format is auto, where
    /// it is tried before the built-in formats.
    #[arg(long, value_name = "FILE")]
    pub(super) mapping: Option<PathBuf>,

    /// Where to write sightings ("-" for standard output).
    #[arg(long, short, value_name = "PATH|-", default_value = "-")]
    pub(super) output: PathBuf,

    /// Write one STIX bundle at the end instead of one object per line
    /// (holds every output object in memory until then).
    #[arg(long)]
    pub(super) bundle: bool,

    /// Write refused input lines to FILE, as JSON lines with the line
    /// number, the reason and the original text.
    #[arg(long, value_name = "FILE")]
    pub(super) rejects: Option<PathBuf>,

    /// Write one sighting per hit instead of folding repeated hits of one
    /// indicator on one observable into one sighting with a count.
    #[arg(long)]
    pub(super) no_aggregate: bool,

    /// Window, in seconds of event time, over which repeated hits are
    /// folded into one sighting.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub(super) aggregate_window: u32,

    /// Name of the sensor identity that sightings name as where they were
    /// sighted.
    #[arg(long, value_name = "NAME", default_value = "sightline")]
    pub(super) sensor_name: String,
}

/// Output buffer size: large writes keep system calls rare when most
/// events match (a back-test with broad indicators).
const OUTPUT_BUFFER_BYTES: usize = 1 << 18;

/// Where output objects go: JSON lines as they come, or one bundle.
struct Sink {
    out: Box<dyn Write>,
    bundled: Option<Vec<serde_json::Value>>,
    /// One line, serialised here first so that the output sees one write
    /// per object rather than one per JSON token.
    line: Vec<u8>,
}

impl Sink {
    /// Writes `object` (or keeps it for the bundle).
    fn write(&mut self, object: serde_json::Value) -> io::Result<()> {
        match &mut self.bundled {
            Some(all) => all.push(object),
            None => {
                self.line.clear();
                serde_json::to_writer(&mut self.line, &object)?;
                self.line.push(b'\n');
                self.out.write_all(&self.line)?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        if let Some(all) = self.bundled.take() {
            serde_json::to_writer(&mut self.out, &bundle(all))?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }
}

/// Loads indicators, matches every event, writes sightings.
///
/// # Errors
///
/// Fails when an input cannot be opened, when no indicator is usable, or
/// when the output cannot be written.
pub fn run(args: &MatchArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let catalog = load_indicators(&args.indicators)?;
    crate::memory::release_freed();
    let snapshot = catalog.snapshot();

    // A progress bar only for a file, and only on a terminal.
    let mut progress = ProgressBar::hidden();
    let input: Box<dyn BufRead> = if args.events.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.events)
            .with_context(|| format!("cannot open events {}", args.events.display()))?;
        if io::stderr().is_terminal() {
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            progress = ProgressBar::new(size).with_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        }
        Box::new(BufReader::with_capacity(1 << 16, progress.wrap_read(file)))
    };
    let out: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(BufWriter::with_capacity(
            OUTPUT_BUFFER_BYTES,
            io::stdout().lock(),
        ))
    } else {
        let file = File::create(&args.output)
            .with_context(|| format!("cannot create {}", args.output.display()))?;
        Box::new(BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, file))
    };
    let mut rejects: Option<BufWriter<File>> = match &args.rejects {
        Some(path) => {
            Some(BufWriter::new(File::create(path).with_context(|| {
                format!("cannot create {}", path.display())
            })?))
        }
        None => None,
    };

    let config = PipelineConfig {
        sensor_name: args.sensor_name.clone(),
        aggregate_window_nanos: (!args.no_aggregate)
            .then(|| i128::from(args.aggregate_window) * 1_000_000_000),
        ..PipelineConfig::default()
    };
    let mut pipeline = Pipeline::new(decoder_for(args)?, &config);
    let mut sink = Sink {
        out,
        bundled: args.bundle.then(Vec::new),
        line: Vec::new(),
    };
    let name = if args.events.as_os_str() == "-" {
        "<stdin>".to_string()
    } else {
        args.events.display().to_string()
    };
    let mut unreadable = 0u64;
    let mut objects = Vec::new();
    for document in RawDocuments::new(input) {
        let (line, text) = match document {
            Ok(found) => found,
            Err(e) => {
                unreadable += 1;
                progress.suspend(|| eprintln!("warning: {name}: {e}"));
                reject(&mut rejects, e.line, &e.reason, &e.text)?;
                continue;
            }
        };
        objects.clear();
        for e in pipeline.process(&snapshot, &text, &mut objects) {
            progress.suspend(|| eprintln!("warning: {name}: line {line}: {e}"));
            reject(&mut rejects, line, &e.to_string(), &text)?;
        }
        for object in objects.drain(..) {
            sink.write(object)?;
        }
    }
    progress.finish_and_clear();
    sink.finish()?;
    if let Some(mut file) = rejects {
        file.flush()?;
    }

    let stats = pipeline.stats();
    let formats: Vec<String> = stats
        .observations
        .iter()
        .map(|(label, n)| format!("{label}: {n}"))
        .collect();
    if !formats.is_empty() {
        eprintln!("observations by format: {}", formats.join(", "));
    }
    let observations: u64 = stats.observations.values().sum();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{observations} observations matched against {} indicators: {} matches, {} sighting \
         objects written, {} rejected inputs ({seconds:.1}s, {:.0} observations/s)",
        snapshot.len(),
        stats.matches,
        stats.sightings_written,
        stats.rejected + unreadable,
        observations as f64 / seconds.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes one refused input to the reject file, as a JSON line with its
/// line number, the reason and the original text.
fn reject(
    file: &mut Option<BufWriter<File>>,
    line: usize,
    reason: &str,
    text: &str,
) -> io::Result<()> {
    if let Some(file) = file {
        let record = serde_json::json!({"line": line, "reason": reason, "text": text.trim_end()});
        serde_json::to_writer(&mut *file, &record)?;
        file.write_all(b"\n")?;
    }
    Ok(())
}

/// The decoder the arguments ask for.
fn decoder_for(args: &MatchArgs) -> anyhow::Result<Decoder> {
    let format = args
        .format
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_else(|| "auto".into());
    super::decoder(&format, args.mapping.as_deref())
}

/// Reads the indicator file into a catalog, reporting every refused
/// indicator on standard error.
fn load_indicators(path: &Path) -> anyhow::Result<Catalog> {
    let file =
        File::open(path).with_context(|| format!("cannot open indicators {}", path.display()))?;
    let name = path.display().to_string();
    let mut records: Vec<IndicatorRecord> = Vec::new();
    let mut revoked = Vec::new();
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let mut invalid = 0usize;

    for document in Documents::new(BufReader::new(file)) {
        let (line, doc) = match document {
            Ok(found) => found,
            Err(e) => {
                invalid += 1;
                eprintln!("warning: {name}: {e}");
                continue;
            }
        };
        for object in document_objects(&doc) {
            match read_indicator(object) {
                None => {}
                Some(Ok(IndicatorUpdate::Upsert(record))) => records.push(record),
                Some(Ok(IndicatorUpdate::Revoke { id, modified })) => revoked.push((id, modified)),
                Some(Ok(IndicatorUpdate::Skipped { reason, .. })) => {
                    *skipped.entry(reason).or_default() += 1
                }
                Some(Err(e)) => {
                    invalid += 1;
                    eprintln!("warning: {name}: line {line}: {e}");
                }
            }
        }
    }

    let mut catalog = Catalog::new();
    for (id, modified) in &revoked {
        catalog.revoke(id, *modified);
    }
    let offered = records.len();
    let errors = catalog.load(records);
    for e in &errors {
        if let IndicatorError::InvalidPattern { id, error } = e {
            eprintln!("warning: {name}: indicator {id}: invalid pattern: {error}");
        } else {
            eprintln!("warning: {name}: {e}");
        }
    }
    for (reason, count) in &skipped {
        eprintln!("note: {name}: {count} indicator(s) skipped: {reason}");
    }
    let too_large = errors
        .iter()
        .filter(|e| matches!(e, IndicatorError::TooLarge { .. }))
        .count();
    // Refusals on a size limit are rare: named only when there are some.
    let too_large_note = match too_large {
        0 => String::new(),
        n => format!("{n} too large, "),
    };
    let loaded = catalog.len();
    eprintln!(
        "{loaded} indicators loaded from {name} ({} invalid, {too_large_note}{} revoked, {} \
         skipped)",
        invalid + errors.len() - too_large,
        revoked.len(),
        skipped.values().sum::<usize>()
    );
    if loaded == 0 {
        bail!("{name}: no usable indicator ({offered} offered)");
    }
    Ok(catalog)
}

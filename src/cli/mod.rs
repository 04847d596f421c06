//! The `sightline` command line: one file per subcommand.

mod check;
mod matching;
mod run;
mod taxii;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::observe::decoder::Decoder;
use crate::observe::mapping::Mapping;

use clap::{Parser, Subcommand};

/// Streaming STIX 2.1 threat-intelligence matcher.
#[derive(Debug, Parser)]
#[command(name = "sightline", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate STIX 2.1 patterns.
    Check(check::CheckArgs),
    /// Match events from files or pipes against indicators; write
    /// sightings.
    Match(matching::MatchArgs),
    /// Kafka workers: indicators and events from topics, sightings to a
    /// topic (or files, without brokers).
    Run(run::RunArgs),
    /// TAXII 2.1: pull indicators from a server, serve sightings.
    Taxii(taxii::TaxiiArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Match(args) => matching::run(&args),
        Command::Run(args) => run::run(args),
        Command::Taxii(args) => taxii::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The decoder of a format name, with the user's mapping file if given.
///
/// # Errors
///
/// When the mapping file cannot be read or is invalid, or the format is
/// unknown.
pub fn decoder(format: &str, mapping: Option<&Path>) -> anyhow::Result<Decoder> {
    let user = match mapping {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read mapping {}", path.display()))?;
            Some(Mapping::from_toml(&path.display().to_string(), &text)?)
        }
        None => None,
    };
    Ok(Decoder::for_format(format, user)?)
}

//! The `sightline` command line: one file per subcommand.

mod check;
mod matching;
mod taxii;

use std::process::ExitCode;

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
    /// TAXII 2.1: pull indicators from a server, serve sightings.
    Taxii(taxii::TaxiiArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Match(args) => matching::run(&args),
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

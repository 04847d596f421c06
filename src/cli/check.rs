//! `sightline check`: validate patterns and explain every error.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use crate::pattern;

/// Arguments of `sightline check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Patterns to check, one per argument. Without any, and without
    /// --file, patterns are read from standard input, one per line.
    patterns: Vec<String>,

    /// Read patterns from FILE, one per line ("-" for standard input).
    /// Blank lines and lines starting with '#' are skipped.
    #[arg(long, short, value_name = "FILE")]
    file: Option<PathBuf>,

    /// Print the canonical form of every valid pattern.
    #[arg(long)]
    canonical: bool,

    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

/// Where a pattern came from, for messages.
enum Origin {
    Argument(usize),
    Line(String, usize),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Argument(n) => write!(f, "argument {n}"),
            Origin::Line(name, n) => write!(f, "{name}:{n}"),
        }
    }
}

/// Checks every pattern; exit code 0 when all are valid, 1 otherwise.
///
/// # Errors
///
/// Fails when the pattern file cannot be read.
pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut inputs: Vec<(Origin, String)> = args
        .patterns
        .iter()
        .enumerate()
        .map(|(i, p)| (Origin::Argument(i + 1), p.clone()))
        .collect();

    let from_stdin = args.file.is_none() && args.patterns.is_empty();
    let file = args.file.as_ref().filter(|f| f.as_os_str() != "-");
    if let Some(path) = file {
        let reader = BufReader::new(
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        );
        inputs.extend(read_lines(reader, &path.display().to_string())?);
    } else if from_stdin || args.file.is_some() {
        inputs.extend(read_lines(io::stdin().lock(), "<stdin>")?);
    }

    let mut out = io::stdout().lock();
    let mut invalid = 0usize;
    for (origin, text) in &inputs {
        match pattern::parse(text) {
            Ok(parsed) => {
                if args.canonical {
                    writeln!(out, "{parsed}")?;
                } else if !args.quiet {
                    writeln!(out, "valid   {origin}")?;
                }
            }
            Err(e) => {
                invalid += 1;
                writeln!(out, "invalid {origin}: {e}")?;
                writeln!(out, "{}", e.render(text))?;
            }
        }
    }
    if !args.quiet {
        let total = inputs.len();
        eprintln!(
            "{total} pattern(s) checked: {} valid, {invalid} invalid",
            total - invalid
        );
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn read_lines(reader: impl BufRead, name: &str) -> anyhow::Result<Vec<(Origin, String)>> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {name} at line {}", i + 1))?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        out.push((Origin::Line(name.to_string(), i + 1), line));
    }
    Ok(out)
}

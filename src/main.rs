//! The `sightline` command: parses the command line and hands over to the
//! library.

use std::process::ExitCode;

/// mimalloc: the matching path allocates many small, short-lived objects
/// per event, where glibc's allocator spends more time than the matching.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    sightline::cli::main()
}

//! Fuzz target for the pattern parser and the canonical printer.
//!
//! Any text must get an answer from the parser rather than a panic, and any
//! text it accepts must print to a text that parses back to the same tree
//! (the round-trip promise of `sightline::pattern`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline::pattern::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pattern) = parse(text) else {
        return;
    };
    let printed = pattern.to_string();
    match parse(&printed) {
        Ok(reparsed) => assert_eq!(reparsed, pattern, "{text:?} printed as {printed:?}"),
        Err(e) => panic!("{text:?} printed as {printed:?}, which does not parse: {e}"),
    }
});

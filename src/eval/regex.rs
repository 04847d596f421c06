//! `MATCHES` and `LIKE` as regular expressions.
//!
//! STIX asks for PCRE searched with DOTALL (§9.6.1). Sightline runs the
//! `regex` crate instead: its matching time is linear in the input, so a
//! hostile pattern cannot stall a worker. Expressions that need features it
//! does not have (look-around, back-references) are rejected when the
//! pattern is parsed, never run. Text properties are matched with Unicode
//! semantics; `_bin` and `_hex` properties are matched byte by byte, without
//! the Unicode flag, as the specification requires.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use regex::RegexBuilder;
use regex::bytes::RegexBuilder as BytesRegexBuilder;

/// Most compiled expressions kept per thread; the cache is emptied when it
/// fills. Verification runs the same few expressions over and over, so a
/// simple bound works as well as an LRU here.
const CACHE_ENTRIES: usize = 4096;

/// What a cached expression was compiled as.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Flavor {
    MatchesText,
    MatchesBytes,
    Like,
}

/// A compiled expression, shared from the cache.
#[derive(Clone)]
enum Compiled {
    Matches(Arc<MatchesRegex>),
    Like(Arc<regex::Regex>),
}

thread_local! {
    /// Compiled expressions by pattern text, one slot per [`Flavor`]; an
    /// inner `None` records that the text does not compile.
    static CACHE: RefCell<HashMap<String, [Option<Option<Compiled>>; 3]>> =
        RefCell::new(HashMap::new());
}

/// Looks `pattern` up in this thread's cache, compiling it on a miss.
fn cached(flavor: Flavor, pattern: &str) -> Option<Compiled> {
    let slot = flavor as usize;
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(Some(found)) = cache.get(pattern).map(|slots| slots[slot].clone()) {
            return found;
        }
        let compiled = match flavor {
            Flavor::MatchesText => compile_matches(pattern, false)
                .ok()
                .map(|r| Compiled::Matches(Arc::new(r))),
            Flavor::MatchesBytes => compile_matches(pattern, true)
                .ok()
                .map(|r| Compiled::Matches(Arc::new(r))),
            Flavor::Like => compile_like(pattern)
                .ok()
                .map(|r| Compiled::Like(Arc::new(r))),
        };
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.entry(pattern.to_string()).or_default()[slot] = Some(compiled.clone());
        compiled
    })
}

/// The compiled `MATCHES` expression for `pattern`, from the per-thread
/// cache; `None` when it does not compile.
pub fn cached_matches(pattern: &str, binary: bool) -> Option<Arc<MatchesRegex>> {
    let flavor = if binary {
        Flavor::MatchesBytes
    } else {
        Flavor::MatchesText
    };
    match cached(flavor, pattern)? {
        Compiled::Matches(re) => Some(re),
        Compiled::Like(_) => None,
    }
}

/// The compiled `LIKE` expression for `pattern`, from the per-thread cache.
pub fn cached_like(pattern: &str) -> Option<Arc<regex::Regex>> {
    match cached(Flavor::Like, pattern)? {
        Compiled::Like(re) => Some(re),
        Compiled::Matches(_) => None,
    }
}

/// Upper bound on the compiled size of one expression, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Deepest nesting of groups and repetitions accepted in one expression.
const REGEX_NEST_LIMIT: u32 = 64;

/// A compiled `MATCHES` expression for text or for bytes.
#[derive(Clone, Debug)]
pub enum MatchesRegex {
    /// For string properties.
    Text(regex::Regex),
    /// For binary (`_bin`, `_hex`) properties.
    Bytes(regex::bytes::Regex),
}

impl MatchesRegex {
    /// True when the expression is found anywhere in `text`.
    pub fn is_match_text(&self, text: &str) -> bool {
        match self {
            MatchesRegex::Text(re) => re.is_match(text),
            MatchesRegex::Bytes(re) => re.is_match(text.as_bytes()),
        }
    }

    /// True when the expression is found anywhere in `bytes`.
    pub fn is_match_bytes(&self, bytes: &[u8]) -> bool {
        match self {
            MatchesRegex::Text(re) => std::str::from_utf8(bytes).is_ok_and(|t| re.is_match(t)),
            MatchesRegex::Bytes(re) => re.is_match(bytes),
        }
    }
}

/// Compiles a `MATCHES` operand: unanchored search, `.` matching newlines.
///
/// # Errors
///
/// Returns the engine's explanation when the expression does not compile
/// or is too large.
pub fn compile_matches(pattern: &str, binary: bool) -> Result<MatchesRegex, String> {
    if binary {
        BytesRegexBuilder::new(pattern)
            .unicode(false)
            .dot_matches_new_line(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
            .map(MatchesRegex::Bytes)
            .map_err(|e| e.to_string())
    } else {
        let normalized = super::nfc(pattern);
        RegexBuilder::new(&normalized)
            .dot_matches_new_line(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
            .map(MatchesRegex::Text)
            .map_err(|e| e.to_string())
    }
}

/// Compiles a `LIKE` operand into an anchored expression: `%` is any run of
/// characters, `_` any one character, everything else literal.
///
/// # Errors
///
/// Returns the engine's explanation when the result is too large.
pub fn compile_like(pattern: &str) -> Result<regex::Regex, String> {
    let normalized = super::nfc(pattern);
    let mut re = String::with_capacity(normalized.len() + 8);
    re.push_str(r"\A");
    let mut literal = String::new();
    for c in normalized.chars() {
        match c {
            '%' | '_' => {
                re.push_str(&regex::escape(&literal));
                literal.clear();
                re.push_str(if c == '%' { ".*" } else { "." });
            }
            _ => literal.push(c),
        }
    }
    re.push_str(&regex::escape(&literal));
    re.push_str(r"\z");
    RegexBuilder::new(&re)
        .dot_matches_new_line(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_is_an_unanchored_dotall_search() {
        let re = compile_matches("b.c", false).unwrap();
        assert!(re.is_match_text("ab\ncd"));
        assert!(!compile_matches("^b", false).unwrap().is_match_text("ab"));
    }

    #[test]
    fn unsupported_features_are_refused() {
        assert!(compile_matches("(?=a)b", false).is_err());
        assert!(compile_matches(r"(a)\1", false).is_err());
        assert!(compile_matches("(", false).is_err());
    }

    #[test]
    fn binary_matching_is_bytewise() {
        let re = compile_matches(r"\xd4\xc3\xb2\xa1", true).unwrap();
        assert!(re.is_match_bytes(&[0, 0xd4, 0xc3, 0xb2, 0xa1, 2]));
    }

    #[test]
    fn like_wildcards() {
        let re = compile_like("C:\\Windows\\%\\foo_.exe").unwrap();
        assert!(re.is_match("C:\\Windows\\System32\\foo1.exe"));
        assert!(!re.is_match("C:\\Windows\\System32\\foo.exe"));
        assert!(compile_like("a.b").unwrap().is_match("a.b"));
        assert!(!compile_like("a.b").unwrap().is_match("axb"));
        assert!(compile_like("%").unwrap().is_match("line\nbreak"));
    }
}

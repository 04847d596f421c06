//! Reading JSON documents from files and pipes.
//!
//! Input may be JSON lines (one document per line), one pretty-printed
//! document over many lines, or several of those in a row. The reader
//! tracks bracket depth outside strings, so a document spanning lines is
//! parsed once, when it closes; a bad line is reported with its number and
//! reading goes on with the next one.

use std::io::BufRead;

use serde_json::Value;

/// Largest document accepted, in bytes (64 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 64 << 20;

/// A line or document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct DocumentError {
    /// One-based line where the document starts.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
    /// The raw text, for reject files (cut to 64 KiB).
    pub text: String,
}

/// Iterator over the raw text of the JSON documents of a reader, each with
/// the line it starts on. The text is not parsed: log decoders read only
/// the fields they need from it.
pub struct RawDocuments<R> {
    reader: R,
    line_no: usize,
    buffer: String,
    buffer_start: usize,
    /// A line that starts the next document, read while finishing a broken
    /// one.
    pending: Option<String>,
    depth: i64,
    in_string: bool,
    escaped: bool,
    done: bool,
}

impl<R: BufRead> RawDocuments<R> {
    /// Reads documents from `reader`.
    pub fn new(reader: R) -> RawDocuments<R> {
        RawDocuments {
            reader,
            line_no: 0,
            buffer: String::new(),
            buffer_start: 0,
            pending: None,
            depth: 0,
            in_string: false,
            escaped: false,
            done: false,
        }
    }

    fn reset(&mut self) {
        self.buffer.clear();
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }

    /// Updates the bracket depth with one more line.
    fn scan(&mut self, line: &str) {
        for b in line.bytes() {
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => self.depth -= 1,
                    _ => {}
                }
            }
        }
    }

    fn error(&mut self, reason: String) -> DocumentError {
        let mut text = std::mem::take(&mut self.buffer);
        let mut cut = text.len().min(64 << 10);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        let line = self.buffer_start;
        self.reset();
        DocumentError { line, reason, text }
    }

    fn take(&mut self) -> (usize, String) {
        let start = self.buffer_start;
        let text = std::mem::take(&mut self.buffer);
        self.reset();
        (start, text)
    }

    fn read_line(&mut self) -> Result<Option<String>, DocumentError> {
        if let Some(line) = self.pending.take() {
            return Ok(Some(line));
        }
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => {
                self.line_no += 1;
                Ok(Some(line))
            }
            Err(e) => {
                self.buffer_start = self.line_no + 1;
                Err(self.error(format!("read error: {e}")))
            }
        }
    }
}

impl<R: BufRead> Iterator for RawDocuments<R> {
    type Item = Result<(usize, String), DocumentError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let line = match self.read_line() {
                Ok(Some(line)) => line,
                Ok(None) => {
                    self.done = true;
                    break;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if self.buffer.is_empty() {
                if line.trim().is_empty() {
                    continue;
                }
                self.buffer_start = self.line_no;
            } else if line.starts_with('{') {
                // A document opening at the start of a line while another is
                // still open: the open one was cut short (a truncated JSON
                // line). Report it and start over with this line.
                self.pending = Some(line);
                let reason = "incomplete JSON document".to_string();
                return Some(Err(self.error(reason)));
            }
            let first_line = self.buffer.is_empty();
            self.scan(&line);
            self.buffer.push_str(&line);
            if first_line && self.depth > 0 {
                // A line that opens a document without closing it: either the
                // start of a multi-line document, or a broken JSON line.
                let probe = serde_json::from_str::<serde::de::IgnoredAny>(&line);
                if let Err(e) = probe.map(drop) {
                    if !e.is_eof() {
                        return Some(Err(self.error(format!("invalid JSON: {e}"))));
                    }
                }
            }
            if self.buffer.len() > MAX_DOCUMENT_BYTES {
                let reason = format!("document exceeds {MAX_DOCUMENT_BYTES} bytes");
                return Some(Err(self.error(reason)));
            }
            if self.depth > 0 || self.in_string {
                continue;
            }
            return Some(Ok(self.take()));
        }
        if !self.buffer.trim().is_empty() {
            let reason = "incomplete JSON document at the end of the input".to_string();
            return Some(Err(self.error(reason)));
        }
        None
    }
}

/// Iterator over the parsed JSON documents of a reader.
pub struct Documents<R> {
    raw: RawDocuments<R>,
}

impl<R: BufRead> Documents<R> {
    /// Reads documents from `reader`.
    pub fn new(reader: R) -> Documents<R> {
        Documents {
            raw: RawDocuments::new(reader),
        }
    }
}

impl<R: BufRead> Iterator for Documents<R> {
    type Item = Result<(usize, Value), DocumentError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (line, text) = match self.raw.next()? {
            Ok(found) => found,
            Err(e) => return Some(Err(e)),
        };
        Some(match serde_json::from_str::<Value>(&text) {
            Ok(value) => Ok((line, value)),
            Err(e) => Err(DocumentError {
                line,
                reason: format!("invalid JSON: {e}"),
                text,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<Result<usize, usize>> {
        Documents::new(text.as_bytes())
            .map(|r| r.map(|(l, _)| l).map_err(|e| e.line))
            .collect()
    }

    #[test]
    fn json_lines_with_a_bad_line() {
        assert_eq!(
            read("{\"a\":1}\n{oops\n\n[1,2]\n"),
            vec![Ok(1), Err(2), Ok(4)]
        );
    }

    #[test]
    fn pretty_documents_and_brackets_in_strings() {
        let text = "{\n  \"a\": \"}{]\\\"[\",\n  \"b\": [1,\n 2]\n}\n{\"c\": 3}\n";
        assert_eq!(read(text), vec![Ok(1), Ok(6)]);
    }

    #[test]
    fn truncated_line_does_not_swallow_the_next() {
        assert_eq!(read("{\"a\": [1,\n{\"b\": 2}\n"), vec![Err(1), Ok(2)]);
    }

    #[test]
    fn unterminated_document_is_reported() {
        assert_eq!(read("{\"a\":\n[1,\n"), vec![Err(1)]);
        assert_eq!(read("{\"a\":\n[1,\n"), vec![Err(1)]);
    }
}

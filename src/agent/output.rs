//! What a worker printed: the response text, the output tail, the handoff report.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The response text kept in the row is capped at 1 MiB; the log keeps everything.
pub const MAX_RESPONSE_BYTES: u64 = 1 << 20;
/// `outputTail`: at most 20 lines and 4 KiB.
pub const TAIL_LINES: usize = 20;
pub const TAIL_BYTES: u64 = 4096;

/// The last `max` bytes of a file, as text (lossy; a cut UTF-8 sequence at the start is dropped).
pub fn read_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::with_capacity((len - start) as usize);
    if f.take(max).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        // Drop the partial first line.
        match text.find('\n') {
            Some(i) => text[i + 1..].to_string(),
            None => text,
        }
    } else {
        text
    }
}

/// The last lines of stdout and stderr together: at most 20 lines and 4 KiB.
pub fn tail_of_files(out: &Path, err: &Path) -> String {
    let o = read_tail(out, TAIL_BYTES);
    let e = read_tail(err, TAIL_BYTES);
    let mut lines: Vec<&str> = o.lines().collect();
    if !e.trim().is_empty() {
        lines.extend(e.lines());
    }
    let from = lines.len().saturating_sub(TAIL_LINES);
    let mut joined = lines[from..].join("\n");
    while joined.len() as u64 > TAIL_BYTES {
        match joined.find('\n') {
            Some(i) => joined.drain(..=i),
            None => {
                let cut = joined.len() - TAIL_BYTES as usize;
                let cut = (cut..joined.len()).find(|&i| joined.is_char_boundary(i)).unwrap_or(joined.len());
                joined.drain(..cut)
            }
        };
    }
    joined
}

/// At most this many chars of a line quoted in an error.
pub const REASON_CHARS: usize = 500;

/// The last non-empty line of `text`, trimmed and capped at [`REASON_CHARS`]: what a failing
/// program said last, for the error message.
pub fn last_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let (cut, more) = crate::job::cap_chars(line, REASON_CHARS);
    Some(if more { format!("{cut}...") } else { cut.to_string() })
}

/// The response text from a worker's stdout log: its trimmed text, capped at 1 MiB (on a char
/// boundary). Returns the text and its length in chars.
pub fn read_response(out: &Path) -> (String, i64) {
    let mut buf = Vec::new();
    if let Ok(f) = File::open(out) {
        let _ = f.take(MAX_RESPONSE_BYTES).read_to_end(&mut buf);
    }
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if buf.len() as u64 == MAX_RESPONSE_BYTES {
        // A multi-byte char cut by the cap shows as a replacement char at the end: drop it.
        if text.ends_with('\u{FFFD}') {
            text.pop();
        }
    }
    let text = text.trim().to_string();
    let chars = text.chars().count() as i64;
    (text, chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_twenty_lines_of_both_streams() {
        let d = tempfile::tempdir().unwrap();
        let (o, e) = (d.path().join("1.out"), d.path().join("1.err"));
        let lines: Vec<String> = (0..30).map(|i| format!("out {i}")).collect();
        std::fs::write(&o, lines.join("\n")).unwrap();
        std::fs::write(&e, "err a\nerr b\n").unwrap();
        let t = tail_of_files(&o, &e);
        assert_eq!(t.lines().count(), 20);
        assert!(t.ends_with("err a\nerr b"));
        assert!(t.starts_with("out 12"));
    }

    #[test]
    fn tail_is_bounded_in_bytes() {
        let d = tempfile::tempdir().unwrap();
        let o = d.path().join("1.out");
        std::fs::write(&o, "é".repeat(10_000)).unwrap();
        let t = tail_of_files(&o, &d.path().join("none"));
        assert!(t.len() as u64 <= TAIL_BYTES && !t.is_empty());
    }

    #[test]
    fn response_is_trimmed_and_counted_in_chars() {
        let d = tempfile::tempdir().unwrap();
        let o = d.path().join("1.out");
        std::fs::write(&o, "  héllo \n").unwrap();
        assert_eq!(read_response(&o), ("héllo".to_string(), 5));
        assert_eq!(read_response(&d.path().join("missing")), (String::new(), 0));
    }
}

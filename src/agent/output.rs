//! What a worker printed: the response text, what its output spec finds in its log, the output
//! tail, the handoff report.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::agent::extract::{self, Extracted, Format, OutputSpec};
use crate::agent::stream;

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

/// Apply an output spec to a worker's stdout log. JSON Lines are read whole, line by line
/// (each line bounded by [`stream::MAX_LINE`]): a streaming CLI's answer comes last, after
/// output that may be far longer than the response cap. Other formats read the capped text.
pub fn extract_log(spec: &OutputSpec, out: &Path) -> Extracted {
    if spec.format != Format::Jsonl {
        return extract::extract(spec, &read_response(out).0);
    }
    let mut reading = extract::Extraction::new(spec);
    let Ok(mut f) = File::open(out) else { return reading.finish() };
    let mut lines = stream::Lines::default();
    let mut buf = vec![0u8; 64 << 10];
    let mut each = |line: &[u8]| {
        if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(line.trim_ascii()) {
            reading.push(&doc);
        }
    };
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => lines.feed(&buf[..n], &mut each),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    lines.finish(&mut each);
    reading.finish()
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

    #[test]
    fn json_lines_are_read_past_the_response_cap() {
        let d = tempfile::tempdir().unwrap();
        let o = d.path().join("1.out");
        let spec =
            crate::agent::preset::get(crate::agent::preset::Name::Claude, crate::agent::preset::Access::FULL).output;
        // Three MiB of tool output, one line over the line bound, then the result line.
        let noise = format!("{{\"type\":\"user\",\"content\":\"{}\"}}\n", "x".repeat(1000));
        let mut text = noise.repeat(3 << 10);
        text.push_str(&format!("{{\"type\":\"user\",\"content\":\"{}\"}}\n", "y".repeat(stream::MAX_LINE)));
        text.push_str(
            r#"{"type":"result","is_error":false,"result":"the end","usage":{"input_tokens":3,"output_tokens":1}}"#,
        );
        std::fs::write(&o, &text).unwrap();
        let e = extract_log(&spec, &o);
        assert_eq!(
            (e.text.as_deref(), e.tokens.total),
            (Some("the end"), Some(4)),
            "the last line, without its newline"
        );
        assert!(!extract_log(&spec, &d.path().join("missing")).shaped);
    }
}

//! A running attempt's activity on its way to `job_events`: queued as it arrives (an ACP turn's
//! updates, a oneshot CLI's streamed JSON lines), written in batches by the attempt's owner.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::agent::stream;
use crate::state::EventKind;
use crate::store;
use crate::store::events::{EventCaps, NewEvent};

/// How often a running attempt's queued events are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Payloads longer than this keep only their identifying fields.
const MAX_PAYLOAD: usize = 4096;
/// Text of one event (a run of chunks is cut here; the answer itself is kept whole elsewhere).
pub const MAX_EVENT_TEXT: usize = 2000;

/// The update as JSON, or for a long one its scalar fields (strings cut) and `"truncated": true`.
pub fn bounded_payload(v: &Value) -> String {
    let full = v.to_string();
    if full.len() <= MAX_PAYLOAD {
        return full;
    }
    let mut keep = Map::new();
    if let Value::Object(m) = v {
        for (k, val) in m {
            match val {
                Value::String(s) => {
                    keep.insert(k.clone(), Value::String(cut(s, 200)));
                }
                Value::Number(_) | Value::Bool(_) => {
                    keep.insert(k.clone(), val.clone());
                }
                _ => {}
            }
        }
    }
    keep.insert("truncated".into(), Value::Bool(true));
    keep.insert("bytes".into(), json!(full.len()));
    Value::Object(keep).to_string()
}

/// The first `max` chars of `s`, with an ellipsis when cut.
pub fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

/// A running attempt's events not yet written, and how to write them.
pub struct EventLog<'a> {
    writer: store::events::Writer<'a>,
    caps: EventCaps,
    pending: Vec<store::events::NewEvent>,
}

impl<'a> EventLog<'a> {
    pub fn new(writer: store::events::Writer<'a>, caps: EventCaps) -> EventLog<'a> {
        EventLog { writer, caps, pending: Vec::new() }
    }

    /// Queue an event; a message or thought chunk joins the one before it when that is of its
    /// kind and not yet written.
    pub fn push(&mut self, ev: store::events::NewEvent) {
        if let Some(last) = self.pending.last_mut()
            && last.kind == ev.kind
            && matches!(ev.kind, EventKind::Message | EventKind::Thought)
            && last.text.len() + ev.text.len() <= MAX_EVENT_TEXT
        {
            last.text.push_str(&ev.text);
            return;
        }
        self.pending.push(ev);
    }

    /// Write what is queued (kept for the next try when the write fails, up to a bound).
    pub async fn flush(&mut self, store: &store::Store) {
        if self.pending.is_empty() {
            return;
        }
        let res =
            async { store::events::append(&mut store.conn().await?, self.writer, &self.pending, self.caps).await }
                .await;
        match res {
            Ok(_) => self.pending.clear(),
            Err(e) => {
                tracing::warn!(task_id = %self.writer.job_id, "could not write activity events: {e}");
                if self.pending.len() > 10_000 {
                    self.pending.clear();
                }
            }
        }
    }
}

/// At most this much of a growing log is read at a time (the rest waits for the next read).
const READ_BUDGET: u64 = 8 << 20;

/// A oneshot worker's stdout log, followed as it grows: the bytes appended since the last read,
/// cut into lines, each JSON line read in the runner's stream dialect (other lines skipped).
/// Blocking file reads: call it off the runtime's threads.
#[derive(Debug)]
pub struct Follow {
    path: PathBuf,
    file: Option<std::fs::File>,
    offset: u64,
    lines: stream::Lines,
    reader: stream::Reader,
}

impl Follow {
    pub fn new(path: PathBuf, reader: stream::Reader) -> Follow {
        Follow { path, file: None, offset: 0, lines: stream::Lines::default(), reader }
    }

    /// The events of the lines completed since the last read (at most a budget of bytes).
    pub fn read(&mut self, now: i64) -> Vec<NewEvent> {
        let mut events = Vec::new();
        self.read_some(now, &mut events);
        events
    }

    /// After the worker's end: the events of everything left, its last line included.
    pub fn finish(&mut self, now: i64) -> Vec<NewEvent> {
        let mut events = Vec::new();
        while self.read_some(now, &mut events) {}
        let Follow { lines, reader, .. } = self;
        lines.finish(|line| events.extend(read_line(reader, line, now)));
        events
    }

    /// Read up to the budget; true when it was full (more may be there).
    fn read_some(&mut self, now: i64, events: &mut Vec<NewEvent>) -> bool {
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        let Some(file) = self.file.as_mut() else { return false };
        let mut buf = Vec::new();
        let read = file.seek(SeekFrom::Start(self.offset)).and_then(|_| file.take(READ_BUDGET).read_to_end(&mut buf));
        if let Err(e) = read {
            tracing::debug!(path = %self.path.display(), "could not read the worker's output: {e}");
            return false;
        }
        self.offset += buf.len() as u64;
        let Follow { lines, reader, .. } = self;
        lines.feed(&buf, |line| events.extend(read_line(reader, line, now)));
        buf.len() as u64 == READ_BUDGET
    }
}

fn read_line(reader: &mut stream::Reader, line: &[u8], now: i64) -> Vec<NewEvent> {
    match serde_json::from_slice::<Value>(line.trim_ascii()) {
        Ok(v) => reader.read(&v, now),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follow_reads_what_was_appended_and_the_last_line_at_the_end() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.out");
        let mut f = Follow::new(path.clone(), stream::Reader::new(stream::Dialect::Codex, None));
        assert!(f.read(0).is_empty(), "no file yet");
        let mut out = std::fs::File::create(&path).unwrap();
        out.write_all(b"not json\n{\"type\":\"item.completed\",\"item\":{\"id\":\"a\",\"type\":\"agent_message\",\"text\":\"hi\"}}\n{\"type\":").unwrap();
        let got = f.read(5);
        assert_eq!((got.len(), got[0].text.as_str(), got[0].at_ms), (1, "hi", 5));
        assert!(f.read(6).is_empty(), "the partial line waits");
        out.write_all(b"\"turn.completed\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}").unwrap();
        assert!(f.read(7).is_empty(), "still no newline");
        let got = f.finish(8);
        assert_eq!(got.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(), ["tokens: 3 in, 1 out"]);
    }
}

//! A running attempt's activity on its way to `job_events`: queued as it arrives (an ACP turn's
//! updates, a oneshot CLI's streamed JSON lines), written in batches by the attempt's owner.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::state::EventKind;
use crate::store;
use crate::store::events::EventCaps;

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
            async { store::events::append(&mut *store.conn().await?, self.writer, &self.pending, self.caps).await }
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

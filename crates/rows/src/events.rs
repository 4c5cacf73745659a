//! Activity events' rows and arguments.

use crate::state::EventKind;

/// An event about to be written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewEvent {
    pub at_ms: i64,
    pub kind: EventKind,
    pub text: String,
    /// JSON, already bounded by the caller.
    pub payload: Option<String>,
}

/// A stored event.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: i64,
    pub attempt: i64,
    pub at_ms: i64,
    pub kind: EventKind,
    pub text: String,
    pub payload: Option<String>,
}

/// How many events a job keeps: rows and bytes of text and payload (the newest stay).
#[derive(Debug, Clone, Copy)]
pub struct EventCaps {
    pub max_events: i64,
    pub max_bytes: i64,
}

/// Which attempt writes, fenced like every write of a running job.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub job_id: &'a str,
    pub attempt: i64,
    pub owner: &'a str,
    pub epoch: i64,
}

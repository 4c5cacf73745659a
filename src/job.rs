//! Jobs: their states, their rows, and the JSON record every operation answers.

use std::path::Path;

use serde::Serialize;

pub use crate::state::{Absent, JobState, WorkerKind};
pub use baton_rows::job::{JobRow, NewJob};

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// ISO-8601 UTC with milliseconds, as every record shows times.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Parse an ISO-8601 time (RFC 3339) into ms.
pub fn parse_iso(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

/// A time as a filter gives it: ISO-8601, a date (midnight UTC), or a span before `now`
/// (`90s`, `30m`, `2h`, `7d`, `1w`).
pub fn parse_time_or_ago(s: &str, now: i64) -> Option<i64> {
    let s = s.trim();
    if let Some(t) = parse_iso(s) {
        return Some(t);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().ok().filter(|n| *n >= 0)?;
    let ms = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        _ => return None,
    };
    Some(now.saturating_sub(n.checked_mul(ms)?))
}

/// The first `max` chars of `s`, and whether anything was cut.
pub fn cap_chars(s: &str, max: usize) -> (&str, bool) {
    match s.char_indices().nth(max) {
        Some((at, _)) => (&s[..at], true),
        None => (s, false),
    }
}

/// The JSON record of a job (SPEC 4): every key always present, `null` when unset.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub id: String,
    pub worker_id: String,
    pub kind: String,
    pub message: String,
    pub status: JobState,
    pub session_id: Option<String>,
    pub requested_by: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub elapsed_ms: Option<i64>,
    pub response_text: Option<String>,
    pub response_truncated: bool,
    pub response_chars: Option<i64>,
    pub error: Option<String>,
    pub report: Option<serde_json::Value>,
    pub exit_code: Option<i64>,
    pub attempt: i64,
    pub max_attempts: i64,
    pub priority: i64,
    pub workflow_run_id: Option<String>,
    pub log_path: Option<String>,
    pub last_activity_at: Option<String>,
    pub stalled: bool,
    pub output_tail: Option<String>,
    /// What a running agent is doing, from its activity events.
    pub activity: Option<Activity>,
    pub cancel_requested: bool,
    /// Total tokens, as the agent CLI reported them.
    pub tokens: Option<i64>,
    /// Prompt tokens, cached ones included.
    pub input_tokens: Option<i64>,
    /// Generated tokens, reasoning included.
    pub output_tokens: Option<i64>,
    /// The part of `inputTokens` read from the provider's prompt cache.
    pub cached_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    /// Added by await answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
    /// Added by peek when the job is queued and no dispatcher is alive: `"none"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatcher: Option<String>,
    /// A running workflow run's current step (peek and await answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_step: Option<serde_json::Value>,
    /// A running workflow run's carry so far (peek and await answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carry: Option<String>,
    /// The git worktree it runs in: path, branch, base commit, target branch and state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<crate::worktree::Info>,
    /// Its labels (`--label k=v`), when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<serde_json::Map<String, serde_json::Value>>,
    /// The tasks it waits for (`--after`), when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    /// With `after`: it runs once they finished, whatever their outcome.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub after_any: bool,
}

/// How much live detail a record carries.
#[derive(Debug, Clone, Copy)]
pub struct RecordOptions {
    /// Cap on `responseText` chars (None: the whole text).
    pub max_response_chars: Option<usize>,
    /// Fill `elapsedMs`, `lastActivityAt`, `stalled` and `outputTail` for an unfinished job.
    pub live: bool,
    pub stall_ms: i64,
    pub now: i64,
}

/// The log file of one attempt's stdout (`.out`) or stderr (`.err`).
pub fn log_file(logs_dir: &Path, job_id: &str, attempt: i64, stream: &str) -> std::path::PathBuf {
    logs_dir.join(job_id).join(format!("{attempt}.{stream}"))
}

impl Record {
    /// Build the record of a row. `logs_dir` locates the attempt's logs.
    pub fn from_row(row: &JobRow, logs_dir: &Path, opts: RecordOptions) -> Record {
        let (response_text, truncated) = match (&row.response, opts.max_response_chars) {
            (Some(r), Some(max)) => {
                let (text, cut) = cap_chars(r, max);
                (Some(text.to_string()), cut)
            }
            (r, _) => (r.clone(), false),
        };
        // A server worker's output is its protocol, in the worker's log: no log of the task's own.
        let log = (row.attempt > 0 && !row.is_server()).then(|| log_file(logs_dir, &row.id, row.attempt, "out"));
        let running = row.state == JobState::Running;
        let mut rec = Record {
            id: row.id.clone(),
            worker_id: row.profile.clone(),
            kind: row.kind.clone(),
            message: row.task.clone(),
            status: row.state,
            session_id: row.session.clone(),
            requested_by: row.requested_by.clone(),
            created_at: iso(row.created_ms),
            started_at: row.started_ms.map(iso),
            finished_at: row.finished_ms.map(iso),
            duration_ms: match (row.started_ms, row.finished_ms) {
                (Some(s), Some(f)) => Some(f - s),
                _ => None,
            },
            elapsed_ms: None,
            response_text,
            response_truncated: truncated,
            response_chars: row.response_chars,
            error: row.error.clone(),
            report: row.report.as_deref().and_then(|r| serde_json::from_str(r).ok()),
            exit_code: row.exit_code,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            priority: row.priority,
            workflow_run_id: row.workflow_run_id.clone(),
            log_path: log.as_ref().map(|p| p.display().to_string()),
            last_activity_at: None,
            stalled: false,
            output_tail: if row.is_terminal() { row.output_tail.clone() } else { None },
            activity: None,
            cancel_requested: row.cancel_requested_ms.is_some() && !row.is_terminal(),
            tokens: row.tokens,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            cached_tokens: row.cached_tokens,
            cost_usd: row.cost_usd,
            timed_out: None,
            dispatcher: None,
            current_step: None,
            carry: None,
            worktree: None,
            labels: row.labels.as_deref().and_then(|l| serde_json::from_str(l).ok()),
            after: row.after.as_deref().and_then(|a| serde_json::from_str(a).ok()),
            after_any: row.after_any,
        };
        if opts.live && !row.is_terminal() {
            rec.elapsed_ms = Some(opts.now - row.started_ms.unwrap_or(row.created_ms));
            if running && row.attempt > 0 {
                let out = log_file(logs_dir, &row.id, row.attempt, "out");
                let err = log_file(logs_dir, &row.id, row.attempt, "err");
                let last = [&out, &err]
                    .iter()
                    .filter_map(|p| std::fs::metadata(p).ok()?.modified().ok())
                    .max()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64)
                    .or(row.started_ms);
                rec.last_activity_at = last.map(iso);
                rec.stalled = last.is_some_and(|l| opts.now - l > opts.stall_ms);
                rec.output_tail = Some(crate::agent::output::tail_of_files(&out, &err));
            }
        }
        rec
    }
}

/// What a running job's agent is doing now, summarised from its newest events.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// The newest tool call or permission ("edit \"Editing src/cli.rs\" (in_progress)"), or
    /// `thinking` / `answering` while the agent streams text after it.
    pub doing: String,
    /// Its plan's progress ("plan 2/5 done: write the tests").
    pub plan: Option<String>,
    /// The newest usage report.
    pub usage: Option<String>,
    /// Events so far (the newest event's sequence number).
    pub events: i64,
    pub last_event_at: String,
}

impl Activity {
    /// The summary of an attempt's newest event of each kind; None without events.
    pub fn of(latest: &[crate::store::events::EventRow]) -> Option<Activity> {
        use crate::state::EventKind as K;
        let newest = latest.iter().max_by_key(|e| e.seq)?;
        let of_kind = |k: &[K]| latest.iter().filter(|e| k.contains(&e.kind)).max_by_key(|e| e.seq);
        let tool = of_kind(&[K::Tool, K::ToolUpdate, K::Permission]);
        let doing = match newest.kind {
            K::Message => "answering".to_string(),
            K::Thought => "thinking".to_string(),
            K::Tool | K::ToolUpdate | K::Permission | K::Plan => newest.text.clone(),
            K::Usage | K::Other => tool.map_or_else(|| newest.kind.to_string(), |t| t.text.clone()),
        };
        Some(Activity {
            doing,
            plan: of_kind(&[K::Plan]).map(|e| e.text.clone()),
            usage: of_kind(&[K::Usage]).map(|e| e.text.clone()),
            events: newest.seq,
            last_event_at: iso(newest.at_ms),
        })
    }
}

/// A `{id, status}` answer for an id that is unknown (or forbidden).
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    pub id: String,
    pub status: Absent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_has_millis_and_z() {
        assert_eq!(iso(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(parse_iso("2026-11-18T11:06:40.123Z"), Some(1_795_000_000_123));
        assert_eq!(parse_iso("yesterday"), None);
    }

    #[test]
    fn filter_times_take_iso_dates_and_spans_ago() {
        let now = 1_795_000_000_000;
        assert_eq!(parse_time_or_ago("2026-11-18T11:06:40.123Z", now), Some(1_795_000_000_123));
        assert_eq!(
            parse_time_or_ago("2026-11-18", now),
            Some(1_795_000_000_000 - 40_000 - 6 * 60_000 - 11 * 3_600_000)
        );
        assert_eq!(parse_time_or_ago("90s", now), Some(now - 90_000));
        assert_eq!(parse_time_or_ago("2h", now), Some(now - 7_200_000));
        assert_eq!(parse_time_or_ago("7d", now), Some(now - 7 * 86_400_000));
        for bad in ["", "h", "-1h", "2x", "yesterday", "99999999999999999w"] {
            assert_eq!(parse_time_or_ago(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn cap_counts_chars_not_bytes() {
        assert_eq!(cap_chars("héllo", 2), ("hé", true));
        assert_eq!(cap_chars("hé", 2), ("hé", false));
    }
}

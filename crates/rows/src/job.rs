//! Jobs' rows: as stored, and about to be inserted.

use crate::state::{JobState, WorkerKind};

/// A `jobs` row as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub seq: i64,
    pub id: String,
    pub state: JobState,
    pub kind: String,
    pub profile: String,
    pub task: String,
    pub session: Option<String>,
    pub requested_by: String,
    pub project_dir: String,
    pub argv: String,
    pub prompt_stdin: i64,
    pub model: Option<String>,
    pub env: String,
    pub attachments: String,
    pub priority: i64,
    pub attempt: i64,
    pub max_attempts: i64,
    pub run_after_ms: i64,
    pub timeout_ms: i64,
    pub profile_limit: Option<i64>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub response: Option<String>,
    pub response_chars: Option<i64>,
    pub error: Option<String>,
    pub report: Option<String>,
    pub exit_code: Option<i64>,
    pub owner: Option<String>,
    pub epoch: Option<i64>,
    pub output_tail: Option<String>,
    pub cancel_requested_ms: Option<i64>,
    pub cancel_reason: Option<String>,
    pub workflow_run_id: Option<String>,
    pub workflow_step: Option<i64>,
    pub dedup_key: Option<String>,
    pub tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    /// JSON output spec (`extract::OutputSpec`); `None`: stdout is the response.
    pub output: Option<String>,
    /// Which kind of worker runs it.
    pub worker_kind: WorkerKind,
    /// Prompt tokens, cached ones included.
    pub input_tokens: Option<i64>,
    /// Generated tokens, reasoning included.
    pub output_tokens: Option<i64>,
    /// The part of `input_tokens` read from the provider's prompt cache.
    pub cached_tokens: Option<i64>,
    /// The profile's system prompt, for an agent worker's prompt.
    pub system_prompt: Option<String>,
    /// JSON tool policy (`agent::permission::Policy`) of an agent worker's job.
    pub permissions: Option<String>,
    /// The git worktree it runs in (the task's id, or its workflow run's).
    pub worktree_id: Option<String>,
    /// JSON object of its labels.
    pub labels: Option<String>,
    /// JSON array of the task ids it waits for (`--after`).
    pub after: Option<String>,
    /// It runs once they finished, whatever their outcome (`--after-any`).
    pub after_any: bool,
}

impl JobRow {
    pub fn is_server(&self) -> bool {
        self.worker_kind == WorkerKind::Server
    }
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }
}

/// A job about to be inserted.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub kind: String,
    pub profile: String,
    pub task: String,
    pub session: Option<String>,
    pub requested_by: String,
    pub project_dir: String,
    /// JSON array of strings: the resolved argv.
    pub argv: String,
    pub prompt_stdin: bool,
    pub model: Option<String>,
    /// JSON object: the profile's env.
    pub env: String,
    /// JSON array of absolute paths.
    pub attachments: String,
    pub priority: i64,
    pub max_attempts: i64,
    pub run_after_ms: i64,
    pub timeout_ms: i64,
    pub profile_limit: Option<i64>,
    pub created_ms: i64,
    pub dedup_key: Option<String>,
    pub workflow_run_id: Option<String>,
    pub workflow_step: Option<i64>,
    /// JSON output spec, as resolved from the requester's config.
    pub output: Option<String>,
    /// From the profile's kind.
    pub worker_kind: WorkerKind,
    pub system_prompt: Option<String>,
    /// JSON tool policy; `None` for a oneshot CLI.
    pub permissions: Option<String>,
    /// The worktree row it runs in, written in the same transaction.
    pub worktree_id: Option<String>,
    /// JSON object of its labels.
    pub labels: Option<String>,
    /// JSON array of the task ids it waits for; `None`: it is queued at once.
    pub after: Option<String>,
    pub after_any: bool,
    /// The only node that may run it (`--node`; PostgreSQL queues only).
    pub node: Option<String>,
}

//! The job statements' rows and arguments.

use crate::state::JobState;

/// Outcome of an insert that may hit the dedup key of an unfinished job.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// An unfinished job already holds this dedup key.
    Duplicate(String),
}

/// Filters for listing jobs, and their order.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub profile: Option<String>,
    pub state: Option<JobState>,
    pub session: Option<String>,
    /// (key, value): the task has the label with that value, or with any value for None.
    pub labels: Vec<(String, Option<String>)>,
    /// Created at or after / before.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// `newest` (also the default for anything else), `oldest`, `priority`, `duration`.
    pub sort: String,
    pub limit: i64,
}

/// Limits the claim applies, all in the same statement.
#[derive(Debug, Clone, Copy)]
pub struct ClaimLimits {
    /// `limits.maxConcurrency`: running jobs in the whole queue.
    pub max_running: i64,
    /// `limits.maxWorkers`: live workers in the whole queue.
    pub max_workers: i64,
    /// `limits.maxWorkersPerSession`.
    pub max_per_session: i64,
    /// How many to claim at most in this statement.
    pub batch: i64,
}

/// A oneshot worker's row, written once its process exists (the job's attempt was recorded by
/// the claim, before the spawn).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewWorker {
    pub id: String,
    pub profile: String,
    pub pid: i64,
    pub pid_start: i64,
    pub session: Option<String>,
    pub job_id: String,
    pub attempt: i64,
    pub model: Option<String>,
    pub started_ms: i64,
}

/// How a running job ended, as its owner saw it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub id: String,
    /// `succeeded`, `failed` or `canceled`.
    pub state: JobState,
    pub response: Option<String>,
    pub response_chars: Option<i64>,
    pub error: Option<String>,
    pub report: Option<String>,
    pub exit_code: Option<i64>,
    pub output_tail: Option<String>,
    /// The total.
    pub tokens: Option<i64>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cached_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
}

/// Who writes: the leader (`owner`, `epoch`) that must hold the lease for the write to happen.
#[derive(Debug, Clone, Copy)]
pub struct Leader<'a> {
    pub owner: &'a str,
    pub epoch: i64,
}

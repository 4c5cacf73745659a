//! Workflow runs' and steps' rows.

use crate::state::{RunState, StepState, WorkerKind};

/// A `workflow_runs` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub seq: i64,
    pub id: String,
    pub workflow_id: String,
    pub name: String,
    pub state: RunState,
    pub task: String,
    pub session: Option<String>,
    pub requested_by: String,
    pub project_dir: String,
    pub priority: i64,
    pub max_attempts: i64,
    pub max_carry_chars: i64,
    pub carry: String,
    pub current_step: Option<i64>,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    pub response: Option<String>,
    pub error: Option<String>,
    pub cancel_requested_ms: Option<i64>,
    pub cancel_reason: Option<String>,
    /// The worktree its steps share.
    pub worktree_id: Option<String>,
}

/// A `workflow_steps` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRow {
    pub run_id: String,
    pub idx: i64,
    pub step_id: String,
    pub title: String,
    pub worker_id: String,
    pub prompt: String,
    pub carry: i64,
    pub timeout_ms: i64,
    pub runner: String,
    pub model: Option<String>,
    pub system_prompt: Option<String>,
    pub prompt_via: String,
    pub env: String,
    pub profile_limit: Option<i64>,
    pub attachments: String,
    pub state: StepState,
    pub job_id: Option<String>,
    pub carry_in: Option<String>,
    pub warning: Option<String>,
    pub error: Option<String>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// JSON output spec of the step's runner.
    pub output: Option<String>,
    pub worker_kind: WorkerKind,
    /// JSON tool policy of an agent worker's step.
    pub permissions: Option<String>,
}

/// A run about to be inserted (state `running`).
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub id: &'a str,
    pub workflow_id: &'a str,
    pub name: &'a str,
    pub task: &'a str,
    pub session: Option<&'a str>,
    pub requested_by: &'a str,
    pub project_dir: &'a str,
    pub priority: i64,
    pub max_attempts: i64,
    pub max_carry_chars: i64,
    pub worktree_id: Option<&'a str>,
    pub now: i64,
}

/// A step about to be inserted (state `pending`).
#[derive(Debug, Clone)]
pub struct NewStep<'a> {
    pub run_id: &'a str,
    pub idx: i64,
    pub step_id: &'a str,
    pub title: &'a str,
    pub worker_id: &'a str,
    pub prompt: &'a str,
    pub carry: bool,
    pub timeout_ms: i64,
    pub runner: &'a str,
    pub model: Option<&'a str>,
    pub system_prompt: Option<&'a str>,
    pub prompt_via: &'a str,
    pub env: &'a str,
    pub profile_limit: Option<i64>,
    pub attachments: &'a str,
    pub output: Option<&'a str>,
    pub worker_kind: WorkerKind,
    pub permissions: Option<&'a str>,
}

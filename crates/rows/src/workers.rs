//! Workers' rows and arguments.

use crate::state::{WorkerKind, WorkerState};

/// A server worker about to be registered (`starting`, before its process exists).
#[derive(Debug, Clone)]
pub struct NewServer<'a> {
    pub id: &'a str,
    pub profile: &'a str,
    pub owner: &'a str,
    pub epoch: i64,
    /// The session of the job that asked for it (`None`: started with the dispatcher).
    pub session: Option<&'a str>,
    pub model: Option<&'a str>,
    /// How many tasks it serves at once (its profile's `maxConcurrency`).
    pub max_sessions: i64,
    pub now: i64,
}

/// The limits a server-worker spawn must pass.
#[derive(Debug, Clone, Copy)]
pub struct SpawnLimits {
    /// `limits.maxWorkers`: live workers (oneshot and server) in the queue.
    pub max_workers: i64,
    /// `limits.maxWorkersPerSession`.
    pub max_per_session: i64,
    /// `limits.spawnRateLimitMs`: the least time between two server spawns.
    pub rate_ms: i64,
}

/// What registering a server worker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// The row is in, `starting`: spawn its process.
    New,
    /// A live server worker of this profile exists already (the unique index said so).
    Exists,
    /// `limits.maxWorkers` live workers already.
    WorkerLimit,
    /// `limits.maxWorkersPerSession` live workers of the session already.
    SessionLimit,
    /// The previous server spawn was less than `rate_ms` ago: wait this long.
    RateLimited(i64),
    /// The lease is no longer ours.
    NotLeader,
}

/// Live worker rows, newest first, for `task list --view workers`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerRow {
    pub id: String,
    pub profile: String,
    pub kind: WorkerKind,
    pub state: WorkerState,
    pub pid: Option<i64>,
    /// Its current job: a oneshot worker's one, a server worker's oldest session's.
    pub job_id: Option<String>,
    /// JSON array: every current job (a server worker serves up to `max_sessions` at once).
    pub job_ids: String,
    pub max_sessions: i64,
    pub model: Option<String>,
    pub session: Option<String>,
    pub started_ms: i64,
    pub last_activity_ms: i64,
}

impl WorkerRow {
    /// Its current jobs.
    pub fn jobs(&self) -> Vec<String> {
        serde_json::from_str::<Vec<Option<String>>>(&self.job_ids).unwrap_or_default().into_iter().flatten().collect()
    }
}

/// A live server worker's row, as recovery and `workers stop` need it.
#[derive(Debug, Clone)]
pub struct ServerRow {
    pub id: String,
    pub profile: String,
    pub pid: Option<i64>,
    pub pid_start: Option<i64>,
}

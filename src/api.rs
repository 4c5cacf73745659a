//! The five operations (start, await, peek, list, cancel) and their helpers: one library API
//! that the CLI and the MCP server both call and only format.

pub(crate) mod attach;
pub(crate) mod format;
pub mod transfer;
mod worktree;

pub use worktree::{Landing, Reviewed, diff, discard, land};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::agent::launch::{self, Launch};
use crate::agent::profile::{self, AttachmentKind};
use crate::config;
use crate::error::{Error, Result};
use crate::job::{self, JobRow, Missing, Record, now_ms};
use crate::location;
use crate::queue;
use crate::queue::ensure_dispatcher;
pub use crate::queue::{OpenOptions, Queue};
use crate::state::{Absent, Isolation, JobState, RunState, StepState, WorkerKind, WorkerState};
use crate::store;
use crate::store::jobs::Inserted;
use crate::workflow::runs;
use crate::workflow::{self, WorkflowDef};

// Typed answers. Their fields are declared in the order of their JSON keys, so an answer
// prints exactly as the JSON object it replaces.

/// `task_start`'s answer: the new (or deduplicated) task, or a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// An equal `dedupKey` found this live task instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduplicated: Option<bool>,
    /// Why it failed at once (an unknown profile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<&'static str>,
    pub status: JobState,
    pub task_id: String,
    /// What the requester should know about their checkout (uncommitted changes left behind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    pub worker_id: String,
    /// The git worktree the task runs in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<crate::worktree::Info>,
}

/// One worker of `workers stop`, as it stands afterwards.
#[derive(Debug, Clone, Serialize)]
pub struct Stopped {
    pub id: String,
    pub kind: WorkerKind,
    pub pid: Option<i64>,
    pub profile: String,
    pub status: WorkerState,
}

/// `baton status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub database: String,
    pub dispatcher: DispatcherStatus,
    /// Jobs by state.
    pub jobs: std::collections::BTreeMap<&'static str, i64>,
    /// What is paused: profile ids, or `*` for every profile.
    pub paused: Vec<Paused>,
    pub project: String,
    /// On a PostgreSQL queue: the nodes heart-beating within `dispatcher.staleMs`, by id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeShown>>,
}

/// A live node of a shared queue, as `baton status` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeShown {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub epoch: i64,
    pub since: String,
    pub heartbeat_at: String,
}

/// A pause as `baton status` and `baton pause` show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Paused {
    /// A profile id, or `*`: every profile.
    pub profile: String,
    pub since: String,
    pub by: String,
}

/// Whether a dispatcher leads the queue, and which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DispatcherStatus {
    pub alive: bool,
    /// The lease's epoch (also when no dispatcher is alive: the last one's).
    pub epoch: Option<i64>,
    pub pid: Option<i64>,
    pub since: Option<String>,
}

/// `baton workflow show`: one run with every step.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunShown {
    pub carry: String,
    pub created_at: String,
    pub error: Option<String>,
    pub finished_at: Option<String>,
    pub id: String,
    pub name: String,
    pub status: RunState,
    pub steps: Vec<StepShown>,
    pub task: String,
    pub workflow_id: String,
}

/// A step of `workflow show`, with the carry that went into it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepShown {
    pub carry_in: Option<String>,
    pub error: Option<String>,
    pub finished_at: Option<String>,
    pub id: String,
    pub index: i64,
    pub started_at: Option<String>,
    pub status: StepState,
    pub task_id: Option<String>,
    pub title: String,
    pub warning: Option<String>,
    pub worker_id: String,
}

/// Who is asking.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `--session` / `BATON_SESSION` / the MCP session.
    pub session: Option<String>,
    /// The MCP client's name, or `cli:$USER`.
    pub requested_by: String,
}

impl Caller {
    /// A CLI caller: session from the flag or `BATON_SESSION`, requester `cli:$USER`.
    pub fn cli(session: Option<String>) -> Caller {
        let session = session.or_else(|| std::env::var("BATON_SESSION").ok()).filter(|s| !s.is_empty());
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        Caller { session, requested_by: format!("cli:{user}") }
    }
}

/// Refuse when running inside a worker with recursive-spawn protection on.
pub fn check_recursive_guard(cfg: &config::Config) -> Result<()> {
    let var = &cfg.security.recursive_spawn_env_var;
    if cfg.security.prevent_recursive_spawn && std::env::var(var).is_ok_and(|v| v == "true") {
        return Err(Error::RecursiveSpawn { var: var.clone() });
    }
    Ok(())
}

/// One attachment as given to `task_start`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attachment {
    /// `image` or `file`.
    #[serde(rename = "type")]
    pub kind: AttachmentType,
    /// A path relative to the project directory (no `..`, no symlinks, inside the project).
    pub path: Option<String>,
    /// The content, base64-encoded (at most 10 000 000 chars), when there is no path.
    pub base64: Option<String>,
    /// The MIME type of base64 content (`image/png`, `text/plain`, ...).
    pub mime_type: Option<String>,
}

/// What an attachment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentType {
    Image,
    File,
}

/// `task_start` parameters (SPEC 4); the MCP tool's input schema comes from here.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartParams {
    /// What the worker should do: the prompt (at most 100 000 chars). Be specific and
    /// self-contained: the worker sees nothing of your conversation.
    pub task: String,
    /// `auto` (default: `workerId` if given, else picked from the task text), `worker` (needs
    /// `workerId`) or `workflow` (needs `workflowId`; `auto` with a `workflowId` means workflow).
    pub kind: Option<String>,
    /// The profile to run (see the list in this tool's description).
    pub worker_id: Option<String>,
    /// The workflow to run (see the list in this tool's description).
    pub workflow_id: Option<String>,
    /// At most 10 files or images for the worker.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// Start a dispatcher when none runs (default true). With false the task waits, queued.
    pub auto_spawn: Option<bool>,
    /// The job's own time limit in ms (absent or <= 0: the configured default).
    pub timeout_ms: Option<f64>,
    /// Higher runs first (default 0).
    pub priority: Option<i64>,
    /// Run no earlier than this many ms from now.
    pub delay_ms: Option<i64>,
    /// Run no earlier than this ISO-8601 time (not with delayMs).
    pub run_at: Option<String>,
    /// Attempts if a dispatcher dies under the task (default from config).
    pub max_attempts: Option<i64>,
    /// While a task with this key is unfinished, starting another answers that one.
    pub dedup_key: Option<String>,
    /// `worktree`: run in a git worktree of its own, on a new branch `baton/<id>`, merged back
    /// with task_merge; `none`: in this checkout. Default: the profile's (or workflow's) setting.
    pub isolation: Option<String>,
    /// With isolation `worktree`: the commit or branch the worktree starts from (default HEAD).
    pub base: Option<String>,
    /// Task ids (or unique prefixes) this task waits for: it stays `waiting` until every one
    /// succeeded, then is queued; if one fails or is canceled it fails with "Dependency <id>
    /// failed" (unless afterAny). Worker tasks only.
    pub after: Option<Vec<String>>,
    /// With `after`: run once they all finished, whatever their outcome.
    pub after_any: Option<bool>,
    /// Labels to find the task by later (`task_list` label filter): at most 16 `key: value`
    /// pairs; keys are letters, digits, `.`, `_`, `-`, `/` (at most 64), values at most 256 chars.
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// On a PostgreSQL queue shared by several dispatchers: only the dispatcher of this node
    /// runs it (by default any node where its project directory exists).
    pub node: Option<String>,
}

/// Job timeout (SPEC 3): absent or `<= 0` -> the default; else clamped to [1 000, max].
pub fn normalize_job_timeout(given: Option<f64>, default_ms: i64, max_ms: i64) -> i64 {
    match given {
        Some(t) if t.is_finite() && t > 0.0 => (t as i64).clamp(1000, max_ms.max(1000)),
        _ => default_ms,
    }
}

/// Await timeout (SPEC 4.6): not finite -> 600 000; `<= 0` -> 0; else clamped to [1 000, 600 000].
pub fn normalize_await_timeout(given: Option<f64>) -> u64 {
    match given {
        Some(t) if t.is_finite() => {
            if t <= 0.0 {
                0
            } else {
                t.clamp(1000.0, 600_000.0) as u64
            }
        }
        _ => 600_000,
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// `task_start`: validate, resolve the profile and runner, write the job, start a dispatcher
/// when none is alive. The row is committed before this returns.
pub async fn start(q: &Queue, caller: &Caller, p: StartParams) -> Result<Started> {
    start_checked(q, caller, p).await.map_err(|e| q.store.explain(e))
}

async fn start_checked(q: &Queue, caller: &Caller, p: StartParams) -> Result<Started> {
    let cfg = &q.config.config;
    check_recursive_guard(cfg)?;
    check_session(q, caller)?;
    let limits = &cfg.limits;
    if chars(&p.task) as u64 > limits.max_task_chars {
        return Err(Error::Invalid(format!("Task must be <= {} chars", limits.max_task_chars)));
    }
    if p.task.trim().is_empty() {
        return Err(Error::Invalid("Task must not be empty".into()));
    }
    if p.task.contains('\0') {
        return Err(Error::Invalid(
            "Task must not contain a NUL character (\\0): no worker process can be given one in its \
             arguments. Remove it from the task text."
                .into(),
        ));
    }
    let kind = match (p.kind.as_deref().unwrap_or("auto"), &p.workflow_id) {
        ("auto", Some(_)) | ("workflow", _) => "workflow",
        ("auto", None) => "auto",
        ("worker", _) => "worker",
        (other, _) => {
            return Err(Error::Invalid(format!("Unknown kind \"{other}\": use auto, worker or workflow")));
        }
    };
    if kind == "worker" && p.worker_id.as_deref().is_none_or(str::is_empty) {
        return Err(Error::Invalid("Missing workerId".into()));
    }
    if p.attachments.len() > limits.max_attachments as usize {
        return Err(Error::Invalid(format!("Max {} attachments", limits.max_attachments)));
    }
    for a in &p.attachments {
        if a.base64.as_deref().is_some_and(|b| chars(b) as u64 > limits.max_base64_chars) {
            return Err(Error::Invalid("Base64 too large".into()));
        }
    }
    let mut attachment_paths = Vec::new();
    let mut base64_parts = Vec::new();
    for a in &p.attachments {
        match (&a.path, &a.base64) {
            (Some(path), _) => attachment_paths.push(
                attach::check(
                    &q.loc.project_dir,
                    path,
                    attach::Queue { db: q.store.locator(), state_dir: &q.loc.state_dir },
                )
                .map_err(|m| Error::Invalid(format!("Invalid attachment path: {m}")))?,
            ),
            (None, Some(b)) => base64_parts.push((a, b)),
            (None, None) => return Err(Error::Invalid("Invalid attachment: give a path or base64".into())),
        }
    }
    if p.delay_ms.is_some() && p.run_at.is_some() {
        return Err(Error::Invalid("Give delayMs or runAt, not both".into()));
    }
    let now = now_ms();
    let run_after = match (&p.delay_ms, &p.run_at) {
        (Some(d), _) if *d < 0 => return Err(Error::Invalid("delayMs must be >= 0".into())),
        (Some(d), _) => now.saturating_add(*d),
        (None, Some(t)) => {
            job::parse_iso(t).ok_or_else(|| Error::Invalid(format!("runAt must be an ISO-8601 time, not \"{t}\"")))?
        }
        (None, None) => now,
    };
    let max_attempts = p.max_attempts.unwrap_or(i64::from(cfg.jobs.max_attempts));
    if max_attempts < 1 {
        return Err(Error::Invalid("maxAttempts must be >= 1".into()));
    }
    if p.dedup_key.as_deref().is_some_and(str::is_empty) {
        return Err(Error::Invalid("dedupKey must not be empty".into()));
    }
    match p.node.as_deref() {
        Some("") => return Err(Error::Invalid("node must not be empty".into())),
        Some(_) if q.store.node().is_none() => {
            return Err(Error::Invalid(
                "node applies to a PostgreSQL queue shared by several dispatchers; this queue is a file, which \
                 one dispatcher runs"
                    .into(),
            ));
        }
        _ => {}
    }
    let labels = labels_json(p.labels.as_ref())?;
    let after_any = p.after_any.unwrap_or(false);
    if after_any && p.after.as_ref().is_none_or(Vec::is_empty) {
        return Err(Error::Invalid("afterAny needs after: the tasks to wait for".into()));
    }

    let id = uuid::Uuid::new_v4().to_string();
    if kind == "workflow" {
        if p.delay_ms.is_some() || p.run_at.is_some() || p.dedup_key.is_some() {
            return Err(Error::Invalid("delayMs, runAt and dedupKey do not apply to workflows".into()));
        }
        if p.after.as_ref().is_some_and(|a| !a.is_empty()) || labels.is_some() || p.node.is_some() {
            return Err(Error::Invalid(
                "after, labels and node apply to worker tasks, not to workflow runs (yet)".into(),
            ));
        }
        let def = check_workflow(q, &p)?;
        for (i, (a, b)) in base64_parts.into_iter().enumerate() {
            attachment_paths.push(write_base64(q, &id, i, a, b)?);
        }
        return start_workflow(q, caller, &p, def, &id, &attachment_paths, max_attempts, now).await;
    }
    let kinds: Vec<AttachmentKind> = p
        .attachments
        .iter()
        .map(|a| if a.kind == AttachmentType::Image { AttachmentKind::Image } else { AttachmentKind::File })
        .collect();
    let worker_id = match &p.worker_id {
        Some(w) if !w.is_empty() => w.to_lowercase(),
        _ => profile::auto_select(&p.task, &kinds).to_string(),
    };
    // Base64 attachments become files of the job.
    for (i, (a, b)) in base64_parts.into_iter().enumerate() {
        attachment_paths.push(write_base64(q, &id, i, a, b)?);
    }

    let profile = q.profiles.get(&worker_id);
    let isolation = isolation_of(&p, profile.map_or(Isolation::None, |pr| pr.isolation))?;
    let plan = match (profile, isolation) {
        (Some(pr), Isolation::Worktree) => Some(plan_worktree(q, &id, &p, pr.setup.as_deref(), now).await?),
        _ => None,
    };
    let project_dir = project_dir_of(q, plan.as_ref());
    let launch = match profile {
        Some(pr) => {
            let timeout = normalize_job_timeout(
                p.timeout_ms.or(pr.timeout_ms.map(|t| t as f64)),
                cfg.jobs.timeout_ms,
                cfg.jobs.max_timeout_ms,
            );
            Launch::of_profile(cfg, pr, timeout)?
        }
        None => Launch::unknown(&worker_id, cfg.jobs.timeout_ms),
    };
    let attachments: Vec<String> = attachment_paths.iter().map(|a| a.display().to_string()).collect();
    let after = match &p.after {
        Some(given) if profile.is_some() => resolve_after(q, caller, given).await?,
        _ => None,
    };
    let mut new = launch.job(launch::Job {
        id: &id,
        task: &p.task,
        session: caller.session.as_deref(),
        requested_by: &caller.requested_by,
        project_dir: &project_dir,
        attachments: &attachments,
        priority: p.priority.unwrap_or(0),
        max_attempts,
        run_after_ms: run_after,
        now,
        dedup_key: p.dedup_key.as_deref(),
        workflow: None,
        worktree: plan.as_ref().map(|pl| pl.new.id.as_str()),
    })?;
    new.labels = labels;
    new.node = p.node.clone();
    new.after_any = after_any && after.is_some();
    new.after = after;
    let mut conn = q.store.conn().await?;
    if profile.is_none() {
        let error = format!("Unknown worker \"{worker_id}\". Available profiles: {}", q.profiles.ids().join(", "));
        let mut tx = q.store.begin().await?;
        store::jobs::insert(&mut tx, &new).await?;
        store::jobs::fail_queued(&mut tx, &id, &error, now).await?;
        tx.commit().await?;
        return Ok(Started {
            deduplicated: None,
            error: Some(error),
            kind: None,
            next: None,
            status: JobState::Failed,
            task_id: id,
            warning: None,
            worker_id,
            worktree: None,
        });
    }
    let inserted = match &plan {
        None => store::jobs::insert(&mut conn, &new).await?,
        Some(pl) => {
            // The worktree row goes in with its task, or not at all (a duplicate rolls back).
            let mut tx = q.store.begin().await?;
            store::worktrees::insert(&mut tx, &pl.new).await?;
            let inserted = store::jobs::insert(&mut tx, &new).await?;
            if inserted == Inserted::New {
                tx.commit().await?;
            }
            inserted
        }
    };
    let answer = match inserted {
        Inserted::New => {
            // A task with dependencies waits, or was queued or failed at once by the schema's
            // triggers when they had already ended.
            let (status, error) = match &new.after {
                None => (JobState::Queued, None),
                Some(_) => store::jobs::get(&mut conn, &id)
                    .await?
                    .map_or((JobState::Waiting, None), |r| (r.state, r.error.filter(|_| r.state == JobState::Failed))),
            };
            Started {
                deduplicated: None,
                error,
                kind: Some("worker"),
                next: Some("task_await"),
                status,
                task_id: id,
                warning: plan.as_ref().and_then(|pl| pl.warning.clone()),
                worker_id,
                worktree: plan.as_ref().map(|pl| pl.info()),
            }
        }
        Inserted::Duplicate(existing) => {
            let row = store::jobs::get(&mut conn, &existing).await?;
            let (w, s) = row.map(|r| (r.profile, r.state)).unwrap_or((worker_id, JobState::Queued));
            Started {
                deduplicated: Some(true),
                error: None,
                kind: Some("worker"),
                next: Some("task_await"),
                status: s,
                task_id: existing,
                warning: None,
                worker_id: w,
                worktree: None,
            }
        }
    };
    if p.auto_spawn.unwrap_or(cfg.auto_spawn) {
        ensure_dispatcher(q, &mut conn).await?;
    }
    Ok(answer)
}

/// Most labels on one task, and the longest key and value.
const MAX_LABELS: usize = 16;
const MAX_LABEL_KEY: usize = 64;
const MAX_LABEL_VALUE: usize = 256;
/// Most dependencies (`after`) of one task.
const MAX_AFTER: usize = 64;

/// A label key: letters, digits, `.`, `_`, `-`, `/`; at most 64 chars.
pub fn check_label_key(k: &str) -> Result<()> {
    let ok = !k.is_empty()
        && k.len() <= MAX_LABEL_KEY
        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "Invalid label key \"{k}\": use 1 to {MAX_LABEL_KEY} letters, digits, '.', '_', '-' or '/'"
        )))
    }
}

/// The labels as stored (a JSON object), after checking them; None for none.
fn labels_json(labels: Option<&std::collections::BTreeMap<String, String>>) -> Result<Option<String>> {
    let Some(labels) = labels.filter(|l| !l.is_empty()) else { return Ok(None) };
    if labels.len() > MAX_LABELS {
        return Err(Error::Invalid(format!("At most {MAX_LABELS} labels")));
    }
    for (k, v) in labels {
        check_label_key(k)?;
        if chars(v) > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "Invalid value of label \"{k}\": at most {MAX_LABEL_VALUE} chars, no control characters"
            )));
        }
    }
    Ok(Some(serde_json::to_string(labels)?))
}

/// The tasks a new task waits for, as stored (a JSON array of full ids, each once); None for
/// none. Every one must be a task the caller may see; a dependency is always an older task, so
/// no cycle can form.
async fn resolve_after(q: &Queue, caller: &Caller, given: &[String]) -> Result<Option<String>> {
    if given.is_empty() {
        return Ok(None);
    }
    if given.len() > MAX_AFTER {
        return Err(Error::Invalid(format!("At most {MAX_AFTER} dependencies (after)")));
    }
    let resolved = resolve_ids(q, given).await?;
    let found: Vec<String> = resolved.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    let rows = store::jobs::get_many(&mut q.store.conn().await?, &found).await?;
    let isolated = q.config.config.security.session_isolation;
    let mut ids: Vec<String> = Vec::with_capacity(given.len());
    for (g, r) in given.iter().zip(resolved) {
        let unknown = || Error::Invalid(format!("Unknown dependency \"{g}\": no task has this id"));
        let id = r.map_err(|_| unknown())?;
        let Some(row) = rows.iter().find(|row| row.id == id) else {
            return Err(Error::Invalid(format!(
                "Dependency \"{g}\" is a workflow run: after waits for tasks (give the run's last step, \
                 see baton workflow show)"
            )));
        };
        if isolated && row.session != caller.session {
            return Err(unknown());
        }
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(Some(serde_json::to_string(&ids)?))
}

/// Whether a task (or a run) gets a worktree: its own `isolation`, else its profile's (or
/// workflow's). `base` means nothing without one.
fn isolation_of(p: &StartParams, default: Isolation) -> Result<Isolation> {
    let isolation = match p.isolation.as_deref() {
        None | Some("") => default,
        Some(w) => Isolation::parse(&w.to_lowercase())
            .ok_or_else(|| Error::Invalid(format!("Unknown isolation \"{w}\": use none or worktree")))?,
    };
    if isolation == Isolation::None && p.base.is_some() {
        return Err(Error::Invalid("base applies only to isolation \"worktree\"".into()));
    }
    Ok(isolation)
}

/// Plan the worktree of task (or run) `id` from the requester's checkout.
async fn plan_worktree(
    q: &Queue,
    id: &str,
    p: &StartParams,
    setup: Option<&[String]>,
    now: i64,
) -> Result<crate::worktree::Plan> {
    let cfg = &q.config.config.worktrees;
    let root = match &cfg.dir {
        Some(d) => q.loc.project_dir.join(d),
        None => q.loc.worktrees_dir(),
    };
    crate::worktree::plan(crate::worktree::Request {
        id,
        project_dir: &q.loc.project_dir,
        root,
        base: p.base.as_deref(),
        auto_commit: cfg.auto_commit,
        setup: setup.or(Some(&cfg.setup)),
        now,
    })
    .await
}

/// Where a task's worker runs: its worktree's copy of the project, or the project.
fn project_dir_of(q: &Queue, plan: Option<&crate::worktree::Plan>) -> String {
    match plan {
        Some(pl) => pl.new.workdir().display().to_string(),
        None => q.loc.project_dir.display().to_string(),
    }
}

/// Validate a workflow start (SPEC 8 messages); nothing is written.
fn check_workflow<'q>(q: &'q Queue, p: &StartParams) -> Result<&'q WorkflowDef> {
    let Some(wf) = p.workflow_id.as_deref().filter(|w| !w.is_empty()) else {
        return Err(Error::Invalid("Missing workflowId".into()));
    };
    let def = q
        .workflows
        .iter()
        .find(|d| d.id.eq_ignore_ascii_case(wf))
        .ok_or_else(|| Error::Invalid(format!("Unknown workflow \"{wf}\".")))?;
    let lim = &q.config.config.workflows.limits;
    if chars(&p.task) as u64 > lim.max_task_chars {
        return Err(Error::Invalid(format!("Task exceeds maxTaskChars ({}).", lim.max_task_chars)));
    }
    if def.steps.len() > lim.max_steps as usize {
        return Err(Error::Invalid(format!("Workflow has {} steps (maxSteps={}).", def.steps.len(), lim.max_steps)));
    }
    for s in &def.steps {
        if q.profiles.get(&s.worker_id).is_none() {
            return Err(Error::Invalid(format!(
                "Unknown worker \"{}\" in step \"{}\" of workflow \"{}\". Available profiles: {}",
                s.worker_id,
                s.id,
                def.id,
                q.profiles.ids().join(", ")
            )));
        }
    }
    Ok(def)
}

/// Write a run, its steps and its first step's job in one transaction.
#[allow(clippy::too_many_arguments)]
async fn start_workflow(
    q: &Queue,
    caller: &Caller,
    p: &StartParams,
    def: &WorkflowDef,
    run_id: &str,
    attachments: &[PathBuf],
    max_attempts: i64,
    now: i64,
) -> Result<Started> {
    let cfg = &q.config.config;
    let lim = &cfg.workflows.limits;
    let plan = match isolation_of(p, def.isolation)? {
        Isolation::Worktree => {
            let first = def.steps.first().and_then(|s| q.profiles.get(&s.worker_id));
            Some(plan_worktree(q, run_id, p, first.and_then(|pr| pr.setup.as_deref()), now).await?)
        }
        Isolation::None => None,
    };
    let project_dir = project_dir_of(q, plan.as_ref());
    let mut resolved = Vec::with_capacity(def.steps.len());
    for s in &def.steps {
        let pr = q
            .profiles
            .get(&s.worker_id)
            .ok_or_else(|| Error::Invalid(format!("Unknown worker \"{}\"", s.worker_id)))?;
        resolved.push((pr, launch::resolve(cfg, pr)?));
    }
    let attachments_json = serde_json::to_string(attachments)?;
    let mut tx = q.store.begin().await?;
    if let Some(pl) = &plan {
        store::worktrees::insert(&mut tx, &pl.new).await?;
    }
    store::workflow::insert_run(
        &mut tx,
        &store::workflow::NewRun {
            id: run_id,
            workflow_id: &def.id,
            name: &def.name,
            task: &p.task,
            session: caller.session.as_deref(),
            requested_by: &caller.requested_by,
            project_dir: &project_dir,
            priority: p.priority.unwrap_or(0),
            max_attempts,
            max_carry_chars: lim.max_carry_chars as i64,
            worktree_id: plan.as_ref().map(|pl| pl.new.id.as_str()),
            now,
        },
    )
    .await?;
    for (i, (s, (pr, r))) in def.steps.iter().zip(&resolved).enumerate() {
        let runner = serde_json::to_string(&r.runner.to_json())?;
        let env = serde_json::to_string(&r.env)?;
        let output = launch::output_json(r)?;
        let permissions = crate::agent::permission::Policy::json_for(pr);
        store::workflow::insert_step(
            &mut tx,
            &store::workflow::NewStep {
                run_id,
                idx: i as i64,
                step_id: &s.id,
                title: &s.title,
                worker_id: &pr.id,
                prompt: &s.prompt,
                carry: s.carry,
                timeout_ms: workflow::step_timeout(s.timeout_ms, lim.per_step_timeout_ms),
                runner: &runner,
                model: r.model.as_deref(),
                system_prompt: pr.system_prompt.as_deref(),
                prompt_via: if r.prompt_via == profile::PromptVia::Stdin { "stdin" } else { "arg" },
                env: &env,
                profile_limit: pr.job_limit(),
                // Attachments go to step 0 only.
                attachments: if i == 0 { &attachments_json } else { "[]" },
                output: output.as_deref(),
                worker_kind: pr.kind,
                permissions: permissions.as_deref(),
            },
        )
        .await?;
    }
    runs::begin(&mut tx, run_id, now).await?;
    if p.auto_spawn.unwrap_or(cfg.auto_spawn) {
        // Read in the transaction, before its commit wakes a dispatcher.
        ensure_dispatcher(q, &mut tx).await?;
    }
    tx.commit().await?;
    Ok(Started {
        deduplicated: None,
        error: None,
        kind: Some("workflow"),
        next: Some("task_await"),
        status: JobState::Running,
        task_id: run_id.to_string(),
        warning: plan.as_ref().and_then(|pl| pl.warning.clone()),
        worker_id: format!("workflow:{}", def.id),
        worktree: plan.as_ref().map(|pl| pl.info()),
    })
}

fn write_base64(q: &Queue, job_id: &str, index: usize, a: &Attachment, b: &str) -> Result<PathBuf> {
    use base64::Engine;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b.trim())
        .map_err(|e| Error::Invalid(format!("Invalid attachment: base64 does not decode ({e})")))?;
    let dir = q.loc.attachments_dir(job_id);
    location::create_private_dir(&dir)?;
    let ext = match a.mime_type.as_deref() {
        Some("image/png") => "png",
        Some("image/jpeg") => "jpg",
        Some("image/gif") => "gif",
        Some("image/webp") => "webp",
        Some("text/plain") => "txt",
        _ => "bin",
    };
    let path = dir.join(format!("{index}.{ext}"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    f.write_all(&bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// One answer of await/peek/cancel: a record, or `{id, status: unknown|forbidden}`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Record(Box<Record>),
    Missing(Missing),
}

impl Answer {
    /// The state of the job or run; None for an unknown (or forbidden) id.
    pub fn state(&self) -> Option<JobState> {
        match self {
            Answer::Record(r) => Some(r.status),
            Answer::Missing(_) => None,
        }
    }
    pub fn timed_out(&self) -> bool {
        matches!(self, Answer::Record(r) if r.timed_out == Some(true))
    }
    pub fn cancel_requested(&self) -> bool {
        matches!(self, Answer::Record(r) if r.cancel_requested)
    }
}

fn check_session(q: &Queue, caller: &Caller) -> Result<()> {
    if q.config.config.security.session_isolation && caller.session.is_none() {
        return Err(Error::Invalid("Session ID required for task tools.".into()));
    }
    Ok(())
}

/// Resolve given ids (full or unique prefixes of at least 8 chars) to full ids; `Err(status)`
/// for unknown ones.
async fn resolve_ids(q: &Queue, given: &[String]) -> Result<Vec<std::result::Result<String, Missing>>> {
    let mut conn = q.store.conn().await?;
    let mut out = Vec::with_capacity(given.len());
    for g in given {
        let g_norm = g.trim().to_lowercase();
        let valid = g_norm.len() >= 8 && g_norm.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        let mut found = Vec::new();
        if valid {
            found.extend(store::jobs::ids_with_prefix(&mut conn, &g_norm).await?);
            found.extend(store::workflow::ids_with_prefix(&mut conn, &g_norm).await?);
        }
        out.push(match found.as_slice() {
            [one] => Ok(one.clone()),
            [_, _, ..] => return Err(Error::AmbiguousId(g.clone())),
            [] => Err(Missing { id: g.clone(), status: Absent::Unknown }),
        });
    }
    Ok(out)
}

/// Rows for resolved ids, in input order, with isolation applied.
async fn answers(
    q: &Queue,
    caller: &Caller,
    resolved: &[std::result::Result<String, Missing>],
    live: bool,
    full: bool,
) -> Result<Vec<Answer>> {
    let ids: Vec<String> = resolved.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    let mut conn = q.store.conn().await?;
    let rows = store::jobs::get_many(&mut conn, &ids).await?;
    let runs = store::workflow::get_runs(&mut conn, &ids).await?;
    let mut run_steps = Vec::with_capacity(runs.len());
    for r in &runs {
        run_steps.push(store::workflow::steps(&mut conn, &r.id).await?);
    }
    let wt_ids: Vec<String> = rows
        .iter()
        .filter_map(|r| r.worktree_id.clone())
        .chain(runs.iter().filter_map(|r| r.worktree_id.clone()))
        .collect();
    let worktrees = if wt_ids.is_empty() { Vec::new() } else { store::worktrees::get_many(&mut conn, &wt_ids).await? };
    let isolated = q.config.config.security.session_isolation;
    let cap = (!full).then_some(q.config.config.ui.max_response_chars as usize);
    let now = now_ms();
    let mut activity = if live { activities(&mut conn, &rows).await? } else { Default::default() };
    Ok(resolved
        .iter()
        .map(|r| {
            let id = match r {
                Err(m) => return Answer::Missing(m.clone()),
                Ok(id) => id,
            };
            let (session, record, wt) = if let Some(row) = rows.iter().find(|row| &row.id == id) {
                (&row.session, q.record(row, live, full), &row.worktree_id)
            } else if let Some(i) = runs.iter().position(|run| &run.id == id) {
                (&runs[i].session, runs::record(&runs[i], &run_steps[i], cap, live, now), &runs[i].worktree_id)
            } else {
                return Answer::Missing(Missing { id: id.clone(), status: Absent::Unknown });
            };
            if isolated && *session != caller.session {
                return Answer::Missing(Missing { id: id.clone(), status: Absent::Forbidden });
            }
            let mut record = record;
            record.activity = activity.remove(id);
            record.worktree = wt.as_ref().and_then(|w| worktrees.iter().find(|r| &r.id == w)).map(Into::into);
            Answer::Record(Box::new(record))
        })
        .collect())
}

/// What each running job's agent is doing, by job id (one small read per running job).
async fn activities(
    conn: &mut store::Conn,
    rows: &[JobRow],
) -> Result<std::collections::HashMap<String, job::Activity>> {
    let mut activity = std::collections::HashMap::new();
    for row in rows.iter().filter(|r| r.state == JobState::Running) {
        let latest = store::events::latest_by_kind(conn, &row.id, row.attempt).await?;
        if let Some(a) = job::Activity::of(&latest) {
            activity.insert(row.id.clone(), a);
        }
    }
    Ok(activity)
}

/// `task_peek`: the records as they are now. Never blocks, never changes anything.
pub async fn peek(q: &Queue, caller: &Caller, ids: &[String], full: bool) -> Result<Vec<Answer>> {
    check_ids(ids)?;
    check_session(q, caller)?;
    let resolved = resolve_ids(q, ids).await?;
    let mut out = answers(q, caller, &resolved, true, full).await?;
    // Queued or running work with no live dispatcher is said to be so, and gets one
    // (autoSpawn): a running job whose dispatcher is gone is recovered by the next.
    let mut conn = q.store.conn().await?;
    let orphaned = |a: &Answer| a.state().is_some_and(|s| !s.is_terminal());
    if out.iter().any(orphaned) && queue::leader(q, &mut conn).await?.is_none() {
        for a in &mut out {
            if let Answer::Record(r) = a
                && !r.status.is_terminal()
            {
                r.dispatcher = Some("none".into());
                r.stalled |= r.status == JobState::Running;
            }
        }
        if q.config.config.auto_spawn {
            ensure_dispatcher(q, &mut conn).await?;
        }
    }
    Ok(out)
}

fn check_ids(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Err(Error::Invalid("Missing taskId/taskIds.".into()));
    }
    Ok(())
}

/// Progress of a long wait: (elapsed, answers so far are not yet terminal count).
pub type Progress<'a> = &'a mut (dyn FnMut(Duration, usize) + Send);

/// `task_await`: wait until every job is terminal or the time is up. A timeout is not a failure:
/// unfinished jobs answer as they stand with `timedOut: true`.
pub async fn await_jobs(
    q: &Queue,
    caller: &Caller,
    ids: &[String],
    timeout_ms: Option<f64>,
    full: bool,
    progress: Option<Progress<'_>>,
) -> Result<Vec<Answer>> {
    check_ids(ids)?;
    check_session(q, caller)?;
    let timeout = Duration::from_millis(normalize_await_timeout(timeout_ms));
    let resolved = resolve_ids(q, ids).await?;
    let known: Vec<String> = resolved.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    let unfinished = wait_terminal(q, &known, timeout, progress).await?;
    let mut out = answers(q, caller, &resolved, true, full).await?;
    if unfinished > 0 {
        for a in &mut out {
            if let Answer::Record(r) = a
                && !r.status.is_terminal()
            {
                r.timed_out = Some(true);
            }
        }
    }
    Ok(out)
}

/// Commits to the queue, from any process ([`store::Watcher`]: inotify on the queue file's
/// `-wal` and its `data_version`, or PostgreSQL's notifications).
pub struct Changes {
    watcher: store::Watcher,
}

impl Changes {
    pub async fn new(q: &Queue) -> Result<Changes> {
        Ok(Changes { watcher: q.store.watcher().await? })
    }

    /// Whether commits wake the waiter at once; without, `next` can only poll.
    pub fn is_live(&self) -> bool {
        self.watcher.is_live()
    }

    /// Wait up to `max` for the next wake-up; true when the queue changed since last asked.
    pub async fn next(&mut self, max: Duration) -> Result<bool> {
        self.watcher.next(max).await
    }

    /// The connection it watches on, for reads of the caller's own.
    fn conn(&mut self) -> &mut store::Watcher {
        &mut self.watcher
    }
}

/// The watcher: wakes on the queue's commits ([`Changes`]; the version is checked at least every
/// 50 ms with inotify, 5 ms without), re-reads the awaited states in one query on a change.
/// Returns how many are still unfinished.
pub async fn wait_terminal(
    q: &Queue,
    ids: &[String],
    timeout: Duration,
    mut progress: Option<Progress<'_>>,
) -> Result<usize> {
    let started = Instant::now();
    let mut changes = Changes::new(q).await?;
    let poll = if changes.is_live() { Duration::from_millis(50) } else { Duration::from_millis(5) };
    let mut spawned_check = false;
    let mut last_progress = Instant::now();
    loop {
        let states = store::jobs::states(changes.conn(), ids).await?;
        let open = states.iter().filter(|(_, s)| !s.is_terminal()).count();
        if open == 0 || started.elapsed() >= timeout {
            return Ok(open);
        }
        if !spawned_check {
            spawned_check = true;
            if q.config.config.auto_spawn {
                ensure_dispatcher(q, changes.conn()).await?;
            }
        }
        loop {
            let changed = changes.next(poll.min(timeout.saturating_sub(started.elapsed()))).await?;
            if let Some(p) = progress.as_mut()
                && last_progress.elapsed() >= Duration::from_secs(1)
            {
                last_progress = Instant::now();
                p(started.elapsed(), open);
            }
            if changed || started.elapsed() >= timeout {
                break;
            }
        }
    }
}

/// `task_cancel`: cancel queued and running jobs (the process group really stops); finished jobs
/// are left as they are. Returns once every job is terminal, or after grace + 5 s with
/// `cancelRequested: true`.
pub async fn cancel(q: &Queue, caller: &Caller, ids: &[String], reason: Option<&str>) -> Result<Vec<Answer>> {
    check_ids(ids)?;
    check_session(q, caller)?;
    let resolved = resolve_ids(q, ids).await?;
    let pre = answers(q, caller, &resolved, false, false).await?;
    let targets: Vec<String> = pre
        .iter()
        .filter_map(|a| match a {
            Answer::Record(r) => Some(r.id.clone()),
            Answer::Missing(_) => None,
        })
        .collect();
    let now = now_ms();
    let mut conn = q.store.conn().await?;
    let mut running = Vec::new();
    let mut waited = Vec::new();
    for id in &targets {
        // A workflow run is canceled through its current step's job (the
        // `jobs_cancel_workflow` trigger ends the run with it).
        let job = match store::workflow::get_run(&mut conn, id).await? {
            Some(run) if !run.state.is_terminal() => {
                match store::workflow::request_cancel(&mut conn, id, reason, now).await? {
                    Some(job) => job,
                    None => {
                        let error = reason.map_or("Canceled".to_string(), |r| format!("Canceled: {r}"));
                        store::workflow::end_run(&mut conn, id, RunState::Canceled, None, Some(&error), now).await?;
                        continue;
                    }
                }
            }
            Some(_) => continue,
            None => id.clone(),
        };
        if store::jobs::request_cancel(&mut conn, &job, reason, now).await? == Some(JobState::Running) {
            running.push(job);
        }
        waited.push(id.clone());
    }
    let grace = Duration::from_millis(q.config.config.jobs.kill_grace_ms);
    let deadline = Instant::now() + grace + Duration::from_secs(5);
    let mut ownerless = running.is_empty();
    loop {
        if !ownerless && queue::leader(q, &mut conn).await?.is_none() {
            // No live owner (none when asked, or it died since): kill the proven groups ourselves.
            ownerless = true;
            cancel_orphans(&mut conn, &running, grace).await?;
        }
        // While an owner is at work, look again now and then whether it is still there.
        let left = deadline.saturating_duration_since(Instant::now());
        let slice = if ownerless { left } else { left.min(Duration::from_millis(250)) };
        if wait_terminal(q, &waited, slice, None).await? == 0 || Instant::now() >= deadline {
            break;
        }
    }
    answers(q, caller, &resolved, false, false).await
}

/// `workers stop`: stop live workers, given by id (or a unique prefix), or all of them. A
/// worker's current job is canceled with the reason "Worker stopped"; a oneshot worker stops
/// with its job, a server worker is stopped by its dispatcher (stdin closed, then group SIGTERM,
/// then SIGKILL, each after `jobs.killGraceMs`). With no dispatcher alive, this process stops
/// the proven processes itself. Answers the workers' rows afterwards.
pub async fn stop_workers(q: &Queue, ids: &[String], all: bool) -> Result<Vec<Stopped>> {
    if ids.is_empty() && !all {
        return Err(Error::Invalid("Give the ids of the workers to stop, or --all".into()));
    }
    let mut conn = q.store.conn().await?;
    let live = store::workers::live_workers(&mut conn).await?;
    let mut targets: Vec<&store::workers::WorkerRow> = Vec::new();
    if all {
        targets.extend(live.iter());
    }
    for id in ids {
        let found: Vec<&store::workers::WorkerRow> = match live.iter().find(|w| &w.id == id) {
            Some(w) => vec![w],
            None => live.iter().filter(|w| !id.is_empty() && w.id.starts_with(id.as_str())).collect(),
        };
        match found.as_slice() {
            [w] => targets.push(w),
            [] => return Err(Error::Invalid(format!("No live worker \"{id}\" (see `baton workers`)"))),
            _ => return Err(Error::Invalid(format!("Worker id prefix \"{id}\" is ambiguous"))),
        }
    }
    targets.sort_by(|a, b| a.id.cmp(&b.id));
    targets.dedup_by(|a, b| a.id == b.id);
    let now = now_ms();
    let ids: Vec<String> = targets.iter().map(|w| w.id.clone()).collect();
    let servers: Vec<String> = targets.iter().filter(|w| w.kind == WorkerKind::Server).map(|w| w.id.clone()).collect();
    store::workers::request_stop(&mut conn, &servers, now).await?;
    let mut running = Vec::new();
    for job in targets.iter().flat_map(|w| w.jobs()) {
        if store::jobs::request_cancel(&mut conn, &job, Some("Worker stopped"), now).await? == Some(JobState::Running) {
            running.push(job);
        }
    }
    let grace = Duration::from_millis(q.config.config.jobs.kill_grace_ms);
    // The dispatcher stops them; if there is none (or it goes away meanwhile), this process
    // stops what is proven to be each worker's and ends the rows.
    let deadline = Instant::now() + grace * 2 + Duration::from_secs(10);
    let mut ownerless = false;
    while store::workers::count_live(&mut conn, &ids).await? > 0 && Instant::now() < deadline {
        if !ownerless && queue::leader(q, &mut conn).await?.is_none() {
            ownerless = true;
            cancel_orphans(&mut conn, &running, grace).await?;
            for row in store::workers::servers(&mut conn, &servers).await? {
                crate::engine::server::recover_row(&row, grace).await;
                store::workers::end(
                    &mut conn,
                    &row.id,
                    WorkerState::Stopped,
                    None,
                    Some("Stopped by request"),
                    now_ms(),
                )
                .await?;
            }
            continue;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = store::workers::get_many(&mut conn, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|w| Stopped { id: w.id, kind: w.kind, pid: w.pid, profile: w.profile, status: w.state })
        .collect())
}

/// Cancel running jobs whose dispatcher is gone: kill each proven worker group, then write
/// `canceled`, fenced by the owner found on the row.
async fn cancel_orphans(conn: &mut store::Conn, ids: &[String], grace: Duration) -> Result<()> {
    for id in ids {
        let Some(row) = store::jobs::get(conn, id).await? else { continue };
        let (Some(owner), Some(epoch)) = (row.owner.clone(), row.epoch) else { continue };
        if row.state != JobState::Running {
            continue;
        }
        let recorded = store::jobs::worker_pids(conn, id, row.attempt).await?;
        crate::engine::proc::stop_proven(&recorded, &crate::engine::proc::Tag::attempt(id, row.attempt), grace).await;
        let o = store::jobs::Outcome {
            id: id.clone(),
            state: job::JobState::Canceled,
            response: None,
            response_chars: None,
            error: None,
            report: None,
            exit_code: None,
            output_tail: None,
            tokens: None,
            input_tokens: None,
            output_tokens: None,
            cached_tokens: None,
            cost_usd: None,
        };
        store::jobs::finish(conn, &o, &owner, epoch, now_ms()).await?;
    }
    Ok(())
}

/// `task_list` parameters.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListParams {
    /// `tasks` (default), `workers`, `profiles`, `workflows` or `status`.
    pub view: Option<String>,
    /// Only tasks of this profile.
    pub worker_id: Option<String>,
    /// Only tasks in this state: waiting, queued, running, succeeded, failed or canceled.
    pub status: Option<String>,
    /// `session` (default: the tasks this client started) or `all`.
    pub scope: Option<String>,
    /// With scope `all`: only the tasks of this session id.
    pub session_id: Option<String>,
    /// Only tasks with these labels: each `key=value`, or `key` for any value (all must match).
    pub label: Option<Vec<String>>,
    /// Only tasks started (created) at or after this time: ISO-8601 (`2026-12-04T10:00:00Z`), a
    /// date (`2026-12-04`, UTC), or a span ago (`90s`, `30m`, `2h`, `7d`).
    pub since: Option<String>,
    /// Only tasks created before this time (same forms as since).
    pub until: Option<String>,
    /// `newest` (default), `oldest`, `priority` (highest first) or `duration` (longest first).
    pub sort: Option<String>,
    /// At most this many rows (default 20).
    pub limit: Option<i64>,
    /// `markdown` (a table) or `json` (default from config ui.defaultListFormat).
    pub format: Option<String>,
}

/// The answer of `task_list`: typed data (its JSON), and its markdown rendering.
#[derive(Debug, Clone)]
pub struct Listing<'q> {
    pub data: ListData<'q>,
    pub markdown: String,
}

/// What a `task_list` view holds; serialized as the bare array (or, for `status`, object).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ListData<'q> {
    Tasks(Vec<Record>),
    Workers(Vec<WorkerShown>),
    Profiles(&'q [profile::Profile]),
    Workflows(&'q [WorkflowDef]),
    Status { tasks: Vec<Record>, workers: Vec<WorkerShown> },
}

/// A live worker as `task_list --view workers` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerShown {
    pub id: String,
    pub job_id: Option<String>,
    /// Every task it serves now (a server worker serves up to `maxSessions` at once).
    pub job_ids: Vec<String>,
    pub kind: WorkerKind,
    pub max_sessions: i64,
    pub last_activity_at: String,
    pub model: Option<String>,
    pub pid: Option<i64>,
    pub profile: String,
    pub session_id: Option<String>,
    pub started_at: String,
    pub status: WorkerState,
}

impl WorkerShown {
    fn of(w: &store::workers::WorkerRow) -> WorkerShown {
        WorkerShown {
            id: w.id.clone(),
            job_id: w.job_id.clone(),
            job_ids: w.jobs(),
            kind: w.kind,
            max_sessions: w.max_sessions,
            last_activity_at: job::iso(w.last_activity_ms),
            model: w.model.clone(),
            pid: w.pid,
            profile: w.profile.clone(),
            session_id: w.session.clone(),
            started_at: job::iso(w.started_ms),
            status: w.state,
        }
    }
}

/// `task_list`. `default_scope` is `all` for the CLI, `session` for MCP; `session_filter` is the
/// CLI's `--session`.
pub async fn list<'q>(q: &'q Queue, caller: &Caller, p: &ListParams, default_scope: &str) -> Result<Listing<'q>> {
    check_session(q, caller)?;
    let view = p.view.as_deref().unwrap_or("tasks");
    let limit = p.limit.unwrap_or(20).max(1);
    let mut conn = q.store.conn().await?;
    match view {
        "tasks" => {
            let now = now_ms();
            let mut filter = list_filter(p, now)?;
            let scope = p.scope.as_deref().unwrap_or(default_scope);
            let session = match scope {
                "all" if !q.config.config.security.session_isolation => p.session_id.clone(),
                "all" | "session" => caller.session.clone(),
                other => return Err(Error::Invalid(format!("Unknown scope \"{other}\": use session or all"))),
            };
            filter.session = if scope == "session" && session.is_none() { Some(String::new()) } else { session };
            filter.limit = limit;
            let rows = store::jobs::list(&mut conn, &filter, now).await?;
            let mut activity = activities(&mut conn, &rows).await?;
            let records: Vec<Record> =
                rows.iter().map(|r| Record { activity: activity.remove(&r.id), ..q.record(r, true, false) }).collect();
            Ok(Listing { markdown: crate::api::format::tasks_table(&records), data: ListData::Tasks(records) })
        }
        "workers" => {
            let workers = store::workers::live_workers(&mut conn).await?;
            Ok(Listing {
                markdown: crate::api::format::workers_table(&workers),
                data: ListData::Workers(workers.iter().map(WorkerShown::of).collect()),
            })
        }
        "profiles" => {
            let profiles = q.profiles.all();
            Ok(Listing { markdown: crate::api::format::profiles_table(profiles), data: ListData::Profiles(profiles) })
        }
        "workflows" => Ok(Listing {
            markdown: crate::api::format::workflows_table(&q.workflows),
            data: ListData::Workflows(&q.workflows),
        }),
        "status" => {
            let workers = store::workers::live_workers(&mut conn).await?;
            let rows = store::jobs::list(&mut conn, &store::jobs::ListFilter { limit, ..Default::default() }, now_ms())
                .await?;
            let records: Vec<Record> = rows.iter().map(|r| q.record(r, true, false)).collect();
            let markdown = crate::api::format::status_view(&workers, &records);
            let workers = workers.iter().map(WorkerShown::of).collect();
            Ok(Listing { markdown, data: ListData::Status { tasks: records, workers } })
        }
        other => {
            Err(Error::Invalid(format!("Unknown view \"{other}\": use tasks, workers, profiles, workflows or status")))
        }
    }
}

/// The filters of a task listing, checked (session and limit are the caller's to set).
fn list_filter(p: &ListParams, now: i64) -> Result<store::jobs::ListFilter> {
    let state = match p.status.as_deref() {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            let words: Vec<&str> = JobState::ALL.iter().map(|w| w.as_str()).collect();
            Error::Invalid(format!("Unknown status \"{s}\": use {}", words.join(", ")))
        })?),
    };
    let mut labels = Vec::new();
    for l in p.label.iter().flatten() {
        let (k, v) = match l.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (l.as_str(), None),
        };
        check_label_key(k)?;
        labels.push((k.to_string(), v));
    }
    let time = |name: &str, given: &Option<String>| -> Result<Option<i64>> {
        given
            .as_deref()
            .map(|t| {
                job::parse_time_or_ago(t, now).ok_or_else(|| {
                    Error::Invalid(format!(
                        "{name} must be an ISO-8601 time, a date (2026-12-04) or a span ago (90s, 30m, 2h, 7d), not \"{t}\""
                    ))
                })
            })
            .transpose()
    };
    let sort = match p.sort.as_deref().unwrap_or("newest") {
        w @ ("newest" | "oldest" | "priority" | "duration") => w.to_string(),
        other => {
            return Err(Error::Invalid(format!("Unknown sort \"{other}\": use newest, oldest, priority or duration")));
        }
    };
    Ok(store::jobs::ListFilter {
        profile: p.worker_id.as_ref().map(|w| w.to_lowercase()),
        state,
        labels,
        since_ms: time("since", &p.since)?,
        until_ms: time("until", &p.until)?,
        sort,
        ..Default::default()
    })
}

/// Workflow runs, newest first (the caller's session only under session isolation).
pub async fn workflow_runs(q: &Queue, caller: &Caller, limit: i64) -> Result<Vec<Record>> {
    check_session(q, caller)?;
    let mut conn = q.store.conn().await?;
    let session = if q.config.config.security.session_isolation { caller.session.as_deref() } else { None };
    let runs = store::workflow::list_runs(&mut conn, session, limit.max(1)).await?;
    let mut out = Vec::with_capacity(runs.len());
    for r in &runs {
        let steps = store::workflow::steps(&mut conn, &r.id).await?;
        out.push(runs::record(r, &steps, Some(q.config.config.ui.max_response_chars as usize), false, now_ms()));
    }
    Ok(out)
}

/// One run with every step and the carry that went into it.
pub async fn workflow_show(q: &Queue, caller: &Caller, id: &str) -> Result<RunShown> {
    check_session(q, caller)?;
    let resolved = resolve_ids(q, &[id.to_string()]).await?;
    let Some(Ok(full)) = resolved.into_iter().next() else { return Err(Error::UnknownTask(id.into())) };
    let mut conn = q.store.conn().await?;
    let run = store::workflow::get_run(&mut conn, &full).await?.ok_or_else(|| Error::UnknownTask(id.into()))?;
    if q.config.config.security.session_isolation && run.session != caller.session {
        return Err(Error::UnknownTask(id.into()));
    }
    let steps = store::workflow::steps(&mut conn, &run.id).await?;
    let steps = steps
        .into_iter()
        .map(|s| StepShown {
            carry_in: s.carry_in,
            error: s.error,
            finished_at: s.finished_ms.map(job::iso),
            id: s.step_id,
            index: s.idx,
            started_at: s.started_ms.map(job::iso),
            status: s.state,
            task_id: s.job_id,
            title: s.title,
            warning: s.warning,
            worker_id: s.worker_id,
        })
        .collect();
    Ok(RunShown {
        carry: run.carry,
        created_at: job::iso(run.created_ms),
        error: run.error,
        finished_at: run.finished_ms.map(job::iso),
        id: run.id,
        name: run.name,
        status: run.state,
        steps,
        task: run.task,
        workflow_id: run.workflow_id,
    })
}

/// `baton status`: the dispatcher, counts by state, the database path.
pub async fn status(q: &Queue) -> Result<Status> {
    let mut conn = q.store.conn().await?;
    let dispatcher = dispatcher_of(q, &mut conn).await?;
    let counts = store::jobs::counts(&mut conn).await?;
    let jobs = job::JobState::ALL
        .iter()
        .map(|st| (st.as_str(), counts.iter().find(|(s, _)| s == st).map_or(0, |(_, n)| *n)))
        .collect();
    let paused = store::pauses::all(&mut conn).await?.iter().map(Paused::of).collect();
    let stale_before = now_ms() - q.config.config.dispatcher.stale_ms as i64;
    let nodes = store::lease::live_nodes(&mut conn, stale_before).await?.map(|rows| {
        rows.into_iter()
            .map(|n| NodeShown {
                id: n.id,
                host: n.host,
                pid: n.pid,
                epoch: n.epoch,
                since: job::iso(n.started_ms),
                heartbeat_at: job::iso(n.heartbeat_ms),
            })
            .collect()
    });
    Ok(Status {
        database: q.store.describe(),
        dispatcher,
        jobs,
        paused,
        project: q.loc.project_dir.display().to_string(),
        nodes,
    })
}

impl Paused {
    fn of(p: &store::pauses::PauseRow) -> Paused {
        Paused { profile: p.profile.clone(), since: job::iso(p.paused_ms), by: p.paused_by.clone() }
    }
}

/// The profile a pause or resume names (None: every profile), checked against the profiles.
fn paused_profile(q: &Queue, profile: Option<&str>) -> Result<String> {
    match profile {
        None => Ok(store::pauses::ALL.to_string()),
        Some(p) => {
            let p = p.to_lowercase();
            if q.profiles.get(&p).is_none() {
                return Err(Error::Invalid(format!(
                    "Unknown profile \"{p}\". Available profiles: {}",
                    q.profiles.ids().join(", ")
                )));
            }
            Ok(p)
        }
    }
}

/// `baton pause`: the dispatcher claims no job of `profile` (or of any profile) until resumed;
/// running jobs go on. Answers every pause now in force.
/// Whether a dispatcher leads the queue now (the lease row and the lock; no job is read).
pub async fn dispatcher_status(q: &Queue) -> Result<DispatcherStatus> {
    let mut conn = q.store.conn().await?;
    dispatcher_of(q, &mut conn).await
}

async fn dispatcher_of(q: &Queue, conn: &mut store::Conn) -> Result<DispatcherStatus> {
    let lease = store::lease::get(conn).await?;
    let alive = queue::leading(q, lease.clone())?.is_some();
    Ok(match (&lease, alive) {
        (Some(l), true) => DispatcherStatus {
            alive: true,
            epoch: Some(l.epoch),
            pid: Some(l.pid),
            since: Some(job::iso(l.started_ms)),
        },
        _ => DispatcherStatus { alive: false, epoch: lease.as_ref().map(|l| l.epoch), pid: None, since: None },
    })
}

pub async fn pause(q: &Queue, caller: &Caller, profile: Option<&str>) -> Result<Vec<Paused>> {
    let profile = paused_profile(q, profile)?;
    let mut conn = q.store.conn().await.map_err(|e| q.store.explain(e))?;
    store::pauses::pause(&mut conn, &profile, &caller.requested_by, now_ms()).await.map_err(|e| q.store.explain(e))?;
    Ok(store::pauses::all(&mut conn).await?.iter().map(Paused::of).collect())
}

/// `baton resume`: lift the pause of `profile`, or every pause. Answers the pauses left.
pub async fn resume(q: &Queue, profile: Option<&str>) -> Result<Vec<Paused>> {
    let mut conn = q.store.conn().await.map_err(|e| q.store.explain(e))?;
    let profile = match profile {
        None => None,
        Some(_) => Some(paused_profile(q, profile)?),
    };
    store::pauses::resume(&mut conn, profile.as_deref()).await.map_err(|e| q.store.explain(e))?;
    Ok(store::pauses::all(&mut conn).await?.iter().map(Paused::of).collect())
}

/// One job by id or prefix, for commands about a single task (logs, retry).
pub(crate) async fn one_row(q: &Queue, caller: &Caller, id: &str) -> Result<JobRow> {
    let resolved = resolve_ids(q, &[id.to_string()]).await?;
    let Some(Ok(full)) = resolved.into_iter().next() else {
        return Err(Error::UnknownTask(id.to_string()));
    };
    let mut conn = q.store.conn().await?;
    let row = store::jobs::get(&mut conn, &full).await?.ok_or_else(|| Error::UnknownTask(id.to_string()))?;
    if q.config.config.security.session_isolation && row.session != caller.session {
        return Err(Error::UnknownTask(id.to_string()));
    }
    Ok(row)
}

/// One activity event as `task events` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventShown {
    pub seq: i64,
    pub attempt: i64,
    pub at: String,
    pub kind: crate::state::EventKind,
    pub text: String,
    pub payload: Option<serde_json::Value>,
}

impl EventShown {
    /// The event as one line of text: sequence, time of day, kind, text.
    pub fn line(&self) -> String {
        let at = self.at.get(11..23).unwrap_or(&self.at);
        format!("{:>5} {at} {:<11} {}", self.seq, self.kind.as_str(), self.text.replace('\n', " "))
    }
}

/// A task's activity events after `after` (oldest first, at most `limit`), and its state now.
pub async fn events(
    q: &Queue,
    caller: &Caller,
    id: &str,
    after: i64,
    limit: i64,
) -> Result<(Vec<EventShown>, JobState)> {
    let row = one_row(q, caller, id).await?;
    let mut conn = q.store.conn().await?;
    let rows = store::events::after(&mut conn, &row.id, after, limit.clamp(1, 10_000)).await?;
    let shown = rows
        .into_iter()
        .map(|e| EventShown {
            seq: e.seq,
            attempt: e.attempt,
            at: job::iso(e.at_ms),
            kind: e.kind,
            text: e.text,
            payload: e.payload.and_then(|p| serde_json::from_str(&p).ok()),
        })
        .collect();
    Ok((shown, row.state))
}

/// `baton task logs`: the paths of an attempt's logs (latest attempt by default) and the job's state.
pub async fn log_paths(
    q: &Queue,
    caller: &Caller,
    id: &str,
    attempt: Option<i64>,
) -> Result<(PathBuf, PathBuf, JobState)> {
    let row = one_row(q, caller, id).await?;
    let attempt = attempt.unwrap_or(row.attempt);
    if attempt < 1 {
        return Err(Error::Invalid(format!("Task {} has not started yet: no logs", row.id)));
    }
    let logs = q.loc.logs_dir();
    Ok((job::log_file(&logs, &row.id, attempt, "out"), job::log_file(&logs, &row.id, attempt, "err"), row.state))
}

/// `baton task retry`: a new job with the same task and profile.
pub async fn retry(q: &Queue, caller: &Caller, id: &str) -> Result<Started> {
    let row = one_row(q, caller, id).await?;
    let attachments: Vec<String> = serde_json::from_str(&row.attachments).unwrap_or_default();
    // A worktree task's project directory is its worktree; its attachments came from the
    // requester's project, and its retry gets a worktree of its own.
    let isolated = row.worktree_id.is_some();
    let project = if isolated { q.loc.project_dir.as_path() } else { Path::new(&row.project_dir) };
    let written = q.loc.state_dir.join("attachments");
    let attachments = attachments
        .into_iter()
        .filter_map(|a| {
            let path = Path::new(&a);
            if path.starts_with(&written) {
                // A base64 attachment, written into the queue's state directory (where no path
                // attachment may point): the new task gets its own copy, sent the same way.
                use base64::Engine;
                let base64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).ok()?);
                let mime = match path.extension().and_then(|e| e.to_str()) {
                    Some("png") => Some("image/png"),
                    Some("jpg") => Some("image/jpeg"),
                    Some("gif") => Some("image/gif"),
                    Some("webp") => Some("image/webp"),
                    Some("txt") => Some("text/plain"),
                    _ => None,
                };
                let kind = if mime.is_some_and(|m| m.starts_with("image/")) {
                    AttachmentType::Image
                } else {
                    AttachmentType::File
                };
                return Some(Attachment { kind, path: None, base64: Some(base64), mime_type: mime.map(Into::into) });
            }
            let rel = path.strip_prefix(project).ok()?.to_string_lossy().into_owned();
            Some(Attachment { kind: AttachmentType::File, path: Some(rel), base64: None, mime_type: None })
        })
        .collect();
    start(
        q,
        caller,
        StartParams {
            task: row.task,
            kind: Some("worker".into()),
            worker_id: Some(row.profile),
            attachments,
            priority: Some(row.priority),
            max_attempts: Some(row.max_attempts),
            timeout_ms: Some(row.timeout_ms as f64),
            isolation: isolated.then(|| "worktree".into()),
            ..Default::default()
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn await_timeout_golden_vector() {
        let inputs = [
            None,
            Some(f64::NAN),
            Some(0.0),
            Some(-5.0),
            Some(1.0),
            Some(500.0),
            Some(1000.0),
            Some(5000.0),
            Some(600_000.0),
            Some(999_999.0),
        ];
        let got: Vec<u64> = inputs.iter().map(|i| normalize_await_timeout(*i)).collect();
        assert_eq!(got, [600_000, 600_000, 0, 0, 1000, 1000, 1000, 5000, 600_000, 600_000]);
    }

    #[test]
    fn job_timeout_normalisation() {
        let n = |t| normalize_job_timeout(t, 600_000, 3_600_000);
        assert_eq!(n(None), 600_000);
        assert_eq!(n(Some(0.0)), 600_000);
        assert_eq!(n(Some(-1.0)), 600_000);
        assert_eq!(n(Some(f64::NAN)), 600_000);
        assert_eq!(n(Some(10.0)), 1000);
        assert_eq!(n(Some(5000.0)), 5000);
        assert_eq!(n(Some(9_999_999.0)), 3_600_000);
    }
}

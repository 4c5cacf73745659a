//! The finish hook (config `hooks.onFinish`): the dispatcher runs it for each row of the
//! `finish_hooks` outbox the schema fills when a task or workflow run ends, after that
//! transaction and outside it. Each hook runs in its own process group with the task's JSON
//! record on stdin, is killed (the whole group) at `hooks.timeoutMs`, and never changes the
//! task: how it ended is written to its row and to the dispatcher's log. A row is counted as
//! started before the process runs and closed after it, so a dispatcher that dies in between
//! leaves it to the next one (at least once), and a closed row never runs again.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::engine::proc;
use crate::error::Result;
use crate::hook::{self, Field};
use crate::job::{Record, now_ms};
use crate::queue::Queue;
use crate::store;
use crate::workflow::runs;

/// How much of a failed hook's output its row and the log keep (the end).
const TAIL_CHARS: usize = 2000;

/// How one hook ended.
#[derive(Debug)]
pub struct HookEnd {
    pub task_id: String,
    pub exit_code: Option<i64>,
    /// Why it failed (exit code, signal, timeout, could not start), with the end of its output.
    pub error: Option<String>,
}

/// The hooks this dispatcher runs: the argv it last wrote to the `hooks` row and those in flight.
pub struct Hooks {
    /// What the `hooks` row says, as this dispatcher wrote it (None: not synced yet).
    synced: Option<Option<Vec<String>>>,
    running: HashSet<String>,
    tx: mpsc::UnboundedSender<HookEnd>,
    pub rx: mpsc::UnboundedReceiver<HookEnd>,
}

impl Hooks {
    pub fn new() -> Hooks {
        let (tx, rx) = mpsc::unbounded_channel();
        Hooks { synced: None, running: HashSet::new(), tx, rx }
    }

    /// Hooks running now.
    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    /// Write the configured hook to the `hooks` row when it differs from what was written, so
    /// the schema's triggers record endings exactly while a hook is configured.
    pub async fn sync(&mut self, q: &Queue, owner: &str, epoch: i64) -> Result<()> {
        let on_finish = &q.config.config.hooks.on_finish;
        let wanted = (!on_finish.is_empty()).then(|| on_finish.clone());
        if self.synced.as_ref() == Some(&wanted) {
            return Ok(());
        }
        let mut conn = q.store.conn().await?;
        if store::hooks::sync(&mut conn, wanted.as_deref(), owner, epoch, now_ms()).await? {
            tracing::info!(hook = ?wanted, "hooks.onFinish set");
        }
        self.synced = Some(wanted);
        Ok(())
    }

    /// Start hooks for pending rows while fewer than `hooks.maxConcurrent` run. Every pending
    /// row it leaves waits for a hook in flight: rows it cannot run are closed instead, so
    /// "hooks in flight" is all an idle dispatcher needs to know.
    pub async fn start_pending(&mut self, q: &Queue, owner: &str, epoch: i64) -> Result<()> {
        let Some(Some(argv)) = self.synced.clone() else { return Ok(()) };
        let cfg = &q.config.config.hooks;
        let room = (cfg.max_concurrent as usize).saturating_sub(self.running.len());
        if room == 0 {
            return Ok(());
        }
        let mut conn = q.store.conn().await?;
        let mut candidates = store::hooks::pending(&mut conn, (room + self.running.len()) as i64).await?;
        candidates.retain(|p| !self.running.contains(&p.task_id));
        for p in candidates.into_iter().take(room) {
            if !store::hooks::begin(&mut conn, &p.task_id, owner, epoch, now_ms()).await? {
                if p.attempts >= store::hooks::MAX_ATTEMPTS {
                    tracing::warn!(task_id = %p.task_id, "finish hook given up: the dispatcher stopped while it ran, {} times", p.attempts);
                }
                continue;
            }
            let Some(record) = finished_record(q, &mut conn, &p.task_id).await? else {
                let error = "the task is no longer in the queue";
                store::hooks::done(&mut conn, &p.task_id, None, Some(error), owner, epoch, now_ms()).await?;
                continue;
            };
            self.running.insert(p.task_id.clone());
            let tx = self.tx.clone();
            let dir = q.loc.project_dir.clone();
            let argv = argv.clone();
            let timeout = Duration::from_millis(cfg.timeout_ms);
            tokio::spawn(async move {
                let end = run(&argv, &record, &dir, timeout).await;
                let _ = tx.send(end);
            });
        }
        Ok(())
    }

    /// Write how a hook ended (and log a failure); the task itself is never touched.
    pub async fn record_end(&mut self, q: &Queue, end: HookEnd, owner: &str, epoch: i64) -> Result<()> {
        self.running.remove(&end.task_id);
        match &end.error {
            None => tracing::debug!(task_id = %end.task_id, "finish hook ran"),
            Some(e) => tracing::warn!(task_id = %end.task_id, "finish hook failed: {e}"),
        }
        let mut conn = q.store.conn().await?;
        store::hooks::done(&mut conn, &end.task_id, end.exit_code, end.error.as_deref(), owner, epoch, now_ms())
            .await?;
        Ok(())
    }
}

/// The record of a finished job or workflow run, as `task show --json` gives it; a run's
/// `logPath` is its last step's.
async fn finished_record(q: &Queue, conn: &mut store::Conn, id: &str) -> Result<Option<Record>> {
    if let Some(row) = store::jobs::get(conn, id).await? {
        return Ok(Some(q.record(&row, false, false)));
    }
    let Some(run) = store::workflow::get_run(conn, id).await? else { return Ok(None) };
    let steps = store::workflow::steps(conn, id).await?;
    let mut record = runs::record(&run, &steps, Some(q.config.config.ui.max_response_chars as usize), false, now_ms());
    if let Some(step_job) = steps.iter().rev().find_map(|s| s.job_id.as_deref())
        && let Some(row) = store::jobs::get(conn, step_job).await?
    {
        record.log_path = q.record(&row, false, false).log_path;
    }
    Ok(Some(record))
}

/// The value of one placeholder for a record.
fn value(record: &Record, field: Field<'_>) -> Option<String> {
    match field {
        Field::TaskId => Some(record.id.clone()),
        Field::Status => Some(record.status.to_string()),
        Field::ExitCode => record.exit_code.map(|c| c.to_string()),
        Field::Profile => Some(record.worker_id.clone()),
        Field::LogPath => record.log_path.clone(),
        Field::DurationMs => record.duration_ms.map(|d| d.to_string()),
        Field::Label(key) => record.labels.as_ref()?.get(key)?.as_str().map(str::to_string),
    }
}

/// The hook's argv for a record.
pub fn argv_for(template: &[String], record: &Record) -> Vec<String> {
    template.iter().map(|a| hook::expand(a, &|f| value(record, f)).into_owned()).collect()
}

/// Run the hook for one record: its own process group, cwd the project, the record on stdin
/// and in `BATON_*` variables; the whole group killed at `timeout`.
async fn run(template: &[String], record: &Record, dir: &std::path::Path, timeout: Duration) -> HookEnd {
    let argv = argv_for(template, record);
    let ended = |exit_code, error| HookEnd { task_id: record.id.clone(), exit_code, error };
    let Some((program, args)) = argv.split_first() else {
        return ended(None, Some("hooks.onFinish is empty".into()));
    };
    let var = |f| value(record, f).unwrap_or_default();
    let mut c = tokio::process::Command::new(program);
    c.args(args)
        .current_dir(dir)
        .env("PWD", dir)
        .env("BATON_TASK_ID", &record.id)
        .env("BATON_STATUS", var(Field::Status))
        .env("BATON_EXIT_CODE", var(Field::ExitCode))
        .env("BATON_PROFILE", &record.worker_id)
        .env("BATON_LOG_PATH", var(Field::LogPath))
        .env("BATON_DURATION_MS", var(Field::DurationMs))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match c.spawn() {
        Ok(child) => child,
        Err(e) => return ended(None, Some(format!("`{program}` could not start: {e}"))),
    };
    let pgid = child.id().map_or(0, |p| p as i32);
    let input = serde_json::to_vec(record).unwrap_or_default();
    // A hook that does not read its stdin is fine: a broken pipe is not its failure.
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
    }
    let out = tokio::spawn(tail(child.stdout.take()));
    let err = tokio::spawn(tail(child.stderr.take()));
    let status = tokio::time::timeout(timeout, child.wait()).await;
    // What the hook left running in its group goes with it, at its end or at the timeout.
    proc::signal_group(pgid, Signal::SIGKILL);
    let status = match status {
        Err(_) => {
            let _ = child.wait().await;
            proc::reap_group(pgid, None);
            return ended(None, Some(format!("timed out after {} ms: killed", timeout.as_millis())));
        }
        Ok(Err(e)) => return ended(None, Some(format!("waiting for the hook failed: {e}"))),
        Ok(Ok(s)) => s,
    };
    proc::reap_group(pgid, None);
    // A process that left the group may hold the pipes open: its output is not waited for.
    let grace = Duration::from_millis(500);
    let out = tokio::time::timeout(grace, out).await.ok().and_then(|r| r.ok()).unwrap_or_default();
    let err = tokio::time::timeout(grace, err).await.ok().and_then(|r| r.ok()).unwrap_or_default();
    let code = status.code().map(i64::from);
    if status.success() {
        return ended(code, None);
    }
    let how = match code {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".into(),
    };
    let said = if err.trim().is_empty() { out } else { err };
    let said = said.trim_end();
    ended(code, Some(if said.is_empty() { how } else { format!("{how}: {said}") }))
}

/// Read a pipe to its end, keeping the last [`TAIL_CHARS`] chars.
async fn tail<R: AsyncRead + Unpin>(pipe: Option<R>) -> String {
    let Some(mut pipe) = pipe else { return String::new() };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > TAIL_CHARS * 8 {
                    kept.drain(..kept.len() - TAIL_CHARS * 4);
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&kept);
    let skip = text.chars().count().saturating_sub(TAIL_CHARS);
    text.chars().skip(skip).collect()
}

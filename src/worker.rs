//! One oneshot worker process: spawning it (own process group, null stdin, logs to files, the
//! guard and attempt tag in its environment) and watching it until it exits, times out or is
//! canceled.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::job::{JobRow, log_file};
use crate::proc;

/// Variables removed from every worker's environment: nested `claude -p` refuses to start with them.
pub const REMOVED_ENV: [&str; 2] = ["CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT"];

/// What a worker needs from the dispatcher's configuration.
#[derive(Debug, Clone)]
pub struct SpawnEnv {
    /// The recursive-spawn guard variable (`security.recursiveSpawnEnvVar`).
    pub guard_var: String,
    pub db: PathBuf,
    pub logs_dir: PathBuf,
}

/// A spawned worker.
pub struct Spawned {
    pub child: Child,
    pub pid: i32,
    pub start: u64,
}

fn open_log(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("opening log {}", path.display()), e))
}

/// The attempt's open log files, made ready before the spawn (blocking filesystem work, done
/// off the runtime's threads).
pub struct Logs {
    out: std::fs::File,
    err: std::fs::File,
}

/// Create the attempt's log directory and files (0600).
pub fn prepare_logs(job: &JobRow, env: &SpawnEnv) -> Result<Logs> {
    crate::location::create_private_dir(&env.logs_dir.join(&job.id))?;
    Ok(Logs {
        out: open_log(&log_file(&env.logs_dir, &job.id, job.attempt, "out"))?,
        err: open_log(&log_file(&env.logs_dir, &job.id, job.attempt, "err"))?,
    })
}

/// Spawn the worker of a claimed job: argv resolved at enqueue, in the job's project directory,
/// in a process group of its own, stdout/stderr to the attempt's log files.
#[tracing::instrument(skip_all, fields(task_id = %job.id, attempt = job.attempt), err)]
pub fn spawn(job: &JobRow, env: &SpawnEnv, logs: Logs) -> Result<Spawned> {
    let argv: Vec<String> = serde_json::from_str(&job.argv)?;
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::Invalid("the job's runner argv is empty".into()));
    };
    let profile_env: BTreeMap<String, String> = serde_json::from_str(&job.env)?;
    let stdin_prompt = job.prompt_stdin != 0;

    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&job.project_dir)
        .env(&env.guard_var, "true")
        .env("BATON_TASK_ID", &job.id)
        .env("BATON_ATTEMPT", job.attempt.to_string())
        .env("BATON_DB", &env.db)
        .env("BATON_PROFILE", &job.profile)
        .envs(&profile_env)
        // Programs that trust $PWD over getcwd() (opencode does) must see the project, not
        // the directory the dispatcher was started from.
        .env("PWD", &job.project_dir)
        .stdin(if stdin_prompt { Stdio::piped() } else { Stdio::null() })
        .stdout(logs.out)
        .stderr(logs.err)
        .process_group(0)
        .kill_on_drop(false);
    for var in REMOVED_ENV {
        cmd.env_remove(var);
    }
    let mut child =
        cmd.spawn().map_err(|e| Error::io(format!("starting worker `{program}` in {}", job.project_dir), e))?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let start = proc::start_time(pid).unwrap_or(0);
    if stdin_prompt && let Some(mut stdin) = child.stdin.take() {
        let prompt = job.task.clone().into_bytes();
        tokio::spawn(async move {
            let _ = stdin.write_all(&prompt).await;
            let _ = stdin.shutdown().await;
        });
    }
    Ok(Spawned { child, pid, start })
}

/// How a watched worker ended.
#[derive(Debug)]
pub enum Ending {
    /// It could not be started at all.
    SpawnFailed(String),
    /// The process exited on its own (or by a signal baton did not send).
    Exited(ExitStatus),
    /// Past its timeout: the group was killed.
    TimedOut,
    /// A cancel was requested: the group was killed (or a server worker gave the job up).
    Canceled,
    /// A server worker answered the job.
    Answered { response: String, tokens: Option<i64>, cost_usd: Option<f64> },
    /// A server worker reported that the job failed.
    Reported(String),
    /// A server worker broke the protocol (it is replaced).
    Violation(String),
}

/// Watch a worker until it ends: its own exit, its timeout, or a cancel. On timeout or cancel
/// the whole group gets SIGTERM, `grace`, then SIGKILL, and this returns only once the group
/// is gone. After a normal exit, stragglers left in the group are killed when `kill_stragglers`.
pub async fn watch(
    mut spawned: Spawned,
    timeout: Duration,
    grace: Duration,
    kill_stragglers: bool,
    cancel: oneshot::Receiver<()>,
) -> Ending {
    let pgid = spawned.pid;
    let ending = tokio::select! {
        status = spawned.child.wait() => match status {
            Ok(s) => Ending::Exited(s),
            // wait() failing means the child is not ours to wait on any more: treat as killed.
            Err(_) => Ending::Canceled,
        },
        _ = tokio::time::sleep(timeout) => Ending::TimedOut,
        _ = cancel => Ending::Canceled,
    };
    match ending {
        Ending::Exited(_) => {
            if kill_stragglers {
                let left = proc::terminate_group(pgid, grace, None).await;
                if !left.is_empty() {
                    tracing::info!(pgid, pids = ?left, "killed stragglers of a finished worker");
                }
            } else {
                proc::reap_group(pgid, None);
            }
        }
        Ending::SpawnFailed(_) | Ending::Answered { .. } | Ending::Reported(_) | Ending::Violation(_) => {}
        Ending::TimedOut | Ending::Canceled => {
            proc::terminate_group(pgid, grace, Some(pgid)).await;
            // The leader is the runtime's child: collect its status so it does not linger.
            let _ = tokio::time::timeout(Duration::from_secs(5), spawned.child.wait()).await;
            proc::wait_group_gone(pgid, Duration::from_secs(5), None).await;
        }
    }
    ending
}

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

use crate::engine::proc;
use crate::error::{Error, Result};
use crate::job::{JobRow, log_file};

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

/// Pids of worker leaders the runtime waits on itself. The zombie reaper skips them, and a
/// spawn registers its pid under the same lock, so a leader that exits at once is never reaped
/// behind the runtime's back.
pub type Leaders = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<i32>>>;

/// Who a worker process is, as its environment tags it (recovery proves it by this tag).
#[derive(Debug, Clone, Copy)]
pub enum Tag<'a> {
    /// A oneshot worker: one job attempt.
    Attempt { task_id: &'a str, attempt: i64 },
    /// A server worker.
    Server { worker_id: &'a str },
}

/// What to start: the argv, where, as whom, with the profile's environment and the stdio.
pub struct Process<'a> {
    pub argv: &'a [String],
    pub cwd: &'a str,
    pub tag: Tag<'a>,
    pub profile: &'a str,
    pub env: &'a BTreeMap<String, String>,
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// The one way baton starts a worker process, oneshot or server: in a process group of its
/// own, in its project directory (with `PWD` set to it: programs that trust $PWD over getcwd(),
/// as opencode does, must see the project), with the recursive-spawn guard, its tag,
/// `BATON_DB` and `BATON_PROFILE`, the profile's environment over the dispatcher's, and the
/// variables nested agent CLIs refuse removed. Its pid joins `leaders` under their lock.
pub fn start(p: Process<'_>, env: &SpawnEnv, leaders: &Leaders) -> Result<Child> {
    let Some((program, args)) = p.argv.split_first() else {
        return Err(Error::Invalid("the runner's command is empty".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(p.cwd)
        .env(&env.guard_var, "true")
        .env("BATON_DB", &env.db)
        .env("BATON_PROFILE", p.profile)
        .envs(p.env)
        .env("PWD", p.cwd)
        .stdin(p.stdin)
        .stdout(p.stdout)
        .stderr(p.stderr)
        .process_group(0)
        .kill_on_drop(false);
    match p.tag {
        Tag::Attempt { task_id, attempt } => {
            cmd.env("BATON_TASK_ID", task_id).env("BATON_ATTEMPT", attempt.to_string())
        }
        Tag::Server { worker_id } => cmd.env("BATON_WORKER_ID", worker_id),
    };
    for var in REMOVED_ENV {
        cmd.env_remove(var);
    }
    let mut leaders = leaders.lock().unwrap_or_else(|e| e.into_inner());
    let what = if matches!(p.tag, Tag::Server { .. }) { "server worker" } else { "worker" };
    let child = cmd.spawn().map_err(|e| start_error(what, program, p.cwd, e))?;
    if let Some(pid) = child.id() {
        leaders.insert(pid as i32);
    }
    Ok(child)
}

/// Why a worker could not start, in words: a program that is not there is named with the
/// PATH it was looked for in.
fn start_error(what: &str, program: &str, cwd: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound && !program.contains('/') {
        return Error::NotFound { program: program.to_string(), path: std::env::var("PATH").unwrap_or_default() };
    }
    Error::io(format!("starting {what} `{program}` in {cwd}"), e)
}

/// How a worker's exit reads: "exited with code N" or "was killed by signal N".
pub fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".into(),
    }
}

/// The exit code a row records: the code, or 128 + the signal.
pub fn exit_code(status: &ExitStatus) -> i64 {
    use std::os::unix::process::ExitStatusExt;
    status.code().map(i64::from).or(status.signal().map(|s| 128 + i64::from(s))).unwrap_or(-1)
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

/// The attempt's open log files, made ready before the spawn.
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

/// Spawn the worker of a claimed job: argv resolved at enqueue, stdout/stderr to the attempt's
/// log files, the prompt on stdin when the runner takes it there.
#[tracing::instrument(skip_all, fields(task_id = %job.id, attempt = job.attempt), err)]
pub fn spawn(job: &JobRow, env: &SpawnEnv, logs: Logs, leaders: &Leaders) -> Result<Spawned> {
    let argv: Vec<String> = serde_json::from_str(&job.argv)?;
    let profile_env: BTreeMap<String, String> = serde_json::from_str(&job.env)?;
    let stdin_prompt = job.prompt_stdin != 0;
    let process = Process {
        argv: &argv,
        cwd: &job.project_dir,
        tag: Tag::Attempt { task_id: &job.id, attempt: job.attempt },
        profile: &job.profile,
        env: &profile_env,
        stdin: if stdin_prompt { Stdio::piped() } else { Stdio::null() },
        stdout: logs.out.into(),
        stderr: logs.err.into(),
    };
    let mut child = start(process, env, leaders)?;
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

/// A test hook, compiled only with the `test-hooks` feature: a pause of `BATON_TEST_SPAWN_DELAY_MS`
/// between a worker's spawn and the record of its pid, so tests can kill the dispatcher inside
/// that window. Without the feature it is nothing.
pub async fn spawn_window() {
    #[cfg(feature = "test-hooks")]
    if let Some(ms) = std::env::var("BATON_TEST_SPAWN_DELAY_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// How a watched worker ended.
#[derive(Debug)]
pub enum Ending {
    /// It could not be started at all.
    SpawnFailed(String),
    /// Its program is not on PATH (the message says so).
    NotFound { program: String, message: String },
    /// The process exited on its own (or by a signal baton did not send).
    Exited(ExitStatus),
    /// Past its timeout: the group was killed.
    TimedOut,
    /// A cancel was requested: the group was killed (or a server worker gave the job up).
    Canceled,
    /// A server worker answered the job.
    Answered { response: String, tokens: crate::agent::extract::Tokens, cost_usd: Option<f64> },
    /// The agent did what its profile forbids (or asked what the profile answers never): the
    /// task fails with this message and the worker is stopped.
    Forbidden(String),
    /// A server worker reported that the job failed.
    Reported(String),
    /// A server worker broke the protocol (it is replaced).
    Violation(String),
    /// The server worker serving it was stopped for another reason (another task's forbidden
    /// tool call or unanswered cancel, a stop request): why.
    Stopped(String),
    /// Its worktree could not be made ready (git failed, its setup command failed): no worker
    /// was started.
    Unprepared(String),
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
        Ending::SpawnFailed(_)
        | Ending::NotFound { .. }
        | Ending::Answered { .. }
        | Ending::Reported(_)
        | Ending::Forbidden(_)
        | Ending::Stopped(_)
        | Ending::Unprepared(_)
        | Ending::Violation(_) => {}
        Ending::TimedOut | Ending::Canceled => {
            proc::terminate_group(pgid, grace, Some(pgid)).await;
            // The leader is the runtime's child: collect its status so it does not linger.
            let _ = tokio::time::timeout(Duration::from_secs(5), spawned.child.wait()).await;
            proc::wait_group_gone(pgid, Duration::from_secs(5), None).await;
        }
    }
    ending
}

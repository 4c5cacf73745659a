//! Server workers: one long-lived process per server profile per queue, fed jobs one at a time
//! over a JSON-lines protocol on its stdin and stdout.
//!
//! # The protocol (version 1)
//!
//! One JSON object per line, UTF-8, `\n`-terminated; a line over 1 MiB is a protocol violation.
//!
//! - The worker, once started, writes `{"type":"ready"}`.
//! - baton writes one job at a time:
//!   `{"type":"job","id":TASK_ID,"attempt":N,"prompt":TEXT,"profile":ID,"model":MODEL|null,"cwd":DIR,"attachments":[PATH...]}`.
//! - The worker answers that job with exactly one of
//!   `{"type":"result","id":TASK_ID,"response":TEXT}` (optionally `"tokens":N`, `"costUsd":X`), or
//!   `{"type":"error","id":TASK_ID,"error":TEXT}` (the job fails with that message).
//! - To cancel, baton writes `{"type":"cancel","id":TASK_ID}`; the worker should answer the job
//!   (with either message) within `jobs.killGraceMs`, or it is stopped.
//! - There are no heartbeats: baton watches the process itself, and a job's timeout bounds a
//!   worker that hangs. To stop a worker, baton closes its stdin and gives it
//!   `jobs.killGraceMs` to exit, then sends its process group SIGTERM and, after
//!   `jobs.killGraceMs` more, SIGKILL.
//! - Anything else on stdout (a line that is not one of these messages, an answer for another
//!   task id, an answer while no job is in flight, an oversized line) is a protocol violation:
//!   the job fails with it and the worker is replaced. The worker's stderr goes to its log,
//!   `.baton/logs/workers/<worker id>.log`.
//!
//! # Spawn deduplication and limits
//!
//! A worker's row is registered `starting` before its process exists, in one statement that
//! also checks `limits.maxWorkers`, `limits.maxWorkersPerSession` and `limits.spawnRateLimitMs`;
//! the unique partial index `workers_one_server` makes a second live server worker of a profile
//! impossible. Within the dispatcher, jobs of one profile take turns on its slot, so concurrent
//! demand shares one spawn. A process whose registration cannot be completed is shut down.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

use crate::engine::proc;
use crate::engine::worker::{self, Ending, SpawnEnv, describe_exit, exit_code};
use crate::error::{Error, Result};
use crate::job::{JobRow, now_ms};
use crate::state::WorkerState;
use crate::store;
use crate::store::workers::{NewServer, Registered, SpawnLimits};

/// The longest protocol line, newline excluded.
pub const MAX_LINE: usize = 1 << 20;

/// After a worker's exit, how long its output is still read when something else holds it open.
const EXIT_DRAIN: Duration = Duration::from_millis(100);

/// What baton writes to a server worker.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Request<'a> {
    Job {
        id: &'a str,
        attempt: i64,
        prompt: &'a str,
        profile: &'a str,
        model: Option<&'a str>,
        cwd: &'a str,
        attachments: Vec<String>,
    },
    Cancel {
        id: &'a str,
    },
}

/// What a server worker writes.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Message {
    Ready {},
    Result {
        id: String,
        response: String,
        #[serde(default)]
        tokens: Option<i64>,
        #[serde(default, rename = "costUsd")]
        cost_usd: Option<f64>,
    },
    Error {
        id: String,
        error: String,
    },
}

/// What the reader of a worker's stdout reports.
#[derive(Debug)]
enum Event {
    Message(Message),
    /// A line that breaks the protocol; nothing after it is read.
    Violation(String),
    /// The process exited (its row was ended by the reader if nobody ended it first).
    Exited(ExitStatus),
}

/// A running server worker, held by its profile's slot.
struct Server {
    id: String,
    pid: i32,
    /// What it was started as: a job whose profile now runs otherwise needs a new one.
    spec: ServerSpec,
    stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<Event>,
}

/// How to start a profile's server worker: from the job that needs it, or from the config
/// (`workers`, started with the dispatcher).
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub profile: String,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub model: Option<String>,
    pub cwd: String,
    pub session: Option<String>,
}

impl ServerSpec {
    /// Does a worker started as `self` run what `other` asks for (its command, environment
    /// and model)?
    fn runs_as(&self, other: &ServerSpec) -> bool {
        self.argv == other.argv && self.env == other.env && self.model == other.model
    }

    fn of_job(job: &JobRow) -> Result<ServerSpec> {
        Ok(ServerSpec {
            profile: job.profile.clone(),
            argv: serde_json::from_str(&job.argv)?,
            env: serde_json::from_str(&job.env)?,
            model: job.model.clone(),
            cwd: job.project_dir.clone(),
            session: job.session.clone(),
        })
    }
}

/// What the pool needs from its dispatcher.
#[derive(Clone)]
pub struct PoolContext {
    pub store: store::Store,
    pub owner: String,
    pub epoch: i64,
    pub spawn_env: SpawnEnv,
    /// Worker pids the runtime waits on itself (the zombie reaper skips them).
    pub leaders: worker::Leaders,
}

impl PoolContext {
    async fn conn(&self) -> Result<store::Conn> {
        self.store.conn().await
    }
}

/// The dispatcher's server workers: one slot per profile; a job holds its profile's slot for
/// its whole run, so jobs of one profile take turns and share one spawn.
pub struct Pool {
    ctx: PoolContext,
    slots: std::sync::Mutex<HashMap<String, Arc<Mutex<Option<Server>>>>>,
    /// Workers with a stop in progress (so a repeated request starts no second stop).
    stopping: std::sync::Mutex<HashSet<String>>,
}

/// A job's cancel request, as a future that can be awaited again and again (it resolves once).
pub struct Cancel(Option<oneshot::Receiver<()>>);

impl Cancel {
    pub fn new(rx: oneshot::Receiver<()>) -> Cancel {
        Cancel(Some(rx))
    }

    /// Never resolves.
    fn never() -> Cancel {
        Cancel(None)
    }

    /// Resolves when the cancel arrives (never, once it has, or if the sender went away).
    async fn requested(&mut self) {
        if let Some(rx) = self.0.as_mut() {
            let got = rx.await;
            self.0 = None;
            if got.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

impl Pool {
    pub fn new(ctx: PoolContext) -> Pool {
        Pool { ctx, slots: Default::default(), stopping: Default::default() }
    }

    fn slot(&self, profile: &str) -> Arc<Mutex<Option<Server>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(profile.to_string()).or_default().clone()
    }

    fn all_slots(&self) -> Vec<Arc<Mutex<Option<Server>>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Run one claimed job on its profile's server worker, starting one when there is none
    /// (or the one there died). Returns how the job ended.
    pub async fn run_job(&self, job: &JobRow, limits: SpawnLimits, grace: Duration, mut cancel: Cancel) -> Ending {
        let deadline = Instant::now() + Duration::from_millis(job.timeout_ms.max(1) as u64);
        let spec = match ServerSpec::of_job(job) {
            Ok(spec) => spec,
            Err(e) => return Ending::SpawnFailed(format!("the job's server command is unreadable: {e}")),
        };
        let slot = self.slot(&job.profile);
        let mut held = slot.lock().await;
        // A fit worker (the one held, or a new one) that takes the job; a stop request can take
        // it away in between, so a few tries.
        for _ in 0..3 {
            self.drop_unfit(&mut held, &spec, grace).await;
            let server = match held.as_mut() {
                Some(s) => s,
                None => match self.start(&spec, limits, grace, deadline, &mut cancel).await {
                    Ok(s) => held.insert(s),
                    Err(ending) => return ending,
                },
            };
            match store_busy(&self.ctx, &server.id, job).await {
                Ok(true) => return self.serve(&mut held, job, deadline, grace, &mut cancel).await,
                Ok(false) => {
                    if let Some(s) = held.take() {
                        self.retire(s, WorkerState::Stopped, "Stopped by request", grace).await;
                    }
                }
                Err(e) => return Ending::SpawnFailed(format!("recording the worker busy: {e}")),
            }
        }
        Ending::SpawnFailed("the server worker was stopped before it could take the task".into())
    }

    /// Serve the job on the held (busy) worker. The worker stays for the next job only when it
    /// answered (an acknowledged cancel included); else it is stopped (an exit's row was already
    /// ended by its reader; stragglers of its group go with it).
    async fn serve(
        &self,
        held: &mut Option<Server>,
        job: &JobRow,
        deadline: Instant,
        grace: Duration,
        cancel: &mut Cancel,
    ) -> Ending {
        let Some(server) = held.as_mut() else {
            return Ending::SpawnFailed("no server worker".into());
        };
        let ending = server.serve(job, deadline, grace, cancel).await;
        let (state, why) = match &ending {
            Ending::Answered { .. } | Ending::Reported(_) => return ending,
            Ending::Canceled if server.stdin.is_some() => return ending,
            Ending::Canceled => (WorkerState::Stopped, "It did not answer a cancel in time".to_string()),
            Ending::Violation(v) => (WorkerState::Error, format!("Protocol violation: {v}")),
            Ending::TimedOut => (WorkerState::Error, format!("Task {} timed out after {}ms", job.id, job.timeout_ms)),
            Ending::Exited(status) => (WorkerState::Error, format!("It {}", describe_exit(status))),
            Ending::SpawnFailed(e) | Ending::NotFound { message: e, .. } => (WorkerState::Error, e.clone()),
        };
        if let Some(s) = held.take() {
            self.retire(s, state, &why, grace).await;
        }
        ending
    }

    /// Start a profile's server worker now (config `workers`), unless a fit one is there.
    pub async fn ensure(&self, spec: &ServerSpec, limits: SpawnLimits, grace: Duration, startup: Duration) {
        let slot = self.slot(&spec.profile);
        let mut held = slot.lock().await;
        self.drop_unfit(&mut held, spec, grace).await;
        if held.is_none() {
            match self.start(spec, limits, grace, Instant::now() + startup, &mut Cancel::never()).await {
                Ok(s) => *held = Some(s),
                Err(e) => tracing::warn!(profile = %spec.profile, "could not start a server worker: {e:?}"),
            }
        }
    }

    /// Stop the held worker if it died or spoke while idle (an error), or if its profile now
    /// runs otherwise than it was started (the config changed: it is replaced), leaving the
    /// slot empty.
    async fn drop_unfit(&self, held: &mut Option<Server>, spec: &ServerSpec, grace: Duration) {
        if let Some(why) = held.as_mut().and_then(|s| s.check_idle().err())
            && let Some(s) = held.take()
        {
            self.retire(s, WorkerState::Error, &why, grace).await;
        }
        if held.as_ref().is_some_and(|s| !s.spec.runs_as(spec))
            && let Some(s) = held.take()
        {
            tracing::info!(worker = %s.id, profile = %spec.profile, "the profile's command changed; replacing its server worker");
            self.retire(s, WorkerState::Stopped, "Replaced: its profile's command changed", grace).await;
        }
    }

    /// Stop one of our server workers on request (`baton workers stop`). A job on it was asked
    /// to cancel with the same request; this waits for its turn on the profile's slot.
    pub async fn stop(&self, worker_id: &str, profile: &str, grace: Duration) {
        if !self.stopping.lock().unwrap_or_else(|e| e.into_inner()).insert(worker_id.to_string()) {
            return;
        }
        let slot = self.slot(profile);
        let mut held = slot.lock().await;
        if held.as_ref().is_some_and(|s| s.id == worker_id)
            && let Some(s) = held.take()
        {
            self.retire(s, WorkerState::Stopped, "Stopped by request", grace).await;
        }
        drop(held);
        // Not in a slot (it is starting, or already gone): end its row if it is still live.
        let _ = end_row(&self.ctx, worker_id, WorkerState::Stopped, None, Some("Stopped by request")).await;
        self.stopping.lock().unwrap_or_else(|e| e.into_inner()).remove(worker_id);
    }

    /// Stop every idle server worker (the dispatcher is leaving). A worker still busy with a
    /// task past the shutdown grace is left, like a oneshot worker, to the next dispatcher's
    /// recovery (its stdin closes when this process exits).
    pub async fn shutdown(&self, grace: Duration) {
        for slot in self.all_slots() {
            let Ok(mut held) = slot.try_lock() else { continue };
            if let Some(s) = held.take() {
                self.retire(s, WorkerState::Stopped, "Its dispatcher stopped", grace).await;
            }
        }
    }

    /// Has this dispatcher run any server worker? (Until then it has no stop requests to read.)
    pub fn has_slots(&self) -> bool {
        !self.slots.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// End a worker: its row first (so its reader does not record a plain exit); then close its
    /// stdin and give it `grace` to exit; then its process group gets SIGTERM and, after
    /// `grace`, SIGKILL (stragglers of a worker that did exit go the same way).
    async fn retire(&self, mut s: Server, state: WorkerState, why: &str, grace: Duration) {
        tracing::info!(worker = %s.id, state = %state, "stopping a server worker: {why}");
        if let Err(e) = end_row(&self.ctx, &s.id, state, None, Some(why)).await {
            tracing::warn!(worker = %s.id, "could not end the worker's row: {e}");
        }
        drop(s.stdin.take());
        let exited = s.wait_exit(grace).await.is_some();
        proc::terminate_group(s.pid, grace, Some(s.pid)).await;
        if !exited {
            s.wait_exit(Duration::from_secs(10)).await;
        }
    }

    /// Register, spawn, record and wait for the ready line of a new server worker.
    async fn start(
        &self,
        spec: &ServerSpec,
        limits: SpawnLimits,
        grace: Duration,
        deadline: Instant,
        cancel: &mut Cancel,
    ) -> std::result::Result<Server, Ending> {
        let failed = Ending::SpawnFailed;
        let id = uuid::Uuid::new_v4().to_string();
        let mut recovered = false;
        loop {
            let row = NewServer {
                id: &id,
                profile: &spec.profile,
                owner: &self.ctx.owner,
                epoch: self.ctx.epoch,
                session: spec.session.as_deref(),
                model: spec.model.as_deref(),
                now: now_ms(),
            };
            let registered = async { store::workers::register(&mut *self.ctx.conn().await?, &row, limits).await }.await;
            match registered.map_err(|e| failed(format!("registering the worker: {e}")))? {
                Registered::New => break,
                Registered::Exists if !recovered => {
                    // A live row of this profile that no slot holds: a lost worker's. Prove and
                    // stop its process, end the row, and try once more.
                    recovered = true;
                    recover_profile(&self.ctx, &spec.profile, grace).await;
                }
                Registered::Exists => return Err(failed("another live server worker of this profile exists".into())),
                Registered::WorkerLimit => {
                    return Err(failed(format!("Worker limit reached (max: {})", limits.max_workers)));
                }
                Registered::SessionLimit => {
                    return Err(failed(format!("Session worker limit reached (max: {})", limits.max_per_session)));
                }
                Registered::NotLeader => return Err(failed("this dispatcher no longer leads the queue".into())),
                Registered::RateLimited(wait) => {
                    tracing::info!(
                        profile = %spec.profile,
                        wait_ms = wait,
                        "Rate limited: wait {}ms between spawns",
                        limits.rate_ms
                    );
                    let until = Instant::now() + Duration::from_millis(wait as u64);
                    if until >= deadline {
                        return Err(Ending::TimedOut);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = cancel.requested() => return Err(Ending::Canceled),
                    }
                }
            }
        }
        let (server, events) = match self.spawn(&id, spec).await {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                let _ = end_row(&self.ctx, &id, WorkerState::Error, None, Some(&format!("Failed to start: {msg}"))).await;
                return Err(failed(msg));
            }
        };
        let mut s = Server { id: id.clone(), pid: server.pid, spec: spec.clone(), stdin: Some(server.stdin), events };
        // Registration completes with the pid; a row that was ended meanwhile (stopped while
        // starting) or a write that fails leaves a process nobody may keep: shut it down.
        let (pid, start) = (i64::from(server.pid), server.start as i64);
        let recorded = async {
            store::workers::spawned(&mut *self.ctx.conn().await?, &id, pid, start, &self.ctx.owner, self.ctx.epoch)
                .await
        }
        .await;
        let reason = match recorded {
            Ok(true) => None,
            // A process that exits at once has its row ended by its reader before the pid is
            // recorded: that is an exit, not a withdrawn registration.
            Ok(false) => Some(match s.wait_exit(EXIT_DRAIN).await {
                Some(status) => format!("the server worker {}", describe_exit(&status)),
                None => format!("worker {id} was stopped before its registration completed; its process was shut down"),
            }),
            Err(e) => Some(format!("could not register worker {id} ({e}); its process was shut down")),
        };
        if let Some(reason) = reason {
            tracing::warn!(worker = %id, pid = server.pid, "{reason}");
            self.retire(s, WorkerState::Error, &reason, grace).await;
            return Err(failed(reason));
        }
        // Wait for the ready line.
        enum First {
            Said(Option<Event>),
            Late,
            Canceled,
        }
        let first = tokio::select! {
            ev = s.events.recv() => First::Said(ev),
            _ = tokio::time::sleep_until(deadline) => First::Late,
            _ = cancel.requested() => First::Canceled,
        };
        let why = match first {
            First::Canceled => {
                self.retire(s, WorkerState::Stopped, "Its task was canceled while it started", grace).await;
                return Err(Ending::Canceled);
            }
            First::Said(Some(Event::Message(Message::Ready {}))) => {
                let (owner, epoch) = (&self.ctx.owner, self.ctx.epoch);
                let ok =
                    async { store::workers::ready(&mut *self.ctx.conn().await?, &id, owner, epoch, now_ms()).await }
                        .await;
                match ok {
                    Ok(true) => {
                        tracing::info!(worker = %id, profile = %spec.profile, pid = s.pid, "server worker ready");
                        return Ok(s);
                    }
                    // Its row ended meanwhile: it exited right after saying ready, or was stopped.
                    Ok(false) => match s.wait_exit(EXIT_DRAIN).await {
                        Some(status) => format!("the server worker {}", describe_exit(&status)),
                        None => "it was stopped while it started".to_string(),
                    },
                    Err(e) => format!("could not record it ready: {e}"),
                }
            }
            First::Said(Some(Event::Message(m))) => {
                format!("Protocol violation: expected a ready line first, got {m:?}")
            }
            First::Said(Some(Event::Violation(v))) => format!("Protocol violation: {v}"),
            First::Said(Some(Event::Exited(status))) => {
                return Err(failed(format!("the server worker {}", describe_exit(&status))));
            }
            First::Said(None) => return Err(failed("the server worker's output ended".into())),
            First::Late => {
                self.retire(s, WorkerState::Error, "It was not ready in time", grace).await;
                return Err(Ending::TimedOut);
            }
        };
        self.retire(s, WorkerState::Error, &why, grace).await;
        Err(failed(why))
    }

    /// Spawn the process: own process group, piped stdin/stdout, stderr to its log, tagged
    /// with its worker id; then start the reader of its stdout.
    async fn spawn(&self, id: &str, spec: &ServerSpec) -> Result<(Spawned, mpsc::UnboundedReceiver<Event>)> {
        let env = &self.ctx.spawn_env;
        let log_path = log_path(&env.logs_dir, id);
        if let Some(dir) = log_path.parent() {
            crate::location::create_private_dir(dir)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| Error::io(format!("opening log {}", log_path.display()), e))?;
        let process = worker::Process {
            argv: &spec.argv,
            cwd: &spec.cwd,
            tag: worker::Tag::Server { worker_id: id },
            profile: &spec.profile,
            env: &spec.env,
            stdin: Stdio::piped(),
            stdout: Stdio::piped(),
            stderr: log.into(),
        };
        let mut child = worker::start(process, env, &self.ctx.leaders)?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let start = proc::start_time(pid).unwrap_or(0);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Invalid("the server worker's pipes are missing".into()));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let ctx = self.ctx.clone();
        let worker = id.to_string();
        tokio::spawn(async move {
            let read = read_events(stdout, &tx);
            tokio::pin!(read);
            let status = tokio::select! {
                _ = &mut read => child.wait().await,
                status = child.wait() => {
                    // It exited, but a process it left behind may hold its stdout open: take
                    // what is already written, then report the exit without waiting for EOF.
                    let _ = tokio::time::timeout(EXIT_DRAIN, &mut read).await;
                    status
                }
            };
            ctx.leaders.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
            if let Ok(status) = status {
                let code = exit_code(&status);
                let why = format!("It {}", describe_exit(&status));
                if matches!(end_row(&ctx, &worker, WorkerState::Error, Some(code), Some(&why)).await, Ok(true)) {
                    tracing::warn!(worker = %worker, pid, "server worker {}", describe_exit(&status));
                }
                let _ = tx.send(Event::Exited(status));
            }
        });
        worker::spawn_window().await;
        Ok((Spawned { pid, start, stdin }, rx))
    }
}

/// A spawned server process, before its reader owns it.
struct Spawned {
    pid: i32,
    start: u64,
    stdin: ChildStdin,
}

impl Server {
    /// Is the worker fit for a job? Anything it said while idle, or its exit, says no.
    fn check_idle(&mut self) -> std::result::Result<(), String> {
        match self.events.try_recv() {
            Err(mpsc::error::TryRecvError::Empty) => Ok(()),
            Err(mpsc::error::TryRecvError::Disconnected) => Err("Its output ended".into()),
            Ok(Event::Exited(status)) => Err(format!("It {}", describe_exit(&status))),
            Ok(Event::Violation(v)) => Err(format!("Protocol violation while idle: {v}")),
            Ok(Event::Message(m)) => Err(format!("Protocol violation: a message while no job was in flight: {m:?}")),
        }
    }

    /// Hand the job over and wait for its answer, the worker's exit, the timeout or a cancel.
    async fn serve(&mut self, job: &JobRow, deadline: Instant, grace: Duration, cancel: &mut Cancel) -> Ending {
        let attachments: Vec<String> = serde_json::from_str(&job.attachments).unwrap_or_default();
        let request = Request::Job {
            id: &job.id,
            attempt: job.attempt,
            prompt: &job.task,
            profile: &job.profile,
            model: job.model.as_deref(),
            cwd: &job.project_dir,
            attachments,
        };
        if self.send(&request).await.is_err() {
            // Its stdin broke: it is exiting.
            return match self.wait_exit(Duration::from_secs(5)).await {
                Some(status) => Ending::Exited(status),
                None => Ending::Violation("its stdin closed while it kept running".into()),
            };
        }
        let mut canceled_at: Option<Instant> = None;
        loop {
            let limit = canceled_at.map_or(deadline, |t| t + grace);
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(Event::Message(Message::Result { id, response, tokens, cost_usd })) if id == job.id => {
                        return if canceled_at.is_some() {
                            Ending::Canceled
                        } else {
                            Ending::Answered { response, tokens, cost_usd }
                        };
                    }
                    Some(Event::Message(Message::Error { id, error })) if id == job.id => {
                        return if canceled_at.is_some() { Ending::Canceled } else { Ending::Reported(error) };
                    }
                    Some(Event::Message(Message::Result { id, .. } | Message::Error { id, .. })) => {
                        return Ending::Violation(format!("an answer for task {id} while task {} was in flight", job.id));
                    }
                    Some(Event::Message(Message::Ready {})) => {
                        return Ending::Violation("a ready line while a task was in flight".into());
                    }
                    Some(Event::Violation(v)) => return Ending::Violation(v),
                    Some(Event::Exited(status)) => return Ending::Exited(status),
                    None => return Ending::SpawnFailed("the server worker's output ended".into()),
                },
                _ = tokio::time::sleep_until(limit) => {
                    if canceled_at.is_some() {
                        // No answer to the cancel: the caller stops the worker.
                        self.stdin = None;
                        return Ending::Canceled;
                    }
                    return Ending::TimedOut;
                }
                _ = cancel.requested(), if canceled_at.is_none() => {
                    canceled_at = Some(Instant::now());
                    if self.send(&Request::Cancel { id: &job.id }).await.is_err() {
                        self.stdin = None;
                        return Ending::Canceled;
                    }
                }
            }
        }
    }

    async fn send(&mut self, request: &Request<'_>) -> Result<()> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        let stdin = self.stdin.as_mut().ok_or_else(|| Error::Invalid("the worker's stdin is closed".into()))?;
        stdin.write_all(&line).await.map_err(|e| Error::io("writing to the server worker", e))?;
        stdin.flush().await.map_err(|e| Error::io("writing to the server worker", e))
    }

    /// Wait up to `limit` for the reader to see the process exit (other events are dropped).
    async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, async {
            while let Some(ev) = self.events.recv().await {
                if let Event::Exited(status) = ev {
                    return Some(status);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }
}

/// Read protocol lines until EOF. After a violation, the rest of the output is drained unread
/// (the worker is being replaced; it must not block on a full pipe meanwhile).
async fn read_events(stdout: ChildStdout, tx: &mpsc::UnboundedSender<Event>) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Event::Violation(format!("reading its output failed: {e}")));
                break;
            }
        }
        let complete = line.last() == Some(&b'\n');
        if !complete && line.len() > MAX_LINE {
            let _ = tx.send(Event::Violation(format!("a line over {} bytes", MAX_LINE)));
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Message>(text) {
            Ok(m) => {
                let _ = tx.send(Event::Message(m));
            }
            Err(e) => {
                let _ = tx.send(Event::Violation(format!("not a protocol message ({e}): {}", snippet(text))));
                break;
            }
        }
    }
    let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
}

/// A server worker's log (its stderr): `<logs>/workers/<worker id>.log`.
pub fn log_path(logs_dir: &std::path::Path, worker_id: &str) -> std::path::PathBuf {
    logs_dir.join("workers").join(format!("{worker_id}.log"))
}

fn snippet(text: &str) -> String {
    let cut: String = text.chars().take(120).collect();
    if cut.len() < text.len() { format!("{cut}...") } else { cut }
}

async fn store_busy(ctx: &PoolContext, worker: &str, job: &JobRow) -> Result<bool> {
    store::workers::busy(&mut *ctx.conn().await?, worker, &job.id, job.attempt, &ctx.owner, ctx.epoch, now_ms()).await
}

async fn end_row(ctx: &PoolContext, id: &str, state: WorkerState, code: Option<i64>, why: Option<&str>) -> Result<bool> {
    store::workers::end(&mut *ctx.conn().await?, id, state, code, why, now_ms()).await
}

/// The exit code as the schema records it: the code, or 128 + the signal.
/// Stop what is proven to be a lost server worker's process (its recorded pid and start time,
/// and its `BATON_WORKER_ID` tag); the caller ends its row.
pub async fn recover_row(row: &store::workers::ServerRow, grace: Duration) -> Vec<i32> {
    let recorded: Vec<(i64, i64)> = row.pid.zip(row.pid_start).into_iter().collect();
    proc::stop_proven(&recorded, &proc::Tag::server(&row.id), grace).await
}

/// Live server rows of a profile that no slot holds (a lost worker's): recover them.
async fn recover_profile(ctx: &PoolContext, profile: &str, grace: Duration) {
    let rows = match ctx.conn().await {
        Ok(mut conn) => store::workers::live_servers(&mut conn, profile).await.unwrap_or_default(),
        Err(_) => return,
    };
    for row in &rows {
        recover_row(row, grace).await;
        let _ = end_row(ctx, &row.id, WorkerState::Error, None, Some("Worker lost: no dispatcher held it")).await;
    }
}

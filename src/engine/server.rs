//! Server workers: one long-lived agent process per server profile per queue, speaking the
//! Agent Client Protocol (ACP, JSON-RPC 2.0 in lines on its stdin and stdout; see `acp`), fed
//! one task at a time.
//!
//! # The conversation
//!
//! - Once started, the worker is sent `initialize` (protocol version 1, no file system or
//!   terminal methods offered); its answer makes it ready.
//! - Each task attempt gets its own session: `session/new` with the task's project directory as
//!   `cwd`, then one `session/prompt` (the profile's system prompt, the attachments, the task).
//!   While the turn runs, every `session/update` becomes an activity event in `job_events`
//!   (written in batches by the attempt's owner); the answer is the agent's message chunks.
//!   The turn's `stopReason` decides: `end_turn` succeeds; anything else fails the task.
//! - `session/request_permission` is answered from the job's tool policy (captured from the
//!   profile): a denied kind gets the agent's reject option, an allowed one its allow option;
//!   with `permissions: "ask"` no request is guessed at: the task fails with the request shown.
//!   A tool call of a denied kind that runs without a permission baton granted fails the task
//!   at once and stops the worker.
//! - A cancel sends `session/cancel` and waits `jobs.killGraceMs` for the turn to end; a worker
//!   that ends it stays for the next task, one that does not is stopped.
//! - Requests baton does not serve (`fs/*`, `terminal/*`) get error -32601. Updates for a
//!   session baton never opened, a response to a request it never sent, a line that is not
//!   JSON-RPC 2.0 or one over 1 MiB: a protocol violation, the task fails with it and the worker
//!   is replaced. The worker's stderr goes to its log, `.baton/logs/workers/<worker id>.log`.
//! - To stop a worker, baton closes its stdin and gives it `jobs.killGraceMs` to exit, then sends
//!   its process group SIGTERM and, after `jobs.killGraceMs` more, SIGKILL.
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

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

use crate::agent::permission::Policy;
use crate::engine::acp::{self, Incoming};
use crate::engine::activity::{self, EventLog};
use crate::engine::proc;
use crate::engine::worker::{self, Ending, SpawnEnv, describe_exit, exit_code};
use crate::error::{Error, Result};
use crate::job::{JobRow, now_ms};
use crate::state::{EventKind, WorkerState};
use crate::store;
use crate::store::events::EventCaps;
use crate::store::workers::{NewServer, Registered, SpawnLimits};

/// After a worker's exit, how long its output is still read when something else holds it open.
const EXIT_DRAIN: Duration = Duration::from_millis(100);

/// What the reader of a worker's stdout reports.
#[derive(Debug)]
enum Event {
    Message(Incoming),
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
    rpc: acp::Rpc,
    events: mpsc::UnboundedReceiver<Event>,
    /// What its `initialize` answer said.
    agent: acp::AgentInfo,
    /// Every session it was asked to open (late updates of an earlier task's are dropped).
    sessions: HashSet<String>,
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
    /// How many activity events a job keeps.
    pub event_caps: EventCaps,
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
                // Its row ended: it exited (its reader ended the row), or a stop took it.
                Ok(false) => {
                    if let Some(mut s) = held.take() {
                        if let Some(status) = s.wait_exit(EXIT_DRAIN).await {
                            let why = format!("the server worker {}", describe_exit(&status));
                            self.retire(s, WorkerState::Error, &why, grace).await;
                            return Ending::SpawnFailed(why);
                        }
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
        let ending = server.serve(&self.ctx, job, deadline, grace, cancel).await;
        let (state, why) = match &ending {
            Ending::Answered { .. } | Ending::Reported(_) => return ending,
            Ending::Canceled if server.rpc.is_open() => return ending,
            Ending::Canceled => (WorkerState::Stopped, "It did not answer a cancel in time".to_string()),
            Ending::Violation(v) => (WorkerState::Error, format!("Protocol violation: {v}")),
            Ending::Forbidden(why) => (WorkerState::Stopped, why.clone()),
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
        let unfit = match held.as_mut() {
            Some(s) => s.check_idle().await.err(),
            None => None,
        };
        if let Some(why) = unfit
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
        s.rpc.close();
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
                let _ =
                    end_row(&self.ctx, &id, WorkerState::Error, None, Some(&format!("Failed to start: {msg}"))).await;
                return Err(failed(msg));
            }
        };
        let mut s = Server {
            id: id.clone(),
            pid: server.pid,
            spec: spec.clone(),
            rpc: acp::Rpc::new(server.stdin),
            events,
            agent: acp::AgentInfo::default(),
            sessions: HashSet::new(),
        };
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
        // Ready once it answers `initialize`.
        let why = match s.initialize(deadline, cancel).await {
            Ok(agent) => {
                s.agent = agent;
                let (owner, epoch) = (&self.ctx.owner, self.ctx.epoch);
                let ok =
                    async { store::workers::ready(&mut *self.ctx.conn().await?, &id, owner, epoch, now_ms()).await }
                        .await;
                match ok {
                    Ok(true) => {
                        tracing::info!(worker = %id, profile = %spec.profile, pid = s.pid, agent = ?s.agent.name, "server worker ready");
                        return Ok(s);
                    }
                    // Its row ended meanwhile: it exited right after answering, or was stopped.
                    Ok(false) => match s.wait_exit(EXIT_DRAIN).await {
                        Some(status) => format!("the server worker {}", describe_exit(&status)),
                        None => "it was stopped while it started".to_string(),
                    },
                    Err(e) => format!("could not record it ready: {e}"),
                }
            }
            Err(Ending::Canceled) => {
                self.retire(s, WorkerState::Stopped, "Its task was canceled while it started", grace).await;
                return Err(Ending::Canceled);
            }
            Err(Ending::TimedOut) => {
                self.retire(s, WorkerState::Error, "It was not ready in time", grace).await;
                return Err(Ending::TimedOut);
            }
            Err(Ending::Exited(status)) => return Err(failed(format!("the server worker {}", describe_exit(&status)))),
            Err(Ending::Violation(v)) => format!("Protocol violation: {v}"),
            Err(Ending::SpawnFailed(why) | Ending::Reported(why)) => why,
            Err(other) => format!("it did not start: {other:?}"),
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
    /// Is the worker fit for a job? Its exit or a broken line says no; notifications it sent
    /// while idle (late updates of a finished turn, command lists) are dropped, and requests
    /// get an error (no turn is running to answer them).
    async fn check_idle(&mut self) -> std::result::Result<(), String> {
        loop {
            match self.events.try_recv() {
                Err(mpsc::error::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::error::TryRecvError::Disconnected) => return Err("Its output ended".into()),
                Ok(Event::Exited(status)) => return Err(format!("It {}", describe_exit(&status))),
                Ok(Event::Violation(v)) => return Err(format!("Protocol violation while idle: {v}")),
                Ok(Event::Message(Incoming::Request { id, method, .. })) => {
                    let _ = self.rpc.respond_error(&id, -32601, &format!("no task is running: {method}")).await;
                }
                Ok(Event::Message(Incoming::Response { id, .. })) if !self.rpc.sent(id) => {
                    return Err(format!(
                        "Protocol violation while idle: a response to request {id}, which baton never sent"
                    ));
                }
                Ok(Event::Message(_)) => {}
            }
        }
    }

    /// `initialize`: the agent's answer makes it ready.
    async fn initialize(
        &mut self,
        deadline: Instant,
        cancel: &mut Cancel,
    ) -> std::result::Result<acp::AgentInfo, Ending> {
        let result = self.call("initialize", acp::initialize_params(), deadline, cancel).await?;
        acp::AgentInfo::of(&result).map_err(Ending::Violation)
    }

    /// Send a request and wait for its answer, outside a prompt turn: notifications are
    /// dropped (there is no session to report on yet), requests get an error.
    async fn call(
        &mut self,
        method: &str,
        params: Value,
        deadline: Instant,
        cancel: &mut Cancel,
    ) -> std::result::Result<Value, Ending> {
        let id = match self.rpc.request(method, params).await {
            Ok(id) => id,
            Err(_) => return Err(self.broken_stdin().await),
        };
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(Event::Message(Incoming::Response { id: got, result })) if got == id => {
                        return result.map_err(|e| Ending::Reported(format!("{method} failed: {} (code {})", e.message, e.code)));
                    }
                    Some(Event::Message(Incoming::Response { id: got, .. })) if !self.rpc.sent(got) => {
                        return Err(Ending::Violation(format!("a response to request {got}, which baton never sent")));
                    }
                    Some(Event::Message(Incoming::Request { id: rid, method: m, .. })) => {
                        let _ = self.rpc.respond_error(&rid, -32601, &format!("baton does not offer {m}")).await;
                    }
                    Some(Event::Message(_)) => {}
                    Some(Event::Violation(v)) => return Err(Ending::Violation(v)),
                    Some(Event::Exited(status)) => return Err(Ending::Exited(status)),
                    None => return Err(Ending::SpawnFailed("the server worker's output ended".into())),
                },
                _ = tokio::time::sleep_until(deadline) => return Err(Ending::TimedOut),
                _ = cancel.requested() => return Err(Ending::Canceled),
            }
        }
    }

    /// Its stdin broke: it is exiting (or closed its input and kept running).
    async fn broken_stdin(&mut self) -> Ending {
        self.rpc.close();
        match self.wait_exit(Duration::from_secs(5)).await {
            Some(status) => Ending::Exited(status),
            None => Ending::Violation("its stdin closed while it kept running".into()),
        }
    }

    /// Run one task attempt: a session of its own, one prompt turn; its activity is recorded as
    /// it arrives. Ends with the answer, the agent's failure, the worker's exit, a violation,
    /// the timeout or a cancel.
    async fn serve(
        &mut self,
        ctx: &PoolContext,
        job: &JobRow,
        deadline: Instant,
        grace: Duration,
        cancel: &mut Cancel,
    ) -> Ending {
        let params = json!({"cwd": job.project_dir, "mcpServers": []});
        let session = match self.call("session/new", params, deadline, cancel).await {
            Ok(r) => match r.get("sessionId").and_then(Value::as_str) {
                Some(sid) => sid.to_string(),
                None => return Ending::Violation("its session/new answer has no sessionId".into()),
            },
            Err(ending) => return ending,
        };
        self.sessions.insert(session.clone());
        let policy = Policy::parse(job.permissions.as_deref());
        if let Some(mode) = &policy.mode {
            let params = json!({"sessionId": session, "modeId": mode});
            if let Err(ending) = self.call("session/set_mode", params, deadline, cancel).await {
                return match ending {
                    Ending::Reported(why) => Ending::Reported(format!("could not set session mode \"{mode}\": {why}")),
                    other => other,
                };
            }
        }
        let attachments: Vec<String> = serde_json::from_str(&job.attachments).unwrap_or_default();
        let prompt = acp::prompt_blocks(&job.task, job.system_prompt.as_deref(), &attachments, self.agent.images);
        let prompt_id = match self.rpc.request("session/prompt", json!({"sessionId": session, "prompt": prompt})).await
        {
            Ok(id) => id,
            Err(_) => return self.broken_stdin().await,
        };
        let writer =
            store::events::Writer { job_id: &job.id, attempt: job.attempt, owner: &ctx.owner, epoch: ctx.epoch };
        let mut log = EventLog::new(writer, ctx.event_caps);
        let mut turn = Turn {
            session: &session,
            profile: &job.profile,
            project: std::path::Path::new(&job.project_dir),
            policy,
            tools: HashMap::new(),
            answer: String::new(),
        };
        let ending = self.turn(ctx, &mut turn, &mut log, prompt_id, deadline, grace, cancel).await;
        log.flush(&ctx.store).await;
        ending
    }

    #[allow(clippy::too_many_arguments)]
    async fn turn(
        &mut self,
        ctx: &PoolContext,
        turn: &mut Turn<'_>,
        log: &mut EventLog<'_>,
        prompt_id: i64,
        deadline: Instant,
        grace: Duration,
        cancel: &mut Cancel,
    ) -> Ending {
        let mut canceled_at: Option<Instant> = None;
        let mut tick = tokio::time::interval(activity::FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let limit = canceled_at.map_or(deadline, |t| t + grace);
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(Event::Message(Incoming::Response { id, result })) if id == prompt_id => {
                        if canceled_at.is_some() {
                            return Ending::Canceled;
                        }
                        return match result {
                            Err(e) => Ending::Reported(format!("{} (code {})", e.message, e.code)),
                            Ok(r) => match acp::Stop::of(&r) {
                                acp::Stop::EndTurn => Ending::Answered {
                                    response: std::mem::take(&mut turn.answer),
                                    tokens: acp::usage_of(&r),
                                    cost_usd: None,
                                },
                                acp::Stop::Cancelled => Ending::Reported("the agent ended its turn as cancelled, though nobody canceled the task".into()),
                                acp::Stop::Failed(why) => Ending::Reported(why),
                            },
                        };
                    }
                    Some(Event::Message(Incoming::Response { id, .. })) => {
                        if !self.rpc.sent(id) {
                            return Ending::Violation(format!("a response to request {id}, which baton never sent"));
                        }
                    }
                    Some(Event::Message(Incoming::Notification { method, params })) => {
                        if method != "session/update" {
                            continue;
                        }
                        let sid = params.get("sessionId").and_then(Value::as_str).unwrap_or("");
                        if sid != turn.session {
                            if self.sessions.contains(sid) {
                                continue;
                            }
                            return Ending::Violation(format!("an update for session \"{}\", which baton never opened", acp::snippet(sid)));
                        }
                        let reading = acp::read_update(params.get("update").unwrap_or(&Value::Null), &mut turn.tools, now_ms());
                        if let Some(text) = &reading.answer {
                            turn.answer.push_str(text);
                        }
                        log.push(reading.event);
                        if let Some(why) = reading.tool.and_then(|id| turn.forbidden(&id)) {
                            let _ = self.rpc.notify("session/cancel", json!({"sessionId": turn.session})).await;
                            return Ending::Forbidden(why);
                        }
                    }
                    Some(Event::Message(Incoming::Request { id, method, params })) => {
                        if method != "session/request_permission" {
                            let _ = self.rpc.respond_error(&id, -32601, &format!("baton does not offer {method}")).await;
                            continue;
                        }
                        let d = turn.decide(&params, canceled_at.is_some());
                        log.push(store::events::NewEvent {
                            at_ms: now_ms(),
                            kind: EventKind::Permission,
                            text: d.text.clone(),
                            payload: Some(activity::bounded_payload(&params)),
                        });
                        if self.rpc.respond(&id, json!({"outcome": d.outcome})).await.is_err() {
                            return self.broken_stdin().await;
                        }
                        if let Some(why) = d.fail {
                            let _ = self.rpc.notify("session/cancel", json!({"sessionId": turn.session})).await;
                            return Ending::Forbidden(why);
                        }
                    }
                    Some(Event::Violation(v)) => return Ending::Violation(v),
                    Some(Event::Exited(status)) => return Ending::Exited(status),
                    None => return Ending::SpawnFailed("the server worker's output ended".into()),
                },
                _ = tick.tick() => log.flush(&ctx.store).await,
                _ = tokio::time::sleep_until(limit) => {
                    if canceled_at.is_some() {
                        // No end to the turn after the cancel: the caller stops the worker.
                        self.rpc.close();
                        return Ending::Canceled;
                    }
                    return Ending::TimedOut;
                }
                _ = cancel.requested(), if canceled_at.is_none() => {
                    canceled_at = Some(Instant::now());
                    if self.rpc.notify("session/cancel", json!({"sessionId": turn.session})).await.is_err() {
                        return Ending::Canceled;
                    }
                }
            }
        }
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

/// One prompt turn's state.
struct Turn<'a> {
    session: &'a str,
    profile: &'a str,
    /// The task's project: no file outside it is granted to an editing call.
    project: &'a std::path::Path,
    policy: Policy,
    tools: HashMap<String, acp::ToolCall>,
    answer: String,
}

/// How baton answers one permission request.
struct Decision {
    /// The `outcome` object of the answer.
    outcome: Value,
    /// The permission event's text.
    text: String,
    /// The task fails with this (`permissions: "ask"`).
    fail: Option<String>,
}

impl Turn<'_> {
    /// A tool call that runs though the policy denies its kind and baton granted no permission
    /// for it: why the task fails.
    fn forbidden(&self, id: &str) -> Option<String> {
        let call = self.tools.get(id)?;
        let kind = call.kind.as_deref().unwrap_or("other");
        (call.ran() && !self.policy.allows(kind) && call.permitted != Some(true)).then(|| {
            format!(
                "Forbidden tool call: the agent ran {} without a permission baton granted; profile \"{}\" does not allow {kind}",
                call.describe(id),
                self.profile
            )
        })
    }

    /// Answer a `session/request_permission` from the policy: the agent's allow option for an
    /// allowed kind, its reject option for a denied one (a kind it does not name counts as
    /// denied when the policy denies anything); `cancelled` after a cancel or without a fitting
    /// option; under `permissions: "ask"`, `cancelled` and the task fails.
    fn decide(&mut self, params: &Value, canceling: bool) -> Decision {
        let req = params.get("toolCall").cloned().unwrap_or(Value::Null);
        let id = req.get("toolCallId").and_then(Value::as_str).unwrap_or("").to_string();
        let call = self.tools.entry(id.clone()).or_default();
        if let Some(k) = req.get("kind").and_then(Value::as_str) {
            call.kind = Some(k.to_string());
        }
        if let Some(t) = req.get("title").and_then(Value::as_str) {
            call.title = Some(t.to_string());
        }
        let what = call.describe(&id);
        let editing = matches!(call.kind.as_deref(), Some("edit" | "delete" | "move"));
        let outside = if editing { paths_of(&req).into_iter().find(|p| !inside(self.project, p)) } else { None };
        let allowed = match call.kind.as_deref() {
            Some(kind) => self.policy.allows(kind) && outside.is_none(),
            None => self.policy.deny.is_empty(),
        };
        let option = |kinds: &[&str]| -> Option<String> {
            let options = params.get("options").and_then(Value::as_array)?;
            kinds.iter().find_map(|want| {
                options
                    .iter()
                    .find(|o| o.get("kind").and_then(Value::as_str) == Some(*want))
                    .and_then(|o| o.get("optionId").and_then(Value::as_str))
                    .map(str::to_string)
            })
        };
        let cancelled = json!({"outcome": "cancelled"});
        if canceling {
            return Decision { outcome: cancelled, text: format!("canceled the request for {what}"), fail: None };
        }
        if self.policy.ask {
            let why = format!(
                "The agent asked permission for {what}, and profile \"{}\" answers no request itself (permissions: \"ask\")",
                self.profile
            );
            return Decision { outcome: cancelled, text: format!("asked for {what}: not answered"), fail: Some(why) };
        }
        let (picked, verb) = if allowed {
            (option(&["allow_once", "allow_always"]), "granted")
        } else {
            (option(&["reject_once", "reject_always"]), "rejected")
        };
        call.permitted = Some(allowed);
        match picked {
            Some(option_id) => Decision {
                outcome: json!({"outcome": "selected", "optionId": option_id}),
                text: match (&outside, allowed) {
                    (_, true) => format!("{verb} {what}"),
                    (Some(path), false) => format!("{verb} {what}: {} is outside the project", path.display()),
                    (None, false) => format!("{verb} {what}: profile \"{}\" does not allow it", self.profile),
                },
                fail: None,
            },
            None => Decision {
                outcome: cancelled,
                text: format!("{verb} {what} (no fitting option: cancelled)"),
                fail: None,
            },
        }
    }
}

/// The files a tool call names: its `locations` and the paths of its diffs.
fn paths_of(call: &Value) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for list in ["locations", "content"] {
        for item in call.get(list).and_then(Value::as_array).into_iter().flatten() {
            if let Some(p) = item.get("path").and_then(Value::as_str) {
                out.push(std::path::PathBuf::from(p));
            }
        }
    }
    out
}

/// Is `path` (relative ones are taken from `project`) inside `project`, `..` resolved
/// lexically?
fn inside(project: &std::path::Path, path: &std::path::Path) -> bool {
    use std::path::Component;
    let mut norm = std::path::PathBuf::new();
    for c in project.join(path).components() {
        match c {
            Component::ParentDir => {
                norm.pop();
            }
            Component::CurDir => {}
            other => norm.push(other),
        }
    }
    norm.starts_with(project)
}

/// Read protocol lines until EOF. After a violation, the rest of the output is drained unread
/// (the worker is being replaced; it must not block on a full pipe meanwhile).
async fn read_events(stdout: ChildStdout, tx: &mpsc::UnboundedSender<Event>) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(acp::MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Event::Violation(format!("reading its output failed: {e}")));
                break;
            }
        }
        let complete = line.last() == Some(&b'\n');
        if !complete && line.len() > acp::MAX_LINE {
            let _ = tx.send(Event::Violation(format!("a line over {} bytes", acp::MAX_LINE)));
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        match Incoming::parse(text) {
            Ok(m) => {
                let _ = tx.send(Event::Message(m));
            }
            Err(e) => {
                let _ = tx.send(Event::Violation(e));
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

async fn store_busy(ctx: &PoolContext, worker: &str, job: &JobRow) -> Result<bool> {
    store::workers::busy(&mut *ctx.conn().await?, worker, &job.id, job.attempt, &ctx.owner, ctx.epoch, now_ms()).await
}

async fn end_row(
    ctx: &PoolContext,
    id: &str,
    state: WorkerState,
    code: Option<i64>,
    why: Option<&str>,
) -> Result<bool> {
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

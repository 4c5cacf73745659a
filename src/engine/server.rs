//! Server workers: one long-lived agent process per server profile per queue, speaking the
//! Agent Client Protocol (ACP, JSON-RPC 2.0 in lines on its stdin and stdout; see `acp`),
//! serving up to its profile's `maxConcurrency` tasks at once (one unless set), each in an ACP
//! session of its own.
//!
//! # The conversation
//!
//! - Once started, the worker is sent `initialize` (protocol version 1, no file system or
//!   terminal methods offered); its answer makes it ready.
//! - Each task attempt gets its own session: `session/new` with the task's project directory as
//!   `cwd` (recorded in `worker_sessions` with the agent's session id), then one
//!   `session/prompt` (the profile's system prompt, the attachments, the task). One reader
//!   routes what the agent says: answers to the request that waits for them, a session's
//!   updates and permission requests to its turn.
//!   While the turn runs, every `session/update` becomes an activity event in `job_events`
//!   (written in batches by the attempt's owner); the answer is the agent's message chunks.
//!   The turn's `stopReason` decides: `end_turn` succeeds; anything else fails the task.
//! - `session/request_permission` is answered from the job's tool policy (captured from the
//!   profile): a denied kind gets the agent's reject option, an allowed one its allow option;
//!   with `permissions: "ask"` no request is guessed at: the task fails with the request shown.
//!   A tool call of a denied kind that runs without a permission baton granted fails the task
//!   at once and stops the worker (other tasks on it fail with the reason).
//! - A cancel, or the task's timeout, sends `session/cancel` and waits `jobs.killGraceMs` for
//!   the turn to end; a worker that ends it stays for the next task, one that does not is
//!   stopped.
//! - Requests baton does not serve (`fs/*`, `terminal/*`) get error -32601. Updates for a
//!   session baton never opened, a response to a request it never sent, a line that is not
//!   JSON-RPC 2.0 or one over 1 MiB: a protocol violation, every task on the worker fails with
//!   it and the worker is replaced. The worker's stderr goes to its log, `.baton/logs/workers/<worker id>.log`.
//! - To stop a worker, baton closes its stdin and gives it `jobs.killGraceMs` to exit, then sends
//!   its process group SIGTERM and, after `jobs.killGraceMs` more, SIGKILL.
//!
//! # Spawn deduplication and limits
//!
//! A worker's row is registered `starting` before its process exists, in one statement that
//! also checks `limits.maxWorkers`, `limits.maxWorkersPerSession` and `limits.spawnRateLimitMs`;
//! the unique partial index `workers_one_server` makes a second live server worker of a profile
//! impossible. Within the dispatcher, jobs of one profile take turns on its slot to find or start
//! the worker, so concurrent demand shares one spawn, then each takes one of its seats. A
//! process whose registration cannot be completed is shut down.

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

/// Why a worker serves no more: every turn still on it ends with this.
#[derive(Debug, Clone)]
enum Gone {
    Exited(ExitStatus),
    Violation(String),
    /// baton stopped it (why).
    Stopped(String),
}

impl Gone {
    fn ending(&self) -> Ending {
        match self {
            Gone::Exited(status) => Ending::Exited(*status),
            Gone::Violation(v) => Ending::Violation(v.clone()),
            Gone::Stopped(why) => Ending::Stopped(why.clone()),
        }
    }
}

/// What a session's turn is sent by the reader.
enum Inbound {
    /// A `session/update`'s params.
    Update(Value),
    /// A `session/request_permission` to answer.
    Permission { id: Value, params: Value },
}

type Answer = std::result::Result<Value, acp::RpcError>;

/// A session opened by its `session/new` answer: from then on its messages reach `inbox`.
struct Opened {
    session: String,
    inbox: mpsc::UnboundedReceiver<Inbound>,
}

/// Who waits for a request's answer.
enum Waiter {
    Call(oneshot::Sender<Answer>),
    /// `session/new`: its session is routed from the answer on (the reader registers it before
    /// it reads the next line, so no update of the new session is lost).
    Open(oneshot::Sender<std::result::Result<Opened, Ending>>),
}

/// Where the agent's messages go: answers to their waiters, a session's updates and
/// permission requests to its turn.
#[derive(Default)]
struct Routes {
    /// The last request id baton used.
    last_id: i64,
    pending: HashMap<i64, Waiter>,
    /// Sessions with a turn running.
    live: HashMap<String, mpsc::UnboundedSender<Inbound>>,
    /// Every session it opened (late updates of ended ones are dropped).
    opened: HashSet<String>,
    /// Set once: it serves no more. Waiters and turns are let go when it is set.
    gone: Option<Gone>,
}

/// The connection to one worker process, shared by the turns on it and the reader of its
/// stdout.
struct Link {
    rpc: Mutex<acp::Rpc>,
    routes: std::sync::Mutex<Routes>,
    /// Its exit status, once the reader saw it.
    exit: tokio::sync::watch::Sender<Option<ExitStatus>>,
}

impl Link {
    fn new(stdin: ChildStdin) -> Link {
        Link {
            rpc: Mutex::new(acp::Rpc::new(stdin)),
            routes: Default::default(),
            exit: tokio::sync::watch::channel(None).0,
        }
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gone(&self) -> Option<Gone> {
        self.routes().gone.clone()
    }

    /// It serves no more (the first reason stays): every waiter and turn is let go.
    fn set_gone(&self, gone: Gone) {
        let mut r = self.routes();
        if r.gone.is_none() {
            r.gone = Some(gone);
            r.pending.clear();
            r.live.clear();
        }
    }

    /// How a turn or call that was let go ends.
    fn gone_ending(&self) -> Ending {
        self.gone().map_or_else(|| Ending::SpawnFailed("the server worker's output ended".into()), |g| g.ending())
    }

    /// Send a request whose answer goes to `waiter`.
    async fn request(&self, method: &str, params: &Value, waiter: Waiter) -> std::result::Result<(), Ending> {
        let mut rpc = self.rpc.lock().await;
        let id = {
            let mut r = self.routes();
            if let Some(g) = &r.gone {
                return Err(g.ending());
            }
            r.last_id += 1;
            let id = r.last_id;
            r.pending.insert(id, waiter);
            id
        };
        match rpc.request(id, method, params).await {
            Ok(()) => Ok(()),
            Err(_) => {
                drop(rpc);
                Err(self.broken().await)
            }
        }
    }

    /// Send a request and wait for its answer.
    async fn call(
        &self,
        method: &str,
        params: Value,
        deadline: Instant,
        cancel: &mut Cancel,
    ) -> std::result::Result<Value, Ending> {
        let (tx, rx) = oneshot::channel();
        self.request(method, &params, Waiter::Call(tx)).await?;
        tokio::select! {
            answer = rx => match answer {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(Ending::Reported(format!("{method} failed: {} (code {})", e.message, e.code))),
                Err(_) => Err(self.gone_ending()),
            },
            _ = tokio::time::sleep_until(deadline) => Err(Ending::TimedOut),
            _ = cancel.requested() => Err(Ending::Canceled),
        }
    }

    /// `session/new` in `cwd`: the session, routed to its inbox.
    async fn open(&self, cwd: &str, deadline: Instant, cancel: &mut Cancel) -> std::result::Result<Opened, Ending> {
        let (tx, rx) = oneshot::channel();
        self.request("session/new", &json!({"cwd": cwd, "mcpServers": []}), Waiter::Open(tx)).await?;
        tokio::select! {
            opened = rx => opened.unwrap_or_else(|_| Err(self.gone_ending())),
            _ = tokio::time::sleep_until(deadline) => Err(Ending::TimedOut),
            _ = cancel.requested() => Err(Ending::Canceled),
        }
    }

    /// The session's turn is over: its late messages are dropped.
    fn close_session(&self, session: &str) {
        self.routes().live.remove(session);
    }

    async fn notify(&self, method: &str, params: Value) -> Result<()> {
        self.rpc.lock().await.notify(method, params).await
    }

    async fn respond(&self, id: &Value, result: Value) -> Result<()> {
        self.rpc.lock().await.respond(id, result).await
    }

    /// Close its stdin (an ACP agent exits when it closes). A write that is stuck (the agent
    /// reads nothing) does not hold this up: its process is stopped next anyway.
    async fn close(&self) {
        if let Ok(mut rpc) = tokio::time::timeout(Duration::from_secs(1), self.rpc.lock()).await {
            rpc.close();
        }
    }

    /// Its stdin broke: it is exiting (or closed its input and kept running).
    async fn broken(&self) -> Ending {
        self.close().await;
        if let Some(status) = self.wait_exit(Duration::from_secs(5)).await {
            self.set_gone(Gone::Exited(status));
        } else {
            self.set_gone(Gone::Violation("its stdin closed while it kept running".into()));
        }
        self.gone_ending()
    }

    /// Wait up to `limit` for the reader to see the process exit.
    async fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let mut rx = self.exit.subscribe();
        let seen = tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await;
        match seen {
            Ok(Ok(status)) => *status,
            _ => None,
        }
    }

    /// The reader saw the process exit.
    fn exited(&self, status: ExitStatus) {
        self.exit.send_replace(Some(status));
        self.set_gone(Gone::Exited(status));
    }

    /// Route one message the agent sent. Requests baton does not serve get an error answer
    /// (written on a task of its own, so reading goes on while it is written).
    fn deliver(self: &Arc<Self>, m: Incoming) {
        match m {
            Incoming::Response { id, result } => self.answered(id, result),
            Incoming::Notification { method, params } => {
                if method != "session/update" {
                    return;
                }
                let sid = params.get("sessionId").and_then(Value::as_str).unwrap_or("").to_string();
                let r = self.routes();
                if let Some(tx) = r.live.get(&sid) {
                    let _ = tx.send(Inbound::Update(params));
                    return;
                }
                // An ended session's late update, or one sent before its session/new answer.
                let opening = r.pending.values().any(|w| matches!(w, Waiter::Open(_)));
                if r.opened.contains(&sid) || opening || r.gone.is_some() {
                    return;
                }
                drop(r);
                self.set_gone(Gone::Violation(format!(
                    "an update for session \"{}\", which baton never opened",
                    acp::snippet(&sid)
                )));
            }
            Incoming::Request { id, method, params } => {
                let refusal = if method == "session/request_permission" {
                    let sid = params.get("sessionId").and_then(Value::as_str).unwrap_or("").to_string();
                    match self.routes().live.get(&sid) {
                        Some(tx) => {
                            let _ = tx.send(Inbound::Permission { id, params });
                            return;
                        }
                        None => (-32602, format!("no task runs in session \"{}\"", acp::snippet(&sid))),
                    }
                } else {
                    (-32601, format!("baton does not offer {method}"))
                };
                let link = self.clone();
                tokio::spawn(async move {
                    let _ = link.rpc.lock().await.respond_error(&id, refusal.0, &refusal.1).await;
                });
            }
        }
    }

    fn answered(&self, id: i64, result: Answer) {
        let mut r = self.routes();
        let waiter = match r.pending.remove(&id) {
            Some(w) => w,
            // Its waiter gave up (a timeout or cancel), or the worker is gone already.
            None if (1..=r.last_id).contains(&id) || r.gone.is_some() => return,
            None => {
                drop(r);
                self.set_gone(Gone::Violation(format!("a response to request {id}, which baton never sent")));
                return;
            }
        };
        match waiter {
            Waiter::Call(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Open(tx) => {
                let sid = match result {
                    Err(e) => {
                        let _ = tx.send(Err(Ending::Reported(format!(
                            "session/new failed: {} (code {})",
                            e.message, e.code
                        ))));
                        return;
                    }
                    Ok(v) => v.get("sessionId").and_then(Value::as_str).map(str::to_string),
                };
                let violation = match sid {
                    None => "its session/new answer has no sessionId".to_string(),
                    Some(sid) if r.live.contains_key(&sid) => {
                        format!("session/new answered session \"{}\", which a running task uses", acp::snippet(&sid))
                    }
                    Some(sid) => {
                        let (itx, inbox) = mpsc::unbounded_channel();
                        r.live.insert(sid.clone(), itx);
                        r.opened.insert(sid.clone());
                        if let Err(Ok(unwanted)) = tx.send(Ok(Opened { session: sid, inbox })) {
                            r.live.remove(&unwanted.session);
                        }
                        return;
                    }
                };
                drop(r);
                self.set_gone(Gone::Violation(violation.clone()));
                let _ = tx.send(Err(Ending::Violation(violation)));
            }
        }
    }
}

/// A running server worker, shared by the turns on it (at most `seats` at once).
struct Server {
    id: String,
    pid: i32,
    /// What it was started as: a job whose profile now runs otherwise needs a new one.
    spec: ServerSpec,
    link: Arc<Link>,
    /// What its `initialize` answer said.
    agent: acp::AgentInfo,
    /// One permit per session it may serve at once; closed when it is retired.
    seats: Arc<tokio::sync::Semaphore>,
    /// Set by the first retire.
    retiring: std::sync::atomic::AtomicBool,
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
    /// How many tasks it serves at once, each in its own session (the profile's
    /// `maxConcurrency`).
    pub sessions: i64,
}

impl ServerSpec {
    /// Does a worker started as `self` run what `other` asks for (its command, environment,
    /// model and sessions)?
    fn runs_as(&self, other: &ServerSpec) -> bool {
        self.argv == other.argv && self.env == other.env && self.model == other.model && self.sessions == other.sessions
    }

    /// Its seats: how many turns run on it at once.
    fn seats(&self) -> u32 {
        self.sessions.clamp(1, i64::from(u32::MAX >> 4)) as u32
    }

    fn of_job(job: &JobRow) -> Result<ServerSpec> {
        Ok(ServerSpec {
            profile: job.profile.clone(),
            argv: serde_json::from_str(&job.argv)?,
            env: serde_json::from_str(&job.env)?,
            model: job.model.clone(),
            cwd: job.project_dir.clone(),
            session: job.session.clone(),
            sessions: job.profile_limit.unwrap_or(1).max(1),
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

/// A profile's place for its one server worker. Jobs of the profile take turns on it to find
/// (or start) the worker, so concurrent demand shares one spawn; then each takes a seat.
type Slot = Arc<Mutex<Option<Arc<Server>>>>;

/// The dispatcher's server workers: one slot per profile.
pub struct Pool {
    ctx: PoolContext,
    slots: std::sync::Mutex<HashMap<String, Slot>>,
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

    fn slot(&self, profile: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(profile.to_string()).or_default().clone()
    }

    fn all_slots(&self) -> Vec<Slot> {
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
        // A fit worker (the one there, or a new one) with a free seat that takes the job; a stop
        // request can take it away in between, so a few tries.
        for _ in 0..3 {
            let server = {
                let mut held = slot.lock().await;
                self.drop_unfit(&mut held, &spec, grace).await;
                match held.as_ref() {
                    Some(s) => s.clone(),
                    None => match self.start(&spec, limits, grace, deadline, &mut cancel).await {
                        Ok(s) => held.insert(Arc::new(s)).clone(),
                        Err(ending) => return ending,
                    },
                }
            };
            let seat = tokio::select! {
                seat = server.seats.clone().acquire_owned() => seat,
                _ = tokio::time::sleep_until(deadline) => return Ending::TimedOut,
                _ = cancel.requested() => return Ending::Canceled,
            };
            // No seat: it was retired meanwhile.
            let Ok(seat) = seat else { continue };
            let ending = server.serve(&self.ctx, job, deadline, grace, &mut cancel).await;
            drop(seat);
            match ending {
                Some(ending) => {
                    if let Some((state, why)) = verdict(job, &ending, server.link.gone()) {
                        self.discard(&slot, &server, state, &why, grace).await;
                    }
                    return ending;
                }
                // Its row ended: it exited (its reader ended the row), or a stop took it.
                None => {
                    if let Some(status) = server.link.wait_exit(EXIT_DRAIN).await {
                        let why = format!("the server worker {}", describe_exit(&status));
                        self.discard(&slot, &server, WorkerState::Error, &why, grace).await;
                        return Ending::SpawnFailed(why);
                    }
                    self.discard(&slot, &server, WorkerState::Stopped, "Stopped by request", grace).await;
                }
            }
        }
        Ending::SpawnFailed("the server worker was stopped before it could take the task".into())
    }

    /// Retire a worker and take it out of its slot (unless a new one is there already).
    async fn discard(&self, slot: &Slot, server: &Arc<Server>, state: WorkerState, why: &str, grace: Duration) {
        // Let every other turn on it go first, with the reason.
        server.link.set_gone(Gone::Stopped(why.to_string()));
        {
            let mut held = slot.lock().await;
            if held.as_ref().is_some_and(|s| s.id == server.id) {
                held.take();
            }
        }
        self.retire(server, state, why, grace).await;
    }

    /// Start a profile's server worker now (config `workers`), unless a fit one is there.
    pub async fn ensure(&self, spec: &ServerSpec, limits: SpawnLimits, grace: Duration, startup: Duration) {
        let slot = self.slot(&spec.profile);
        let mut held = slot.lock().await;
        self.drop_unfit(&mut held, spec, grace).await;
        if held.is_none() {
            match self.start(spec, limits, grace, Instant::now() + startup, &mut Cancel::never()).await {
                Ok(s) => *held = Some(Arc::new(s)),
                Err(e) => tracing::warn!(profile = %spec.profile, "could not start a server worker: {e:?}"),
            }
        }
    }

    /// Retire the held worker if it serves no more (it died or broke the protocol), or, once
    /// its running turns are over, if its profile now runs otherwise than it was started (the
    /// config changed: it is replaced), leaving the slot empty.
    async fn drop_unfit(&self, held: &mut Option<Arc<Server>>, spec: &ServerSpec, grace: Duration) {
        if let Some(gone) = held.as_ref().and_then(|s| s.link.gone())
            && let Some(s) = held.take()
        {
            let why = match gone {
                Gone::Exited(status) => format!("It {}", describe_exit(&status)),
                Gone::Violation(v) => format!("Protocol violation: {v}"),
                Gone::Stopped(why) => why,
            };
            self.retire(&s, WorkerState::Error, &why, grace).await;
        }
        if held.as_ref().is_some_and(|s| !s.spec.runs_as(spec))
            && let Some(s) = held.take()
        {
            tracing::info!(worker = %s.id, profile = %spec.profile, "the profile's command changed; replacing its server worker");
            let _idle = s.idle().await;
            self.retire(&s, WorkerState::Stopped, "Replaced: its profile's command changed", grace).await;
        }
    }

    /// Stop one of our server workers on request (`baton workers stop`). Its jobs were asked to
    /// cancel with the same request; this waits for their turns to end.
    pub async fn stop(&self, worker_id: &str, profile: &str, grace: Duration) {
        if !self.stopping.lock().unwrap_or_else(|e| e.into_inner()).insert(worker_id.to_string()) {
            return;
        }
        let slot = self.slot(profile);
        let mut held = slot.lock().await;
        if held.as_ref().is_some_and(|s| s.id == worker_id)
            && let Some(s) = held.take()
        {
            let _idle = s.idle().await;
            self.retire(&s, WorkerState::Stopped, "Stopped by request", grace).await;
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
            let idle = held.as_ref().and_then(|s| s.seats.clone().try_acquire_many_owned(s.spec.seats()).ok());
            if idle.is_some()
                && let Some(s) = held.take()
            {
                self.retire(&s, WorkerState::Stopped, "Its dispatcher stopped", grace).await;
            }
        }
    }

    /// Has this dispatcher run any server worker? (Until then it has no stop requests to read.)
    pub fn has_slots(&self) -> bool {
        !self.slots.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// End a worker (once, whoever asks first): its row first (so its reader does not record a
    /// plain exit), its seats closed; then close its stdin and give it `grace` to exit; then its
    /// process group gets SIGTERM and, after `grace`, SIGKILL (stragglers of a worker that did
    /// exit go the same way).
    async fn retire(&self, s: &Server, state: WorkerState, why: &str, grace: Duration) {
        if s.retiring.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        tracing::info!(worker = %s.id, state = %state, "stopping a server worker: {why}");
        if let Err(e) = end_row(&self.ctx, &s.id, state, None, Some(why)).await {
            tracing::warn!(worker = %s.id, "could not end the worker's row: {e}");
        }
        s.seats.close();
        s.link.set_gone(Gone::Stopped(why.to_string()));
        s.link.close().await;
        let exited = s.link.wait_exit(grace).await.is_some();
        proc::terminate_group(s.pid, grace, Some(s.pid)).await;
        if !exited {
            s.link.wait_exit(Duration::from_secs(10)).await;
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
                max_sessions: spec.sessions,
                now: now_ms(),
            };
            let registered = async { store::workers::register(&mut self.ctx.conn().await?, &row, limits).await }.await;
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
        let (spawned, link) = match self.spawn(&id, spec).await {
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
            pid: spawned.pid,
            spec: spec.clone(),
            link,
            agent: acp::AgentInfo::default(),
            seats: Arc::new(tokio::sync::Semaphore::new(spec.seats() as usize)),
            retiring: Default::default(),
        };
        // Registration completes with the pid; a row that was ended meanwhile (stopped while
        // starting) or a write that fails leaves a process nobody may keep: shut it down.
        let (pid, start) = (i64::from(spawned.pid), spawned.start as i64);
        let recorded = async {
            store::workers::spawned(&mut self.ctx.conn().await?, &id, pid, start, &self.ctx.owner, self.ctx.epoch).await
        }
        .await;
        let reason = match recorded {
            Ok(true) => None,
            // A process that exits at once has its row ended by its reader before the pid is
            // recorded: that is an exit, not a withdrawn registration.
            Ok(false) => Some(match s.link.wait_exit(EXIT_DRAIN).await {
                Some(status) => format!("the server worker {}", describe_exit(&status)),
                None => format!("worker {id} was stopped before its registration completed; its process was shut down"),
            }),
            Err(e) => Some(format!("could not register worker {id} ({e}); its process was shut down")),
        };
        if let Some(reason) = reason {
            tracing::warn!(worker = %id, pid = spawned.pid, "{reason}");
            self.retire(&s, WorkerState::Error, &reason, grace).await;
            return Err(failed(reason));
        }
        // Ready once it answers `initialize`.
        let initialized = s.link.call("initialize", acp::initialize_params(), deadline, cancel).await;
        let why = match initialized.and_then(|r| acp::AgentInfo::of(&r).map_err(Ending::Violation)) {
            Ok(agent) => {
                s.agent = agent;
                let (owner, epoch) = (&self.ctx.owner, self.ctx.epoch);
                let ok =
                    async { store::workers::ready(&mut self.ctx.conn().await?, &id, owner, epoch, now_ms()).await }
                        .await;
                match ok {
                    Ok(true) => {
                        tracing::info!(worker = %id, profile = %spec.profile, pid = s.pid, agent = ?s.agent.name, sessions = spec.sessions, "server worker ready");
                        return Ok(s);
                    }
                    // Its row ended meanwhile: it exited right after answering, or was stopped.
                    Ok(false) => match s.link.wait_exit(EXIT_DRAIN).await {
                        Some(status) => format!("the server worker {}", describe_exit(&status)),
                        None => "it was stopped while it started".to_string(),
                    },
                    Err(e) => format!("could not record it ready: {e}"),
                }
            }
            Err(Ending::Canceled) => {
                self.retire(&s, WorkerState::Stopped, "Its task was canceled while it started", grace).await;
                return Err(Ending::Canceled);
            }
            Err(Ending::TimedOut) => {
                self.retire(&s, WorkerState::Error, "It was not ready in time", grace).await;
                return Err(Ending::TimedOut);
            }
            Err(Ending::Exited(status)) => return Err(failed(format!("the server worker {}", describe_exit(&status)))),
            Err(Ending::Violation(v)) => format!("Protocol violation: {v}"),
            Err(Ending::SpawnFailed(why) | Ending::Reported(why) | Ending::Stopped(why)) => why,
            Err(other) => format!("it did not start: {other:?}"),
        };
        self.retire(&s, WorkerState::Error, &why, grace).await;
        Err(failed(why))
    }

    /// Spawn the process: own process group, piped stdin/stdout, stderr to its log, tagged
    /// with its worker id; then start the reader of its stdout, which routes what it says.
    async fn spawn(&self, id: &str, spec: &ServerSpec) -> Result<(Spawned, Arc<Link>)> {
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
        let link = Arc::new(Link::new(stdin));
        let (ctx, worker, reader_link) = (self.ctx.clone(), id.to_string(), link.clone());
        tokio::spawn(async move {
            let read = read_messages(stdout, &reader_link);
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
            match status {
                Ok(status) => {
                    let code = exit_code(&status);
                    let why = format!("It {}", describe_exit(&status));
                    if matches!(end_row(&ctx, &worker, WorkerState::Error, Some(code), Some(&why)).await, Ok(true)) {
                        tracing::warn!(worker = %worker, pid, "server worker {}", describe_exit(&status));
                    }
                    reader_link.exited(status);
                }
                Err(e) => reader_link.set_gone(Gone::Stopped(format!("waiting for its exit failed: {e}"))),
            }
        });
        worker::spawn_window().await;
        Ok((Spawned { pid, start }, link))
    }
}

/// A spawned server process, before its reader owns it.
struct Spawned {
    pid: i32,
    start: u64,
}

/// What `verdict` finds: the worker's end (state and why), or `None` when it stays.
fn verdict(job: &JobRow, ending: &Ending, gone: Option<Gone>) -> Option<(WorkerState, String)> {
    if let Some(gone) = gone {
        return Some(match gone {
            Gone::Exited(status) => (WorkerState::Error, format!("It {}", describe_exit(&status))),
            Gone::Violation(v) => (WorkerState::Error, format!("Protocol violation: {v}")),
            Gone::Stopped(why) => (WorkerState::Stopped, why),
        });
    }
    match ending {
        Ending::Answered { .. } | Ending::Reported(_) | Ending::Canceled | Ending::TimedOut | Ending::Unprepared(_) => {
            None
        }
        Ending::Violation(v) => Some((WorkerState::Error, format!("Protocol violation: {v}"))),
        Ending::Forbidden(why) => Some((WorkerState::Stopped, format!("{why} (task {})", job.id))),
        Ending::Stopped(why) => Some((WorkerState::Stopped, why.clone())),
        Ending::Exited(status) => Some((WorkerState::Error, format!("It {}", describe_exit(status)))),
        Ending::SpawnFailed(e) | Ending::NotFound { message: e, .. } => Some((WorkerState::Error, e.clone())),
    }
}

impl Server {
    /// Wait until no turn runs on it (all its seats held by the caller until dropped; none
    /// when it was retired meanwhile).
    async fn idle(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.seats.clone().acquire_many_owned(self.spec.seats()).await.ok()
    }

    /// Run one task attempt on a seat of this worker: a session of its own, recorded in
    /// `worker_sessions`, then one prompt turn, its activity recorded as it arrives. `None`
    /// when the worker may not take it (its row ended, or a stop was asked for); else how it
    /// ended: the answer, the agent's failure, the worker's exit, a violation, the timeout or a
    /// cancel.
    async fn serve(
        &self,
        ctx: &PoolContext,
        job: &JobRow,
        deadline: Instant,
        grace: Duration,
        cancel: &mut Cancel,
    ) -> Option<Ending> {
        let Opened { session, mut inbox } = match self.link.open(&job.project_dir, deadline, cancel).await {
            Ok(opened) => opened,
            Err(ending) => return Some(ending),
        };
        let _open = OpenSession { link: &self.link, session: &session };
        let taken = async {
            let mut conn = ctx.conn().await?;
            let (owner, epoch) = (&ctx.owner, ctx.epoch);
            store::workers::take_session(&mut conn, &self.id, &job.id, job.attempt, &session, owner, epoch, now_ms())
                .await
        };
        match taken.await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(Ending::SpawnFailed(format!("recording the worker's session: {e}"))),
        }
        let policy = Policy::parse(job.permissions.as_deref());
        if let Some(mode) = &policy.mode {
            let params = json!({"sessionId": session, "modeId": mode});
            if let Err(ending) = self.link.call("session/set_mode", params, deadline, cancel).await {
                return Some(match ending {
                    Ending::Reported(why) => Ending::Reported(format!("could not set session mode \"{mode}\": {why}")),
                    other => other,
                });
            }
        }
        let attachments: Vec<String> = serde_json::from_str(&job.attachments).unwrap_or_default();
        let prompt = acp::prompt_blocks(&job.task, job.system_prompt.as_deref(), &attachments, self.agent.images);
        let (tx, answer) = oneshot::channel();
        let params = json!({"sessionId": session, "prompt": prompt});
        if let Err(ending) = self.link.request("session/prompt", &params, Waiter::Call(tx)).await {
            return Some(ending);
        }
        let writer =
            store::events::Writer { job_id: &job.id, attempt: job.attempt, owner: &ctx.owner, epoch: ctx.epoch };
        let mut log = EventLog::new(writer, ctx.event_caps);
        let mut turn = Turn {
            job: &job.id,
            session: &session,
            profile: &job.profile,
            project: std::path::Path::new(&job.project_dir),
            policy,
            tools: HashMap::new(),
            answer: String::new(),
        };
        let ending = self.turn(ctx, &mut turn, &mut log, &mut inbox, answer, deadline, grace, cancel).await;
        log.flush(&ctx.store).await;
        Some(ending)
    }

    /// One prompt turn, until its answer. A cancel or the timeout sends `session/cancel` and
    /// waits `grace` for the turn to end (the worker stays for the next task); a worker that
    /// does not end it in time serves no more.
    #[allow(clippy::too_many_arguments)]
    async fn turn(
        &self,
        ctx: &PoolContext,
        turn: &mut Turn<'_>,
        log: &mut EventLog<'_>,
        inbox: &mut mpsc::UnboundedReceiver<Inbound>,
        mut answer: oneshot::Receiver<Answer>,
        deadline: Instant,
        grace: Duration,
        cancel: &mut Cancel,
    ) -> Ending {
        // Since when the turn is being ended, and how the task ends then.
        let mut ending: Option<(Instant, Ending)> = None;
        let mut tick = tokio::time::interval(activity::FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let cancel_turn = json!({"sessionId": turn.session});
        loop {
            let limit = ending.as_ref().map_or(deadline, |(t, _)| *t + grace);
            tokio::select! {
                // What the agent sent before its answer is read before the answer.
                biased;
                got = inbox.recv() => match got {
                    None => return self.link.gone_ending(),
                    Some(Inbound::Update(params)) => {
                        let reading = acp::read_update(params.get("update").unwrap_or(&Value::Null), &mut turn.tools, now_ms());
                        if let Some(text) = &reading.answer {
                            turn.answer.push_str(text);
                        }
                        log.push(reading.event);
                        if let Some(why) = reading.tool.and_then(|id| turn.forbidden(&id)) {
                            let _ = self.link.notify("session/cancel", cancel_turn.clone()).await;
                            return Ending::Forbidden(why);
                        }
                    }
                    Some(Inbound::Permission { id, params }) => {
                        let d = turn.decide(&params, ending.is_some());
                        log.push(store::events::NewEvent {
                            at_ms: now_ms(),
                            kind: EventKind::Permission,
                            text: d.text.clone(),
                            payload: Some(activity::bounded_payload(&params)),
                        });
                        if self.link.respond(&id, json!({"outcome": d.outcome})).await.is_err() {
                            return self.link.broken().await;
                        }
                        if let Some(why) = d.fail {
                            let _ = self.link.notify("session/cancel", cancel_turn.clone()).await;
                            return Ending::Forbidden(why);
                        }
                    }
                },
                got = &mut answer => {
                    let Ok(result) = got else { return self.link.gone_ending() };
                    if let Some((_, e)) = ending {
                        return e;
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
                _ = tick.tick() => log.flush(&ctx.store).await,
                _ = tokio::time::sleep_until(limit) => match ending.take() {
                    // No end to the turn after its cancel: the worker serves no more.
                    Some((_, e)) => {
                        let why = match e {
                            Ending::TimedOut => "It did not end a timed-out turn in time",
                            _ => "It did not answer a cancel in time",
                        };
                        self.link.set_gone(Gone::Stopped(format!("{why} (task {})", turn.job)));
                        return e;
                    }
                    None => {
                        ending = Some((Instant::now(), Ending::TimedOut));
                        if self.link.notify("session/cancel", cancel_turn.clone()).await.is_err() {
                            self.link.broken().await;
                            return Ending::TimedOut;
                        }
                    }
                },
                _ = cancel.requested(), if ending.is_none() => {
                    ending = Some((Instant::now(), Ending::Canceled));
                    if self.link.notify("session/cancel", cancel_turn.clone()).await.is_err() {
                        self.link.broken().await;
                        return Ending::Canceled;
                    }
                }
            }
        }
    }
}

/// A session with its turn: once the turn is over (however it ends), late messages of the
/// session are dropped.
struct OpenSession<'a> {
    link: &'a Link,
    session: &'a str,
}

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.link.close_session(self.session);
    }
}

/// One prompt turn's state.
struct Turn<'a> {
    job: &'a str,
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
async fn read_messages(stdout: ChildStdout, link: &Arc<Link>) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(acp::MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                link.set_gone(Gone::Violation(format!("reading its output failed: {e}")));
                break;
            }
        }
        let complete = line.last() == Some(&b'\n');
        if !complete && line.len() > acp::MAX_LINE {
            link.set_gone(Gone::Violation(format!("a line over {} bytes", acp::MAX_LINE)));
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        match Incoming::parse(text) {
            Ok(m) => link.deliver(m),
            Err(e) => {
                link.set_gone(Gone::Violation(e));
                break;
            }
        }
        if link.gone().is_some_and(|g| matches!(g, Gone::Violation(_))) {
            break;
        }
    }
    let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
}

/// A server worker's log (its stderr): `<logs>/workers/<worker id>.log`.
pub fn log_path(logs_dir: &std::path::Path, worker_id: &str) -> std::path::PathBuf {
    logs_dir.join("workers").join(format!("{worker_id}.log"))
}

async fn end_row(
    ctx: &PoolContext,
    id: &str,
    state: WorkerState,
    code: Option<i64>,
    why: Option<&str>,
) -> Result<bool> {
    store::workers::end(&mut ctx.conn().await?, id, state, code, why, now_ms()).await
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

//! The dispatcher: one leader per queue file (a `flock` held for life plus a lease row whose
//! epoch fences every owner write), the claim loop, worker exits, cancels, timeouts, recovery
//! of orphans after a crash, draining on SIGINT/SIGTERM, and scheduled pruning.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use tokio::sync::{mpsc, oneshot};

use crate::agent::{output, stream};
use crate::engine::activity::{self, EventLog, Follow};
use crate::engine::worker::{self, Ending, Leaders, SpawnEnv};
use crate::engine::{hooks, proc, server};
use crate::error::{Error, Result};
use crate::job::{JobRow, JobState, now_ms};
use crate::queue::{Queue, leads};
use crate::store::jobs::{ClaimLimits, Outcome};
use crate::store::workers::SpawnLimits;
use crate::store::{self, SCHEMA_VERSION};
use crate::workflow::handoff;
use crate::workflow::runs::StepEnd;

/// How often the dispatcher asks its watcher whether another connection committed: when commits
/// wake it at once (inotify on the WAL, PostgreSQL notifications), only as a safety net;
/// without, the whole mechanism.
const POLL_LIVE: Duration = Duration::from_millis(50);
const POLL_BLIND: Duration = Duration::from_millis(25);

/// How the dispatcher was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `baton run`: waits as a standby when another leads, never exits on idle.
    Foreground,
    /// Started by `task start`/`await`/`mcp`: exits when another leads, or after an idle period.
    Auto,
}

/// Try to take the dispatcher lock without waiting. `None`: another process holds it.
pub fn try_lock(queue: &Queue) -> Result<Option<Flock<File>>> {
    let file = store::open_lock_file(&queue.dispatcher_lock())?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(Error::io("locking the dispatcher lock", e.into())),
    }
}

/// Wait for the dispatcher lock on a thread of its own (a standby). The thread ends with the
/// process if the lock never comes.
fn wait_lock(queue: &Queue) -> Result<oneshot::Receiver<Result<Flock<File>>>> {
    let file = store::open_lock_file(&queue.dispatcher_lock())?;
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io("locking the dispatcher lock", e.into()));
        let _ = tx.send(lock);
    });
    Ok(rx)
}

/// This process leads the queue: the lease under `epoch`, and the lock while it has it.
struct Leadership {
    lock: Option<Flock<File>>,
    owner: String,
    epoch: i64,
}

/// Become the leader, or find that another leads. With the lock, this process leads at once
/// (the last holder is gone), unless a leader that replaced a paused one still lives. Without
/// it, it leads only by taking the lease of a leader whose heartbeat is older than
/// `dispatcher.staleMs`. An auto-started dispatcher gives up when another leads; `baton run`
/// stands by until it can lead.
async fn take_lead(queue: &Queue, mode: Mode) -> Result<Option<Leadership>> {
    let cfg = &queue.config.config.dispatcher;
    let owner = queue.store.new_owner();
    let pid = i64::from(std::process::id());
    let poll = Duration::from_millis(cfg.heartbeat_ms.clamp(10, 1000));
    let mut lock = try_lock(queue)?;
    let mut waiter = None;
    let mut standing_by = false;
    loop {
        let mut conn = queue.store.conn().await?;
        let lease = store::lease::get(&mut conn).await?;
        let now = now_ms();
        let epoch = match (&lock, &lease) {
            (Some(_), Some(l)) if leads(l, false, cfg.stale_ms, now) => None,
            (Some(_), _) => Some(store::lease::acquire(&mut conn, &owner, pid, now).await?),
            (None, Some(l)) if !leads(l, true, cfg.stale_ms, now) => {
                let taken =
                    store::lease::take_over_stale(&mut conn, &owner, pid, now, now - cfg.stale_ms as i64).await?;
                if taken.is_some() {
                    tracing::warn!(
                        pid = l.pid,
                        heartbeat_age_ms = now - l.heartbeat_ms,
                        "the leader has not renewed its lease within dispatcher.staleMs; replacing it"
                    );
                }
                taken
            }
            (None, _) => None,
        };
        drop(conn);
        if let Some(epoch) = epoch {
            return Ok(Some(Leadership { lock, owner, epoch }));
        }
        if mode == Mode::Auto {
            tracing::info!("another dispatcher leads this queue; exiting");
            return Ok(None);
        }
        if !standing_by {
            standing_by = true;
            tracing::info!("another dispatcher leads this queue; standing by");
        }
        if lock.is_some() {
            tokio::time::sleep(poll).await;
            continue;
        }
        let rx = match waiter.as_mut() {
            Some(rx) => rx,
            None => waiter.insert(wait_lock(queue)?),
        };
        tokio::select! {
            got = rx => {
                waiter = None;
                lock = Some(got.map_err(|e| Error::io("lock thread", std::io::Error::other(e)))??);
            }
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// A job this dispatcher is running.
struct Running {
    job: JobRow,
    cancel: Option<oneshot::Sender<()>>,
}

/// What a job's own task needs to spawn, record and watch its worker.
#[derive(Clone)]
struct JobContext {
    store: store::Store,
    spawn_env: SpawnEnv,
    owner: String,
    epoch: i64,
    grace: Duration,
    kill_stragglers: bool,
    leaders: Leaders,
    done: mpsc::UnboundedSender<Report>,
    servers: Arc<server::Pool>,
    spawn_limits: SpawnLimits,
    event_caps: store::events::EventCaps,
}

/// What a job's task tells the dispatcher, in order: its oneshot worker's process once spawned,
/// then the worker's end. The dispatcher writes them in batches on its own connection, a row
/// always with or before its job's result.
enum Report {
    Spawned(store::jobs::NewWorker),
    Finished(Box<Finished>),
}

/// A worker's end, as the watcher task reports it (with what a oneshot worker's logs say).
struct Finished {
    job: JobRow,
    ending: Ending,
    read: Option<LogReading>,
}

/// Run the dispatcher until drained (signal), idle (auto mode), or superseded.
pub async fn run(queue: Queue, mode: Mode) -> Result<()> {
    if mode == Mode::Auto {
        // Detached: stderr is /dev/null.
        crate::logging::to_file(&queue.dispatcher_log());
    }
    check_clock(&queue).await?;
    let Some(lead) = take_lead(&queue, mode).await? else { return Ok(()) };
    proc::become_subreaper();
    let _lock = lead.lock;
    let mut d = Dispatcher::new(queue, mode, lead.owner, lead.epoch).await?;
    let result = d.run_loop().await;
    // A prune stops at its next await: each batch's delete commits whole, and files whose row
    // went before their unlink are swept by the next prune.
    if let Some(h) = d.pruning.take() {
        h.abort();
    }
    // Server workers live only as long as the dispatcher that holds their pipes.
    d.servers.shutdown(Duration::from_millis(d.queue.config.config.jobs.kill_grace_ms)).await;
    if result.is_ok()
        && let Err(e) = store::lease::release(&mut d.own, &d.owner, d.epoch, now_ms()).await
    {
        tracing::warn!("could not mark this dispatcher stopped: {e}");
    }
    d.queue.store.close().await;
    result
}

/// On a shared queue, refuse to run on a machine whose clock is far off the database server's:
/// nodes write heartbeats by their own clocks and judge each other's by theirs, so a node half
/// a `dispatcher.staleMs` off would take over live nodes (or be taken over while alive). A
/// smaller skew is logged.
async fn check_clock(queue: &Queue) -> Result<()> {
    let mut conn = queue.store.conn().await?;
    let Some(skew) = store::lease::clock_skew(&mut conn, local_clock).await? else { return Ok(()) };
    let stale_ms = queue.config.config.dispatcher.stale_ms as i64;
    let how = if skew > 0 { "behind" } else { "ahead of" };
    if skew.abs() > stale_ms / 2 {
        return Err(Error::Invalid(format!(
            "this machine's clock is {} ms {how} the database server's, more than half of dispatcher.staleMs \
             ({stale_ms} ms): nodes judge each other's heartbeats by their clocks, so this one would take over live \
             nodes or be taken over while alive. Synchronize the clock (NTP), then start the dispatcher",
            skew.abs()
        )));
    }
    if skew.abs() > stale_ms / 10 {
        tracing::warn!(
            skew_ms = skew,
            stale_ms,
            "this machine's clock is {} ms {how} the database server's",
            skew.abs()
        );
    }
    Ok(())
}

/// This machine's clock for the skew check; with the `test-hooks` feature, moved by
/// `BATON_TEST_CLOCK_SKEW_MS` so tests can stand in for a machine whose clock is off.
fn local_clock() -> i64 {
    #[cfg(feature = "test-hooks")]
    if let Some(ms) = std::env::var("BATON_TEST_CLOCK_SKEW_MS").ok().and_then(|v| v.parse::<i64>().ok()) {
        return now_ms() + ms;
    }
    now_ms()
}

struct Dispatcher {
    queue: Queue,
    mode: Mode,
    owner: String,
    epoch: i64,
    running: HashMap<String, Running>,
    tx: mpsc::UnboundedSender<Report>,
    rx: mpsc::UnboundedReceiver<Report>,
    /// The dispatcher's own connection: the loop's claims, results and lease renewals are
    /// written here, and since its watcher never reports its own commits, a change it reports
    /// is another connection's commit (a new task, a cancel, a job task's events), the only
    /// kind the loop must look into.
    own: store::Watcher,
    spawn_env: SpawnEnv,
    leaders: Leaders,
    servers: Arc<server::Pool>,
    /// Modification times of the config files, to reload them when they change.
    config_stamp: Vec<Option<std::time::SystemTime>>,
    /// Reports that could not be written yet (the database refused), in their order.
    unwritten: Vec<Report>,
    /// The finish hook: its row in sync with the configuration, the hooks in flight.
    hooks: hooks::Hooks,
    /// The scheduled prune, in a task of its own: deleting a large backlog of finished jobs
    /// and their logs takes seconds, and the loop goes on claiming, writing results and
    /// renewing its lease meanwhile. At most one at a time.
    pruning: Option<tokio::task::JoinHandle<()>>,
}

/// SIGINT and SIGTERM, each listened to for the whole run. A listener made afresh for every
/// wait (`tokio::signal::ctrl_c()` in the select) misses a signal that arrives while the loop is
/// claiming or writing, and once tokio has taken SIGINT over nothing else ends the process: a
/// busy dispatcher ignored Ctrl-C.
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt()).map_err(|e| Error::io("installing the SIGINT handler", e))?;
        let term = signal(SignalKind::terminate()).map_err(|e| Error::io("installing the SIGTERM handler", e))?;
        Ok(StopSignals { int, term })
    }

    /// Either signal, including one that arrived since the last call.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// The loop's clocks and flags, kept across turns (and across database errors).
struct LoopState {
    last_heartbeat: Instant,
    last_prune: Instant,
    idle_since: Option<Instant>,
    next_due: Option<i64>,
    /// Claim (and look into due times) on this turn: a result freed a place, or another
    /// connection committed.
    dirty: bool,
    /// Another connection committed since the cancels were last looked for.
    foreign: bool,
    recovered: bool,
}

/// What one turn of the loop decided.
enum Turn {
    Go,
    Exit,
    Drain,
}

/// Modification times of the configuration files (None: absent).
fn config_stamp(queue: &Queue) -> Vec<Option<std::time::SystemTime>> {
    let p = &queue.config.paths;
    [&p.global, &p.project].iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

impl Dispatcher {
    async fn new(queue: Queue, mode: Mode, owner: String, epoch: i64) -> Result<Dispatcher> {
        tracing::info!(%owner, epoch, db = %queue.store.describe(), "dispatcher leads the queue");
        let own = queue.store.watcher().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let spawn_env = SpawnEnv {
            guard_var: queue.config.config.security.recursive_spawn_env_var.clone(),
            db: queue.store.locator().to_path_buf(),
            logs_dir: queue.loc.logs_dir(),
        };
        let config_stamp = config_stamp(&queue);
        let leaders = Leaders::default();
        let servers = Arc::new(server::Pool::new(server::PoolContext {
            store: queue.store.clone(),
            owner: owner.clone(),
            epoch,
            spawn_env: spawn_env.clone(),
            leaders: leaders.clone(),
            event_caps: event_caps(&queue.config.config.jobs),
        }));
        Ok(Dispatcher {
            queue,
            mode,
            owner,
            epoch,
            running: HashMap::new(),
            tx,
            rx,
            own,
            spawn_env,
            leaders,
            servers,
            config_stamp,
            unwritten: Vec::new(),
            hooks: hooks::Hooks::new(),
            pruning: None,
        })
    }

    async fn run_loop(&mut self) -> Result<()> {
        let prune_every = Duration::from_millis(self.queue.config.config.retention.interval_ms.max(1000));
        let mut stop = StopSignals::new()?;
        let mut st = LoopState {
            last_heartbeat: Instant::now(),
            last_prune: Instant::now() - prune_every,
            idle_since: None,
            next_due: None,
            dirty: true,
            foreign: true,
            recovered: false,
        };
        // An episode of database errors: logged when it begins and when it ends.
        let mut trouble: Option<Instant> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.turn(&mut st, &mut stop).await {
                Ok(turn) => {
                    if let Some(since) = trouble.take() {
                        tracing::info!(
                            after_ms = since.elapsed().as_millis() as u64,
                            "the database answers again; resuming"
                        );
                    }
                    backoff = Duration::from_millis(50);
                    match turn {
                        Turn::Go => {}
                        Turn::Exit => return Ok(()),
                        Turn::Drain => return self.drain().await,
                    }
                }
                Err(e) if store::is_transient(&e) => {
                    if trouble.is_none() {
                        trouble = Some(Instant::now());
                        tracing::warn!("database error; retrying with backoff, workers keep running: {e}");
                    }
                    st.dirty = true;
                    st.foreign = true;
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.recv() => return self.drain().await,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One turn: write what is pending, claim and spawn, keep the lease, prune, then wait for
    /// a worker's end, a commit, or a signal.
    async fn turn(&mut self, st: &mut LoopState, stop: &mut StopSignals) -> Result<Turn> {
        let cfg = self.queue.config.config.clone();
        let heartbeat = Duration::from_millis(cfg.dispatcher.heartbeat_ms.max(10));
        let idle_exit = Duration::from_millis(cfg.dispatcher.idle_exit_ms);
        let prune_every = Duration::from_millis(cfg.retention.interval_ms.max(1000));
        if !st.recovered {
            self.recover().await?;
            self.start_configured_workers();
            self.hooks.sync(&self.queue, &self.owner, self.epoch).await?;
            st.recovered = true;
        }
        if !self.unwritten.is_empty() {
            let batch = std::mem::take(&mut self.unwritten);
            self.finish(batch).await?;
        }
        if st.dirty || st.next_due.is_some_and(|t| t <= now_ms()) {
            st.dirty = false;
            if std::mem::take(&mut st.foreign) {
                self.check_cancels().await?;
            }
            self.claim_and_spawn().await?;
            self.hooks.start_pending(&self.queue, &self.owner, self.epoch).await?;
            if self.running.is_empty() {
                let (busy, next) = store::jobs::pending(&mut self.own, now_ms()).await?;
                let busy = busy || self.hooks.in_flight() > 0;
                st.next_due = next;
                st.idle_since = if busy { None } else { st.idle_since.or(Some(Instant::now())) };
            } else {
                st.idle_since = None;
            }
        }
        if self.mode == Mode::Auto
            && st.next_due.is_none()
            && st.idle_since.is_some_and(|t| t.elapsed() >= idle_exit)
            && self.running.is_empty()
            && self.hooks.in_flight() == 0
            && !self.is_pruning()
        {
            tracing::info!("idle; exiting");
            return Ok(Turn::Exit);
        }
        if st.last_heartbeat.elapsed() >= heartbeat {
            if !self.heartbeat().await? {
                self.abandon().await;
                return Ok(Turn::Exit);
            }
            st.last_heartbeat = Instant::now();
            // Running jobs that no live leader owns (SPEC 3: recovery runs periodically too).
            self.recover().await?;
        }
        if st.last_prune.elapsed() >= prune_every && !self.is_pruning() {
            st.last_prune = Instant::now();
            let queue = self.queue.clone();
            self.pruning = Some(tokio::spawn(async move {
                if let Err(e) = crate::engine::prune::prune(&queue, now_ms(), false).await {
                    tracing::warn!("pruning failed: {e}");
                }
            }));
        }
        tokio::select! {
            Some(report) = self.rx.recv() => {
                let mut batch = vec![report];
                while let Ok(more) = self.rx.try_recv() {
                    batch.push(more);
                }
                // A result frees a place; a worker's row alone changes nothing to claim.
                st.dirty |= batch.iter().any(|r| matches!(r, Report::Finished(_)));
                self.finish(batch).await?;
            }
            Some(end) = self.hooks.rx.recv() => {
                st.dirty = true;
                self.hooks.record_end(&self.queue, end, &self.owner, self.epoch).await?;
            }
            _ = self.own.wait(if self.own.is_live() { POLL_LIVE } else { POLL_BLIND }) => {
                if self.own.changed().await? {
                    st.dirty = true;
                    st.foreign = true;
                }
            }
            () = stop.recv() => return Ok(Turn::Drain),
        }
        Ok(Turn::Go)
    }

    fn is_pruning(&self) -> bool {
        self.pruning.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Renew the lease and re-check the schema. False: stop leading.
    async fn heartbeat(&mut self) -> Result<bool> {
        if !store::lease::renew(&mut self.own, &self.owner, self.epoch, now_ms()).await? {
            tracing::error!("lost the dispatcher lease to another dispatcher");
            return Ok(false);
        }
        let version = store::lease::schema_version(&mut self.own).await?;
        if version > SCHEMA_VERSION {
            tracing::error!(version, "a newer baton migrated this queue; exiting");
            return Ok(false);
        }
        self.reload_config_if_changed();
        self.hooks.sync(&self.queue, &self.owner, self.epoch).await?;
        let reaped = {
            let leaders = self.leaders.lock().unwrap_or_else(|e| e.into_inner());
            proc::reap_adopted(&leaders)
        };
        if reaped > 0 {
            tracing::debug!(reaped, "reaped adopted zombies");
        }
        Ok(true)
    }

    /// No longer the leader: stop this dispatcher's workers (their jobs belong to the new
    /// leader now, whose recovery retries them) and write nothing.
    async fn abandon(&mut self) {
        tracing::warn!(running = self.running.len(), "stopping this dispatcher's workers and exiting without writing");
        self.stop_running().await;
        self.unwritten.clear();
    }

    /// Stop every running worker and wait (up to the kill grace and a little more) for their
    /// ends, which are not written.
    async fn stop_running(&mut self) {
        for r in self.running.values_mut() {
            if let Some(tx) = r.cancel.take() {
                let _ = tx.send(());
            }
        }
        let grace = Duration::from_millis(self.queue.config.config.jobs.kill_grace_ms);
        let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(2);
        while !self.running.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Report::Finished(done))) => {
                    self.running.remove(&done.job.id);
                }
                Ok(Some(Report::Spawned(_))) => {}
                _ => break,
            }
        }
    }

    /// Pick up edited config files, with the profiles and workflows they define; a broken edit
    /// keeps the last good configuration. Configured server workers start anew as listed.
    fn reload_config_if_changed(&mut self) {
        let stamp = config_stamp(&self.queue);
        if stamp == self.config_stamp {
            return;
        }
        self.config_stamp = stamp;
        match self.queue.reload() {
            Ok(kept) => {
                tracing::info!("configuration changed; reloaded with its profiles and workflows");
                for key in kept {
                    tracing::warn!("configuration changed: {key} takes effect when the dispatcher restarts");
                }
                self.spawn_env.guard_var = self.queue.config.config.security.recursive_spawn_env_var.clone();
                self.start_configured_workers();
            }
            Err(e) => tracing::warn!("configuration changed but does not load; keeping the previous one: {e}"),
        }
    }

    /// Claim what the limits allow and spawn a worker for each.
    async fn claim_and_spawn(&mut self) -> Result<()> {
        let lim = &self.queue.config.config.limits;
        // The leader owns every running job (recovery took over the rest), so a full house
        // needs no query: the claim's own limit check would find no room either.
        if self.running.len() >= lim.max_concurrency as usize {
            return Ok(());
        }
        let limits = ClaimLimits {
            max_running: i64::from(lim.max_concurrency),
            max_workers: i64::from(lim.max_workers),
            max_per_session: i64::from(lim.max_workers_per_session),
            // As many as there are free places (the claim looks ahead in proportion).
            batch: (lim.max_concurrency as usize - self.running.len()).min(64) as i64,
        };
        let claimed = store::jobs::claim(&mut self.own, &self.owner, self.epoch, now_ms(), limits).await?;
        if claimed.is_empty() {
            return Ok(());
        }
        let jobs_cfg = &self.queue.config.config.jobs;
        let ctx = JobContext {
            store: self.queue.store.clone(),
            spawn_env: self.spawn_env.clone(),
            owner: self.owner.clone(),
            epoch: self.epoch,
            grace: Duration::from_millis(jobs_cfg.kill_grace_ms),
            kill_stragglers: jobs_cfg.kill_stragglers,
            leaders: self.leaders.clone(),
            done: self.tx.clone(),
            servers: self.servers.clone(),
            spawn_limits: spawn_limits(lim),
            event_caps: event_caps(jobs_cfg),
        };
        // Each job spawns, records and watches its worker in a task of its own, so a batch
        // starts together rather than one log directory and one insert after another.
        for job in claimed {
            let (cancel_tx, cancel_rx) = oneshot::channel();
            self.running.insert(job.id.clone(), Running { job: job.clone(), cancel: Some(cancel_tx) });
            tokio::spawn(run_job(ctx.clone(), job, cancel_rx));
        }
        Ok(())
    }

    /// Start the kill sequence of every running job of ours with a cancel request, and stop
    /// the server workers asked to stop.
    async fn check_cancels(&mut self) -> Result<()> {
        let servers = self.servers.has_slots();
        if self.running.is_empty() && !servers {
            return Ok(());
        }
        let (cancels, stops) = store::workers::owner_requests(&mut self.own, &self.owner, self.epoch).await?;
        for id in cancels {
            if let Some(tx) = self.running.get_mut(&id).and_then(|r| r.cancel.take()) {
                tracing::info!(task_id = %id, "canceling");
                let _ = tx.send(());
            }
        }
        let grace = Duration::from_millis(self.queue.config.config.jobs.kill_grace_ms);
        for (id, profile) in stops {
            let pool = self.servers.clone();
            tokio::spawn(async move { pool.stop(&id, &profile, grace).await });
        }
        Ok(())
    }

    /// Start the server workers the config lists in `workers`.
    fn start_configured_workers(&self) {
        let cfg = &self.queue.config.config;
        for id in &cfg.workers {
            let spec = match self.queue.profiles.get(id) {
                Some(pr) if pr.kind == crate::agent::profile::ProfileKind::Server => {
                    crate::agent::launch::server_spec(cfg, &self.queue.loc.project_dir, pr)
                }
                Some(_) => Err(Error::Invalid(format!("\"{id}\" is not a server profile"))),
                None => Err(Error::Invalid(format!("no profile \"{id}\""))),
            };
            match spec {
                Ok(spec) => {
                    let pool = self.servers.clone();
                    let limits = spawn_limits(&cfg.limits);
                    let grace = Duration::from_millis(cfg.jobs.kill_grace_ms);
                    let startup = Duration::from_millis(cfg.jobs.timeout_ms.max(1) as u64);
                    tokio::spawn(async move { pool.ensure(&spec, limits, grace, startup).await });
                }
                Err(e) => tracing::warn!("config workers: cannot start \"{id}\": {e}"),
            }
        }
    }

    /// Write what job tasks reported: the workers' rows and the finished workers' results,
    /// together. When the database refuses, the batch waits in `unwritten` for the next turn.
    async fn finish(&mut self, batch: Vec<Report>) -> Result<()> {
        let (mut spawned, mut ended) = (Vec::new(), Vec::new());
        for r in batch {
            match r {
                Report::Spawned(w) => spawned.push(w),
                Report::Finished(f) => ended.push(*f),
            }
        }
        let written = match self.write_results(&spawned, &ended).await {
            Ok(written) => written,
            Err(e) => {
                // Rows before results, as they came.
                self.unwritten.extend(spawned.into_iter().map(Report::Spawned));
                self.unwritten.extend(ended.into_iter().map(|f| Report::Finished(Box::new(f))));
                return Err(e);
            }
        };
        for f in &ended {
            if !written.contains(&f.job.id) {
                tracing::warn!(task_id = %f.job.id, "result dropped: the job was no longer ours or already finished");
            }
            self.running.remove(&f.job.id);
        }
        Ok(())
    }

    async fn write_results(&mut self, spawned: &[store::jobs::NewWorker], ended: &[Finished]) -> Result<Vec<String>> {
        let logs = self.queue.loc.logs_dir();
        let outcomes: Vec<Outcome> = ended
            .iter()
            .map(|f| {
                let mut o = outcome(&f.job, &f.ending, f.read.as_ref());
                if let (Ending::NotFound { program, .. }, Some(e)) = (&f.ending, o.error.as_mut()) {
                    e.push_str(&self.runner_hint(&f.job, program));
                }
                o
            })
            .collect();
        let now = now_ms();
        let steps = ended.iter().any(|f| f.job.workflow_run_id.is_some());
        let (owner, epoch) = (self.owner.as_str(), self.epoch);
        // One statement when it is all there is; a transaction when workers' rows and results
        // or workflow steps must commit together (a step's end, the new carry and the next
        // step's job commit with the result), so a batch written again after a refusal is
        // written whole or not at all.
        if !steps && (spawned.is_empty() || outcomes.is_empty()) {
            if !spawned.is_empty() {
                store::jobs::insert_oneshot_workers(&mut self.own, spawned, owner, epoch).await?;
            }
            if outcomes.is_empty() {
                return Ok(Vec::new());
            }
            return store::jobs::finish_many(&mut self.own, &outcomes, owner, epoch, now).await;
        }
        let mut tx = self.own.begin().await?;
        if !spawned.is_empty() {
            store::jobs::insert_oneshot_workers(&mut tx, spawned, owner, epoch).await?;
        }
        let written = store::jobs::finish_many(&mut tx, &outcomes, owner, epoch, now).await?;
        for (f, o) in ended.iter().zip(&outcomes) {
            let Some(end) = StepEnd::of(&f.job) else { continue };
            if !written.contains(&o.id) {
                continue;
            }
            // The result just written, not the row as it was claimed.
            let end = StepEnd { state: o.state, response: o.response.as_deref(), error: o.error.as_deref(), ..end };
            crate::workflow::runs::advance(&mut tx, &end, &logs, now).await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    /// What to do about a runner that is not installed: whose runner it is (the default, the
    /// configured one, or the profile's own command) and how to choose another.
    fn runner_hint(&self, job: &JobRow, program: &str) -> String {
        let cfg = &self.queue.config.config;
        let own = self.queue.profiles.get(&job.profile).is_some_and(|p| p.command.is_some());
        let choose = "`baton config show` shows the runner; set `\"runner\"` in .baton/config.json to a \
                      preset (opencode, claude, codex, gemini) or an argv such as [\"sh\", \"-c\", \"{prompt}\"], \
                      or give the profile a `command`";
        if own {
            format!(". It is the `command` of profile \"{}\": install `{program}` or change that command.", job.profile)
        } else if cfg.runner == crate::config::Config::default().runner {
            format!(". It is the default runner (the `{program}` preset): install it, or choose another: {choose}.")
        } else {
            format!(". It is the configured runner: install `{program}`, or choose another: {choose}.")
        }
    }

    /// Running jobs that no live leader owns (an earlier leader's, lost or replaced; on a
    /// shared queue, also a node's that went silent, taken over here first): stop what can be
    /// proven to be theirs, then retry or fail them.
    async fn recover(&mut self) -> Result<()> {
        let grace = Duration::from_millis(self.queue.config.config.jobs.kill_grace_ms);
        let mut conn = self.queue.store.conn().await?;
        let now = now_ms();
        let stale_before = now - self.queue.config.config.dispatcher.stale_ms as i64;
        for (node, epoch) in
            store::lease::take_over_silent(&mut conn, &self.owner, self.epoch, stale_before, now).await?
        {
            tracing::warn!(%node, epoch, "a node has not renewed its heartbeat within dispatcher.staleMs; taking over its jobs");
        }
        // Server workers of an earlier leader lost their pipes with it: stop what is proven to
        // be theirs and end their rows (their jobs are recovered below).
        for row in store::workers::stale(&mut conn, &self.owner, self.epoch).await? {
            for pgid in server::recover_row(&row, grace).await {
                tracing::info!(worker = %row.id, pgid, "stopped the server worker of a lost dispatcher");
            }
            let why = "Worker lost: its dispatcher went away";
            store::workers::end(&mut conn, &row.id, crate::state::WorkerState::Error, None, Some(why), now_ms())
                .await?;
        }
        let orphans = store::jobs::orphans(&mut conn, &self.owner, self.epoch).await?;
        drop(conn);
        for job in orphans {
            // On a shared queue another node's workers run on its own machine, out of reach.
            if self.queue.store.node().is_none() || job.owner.as_deref() == Some(&self.owner) {
                let mut conn = self.queue.store.conn().await?;
                let recorded = store::jobs::worker_pids(&mut conn, &job.id, job.attempt).await?;
                drop(conn);
                for pgid in proc::stop_proven(&recorded, &proc::Tag::attempt(&job.id, job.attempt), grace).await {
                    tracing::info!(task_id = %job.id, pgid, "stopped the worker of a lost dispatcher");
                }
            }
            let error =
                format!("Worker lost: its dispatcher went away during attempt {} of {}", job.attempt, job.max_attempts);
            let to = self.requeue(&job, &error).await?;
            tracing::info!(task_id = %job.id, to = ?to, "recovered a lost job");
        }
        Ok(())
    }

    /// Put a running job whose worker is gone back in the queue (or fail it when its attempts
    /// are spent), fenced by the owner on its row and by our lease; a workflow step advances
    /// its run in the same transaction.
    async fn requeue(&self, job: &JobRow, error: &str) -> Result<Option<JobState>> {
        let (Some(owner), Some(epoch)) = (job.owner.as_deref(), job.epoch) else { return Ok(None) };
        let backoff = backoff_ms(self.queue.config.config.jobs.retry_backoff_ms, job.attempt);
        let by = store::jobs::Leader { owner: &self.owner, epoch: self.epoch };
        let now = now_ms();
        let mut tx = self.queue.store.begin().await?;
        let to = store::jobs::requeue_lost(&mut tx, &job.id, owner, epoch, by, now, backoff, error).await?;
        if to.is_some()
            && job.workflow_run_id.is_some()
            && let Some(row) = store::jobs::get(&mut tx, &job.id).await?
            && let Some(end) = StepEnd::of(&row)
        {
            crate::workflow::runs::advance(&mut tx, &end, &self.queue.loc.logs_dir(), now).await?;
        }
        tx.commit().await?;
        Ok(to)
    }

    /// Let the hooks in flight end (each has its own timeout) and write how, so none runs twice;
    /// pending ones wait for the next dispatcher.
    async fn wait_hooks(&mut self) {
        let timeout = Duration::from_millis(self.queue.config.config.hooks.timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(1);
        while self.hooks.in_flight() > 0 {
            let Ok(Some(end)) = tokio::time::timeout_at(deadline, self.hooks.rx.recv()).await else { break };
            if let Err(e) = self.hooks.record_end(&self.queue, end, &self.owner, self.epoch).await {
                tracing::warn!("could not record a finish hook's end while draining (it will run again): {e}");
            }
        }
    }

    /// Stop claiming; let running jobs finish up to the shutdown grace; then stop the rest and
    /// queue them again (or fail them when their attempts are spent), so that no job stays
    /// `running` without a dispatcher.
    async fn drain(&mut self) -> Result<()> {
        tracing::info!(running = self.running.len(), "draining");
        let grace = Duration::from_millis(self.queue.config.config.dispatcher.shutdown_grace_ms);
        let deadline = tokio::time::Instant::now() + grace;
        while !self.running.is_empty() {
            if !self.unwritten.is_empty() {
                let batch = std::mem::take(&mut self.unwritten);
                if let Err(e) = self.finish(batch).await {
                    tracing::warn!("could not write results while draining: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(report)) => {
                    if let Err(e) = self.finish(vec![report]).await {
                        tracing::warn!("could not write a result while draining: {e}");
                    }
                }
                _ => break,
            }
        }
        self.wait_hooks().await;
        if self.running.is_empty() {
            return Ok(());
        }
        tracing::warn!(left = self.running.len(), "shutdown grace over; stopping the rest and queuing them again");
        let left: Vec<JobRow> = self.running.values().map(|r| r.job.clone()).collect();
        self.stop_running().await;
        for job in left {
            let error = format!(
                "Worker stopped: the dispatcher shut down during attempt {} of {}",
                job.attempt, job.max_attempts
            );
            match self.requeue(&job, &error).await {
                Ok(to) => tracing::info!(task_id = %job.id, to = ?to, "stopped at shutdown"),
                Err(e) => tracing::warn!(task_id = %job.id, "could not queue again at shutdown (recovery will): {e}"),
            }
        }
        Ok(())
    }
}

/// One claimed job's life in the dispatcher: prepare its logs, spawn its worker, record the
/// worker row (the attempt itself was recorded by the claim), watch it, report its end.
async fn run_job(ctx: JobContext, job: JobRow, mut cancel: oneshot::Receiver<()>) {
    let worktree = match &job.worktree_id {
        None => None,
        // A cancel during a long setup stops it (the setup process is killed with its future).
        Some(id) => match tokio::select! { r = ready_worktree(&ctx, id, &job) => Some(r), _ = &mut cancel => None } {
            Some(Ok(row)) => Some(row),
            Some(Err(e)) => {
                let _ = ctx.done.send(Report::Finished(Box::new(Finished {
                    job,
                    ending: Ending::Unprepared(e.to_string()),
                    read: None,
                })));
                return;
            }
            None => {
                let _ =
                    ctx.done.send(Report::Finished(Box::new(Finished { job, ending: Ending::Canceled, read: None })));
                return;
            }
        },
    };
    let (ending, read) = run_worker(&ctx, &job, cancel).await;
    if let Some(row) = worktree.filter(|w| w.auto_commit) {
        // Before the result is written: a finished task's branch holds all of its work.
        let message = format!(
            "{}\n\nLeft uncommitted by baton task {} (attempt {}), committed when its worker ended.\n",
            crate::worktree::subject(&job.task),
            job.id,
            job.attempt
        );
        match crate::worktree::commit_leftovers(&row, &message).await {
            Ok(Some(c)) => tracing::info!(task_id = %job.id, commit = %c, "committed a worker's leftovers"),
            Ok(None) => {}
            Err(e) => tracing::warn!(task_id = %job.id, "could not commit the worker's changes in its worktree: {e}"),
        }
    }
    let _ = ctx.done.send(Report::Finished(Box::new(Finished { job, ending, read })));
}

/// Make a job's worktree ready before its worker starts: created on the first attempt (setup
/// included), found again on later ones and after a crash.
async fn ready_worktree(ctx: &JobContext, id: &str, job: &JobRow) -> Result<crate::worktree::WorktreeRow> {
    let mut conn = ctx.store.conn().await?;
    let row = store::worktrees::get(&mut conn, id)
        .await?
        .ok_or_else(|| Error::Worktree(format!("its worktree row {id} is missing")))?;
    drop(conn);
    crate::worktree::prepare(&row, Duration::from_millis(job.timeout_ms.max(1) as u64)).await?;
    if row.state == crate::state::WorktreeState::Planned {
        let mut conn = ctx.store.conn().await?;
        store::worktrees::mark_ready(&mut conn, id, now_ms()).await?;
        return Ok(store::worktrees::get(&mut conn, id).await?.unwrap_or(row));
    }
    Ok(row)
}

/// Run a job's worker to its end: on its profile's server worker, or as a process of its own
/// whose logs are read afterwards.
async fn run_worker(ctx: &JobContext, job: &JobRow, cancel: oneshot::Receiver<()>) -> (Ending, Option<LogReading>) {
    if job.is_server() {
        let ending = ctx.servers.run_job(job, ctx.spawn_limits, ctx.grace, server::Cancel::new(cancel)).await;
        return (ending, None);
    }
    let ending = match start_worker(ctx, job).await {
        Ok(spawned) => {
            let pid = spawned.pid;
            let timeout = Duration::from_millis(job.timeout_ms.max(1) as u64);
            let watching = worker::watch(spawned, timeout, ctx.grace, ctx.kill_stragglers, cancel);
            let ending = match stream_dialect(job) {
                Some(dialect) => watch_following(ctx, job, dialect, watching).await,
                None => watching.await,
            };
            ctx.leaders.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
            ending
        }
        Err(Error::NotFound { program, path }) => {
            let message = Error::NotFound { program: program.clone(), path }.to_string();
            Ending::NotFound { program, message }
        }
        Err(e) => Ending::SpawnFailed(e.to_string()),
    };
    let failed_exit = matches!(ending, Ending::Exited(st) if !st.success());
    let (j, logs) = (job.clone(), ctx.spawn_env.logs_dir.clone());
    let read = tokio::task::spawn_blocking(move || read_logs(&j, failed_exit, &logs)).await.ok();
    (ending, read)
}

/// The stream dialect of a oneshot job's stdout, when its output spec names one.
fn stream_dialect(job: &JobRow) -> Option<stream::Dialect> {
    let spec = job.output.as_deref()?;
    serde_json::from_str::<crate::agent::extract::OutputSpec>(spec).ok()?.events
}

/// Watch a oneshot worker while following its stdout log: every `activity::FLUSH_EVERY` the
/// lines it completed become events, written in one batch; after its end, the rest, written
/// before the job's result (while the attempt still runs, as events must be).
async fn watch_following(
    ctx: &JobContext,
    job: &JobRow,
    dialect: stream::Dialect,
    watching: impl std::future::Future<Output = Ending>,
) -> Ending {
    let writer = store::events::Writer { job_id: &job.id, attempt: job.attempt, owner: &ctx.owner, epoch: ctx.epoch };
    let mut log = EventLog::new(writer, ctx.event_caps);
    let out = crate::job::log_file(&ctx.spawn_env.logs_dir, &job.id, job.attempt, "out");
    let mut follow = Some(Follow::new(out, stream::Reader::new(dialect, Some(&job.project_dir))));
    let mut tick = tokio::time::interval(activity::FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(watching);
    let ending = loop {
        tokio::select! {
            ending = &mut watching => break ending,
            _ = tick.tick() => {
                follow = read_followed(follow, false, &mut log).await;
                log.flush(&ctx.store).await;
            }
        }
    };
    read_followed(follow, true, &mut log).await;
    log.flush(&ctx.store).await;
    ending
}

/// Read a followed log on a blocking thread and queue its events (`last`: everything left).
/// A follow whose read went wrong is dropped: the job runs on without activity.
async fn read_followed(follow: Option<Follow>, last: bool, log: &mut EventLog<'_>) -> Option<Follow> {
    let mut follow = follow?;
    let read = tokio::task::spawn_blocking(move || {
        let events = if last { follow.finish(now_ms()) } else { follow.read(now_ms()) };
        (follow, events)
    })
    .await;
    match read {
        Ok((follow, events)) => {
            for e in events {
                log.push(e);
            }
            Some(follow)
        }
        Err(e) => {
            tracing::warn!("could not follow a worker's output: {e}");
            None
        }
    }
}

async fn start_worker(ctx: &JobContext, job: &JobRow) -> Result<worker::Spawned> {
    // A directory and two empty files: a few hundred microseconds of filesystem work, done on
    // this task's thread. A hop to the blocking pool and back cost more than it spared (the
    // dispatcher's CPU per /bin/true job fell ~10 % without it).
    let logs = worker::prepare_logs(job, &ctx.spawn_env)?;
    let spawned = worker::spawn(job, &ctx.spawn_env, logs, &ctx.leaders)?;
    worker::spawn_window().await;
    // Its row goes with the dispatcher's next write; until then recovery finds the worker by
    // its attempt tag.
    let _ = ctx.done.send(Report::Spawned(store::jobs::NewWorker {
        id: uuid::Uuid::new_v4().to_string(),
        profile: job.profile.clone(),
        pid: i64::from(spawned.pid),
        pid_start: spawned.start as i64,
        session: job.session.clone(),
        job_id: job.id.clone(),
        attempt: job.attempt,
        model: job.model.clone(),
        started_ms: now_ms(),
    }));
    Ok(spawned)
}

fn event_caps(jobs: &crate::config::JobsConfig) -> store::events::EventCaps {
    store::events::EventCaps { max_events: i64::from(jobs.max_events), max_bytes: jobs.max_event_bytes as i64 }
}

fn spawn_limits(lim: &crate::config::Limits) -> SpawnLimits {
    SpawnLimits {
        max_workers: i64::from(lim.max_workers),
        max_per_session: i64::from(lim.max_workers_per_session),
        rate_ms: lim.spawn_rate_limit_ms as i64,
    }
}

/// Backoff before retry number `attempt` (1-based): base, doubling, capped at an hour.
pub fn backoff_ms(base: u64, attempt: i64) -> i64 {
    let shift = (attempt.clamp(1, 20) - 1) as u32;
    (base.saturating_mul(1u64 << shift)).min(3_600_000) as i64
}

/// What a oneshot worker's logs say about its end: the response, what its output spec finds,
/// the output tail and, after a failing exit, the last word on stderr. Blocking reads (a
/// streaming CLI's log is read whole), done in the job's own task.
struct LogReading {
    response: String,
    found: crate::agent::extract::Extracted,
    tail: Option<String>,
    reason: Option<String>,
}

fn read_logs(job: &JobRow, failed_exit: bool, logs: &std::path::Path) -> LogReading {
    use crate::agent::extract::{Format, OutputSpec};
    let out = crate::job::log_file(logs, &job.id, job.attempt, "out");
    let err = crate::job::log_file(logs, &job.id, job.attempt, "err");
    let tail = Some(output::tail_of_files(&out, &err)).filter(|t| !t.is_empty());
    // A runner with an output spec (a preset, or the profile's `output`) says where the
    // response, a failure, tokens and cost are. Output of that shape without an answer (a
    // failure's event stream) is no response; output of another shape stays the response.
    let spec = job.output.as_deref().and_then(|s| serde_json::from_str::<OutputSpec>(s).ok());
    let mut found = spec.as_ref().map(|s| output::extract_log(s, &out)).unwrap_or_default();
    let response = match found.text.take() {
        Some(text) => text,
        None if found.shaped => String::new(),
        // No spec, or output of another shape: stdout is the response (read only then).
        None => output::read_response(&out).0,
    };
    let mut reason = None;
    if failed_exit && found.failure.is_none() {
        // A CLI that fails often says why on stderr only (gemini's error JSON, codex's
        // "Not inside a trusted directory").
        let stderr = output::read_tail(&err, output::TAIL_BYTES);
        let failure = |s: &OutputSpec| crate::agent::extract::extract(s, &stderr).failure;
        // A CLI that streams JSON Lines may print its error as one pretty-printed document.
        let as_document = |s: &OutputSpec| OutputSpec { format: Format::Json, ..s.clone() };
        found.failure = spec.as_ref().and_then(|s| failure(s).or_else(|| failure(&as_document(s))));
        reason = output::last_line(&stderr);
    }
    LogReading { response, found, tail, reason }
}

/// Turn a worker's end into the job's outcome.
fn outcome(job: &JobRow, ending: &Ending, read: Option<&LogReading>) -> Outcome {
    use crate::agent::extract::Extracted;
    let (response, found, tail, reason) = match (ending, read) {
        (Ending::Answered { response, tokens, cost_usd }, _) => {
            let found = Extracted { tokens: *tokens, cost_usd: *cost_usd, ..Extracted::default() };
            (response.clone(), found, None, None)
        }
        (_, Some(r)) => (r.response.clone(), r.found.clone(), r.tail.clone(), r.reason.clone()),
        // A server worker's output is its protocol and its own log, not the job's.
        (_, None) => (String::new(), Extracted::default(), None, None),
    };
    let report = handoff::report(&response).map(|r| r.to_string());
    let mut o = Outcome {
        id: job.id.clone(),
        state: JobState::Failed,
        response_chars: Some(response.chars().count() as i64),
        response: Some(response).filter(|r| !r.is_empty()),
        error: None,
        report,
        exit_code: None,
        output_tail: tail,
        tokens: found.tokens.total,
        input_tokens: found.tokens.input,
        output_tokens: found.tokens.output,
        cached_tokens: found.tokens.cached,
        cost_usd: found.cost_usd,
    };
    match ending {
        Ending::Exited(status) => {
            use std::os::unix::process::ExitStatusExt;
            if let Some(code) = status.code() {
                o.exit_code = Some(i64::from(code));
                match (&found.failure, code, &reason) {
                    (Some(msg), _, _) => o.error = Some(format!("Agent reported an error: {msg}")),
                    (None, 0, _) => o.state = JobState::Succeeded,
                    (None, _, Some(why)) => o.error = Some(format!("Worker exited with code {code}: {why}")),
                    (None, _, None) => o.error = Some(format!("Worker exited with code {code}")),
                }
            } else if let Some(sig) = status.signal() {
                o.exit_code = Some(128 + i64::from(sig));
                o.error = Some(format!("Worker killed by signal {sig}"));
            }
        }
        Ending::TimedOut => o.error = Some(format!("Task timed out after {}ms", job.timeout_ms)),
        // The error text is written from the row's cancel reason by the store.
        Ending::Canceled => o.state = JobState::Canceled,
        Ending::SpawnFailed(e) => o.error = Some(format!("Failed to start worker: {e}")),
        Ending::NotFound { message, .. } => o.error = Some(format!("Failed to start worker: {message}")),
        Ending::Answered { .. } => o.state = JobState::Succeeded,
        Ending::Reported(e) => o.error = Some(format!("Agent reported an error: {e}")),
        Ending::Violation(v) => o.error = Some(format!("Protocol violation by the server worker: {v}")),
        Ending::Forbidden(why) => o.error = Some(why.clone()),
        Ending::Stopped(why) => o.error = Some(format!("Its server worker was stopped: {why}")),
        Ending::Unprepared(why) => o.error = Some(format!("Worktree not ready: {why}")),
    }
    o
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(5000, 1), 5000);
        assert_eq!(backoff_ms(5000, 2), 10_000);
        assert_eq!(backoff_ms(5000, 3), 20_000);
        assert_eq!(backoff_ms(5000, 40), 3_600_000);
    }
}

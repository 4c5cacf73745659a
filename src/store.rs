//! All SQL, behind one interface for both backends: a queue in one SQLite file (the default)
//! or on a PostgreSQL server shared by several dispatchers (`--db postgres://...`). Opening
//! either safely, their migrations, connections and transactions, waking on other processes'
//! commits, and every statement baton runs, each of which dispatches to `baton-sqlite` or
//! `baton-pg` (the statements themselves, checked by sqlx against each engine in a crate of its
//! own).
//!
//! Nothing outside this module speaks SQL, and nothing outside it knows which engine holds the
//! queue but for what [`Store`] says of itself (a path or a URL, a node). Statements take a
//! connection, a transaction or a watcher's connection ([`Handle`]) so callers can group several
//! in one transaction; `now` is always a bind.

mod pg;
mod sqlite;
mod wake;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use baton_pg::sqlx::{PgConnection, Postgres};
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{Connection, Sqlite};

use crate::error::{Error, Result};

pub use pg::{Node, is_url, redact};
pub use sqlite::{
    APPLICATION_ID, DEFAULT_BUSY_TIMEOUT, Durability, SCHEMA_VERSION, Settings, connect_options, migrate_options,
    open_lock_file, tune_memory,
};
use wake::Waker;

/// An open queue: a SQLite file or a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct Store(Backend);

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::File),
    Pg(pg::Server),
}

impl Store {
    /// Open the queue file at `path`, creating it when there is none: check the file's
    /// identity read-only before anything touches it, migrate under `migrate_lock` when behind,
    /// then open the pool.
    ///
    /// A refusal is the caller's to report (the CLI prints it once), so it is logged at debug.
    #[tracing::instrument(skip_all, fields(db = %path.display()), err(level = "debug"))]
    pub async fn open(path: &Path, migrate_lock: &Path, settings: impl Into<Settings>) -> Result<Store> {
        Ok(Store(Backend::Sqlite(sqlite::File::open(path, migrate_lock, settings.into(), true).await?)))
    }

    /// Open a queue file that must already exist (for commands that only read it): where there
    /// is none, [`Error::NoQueue`], and nothing is created.
    #[tracing::instrument(skip_all, fields(db = %path.display()), err(level = "debug"))]
    pub async fn open_existing(path: &Path, migrate_lock: &Path, settings: impl Into<Settings>) -> Result<Store> {
        Ok(Store(Backend::Sqlite(sqlite::File::open(path, migrate_lock, settings.into(), false).await?)))
    }

    /// Open the queue in the PostgreSQL database at `url` as `node`, creating its schema in an
    /// empty database when `create` (else an empty one is [`Error::NoQueue`]).
    #[tracing::instrument(skip_all, fields(db = %redact(url)), err(level = "debug"))]
    pub async fn open_postgres(url: &str, node: Node, create: bool) -> Result<Store> {
        Ok(Store(Backend::Pg(pg::Server::open(url, node, create).await?)))
    }

    /// The queue as a person reads it: the file's path, or the URL without its password.
    pub fn describe(&self) -> String {
        match &self.0 {
            Backend::Sqlite(f) => f.path.display().to_string(),
            Backend::Pg(s) => s.shown.clone(),
        }
    }

    /// What another baton process is handed to open this same queue (`--db`, `BATON_DB`).
    pub fn locator(&self) -> &Path {
        match &self.0 {
            Backend::Sqlite(f) => &f.path,
            Backend::Pg(s) => Path::new(&s.url),
        }
    }

    /// The queue file, when the queue is one.
    pub fn file(&self) -> Option<&Path> {
        match &self.0 {
            Backend::Sqlite(f) => Some(&f.path),
            Backend::Pg(_) => None,
        }
    }

    /// The node this process is on a shared (PostgreSQL) queue; `None` for a queue file, which
    /// one dispatcher leads.
    pub fn node(&self) -> Option<&Node> {
        match &self.0 {
            Backend::Sqlite(_) => None,
            Backend::Pg(s) => Some(&s.node),
        }
    }

    /// The name a dispatcher of this process owns jobs under: a fresh one per dispatcher on a
    /// queue file; the node id on a shared queue, whose epoch then tells its processes apart.
    pub fn new_owner(&self) -> String {
        match &self.0 {
            Backend::Sqlite(_) => uuid::Uuid::new_v4().to_string(),
            Backend::Pg(s) => s.node.id.clone(),
        }
    }

    /// Say in words, with this queue's name, what a database error means for the user
    /// (another process holds the write lock, the file is damaged, its directory is read-only);
    /// other errors pass unchanged.
    pub fn explain(&self, e: impl Into<Error>) -> Error {
        let e = e.into();
        match &self.0 {
            Backend::Sqlite(f) => f.explain(e),
            Backend::Pg(_) => e,
        }
    }

    /// The SQLite pool itself, for the benchmark's measurements of single statements; baton's
    /// own code takes connections with [`Store::conn`] and [`Store::begin`].
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.0 {
            Backend::Sqlite(f) => Some(&f.pool),
            Backend::Pg(_) => None,
        }
    }

    /// A connection from the pool, for the store's statements.
    pub async fn conn(&self) -> Result<Conn> {
        Ok(Conn(match &self.0 {
            Backend::Sqlite(f) => ConnOf::Sqlite(f.pool.acquire().await?),
            Backend::Pg(s) => ConnOf::Pg(s.pool.acquire().await?, s.node.clone()),
        }))
    }

    /// A transaction: the store's statements run in it commit together, or not at all (a
    /// transaction dropped without [`Tx::commit`] rolls back).
    pub async fn begin(&self) -> Result<Tx<'static>> {
        Ok(Tx(match &self.0 {
            Backend::Sqlite(f) => TxOf::Sqlite(f.pool.begin().await?),
            Backend::Pg(s) => TxOf::Pg(s.pool.begin().await?, s.node.clone()),
        }))
    }

    /// A connection of its own, outside the pool.
    pub async fn dedicated_connection(&self) -> Result<Dedicated> {
        Ok(Dedicated(match &self.0 {
            Backend::Sqlite(f) => DedicatedOf::Sqlite(f.dedicated().await?),
            Backend::Pg(s) => {
                let (conn, pid) = s.dedicated().await?;
                DedicatedOf::Pg(conn, pid, s.node.clone())
            }
        }))
    }

    /// A watcher of other connections' commits, with a connection of its own to read on (its
    /// own commits wake nobody through it).
    pub async fn watcher(&self) -> Result<Watcher> {
        let mut conn = self.dedicated_connection().await?;
        let how = match (&self.0, &mut conn.0) {
            (Backend::Sqlite(f), DedicatedOf::Sqlite(c)) => {
                Watch::File { version: baton_sqlite::lease::data_version(c).await?, waker: Waker::new(&f.path) }
            }
            (Backend::Pg(s), DedicatedOf::Pg(_, pid, _)) => {
                let listener = s.listener().await?;
                let heard = Arc::new(Heard::default());
                heard.live.store(true, Ordering::Relaxed);
                let task = tokio::spawn(listen(listener, *pid, heard.clone()));
                Watch::Pg { seen: 0, heard, task }
            }
            _ => unreachable!("a dedicated connection is of its store's backend"),
        };
        Ok(Watcher { conn, how })
    }

    /// Close the pool (on SQLite this checkpoints and releases the file).
    pub async fn close(&self) {
        match &self.0 {
            Backend::Sqlite(f) => f.pool.close().await,
            Backend::Pg(s) => s.pool.close().await,
        }
    }
}

/// A connection from the queue's pool. Callers hold it and hand it to the store's statements;
/// what it is made of stays inside `store`.
pub struct Conn(ConnOf);

enum ConnOf {
    Sqlite(sqlx::pool::PoolConnection<Sqlite>),
    Pg(sqlx::pool::PoolConnection<Postgres>, Arc<Node>),
}

/// An open transaction on the queue (see [`Store::begin`] and [`Dedicated::begin`]).
pub struct Tx<'c>(TxOf<'c>);

enum TxOf<'c> {
    Sqlite(sqlx::Transaction<'c, Sqlite>),
    Pg(sqlx::Transaction<'c, Postgres>, Arc<Node>),
}

/// A connection outside the pool (see [`Store::dedicated_connection`]).
pub struct Dedicated(DedicatedOf);

enum DedicatedOf {
    Sqlite(SqliteConnection),
    /// With its backend's process id.
    Pg(PgConnection, u32, Arc<Node>),
}

impl Tx<'_> {
    pub async fn commit(self) -> Result<()> {
        match self.0 {
            TxOf::Sqlite(t) => t.commit().await?,
            TxOf::Pg(t, _) => t.commit().await?,
        }
        Ok(())
    }
}

impl Dedicated {
    /// A transaction on this connection: its commit, like any write here, wakes no watcher
    /// through this connection.
    pub async fn begin(&mut self) -> Result<Tx<'_>> {
        Ok(Tx(match &mut self.0 {
            DedicatedOf::Sqlite(c) => TxOf::Sqlite(Connection::begin(c).await?),
            DedicatedOf::Pg(c, _, node) => TxOf::Pg(Connection::begin(c).await?, node.clone()),
        }))
    }
}

/// A connection as a statement sees it: which engine, and on a shared queue, this node.
pub enum Db<'a> {
    Sqlite(&'a mut SqliteConnection),
    Pg(&'a mut PgConnection, &'a Node),
}

/// What a caller can hand a statement: a connection, a transaction, a dedicated connection or
/// a watcher's.
pub trait Handle: Send {
    fn db(&mut self) -> Db<'_>;
}

impl Handle for Conn {
    fn db(&mut self) -> Db<'_> {
        match &mut self.0 {
            ConnOf::Sqlite(c) => Db::Sqlite(c),
            ConnOf::Pg(c, n) => Db::Pg(c, n),
        }
    }
}

impl Handle for Tx<'_> {
    fn db(&mut self) -> Db<'_> {
        match &mut self.0 {
            TxOf::Sqlite(c) => Db::Sqlite(c),
            TxOf::Pg(c, n) => Db::Pg(c, n),
        }
    }
}

impl Handle for Dedicated {
    fn db(&mut self) -> Db<'_> {
        match &mut self.0 {
            DedicatedOf::Sqlite(c) => Db::Sqlite(c),
            DedicatedOf::Pg(c, _, n) => Db::Pg(c, n),
        }
    }
}

impl Handle for Watcher {
    fn db(&mut self) -> Db<'_> {
        self.conn.db()
    }
}

/// Wakes on other connections' commits to the queue, from any process (or, on PostgreSQL, any
/// machine). On a file: inotify on its `-wal` wakes it at once, and `PRAGMA data_version` on
/// its own connection tells a real change from a spurious wake-up (without inotify, the version
/// is polled at the bound instead). On PostgreSQL: `LISTEN baton`, every commit's notification
/// but those of its own connection.
pub struct Watcher {
    conn: Dedicated,
    how: Watch,
}

enum Watch {
    File { version: i64, waker: Waker },
    Pg { seen: u64, heard: Arc<Heard>, task: tokio::task::JoinHandle<()> },
}

/// What the listener task heard: how many notifications (a lost connection counts as one, as
/// it may have missed some), a wake-up, and whether it is listening.
#[derive(Default)]
struct Heard {
    count: AtomicU64,
    wake: tokio::sync::Notify,
    live: AtomicBool,
}

async fn listen(mut listener: baton_pg::sqlx::postgres::PgListener, own: u32, heard: Arc<Heard>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) if n.process_id() == own => continue,
            Ok(Some(_)) => {}
            // The connection was lost; the next call reconnects and listens again.
            Ok(None) => {}
            Err(e) => {
                heard.live.store(false, Ordering::Relaxed);
                tracing::warn!("listening for queue changes failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        heard.count.fetch_add(1, Ordering::Relaxed);
        heard.wake.notify_one();
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Watch::Pg { task, .. } = &self.how {
            task.abort();
        }
    }
}

impl Watcher {
    /// Whether commits wake the watcher at once (else only its bounded poll sees them).
    pub fn is_live(&self) -> bool {
        match &self.how {
            Watch::File { waker, .. } => waker.is_live(),
            Watch::Pg { heard, .. } => heard.live.load(Ordering::Relaxed),
        }
    }

    /// Wait until a commit may have happened, or `max` passes (cancel-safe; callers then ask
    /// [`Watcher::changed`]).
    pub async fn wait(&mut self, max: Duration) {
        match &mut self.how {
            Watch::File { waker, .. } => waker.wait(max).await,
            Watch::Pg { seen, heard, .. } => {
                if heard.count.load(Ordering::Relaxed) == *seen {
                    let _ = tokio::time::timeout(max, heard.wake.notified()).await;
                }
            }
        }
    }

    /// Whether another connection committed since last asked.
    pub async fn changed(&mut self) -> Result<bool> {
        match (&mut self.how, &mut self.conn.0) {
            (Watch::File { version, .. }, DedicatedOf::Sqlite(c)) => {
                let v = baton_sqlite::lease::data_version(c).await?;
                Ok(std::mem::replace(version, v) != v)
            }
            (Watch::Pg { seen, heard, .. }, _) => {
                let n = heard.count.load(Ordering::Relaxed);
                Ok(std::mem::replace(seen, n) != n)
            }
            _ => unreachable!("a watcher's connection is of its own backend"),
        }
    }

    /// Wait up to `max` for the next wake-up; true when the queue changed since last asked.
    pub async fn next(&mut self, max: Duration) -> Result<bool> {
        self.wait(max).await;
        self.changed().await
    }

    /// A transaction on the watcher's own connection (its commit wakes no one through it).
    pub async fn begin(&mut self) -> Result<Tx<'_>> {
        self.conn.begin().await
    }
}

/// Database errors a long-lived process outlives: a write lock held too long by another
/// process, a full disk, an I/O error, a PostgreSQL server restarting. Anything else (a damaged
/// or foreign file, a schema that is not there) will not heal by waiting.
pub fn is_transient(e: &Error) -> bool {
    match e {
        Error::Sqlx(sqlx::Error::Database(d)) => {
            if d.try_downcast_ref::<baton_pg::sqlx::postgres::PgDatabaseError>().is_some() {
                pg::is_transient(d.as_ref())
            } else {
                sqlite::is_transient(d.as_ref())
            }
        }
        Error::Sqlx(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => true,
        Error::Io { .. } => true,
        _ => false,
    }
}

/// A statement run on whichever engine the handle holds: `baton_sqlite::$module::$name` or
/// `baton_pg::$module::$name`, with the same arguments.
macro_rules! statements {
    ($module:ident: $(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        #[allow(clippy::too_many_arguments)]
        pub async fn $name(c: &mut (impl Handle + ?Sized), $($arg: $ty),*) -> Result<$ret> {
            match c.db() {
                Db::Sqlite(c) => Ok(baton_sqlite::$module::$name(c, $($arg),*).await?),
                Db::Pg(c, _) => Ok(baton_pg::$module::$name(c, $($arg),*).await?),
            }
        }
    )*};
}

/// A running attempt's activity events.
pub mod events {
    use super::{Db, Handle};
    use crate::error::Result;
    pub use baton_rows::events::*;

    statements! { events:
        fn append(w: Writer<'_>, events: &[NewEvent], caps: EventCaps) -> u64;
        fn after(job_id: &str, after_seq: i64, limit: i64) -> Vec<EventRow>;
        fn latest_by_kind(job_id: &str, attempt: i64) -> Vec<EventRow>;
    }
}

/// Finish hooks: the configured command and each finished task's run of it.
pub mod hooks {
    use super::{Db, Handle};
    use crate::error::Result;
    pub use baton_rows::hooks::*;

    statements! { hooks:
        fn sync(argv: Option<&[String]>, owner: &str, epoch: i64, now: i64) -> bool;
        fn pending(limit: i64) -> Vec<Pending>;
        fn begin(task_id: &str, owner: &str, epoch: i64, now: i64) -> bool;
        fn done(task_id: &str, exit_code: Option<i64>, error: Option<&str>, owner: &str, epoch: i64, now: i64) -> bool;
    }
}

/// Jobs: insert, read, claim, results, cancels, recovery, pruning.
pub mod jobs {
    use super::{Db, Handle};
    use crate::error::Result;
    use baton_rows::job::{JobRow, NewJob};
    pub use baton_rows::jobs::*;
    use baton_rows::state::JobState;

    statements! { jobs:
        fn insert(job: &NewJob) -> Inserted;
        fn fail_queued(id: &str, error: &str, now: i64) -> bool;
        fn get(id: &str) -> Option<JobRow>;
        fn get_many(ids: &[String]) -> Vec<JobRow>;
        fn states(ids: &[String]) -> Vec<(String, JobState)>;
        fn ids_with_prefix(prefix: &str) -> Vec<String>;
        fn list(f: &ListFilter, now: i64) -> Vec<JobRow>;
        fn counts() -> Vec<(JobState, i64)>;
        fn pending(now: i64) -> (bool, Option<i64>);
        fn insert_oneshot_workers(workers: &[NewWorker], owner: &str, epoch: i64) -> ();
        fn finish(o: &Outcome, owner: &str, epoch: i64, now: i64) -> bool;
        fn finish_many(outcomes: &[Outcome], owner: &str, epoch: i64, now: i64) -> Vec<String>;
        fn requeue_lost(id: &str, owner: &str, epoch: i64, by: Leader<'_>, now: i64, backoff_ms: i64, error: &str) -> Option<JobState>;
        fn orphans(owner: &str, epoch: i64) -> Vec<JobRow>;
        fn worker_pids(job_id: &str, attempt: i64) -> Vec<(i64, i64)>;
        fn request_cancel(id: &str, reason: Option<&str>, now: i64) -> Option<JobState>;
        fn prunable(now: i64, max_age_ms: i64, min_age_ms: i64, max_jobs: i64, batch: i64) -> Vec<String>;
        fn delete(ids: &[String]) -> u64;
        fn without_row(ids: &[String]) -> Vec<String>;
        fn vacuum() -> ();
    }

    /// Claim runnable jobs for `owner` at `epoch`, within every limit; best first. On a shared
    /// queue, only jobs whose project directory exists on this machine (or that name this node).
    pub async fn claim(
        c: &mut (impl Handle + ?Sized),
        owner: &str,
        epoch: i64,
        now: i64,
        limits: ClaimLimits,
    ) -> Result<Vec<JobRow>> {
        match c.db() {
            Db::Sqlite(c) => Ok(baton_sqlite::jobs::claim(c, owner, epoch, now, limits).await?),
            Db::Pg(c, _) => {
                let mut dirs = baton_pg::jobs::queued_dirs(c).await?;
                dirs.retain(|d| std::path::Path::new(d).is_dir());
                if dirs.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(baton_pg::jobs::claim(c, owner, epoch, now, limits, &dirs).await?)
            }
        }
    }
}

/// Who dispatches: on a queue file, the one lease its leader renews; on a shared queue, each
/// node's row.
pub mod lease {
    use super::{Db, Handle};
    use crate::error::Result;
    pub use baton_rows::lease::*;

    /// Take the lease (or, on a shared queue, register this node) for `owner`, at the next
    /// epoch; returns that epoch.
    pub async fn acquire(c: &mut (impl Handle + ?Sized), owner: &str, pid: i64, now: i64) -> Result<i64> {
        match c.db() {
            Db::Sqlite(c) => Ok(baton_sqlite::lease::acquire(c, owner, pid, now).await?),
            Db::Pg(c, node) => Ok(baton_pg::nodes::register(c, owner, &node.instance, &node.host, pid, now).await?),
        }
    }

    /// Take the lease (this node's row) only if its heartbeat is older than `stale_before`.
    pub async fn take_over_stale(
        c: &mut (impl Handle + ?Sized),
        owner: &str,
        pid: i64,
        now: i64,
        stale_before: i64,
    ) -> Result<Option<i64>> {
        match c.db() {
            Db::Sqlite(c) => Ok(baton_sqlite::lease::take_over_stale(c, owner, pid, now, stale_before).await?),
            Db::Pg(c, node) => {
                Ok(baton_pg::nodes::take_back_stale(c, owner, &node.instance, &node.host, pid, now, stale_before)
                    .await?)
            }
        }
    }

    /// Renew the heartbeat; false when `owner` no longer holds `epoch`.
    pub async fn renew(c: &mut (impl Handle + ?Sized), owner: &str, epoch: i64, now: i64) -> Result<bool> {
        match c.db() {
            Db::Sqlite(c) => Ok(baton_sqlite::lease::renew(c, owner, epoch, now).await?),
            Db::Pg(c, _) => Ok(baton_pg::nodes::heartbeat(c, owner, epoch, now).await?),
        }
    }

    /// The lease as stored (on a shared queue, this node's row while it runs).
    pub async fn get(c: &mut (impl Handle + ?Sized)) -> Result<Option<Lease>> {
        match c.db() {
            Db::Sqlite(c) => Ok(baton_sqlite::lease::get(c).await?),
            Db::Pg(c, node) => Ok(baton_pg::nodes::get(c, &node.id).await?),
        }
    }

    /// Other nodes whose heartbeat is older than `stale_before`, taken over by `by` at `epoch` (their
    /// epochs raised, so nothing they still write lands): their running jobs are then orphans.
    /// A queue file has one leader, whose lease [`take_over_stale`] takes: none.
    pub async fn take_over_silent(
        c: &mut (impl Handle + ?Sized),
        by: &str,
        epoch: i64,
        stale_before: i64,
        now: i64,
    ) -> Result<Vec<(String, i64)>> {
        match c.db() {
            Db::Sqlite(_) => Ok(Vec::new()),
            Db::Pg(c, _) => Ok(baton_pg::nodes::take_over_stale(c, by, epoch, stale_before, now).await?),
        }
    }

    /// A clean exit: on a shared queue this node's row is marked stopped at `epoch` (its jobs
    /// were drained), so no other node waits for its heartbeat to go stale. A queue file's
    /// lease simply ages.
    pub async fn release(c: &mut (impl Handle + ?Sized), owner: &str, epoch: i64, now: i64) -> Result<()> {
        match c.db() {
            Db::Sqlite(_) => Ok(()),
            Db::Pg(c, _) => {
                baton_pg::nodes::stop(c, owner, epoch, now).await?;
                Ok(())
            }
        }
    }

    /// On a shared queue, how far the database server's clock is ahead of this machine's (ms,
    /// negative when behind), measured over one round trip; `None` for a queue file, which one
    /// machine's clock serves alone. `local` reads this machine's clock.
    pub async fn clock_skew(c: &mut (impl Handle + ?Sized), local: impl Fn() -> i64) -> Result<Option<i64>> {
        match c.db() {
            Db::Sqlite(_) => Ok(None),
            Db::Pg(c, _) => {
                let before = local();
                let server = baton_pg::nodes::server_clock(c).await?;
                let after = local();
                Ok(Some(server - (before + after) / 2))
            }
        }
    }

    pub use baton_pg::nodes::NodeRow;

    /// On a shared queue, the nodes heart-beating since `stale_before`, by id; `None` for a
    /// queue file, which has no nodes.
    pub async fn live_nodes(c: &mut (impl Handle + ?Sized), stale_before: i64) -> Result<Option<Vec<NodeRow>>> {
        match c.db() {
            Db::Sqlite(_) => Ok(None),
            Db::Pg(c, _) => Ok(Some(baton_pg::nodes::live(c, stale_before).await?)),
        }
    }

    /// The schema version the queue is at.
    pub async fn schema_version(c: &mut (impl Handle + ?Sized)) -> Result<i64> {
        match c.db() {
            Db::Sqlite(c) => Ok(baton_sqlite::lease::schema_version(c).await?),
            Db::Pg(c, _) => Ok(baton_pg::lease::schema_version(c).await?),
        }
    }
}

/// Paused profiles.
pub mod pauses {
    use super::{Db, Handle};
    use crate::error::Result;
    pub use baton_rows::pauses::*;

    statements! { pauses:
        fn pause(profile: &str, by: &str, now: i64) -> bool;
        fn resume(profile: Option<&str>) -> u64;
        fn all() -> Vec<PauseRow>;
    }
}

/// Moving a queue between stores: pages of each table's rows as JSON, restored inside an open
/// import (which the schema admits only on a queue without tasks).
pub mod transfer {
    use super::{Db, Handle};
    use crate::error::Result;
    pub use baton_rows::transfer::*;

    statements! { transfer:
        fn page(table: Table, after: &Key, limit: i64) -> Vec<Exported>;
        fn restore(table: Table, rows: &str) -> ();
        fn mark() -> ();
        fn rollback_to_mark() -> ();
        fn release_mark() -> ();
        fn held() -> i64;
        fn open(source: &str, format: i64, now: i64) -> i64;
        fn close(id: i64, restored: Restored, now: i64) -> ();
        fn snapshot() -> ();
    }
}

/// Worker processes: oneshot workers' rows, server workers and their sessions.
pub mod workers {
    use super::{Db, Handle};
    use crate::error::Result;
    use baton_rows::state::WorkerState;
    pub use baton_rows::workers::*;

    statements! { workers:
        fn register(w: &NewServer<'_>, lim: SpawnLimits) -> Registered;
        fn spawned(id: &str, pid: i64, pid_start: i64, owner: &str, epoch: i64) -> bool;
        fn ready(id: &str, owner: &str, epoch: i64, now: i64) -> bool;
        fn take_session(id: &str, job_id: &str, attempt: i64, acp_session: &str, owner: &str, epoch: i64, now: i64) -> bool;
        fn end(id: &str, state: WorkerState, exit_code: Option<i64>, error: Option<&str>, now: i64) -> bool;
        fn live_workers() -> Vec<WorkerRow>;
        fn stale(owner: &str, epoch: i64) -> Vec<ServerRow>;
        fn live_servers(profile: &str) -> Vec<ServerRow>;
        fn request_stop(ids: &[String], now: i64) -> ();
        fn owner_requests(owner: &str, epoch: i64) -> (Vec<String>, Vec<(String, String)>);
        fn servers(ids: &[String]) -> Vec<ServerRow>;
        fn get_many(ids: &[String]) -> Vec<WorkerRow>;
        fn count_live(ids: &[String]) -> i64;
        fn prune_ended(before: i64) -> Vec<String>;
    }
}

/// Workflow runs and their steps.
pub mod workflow {
    use super::{Db, Handle};
    use crate::error::Result;
    use baton_rows::state::{RunState, StepState};
    pub use baton_rows::workflow::*;

    statements! { workflow:
        fn insert_run(r: &NewRun<'_>) -> ();
        fn insert_step(s: &NewStep<'_>) -> ();
        fn get_run(id: &str) -> Option<RunRow>;
        fn get_runs(ids: &[String]) -> Vec<RunRow>;
        fn steps(run_id: &str) -> Vec<StepRow>;
        fn steps_from(run_id: &str, idx: i64, n: i64) -> Vec<StepRow>;
        fn list_runs(session: Option<&str>, limit: i64) -> Vec<RunRow>;
        fn ids_with_prefix(prefix: &str) -> Vec<String>;
        fn start_step(run_id: &str, idx: i64, job_id: &str, carry_in: &str, now: i64) -> bool;
        fn end_step(run_id: &str, idx: i64, state: StepState, warning: Option<&str>, error: Option<&str>, now: i64) -> bool;
        fn set_carry(run_id: &str, carry: &str) -> ();
        fn skip_pending(run_id: &str, now: i64) -> ();
        fn end_run(run_id: &str, state: RunState, response: Option<&str>, error: Option<&str>, now: i64) -> bool;
        fn request_cancel(run_id: &str, reason: Option<&str>, now: i64) -> Option<String>;
        fn prunable(now: i64, max_age_ms: i64, min_age_ms: i64, max_runs: i64, batch: i64) -> Vec<String>;
        fn delete_runs(ids: &[String]) -> Vec<String>;
    }
}

/// Tasks' git worktrees.
pub mod worktrees {
    use super::{Db, Handle};
    use crate::error::Result;
    pub use baton_rows::worktrees::*;

    statements! { worktrees:
        fn insert(w: &NewWorktree) -> ();
        fn get(id: &str) -> Option<WorktreeRow>;
        fn get_many(ids: &[String]) -> Vec<WorktreeRow>;
        fn mark_ready(id: &str, now: i64) -> bool;
        fn mark_merged(id: &str, how: &str, merge_commit: Option<&str>, head: &str, now: i64) -> bool;
        fn mark_discarded(id: &str, now: i64) -> bool;
        fn of_finished(before: i64) -> Vec<WorktreeRow>;
        fn delete_unused() -> u64;
    }
}

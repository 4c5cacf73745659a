//! The SQLite queue file: opening it safely (identity, permissions, migrations under a lock),
//! its connection settings, the busy handler, and its errors in words. Its statements are
//! `baton-sqlite`'s.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Executor};

use crate::error::{Error, Result};

/// SQLite `application_id` of a baton queue: "BATN".
pub const APPLICATION_ID: i64 = 0x4241_544E;
/// The schema version this baton writes (`user_version`); the last migration sets it.
pub const SCHEMA_VERSION: i64 = 13;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How durable commits are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL`: safe against process crashes (WAL), the default.
    Normal,
    /// `synchronous=FULL`: also safe against power loss.
    Full,
}

/// How long a statement waits for another process's write lock by default (`storage.busyTimeoutMs`).
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The connection settings a queue is opened with (from config `storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub durability: Durability,
    /// How long a write waits for another process's write lock before it fails with
    /// [`Error::Busy`].
    pub busy_timeout: Duration,
}

impl From<Durability> for Settings {
    fn from(durability: Durability) -> Settings {
        Settings { durability, busy_timeout: DEFAULT_BUSY_TIMEOUT }
    }
}

/// The one builder of connection options: every connection baton opens gets these pragmas.
pub fn connect_options(path: &Path, settings: impl Into<Settings>) -> SqliteConnectOptions {
    tune_memory();
    let settings = settings.into();
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match settings.durability {
            Durability::Normal => SqliteSynchronous::Normal,
            Durability::Full => SqliteSynchronous::Full,
        })
        .foreign_keys(true)
        .busy_timeout(settings.busy_timeout)
}

/// Process-wide memory settings for SQLite's many short-lived temporary b-trees, applied once,
/// before the first connection (SQLite takes them only before it initializes; a process that
/// opened SQLite some other way first keeps SQLite's defaults, and this only logs so).
///
/// A statement that sorts, groups, fills an `IN` list or returns rows opens temporary b-trees
/// and drops them when it ends; a trigger's do so each time it fires. By default each one
/// allocates its page cache in bulk (about 90 KB), and glibc hands freed memory back to the
/// kernel whenever more than 128 KB sit free at the top of the heap: so every claim and every
/// finish would map fresh pages and take a page fault for each (about 200 per task lifecycle,
/// most of its time). Pages one at a time, and 8 MiB of free heap kept for reuse, end that.
pub fn tune_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is called with its documented arguments for
        // SQLITE_CONFIG_PAGECACHE (no buffer, no bulk lines); it fails cleanly with
        // SQLITE_MISUSE once SQLite is initialized, and nothing else calls it concurrently (Once).
        let rc = unsafe {
            libsqlite3_sys::sqlite3_config(
                libsqlite3_sys::SQLITE_CONFIG_PAGECACHE,
                std::ptr::null_mut::<std::ffi::c_void>(),
                0 as std::ffi::c_int,
                0 as std::ffi::c_int,
            )
        };
        if rc != libsqlite3_sys::SQLITE_OK {
            tracing::debug!(rc, "SQLite was initialized before baton opened it: page cache left bulk-allocated");
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only sets a malloc tunable; any value is valid for M_TRIM_THRESHOLD.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
        }
    });
}

/// The options of the connection that migrates a queue: `connect_options` plus
/// `auto_vacuum = INCREMENTAL`. sqlx applies it before `journal_mode`, the only moment it takes
/// effect on a new file, and the mode then lives in the file's header. It is not on every
/// connection because setting it, even to the current mode, writes page 1: every open would be
/// a write transaction that wakes every watcher.
pub fn migrate_options(path: &Path, settings: impl Into<Settings>) -> SqliteConnectOptions {
    connect_options(path, settings).auto_vacuum(SqliteAutoVacuum::Incremental)
}

/// What the identity check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// No file, an empty file, or an empty SQLite database: ours to create.
    Fresh,
    /// A baton queue at this schema version.
    Current,
    /// A baton queue at an older schema version.
    Behind,
}

/// An open queue file.
#[derive(Debug, Clone)]
pub struct File {
    pub(super) pool: SqlitePool,
    pub(super) path: PathBuf,
    options: SqliteConnectOptions,
    settings: Settings,
}

impl File {
    /// Open a queue, creating it when there is none (`create`), else [`Error::NoQueue`]: check
    /// the file's identity read-only before anything touches it, migrate under `migrate_lock`
    /// when behind, then open the pool.
    pub async fn open(path: &Path, migrate_lock: &Path, settings: Settings, create: bool) -> Result<File> {
        open(path, migrate_lock, settings, create).await.map_err(|e| explain(path, settings, e))
    }

    /// Say in words, with this queue's path, what a database error means for the user
    /// (another process holds the write lock, the file is damaged, its directory is read-only);
    /// other errors pass unchanged.
    pub fn explain(&self, e: Error) -> Error {
        explain(&self.path, self.settings, e)
    }

    /// A connection of its own, outside the pool.
    pub async fn dedicated(&self) -> Result<SqliteConnection> {
        let mut conn = SqliteConnection::connect_with(&self.options).await?;
        wait_briefly_when_busy(&mut conn, self.settings.busy_timeout).await?;
        Ok(conn)
    }
}

/// Database errors a long-lived process outlives: a write lock held too long by another
/// process, a full disk, an I/O error. A damaged or foreign file will not heal by waiting.
pub fn is_transient(d: &dyn sqlx::error::DatabaseError) -> bool {
    // SQLITE_CORRUPT (11) and SQLITE_NOTADB (26).
    let primary = d.code().and_then(|c| c.parse::<i64>().ok()).map(|c| c & 0xff);
    !matches!(primary, Some(11 | 26))
}

async fn open(path: &Path, migrate_lock: &Path, settings: Settings, create: bool) -> Result<File> {
    let options = connect_options(path, settings);
    let identity = check_identity(path).await?;
    if identity == Identity::Fresh {
        if !create {
            return Err(Error::NoQueue { path: path.to_path_buf() });
        }
        create_private_file(path)?;
    }
    if identity != Identity::Current {
        let _lock = lock_file(migrate_lock).await?;
        // Someone may have migrated while we waited for the lock.
        if check_identity(path).await? != Identity::Current {
            migrate(path, &migrate_options(path, settings)).await?;
        }
    }
    let budget = settings.busy_timeout;
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(60))
        .after_connect(move |conn, _| Box::pin(async move { wait_briefly_when_busy(conn, budget).await }))
        .connect_with(options.clone())
        .await?;
    Ok(File { pool, path: path.to_path_buf(), options, settings })
}

/// The waits before each retry of a statement that found the write lock taken, in
/// microseconds; the last repeats until the busy timeout is spent.
const BUSY_WAITS_US: [u64; 12] = [20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000];

/// A write that finds the write lock taken waits and retries, within `budget` (the busy
/// timeout), but first in steps of microseconds rather than SQLite's own, whose first wait is a
/// whole millisecond: a commit holds the lock for tens of microseconds, and the dispatcher's
/// tasks (a worker's row, its events, a claim, a finish) meet each other's commits all the time.
async fn wait_briefly_when_busy(conn: &mut SqliteConnection, budget: Duration) -> std::result::Result<(), sqlx::Error> {
    let budget_us = usize::try_from(budget.as_micros()).unwrap_or(usize::MAX);
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the handle is this connection's open sqlite3 (held locked for the call); the
    // callback reads its argument as a number, not a pointer, and cannot unwind.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_busy_handler(
            handle.as_raw_handle().as_ptr(),
            Some(busy_wait),
            budget_us as *mut std::ffi::c_void,
        )
    };
    if rc != libsqlite3_sys::SQLITE_OK {
        return Err(sqlx::Error::Configuration(format!("sqlite3_busy_handler failed ({rc})").into()));
    }
    Ok(())
}

/// SQLite's busy callback: `n` waits so far; 0 gives up (the statement fails with SQLITE_BUSY).
extern "C" fn busy_wait(budget_us: *mut std::ffi::c_void, n: std::ffi::c_int) -> std::ffi::c_int {
    let budget = budget_us as usize as u64;
    let n = usize::try_from(n).unwrap_or(0);
    let last = BUSY_WAITS_US[BUSY_WAITS_US.len() - 1];
    let (waited, next) = match BUSY_WAITS_US.get(n) {
        Some(&next) => (BUSY_WAITS_US[..n].iter().sum::<u64>(), next),
        None => {
            let beyond = (n - BUSY_WAITS_US.len()) as u64;
            (BUSY_WAITS_US.iter().sum::<u64>().saturating_add(beyond.saturating_mul(last)), last)
        }
    };
    if waited >= budget {
        return 0;
    }
    std::thread::sleep(Duration::from_micros(next.min(budget - waited)));
    1
}

/// The SQLite result code of a database error (the extended code, as SQLite reports it).
fn sqlite_code(e: &Error) -> Option<(i64, String)> {
    let sqlx = match e {
        Error::Sqlx(e) | Error::Migrate(sqlx::migrate::MigrateError::Execute(e)) => e,
        _ => return None,
    };
    match sqlx {
        sqlx::Error::Database(d) => Some((d.code()?.parse().ok()?, d.message().to_string())),
        _ => None,
    }
}

/// What a database error on the queue at `path` means, in words, with what to do about it.
fn explain(path: &Path, settings: Settings, e: Error) -> Error {
    let Some((code, message)) = sqlite_code(&e) else { return e };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let problem = match (code & 0xff, code) {
        // SQLITE_BUSY (and its extended codes).
        (5, _) => return Error::Busy { path: path.to_path_buf(), waited: settings.busy_timeout },
        // SQLITE_READONLY_DIRECTORY, SQLITE_READONLY_CANTINIT.
        (8, 1544 | 1288) => format!(
            "its directory {} is not writable by this user, and SQLite must create or open {name}-wal and \
             {name}-shm there even to read the queue. Make the directory writable (chmod u+w {}), or run baton \
             as the user who owns it.",
            dir.display(),
            dir.display()
        ),
        // SQLITE_READONLY itself (its other extended codes have other causes).
        (8, 8) => format!(
            "the file is read-only for this user (SQLite: {message}). Make it and its -wal and -shm files \
             writable (chmod u+w {}), or run baton as the user who owns them.",
            path.display()
        ),
        // SQLITE_CORRUPT, SQLITE_NOTADB.
        (11 | 26, _) => format!(
            "the file is damaged (SQLite: {message}); a truncated or partly overwritten file reads like this. \
             Restore it from a backup, or move it aside with its -wal and -shm files and baton starts a new, \
             empty queue there (`sqlite3 {} .recover` may save some of its tasks).",
            path.display()
        ),
        // SQLITE_CANTOPEN.
        (14, _) => format!(
            "SQLite cannot open it ({message}). Check that this user may read and write the file and create \
             files in {}.",
            dir.display()
        ),
        // SQLITE_FULL.
        (13, _) => format!("the disk holding it is full (SQLite: {message}). Free some space and try again."),
        _ => return e,
    };
    Error::QueueFile { path: path.to_path_buf(), problem }
}

/// Create the queue file empty with mode 0600 before SQLite does (it would use 0644, and its
/// `-wal`/`-shm` files copy the database file's mode).
fn create_private_file(path: &Path) -> Result<()> {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(format!("creating {}", path.display()), e)),
    }
}

/// Take an exclusive `flock` on `path` (created 0600), waiting for it.
async fn lock_file(path: &Path) -> Result<Flock<std::fs::File>> {
    let file = open_lock_file(path)?;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io(format!("locking {}", path.display()), e.into()))
    })
    .await
    .map_err(|e| Error::io("lock task", std::io::Error::other(e)))?
}

/// Open (creating 0600) a lock file.
pub fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

/// Decide what a file is without changing a byte of it: first the 100-byte SQLite header, then,
/// when the header alone cannot tell (WAL not yet checkpointed, an empty database), a read-only
/// connection.
async fn check_identity(path: &Path) -> Result<Identity> {
    let foreign = |reason: &str| Error::ForeignDatabase { path: path.to_path_buf(), reason: reason.to_string() };
    let mut header = [0u8; 100];
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever. Whether
    // the path is a regular file is then asked of the open descriptor, not of the path.
    match std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Identity::Fresh),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Error::QueueFile {
                path: path.to_path_buf(),
                problem: "this user may not read it (permission denied). Run baton as the user who owns it, or \
                          let this user read and write it (and its directory)."
                    .into(),
            });
        }
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        Ok(mut f) => {
            let meta = f.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if meta.is_dir() {
                return Err(Error::QueueFile {
                    path: path.to_path_buf(),
                    problem: format!(
                        "it is a directory, not a queue file. Give --db (or BATON_DB, or the config key \
                         `database`) the path of the file itself, such as {}.",
                        path.join(crate::location::DB_FILE).display()
                    ),
                });
            }
            if !meta.is_file() {
                return Err(Error::QueueFile {
                    path: path.to_path_buf(),
                    problem: format!(
                        "it is {}, not a queue file. Remove it, or give --db (or BATON_DB, or the config key \
                         `database`) another path.",
                        crate::error::file_kind(meta.file_type())
                    ),
                });
            }
            if meta.len() == 0 {
                return Ok(Identity::Fresh);
            }
            if meta.len() < 100 || f.read_exact(&mut header).is_err() {
                return Err(foreign("it is too short to be a SQLite database"));
            }
        }
    }
    if &header[..16] != b"SQLite format 3\0" {
        return Err(foreign("it is not a SQLite database"));
    }
    let be = |at: usize| i64::from(u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]));
    if be(68) == APPLICATION_ID && be(60) == SCHEMA_VERSION {
        return Ok(Identity::Current);
    }
    let (app_id, version, objects) = match read_identity(path).await {
        Ok(identity) => identity,
        Err(e) => {
            let code = match &e {
                sqlx::Error::Database(d) => d.code().and_then(|c| c.parse::<i64>().ok()),
                _ => None,
            };
            // A queue (by its header) that SQLite cannot read is a damaged queue, and a locked
            // or unwritable file is neither damaged nor foreign: `explain` words both.
            if let Some(code) = code
                && (!matches!(code & 0xff, 11 | 26) || be(68) == APPLICATION_ID)
            {
                return Err(Error::Sqlx(e));
            }
            let msg = match &e {
                sqlx::Error::Database(d) => d.message().to_string(),
                other => other.to_string(),
            };
            return Err(foreign(&format!("SQLite cannot read it ({msg})")));
        }
    };
    if app_id == APPLICATION_ID {
        if version > SCHEMA_VERSION {
            return Err(Error::NewerSchema { path: path.to_path_buf(), found: version, known: SCHEMA_VERSION });
        }
        return Ok(if version == SCHEMA_VERSION { Identity::Current } else { Identity::Behind });
    }
    if app_id == 0 && objects == 0 {
        return Ok(Identity::Fresh);
    }
    if app_id != 0 {
        return Err(foreign(&format!("its application_id is {app_id:#x}, not baton's {APPLICATION_ID:#x}")));
    }
    Err(foreign("it is another application's SQLite database"))
}

/// application_id, user_version and the number of schema objects (besides sqlx's bookkeeping
/// table, which a first migration interrupted by a crash may leave behind), read-only and in one
/// statement, so all three come from one snapshot even while another process migrates.
async fn read_identity(path: &Path) -> std::result::Result<(i64, i64, i64), sqlx::Error> {
    let opts = SqliteConnectOptions::new().filename(path).read_only(true).create_if_missing(false);
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    let identity: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT application_id FROM pragma_application_id), \
                (SELECT user_version FROM pragma_user_version), \
                (SELECT count(*) FROM sqlite_schema \
                  WHERE name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations')",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(identity)
}

/// Apply pending migrations (the caller holds the migrate lock), then checkpoint so the file's
/// header shows the new version to the fast identity check.
async fn migrate(path: &Path, options: &SqliteConnectOptions) -> Result<()> {
    tracing::info!(db = %path.display(), "migrating queue schema");
    let mut conn = SqliteConnection::connect_with(options).await?;
    MIGRATOR.run(&mut conn).await?;
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    conn.close().await?;
    Ok(())
}

/// Parse a `storage.synchronous` value.
impl FromStr for Durability {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "normal" => Ok(Durability::Normal),
            "full" => Ok(Durability::Full),
            other => {
                Err(Error::Invalid(format!("storage.synchronous must be \"normal\" or \"full\", not \"{other}\"")))
            }
        }
    }
}

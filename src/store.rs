//! All SQL: opening a queue file safely, migrations, and every statement baton runs.
//!
//! Nothing outside this module speaks SQL. Functions take a connection (or a transaction, which
//! derefs to one) so callers can group several in one transaction; `now` is always a bind.

use std::fs::File;
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
pub const SCHEMA_VERSION: i64 = 6;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// How durable commits are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL`: safe against process crashes (WAL), the default.
    Normal,
    /// `synchronous=FULL`: also safe against power loss.
    Full,
}

/// The one builder of connection options: every connection baton opens gets these pragmas.
pub fn connect_options(path: &Path, durability: Durability) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::Normal => SqliteSynchronous::Normal,
            Durability::Full => SqliteSynchronous::Full,
        })
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(30))
}

/// The options of the connection that migrates a queue: `connect_options` plus
/// `auto_vacuum = INCREMENTAL`. sqlx applies it before `journal_mode`, the only moment it takes
/// effect on a new file, and the mode then lives in the file's header. It is not on every
/// connection because setting it, even to the current mode, writes page 1: every open would be
/// a write transaction that wakes every watcher.
pub fn migrate_options(path: &Path, durability: Durability) -> SqliteConnectOptions {
    connect_options(path, durability).auto_vacuum(SqliteAutoVacuum::Incremental)
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
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
    options: SqliteConnectOptions,
}

impl Store {
    /// Open a queue: check the file's identity read-only before anything touches it, migrate
    /// under `migrate_lock` when behind, then open the pool.
    #[tracing::instrument(skip_all, fields(db = %path.display()), err)]
    pub async fn open(path: &Path, migrate_lock: &Path, durability: Durability) -> Result<Store> {
        let options = connect_options(path, durability);
        let identity = check_identity(path).await?;
        if identity == Identity::Fresh {
            create_private_file(path)?;
        }
        if identity != Identity::Current {
            let _lock = lock_file(migrate_lock).await?;
            // Someone may have migrated while we waited for the lock.
            if check_identity(path).await? != Identity::Current {
                migrate(path, &migrate_options(path, durability)).await?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await?;
        Ok(Store { pool, path: path.to_path_buf(), options })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A connection of its own (for a `data_version` watcher: a connection never sees its own
    /// writes change `data_version`).
    pub async fn dedicated_connection(&self) -> Result<SqliteConnection> {
        Ok(SqliteConnection::connect_with(&self.options).await?)
    }

    /// Close the pool (checkpoints and releases the file).
    pub async fn close(&self) {
        self.pool.close().await;
    }
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
async fn lock_file(path: &Path) -> Result<Flock<File>> {
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
pub fn open_lock_file(path: &Path) -> Result<File> {
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
    match File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Identity::Fresh),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        Ok(mut f) => {
            let len = f.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
            if len == 0 {
                return Ok(Identity::Fresh);
            }
            if len < 100 || f.read_exact(&mut header).is_err() {
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
    let (app_id, version, objects) = read_identity(path).await.map_err(|e| {
        let msg = match &e {
            sqlx::Error::Database(d) => d.message().to_string(),
            other => other.to_string(),
        };
        foreign(&format!("SQLite cannot read it ({msg})"))
    })?;
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

pub mod jobs;
pub mod lease;
pub mod workers;
pub mod workflow;

//! The library's error type and the CLI exit codes derived from it.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in baton, by domain meaning first, infrastructure last.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from a caller: a message meant for the user, as the spec words it.
    #[error("{0}")]
    Invalid(String),
    /// A file that is not a baton queue (another SQLite database, or not SQLite at all).
    #[error("{path} is not a baton queue: {reason}. It was left untouched.")]
    ForeignDatabase { path: PathBuf, reason: String },
    /// A queue file that exists but cannot be used as it is: not a regular file, damaged,
    /// unreadable, in a directory this user cannot write. `problem` says what and what to do.
    #[error("Cannot use the queue {path}: {problem}")]
    QueueFile { path: PathBuf, problem: String },
    /// There is no queue at this path, and the command only reads one (it creates nothing).
    #[error(
        "No queue at {path}: nothing was created. Check the path (--db, BATON_DB or the config key `database`); \
         `baton init` or a first `baton task start` creates a queue there."
    )]
    NoQueue { path: PathBuf },
    /// Another process held the queue's write lock for longer than the busy timeout.
    #[error(
        "Another process holds the write lock on the queue {path}: this write waited {} for it \
         (storage.busyTimeoutMs) and was not made. Try again once that process has finished writing (a \
         sqlite3 shell holds the lock from BEGIN IMMEDIATE, or its first write, until COMMIT).",
        duration_words(*waited)
    )]
    Busy { path: PathBuf, waited: Duration },
    /// A queue written by a newer baton.
    #[error(
        "{path} was written by a newer baton (schema version {found}, this baton knows up to {known}). It was left untouched; upgrade baton."
    )]
    NewerSchema { path: PathBuf, found: i64, known: i64 },
    /// Configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A profile definition is wrong.
    #[error(transparent)]
    Profile(#[from] crate::agent::profile::ProfileError),
    /// Refused because this process runs inside a baton worker.
    #[error(
        "Refusing to start tasks from inside a baton worker ({var}=true): recursive spawning is disabled (security.preventRecursiveSpawn)."
    )]
    RecursiveSpawn { var: String },
    /// Another dispatcher leads this queue.
    #[error("another dispatcher already leads this queue (pid {pid})")]
    NotLeader { pid: i64 },
    /// No task has this id (or the caller may not see it).
    #[error("Unknown task \"{0}\"")]
    UnknownTask(String),
    /// An id prefix matched more than one job.
    #[error("Ambiguous task id prefix \"{0}\": it matches several tasks; give more characters.")]
    AmbiguousId(String),
    /// A worker's program is not on PATH.
    #[error("`{program}` was not found on PATH ({path})")]
    NotFound { program: String, path: String },
    /// A git command failed: what baton was doing and what git said.
    #[error("git failed while {doing}: {detail}")]
    Git { doing: String, detail: String },
    /// A task's worktree could not be made ready (its setup command failed, say).
    #[error("{0}")]
    Worktree(String),
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

/// A statement of the queue file failed: the same errors, in this crate's words.
impl From<baton_sqlite::Error> for Error {
    fn from(e: baton_sqlite::Error) -> Error {
        match e {
            baton_sqlite::Error::Sqlx(e) => Error::Sqlx(e),
            baton_sqlite::Error::Json(e) => Error::Json(e),
            baton_sqlite::Error::Invalid(m) => Error::Invalid(m),
        }
    }
}

/// A statement of the PostgreSQL queue failed: the same errors, in this crate's words.
impl From<baton_pg::Error> for Error {
    fn from(e: baton_pg::Error) -> Error {
        match e {
            baton_pg::Error::Sqlx(e) => Error::Sqlx(e),
            baton_pg::Error::Json(e) => Error::Json(e),
            baton_pg::Error::Invalid(m) => Error::Invalid(m),
        }
    }
}

impl Error {
    /// The CLI exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::UnknownTask(_) => ExitCode::Unknown,
            _ => ExitCode::Usage,
        }
    }

    /// Wrap an IO error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// What a file that is not a regular file is, in words, for messages.
pub(crate) fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// `1500 ms`, `30 s`.
fn duration_words(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms.is_multiple_of(1000) { format!("{} s", ms / 1000) } else { format!("{ms} ms") }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// CLI exit codes, in order of precedence (SPEC 4, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitCode {
    /// Everything finished as asked.
    Ok = 0,
    /// Some job failed.
    Failed = 1,
    /// Usage, configuration or database error.
    Usage = 2,
    /// Some job was canceled.
    Canceled = 3,
    /// Some id was unknown or forbidden.
    Unknown = 4,
    /// Some job was still unfinished when a wait ran out.
    TimedOut = 124,
}

impl ExitCode {
    /// Precedence rank: higher wins when several apply.
    fn rank(self) -> u8 {
        match self {
            ExitCode::Usage => 5,
            ExitCode::Unknown => 4,
            ExitCode::Failed => 3,
            ExitCode::Canceled => 2,
            ExitCode::TimedOut => 1,
            ExitCode::Ok => 0,
        }
    }

    /// The stronger of two codes.
    pub fn max(self, other: ExitCode) -> ExitCode {
        if other.rank() > self.rank() { other } else { self }
    }

    pub fn code(self) -> i32 {
        self as i32
    }
}

#[cfg(test)]
mod tests {
    use super::ExitCode::*;

    #[test]
    fn precedence_follows_the_spec() {
        assert_eq!(Ok.max(TimedOut), TimedOut);
        assert_eq!(TimedOut.max(Canceled), Canceled);
        assert_eq!(Canceled.max(Failed), Failed);
        assert_eq!(Failed.max(Unknown), Unknown);
        assert_eq!(Unknown.max(Usage), Usage);
        assert_eq!(Usage.max(Ok), Usage);
        assert_eq!([Ok, Failed, Usage, Canceled, Unknown, TimedOut].map(|c| c.code()), [0, 1, 2, 3, 4, 124]);
    }
}

//! Where a queue lives: project discovery, the queue file and its state directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The directory name that marks a baton project.
pub const STATE_DIR: &str = ".baton";
/// The queue file's name inside `.baton/`.
pub const DB_FILE: &str = "baton.db";

const GITIGNORE: &str = "# baton's queue, logs and attachments never belong in git.\n*\n!.gitignore\n!config.json\n";

/// A resolved queue: the project a caller works in, and the files of the queue it uses.
#[derive(Debug, Clone)]
pub struct Location {
    /// The caller's project directory (where its jobs' workers run).
    pub project_dir: PathBuf,
    /// The queue: a SQLite file, or a PostgreSQL database.
    pub db: Database,
    /// The directory holding locks, logs and attachments: beside a queue file; for a
    /// PostgreSQL queue, one per queue in this user's state directory on this machine.
    pub state_dir: PathBuf,
}

/// Where the queue's tables are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    File(PathBuf),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

impl Location {
    /// Where task worktrees go unless `worktrees.dir` says otherwise.
    pub fn worktrees_dir(&self) -> PathBuf {
        self.state_dir.join("worktrees")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
    pub fn job_log_dir(&self, job_id: &str) -> PathBuf {
        self.logs_dir().join(job_id)
    }
    pub fn attachments_dir(&self, job_id: &str) -> PathBuf {
        self.state_dir.join("attachments").join(job_id)
    }
    pub fn dispatcher_lock(&self) -> PathBuf {
        self.state_dir.join("dispatcher.lock")
    }
    pub fn migrate_lock(&self) -> PathBuf {
        self.state_dir.join("migrate.lock")
    }
    pub fn dispatcher_log(&self) -> PathBuf {
        self.state_dir.join("dispatcher.log")
    }
}

/// The project a directory belongs to: the nearest ancestor holding `.baton/`, searched no
/// higher than the git root (a `.git` directory or file); else the git root; else `cwd`.
pub fn find_project(cwd: &Path) -> PathBuf {
    for dir in cwd.ancestors() {
        if dir.join(STATE_DIR).is_dir() {
            return dir.to_path_buf();
        }
        if dir.join(".git").exists() {
            return dir.to_path_buf();
        }
    }
    cwd.to_path_buf()
}

/// Resolve the queue: `--db`, then `BATON_DB`, then config `database` (a file relative to the
/// project, or a PostgreSQL URL), then `<project>/.baton/baton.db`.
pub fn resolve(project_dir: &Path, db_flag: Option<&Path>, env_db: Option<&Path>, config_db: Option<&str>) -> Location {
    let explicit = db_flag
        .map(Path::to_path_buf)
        .or_else(|| env_db.map(Path::to_path_buf))
        .or_else(|| config_db.filter(|s| !s.is_empty()).map(PathBuf::from));
    if let Some(url) = explicit.as_deref().and_then(Path::to_str).filter(|s| crate::store::is_url(s)) {
        let state_dir = server_state_dir(url);
        return Location { project_dir: project_dir.to_path_buf(), db: Database::Postgres(url.to_string()), state_dir };
    }
    let db = match explicit {
        Some(p) if p.is_absolute() => p,
        Some(p) => project_dir.join(p),
        None => project_dir.join(STATE_DIR).join(DB_FILE),
    };
    let db = identity(&db);
    let state_dir = state_dir_of(&db);
    Location { project_dir: project_dir.to_path_buf(), db: Database::File(db), state_dir }
}

/// A PostgreSQL queue's state directory on this machine: `$XDG_STATE_HOME/baton/` (else
/// `~/.local/state/baton/`), then `pg-` and a digest of the URL without its password, so every
/// process of this user that opens the queue here, from any project, finds the same logs and
/// the same node lock.
fn server_state_dir(url: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let digest = crate::store::redact(url)
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    base.join("baton").join(format!("pg-{digest:016x}"))
}

/// The queue file as the file system knows it: symlinks resolved, so every path that reaches
/// one file names the same queue (one leader, one log directory). A file that does not exist
/// yet is named through its resolved directory.
fn identity(db: &Path) -> PathBuf {
    if let Ok(real) = fs::canonicalize(db) {
        return real;
    }
    match (db.parent().and_then(|d| fs::canonicalize(d).ok()), db.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => db.to_path_buf(),
    }
}

/// The directory of a queue's locks, logs and attachments: beside a `baton.db`, its directory
/// (`.baton/`); for a queue file of another name, `<file>-baton/` beside it, so two queues in
/// one directory never share a lock or a log directory.
fn state_dir_of(db: &Path) -> PathBuf {
    let dir = db.parent().map(Path::to_path_buf).unwrap_or_default();
    match db.file_name() {
        Some(name) if name != DB_FILE => {
            let mut own = name.to_os_string();
            own.push("-baton");
            dir.join(own)
        }
        _ => dir,
    }
}

/// Create the state directory (0700) if needed; a `.baton/` directory also gets the
/// `.gitignore` that keeps the queue and its logs out of git.
pub fn ensure_state_dir(loc: &Location) -> Result<()> {
    create_private_dir(&loc.state_dir)?;
    if loc.state_dir.file_name().is_some_and(|n| n == STATE_DIR) {
        let gi = loc.state_dir.join(".gitignore");
        if !gi.exists() {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&gi)
                .map_err(|e| Error::io(format!("writing {}", gi.display()), e))?;
            f.write_all(GITIGNORE.as_bytes()).map_err(|e| Error::io(format!("writing {}", gi.display()), e))?;
        }
    }
    Ok(())
}

/// `mkdir -p` with mode 0700 for every directory it creates.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_stops_at_the_git_root() {
        let t = tempfile::tempdir().unwrap();
        let outer = t.path();
        fs::create_dir_all(outer.join(".baton")).unwrap();
        let repo = outer.join("repo");
        fs::create_dir_all(repo.join(".git")).unwrap();
        let deep = repo.join("a/b");
        fs::create_dir_all(&deep).unwrap();
        // The outer .baton/ is above the git root: not used.
        assert_eq!(find_project(&deep), repo);
        fs::create_dir_all(repo.join("a/.baton")).unwrap();
        assert_eq!(find_project(&deep), repo.join("a"));
        // No git, no .baton: the directory itself.
        let lone = tempfile::tempdir().unwrap();
        assert_eq!(find_project(lone.path()), lone.path());
    }

    #[test]
    fn overrides_in_order() {
        let p = Path::new("/proj");
        let l = resolve(p, Some(Path::new("/a.db")), Some(Path::new("/b.db")), Some("c.db"));
        assert_eq!(l.db, Database::File("/a.db".into()));
        let l = resolve(p, None, Some(Path::new("/b.db")), Some("c.db"));
        assert_eq!(l.db, Database::File("/b.db".into()));
        let l = resolve(p, None, None, Some("c.db"));
        assert_eq!(l.db, Database::File("/proj/c.db".into()));
        assert_eq!(l.state_dir, Path::new("/proj/c.db-baton"));
        let l = resolve(p, None, None, Some("postgres://u:pw@h/q"));
        assert_eq!(l.db, Database::Postgres("postgres://u:pw@h/q".into()));
        assert!(l.state_dir.file_name().unwrap().to_str().unwrap().starts_with("pg-"));
        let other = resolve(Path::new("/elsewhere"), Some(Path::new("postgres://u:other@h/q")), None, None);
        assert_eq!(other.state_dir, l.state_dir, "one queue, one state directory, whatever the password");
        let l = resolve(p, None, None, None);
        assert_eq!(l.db, Database::File("/proj/.baton/baton.db".into()));
        assert_eq!(l.state_dir, Path::new("/proj/.baton"));
    }

    #[test]
    fn a_symlink_names_the_file_it_reaches() {
        let t = tempfile::tempdir().unwrap();
        let real = resolve(t.path(), None, None, None);
        ensure_state_dir(&real).unwrap();
        let Database::File(file) = &real.db else { unreachable!() };
        fs::write(file, b"").unwrap();
        let elsewhere = t.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(file, elsewhere.join("link.db")).unwrap();
        let via = resolve(&elsewhere, Some(Path::new("link.db")), None, None);
        assert_eq!(
            (via.db, via.state_dir),
            (Database::File(fs::canonicalize(file).unwrap()), fs::canonicalize(&real.state_dir).unwrap())
        );
    }

    #[test]
    fn state_dir_is_private_and_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let l = resolve(t.path(), None, None, None);
        ensure_state_dir(&l).unwrap();
        let mode = fs::metadata(&l.state_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let gi = fs::read_to_string(l.state_dir.join(".gitignore")).unwrap();
        assert!(gi.contains("!config.json") && gi.contains("\n*\n"));
    }
}

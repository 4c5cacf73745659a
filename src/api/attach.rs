//! Attachment paths (SPEC 11.2): checked in a fixed order, because the order decides the message.

use std::path::{Component, Path, PathBuf};

/// What an attachment must never be: the queue's own files.
#[derive(Debug, Clone, Copy)]
pub struct Queue<'a> {
    /// The queue file (its `-wal`, `-shm` and `-journal` companions are refused with it).
    pub db: &'a Path,
    /// The directory holding its locks, logs and attachments.
    pub state_dir: &'a Path,
}

/// What baton keeps in a state directory besides the queue file (see `location::Location`).
const STATE_ENTRIES: [&str; 5] = ["logs", "attachments", "dispatcher.lock", "migrate.lock", "dispatcher.log"];

/// Check one attachment path given relative to `project`; answer its canonical absolute path.
/// Errors are the bare messages; callers prefix `Invalid attachment path: `. After the spec's
/// five checks, an attachment must be a regular file and none of the queue's own files.
pub fn check(project: &Path, given: &str, queue: Queue<'_>) -> Result<PathBuf, String> {
    let p = Path::new(given);
    if given.is_empty() {
        return Err("Attachment path must not be empty".into());
    }
    if p.is_absolute() {
        return Err("Attachment path must be relative".into());
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err("Path traversal not allowed in attachment paths".into());
    }
    let joined = project.join(p);
    let Ok(meta) = std::fs::symlink_metadata(&joined) else {
        return Err(format!("Attachment file not found: {given}"));
    };
    let Ok(real) = joined.canonicalize() else {
        return Err(format!("Attachment file not found: {given}"));
    };
    let root = project.canonicalize().unwrap_or_else(|_| project.to_path_buf());
    if !real.starts_with(&root) {
        return Err("Attachment path must be within project directory".into());
    }
    if meta.file_type().is_symlink() {
        return Err("Symlink attachments are not allowed".into());
    }
    if let Some(why) = queue_file(&real, &root, queue) {
        return Err(format!("Attachment path must not be {why}: {given}"));
    }
    if !meta.is_file() {
        return Err(format!(
            "Attachment path must name a regular file: {given} is {}",
            crate::error::file_kind(meta.file_type())
        ));
    }
    Ok(real)
}

/// Whether `real` is one of the queue's own files, and which.
fn queue_file(real: &Path, project_root: &Path, queue: Queue<'_>) -> Option<String> {
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let state = canonical(queue.state_dir);
    let db = match (queue.db.parent(), queue.db.file_name()) {
        (Some(dir), Some(name)) => canonical(dir).join(name),
        _ => queue.db.to_path_buf(),
    };
    let companion = |suffix: &str| {
        let mut s = db.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    if real == db || ["-wal", "-shm", "-journal"].iter().any(|s| real == companion(s)) {
        return Some("the queue file or its -wal/-shm files".into());
    }
    // A state directory that holds the project (a queue file in the project's root) cannot be
    // refused whole: only what baton keeps there is.
    let inside = if project_root.starts_with(&state) {
        STATE_ENTRIES.iter().any(|e| real.starts_with(state.join(e)))
    } else {
        real.starts_with(&state)
    };
    inside.then(|| format!("inside the queue's state directory ({})", state.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn the_five_checks_in_order() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), "s").unwrap();
        let t = tempfile::tempdir().unwrap();
        let proj = t.path();
        std::fs::create_dir(proj.join("sub")).unwrap();
        std::fs::write(proj.join("sub/a.txt"), "a").unwrap();
        symlink(outside.path().join("secret.txt"), proj.join("out-link")).unwrap();
        symlink(proj.join("sub/a.txt"), proj.join("in-link")).unwrap();
        symlink(outside.path(), proj.join("outdir")).unwrap();

        let state = proj.join(".baton");
        std::fs::create_dir(&state).unwrap();
        let db = state.join("baton.db");
        let check = |proj: &Path, given: &str| check(proj, given, Queue { db: &db, state_dir: &state });
        assert_eq!(check(proj, "/etc/passwd").unwrap_err(), "Attachment path must be relative");
        assert_eq!(check(proj, "sub/../sub/a.txt").unwrap_err(), "Path traversal not allowed in attachment paths");
        assert_eq!(check(proj, "../x").unwrap_err(), "Path traversal not allowed in attachment paths");
        assert_eq!(check(proj, "nope.txt").unwrap_err(), "Attachment file not found: nope.txt");
        assert_eq!(check(proj, "out-link").unwrap_err(), "Attachment path must be within project directory");
        assert_eq!(check(proj, "outdir/secret.txt").unwrap_err(), "Attachment path must be within project directory");
        assert_eq!(check(proj, "in-link").unwrap_err(), "Symlink attachments are not allowed");
        let ok = check(proj, "sub/a.txt").unwrap();
        assert!(ok.is_absolute() && ok.ends_with("sub/a.txt"));
    }

    #[test]
    fn only_regular_files_that_are_not_the_queue() {
        let t = tempfile::tempdir().unwrap();
        let proj = t.path();
        let state = proj.join(".baton");
        std::fs::create_dir_all(state.join("logs/job")).unwrap();
        let db = state.join("baton.db");
        for f in ["baton.db", "baton.db-wal", "baton.db-shm", "config.json", "logs/job/1.out"] {
            std::fs::write(state.join(f), "x").unwrap();
        }
        std::fs::create_dir(proj.join("dir")).unwrap();
        let q = Queue { db: &db, state_dir: &state };
        assert_eq!(check(proj, "", q).unwrap_err(), "Attachment path must not be empty");
        assert_eq!(check(proj, "dir", q).unwrap_err(), "Attachment path must name a regular file: dir is a directory");
        assert_eq!(check(proj, ".", q).unwrap_err(), "Attachment path must name a regular file: . is a directory");
        for f in ["baton.db", "baton.db-wal", "baton.db-shm"] {
            let given = format!(".baton/{f}");
            let e = check(proj, &given, q).unwrap_err();
            assert_eq!(e, format!("Attachment path must not be the queue file or its -wal/-shm files: {given}"));
        }
        for given in [".baton", ".baton/config.json", ".baton/logs/job/1.out"] {
            let e = check(proj, given, q).unwrap_err();
            assert!(e.starts_with("Attachment path must not be inside the queue's state directory ("), "{e}");
        }
        // A queue file in the project's root: its neighbours stay attachable, its files do not.
        std::fs::write(proj.join("notes.txt"), "n").unwrap();
        std::fs::create_dir_all(proj.join("logs/job")).unwrap();
        std::fs::write(proj.join("logs/job/1.out"), "o").unwrap();
        std::fs::write(proj.join("q.db-wal"), "w").unwrap();
        let root_db = proj.join("q.db");
        let q = Queue { db: &root_db, state_dir: proj };
        assert!(check(proj, "notes.txt", q).is_ok());
        assert!(check(proj, "logs/job/1.out", q).unwrap_err().contains("state directory"));
        assert!(check(proj, "q.db-wal", q).unwrap_err().contains("the queue file"));
    }
}

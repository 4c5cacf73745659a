//! Bad input gets a clear error: files that are not what they should be (a FIFO as a config
//! file or queue, a directory as the queue), attachments that are not plain project files, a NUL
//! in the task, a runner that lets task text run commands, and a queue that is missing,
//! damaged, in a read-only directory or write-locked by another process. Every message names
//! the path and says what to do; every command returns promptly.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::{self, TestQueue};
use serde_json::json;

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn a_fifo_as_the_project_or_global_config_fails_at_once_naming_it() {
    let q = TestQueue::new();
    q.ok(&["init"]);
    let project_config = q.project.join(".baton/config.json");
    std::fs::remove_file(&project_config).unwrap();
    mkfifo(&project_config);
    // Opening a FIFO for reading waits for a writer: every command hung here.
    for args in
        [&["task", "list"][..], &["task", "start", "hi"], &["status"], &["config", "show"], &["config", "check"]]
    {
        let e = q.refused(args);
        assert!(e.contains(&show(&project_config)) && e.contains("a FIFO (named pipe)"), "{args:?}: {e}");
    }
    std::fs::remove_file(&project_config).unwrap();
    std::fs::write(&project_config, common::default_config().to_string()).unwrap();

    let global = q.home.join(".config/baton/config.json");
    std::fs::create_dir_all(global.parent().unwrap()).unwrap();
    mkfifo(&global);
    for args in [&["task", "list"][..], &["task", "start", "hi"]] {
        let e = q.refused(args);
        assert!(e.contains(&show(&global)) && e.contains("a FIFO (named pipe)"), "{args:?}: {e}");
    }
    assert_eq!(q.job_count(), 0);
}

#[test]
fn attachments_must_be_regular_files_outside_the_queue() {
    let q = TestQueue::new();
    q.ok(&["init"]);
    // An open connection keeps the queue's -wal and -shm files in place.
    let keep = q.raw();
    assert_eq!(keep.query_row("SELECT count(*) FROM jobs", [], |r| r.get::<_, i64>(0)).unwrap(), 0);
    for f in ["baton.db-wal", "baton.db-shm"] {
        assert!(q.project.join(".baton").join(f).exists(), "{f} exists while a connection is open");
    }
    std::fs::create_dir(q.project.join("src")).unwrap();
    std::fs::write(q.project.join("src/main.rs"), "fn main() {}").unwrap();
    std::fs::create_dir_all(q.project.join(".baton/logs/earlier")).unwrap();
    std::fs::write(q.project.join(".baton/logs/earlier/1.out"), "old output").unwrap();
    mkfifo(&q.project.join("pipe"));
    let state = show(&q.project.join(".baton").canonicalize().unwrap());
    let prefix = "Invalid attachment path: ";
    let cases: Vec<(&str, String)> = vec![
        // An empty path named the project root itself.
        ("", format!("{prefix}Attachment path must not be empty")),
        (".", format!("{prefix}Attachment path must name a regular file: . is a directory")),
        ("src", format!("{prefix}Attachment path must name a regular file: src is a directory")),
        ("pipe", format!("{prefix}Attachment path must name a regular file: pipe is a FIFO (named pipe)")),
        (
            ".baton/baton.db",
            format!("{prefix}Attachment path must not be the queue file or its -wal/-shm files: .baton/baton.db"),
        ),
        (
            ".baton/baton.db-wal",
            format!("{prefix}Attachment path must not be the queue file or its -wal/-shm files: .baton/baton.db-wal"),
        ),
        (
            ".baton/baton.db-shm",
            format!("{prefix}Attachment path must not be the queue file or its -wal/-shm files: .baton/baton.db-shm"),
        ),
        (".baton", format!("{prefix}Attachment path must not be inside the queue's state directory ({state}): .baton")),
        (
            ".baton/config.json",
            format!(
                "{prefix}Attachment path must not be inside the queue's state directory ({state}): .baton/config.json"
            ),
        ),
        (
            ".baton/logs/earlier/1.out",
            format!(
                "{prefix}Attachment path must not be inside the queue's state directory ({state}): .baton/logs/earlier/1.out"
            ),
        ),
    ];
    for (path, msg) in &cases {
        let e = q.refused(&["task", "start", "look", "--attach", path]);
        assert!(e.contains(msg.as_str()), "{path:?}: {e}");
    }
    assert_eq!(q.job_count(), 0, "a refused attachment writes no job");
    let id = q.start(&["look", "--attach", "src/main.rs"]);
    assert_eq!(q.state(&id), "queued");
}

#[tokio::test]
async fn a_retried_task_gets_its_own_copy_of_a_base64_attachment() {
    use baton::api::{self, Attachment, AttachmentType, Caller, OpenOptions, Queue, StartParams};
    let q = TestQueue::new();
    let paths = baton::config::ConfigPaths::resolve(&q.project, Some(&q.home), Some(&q.home.join(".config")));
    let opts = OpenOptions { cwd: q.project.clone(), db: Some(q.db.clone()), config_paths: Some(paths) };
    let queue = Queue::open(&opts).await.unwrap();
    let caller = Caller { session: None, requested_by: "test".into() };
    let image = Attachment {
        kind: AttachmentType::Image,
        path: None,
        base64: Some("aGVsbG8=".into()),
        mime_type: Some("image/png".into()),
    };
    let params = StartParams { task: "look".into(), attachments: vec![image], ..Default::default() };
    let first = api::start(&queue, &caller, params).await.unwrap();
    let first = first.task_id.as_str();
    // Its file lies in the state directory, where no path attachment may point.
    let again = api::retry(&queue, &caller, first).await.unwrap();
    let again = again.task_id.as_str();
    let stored: String =
        q.raw().query_row("SELECT attachments FROM jobs WHERE id = ?1", [again], |r| r.get(0)).unwrap();
    let stored: Vec<PathBuf> = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].starts_with(q.project.join(".baton/attachments").join(again)), "{stored:?}");
    assert_eq!(std::fs::read(&stored[0]).unwrap(), b"hello");
}

#[test]
fn a_nul_in_the_task_is_refused_at_start() {
    use std::io::Write;
    let q = TestQueue::new();
    q.ok(&["init"]);
    // An argument cannot carry a NUL: it arrives through stdin (`-`), as over MCP in JSON.
    let mut c = q.cmd();
    c.args(["task", "start", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"echo a\0b").unwrap();
    let o = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("Task must not contain a NUL character (\\0)"), "{e}");
    assert_eq!(q.job_count(), 0);
}

#[tokio::test]
async fn a_nul_in_the_task_is_refused_by_the_api_the_mcp_server_calls() {
    use baton::api::{self, Caller, OpenOptions, Queue, StartParams};
    let q = TestQueue::new();
    let paths = baton::config::ConfigPaths::resolve(&q.project, Some(&q.home), Some(&q.home.join(".config")));
    let opts = OpenOptions { cwd: q.project.clone(), db: Some(q.db.clone()), config_paths: Some(paths) };
    let queue = Queue::open(&opts).await.unwrap();
    let caller = Caller { session: None, requested_by: "test".into() };
    for kind in ["worker", "workflow"] {
        let p = StartParams {
            task: "a\0b".into(),
            kind: Some(kind.into()),
            worker_id: Some("coder".into()),
            workflow_id: (kind == "workflow").then(|| "roocode-boomerang".into()),
            ..Default::default()
        };
        let e = api::start(&queue, &caller, p).await.unwrap_err();
        assert!(matches!(e, baton::Error::Invalid(_)) && e.to_string().contains("NUL character"), "{kind}: {e}");
    }
    assert_eq!(q.job_count(), 0);
}

#[test]
fn config_check_warns_about_a_placeholder_inside_a_shell_script() {
    let q = TestQueue::with_overrides(json!({
        "runner": ["sh", "-c", "echo {prompt}"],
        "profiles": [{"id": "shelly", "name": "Shelly", "model": "node", "purpose": "p", "whenToUse": "w",
                      "command": ["bash", "-ec", "agent --system '{systemPrompt}'"]}]
    }));
    let o = q.run_within(&["config", "check"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("warning: runner: {prompt} is part of the shell script \"echo {prompt}\" (after sh -c)"), "{e}");
    assert!(e.contains(r#"["sh", "-c", "agent \"$1\"", "sh", "{prompt}"]"#), "the safe form is shown: {e}");
    assert!(e.contains("warning: profile \"shelly\" command: {systemPrompt} is part of the shell script"), "{e}");

    // The whole script as the placeholder is the plain-command runner; an argument of its own is data.
    for runner in [json!(["sh", "-c", "{prompt}"]), json!(["sh", "-c", "agent \"$1\"", "sh", "{prompt}"])] {
        let q = TestQueue::with_overrides(json!({ "runner": runner }));
        let o = q.run_within(&["config", "check"]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && !e.contains("warning"), "{runner}: {e}");
    }
}

#[test]
fn a_directory_or_fifo_at_the_queue_path_is_named_for_what_it_is() {
    let q = TestQueue::new();
    let dir = q.dir.path().join("queue-dir");
    std::fs::create_dir(&dir).unwrap();
    let e = q.refused(&["--db", &show(&dir), "task", "list"]);
    assert!(e.contains(&format!("Cannot use the queue {}: it is a directory, not a queue file", show(&dir))), "{e}");
    assert!(e.contains(&show(&dir.join("baton.db"))) && !e.contains("too short"), "{e}");
    let e = q.refused(&["--db", &show(&dir), "task", "start", "hi"]);
    assert!(e.contains("it is a directory, not a queue file"), "{e}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing written into it");

    let fifo = q.dir.path().join("queue.fifo");
    mkfifo(&fifo);
    for args in [&["task", "list"][..], &["task", "start", "hi"]] {
        let mut a = vec!["--db", fifo.to_str().unwrap()];
        a.extend_from_slice(args);
        let e = q.refused(&a);
        assert!(e.contains(&format!("Cannot use the queue {}: it is a FIFO (named pipe)", show(&fifo))), "{e}");
    }
}

/// Change the owner of everything under `dir` (the test runs as root and drops to `uid`).
fn chown_tree(dir: &Path, uid: u32) {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid)).unwrap();
    if std::fs::symlink_metadata(dir).unwrap().is_dir() {
        for e in std::fs::read_dir(dir).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// Whether `uid` (others, to the file system) may run the test binary: o+x on it and every
/// directory above it.
fn others_may_run(bin: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode()).unwrap_or(0);
    mode(bin) & 0o001 != 0 && bin.ancestors().skip(1).all(|d| d.as_os_str().is_empty() || mode(d) & 0o001 != 0)
}

#[test]
fn a_queue_in_a_read_only_directory_says_so() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let q = TestQueue::new();
    let id = q.start(&["queued task"]);
    // A clean close removes -wal and -shm: then SQLite must create them to read at all.
    {
        let c = q.raw();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
    let state = q.project.join(".baton");
    assert!(!state.join("baton.db-shm").exists() && !state.join("baton.db-wal").exists());

    // Root is not bound by permissions: then the commands run as `nobody` instead.
    const NOBODY: u32 = 65534;
    let as_root = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
    };
    if as_root {
        if !others_may_run(Path::new(common::BIN)) {
            eprintln!(
                "skipped: running as root, where directory permissions do not bite, and the baton binary \
                 cannot be run as an unprivileged user from here ({})",
                common::BIN
            );
            return;
        }
        chown_tree(q.dir.path(), NOBODY);
    }
    let baton = |args: &[&str]| {
        let mut c = q.cmd();
        c.args(args);
        if as_root {
            c.uid(NOBODY).gid(NOBODY);
        }
        common::run_within(c, 30)
    };
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o500)).unwrap();
    let outcome = std::panic::catch_unwind(|| {
        for args in [&["task", "list"][..], &["task", "peek", &id], &["task", "start", "another"]] {
            let o = baton(args);
            let e = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
            assert!(!e.contains("(code: "), "no raw SQLite code: {e}");
            assert!(
                e.contains(&format!(
                    "Cannot use the queue {}: its directory {} is not writable",
                    show(&q.db),
                    show(&state)
                )),
                "{args:?}: {e}"
            );
            assert!(e.contains(&format!("chmod u+w {}", show(&state))), "says what to do: {e}");
        }
    });
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
    assert_eq!(q.state(&id), "queued", "the queue is intact");
}

#[test]
fn a_truncated_queue_is_reported_as_damaged_with_its_path() {
    let q = TestQueue::new();
    for i in 0..20 {
        q.start(&[&format!("task {i}: {}", "x".repeat(3000))]);
    }
    {
        let c = q.raw();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
    let len = std::fs::metadata(&q.db).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&q.db).unwrap().set_len(len / 2).unwrap();
    for args in [&["task", "list"][..], &["status"], &["task", "start", "one more"]] {
        let e = q.refused(args);
        assert!(e.contains(&format!("Cannot use the queue {}: the file is damaged", show(&q.db))), "{args:?}: {e}");
        assert!(e.contains("Restore it from a backup") && !e.contains("(code: "), "{e}");
    }
    assert_eq!(std::fs::metadata(&q.db).unwrap().len(), len / 2, "left as it was");
}

#[test]
fn read_commands_on_a_missing_queue_create_nothing_and_say_so() {
    let q = TestQueue::new();
    let typo = q.dir.path().join("typo");
    let db = typo.join("sub/baton.db");
    let db_arg = show(&db);
    let reads: [&[&str]; 13] = [
        &["task", "list"],
        &["task", "peek", "12345678"],
        &["task", "await", "12345678", "--timeout", "0"],
        &["task", "cancel", "12345678"],
        &["task", "logs", "12345678"],
        &["task", "retry", "12345678"],
        &["status"],
        &["workers"],
        &["workers", "stop", "--all"],
        &["prune", "--dry-run"],
        &["prune"],
        &["workflow", "runs"],
        &["workflow", "show", "12345678"],
    ];
    for args in reads {
        let mut a = vec!["--db", db_arg.as_str()];
        a.extend_from_slice(args);
        let e = q.refused(&a);
        assert!(e.contains(&format!("No queue at {db_arg}: nothing was created")), "{args:?}: {e}");
        assert!(!typo.exists(), "{args:?} created {}", show(&typo));
    }
    // BATON_DB (the test's own queue, not yet created) likewise.
    let e = q.refused(&["task", "list"]);
    assert!(e.contains(&format!("No queue at {}", show(&q.db))), "{e}");
    assert!(!q.db.exists());
    // Commands that write tasks still create the queue.
    let out = q.ok(&["--db", &db_arg, "task", "start", "first"]);
    assert!(db.exists(), "task start creates the queue: {out}");
    assert!(q.ok(&["--db", &db_arg, "task", "list"]).contains(out.trim()));
}

#[test]
fn a_write_under_another_process_write_lock_says_who_holds_what() {
    let q = TestQueue::with_overrides(json!({"storage": {"busyTimeoutMs": 300}}));
    q.ok(&["init"]);
    let holder = q.raw();
    holder.execute_batch("BEGIN IMMEDIATE;").unwrap();
    let e = q.refused(&["task", "start", "blocked"]);
    assert!(
        e.contains(&format!(
            "baton: Another process holds the write lock on the queue {}: this write waited 300 ms",
            show(&q.db)
        )),
        "{e}"
    );
    assert!(e.contains("storage.busyTimeoutMs") && e.contains("Try again"), "{e}");
    assert!(!e.contains("baton: database error"), "not the raw sqlx error: {e}");
    // Reads go on under the lock (WAL), and the write goes through once it is released.
    assert!(q.ok(&["task", "list"]).contains("No tasks recorded yet."));
    holder.execute_batch("ROLLBACK;").unwrap();
    let id = q.start(&["unblocked"]);
    assert_eq!(q.state(&id), "queued");
}

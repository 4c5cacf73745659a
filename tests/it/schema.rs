//! The on-disk schema: migrations, pragmas, state machines enforced by SQLite itself, and files
//! that are not (or not yet) baton queues being refused untouched.

use crate::common::TestQueue;
use rusqlite::params;

/// How many migration files baton ships.
const MIGRATIONS: i64 = 13;

fn init(q: &TestQueue) {
    q.ok(&["init"]);
}

#[test]
fn migrations_create_tables_indexes_and_triggers() {
    let q = TestQueue::new();
    init(&q);
    let c = q.raw();
    let names = |kind: &str| -> Vec<String> {
        let mut st = c.prepare("SELECT name FROM sqlite_schema WHERE type = ?1 ORDER BY name").unwrap();
        st.query_map([kind], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let tables = names("table");
    for t in [
        "jobs",
        "workers",
        "dispatcher_lease",
        "job_transitions",
        "worker_transitions",
        "workflow_runs",
        "workflow_steps",
        "run_transitions",
        "step_transitions",
        "job_events",
        "worker_sessions",
        "worktrees",
        "worktree_transitions",
        "job_deps",
        "pauses",
        "hooks",
        "finish_hooks",
        "imports",
        "_sqlx_migrations",
    ] {
        assert!(tables.contains(&t.to_string()), "missing table {t}: {tables:?}");
    }
    let indexes = names("index");
    for i in [
        "jobs_queue",
        "jobs_running",
        "jobs_finished",
        "jobs_dedup",
        "jobs_workflow_run",
        "workers_live",
        "workers_one_server",
        "worker_sessions_worker",
        "jobs_worktree",
        "jobs_waiting",
        "job_deps_dep",
        "finish_hooks_pending",
        "imports_open",
    ] {
        assert!(indexes.contains(&i.to_string()), "missing index {i}: {indexes:?}");
    }
    let triggers = names("trigger");
    for t in [
        "jobs_insert_guard",
        "jobs_state_guard",
        "workers_insert_guard",
        "workers_state_guard",
        "jobs_release_worker",
        "jobs_release_server_worker",
        "worker_sessions_insert_guard",
        "worker_sessions_take",
        "worker_sessions_give_back",
        "jobs_finished_guard",
        "jobs_delete_guard",
        "workers_delete_guard",
        "workflow_runs_delete_whole",
        "job_transitions_update_guard",
        "lease_insert_guard",
        "lease_delete_guard",
        "worktrees_insert_guard",
        "worktrees_state_guard",
        "worktrees_id_guard",
        "worktrees_delete_guard",
        "worktree_transitions_update_guard",
        "jobs_deps_insert",
        "jobs_dependents_fail",
        "jobs_dependents_queue",
        "jobs_waiting_guard",
        "jobs_labels_guard",
        "job_deps_insert_guard",
        "job_deps_delete_guard",
        "finish_hooks_done_guard",
        "finish_hooks_id_guard",
        "jobs_finish_hook",
        "jobs_finish_hook_insert",
        "workflow_runs_finish_hook",
        "jobs_delete_finish_hook",
        "workflow_runs_delete_finish_hook",
        "imports_insert_guard",
        "imports_update_guard",
        "imports_delete_guard",
    ] {
        assert!(triggers.contains(&t.to_string()), "missing trigger {t}: {triggers:?}");
    }
    assert!(names("view").contains(&"v_jobs".to_string()));
    assert!(names("view").contains(&"v_job_deps".to_string()));
    let app: i64 = c.query_row("PRAGMA application_id", [], |r| r.get(0)).unwrap();
    let ver: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!((app, ver), (baton::APPLICATION_ID, baton::SCHEMA_VERSION));
    // Opening again skips the migrator: still exactly one applied migration.
    init(&q);
    assert_eq!(q.scalar_i64("SELECT count(*) FROM _sqlx_migrations"), MIGRATIONS);
}

#[tokio::test]
async fn pragmas_read_back_from_a_fresh_connection() {
    use sqlx::Connection;
    let q = TestQueue::new();
    init(&q);
    let opts = baton::store::connect_options(&q.db, baton::store::Durability::Normal);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap();
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut conn).await.unwrap();
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&mut conn).await.unwrap();
    let vacuum: i64 = sqlx::query_scalar("PRAGMA auto_vacuum").fetch_one(&mut conn).await.unwrap();
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&mut conn).await.unwrap();
    assert_eq!(journal, "wal");
    assert_eq!(sync, 1, "synchronous=NORMAL");
    assert_eq!(fk, 1);
    assert_eq!(vacuum, 2, "auto_vacuum=INCREMENTAL");
    assert!(busy >= 5000, "busy timeout {busy}");
    // Opening a connection on an existing queue writes nothing (it would wake every watcher).
    let before: i64 = sqlx::query_scalar("PRAGMA data_version").fetch_one(&mut conn).await.unwrap();
    let other = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    other.close().await.unwrap();
    let after: i64 = sqlx::query_scalar("PRAGMA data_version").fetch_one(&mut conn).await.unwrap();
    assert_eq!(before, after, "a new connection committed a write");
    // FULL by configuration.
    let opts = baton::store::connect_options(&q.db, baton::store::Durability::Full);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut conn).await.unwrap();
    assert_eq!(sync, 2);
}

#[test]
fn queue_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let q = TestQueue::new();
    init(&q);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&q.db), 0o600);
    let gi = std::fs::read_to_string(q.project.join(".baton/.gitignore"));
    // The test pre-created .baton/, so only the queue's own files are checked here; the
    // .gitignore is written whenever it is missing.
    assert!(gi.unwrap().contains("!config.json"));
}

fn insert_job(c: &rusqlite::Connection, id: &str, state: &str) -> rusqlite::Result<usize> {
    c.execute(
        "INSERT INTO jobs (id, state, profile, task, requested_by, project_dir, argv, max_attempts, run_after_ms,
                           timeout_ms, created_ms, finished_ms)
         VALUES (?1, ?2, 'coder', 't', 'test', '/', '[]', 3, 0, 1000, 0, CASE WHEN ?2 IN ('succeeded','failed','canceled') THEN 1 END)",
        params![id, state],
    )
}

fn err_text(r: rusqlite::Result<usize>) -> String {
    match r {
        Ok(n) => panic!("statement succeeded ({n} rows) but should have been refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn illegal_job_transitions_are_refused_by_the_database() {
    let q = TestQueue::new();
    init(&q);
    let c = q.raw();
    // Straight into a terminal or running state.
    for st in ["succeeded", "failed", "canceled", "running"] {
        let e = err_text(insert_job(&c, &format!("new-{st}"), st));
        assert!(e.contains("illegal job state for a new job"), "{e}");
    }
    insert_job(&c, "a", "queued").unwrap();
    // queued -> succeeded skips running.
    let e = err_text(c.execute("UPDATE jobs SET state = 'succeeded', finished_ms = 1 WHERE id = 'a'", []));
    assert!(e.contains("illegal job transition"), "{e}");
    // A same-state update.
    let e = err_text(c.execute("UPDATE jobs SET state = 'queued' WHERE id = 'a'", []));
    assert!(e.contains("illegal job transition"), "{e}");
    // Legal path, then out of a terminal state.
    c.execute("UPDATE jobs SET state = 'running', owner = 'o', epoch = 1, started_ms = 1 WHERE id = 'a'", []).unwrap();
    c.execute("UPDATE jobs SET state = 'succeeded', finished_ms = 2 WHERE id = 'a'", []).unwrap();
    for st in ["queued", "running", "failed", "canceled", "succeeded"] {
        let e = err_text(c.execute("UPDATE jobs SET state = ?1 WHERE id = 'a'", [st]));
        assert!(e.contains("illegal job transition"), "{st}: {e}");
    }
    // REPLACE INTO over a finished job, and a duplicate id.
    let e = err_text(c.execute(
        "REPLACE INTO jobs (id, state, profile, task, requested_by, project_dir, argv, max_attempts, run_after_ms,
                            timeout_ms, created_ms)
         VALUES ('a', 'queued', 'coder', 't', 'test', '/', '[]', 3, 0, 1000, 0)",
        [],
    ));
    assert!(e.contains("already exists"), "{e}");
    let state: String = c.query_row("SELECT state FROM jobs WHERE id = 'a'", [], |r| r.get(0)).unwrap();
    assert_eq!(state, "succeeded");
    // The id never changes.
    let e = err_text(c.execute("UPDATE jobs SET id = 'b' WHERE id = 'a'", []));
    assert!(e.contains("never changes"), "{e}");
}

#[test]
fn illegal_worker_transitions_are_refused_by_the_database() {
    let q = TestQueue::new();
    init(&q);
    let c = q.raw();
    let ins = |id: &str, kind: &str, state: &str| {
        c.execute(
            "INSERT INTO workers (id, profile, kind, state, owner, epoch, started_ms, last_activity_ms)
             VALUES (?1, 'coder', ?2, ?3, 'o', 1, 0, 0)",
            params![id, kind, state],
        )
    };
    // Oneshot workers start busy; server workers start starting.
    assert!(err_text(ins("w0", "oneshot", "starting")).contains("illegal worker state"));
    assert!(err_text(ins("w1", "oneshot", "stopped")).contains("illegal worker state"));
    assert!(err_text(ins("w2", "server", "busy")).contains("illegal worker state"));
    ins("one", "oneshot", "busy").unwrap();
    ins("srv", "server", "starting").unwrap();
    let upd = |id: &str, st: &str| c.execute("UPDATE workers SET state = ?2 WHERE id = ?1", params![id, st]);
    assert!(err_text(upd("one", "ready")).contains("illegal worker transition"));
    assert!(err_text(upd("one", "busy")).contains("illegal worker transition"), "same-state update");
    assert!(err_text(upd("srv", "busy")).contains("illegal worker transition"), "starting -> busy");
    upd("srv", "error").unwrap();
    assert!(err_text(upd("srv", "starting")).contains("illegal worker transition"), "error -> starting");
    upd("srv", "stopped").unwrap();
    assert!(err_text(upd("srv", "ready")).contains("illegal worker transition"), "stopped -> ready");
    upd("one", "stopped").unwrap();
    // Kind never changes.
    assert!(err_text(c.execute("UPDATE workers SET kind = 'server' WHERE id = 'one'", [])).contains("never changes"));
    // A server worker's legal life: starting -> ready -> busy -> ready -> stopped.
    ins("life", "server", "starting").unwrap();
    for st in ["ready", "busy", "ready"] {
        upd("life", st).unwrap();
    }
    assert!(err_text(upd("life", "ready")).contains("illegal worker transition"), "same-state update");
    assert!(err_text(upd("life", "starting")).contains("illegal worker transition"), "ready -> starting");
    upd("life", "stopped").unwrap();
    assert!(err_text(upd("life", "error")).contains("illegal worker transition"), "stopped is final");
    // Two live server workers for one profile are impossible.
    ins("s1", "server", "starting").unwrap();
    let e = err_text(ins("s2", "server", "starting"));
    assert!(e.contains("UNIQUE"), "{e}");
}

#[test]
fn lease_epoch_only_increases() {
    let q = TestQueue::new();
    init(&q);
    let c = q.raw();
    c.execute("INSERT INTO dispatcher_lease VALUES (1, 'o', 5, 1, 0, 0)", []).unwrap();
    let e = err_text(c.execute("UPDATE dispatcher_lease SET epoch = 5", []));
    assert!(e.contains("only increases"), "{e}");
    c.execute("UPDATE dispatcher_lease SET epoch = 6", []).unwrap();
}

/// Run `baton task list` against `path` and check it exits 2 with `expect` in stderr and the file
/// untouched (no -wal/-shm left behind either).
fn refused_untouched(q: &TestQueue, path: &std::path::Path, expect: &str) {
    let before = std::fs::read(path).unwrap();
    let o = q.cmd().env("BATON_DB", path).args(["task", "list"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(expect), "stderr {stderr:?} lacks {expect:?}");
    assert!(stderr.contains("left untouched"), "{stderr}");
    assert_eq!(std::fs::read(path).unwrap(), before, "file changed");
}

#[test]
fn a_corrupt_file_is_refused_untouched() {
    let q = TestQueue::new();
    let p = q.dir.path().join("corrupt.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(std::iter::repeat_n(0xA5u8, 8192));
    std::fs::write(&p, &bytes).unwrap();
    refused_untouched(&q, &p, "is not a baton queue");
    let t = q.dir.path().join("text.db");
    std::fs::write(&t, "hello, I am a text file and definitely not a database. ".repeat(10)).unwrap();
    refused_untouched(&q, &t, "not a SQLite database");
}

#[test]
fn a_foreign_sqlite_database_is_refused_untouched() {
    let q = TestQueue::new();
    let p = q.dir.path().join("foreign.db");
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');").unwrap();
    }
    refused_untouched(&q, &p, "another application's SQLite database");
    let p2 = q.dir.path().join("other-app.db");
    {
        let c = rusqlite::Connection::open(&p2).unwrap();
        c.execute_batch("PRAGMA application_id = 42; CREATE TABLE t (x);").unwrap();
    }
    refused_untouched(&q, &p2, "application_id is 0x2a");
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let q = TestQueue::new();
    init(&q);
    {
        let c = q.raw();
        c.execute_batch("PRAGMA user_version = 99; PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    }
    refused_untouched(&q, &q.db, "newer baton (schema version 99");
}

#[test]
fn processes_opening_a_new_queue_at_once_all_succeed() {
    // While one process migrates, the others must read the file's identity from one snapshot:
    // tables created but application_id not yet visible would look like a foreign database.
    for round in 0..12 {
        let q = TestQueue::new();
        let kids: Vec<_> = (0..6)
            .map(|i| {
                // Staggered, so that some arrive while the first is mid-migration.
                std::thread::sleep(std::time::Duration::from_millis(if i == 0 { 0 } else { 4 }));
                q.cmd().arg("init").output_async()
            })
            .collect();
        for k in kids {
            let o = k.wait_with_output().unwrap();
            assert!(o.status.success(), "round {round}: {}", String::from_utf8_lossy(&o.stderr));
        }
        assert_eq!(q.scalar_i64("SELECT count(*) FROM _sqlx_migrations"), MIGRATIONS);
        assert_eq!(q.scalar_i64("PRAGMA user_version"), baton::SCHEMA_VERSION);
    }
}

trait SpawnOutput {
    fn output_async(&mut self) -> std::process::Child;
}

impl SpawnOutput for std::process::Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
    }
}

#[test]
fn an_open_import_restores_rows_in_any_known_state_and_only_into_an_empty_queue() {
    let q = TestQueue::new();
    init(&q);
    let c = q.raw();
    let job = |id: &str, state: &str| {
        format!(
            "INSERT INTO jobs (id, state, profile, task, requested_by, project_dir, argv, max_attempts, run_after_ms,
                               timeout_ms, created_ms, finished_ms, attempt)
             VALUES ('{id}', '{state}', 'coder', 't', 'cli', '/p', '[]', 1, 0, 60000, 1, 2, 1)"
        )
    };
    let open = "INSERT INTO imports (source, format, started_ms) VALUES ('a file', 1, 1)";
    let err = c.execute(&job("f", "succeeded"), []).unwrap_err().to_string();
    assert!(err.contains("illegal job state for a new job"), "{err}");
    c.execute_batch("BEGIN").unwrap();
    c.execute(open, []).unwrap();
    let err = c.execute(&job("x", "exploded"), []).unwrap_err().to_string();
    assert!(err.contains("illegal job state for a new job"), "an unknown word, even in an import: {err}");
    c.execute(&job("f", "succeeded"), []).unwrap();
    c.execute(
        "INSERT INTO job_events (job_id, attempt, seq, at_ms, kind, text) VALUES ('f', 1, 1, 1, 'message', 'hi')",
        [],
    )
    .unwrap();
    c.execute("UPDATE imports SET finished_ms = 3, jobs = 1, runs = 0, events = 1", []).unwrap();
    c.execute_batch("COMMIT").unwrap();
    assert_eq!(q.state("f"), "succeeded");
    let err = c.execute(&job("g", "failed"), []).unwrap_err().to_string();
    assert!(err.contains("illegal job state"), "closed, the guards hold again: {err}");
    let err = c.execute(open, []).unwrap_err().to_string();
    assert!(err.contains("only a queue that holds no tasks"), "{err}");
    let err = c.execute("UPDATE imports SET finished_ms = 9", []).unwrap_err().to_string();
    assert!(err.contains("finished once"), "{err}");
    let err = c.execute("DELETE FROM imports", []).unwrap_err().to_string();
    assert!(err.contains("stays with the queue"), "{err}");
}

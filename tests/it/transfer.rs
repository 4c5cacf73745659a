//! Moving a queue: `baton export` from a file, `baton import` into PostgreSQL, and back into a
//! new file; each queue then shows the same tasks, events, workflow runs and pauses, its
//! queued work runs there, and new tasks come after the imported ones. Refusals: a dispatcher
//! running on the source, a task running without one, a target that holds tasks, an export cut
//! short or damaged, a file that is no export, and the schema's own guard on `imports`.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::pg::Pg;
use crate::common::{self, Term, TestQueue, wait_for};

/// A profile whose worker prints a Claude-like stream: its activity lands in `job_events`.
fn streaming_profile(q: &TestQueue) -> Value {
    let lines = [
        json!({"type": "system", "subtype": "init", "session_id": "s", "model": "m"}),
        json!({"type": "assistant", "message": {"id": "msg_1", "content": [{"type": "tool_use", "id": "t1",
            "name": "Write", "input": {"file_path": "src/a.rs", "content": "x\n"}}]}}),
        json!({"type": "assistant", "message": {"id": "msg_2", "content": [{"type": "text", "text": "done"}]}}),
        json!({"type": "result", "subtype": "success", "is_error": false, "result": "done", "total_cost_usd": 0.25}),
    ];
    let out = q.dir.path().join("stream.jsonl");
    std::fs::write(&out, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let script = q.script("streamer", &format!("cat > /dev/null\ncat '{}'", out.display()));
    json!({"id": "cl", "name": "cl", "model": "m", "purpose": "p", "whenToUse": "w",
           "command": [script.display().to_string()], "promptVia": "stdin",
           "output": {"format": "jsonl", "events": "claude", "where": [["/type", "result"]], "text": "/result",
                      "failed": "/is_error", "error": "/result", "cost": "/total_cost_usd"}})
}

fn config_with(q: &TestQueue, profiles: &[Value]) {
    let mut c = common::default_config();
    c["profiles"] = json!(profiles);
    std::fs::write(q.project.join(".baton/config.json"), serde_json::to_string(&c).unwrap()).unwrap();
}

/// `baton --db <db> <args>` in `q`'s project.
fn on(q: &TestQueue, db: &str, args: &[&str]) -> std::process::Output {
    let mut c = q.cmd();
    c.arg("--db").arg(db).args(args);
    common::run_within(c, 60)
}

fn ok_on(q: &TestQueue, db: &str, args: &[&str]) -> String {
    let o = on(q, db, args);
    assert!(o.status.success(), "baton --db {db} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn refused_on(q: &TestQueue, db: &str, args: &[&str]) -> String {
    let o = on(q, db, args);
    assert_eq!(
        o.status.code(),
        Some(2),
        "baton --db {db} {args:?} should be refused: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every task as the CLI shows it, by id, with the fields that travel with the row.
fn tasks(q: &TestQueue, db: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&ok_on(q, db, &["task", "list", "--limit", "200", "--json"])).unwrap();
    let mut all: Vec<Value> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let keep = [
                "id",
                "status",
                "workerId",
                "responseText",
                "exitCode",
                "error",
                "labels",
                "createdAt",
                "finishedAt",
                "attempt",
                "costUsd",
            ];
            Value::Object(keep.iter().filter_map(|k| r.get(*k).map(|v| (k.to_string(), v.clone()))).collect())
        })
        .collect();
    all.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    all
}

/// The task's record once it finished (await's exit code says how it ended; the record is read).
fn await_on(q: &TestQueue, db: &str, id: &str) -> Value {
    let o = on(q, db, &["task", "await", id, "--timeout", "60000", "--json"]);
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("await {id}: {e}: {}", String::from_utf8_lossy(&o.stderr)))
}

/// A dispatcher on `db`, stopped (SIGTERM, so it drains) when dropped.
fn dispatcher_on(q: &TestQueue, db: &str) -> Term {
    let log = std::fs::File::create(q.dir.path().join(format!("dispatcher-{}.log", common::now_nanos()))).unwrap();
    let mut c: Command = q.cmd();
    c.arg("--db").arg(db).arg("run").stdout(Stdio::null()).stderr(log);
    Term(c.spawn().expect("spawn dispatcher"))
}

#[test]
fn a_queue_moves_from_a_file_to_postgres_and_back() {
    let _g = common::heavy();
    let Some(pg) = Pg::start() else { return };
    let q = TestQueue::new();
    config_with(&q, &[streaming_profile(&q)]);
    let file = q.db.display().to_string();
    let url = pg.create_db("moved");

    // The source: a workflow run (its steps on a fake agent), finished tasks of every kind,
    // events, and queued work.
    crate::workflow::use_fake_agent(&q);
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(q.project.join(".baton/config.json")).unwrap()).unwrap();
    cfg["profiles"] = json!([streaming_profile(&q)]);
    std::fs::write(q.project.join(".baton/config.json"), cfg.to_string()).unwrap();
    let d = dispatcher_on(&q, &file);
    let (run, code) = q.json(&["task", "start", "--workflow", "roocode-boomerang", "add a flag"]);
    assert_eq!(code, 0, "{run}");
    let run = run["taskId"].as_str().unwrap().to_string();
    let finished_run = await_on(&q, &file, &run);
    assert!(finished_run["status"].is_string(), "{finished_run}");
    drop(d);
    config_with(&q, &[streaming_profile(&q)]);
    let d = dispatcher_on(&q, &file);
    let done = q.start(&["--label", "team=a", "echo hello"]);
    let failed = q.start(&["exit 3"]);
    let streamed = q.start(&["--worker", "cl", "write a.rs"]);
    let after = q.start(&["--after", &done, "echo after"]);
    let canceled = q.start(&["--delay", "600000", "echo never"]);
    q.ok(&["task", "cancel", &canceled]);
    for id in [&done, &failed, &streamed, &after] {
        await_on(&q, &file, id);
    }
    // Queued work that only the target runs: its profile paused here, and a task after it.
    q.ok(&["pause", "--profile", "coder"]);
    let queued = q.start(&["echo ran after the move"]);
    let waiting = q.start(&["--after", &queued, "echo and then this"]);
    let events = ok_on(&q, &file, &["task", "events", &streamed]);
    assert!(events.contains("Write"), "the streamed task has events: {events}");

    // Refused while the dispatcher runs; nothing written.
    let export = q.dir.path().join("queue.jsonl");
    let export_s = export.display().to_string();
    let err = refused_on(&q, &file, &["export", "-o", &export_s]);
    assert!(err.contains("dispatcher") && err.contains("nothing was exported"), "{err}");
    assert!(!export.exists(), "a refused export leaves no file");
    drop(d);

    let before = tasks(&q, &file);
    assert_eq!(before.len(), 11, "seven tasks and the run's four step jobs: {before:?}");
    let o = on(&q, &file, &["export", "-o", &export_s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("Exported") && said.contains("events"), "{said}");
    let text = std::fs::read_to_string(&export).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["end"]["jobs"].as_u64(), Some(text.matches("{\"table\":\"jobs\"").count() as u64), "{last}");
    assert!(last["end"]["job_events"].as_u64() >= Some(3), "{last}");
    assert_eq!(last["end"]["workflow_runs"], 1, "{last}");
    assert_eq!(last["end"]["pauses"], 1, "{last}");

    // Into PostgreSQL: the same tasks, events, run and pause.
    let said = ok_on(&q, &url, &["import", &export_s]);
    assert!(said.contains("Imported") && said.contains(&file), "{said}");
    assert_eq!(tasks(&q, &url), before, "the tasks as the CLI shows them, on PostgreSQL");
    assert_eq!(ok_on(&q, &url, &["task", "events", &streamed]), events, "the same events");
    let shown: Value = serde_json::from_str(&ok_on(&q, &url, &["workflow", "show", &run, "--json"])).unwrap();
    assert_eq!(shown["status"], finished_run["status"], "{shown}");
    assert_eq!(
        pg.psql_ok("moved", "SELECT jobs, runs, events, finished_ms IS NOT NULL FROM imports"),
        format!("{}|1|{}|t", last["end"]["jobs"], last["end"]["job_events"])
    );
    // The guards of new rows hold again once the import is closed.
    let out = pg.psql("moved", "UPDATE jobs SET state = 'queued' WHERE state = 'succeeded'");
    assert!(!out.status.success(), "a finished job stays finished");
    // A second import into a queue with tasks is refused, and so is one the schema sees.
    let err = refused_on(&q, &url, &["import", &export_s]);
    assert!(err.contains("already holds tasks"), "{err}");
    let out = pg.psql("moved", "INSERT INTO imports (source, format, started_ms) VALUES ('x', 1, 0)");
    assert!(String::from_utf8_lossy(&out.stderr).contains("only a queue that holds no tasks"), "{out:?}");

    // The queued work runs on the target once resumed; new tasks come after the imported ones.
    q.ok(&["--db", &url, "resume"]);
    let node = dispatcher_on(&q, &url);
    assert_eq!(await_on(&q, &url, &waiting)["status"], "succeeded");
    assert_eq!(await_on(&q, &url, &queued)["responseText"].as_str().map(str::trim), Some("ran after the move"));
    let fresh = ok_on(&q, &url, &["task", "start", "echo new"]).trim().to_string();
    assert_eq!(await_on(&q, &url, &fresh)["status"], "succeeded");
    let newest = pg.psql_ok("moved", "SELECT id FROM jobs ORDER BY seq DESC LIMIT 1");
    assert_eq!(newest, fresh, "a new task's seq follows the imported ones");
    drop(node);

    // And back into a new file, through a pipe.
    let back = q.dir.path().join("back.db").display().to_string();
    let mut exporter = q.cmd();
    exporter.arg("--db").arg(&url).arg("export").stdout(Stdio::piped());
    let mut exporter = exporter.spawn().unwrap();
    let mut importer = q.cmd();
    importer.arg("--db").arg(&back).args(["import", "-"]).stdin(exporter.stdout.take().unwrap());
    let o = common::run_within(importer, 60);
    assert!(exporter.wait().unwrap().success());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(tasks(&q, &back), tasks(&q, &url), "the file holds what PostgreSQL held");
    assert_eq!(ok_on(&q, &back, &["task", "events", &streamed]), events);
}

#[test]
fn an_import_is_all_or_nothing_and_says_why() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let file = q.db.display().to_string();
    let d = dispatcher_on(&q, &file);
    let ids: Vec<String> = (0..3).map(|i| q.start(&[&format!("echo {i}")])).collect();
    for id in &ids {
        await_on(&q, &file, id);
    }
    drop(d);
    let text = ok_on(&q, &file, &["export"]);
    let lines: Vec<&str> = text.lines().collect();
    let write = |name: &str, body: String| {
        let p = q.dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let target = q.dir.path().join("target.db").display().to_string();
    let empty_after = |what: &str| {
        if std::path::Path::new(&target).exists() {
            let n: i64 = rusqlite::Connection::open(&target)
                .unwrap()
                .query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 0, "{what}: nothing imported");
        }
    };

    // Cut short: the last line is missing.
    let cut = write("cut.jsonl", lines[..lines.len() - 1].join("\n"));
    let err = refused_on(&q, &target, &["import", &cut]);
    assert!(err.contains("cut short") && err.contains("nothing was imported"), "{err}");
    empty_after("cut short");
    // A row line lost: the counts say so.
    let mut lost: Vec<&str> = lines.clone();
    lost.remove(2);
    let lost = write("lost.jsonl", lost.join("\n"));
    let err = refused_on(&q, &target, &["import", &lost]);
    assert!(err.contains("damaged"), "{err}");
    empty_after("a row lost");
    // A damaged line: named by its number.
    let mut bad: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    bad[2] = "{\"table\":\"jobs\",\"row\":{\"id\":".into();
    let bad = write("bad.jsonl", bad.join("\n"));
    let err = refused_on(&q, &target, &["import", &bad]);
    assert!(err.contains("line 3") && err.contains("not JSON"), "{err}");
    // A row the database refuses (a state no job has): named with its table and id.
    let mut odd: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mut row: Value = serde_json::from_str(&odd[1]).unwrap();
    row["row"]["state"] = json!("exploded");
    odd[1] = row.to_string();
    let odd = write("odd.jsonl", odd.join("\n"));
    let err = refused_on(&q, &target, &["import", &odd]);
    assert!(err.contains("line 2") && err.contains("jobs") && err.contains("refused"), "{err}");
    empty_after("a refused row");
    // A running task never travels.
    let mut running: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mut row: Value = serde_json::from_str(&running[1]).unwrap();
    row["row"]["state"] = json!("running");
    running[1] = row.to_string();
    let running = write("running.jsonl", running.join("\n"));
    let err = refused_on(&q, &target, &["import", &running]);
    assert!(err.contains("running task"), "{err}");
    // Not an export at all, or of another format.
    let other = write("other.jsonl", "{\"hello\": 1}\n".into());
    let err = refused_on(&q, &target, &["import", &other]);
    assert!(err.contains("not a baton export"), "{err}");
    let mut newer: Value = serde_json::from_str(lines[0]).unwrap();
    newer["format"] = json!(99);
    let newer = write("newer.jsonl", format!("{newer}\n{}", lines[1..].join("\n")));
    let err = refused_on(&q, &target, &["import", &newer]);
    assert!(err.contains("format 99"), "{err}");
    let err = refused_on(&q, &target, &["import", "/nonexistent/export.jsonl"]);
    assert!(err.contains("/nonexistent/export.jsonl"), "{err}");
    empty_after("every refusal");

    // The whole export still imports.
    let whole = write("whole.jsonl", text.clone());
    ok_on(&q, &target, &["import", &whole]);
    assert_eq!(tasks(&q, &target), tasks(&q, &file));
    // A hand-made import on the file is refused by the schema once the queue holds tasks.
    let c = rusqlite::Connection::open(&target).unwrap();
    let err = c.execute("INSERT INTO imports (source, format, started_ms) VALUES ('x', 1, 0)", []).unwrap_err();
    assert!(err.to_string().contains("only a queue that holds no tasks"), "{err}");
    let err = c.execute("DELETE FROM imports", []).unwrap_err();
    assert!(err.to_string().contains("stays with the queue"), "{err}");
}

#[test]
fn a_task_running_without_its_dispatcher_is_not_exported() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let file = q.db.display().to_string();
    let mut d = common::Kill(q.cmd().arg("run").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let id = q.start(&["sleep 60"]);
    wait_for(30, "the task to run", || q.state(&id) == "running");
    // kill -9: the task stays running in the file, with no dispatcher to requeue it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid()), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for(30, "the dispatcher to die", || d.exited().is_some());
    let err = refused_on(&q, &file, &["export"]);
    assert!(err.contains("1 task(s) are running") && err.contains("baton run"), "{err}");
    for pid in common::live_workers_of(&q.db) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    // Canceled, it is no longer running: the export goes ahead.
    q.ok(&["task", "cancel", &id]);
    let text = ok_on(&q, &file, &["export"]);
    assert!(text.contains(&id), "the canceled task is exported");
}

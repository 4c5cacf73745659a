//! One suite, both backends: the same behaviours through the same CLI on a queue file and on a
//! throwaway PostgreSQL server (`common::pg`; those tests skip, saying so, where PostgreSQL is
//! not installed). Lifecycle, dedup, cancel, await waking on the finish, a workflow resumed
//! after kill -9 of its dispatcher, limits, pruning, illegal transitions refused by the
//! database itself, and bad inputs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::pg::Pg;
use crate::common::{self, TestQueue, wait_for};

/// Where a test's queue lives.
enum Engine {
    File,
    Postgres(Pg),
}

impl Engine {
    fn postgres() -> Option<Engine> {
        Pg::start().map(Engine::Postgres)
    }

    /// An isolated queue on this engine with `default_config()` and `overrides` merged in.
    fn queue(&self, overrides: Value) -> Queue<'_> {
        let mut q = TestQueue::with_overrides(overrides);
        if let Engine::Postgres(pg) = self {
            q.db = PathBuf::from(pg.create_db("q"));
        }
        Queue { q, engine: self }
    }
}

struct Queue<'e> {
    q: TestQueue,
    engine: &'e Engine,
}

impl std::ops::Deref for Queue<'_> {
    type Target = TestQueue;
    fn deref(&self) -> &TestQueue {
        &self.q
    }
}

impl Queue<'_> {
    /// The first column of the first row of `sql`, as text ("" for NULL or no row); the
    /// database's error message when it refuses.
    fn sql(&self, sql: &str) -> Result<String, String> {
        match self.engine {
            Engine::File => {
                let c = self.q.raw();
                let mut st = c.prepare(sql).map_err(|e| e.to_string())?;
                let mut rows = st.query([]).map_err(|e| e.to_string())?;
                let Some(row) = rows.next().map_err(|e| e.to_string())? else { return Ok(String::new()) };
                Ok(match row.get_ref(0).map_err(|e| e.to_string())? {
                    rusqlite::types::ValueRef::Null => String::new(),
                    rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                    rusqlite::types::ValueRef::Real(f) => f.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Blob(_) => "<blob>".into(),
                })
            }
            Engine::Postgres(pg) => {
                let out = pg.psql("q", sql);
                if out.status.success() {
                    Ok(String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .split('|')
                        .next()
                        .unwrap_or("")
                        .to_string())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).into_owned())
                }
            }
        }
    }

    fn sql_ok(&self, sql: &str) -> String {
        self.sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn count(&self, sql_where: &str) -> i64 {
        self.sql_ok(&format!("SELECT count(*) FROM jobs WHERE {sql_where}")).parse().unwrap()
    }

    fn state_of(&self, id: &str) -> String {
        self.sql_ok(&format!("SELECT state FROM jobs WHERE id = '{id}'"))
    }

    fn await_record(&self, id: &str) -> Value {
        let (v, _) = self.json(&["task", "await", id, "--timeout", "60000"]);
        v
    }
}

/// Each behaviour as two tests, `file::<name>` and `postgres::<name>`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(#[test]
            fn $name() {
                super::$name(&super::Engine::File);
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                let Some(engine) = super::Engine::postgres() else { return };
                super::$name(&engine);
            })*
        }
    };
}

both!(
    lifecycle_and_dedup,
    cancel_stops_the_worker,
    await_wakes_on_the_finish,
    a_workflow_resumes_after_kill_9_of_its_dispatcher,
    limits_hold,
    pruning_deletes_the_oldest_finished,
    illegal_transitions_are_refused_by_the_database,
    bad_inputs_are_refused_and_write_nothing,
);

fn lifecycle_and_dedup(e: &Engine) {
    let _g = common::heavy();
    let q = e.queue(json!({}));
    q.dispatcher();
    let id = q.start(&["echo hello from the worker"]);
    let v = q.await_record(&id);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["responseText"].as_str().map(str::trim), Some("hello from the worker"), "{v}");
    assert_eq!(v["exitCode"], 0, "{v}");
    assert_eq!(q.state_of(&id), "succeeded");
    assert_eq!(q.sql_ok(&format!("SELECT attempt FROM jobs WHERE id = '{id}'")), "1");
    let (listed, _) = q.json(&["task", "list"]);
    assert!(listed.as_array().unwrap().iter().any(|r| r["id"] == id.as_str()), "{listed}");
    let (peeked, _) = q.json(&["task", "peek", &id]);
    assert_eq!(peeked["status"], "succeeded", "{peeked}");
    // Dedup: the unfinished holder of a key answers a second start.
    let a = q.start(&["--dedup-key", "k1", "sleep 3"]);
    let b = q.start(&["--dedup-key", "k1", "sleep 3"]);
    assert_eq!(a, b, "one unfinished task per dedup key");
    assert_eq!(q.count("dedup_key = 'k1'"), 1);
    assert_eq!(q.await_record(&a)["status"], "succeeded");
    let c = q.start(&["--dedup-key", "k1", "echo again"]);
    assert_ne!(c, a, "a finished holder frees the key");
    assert_eq!(q.await_record(&c)["status"], "succeeded");
}

fn cancel_stops_the_worker(e: &Engine) {
    let _g = common::heavy();
    let q = e.queue(json!({}));
    q.dispatcher();
    let id = q.start(&["sleep 60"]);
    wait_for(30, "the task to run", || q.state_of(&id) == "running");
    wait_for(30, "its worker to appear", || !common::live_workers_of(&q.db).is_empty());
    let o = q.run_within(&["task", "cancel", &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = q.await_record(&id);
    assert_eq!(v["status"], "canceled", "{v}");
    wait_for(30, "the worker to be gone", || common::live_workers_of(&q.db).is_empty());
    // A queued task cancels at once, without a worker.
    let queued = q.start(&["--delay", "600000", "echo never"]);
    q.ok(&["task", "cancel", &queued]);
    assert_eq!(q.state_of(&queued), "canceled");
}

fn await_wakes_on_the_finish(e: &Engine) {
    let _g = common::heavy();
    let q = e.queue(json!({}));
    q.dispatcher();
    let id = q.start(&["sleep 1; echo woke"]);
    let t = Instant::now();
    let v = q.await_record(&id);
    assert_eq!(v["status"], "succeeded", "{v}");
    // Woken by the finish, not by its 60 s timeout.
    assert!(t.elapsed() < Duration::from_secs(30), "await took {:?}", t.elapsed());
    // An await on several returns once all are done.
    let ids: Vec<String> = (0..3).map(|i| q.start(&[&format!("sleep 0.{i}; echo {i}")])).collect();
    let mut args = vec!["task", "await"];
    args.extend(ids.iter().map(String::as_str));
    args.extend(["--timeout", "60000"]);
    let (v, code) = q.json(&args);
    assert_eq!(code, 0, "{v}");
    let all = v.as_array().unwrap_or_else(|| panic!("one record per task: {v}"));
    assert!(all.iter().all(|r| r["status"] == "succeeded"), "{v}");
}

fn a_workflow_resumes_after_kill_9_of_its_dispatcher(e: &Engine) {
    let _g = common::heavy();
    let q = e.queue(json!({"jobs": {"retryBackoffMs": 100, "killGraceMs": 300}}));
    crate::workflow::use_fake_agent(&q);
    std::fs::write(q.dir.path().join("slow-implement"), "").unwrap();
    let first = q.dispatcher();
    let run = crate::workflow::run_boomerang(&q);
    wait_for(60, "step 2 to start", || crate::workflow::runs_log(&q).iter().any(|l| l == "implement start 1"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    std::fs::remove_file(q.dir.path().join("slow-implement")).unwrap();
    q.dispatcher();
    let (v, code) = q.json(&["task", "await", &run, "--timeout", "60000"]);
    assert_eq!((v["status"].as_str(), code), (Some("succeeded"), 0), "{v}");
    let log = crate::workflow::runs_log(&q);
    let starts = |step: &str| log.iter().filter(|l| l.starts_with(&format!("{step} start"))).count();
    assert_eq!(starts("plan"), 1, "{log:?}");
    assert!((1..=2).contains(&starts("implement")), "{log:?}");
    assert_eq!(starts("review"), 1, "{log:?}");
    assert_eq!(starts("fix"), 1, "{log:?}");
    assert_eq!(q.sql_ok(&format!("SELECT state FROM workflow_runs WHERE id = '{run}'")), "succeeded");
    assert_eq!(
        q.sql_ok(&format!("SELECT count(*) FROM workflow_steps WHERE run_id = '{run}' AND state = 'succeeded'")),
        "4"
    );
}

fn limits_hold(e: &Engine) {
    let _g = common::heavy();
    let q = e.queue(json!({"limits": {"maxConcurrency": 2}}));
    let ids: Vec<String> = (0..6).map(|i| q.start(&[&format!("sleep 0.4; echo {i}")])).collect();
    q.dispatcher();
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while q.count("state IN ('queued', 'running')") > 0 {
        assert!(Instant::now() < deadline, "the tasks did not finish");
        most = most.max(q.count("state = 'running'"));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(most <= 2, "{most} ran at once under maxConcurrency 2");
    assert!(most >= 1);
    for id in &ids {
        assert_eq!(q.state_of(id), "succeeded");
    }
}

fn pruning_deletes_the_oldest_finished(e: &Engine) {
    let q = e.queue(json!({"retention": {"minAgeMs": 0, "maxJobs": 1}}));
    let a = q.start(&["echo a"]);
    let b = q.start(&["echo b"]);
    let kept = q.start(&["--delay", "600000", "echo kept"]);
    q.ok(&["task", "cancel", &a, &b]);
    let out = q.ok(&["prune", "--dry-run"]);
    assert!(out.contains("Would delete 1"), "{out}");
    assert_eq!(q.count("1 = 1"), 3);
    q.ok(&["prune"]);
    assert_eq!(q.count("1 = 1"), 2);
    assert_eq!(q.count(&format!("id = '{a}'")), 0, "the oldest finished went");
    assert_eq!(q.state_of(&b), "canceled");
    assert_eq!(q.state_of(&kept), "queued", "unfinished tasks are never pruned");
}

fn illegal_transitions_are_refused_by_the_database(e: &Engine) {
    let q = e.queue(json!({}));
    let id = q.start(&["--delay", "600000", "echo x"]);
    q.ok(&["task", "cancel", &id]);
    for (sql, says) in [
        (format!("UPDATE jobs SET state = 'running' WHERE id = '{id}'"), "illegal job transition"),
        (format!("UPDATE jobs SET state = 'queued' WHERE id = '{id}'"), "illegal job transition"),
        (format!("UPDATE jobs SET id = 'other' WHERE id = '{id}'"), "a job id never changes"),
    ] {
        let err = q.sql(&sql).expect_err(&sql);
        assert!(err.contains(says), "{sql}: {err}");
    }
    assert_eq!(q.state_of(&id), "canceled", "nothing changed");
    let err = q.sql("UPDATE job_transitions SET to_state = 'running'").expect_err("the transitions are fixed");
    assert!(err.contains("baton:"), "{err}");
}

fn bad_inputs_are_refused_and_write_nothing(engine: &Engine) {
    let q = engine.queue(json!({}));
    q.ok(&["init"]);
    let mut c = q.cmd();
    c.args(["task", "start", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all("x".repeat(100_001).as_bytes()).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Task must be <= 100000 chars"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = q.refused(&["task", "start", "--kind", "worker", "do it"]);
    assert!(err.contains("Missing workerId"), "{err}");
    // An unknown id is named, with its own exit code.
    let o = q.run_within(&["task", "peek", "no-such-task"]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "no-such-task: unknown");
    let e = q.refused(&["task", "start", "--node", "", "x"]);
    assert!(e.contains("node must not be empty"), "{e}");
    assert_eq!(q.count("1 = 1"), 0, "nothing written by refused starts");
    // A node constraint means something only where several dispatchers share the queue.
    match engine {
        Engine::File => {
            let e = q.refused(&["task", "start", "--node", "n9", "x"]);
            assert!(e.contains("node applies to a PostgreSQL queue"), "{e}");
            assert_eq!(q.count("1 = 1"), 0);
        }
        Engine::Postgres(_) => {
            let id = q.start(&["--node", "n9", "x"]);
            assert_eq!(q.sql_ok(&format!("SELECT node FROM jobs WHERE id = '{id}'")), "n9");
        }
    }
}

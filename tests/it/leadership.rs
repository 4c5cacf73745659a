//! One leader per queue, whatever happens: leadership follows the queue file (not the path
//! spelled), a paused leader is replaced and writes nothing when it wakes, a drain past its
//! grace leaves no job `running`, orphaned work gets a dispatcher, and random kill -9 of
//! dispatchers and workers loses nothing and ends no job twice.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{self, Kill, TestQueue, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("kill -{sig} {pid}: {e}"));
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()).is_some_and(|st| st != "Z"))
}

/// `baton [--db DB] run` as a child of the test, logging to `<name>.log` in the temp dir.
fn dispatcher(q: &TestQueue, name: &str, db: Option<&Path>, cwd: Option<&Path>) -> (Kill, PathBuf) {
    let log_path = q.dir.path().join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut c = q.cmd();
    if let Some(db) = db {
        c.arg("--db").arg(db);
    }
    if let Some(dir) = cwd {
        c.current_dir(dir);
    }
    c.arg("run").stdout(Stdio::null()).stderr(log);
    (Kill(c.spawn().expect("spawn baton run")), log_path)
}

fn log_has(path: &Path, what: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|l| l.contains(what))
}

/// `baton --db DB <args> --json` from `cwd`.
fn json_at(q: &TestQueue, db: &Path, cwd: &Path, args: &[&str]) -> Value {
    let o = q.cmd().current_dir(cwd).arg("--db").arg(db).args(args).arg("--json").output().unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    })
}

fn start_at(q: &TestQueue, db: &Path, cwd: &Path, task: &str) -> String {
    let o = q.cmd().current_dir(cwd).arg("--db").arg(db).args(["task", "start", task]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Record every state change of a job in a table of the test's own (a trigger in the queue
/// file), to count who ended what.
fn audit(q: &TestQueue) {
    q.raw()
        .execute_batch(
            "CREATE TABLE test_audit (id TEXT, old_state TEXT, new_state TEXT, old_owner TEXT, old_epoch INTEGER);
             CREATE TRIGGER test_audit_jobs AFTER UPDATE OF state ON jobs BEGIN
                 INSERT INTO test_audit VALUES (NEW.id, OLD.state, NEW.state, OLD.owner, OLD.epoch);
             END;",
        )
        .unwrap();
}

/// Turn autoSpawn on in the project's config.
fn auto_spawn(q: &TestQueue) {
    let cfg = q.project.join(".baton/config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c["autoSpawn"] = Value::Bool(true);
    std::fs::write(&cfg, c.to_string()).unwrap();
}

const TERMINAL: &str = "('succeeded', 'failed', 'canceled')";

#[test]
fn two_queues_in_one_directory_drain_side_by_side() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let shared = q.dir.path().join("queues");
    std::fs::create_dir(&shared).unwrap();
    let (a, b) = (shared.join("a.db"), shared.join("b.db"));
    let (mut da, _) = dispatcher(&q, "a", Some(&a), None);
    let (mut db, _) = dispatcher(&q, "b", Some(&b), None);
    let ia = start_at(&q, &a, &q.project, "echo from-a");
    let ib = start_at(&q, &b, &q.project, "echo from-b");
    let va = json_at(&q, &a, &q.project, &["task", "await", &ia, "--timeout", "30000"]);
    let vb = json_at(&q, &b, &q.project, &["task", "await", &ib, "--timeout", "30000"]);
    assert_eq!((va["status"].as_str(), va["responseText"].as_str()), (Some("succeeded"), Some("from-a")), "{va}");
    assert_eq!((vb["status"].as_str(), vb["responseText"].as_str()), (Some("succeeded"), Some("from-b")), "{vb}");
    let (sa, sb) = (json_at(&q, &a, &q.project, &["status"]), json_at(&q, &b, &q.project, &["status"]));
    assert_eq!(sa["dispatcher"]["pid"].as_i64(), Some(i64::from(da.pid())), "{sa}");
    assert_eq!(sb["dispatcher"]["pid"].as_i64(), Some(i64::from(db.pid())), "{sb}");
    // Each queue keeps its own locks and logs.
    assert!(va["logPath"].as_str().unwrap().starts_with(&format!("{}-baton/", a.display())), "{va}");
    assert!(vb["logPath"].as_str().unwrap().starts_with(&format!("{}-baton/", b.display())), "{vb}");
    assert!(da.exited().is_none() && db.exited().is_none());
}

#[test]
fn a_symlinked_db_joins_the_one_leader() {
    let _g = common::heavy();
    let q = TestQueue::new();
    q.ok(&["init"]);
    let (leader, _) = dispatcher(&q, "leader", None, None);
    wait_for(30, "the dispatcher leads", || q.lease_pid() == Some(leader.pid()));
    let elsewhere = q.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let link = elsewhere.join("link.db");
    std::os::unix::fs::symlink(&q.db, &link).unwrap();

    let (mut second, second_log) = dispatcher(&q, "second", Some(&link), Some(&elsewhere));
    wait_for(30, "the second stands by", || log_has(&second_log, "standing by"));
    assert!(second.exited().is_none());
    assert_eq!(q.lease_pid(), Some(leader.pid()), "a second leader took the lease through the symlink");

    let s = json_at(&q, &link, &elsewhere, &["status"]);
    assert_eq!(s["dispatcher"]["alive"], true, "{s}");
    assert_eq!(s["dispatcher"]["pid"].as_i64(), Some(i64::from(leader.pid())), "{s}");
    assert_eq!(s["database"].as_str(), Some(std::fs::canonicalize(&q.db).unwrap().to_str().unwrap()), "{s}");

    // A task for the project, through the link.
    let id = start_at(&q, &link, &q.project, "echo via-link");
    let v = json_at(&q, &link, &elsewhere, &["task", "await", &id, "--timeout", "30000"]);
    assert_eq!(v["responseText"], "via-link", "{v}");
    let logs = std::fs::canonicalize(q.project.join(".baton/logs")).unwrap();
    assert!(Path::new(v["logPath"].as_str().unwrap()).starts_with(&logs), "logs in one place: {v}");
    assert!(!elsewhere.join("logs").exists() && !elsewhere.join("link.db-baton").exists());
}

#[test]
fn a_paused_leader_is_replaced_and_writes_nothing_when_it_wakes() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(serde_json::json!({
        "dispatcher": {"heartbeatMs": 100, "staleMs": 1500},
        "jobs": {"maxAttempts": 3, "retryBackoffMs": 0}
    }));
    q.ok(&["init"]);
    audit(&q);
    let (mut first, first_log) = dispatcher(&q, "first", None, None);
    wait_for(30, "the first dispatcher leads", || q.lease_pid() == Some(first.pid()));
    let (second, second_log) = dispatcher(&q, "second", None, None);
    wait_for(30, "the second stands by", || log_has(&second_log, "standing by"));
    let first_epoch = q.scalar_i64("SELECT epoch FROM dispatcher_lease");

    // Three jobs that run long on their first attempt only.
    let task = r#"if [ "$BATON_ATTEMPT" = 1 ]; then sleep 60; fi; echo "done on $BATON_ATTEMPT""#;
    let ids: Vec<String> = (0..3).map(|_| q.start(&[task])).collect();
    wait_for(30, "the first leader runs all three", || {
        q.scalar_i64("SELECT count(*) FROM workers WHERE state = 'busy' AND pid IS NOT NULL") == 3
    });
    let workers: Vec<i32> = {
        let c = q.raw();
        let mut st = c.prepare("SELECT pid FROM workers WHERE state = 'busy'").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };

    signal(first.pid(), Signal::SIGSTOP);
    let paused = Instant::now();
    // While it is paused, the standby takes over once the heartbeat is older than staleMs.
    wait_for(30, "the standby leads", || q.lease_pid() == Some(second.pid()));
    assert!(paused.elapsed() >= Duration::from_millis(1000), "taken over before staleMs: {:?}", paused.elapsed());
    assert!(log_has(&second_log, "has not renewed its lease within dispatcher.staleMs"));
    // New work does not wait for the paused leader.
    let fresh = q.start(&["echo fresh"]);
    let (v, _) = q.json(&["task", "await", &fresh, "--timeout", "30000"]);
    assert_eq!(v["status"], "succeeded", "{v}");
    // The old leader's jobs are retried by the new one, whose recovery stopped their workers.
    for id in &ids {
        let (v, _) = q.json(&["task", "await", id, "--timeout", "30000"]);
        assert_eq!((v["status"].as_str(), v["responseText"].as_str()), (Some("succeeded"), Some("done on 2")), "{v}");
    }
    for pid in &workers {
        assert!(!alive(*pid), "worker {pid} of the paused leader still runs");
    }

    // Work waits in the queue when the old leader wakes (the new one is paused a moment): the
    // old one claims none of it.
    signal(second.pid(), Signal::SIGSTOP);
    let waiting: Vec<String> = (0..3).map(|_| q.start(&["echo later"])).collect();
    signal(first.pid(), Signal::SIGCONT);
    wait_for(30, "the woken leader exits", || first.exited().is_some());
    assert!(log_has(&first_log, "lost the dispatcher lease"), "{}", std::fs::read_to_string(&first_log).unwrap());
    for id in &waiting {
        assert_eq!(q.state(id), "queued", "the replaced leader claimed {id}");
    }
    signal(second.pid(), Signal::SIGCONT);
    for id in &waiting {
        let (v, _) = q.json(&["task", "await", id, "--timeout", "30000"]);
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    // It wrote nothing: no job of its epoch ended by its hand (recovery moved them to queued).
    let by_old = q.scalar_i64(&format!(
        "SELECT count(*) FROM test_audit WHERE old_epoch = {first_epoch} AND new_state IN {TERMINAL}"
    ));
    assert_eq!(by_old, 0, "the replaced leader recorded results");
    assert_eq!(q.lease_pid(), Some(second.pid()));
    let twice = q.scalar_i64(&format!(
        "SELECT count(*) FROM (SELECT id FROM test_audit WHERE new_state IN {TERMINAL} GROUP BY id HAVING count(*) > 1)"
    ));
    assert_eq!(twice, 0);
}

#[test]
fn a_drain_past_its_grace_leaves_no_job_running_and_await_gets_it_a_dispatcher() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(serde_json::json!({
        "dispatcher": {"shutdownGraceMs": 300},
        "jobs": {"maxAttempts": 2, "retryBackoffMs": 0}
    }));
    q.ok(&["init"]);
    let (mut d, log) = dispatcher(&q, "draining", None, None);
    let id = q.start(&[r#"if [ "$BATON_ATTEMPT" = 1 ]; then sleep 60; fi; echo "attempt $BATON_ATTEMPT""#]);
    wait_for(30, "the worker runs", || {
        q.scalar_i64(&format!("SELECT count(*) FROM workers WHERE job_id = '{id}' AND pid IS NOT NULL")) == 1
    });
    let pid: i32 = q.raw().query_row("SELECT pid FROM workers WHERE job_id = ?1", [&id], |r| r.get(0)).unwrap();
    signal(d.pid(), Signal::SIGTERM);
    wait_for(30, "the dispatcher exits", || d.exited().is_some());
    assert!(log_has(&log, "shutdown grace over"), "{}", std::fs::read_to_string(&log).unwrap());
    assert_eq!(q.state(&id), "queued");
    let error: String = q.raw().query_row("SELECT error FROM jobs WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
    assert_eq!(error, "Worker stopped: the dispatcher shut down during attempt 1 of 2");
    assert!(!alive(pid), "the worker outlived its dispatcher");

    // With no dispatcher, await starts one instead of waiting out its timeout.
    auto_spawn(&q);
    let (v, code) = q.json(&["task", "await", &id, "--timeout", "30000"]);
    assert_eq!((code, v["responseText"].as_str()), (0, Some("attempt 2")), "{v}");
}

#[test]
fn peek_says_a_running_job_has_no_dispatcher_and_gets_it_one() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(serde_json::json!({"jobs": {"maxAttempts": 2, "retryBackoffMs": 0}}));
    q.ok(&["init"]);
    let (mut d, _) = dispatcher(&q, "doomed", None, None);
    let id = q.start(&[r#"if [ "$BATON_ATTEMPT" = 1 ]; then sleep 60; fi; echo "attempt $BATON_ATTEMPT""#]);
    wait_for(30, "the worker runs", || {
        q.scalar_i64(&format!("SELECT count(*) FROM workers WHERE job_id = '{id}' AND pid IS NOT NULL")) == 1
    });
    signal(d.pid(), Signal::SIGKILL);
    wait_for(30, "the dispatcher is gone", || d.exited().is_some());

    // autoSpawn off: peek only says so.
    let (v, _) = q.json(&["task", "peek", &id]);
    assert_eq!(
        (v["status"].as_str(), v["dispatcher"].as_str(), v["stalled"].as_bool()),
        (Some("running"), Some("none"), Some(true)),
        "{v}"
    );

    auto_spawn(&q);
    let (v, _) = q.json(&["task", "peek", &id]);
    assert_eq!(v["dispatcher"], "none", "{v}");
    // The dispatcher peek started recovers the job and runs it again.
    let (v, code) = q.json(&["task", "await", &id, "--timeout", "30000"]);
    assert_eq!((code, v["responseText"].as_str()), (0, Some("attempt 2")), "{v}");
}

/// A small xorshift generator seeded from the clock: the rounds differ from run to run, and a
/// failure prints its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[test]
fn random_kill_9_of_dispatchers_and_workers_loses_nothing_and_ends_nothing_twice() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(serde_json::json!({
        "jobs": {"maxAttempts": 5, "retryBackoffMs": 0, "killGraceMs": 200},
        "dispatcher": {"heartbeatMs": 50, "staleMs": 1000}
    }));
    q.ok(&["init"]);
    audit(&q);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut rng = Rng(seed);
    let mut ids = Vec::new();
    for round in 0..25 {
        for i in 0..6 {
            let ms = rng.next(300);
            ids.push(q.start(&[&format!("sleep 0.{ms:03}; echo r{round}-{i}")]));
        }
        let (mut d, _) = dispatcher(&q, &format!("round-{round}"), None, None);
        std::thread::sleep(Duration::from_millis(50 + rng.next(400)));
        if rng.next(3) == 0 {
            // Kill -9 some workers too.
            let c = q.raw();
            let mut st = c.prepare("SELECT pid FROM workers WHERE state = 'busy' AND pid IS NOT NULL").unwrap();
            let pids: Vec<i32> = st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
            for pid in pids.into_iter().filter(|_| rng.next(2) == 0) {
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.next(200)));
        signal(d.pid(), Signal::SIGKILL);
        wait_for(30, "the dispatcher is gone", || d.exited().is_some());
    }
    let (_last, _) = dispatcher(&q, "last", None, None);
    let mut args = vec!["task", "await"];
    args.extend(ids.iter().map(String::as_str));
    args.extend(["--timeout", "120000"]);
    let o = q.cmd().args(&args).arg("--json").output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let records = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
    assert_eq!(records.len(), ids.len(), "seed {seed}");
    let lost: Vec<&Value> =
        records.iter().filter(|r| !["succeeded", "failed"].contains(&r["status"].as_str().unwrap_or(""))).collect();
    assert!(lost.is_empty(), "seed {seed}: not finished: {lost:?}");
    for r in &records {
        if r["status"] == "failed" {
            // Only a worker killed by the test may fail a job; everything else is retried.
            let e = r["error"].as_str().unwrap_or_default();
            assert!(e.contains("signal 9") || e.contains("Worker lost"), "seed {seed}: {r}");
        }
    }
    let twice = q.scalar_i64(&format!(
        "SELECT count(*) FROM (SELECT id FROM test_audit WHERE new_state IN {TERMINAL} GROUP BY id HAVING count(*) > 1)"
    ));
    assert_eq!(twice, 0, "seed {seed}: a job ended twice");
    let running = q.scalar_i64("SELECT count(*) FROM jobs WHERE state = 'running'");
    assert_eq!(running, 0, "seed {seed}");
}

#[test]
fn a_paused_leader_alone_does_not_stall_status_cancel_or_new_work() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(serde_json::json!({"dispatcher": {"heartbeatMs": 100, "staleMs": 1000}}));
    q.ok(&["init"]);
    let (mut first, _) = dispatcher(&q, "first", None, None);
    let id = q.start(&["sleep 60"]);
    wait_for(30, "the worker runs", || {
        q.scalar_i64(&format!("SELECT count(*) FROM workers WHERE job_id = '{id}' AND pid IS NOT NULL")) == 1
    });
    let pid: i32 = q.raw().query_row("SELECT pid FROM workers WHERE job_id = ?1", [&id], |r| r.get(0)).unwrap();
    signal(first.pid(), Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1500));

    let (s, _) = q.json(&["status"]);
    assert_eq!(s["dispatcher"]["alive"], false, "a leader silent past staleMs is not alive: {s}");
    // Cancel does not wait for the paused leader: it stops the proven worker itself.
    let started = Instant::now();
    let (v, _) = q.json(&["task", "cancel", &id]);
    assert_eq!(v["status"], "canceled", "{v}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(!alive(pid));

    // New work gets a dispatcher that replaces the paused one.
    auto_spawn(&q);
    let fresh = q.start(&["echo fresh"]);
    let (v, code) = q.json(&["task", "await", &fresh, "--timeout", "30000"]);
    assert_eq!((code, v["responseText"].as_str()), (0, Some("fresh")), "{v}");
    assert_ne!(q.lease_pid(), Some(first.pid()));
    signal(first.pid(), Signal::SIGCONT);
    wait_for(30, "the woken leader exits", || first.exited().is_some());
}

#[test]
fn a_write_lock_held_past_the_busy_timeout_does_not_end_the_dispatcher() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(serde_json::json!({
        "storage": {"busyTimeoutMs": 200},
        "dispatcher": {"heartbeatMs": 100}
    }));
    q.ok(&["init"]);
    let (mut d, log) = dispatcher(&q, "patient", None, None);
    wait_for(30, "the dispatcher leads", || q.lease_pid() == Some(d.pid()));
    let id = q.start(&["sleep 0.5; echo done"]);
    wait_for(30, "the worker runs", || q.state(&id) == "running");
    // Another process takes the write lock and keeps it well past the busy timeout, while the
    // worker ends and the dispatcher wants to write its result and renew its lease.
    let holder = q.raw();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(d.exited().is_none(), "the dispatcher died under a held write lock");
    assert_eq!(q.state(&id), "running", "written under a held lock?");
    holder.execute_batch("COMMIT").unwrap();
    drop(holder);

    let (v, code) = q.json(&["task", "await", &id, "--timeout", "30000"]);
    assert_eq!((code, v["responseText"].as_str()), (0, Some("done")), "{v}");
    assert!(d.exited().is_none());
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("database error; retrying").count(), 1, "logged once per episode:\n{text}");
    assert!(text.contains("the database answers again"), "{text}");
}

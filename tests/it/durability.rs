//! Durability under real processes, files and signals: a dispatcher killed with SIGKILL (also
//! between a worker's spawn and its pid record), detached auto-start, concurrent writers, cancel
//! and timeout of process trees that ignore SIGTERM, awaiting from another process, the recursive
//! guard end to end, pruning, SIGTERM drain and a standby taking over.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, Kill, TestQueue, is_dead, live_workers_of, wait_for};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("kill -{sig} {pid}: {e}"));
}

/// `baton run` spawned by the test itself (so it can signal, reap and read its log), with extra
/// environment variables.
fn spawn_dispatcher(q: &TestQueue, name: &str, envs: &[(&str, &str)]) -> (Kill, PathBuf) {
    let log_path = q.dir.path().join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut c = q.cmd();
    c.arg("run").stdout(Stdio::null()).stderr(log);
    for (k, v) in envs {
        c.env(k, v);
    }
    (Kill(c.spawn().expect("spawn baton run")), log_path)
}

/// A `sh -c <script>` isolated to the queue exactly like `TestQueue::cmd`, with the binary's
/// directory first on PATH (so the script can say `baton`).
fn sh(q: &TestQueue, script: &str) -> Command {
    let bin_dir = Path::new(common::BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut c = Command::new("sh");
    q.isolate(&mut c);
    c.arg("-c").arg(script).env("PATH", path);
    c
}

/// Start `n` tasks with the same text from `threads` concurrent loops of CLI calls; returns the
/// ids. Every call must exit 0 with nothing about a busy or locked database on stderr.
fn start_many(q: &TestQueue, n: usize, threads: usize, task: &str) -> Vec<String> {
    let per = n / threads;
    assert_eq!(per * threads, n);
    let results: Vec<Vec<(i32, String, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    (0..per)
                        .map(|_| {
                            let o = q.run(&["task", "start", task]);
                            (
                                o.status.code().unwrap_or(-1),
                                String::from_utf8_lossy(&o.stdout).trim().to_string(),
                                String::from_utf8_lossy(&o.stderr).into_owned(),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ids = Vec::new();
    for (code, out, err) in results.into_iter().flatten() {
        assert_eq!(code, 0, "baton task start failed: {err}");
        let lower = err.to_lowercase();
        assert!(!lower.contains("busy") && !lower.contains("locked"), "contention leaked to stderr: {err}");
        assert_eq!(out.len(), 36, "not an id: {out:?}");
        ids.push(out);
    }
    ids
}

/// Wait until no job is queued-and-due or running.
fn wait_all_terminal(q: &TestQueue, secs: u64) {
    wait_for(secs, "every job terminal", || {
        q.scalar_i64("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')") == 0
    });
}

/// Fields of /proc/PID/stat after the command name (field 3 first).
fn stat_fields(pid: i32) -> Vec<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    s.rfind(')').map(|i| s[i + 2..].split_whitespace().map(String::from).collect()).unwrap_or_default()
}

/// (pgid, session id) of a process.
fn pgid_sid(pid: i32) -> (i32, i32) {
    let f = stat_fields(pid);
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

/// Live members of a process group.
fn group_alive(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| !is_dead(p) && stat_fields(p).get(2).is_some_and(|g| g.parse() == Ok(pgid)))
        .collect()
}

/// Read a pid written by a worker script into a file.
fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fd_links(pid: i32) -> Vec<(String, String)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| {
            let target = std::fs::read_link(e.path()).map(|t| t.display().to_string()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect()
}

/// Wall-clock milliseconds (comparable with the times baton stores).
fn epoch_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn job(q: &TestQueue, id: &str) -> (String, i64, Option<String>) {
    q.raw()
        .query_row("SELECT state, attempt, error FROM jobs WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
}

// 1 ------------------------------------------------------------------------------------------

/// SIGKILL of the leader with 30 short jobs in flight: the next leader recovers every running job
/// (attempt 2), nothing is lost, nothing is left running.
#[test]
fn sigkill_of_the_dispatcher_mid_flight_loses_nothing() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({"limits": {"maxConcurrency": 8}}));
    let ids = start_many(&q, 30, 3, "sleep 0.3");
    let first = q.dispatcher() as i32;
    wait_for(30, "several jobs running", || q.scalar_i64("SELECT count(*) FROM jobs WHERE state = 'running'") >= 4);
    signal(first, Signal::SIGKILL);
    wait_for(30, "first dispatcher dead", || is_dead(first));

    let running: HashSet<String> = {
        let c = q.raw();
        let mut st = c.prepare("SELECT id FROM jobs WHERE state = 'running'").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert!(!running.is_empty(), "no job was running when the dispatcher died");
    assert!(
        q.scalar_i64("SELECT count(*) FROM jobs WHERE state = 'running'") <= 8,
        "more jobs running than limits.maxConcurrency"
    );

    q.dispatcher();
    wait_all_terminal(&q, 60);
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs"), 30, "jobs lost");
    for id in &ids {
        let (state, attempt, error) = job(&q, id);
        assert_eq!(state, "succeeded", "{id}: {error:?}");
        let want = if running.contains(id) { 2 } else { 1 };
        assert_eq!(attempt, want, "{id} (running at the kill: {})", running.contains(id));
    }
    // Every lost attempt left a worker row marked error (or had none yet), none still busy.
    assert_eq!(q.scalar_i64("SELECT count(*) FROM workers WHERE state = 'busy'"), 0);
    let live = live_workers_of(&q.db);
    assert!(live.is_empty(), "worker processes still alive: {live:?}");
}

// 2 ------------------------------------------------------------------------------------------

/// Lines `start|end <pid> <attempt> <ns>` a worker appended to its file.
fn marks(path: &Path) -> Vec<(String, i32, i64, u128)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 4 {
                return None;
            }
            Some((f[0].to_string(), f[1].parse().ok()?, f[2].parse().ok()?, f[3].parse().ok()?))
        })
        .collect()
}

/// SIGKILL between a worker's spawn and its `workers` row (test hook `BATON_TEST_SPAWN_DELAY_MS`):
/// recovery finds the orphan by its environment tag and kills it before attempt 2 starts.
#[test]
fn sigkill_between_spawn_and_pid_record_kills_the_orphan_before_the_retry() {
    if !common::test_hooks("the spawn window") {
        return;
    }
    let _g = common::heavy();
    let q = TestQueue::new();
    let marks_dir = q.dir.path().join("marks");
    std::fs::create_dir_all(&marks_dir).unwrap();
    let d = marks_dir.display();
    let task = format!(
        "echo \"start $$ $BATON_ATTEMPT $(date +%s%N)\" >> {d}/$BATON_TASK_ID; \
         if [ \"$BATON_ATTEMPT\" = 1 ]; then sleep 10; else sleep 1; fi; \
         echo \"end $$ $BATON_ATTEMPT $(date +%s%N)\" >> {d}/$BATON_TASK_ID"
    );
    let id = q.start(&[&task]);
    let file = marks_dir.join(&id);

    let (mut first, _) = spawn_dispatcher(&q, "first", &[("BATON_TEST_SPAWN_DELAY_MS", "3000")]);
    wait_for(30, "attempt 1 started", || marks(&file).iter().any(|m| m.0 == "start" && m.2 == 1));
    // The window: the worker runs, its row does not exist yet.
    assert_eq!(
        q.raw().query_row("SELECT count(*) FROM workers WHERE job_id = ?1", [&id], |r| r.get::<_, i64>(0)).unwrap(),
        0,
        "the worker row exists already: the kill would not land in the window"
    );
    assert_eq!(job(&q, &id).0, "running");
    signal(first.pid(), Signal::SIGKILL);
    wait_for(30, "first dispatcher exited", || first.exited().is_some());
    let orphan = marks(&file)[0].1;
    assert!(!is_dead(orphan), "the orphan worker {orphan} should still be running (attempt 1 sleeps 10 s)");

    q.dispatcher();
    // Poll: whenever attempt 2's start line is visible, the orphan must already be dead.
    wait_for(30, "attempt 2 started", || {
        let second_started = marks(&file).iter().any(|m| m.0 == "start" && m.2 == 2);
        if second_started {
            assert!(is_dead(orphan), "attempt 2 started while the orphan {orphan} of attempt 1 was alive");
        }
        second_started
    });
    wait_all_terminal(&q, 30);
    let (state, attempt, error) = job(&q, &id);
    assert_eq!((state.as_str(), attempt), ("succeeded", 2), "{error:?}");
    let m = marks(&file);
    assert!(
        !m.iter().any(|m| m.0 == "end" && m.2 == 1),
        "attempt 1 ran to its end: the orphan was not killed by recovery: {m:?}"
    );
    let s2 = m.iter().find(|m| m.0 == "start" && m.2 == 2).unwrap();
    let e2 = m.iter().find(|m| m.0 == "end" && m.2 == 2).expect("attempt 2 ended");
    assert_ne!(s2.1, orphan);
    assert!(e2.3 > s2.3);
    assert_eq!(m.iter().filter(|m| m.0 == "start").count(), 2, "{m:?}");
    assert!(is_dead(orphan));
    assert!(live_workers_of(&q.db).is_empty());
}

// 3 ------------------------------------------------------------------------------------------

/// `id=$(baton task start ...)` returns at once although it auto-started a dispatcher, which
/// holds none of its starter's descriptors and outlives the starter's process group.
#[test]
fn auto_started_dispatcher_is_detached_and_survives_its_starters_group() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({"autoSpawn": true}));
    let started = Instant::now();
    let mut child = sh(&q, r#"id=$(baton task start "sleep 1; echo hi"); echo "$id""#)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = child.id() as i32;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Readers on threads: if the dispatcher inherited the test's pipes, EOF never comes.
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let _ = tx.send(("out", s));
    });
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let _ = tx2.send(("err", s));
    });
    let mut status = None;
    wait_for(10, "`id=$(baton task start ...)` to return", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let returned_ms = epoch_ms();
    let mut outputs = HashMap::new();
    for _ in 0..2 {
        let (which, text) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the test's pipes stayed open after the shell exited: the dispatcher inherited them");
        outputs.insert(which, text);
    }
    let elapsed = started.elapsed();
    assert!(status.unwrap().success(), "sh failed: {}", outputs["err"]);
    assert!(elapsed < Duration::from_secs(5), "task start took {elapsed:?}: it waited for the job or the dispatcher");
    let id = outputs["out"].trim().to_string();
    assert_eq!(id.len(), 36, "not an id: {:?} (stderr {})", outputs["out"], outputs["err"]);

    // Kill whatever is left of the starter's process group.
    match killpg(Pid::from_raw(group), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => panic!("killpg: {e}"),
    }

    wait_for(30, "the auto-started dispatcher leads", || q.lease_pid().is_some_and(|p| !is_dead(p)));
    let pid = q.lease_pid().unwrap();
    let (pgid, sid) = pgid_sid(pid);
    assert_eq!(sid, pid, "the dispatcher is not a session leader (setsid)");
    assert_ne!(pgid, group, "the dispatcher is in its starter's process group");

    let (v, code) = q.json(&["task", "await", &id, "--timeout", "30000"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["responseText"], "hi");
    let finished = q.scalar_i64(&format!("SELECT finished_ms FROM jobs WHERE id = '{id}'"));
    assert!(returned_ms < finished, "task start returned only after the job had finished");
    assert!(!is_dead(pid), "the dispatcher died");

    // Its descriptors: stdio on /dev/null, nothing inherited.
    let links = fd_links(pid);
    for fd in ["0", "1", "2"] {
        let t = links.iter().find(|(n, _)| n == fd).map(|(_, t)| t.as_str());
        assert_eq!(t, Some("/dev/null"), "fd {fd} of the dispatcher: {links:?}");
    }
    let mine: HashSet<String> = fd_links(std::process::id() as i32)
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| t.starts_with("pipe:") || t.starts_with("socket:"))
        .collect();
    let state_dir = q.project.join(".baton").display().to_string();
    for (fd, target) in &links {
        assert!(!mine.contains(target), "fd {fd} of the dispatcher is the test's {target}");
        let own = target == "/dev/null"
            || target.starts_with(&format!("{state_dir}/"))
            || target.starts_with("socket:")
            || target.starts_with("anon_inode:");
        assert!(own, "fd {fd} of the dispatcher is {target}, which it did not open itself: {links:?}");
    }
}

// 4 ------------------------------------------------------------------------------------------

/// Four concurrent CLI loops write 400 jobs while a dispatcher claims them: no busy/locked
/// errors, every job runs exactly once.
#[test]
fn four_concurrent_writers_four_hundred_jobs_each_claimed_once() {
    let _g = common::heavy();
    let q = TestQueue::new();
    q.ok(&["init"]);
    q.dispatcher();
    let ids = start_many(&q, 400, 4, "true");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 400);
    wait_all_terminal(&q, 120);
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs"), 400);
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs WHERE state = 'succeeded'"), 400);
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs WHERE attempt <> 1"), 0, "a job ran twice");
    assert_eq!(
        q.scalar_i64("SELECT count(*) FROM jobs j WHERE (SELECT count(*) FROM workers w WHERE w.job_id = j.id) <> 1"),
        0,
        "a job without exactly one worker row"
    );
    assert_eq!(q.scalar_i64("SELECT count(*) FROM workers"), 400);
}

// 5 ------------------------------------------------------------------------------------------

/// Cancel of a worker (and grandchild) ignoring SIGTERM: SIGKILL after the grace, both dead
/// when the cancel returns (exit 3), error carries the reason.
#[test]
fn cancel_kills_a_tree_that_ignores_sigterm() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let d = q.dir.path().display().to_string();
    let script = q.script(
        "stubborn.sh",
        &format!(
            "trap '' TERM\nsh -c \"trap '' TERM; sleep 300\" &\necho $! > {d}/grandchild.pid\necho $$ > {d}/leader.pid\nwait"
        ),
    );
    q.dispatcher();
    let id = q.start(&[&script.display().to_string()]);
    let (gc_file, leader_file) = (q.dir.path().join("grandchild.pid"), q.dir.path().join("leader.pid"));
    wait_for(30, "the worker wrote its pids", || {
        leader_file.exists() && std::fs::read_to_string(&leader_file).is_ok_and(|s| s.ends_with('\n'))
    });
    let (grandchild, leader) = (read_pid(&gc_file), read_pid(&leader_file));
    assert_eq!(job(&q, &id).0, "running");
    assert!(!is_dead(grandchild) && !is_dead(leader));
    let group = pgid_sid(leader).0;
    assert_eq!(pgid_sid(grandchild).0, group, "the grandchild is in the worker's group");

    let o = q.run(&["task", "cancel", &id, "--reason", "stop it"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(is_dead(leader), "the leader {leader} survived the cancel");
    assert!(is_dead(grandchild), "the grandchild {grandchild} survived the cancel");
    assert!(group_alive(group).is_empty(), "group {group} alive after the cancel: {:?}", group_alive(group));
    let (state, _, error) = job(&q, &id);
    assert_eq!(state, "canceled");
    assert!(error.as_deref().is_some_and(|e| e.contains("stop it")), "{error:?}");
    assert!(live_workers_of(&q.db).is_empty());
}

/// A cancel asked while the dispatcher is alive but paused, which then dies: the cancel does
/// the kill itself rather than waiting for an owner that is gone.
#[test]
fn cancel_finishes_the_job_when_its_dispatcher_dies_meanwhile() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let d = q.dispatcher() as i32;
    let id = q.start(&["sleep 300"]);
    wait_for(30, "the worker", || !live_workers_of(&q.db).is_empty());
    let worker = live_workers_of(&q.db)[0];
    signal(d, Signal::SIGSTOP);
    let cancel = q.cmd().args(["task", "cancel", &id, "--reason", "gone"]).stdout(Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(d, Signal::SIGKILL);
    let o = cancel.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "canceled: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(job(&q, &id).0, "canceled");
    wait_for(30, "the worker to be gone", || is_dead(worker));
}

// 6 ------------------------------------------------------------------------------------------

/// A job past its timeout fails with the exact message and its whole group is gone.
#[test]
fn timeout_kills_the_whole_group() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let d = q.dir.path().display().to_string();
    q.dispatcher();
    let task = format!("sleep 30 & echo $! > {d}/gc.pid; echo $$ > {d}/leader.pid; sleep 30");
    let id = q.start(&["--timeout", "1000", &task]);
    let leader_file = q.dir.path().join("leader.pid");
    wait_for(30, "the worker wrote its pids", || {
        std::fs::read_to_string(&leader_file).is_ok_and(|s| s.ends_with('\n'))
    });
    let (grandchild, leader) = (read_pid(&q.dir.path().join("gc.pid")), read_pid(&leader_file));
    wait_for(30, "the job ended", || job(&q, &id).0 != "running");
    let (state, _, error) = job(&q, &id);
    assert_eq!(state, "failed");
    assert_eq!(error.as_deref(), Some("Task timed out after 1000ms"));
    assert!(is_dead(leader) && is_dead(grandchild), "leader {leader} or grandchild {grandchild} alive");
    assert!(group_alive(leader).is_empty(), "group {leader} alive: {:?}", group_alive(leader));
}

// 7 ------------------------------------------------------------------------------------------

/// `task await` from another process: the full record, a timed-out wait (124, job untouched),
/// unknown ids (4), several ids in input order.
#[test]
fn await_from_another_process() {
    let _g = common::heavy();
    let q = TestQueue::new();
    q.dispatcher();
    let a = q.start(&["echo awaited-text"]);
    let (v, code) = q.json(&["task", "await", &a, "--timeout", "30000"]);
    assert_eq!(code, 0, "{v}");
    let obj = v.as_object().expect("one object for one id");
    for k in common::RECORD_KEYS {
        assert!(obj.contains_key(k), "missing key {k}: {v}");
    }
    assert_eq!(v["id"], a.as_str());
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["responseText"], "awaited-text");
    assert_eq!(v["exitCode"], 0);
    assert_eq!(v["attempt"], 1);
    assert!(v["finishedAt"].is_string() && v["durationMs"].is_i64(), "{v}");
    assert!(obj.get("timedOut").is_none_or(|t| t == false), "{v}");

    // Timed out: exit 124, still running afterwards.
    let slow = q.start(&["sleep 30"]);
    wait_for(30, "the slow job running", || job(&q, &slow).0 == "running");
    let t0 = Instant::now();
    let (v, code) = q.json(&["task", "await", &slow, "--timeout", "1000"]);
    assert!(t0.elapsed() < Duration::from_secs(10), "await --timeout 1000 took {:?}", t0.elapsed());
    assert_eq!(code, 124, "{v}");
    assert_eq!(v["timedOut"], true, "{v}");
    assert_eq!(v["status"], "running");
    assert_eq!(job(&q, &slow).0, "running");

    // Unknown ids.
    let unknown = "0badc0de-0000-4000-8000-000000000000";
    let (v, code) = q.json(&["task", "await", unknown, "--timeout", "1000"]);
    assert_eq!(code, 4, "{v}");
    assert_eq!(v, json!({"id": unknown, "status": "unknown"}));

    // Two ids: an array in input order.
    let b = q.start(&["echo second"]);
    let (v, code) = q.json(&["task", "await", &b, &a, "--timeout", "30000"]);
    assert_eq!(code, 0, "{v}");
    let arr = v.as_array().expect("an array for two ids");
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["id"], b.as_str());
    assert_eq!(arr[1]["id"], a.as_str());
    assert_eq!(arr[0]["responseText"], "second");

    let o = q.run(&["task", "cancel", &slow]);
    assert_eq!(o.status.code(), Some(0));
}

// 8 ------------------------------------------------------------------------------------------

/// A worker cannot start tasks (BATON_WORKER guard); outside a worker the same command works.
#[test]
fn recursive_guard_end_to_end() {
    let _g = common::heavy();
    let q = TestQueue::new();
    q.dispatcher();
    let nested = format!("'{}' task start 'echo nested'", common::BIN);
    let id = q.start(&[&nested]);
    let (v, code) = q.json(&["task", "await", &id, "--timeout", "30000"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["exitCode"], 2, "{v}");
    assert!(v["outputTail"].as_str().is_some_and(|t| t.contains("BATON_WORKER")), "{v}");
    let err_log = q.project.join(format!(".baton/logs/{id}/1.err"));
    let err = std::fs::read_to_string(&err_log).unwrap();
    assert!(err.contains("BATON_WORKER"), "{err}");
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs"), 1, "a nested job was written");

    // Outside a worker, the same command works.
    let o = sh(&q, &nested).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let other = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let (v, code) = q.json(&["task", "await", &other, "--timeout", "30000"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["responseText"], "nested");
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs"), 2);
}

// 9 ------------------------------------------------------------------------------------------

/// `baton prune` keeps the newest `maxJobs` finished jobs, never a queued one, removes the logs
/// of the deleted ones and leaves no free pages.
#[test]
fn prune_keeps_max_jobs_removes_logs_and_frees_pages() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({"retention": {"minAgeMs": 0, "maxJobs": 200}}));
    q.ok(&["init"]);
    q.dispatcher();
    let ids = start_many(&q, 300, 4, "true");
    wait_all_terminal(&q, 120);
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs WHERE state = 'succeeded'"), 300);
    let logs = q.project.join(".baton/logs");
    assert!(ids.iter().all(|id| logs.join(id).is_dir()), "every job that ran has its log dir");
    let queued = q.start(&["--delay", "600000", "true"]);

    let out = q.ok(&["prune"]);
    assert!(out.contains("Deleted 100 finished task(s)"), "{out}");
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs WHERE finished_ms IS NOT NULL"), 200);
    assert_eq!(q.state(&queued), "queued");
    let kept: HashSet<String> = {
        let c = q.raw();
        let mut st = c.prepare("SELECT id FROM jobs").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(kept.len(), 201);
    let mut deleted = 0;
    for id in &ids {
        if kept.contains(id) {
            assert!(logs.join(id).is_dir(), "log dir of kept job {id} removed");
        } else {
            deleted += 1;
            assert!(!logs.join(id).exists(), "log dir of pruned job {id} left behind");
        }
    }
    assert_eq!(deleted, 100);
    assert_eq!(
        q.scalar_i64("SELECT count(*) FROM workers WHERE job_id NOT IN (SELECT id FROM jobs)"),
        0,
        "worker rows of pruned jobs left"
    );
    assert_eq!(q.scalar_i64("PRAGMA freelist_count"), 0);

    // Files a crash left without a row (more than one lookup's worth) are swept; those of a
    // kept job, a young attachments directory and names that are not ids stay.
    let orphans: Vec<String> = (0..1200).map(|i| format!("00000000-0000-4000-8000-{i:012}")).collect();
    for id in &orphans {
        std::fs::create_dir_all(logs.join(id)).unwrap();
        std::fs::write(logs.join(id).join("1.out"), "left over").unwrap();
    }
    let attachments = q.project.join(".baton/attachments");
    let young = "00000000-0000-4000-8000-999999999999";
    std::fs::create_dir_all(attachments.join(young)).unwrap();
    std::fs::create_dir_all(attachments.join(&orphans[0])).unwrap();
    let touched = Command::new("touch").args(["-d", "2 hours ago"]).arg(attachments.join(&orphans[0])).status();
    assert!(touched.unwrap().success());
    std::fs::write(logs.join("not-an-id.log"), "x").unwrap();
    let keep = kept.iter().find(|id| logs.join(id).is_dir()).unwrap().clone();
    let out = q.ok(&["prune"]);
    assert!(out.contains("Deleted 0 finished task(s); swept 1200 orphaned file set(s)"), "{out}");
    assert!(orphans.iter().all(|id| !logs.join(id).exists()), "an orphaned log dir left");
    assert!(!attachments.join(&orphans[0]).exists(), "orphaned attachments left");
    assert!(attachments.join(young).is_dir(), "a young attachments dir (its row may be coming) swept");
    assert!(logs.join("not-an-id.log").exists() && logs.join(&keep).is_dir());
}

// 10 -----------------------------------------------------------------------------------------

/// SIGTERM: the dispatcher lets its running job finish, records it, then exits 0.
#[test]
fn sigterm_drains_the_running_job() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let (mut d, log) = spawn_dispatcher(&q, "drain", &[]);
    let id = q.start(&["sleep 1; echo done"]);
    wait_for(30, "the worker spawned", || {
        q.raw().query_row("SELECT count(*) FROM workers WHERE job_id = ?1", [&id], |r| r.get::<_, i64>(0)).unwrap() == 1
    });
    signal(d.pid(), Signal::SIGTERM);
    let mut status = None;
    wait_for(10, "the dispatcher exits after draining", || {
        status = d.exited();
        status.is_some()
    });
    let exited_ms = epoch_ms();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(status.unwrap().success(), "dispatcher exit {status:?}: {log}");
    let (state, _, error): (String, i64, Option<String>) = job(&q, &id);
    assert_eq!(state, "succeeded", "{error:?}\n{log}");
    let finished: i64 = q.scalar_i64(&format!("SELECT finished_ms FROM jobs WHERE id = '{id}'"));
    assert!(finished <= exited_ms, "the dispatcher exited before the job finished");
    assert!(exited_ms - finished < 3000, "exit {}ms after the job finished", exited_ms - finished);
    let v: Value = q.json(&["task", "peek", &id]).0;
    assert_eq!(v["responseText"], "done");
}

/// SIGINT to a busy dispatcher (thousands of short jobs, so the loop is mostly claiming and
/// writing rather than waiting): it stops claiming, drains and exits 0, leaving the rest queued.
/// A signal arriving between two waits was once lost, and the dispatcher ran on.
#[test]
fn sigint_stops_a_busy_dispatcher() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({"runner": ["/bin/true"], "limits": {"maxConcurrency": 4}}));
    let seed = q.start(&["seed"]);
    q.copy_queued(&seed, 5000);
    let succeeded = || q.scalar_i64("SELECT count(*) FROM jobs WHERE state = 'succeeded'");
    let (mut d, log) = spawn_dispatcher(&q, "busy", &[]);
    wait_for(60, "the dispatcher busy", || succeeded() >= 100);
    signal(d.pid(), Signal::SIGINT);
    let mut status = None;
    wait_for(15, "the dispatcher exits on SIGINT", || {
        status = d.exited();
        status.is_some()
    });
    let log = std::fs::read_to_string(log).unwrap();
    assert!(status.unwrap().success(), "dispatcher exit {status:?}: {log}");
    assert!(log.contains("draining"), "{log}");
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs WHERE state = 'running'"), 0, "{log}");
    assert!(q.scalar_i64("SELECT count(*) FROM jobs WHERE state = 'queued'") > 0, "it ran on to the end: {log}");
}

// 11 -----------------------------------------------------------------------------------------

/// A second `baton run` stands by and leads (new epoch) once the first is SIGKILLed.
#[test]
fn standby_takes_over_after_sigkill() {
    let _g = common::heavy();
    let q = TestQueue::new();
    q.ok(&["init"]);
    let (mut first, _) = spawn_dispatcher(&q, "first", &[]);
    wait_for(30, "the first dispatcher leads", || q.lease_pid() == Some(first.pid()));
    let (second, second_log) = spawn_dispatcher(&q, "second", &[]);
    wait_for(30, "the second stands by", || {
        std::fs::read_to_string(&second_log).is_ok_and(|l| l.contains("standing by"))
    });
    assert_eq!(q.lease_pid(), Some(first.pid()), "the standby took the lease while the leader lived");
    let epoch_before = q.scalar_i64("SELECT epoch FROM dispatcher_lease");

    signal(first.pid(), Signal::SIGKILL);
    wait_for(30, "first dispatcher exited", || first.exited().is_some());
    wait_for(30, "the standby leads", || q.lease_pid() == Some(second.pid()));
    let epoch_after = q.scalar_i64("SELECT epoch FROM dispatcher_lease");
    assert!(epoch_after > epoch_before, "epoch {epoch_before} -> {epoch_after}");

    let id = q.start(&["echo taken-over"]);
    let (v, code) = q.json(&["task", "await", &id, "--timeout", "30000"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["responseText"], "taken-over");
    assert_eq!(q.scalar_i64(&format!("SELECT epoch FROM jobs WHERE id = '{id}'")), epoch_after);
    let owner_matches = q.scalar_i64(&format!(
        "SELECT count(*) FROM workers w JOIN dispatcher_lease l ON w.owner = l.owner AND w.epoch = l.epoch \
         WHERE w.job_id = '{id}'"
    ));
    assert_eq!(owner_matches, 1, "the job's worker was not spawned by the new leader");
    assert!(!is_dead(second.pid()));
}

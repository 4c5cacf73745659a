//! Server workers with real processes: `tests/fixtures/fake-acp-agent.py` speaks the Agent
//! Client Protocol as an agent and appends its pid to `spawns.txt` in the project directory at
//! every start, so the tests count spawns both in the workers table and by the worker's own
//! side effect.

use crate::common::{self, TestQueue, is_dead, wait_for};
use serde_json::{Value, json};

pub const AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake-acp-agent.py");

pub fn server_profile(id: &str) -> Value {
    json!({
        "id": id, "name": id, "model": "m", "purpose": "p", "whenToUse": "w",
        "kind": "server", "command": ["python3", AGENT], "env": {"FAKE_ACP_SPAWNS": "spawns.txt"}
    })
}

/// A queue with server profiles `srv` and `other`, a low spawn rate limit, and `extra` merged in.
pub fn queue(extra: Value) -> TestQueue {
    let mut cfg = json!({
        "profiles": [server_profile("srv"), server_profile("other")],
        "limits": {"spawnRateLimitMs": 50}
    });
    merge(&mut cfg, extra);
    TestQueue::with_overrides(cfg)
}

pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

pub fn spawns(q: &TestQueue) -> Vec<i32> {
    std::fs::read_to_string(q.project.join("spawns.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// (state, pid, error) of every server worker row, oldest first (none before the queue exists).
pub fn server_rows(q: &TestQueue) -> Vec<(String, Option<i64>, Option<String>)> {
    let c = q.raw();
    let Ok(mut st) = c.prepare("SELECT state, pid, error FROM workers WHERE kind = 'server' ORDER BY seq") else {
        return Vec::new();
    };
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

pub fn await_one(q: &TestQueue, id: &str) -> Value {
    q.json(&["task", "await", id, "--timeout", "60000"]).0
}

pub fn kill9(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
}

#[test]
fn eight_starts_from_four_processes_share_one_spawn() {
    let _g = common::heavy();
    let q = queue(json!({}));
    q.dispatcher();
    // Four client processes (sessions), each starting two tasks at once: eight concurrent starts.
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|p| {
                let q = &q;
                s.spawn(move || {
                    let session = format!("client-{p}");
                    let kids: Vec<_> = (0..2)
                        .map(|i| {
                            q.cmd()
                                .args([
                                    "task",
                                    "start",
                                    "--worker",
                                    "srv",
                                    "--session",
                                    &session,
                                    &format!("job-{p}-{i}"),
                                ])
                                .stdout(std::process::Stdio::piped())
                                .spawn()
                                .unwrap()
                        })
                        .collect();
                    kids.into_iter()
                        .map(|k| {
                            let o = k.wait_with_output().unwrap();
                            assert!(o.status.success());
                            String::from_utf8(o.stdout).unwrap().trim().to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids.len(), 8);
    let mut answered_by = std::collections::BTreeSet::new();
    for id in &ids {
        let v = await_one(&q, id);
        assert_eq!(v["status"], "succeeded", "{v}");
        let text = v["responseText"].as_str().unwrap();
        assert!(text.starts_with(v["message"].as_str().unwrap()), "{text}");
        answered_by.insert(text.rsplit(' ').next().unwrap().to_string());
        assert_eq!((v["tokens"].as_i64(), v["inputTokens"].as_i64()), (Some(335), Some(330)), "{v}");
    }
    let pids = spawns(&q);
    assert_eq!(pids.len(), 1, "exactly one spawn: {pids:?}");
    assert_eq!(answered_by.into_iter().collect::<Vec<_>>(), [pids[0].to_string()], "all answered by it");
    let rows = server_rows(&q);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].1), ("ready", Some(i64::from(pids[0]))));
    // In turn: no two jobs of the profile overlapped.
    let c = q.raw();
    let overlaps: i64 = c
        .query_row(
            "SELECT count(*) FROM jobs a JOIN jobs b ON a.id < b.id
              WHERE a.started_ms < b.finished_ms AND b.started_ms < a.finished_ms",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(overlaps, 0);
    // The workers view shows it with the spec's columns.
    let table = q.ok(&["workers"]);
    assert!(table.contains("| Worker ") && table.contains("| Last activity"), "{table}");
    assert!(table.contains("| srv ") && table.contains("| server ") && table.contains("| ready "), "{table}");
    let (v, _) = q.json(&["task", "list", "--view", "workers"]);
    assert_eq!(v[0]["kind"], "server", "{v}");
}

#[test]
fn a_server_worker_killed_mid_job_fails_the_job_and_is_replaced_once() {
    let _g = common::heavy();
    let q = queue(json!({}));
    q.dispatcher();
    let id = q.start(&["--worker", "srv", "sleep 300 then answer"]);
    wait_for(30, "the worker to be busy", || server_rows(&q).first().is_some_and(|r| r.0 == "busy"));
    let first = spawns(&q)[0];
    kill9(first);
    let v = await_one(&q, &id);
    assert_eq!((v["status"].as_str(), v["error"].as_str()), (Some("failed"), Some("Worker killed by signal 9")), "{v}");
    assert_eq!(v["exitCode"], 137);
    let rows = server_rows(&q);
    assert_eq!((rows[0].0.as_str(), rows[0].2.as_deref()), ("error", Some("It was killed by signal 9")));
    // The next two jobs: one new worker (a new row), spawned once.
    for text in ["after the kill", "and again"] {
        let v = await_one(&q, &q.start(&["--worker", "srv", text]));
        assert_eq!(v["status"], "succeeded", "{v}");
    }
    let pids = spawns(&q);
    assert_eq!(pids.len(), 2, "{pids:?}");
    let rows = server_rows(&q);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[1].0.as_str(), rows[1].1), ("ready", Some(i64::from(pids[1]))));
}

#[test]
fn a_killed_dispatcher_loses_the_job_to_recovery_and_its_worker_is_stopped() {
    let _g = common::heavy();
    let q = queue(json!({}));
    let d = q.dispatcher();
    let id = q.start(&["--worker", "srv", "sleep 3 then answer"]);
    wait_for(30, "the worker to be busy", || server_rows(&q).first().is_some_and(|r| r.0 == "busy"));
    let old = spawns(&q)[0];
    kill9(d as i32);
    // A new dispatcher recovers: the job was lost and is retried on a new worker.
    q.dispatcher();
    let v = await_one(&q, &id);
    assert_eq!((v["status"].as_str(), v["attempt"].as_i64()), (Some("succeeded"), Some(2)), "{v}");
    wait_for(30, "the old worker to be gone", || is_dead(old));
    let pids = spawns(&q);
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(v["responseText"].as_str().unwrap().ends_with(&pids[1].to_string()), "{v}");
    let rows = server_rows(&q);
    assert_eq!((rows[0].0.as_str(), rows[0].2.as_deref()), ("error", Some("Worker lost: its dispatcher went away")));
    assert_eq!(rows[1].0, "ready");
}

#[test]
fn spawn_limits_fail_server_jobs_with_the_spec_messages() {
    let _g = common::heavy();
    // One live worker in the whole queue: a busy oneshot worker leaves no room for a server.
    let q = queue(json!({"limits": {"maxWorkers": 1}}));
    q.dispatcher();
    let blocker = q.start(&["sleep 30"]);
    wait_for(30, "the oneshot worker", || q.state(&blocker) == "running");
    wait_for(30, "its row", || q.scalar_i64("SELECT count(*) FROM workers WHERE state = 'busy'") == 1);
    let v = await_one(&q, &q.start(&["--worker", "srv", "hello"]));
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"], "Failed to start worker: Worker limit reached (max: 1)");
    assert!(spawns(&q).is_empty(), "nothing was spawned");
    q.run(&["task", "cancel", &blocker]);

    // One live worker per session: the session's busy oneshot worker leaves no room.
    let q = queue(json!({"limits": {"maxWorkersPerSession": 1}}));
    q.dispatcher();
    let blocker = q.start(&["--session", "s1", "sleep 30"]);
    wait_for(30, "its row", || q.scalar_i64("SELECT count(*) FROM workers WHERE state = 'busy'") == 1);
    let v = await_one(&q, &q.start(&["--session", "s1", "--worker", "srv", "hello"]));
    assert_eq!(v["error"], "Failed to start worker: Session worker limit reached (max: 1)", "{v}");
    // Another session has room.
    let v = await_one(&q, &q.start(&["--session", "s2", "--worker", "srv", "hello"]));
    assert_eq!(v["status"], "succeeded", "{v}");
    q.run(&["task", "cancel", &blocker]);
}

#[test]
fn server_spawns_are_rate_limited() {
    let _g = common::heavy();
    let q = queue(json!({"limits": {"spawnRateLimitMs": 1500}}));
    let (_, d) = q.dispatcher_with_log();
    let a = q.start(&["--worker", "srv", "a"]);
    let b = q.start(&["--worker", "other", "b"]);
    for id in [&a, &b] {
        assert_eq!(await_one(&q, id)["status"], "succeeded");
    }
    let gap = q.scalar_i64("SELECT max(started_ms) - min(started_ms) FROM workers WHERE kind = 'server'");
    assert!(gap >= 1500, "server spawns {gap} ms apart");
    let log = std::fs::read_to_string(&d).unwrap();
    assert!(log.contains("Rate limited: wait 1500ms between spawns"), "{log}");
}

#[test]
fn a_worker_stopped_before_its_registration_completes_is_shut_down() {
    if !common::test_hooks("the spawn window") {
        return;
    }
    let _g = common::heavy();
    let q = queue(json!({}));
    // Widen the window between the spawn and the pid record.
    let child = q.cmd().arg("run").env("BATON_TEST_SPAWN_DELAY_MS", "1500").spawn().unwrap();
    let _d = common::Kill(child);
    let id = q.start(&["--worker", "srv", "hello"]);
    wait_for(30, "the spawn", || !spawns(&q).is_empty());
    // The registration is withdrawn meanwhile (as a stop of a starting worker would).
    q.raw().execute("UPDATE workers SET state = 'stopped' WHERE kind = 'server' AND state = 'starting'", []).unwrap();
    let v = await_one(&q, &id);
    assert_eq!(v["status"], "failed", "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("was stopped before its registration completed; its process was shut down"), "{e}");
    let pid = spawns(&q)[0];
    wait_for(30, "the orphan to be dead", || is_dead(pid));
    // The next job gets a worker of its own.
    let v = await_one(&q, &q.start(&["--worker", "srv", "next"]));
    assert_eq!(v["status"], "succeeded", "{v}");
}

#[test]
fn protocol_violations_fail_the_job_and_replace_the_worker() {
    let _g = common::heavy();
    let q = queue(json!({}));
    let d = q.dispatcher();
    let cases = [
        ("GARBAGE", "not JSON"),
        ("BADRPC", "not a JSON-RPC 2.0 message"),
        ("OTHER", "an update for session \"sess-unknown\", which baton never opened"),
        ("HUGE", "a line over 1048576 bytes"),
        ("EXIT", ""),
        ("FAIL", ""),
    ];
    for (i, (prompt, expect)) in cases.iter().enumerate() {
        let v = await_one(&q, &q.start(&["--worker", "srv", prompt]));
        assert_eq!(v["status"], "failed", "{v}");
        let e = v["error"].as_str().unwrap();
        match *prompt {
            "EXIT" => assert_eq!(e, "Worker exited with code 3"),
            "FAIL" => assert_eq!(e, "Agent reported an error: the agent refused to go on (stop reason refusal)"),
            _ => assert!(e.starts_with("Protocol violation by the server worker: ") && e.contains(expect), "{e}"),
        }
        // Each broken worker is dead and its row ended; a FAIL answer keeps the worker.
        let pids = spawns(&q);
        assert_eq!(pids.len(), i + 1, "{prompt}: {pids:?}");
        if *prompt != "FAIL" {
            wait_for(30, "the broken worker to be gone", || is_dead(pids[i]));
            assert_eq!(server_rows(&q)[i].0, "error", "{prompt}");
        }
    }
    assert!(!is_dead(d as i32), "the dispatcher lives on");
    let v = await_one(&q, &q.start(&["--worker", "srv", "fine"]));
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(spawns(&q).len(), 6, "the worker that answered FAIL served this job too");
}

#[test]
fn workers_stop_stops_server_workers_gracefully() {
    let _g = common::heavy();
    let q = queue(json!({}));
    q.dispatcher();
    for p in ["srv", "other"] {
        assert_eq!(await_one(&q, &q.start(&["--worker", p, "warm"]))["status"], "succeeded");
    }
    let pids = spawns(&q);
    let id: String = q
        .raw()
        .query_row("SELECT id FROM workers WHERE profile = 'srv' AND state = 'ready'", [], |r| r.get(0))
        .unwrap();
    // The other worker is busy with a long task: stopping srv does not wait for it.
    let busy = q.start(&["--worker", "other", "sleep 60 then answer"]);
    wait_for(30, "the other worker busy", || q.state(&busy) == "running");
    // By id prefix.
    let out = q.ok(&["workers", "stop", &id[..8]]);
    assert!(out.contains(&id) && out.contains("stopped"), "{out}");
    wait_for(10, "the srv worker to be gone", || is_dead(pids[0]));
    assert!(!is_dead(pids[1]));
    let log = std::fs::read_to_string(q.project.join(".baton/logs/workers").join(format!("{id}.log"))).unwrap();
    assert!(log.contains("stdin closed"), "it saw its stdin close first: {log}");
    // Unknown ids are an error that names them.
    let o = q.run(&["workers", "stop", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("No live worker \"nope\""));
    // --all, with a busy worker: its job is canceled with the reason.
    let (v, _) = q.json(&["workers", "stop", "--all"]);
    assert_eq!(v[0]["status"], "stopped", "{v}");
    wait_for(30, "the other worker to be gone", || is_dead(pids[1]));
    let v = await_one(&q, &busy);
    assert_eq!(
        (v["status"].as_str(), v["error"].as_str()),
        (Some("canceled"), Some("Canceled: Worker stopped")),
        "{v}"
    );
    assert_eq!(q.ok(&["workers"]).trim(), "No workers are currently registered.");
}

#[test]
fn configured_workers_start_with_the_dispatcher() {
    let _g = common::heavy();
    let q = queue(json!({"workers": ["srv"]}));
    q.dispatcher();
    wait_for(30, "the configured worker to be ready", || server_rows(&q).first().is_some_and(|r| r.0 == "ready"));
    assert_eq!(spawns(&q).len(), 1);
    let v = await_one(&q, &q.start(&["--worker", "srv", "hello"]));
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(spawns(&q).len(), 1, "the job used the worker started with the dispatcher");
}

/// A config edit reaches a running dispatcher whole: an edited server profile's next job runs on
/// a worker started with the new command, and a server profile added to `workers` starts.
#[test]
fn a_config_edit_reaches_the_running_dispatcher_with_its_profiles() {
    let _g = common::heavy();
    let q = queue(json!({"workers": ["srv"]}));
    q.dispatcher();
    wait_for(30, "the configured worker to be ready", || server_rows(&q).first().is_some_and(|r| r.0 == "ready"));
    assert_eq!(await_one(&q, &q.start(&["--worker", "srv", "before"]))["status"], "succeeded");
    assert_eq!(spawns(&q).len(), 1);

    let cfg_path = q.project.join(".baton/config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let mut edited = server_profile("srv");
    edited["env"]["SERVER_FLAVOUR"] = json!("new");
    cfg["profiles"] = json!([edited, server_profile("other")]);
    cfg["workers"] = json!(["srv", "other"]);
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();

    wait_for(30, "the added configured worker to start", || spawns(&q).len() >= 2);
    let v = await_one(&q, &q.start(&["--worker", "srv", "after"]));
    assert_eq!(v["status"], "succeeded", "{v}");
    wait_for(30, "the edited profile's worker replaced", || {
        server_rows(&q).iter().any(|r| r.2.as_deref() == Some("Replaced: its profile's command changed"))
    });
    let live: Vec<i64> = {
        let c = q.raw();
        let mut st = c
            .prepare("SELECT pid FROM workers WHERE kind = 'server' AND profile = 'srv' AND state IN ('ready', 'busy')")
            .unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(live.len(), 1, "one live srv worker");
    let environ = std::fs::read(format!("/proc/{}/environ", live[0])).unwrap();
    assert!(environ.split(|b| *b == 0).any(|v| v == b"SERVER_FLAVOUR=new"), "the new worker runs the new command");
}

#[test]
fn a_server_profile_without_a_usable_command_is_a_config_error() {
    let q = TestQueue::with_overrides(json!({
        "profiles": [{"id": "bad", "name": "b", "model": "m", "purpose": "p", "whenToUse": "w",
                      "kind": "server", "command": ["srv", "{prompt}"]}]
    }));
    let o = q.run(&["task", "start", "--worker", "bad", "x"]);
    assert_ne!(o.status.code(), Some(0));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot use {prompt} outside an optional group"), "{e}");
}

#[test]
fn ended_server_workers_are_pruned_with_their_logs() {
    let _g = common::heavy();
    let q = queue(json!({"retention": {"maxAgeMs": 1, "minAgeMs": 0}}));
    q.dispatcher();
    let v = await_one(&q, &q.start(&["--worker", "srv", "EXIT"]));
    assert_eq!(v["status"], "failed", "{v}");
    let id: String = q.raw().query_row("SELECT id FROM workers WHERE kind = 'server'", [], |r| r.get(0)).unwrap();
    let log = q.project.join(".baton/logs/workers").join(format!("{id}.log"));
    assert!(std::fs::read_to_string(&log).unwrap().contains("starting in"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    q.ok(&["prune"]);
    assert_eq!(q.scalar_i64("SELECT count(*) FROM workers WHERE kind = 'server'"), 0);
    assert!(!log.exists(), "its log went with it");
}

#[test]
fn config_check_names_workers_that_cannot_start() {
    let q = queue(json!({"workers": ["srv", "coder", "nope"], "runner": "claude"}));
    let o = q.run(&["config", "check"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("workers: \"coder\" is not a server profile"), "{err}");
    assert!(err.contains("workers: no profile \"nope\""), "{err}");
    assert!(!err.contains("\"srv\""), "{err}");
}

#[test]
fn a_cancel_the_worker_answers_keeps_the_worker() {
    let _g = common::heavy();
    let q = queue(json!({}));
    q.dispatcher();
    let id = q.start(&["--worker", "srv", "WAIT"]);
    wait_for(30, "the worker to be busy", || server_rows(&q).first().is_some_and(|r| r.0 == "busy"));
    let o = q.run(&["task", "cancel", &id, "--reason", "changed my mind"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v = await_one(&q, &id);
    assert_eq!((v["status"].as_str(), v["error"].as_str()), (Some("canceled"), Some("Canceled: changed my mind")));
    // The worker ended the turn on session/cancel, and serves the next task.
    let v = await_one(&q, &q.start(&["--worker", "srv", "next"]));
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(spawns(&q).len(), 1);
    assert_eq!(server_rows(&q)[0].0, "ready");
}

#[test]
fn sigterm_stops_idle_server_workers_and_queues_busy_ones_again() {
    let _g = common::heavy();
    let q = queue(json!({"dispatcher": {"shutdownGraceMs": 500}}));
    let d = q.dispatcher();
    assert_eq!(await_one(&q, &q.start(&["--worker", "other", "warm"]))["status"], "succeeded");
    let busy = q.start(&["--worker", "srv", "sleep 4 then answer"]);
    wait_for(30, "the srv worker busy", || q.state(&busy) == "running" && spawns(&q).len() == 2);
    let (idle_pid, busy_pid) = (spawns(&q)[0], spawns(&q)[1]);
    let term = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_for(30, "the dispatcher to exit", || is_dead(d as i32));
    assert!(term.elapsed().as_secs() < 3, "it did not wait for the busy worker: {:?}", term.elapsed());
    assert!(is_dead(idle_pid), "the idle worker was stopped");
    let idle_state: String =
        q.raw().query_row("SELECT state FROM workers WHERE pid = ?1", [idle_pid], |r| r.get(0)).unwrap();
    assert_eq!(idle_state, "stopped");
    // Past the shutdown grace the busy one's task was stopped and queued again: the next
    // dispatcher runs it.
    q.dispatcher();
    let v = await_one(&q, &busy);
    assert_eq!((v["status"].as_str(), v["attempt"].as_i64()), (Some("succeeded"), Some(2)), "{v}");
    wait_for(30, "the old busy worker to be gone", || is_dead(busy_pid));
}

#[test]
fn a_failed_spawn_ends_its_row_and_the_next_task_tries_again() {
    if !common::test_hooks("the spawn window") {
        return;
    }
    let _g = common::heavy();
    let mut missing = server_profile("missing");
    missing["command"] = json!(["/nonexistent/server-binary"]);
    let mut quitter = server_profile("quitter");
    quitter["command"] = json!(["sh", "-c", "exit 4"]);
    let mut blinker = server_profile("blinker");
    blinker["command"] =
        json!(["sh", "-c", "read l; echo '{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":1}}'; exit 5"]);
    let q = queue(json!({"profiles": [missing, quitter, blinker]}));
    // A spawn window wide enough that the quitter is gone before its pid is recorded.
    let _d = common::Kill(q.cmd().arg("run").env("BATON_TEST_SPAWN_DELAY_MS", "300").spawn().unwrap());
    for _ in 0..2 {
        let v = await_one(&q, &q.start(&["--worker", "missing", "hello"]));
        let e = v["error"].as_str().unwrap();
        assert!(e.starts_with("Failed to start worker: starting server worker `/nonexistent/server-binary`"), "{e}");
    }
    let v = await_one(&q, &q.start(&["--worker", "quitter", "hello"]));
    assert_eq!(v["error"], "Failed to start worker: the server worker exited with code 4", "{v}");
    // Ready, then gone at once: the task fails with its exit, not with its initialize answer
    // (seen while it starts, when it is to take the task, or once it was asked for a session),
    // and no second worker is started for it.
    let v = await_one(&q, &q.start(&["--worker", "blinker", "hello"]));
    let e = v["error"].as_str().unwrap();
    assert!(
        e == "Failed to start worker: the server worker exited with code 5" || e == "Worker exited with code 5",
        "{v}"
    );
    let c = q.raw();
    let rows: Vec<(String, String)> = c
        .prepare("SELECT profile, state FROM workers ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let expect = [("missing", "error"), ("missing", "error"), ("quitter", "error"), ("blinker", "error")];
    assert_eq!(rows, expect.map(|(p, s)| (p.to_string(), s.to_string())), "one row per attempt, none left live");
}

#[test]
fn a_stale_row_is_never_trusted_alone() {
    let _g = common::heavy();
    let q = queue(json!({}));
    q.ok(&["init"]);
    // A live server row left by a dispatcher that died, whose pid now belongs to an unrelated
    // process (same pid and start time even, but without the worker's tag).
    let unrelated = common::Kill(std::process::Command::new("sleep").arg("60").spawn().unwrap());
    let pid = unrelated.0.id() as i64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: i64 = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().nth(19).unwrap().parse().unwrap();
    q.raw()
        .execute(
            "INSERT INTO workers (id, profile, kind, state, pid, pid_start, pgid, owner, epoch, started_ms, last_activity_ms)
             VALUES ('ghost', 'srv', 'server', 'starting', ?1, ?2, ?1, 'gone', 0, 0, 0)",
            rusqlite::params![pid, start],
        )
        .unwrap();
    q.dispatcher();
    let v = await_one(&q, &q.start(&["--worker", "srv", "hello"]));
    assert_eq!(v["status"], "succeeded", "{v}");
    assert!(!is_dead(pid as i32), "the unrelated process was not touched");
    let (state, error): (String, String) = q
        .raw()
        .query_row("SELECT state, error FROM workers WHERE id = 'ghost'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((state.as_str(), error.as_str()), ("error", "Worker lost: its dispatcher went away"));
}

#[test]
fn workers_stop_without_a_dispatcher_stops_the_proven_process_itself() {
    let _g = common::heavy();
    let q = queue(json!({}));
    let d = q.dispatcher();
    let busy = q.start(&["--worker", "srv", "sleep 30 then answer"]);
    wait_for(30, "the worker to be busy", || server_rows(&q).first().is_some_and(|r| r.0 == "busy"));
    let pid = spawns(&q)[0];
    // The dispatcher is paused when the stop is asked (it holds its lock but does nothing),
    // then dies: the stop goes on without it.
    let signal = |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(d as i32), sig).unwrap();
    signal(nix::sys::signal::Signal::SIGSTOP);
    let stop =
        q.cmd().args(["workers", "stop", "--all", "--json"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    kill9(d as i32);
    let o = stop.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["status"], "stopped", "{v}");
    wait_for(30, "the worker to be gone", || is_dead(pid));
    assert_eq!(q.state(&busy), "canceled");
}

#[test]
fn workflow_steps_on_a_server_profile_run_on_its_worker() {
    let _g = common::heavy();
    let q = queue(json!({"workflows": {"definitions": [{"id": "two", "steps": [
        {"id": "a", "workerId": "srv", "prompt": "first {task}", "carry": false},
        {"id": "b", "workerId": "srv", "prompt": "second {task}", "carry": false}
    ]}]}}));
    q.dispatcher();
    let (v, _) = q.json(&["workflow", "run", "two", "go"]);
    let run = v["taskId"].as_str().unwrap().to_string();
    let rec = await_one(&q, &run);
    assert_eq!(rec["status"], "succeeded", "{rec}");
    let pid = spawns(&q)[0];
    assert!(rec["responseText"].as_str().unwrap().contains(&format!("second go by {pid}")), "{rec}");
    assert_eq!(spawns(&q).len(), 1);
    let kinds = q.scalar_i64("SELECT count(*) FROM jobs WHERE workflow_run_id IS NOT NULL AND worker_kind = 'server'");
    assert_eq!(kinds, 2);
}

#[test]
fn a_timed_out_task_is_canceled_the_acp_way_and_only_a_deaf_worker_is_stopped() {
    let _g = common::heavy();
    let mut deaf = server_profile("deaf");
    deaf["env"]["FAKE_ACP_IGNORE_CANCEL"] = json!("1");
    let q = queue(json!({"profiles": [server_profile("srv"), deaf], "jobs": {"killGraceMs": 500}}));
    q.dispatcher();
    let timed_out = (Some("failed"), Some("Task timed out after 1000ms"));
    // It ends the turn when asked: the task times out, the worker stays for the next task.
    let v = await_one(&q, &q.start(&["--worker", "srv", "--timeout", "1000", "sleep 300 then answer"]));
    assert_eq!((v["status"].as_str(), v["error"].as_str()), timed_out, "{v}");
    let v = await_one(&q, &q.start(&["--worker", "srv", "next"]));
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(spawns(&q).len(), 1, "the same worker answered the next task");
    // One that goes on after the cancel is stopped once the grace is over.
    let v = await_one(&q, &q.start(&["--worker", "deaf", "--timeout", "1000", "WAIT"]));
    assert_eq!((v["status"].as_str(), v["error"].as_str()), timed_out, "{v}");
    let pid = spawns(&q)[1];
    wait_for(30, "the deaf worker to be gone", || is_dead(pid));
    let rows = server_rows(&q);
    let deaf_row = rows.iter().find(|r| r.0 != "ready").expect("the deaf worker's row");
    assert_eq!(deaf_row.0, "stopped", "{rows:?}");
    assert!(deaf_row.2.as_deref().unwrap().starts_with("It did not end a timed-out turn in time"), "{rows:?}");
}

//! Several tasks at once on one ACP worker, each in a session of its own (a server profile's
//! `maxConcurrency`), against `tests/fixtures/fake-acp-agent.py`: they overlap on one process,
//! their sessions are rows of `worker_sessions`, their events stay apart, and one task's cancel,
//! forbidden tool call or the worker's crash reaches exactly the tasks it should.

use serde_json::{Value, json};

use crate::acp::{reader, texts};
use crate::common::{self, TestQueue, is_dead, wait_for};
use crate::servers::{await_one, queue, server_profile, server_rows, spawns};

/// A server profile whose worker serves `n` tasks at once.
fn shared(id: &str, n: u32) -> Value {
    let mut p = server_profile(id);
    p["maxConcurrency"] = json!(n);
    p
}

/// (worker, job, ACP session) of the sessions running now.
fn sessions(q: &TestQueue) -> Vec<(String, String, String)> {
    let c = q.raw();
    let Ok(mut st) = c.prepare("SELECT worker_id, job_id, acp_session FROM worker_sessions ORDER BY job_id") else {
        return Vec::new();
    };
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

#[test]
fn tasks_share_one_worker_at_once_each_in_its_own_session() {
    let _g = common::heavy();
    let q = queue(json!({"profiles": [shared("pair", 3)]}));
    q.dispatcher();
    let ids: Vec<String> = (0..3).map(|i| q.start(&["--worker", "pair", &format!("sleep 2 task {i}")])).collect();
    wait_for(30, "three sessions at once on one busy worker", || {
        let s = sessions(&q);
        s.len() == 3 && server_rows(&q).first().is_some_and(|r| r.0 == "busy")
    });
    let s = sessions(&q);
    assert!(s.iter().all(|r| r.0 == s[0].0), "one worker serves all three: {s:?}");
    let mut acp: Vec<&str> = s.iter().map(|r| r.2.as_str()).collect();
    acp.sort();
    acp.dedup();
    assert_eq!(acp.len(), 3, "each task has a session of its own: {s:?}");
    // `baton workers` names all three tasks.
    let (v, _) = q.json(&["task", "list", "--view", "workers"]);
    let w = &v.as_array().unwrap()[0];
    let mut listed: Vec<String> = w["jobIds"].as_array().unwrap().iter().map(|j| j.as_str().unwrap().into()).collect();
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!((listed, w["maxSessions"].as_i64(), w["status"].as_str()), (want, Some(3), Some("busy")), "{w}");
    for (i, id) in ids.iter().enumerate() {
        let v = await_one(&q, id);
        assert_eq!(v["status"], "succeeded", "{v}");
        let text = v["responseText"].as_str().unwrap();
        assert!(text.starts_with(&format!("task {i} by ")), "each answer is its own task's: {text}");
        assert_eq!(texts(&q, id, "message").concat(), text, "each task's events are its own");
    }
    assert_eq!(spawns(&q).len(), 1, "one process served them");
    // They ran side by side: every one started before any finished.
    let c = q.raw();
    let (last_start, first_end): (i64, i64) = c
        .query_row("SELECT max(started_ms), min(finished_ms) FROM jobs WHERE profile = 'pair'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(last_start < first_end, "the three turns overlapped ({last_start} >= {first_end})");
    wait_for(30, "the worker ready again, every session given back", || {
        sessions(&q).is_empty() && server_rows(&q).first().is_some_and(|r| r.0 == "ready")
    });
}

#[test]
fn without_max_concurrency_a_worker_serves_one_task_at_a_time() {
    let _g = common::heavy();
    let q = queue(json!({}));
    q.dispatcher();
    let ids: Vec<String> = (0..3).map(|i| q.start(&["--worker", "srv", &format!("sleep 0.5 task {i}")])).collect();
    let mut most = 0;
    while ids.iter().any(|id| !matches!(q.state(id).as_str(), "succeeded" | "failed" | "canceled")) {
        most = most.max(sessions(&q).len());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(most, 1, "never more than one session at once");
    for id in &ids {
        assert_eq!(await_one(&q, id)["status"], "succeeded");
    }
    assert_eq!(spawns(&q).len(), 1);
}

#[test]
fn a_cancel_ends_only_its_own_session_and_the_worker_goes_on() {
    let _g = common::heavy();
    let q = queue(json!({"profiles": [shared("pair", 2)], "jobs": {"killGraceMs": 2000}}));
    q.dispatcher();
    let waiting = q.start(&["--worker", "pair", "WAIT"]);
    let streaming = q.start(&["--worker", "pair", "STREAM 30"]);
    wait_for(30, "both sessions running", || sessions(&q).len() == 2);
    let (v, _) = q.json(&["task", "cancel", &waiting]);
    assert_eq!(v["status"], "canceled", "{v}");
    let v = await_one(&q, &streaming);
    assert_eq!(v["status"], "succeeded", "the other task went on: {v}");
    let streamed: String = (0..30).map(|i| format!("chunk {i} ")).collect();
    assert_eq!(texts(&q, &streaming, "message").concat(), streamed, "{v}");
    assert_eq!(await_one(&q, &q.start(&["--worker", "pair", "next"]))["status"], "succeeded");
    assert_eq!(spawns(&q).len(), 1, "the worker answered the cancel and stayed");
}

#[test]
fn a_forbidden_tool_call_stops_the_shared_worker_and_fails_its_other_task_with_the_reason() {
    let _g = common::heavy();
    let mut p = reader("ro");
    p["maxConcurrency"] = json!(2);
    let q = queue(json!({"profiles": [p], "jobs": {"killGraceMs": 500}}));
    q.dispatcher();
    let bystander = q.start(&["--worker", "ro", "WAIT"]);
    wait_for(30, "the first session running", || sessions(&q).len() == 1);
    let culprit = q.start(&["--worker", "ro", "SILENT edit notes.txt"]);
    let v = await_one(&q, &culprit);
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("Forbidden tool call"), "{v}");
    let v = await_one(&q, &bystander);
    assert_eq!(v["status"], "failed", "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(err.starts_with("Its server worker was stopped: Forbidden tool call"), "{err}");
    assert!(err.contains(&culprit), "the reason names the task that caused it: {err}");
    let pid = spawns(&q)[0];
    wait_for(30, "the worker to be gone", || is_dead(pid));
    assert_eq!(server_rows(&q)[0].0, "stopped");
    assert!(sessions(&q).is_empty());
}

#[test]
fn a_crash_fails_every_task_on_the_worker_and_the_next_gets_a_new_one() {
    let _g = common::heavy();
    let q = queue(json!({"profiles": [shared("pair", 2)]}));
    q.dispatcher();
    let waiting = q.start(&["--worker", "pair", "WAIT"]);
    wait_for(30, "the first session running", || sessions(&q).len() == 1);
    let crashing = q.start(&["--worker", "pair", "CRASH"]);
    for id in [&waiting, &crashing] {
        let v = await_one(&q, id);
        assert_eq!(
            (v["status"].as_str(), v["error"].as_str()),
            (Some("failed"), Some("Worker killed by signal 9")),
            "{v}"
        );
    }
    let v = await_one(&q, &q.start(&["--worker", "pair", "next"]));
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(spawns(&q).len(), 2, "a new worker took the next task");
    assert_eq!(server_rows(&q)[0].0, "error");
}

#[test]
fn a_session_id_the_agent_hands_out_twice_at_once_is_a_protocol_violation() {
    let _g = common::heavy();
    let mut p = shared("dup", 2);
    p["env"]["FAKE_ACP_SESSION_ID"] = json!("same");
    let q = queue(json!({"profiles": [p]}));
    q.dispatcher();
    let first = q.start(&["--worker", "dup", "WAIT"]);
    wait_for(30, "the first session running", || sessions(&q).len() == 1);
    let second = q.start(&["--worker", "dup", "hello"]);
    for id in [&first, &second] {
        let v = await_one(&q, id);
        assert_eq!(v["status"], "failed", "{v}");
        let err = v["error"].as_str().unwrap();
        assert_eq!(
            err,
            "Protocol violation by the server worker: session/new answered session \"same\", which a running task uses"
        );
    }
    let v = await_one(&q, &q.start(&["--worker", "dup", "next"]));
    assert_eq!(v["status"], "succeeded", "a new worker took the next task: {v}");
}

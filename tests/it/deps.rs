//! Dependencies (`--after`, the `waiting` state), labels and list filters, and pauses, through
//! the real binary, real dispatchers (one killed with SIGKILL) and the real file.

use std::time::Duration;

use crate::common::{self, Kill, TestQueue, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

fn record(q: &TestQueue, id: &str) -> Value {
    q.json(&["task", "peek", id]).0
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn ms(q: &TestQueue, id: &str, col: &str) -> i64 {
    q.raw().query_row(&format!("SELECT {col} FROM jobs WHERE id = ?1"), [id], |r| r.get(0)).unwrap()
}

#[test]
fn a_chain_runs_in_order_each_after_the_last_succeeded() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let a = q.start(&["--worker", "coder", "sleep 0.5; echo A"]);
    let b = q.start(&["--worker", "coder", "--after", &a, "echo B"]);
    // A unique prefix names a dependency too.
    let c = q.start(&["--worker", "coder", "--after", &b[..8], "echo C"]);
    assert_eq!(q.state(&a), "queued");
    assert_eq!(q.state(&b), "waiting");
    assert_eq!(q.state(&c), "waiting");
    let rec = record(&q, &c);
    assert_eq!(rec["after"], serde_json::json!([b.clone()]), "{rec}");
    assert_eq!(q.scalar_i64("SELECT count(*) FROM job_deps"), 2);
    q.dispatcher();
    let (done, code) = q.json(&["task", "await", &c, "--timeout", "30000"]);
    assert_eq!((text(&done, "status").as_str(), code), ("succeeded", 0), "{done}");
    assert_eq!(text(&done, "responseText").trim(), "C");
    // Each started only after the one before it finished.
    assert!(ms(&q, &b, "started_ms") >= ms(&q, &a, "finished_ms"));
    assert!(ms(&q, &c, "started_ms") >= ms(&q, &b, "finished_ms"));
}

#[test]
fn a_failure_fails_the_chain_behind_it_and_after_any_runs_anyway() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let a = q.start(&["--worker", "coder", "exit 3"]);
    let b = q.start(&["--worker", "coder", "--after", &a, "echo B"]);
    let c = q.start(&["--worker", "coder", "--after", &b, "echo C"]);
    let d = q.start(&["--worker", "coder", "--after", &c, "--after-any", "echo D"]);
    let keep = q.start(&["--worker", "coder", "sleep 30"]);
    let e = q.start(&["--worker", "coder", "--after", &format!("{keep},{a}"), "echo E"]);
    q.dispatcher();
    let (recs, _) = q.json(&["task", "await", &b, &c, &d, &e, "--timeout", "30000"]);
    let by = |i: usize| &recs[i];
    assert_eq!(text(by(0), "status"), "failed", "{recs}");
    assert_eq!(text(by(0), "error"), format!("Dependency {a} failed"));
    assert_eq!(text(by(1), "status"), "failed");
    assert_eq!(text(by(1), "error"), format!("Dependency {b} failed"));
    assert!(by(1)["startedAt"].is_null(), "a task whose dependency failed never starts: {recs}");
    assert_eq!(text(by(2), "status"), "succeeded", "after-any runs once its dependency ended: {recs}");
    assert_eq!(by(2)["afterAny"], true);
    // E fails as soon as one dependency fails, without waiting for the other.
    assert_eq!(text(by(3), "status"), "failed");
    assert_eq!(text(by(3), "error"), format!("Dependency {a} failed"));
    assert_eq!(q.state(&keep), "running");

    // A task started after its dependency already failed fails at once, and says why.
    let (started, code) = q.json(&["task", "start", "--worker", "coder", "--after", &a, "echo late"]);
    assert_eq!(code, 0);
    assert_eq!(text(&started, "status"), "failed", "{started}");
    assert_eq!(text(&started, "error"), format!("Dependency {a} failed"));
    // Canceling a waiting task fails its dependents too.
    let w = q.start(&["--worker", "coder", "--after", &keep, "echo W"]);
    let x = q.start(&["--worker", "coder", "--after", &w, "echo X"]);
    let (canceled, _) = q.json(&["task", "cancel", &w]);
    assert_eq!(text(&canceled, "status"), "canceled", "{canceled}");
    assert_eq!(q.state(&x), "failed");
    q.ok(&["task", "cancel", &keep]);
}

#[test]
fn unknown_ids_runs_and_cycles_are_refused() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let err = q.refused(&["task", "start", "--worker", "coder", "--after", "0123456789abcdef", "echo x"]);
    assert!(err.contains("Unknown dependency \"0123456789abcdef\""), "{err}");
    let err = q.refused(&["task", "start", "--worker", "coder", "--after-any", "echo x"]);
    assert!(err.contains("--after"), "{err}");
    let a = q.start(&["--worker", "coder", "echo A"]);
    let run = q.ok(&["workflow", "run", "roocode-boomerang", "plan it", "--no-auto-spawn"]).trim().to_string();
    let err = q.refused(&["task", "start", "--worker", "coder", "--after", &run, "echo x"]);
    assert!(err.contains("is a workflow run"), "{err}");
    let err = q.refused(&["task", "start", "--workflow", "roocode-boomerang", "--after", &a, "echo x"]);
    assert!(err.contains("not to workflow runs"), "{err}");
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs WHERE state = 'waiting'"), 0, "nothing refused was written");

    // A dependency is always older, so no cycle can form; sqlite3 cannot make one either, nor
    // queue a waiting task early, nor change what it waits for.
    let b = q.start(&["--worker", "coder", "--after", &a, "echo B"]);
    let raw = q.raw();
    let refused = |sql: &str| raw.execute(sql, []).expect_err(sql).to_string();
    let e = refused(&format!("INSERT INTO job_deps (job_id, dep_id, need) VALUES ('{a}', '{b}', 'succeeded')"));
    assert!(e.contains("dependencies are written with their job") || e.contains("older task"), "{e}");
    let e = refused(&format!("UPDATE jobs SET state = 'queued' WHERE id = '{b}'"));
    assert!(e.contains("queued only once its dependencies are met"), "{e}");
    let e = refused(&format!("UPDATE jobs SET after = '[]' WHERE id = '{b}'"));
    assert!(e.contains("never change"), "{e}");
    let e = refused(&format!("DELETE FROM job_deps WHERE job_id = '{b}'"));
    assert!(e.contains("goes only with its job"), "{e}");
    let e = refused(&format!("DELETE FROM jobs WHERE id = '{b}'"));
    assert!(e.contains("unfinished job cannot be deleted"), "{e}");
    assert_eq!(q.state(&b), "waiting");
}

#[test]
fn tasks_keep_waiting_across_a_dispatcher_killed_with_sigkill() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(serde_json::json!({"dispatcher": {"staleMs": 1000}}));
    let a = q.start(&["--worker", "coder", "sleep 2; echo A"]);
    let b = q.start(&["--worker", "coder", "--after", &a, "echo B"]);
    let mut first = Kill(q.cmd().arg("run").stderr(std::process::Stdio::null()).spawn().unwrap());
    wait_for(20, "A running", || q.state(&a) == "running");
    kill(Pid::from_raw(first.pid()), Signal::SIGKILL).unwrap();
    wait_for(10, "the dispatcher gone", || first.exited().is_some());
    assert_eq!(q.state(&b), "waiting");
    q.dispatcher();
    let (done, code) = q.json(&["task", "await", &b, "--timeout", "60000"]);
    assert_eq!((text(&done, "status").as_str(), code), ("succeeded", 0), "{done}");
    let (ra, _) = q.json(&["task", "peek", &a]);
    assert_eq!(text(&ra, "status"), "succeeded", "{ra}");
    assert_eq!(ra["attempt"], 2, "A was retried after the crash: {ra}");
    assert!(ms(&q, &b, "started_ms") >= ms(&q, &a, "finished_ms"));
}

#[test]
fn labels_filters_and_sorting() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let a = q.start(&["--worker", "coder", "--label", "area=db", "--label", "kind=bug", "--priority", "1", "true"]);
    let b = q.start(&["--worker", "docs", "--label", "area=ui", "--priority", "5", "true"]);
    let c = q.start(&["--worker", "coder", "--label", "area=db", "true"]);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["task", "list"];
        a.extend_from_slice(args);
        let (v, code) = q.json(&a);
        assert_eq!(code, 0, "{v}");
        v.as_array().unwrap().iter().map(|r| text(r, "id")).collect()
    };
    assert_eq!(ids(&["--label", "area=db"]), [c.clone(), a.clone()]);
    assert_eq!(ids(&["--label", "area=db", "--label", "kind=bug"]), [a.as_str()]);
    assert_eq!(ids(&["--label", "kind"]), [a.as_str()]);
    assert_eq!(ids(&["--label", "area=nope"]), Vec::<String>::new());
    assert_eq!(ids(&["--worker", "docs"]), [b.as_str()]);
    assert_eq!(ids(&["--sort", "oldest"]), [a.clone(), b.clone(), c.clone()]);
    assert_eq!(ids(&["--sort", "priority"]), [b.clone(), a.clone(), c.clone()]);
    // Nothing has run: every duration is 0, and ties go newest first.
    assert_eq!(ids(&["--sort", "duration"]), [c.clone(), b.clone(), a.clone()]);
    assert_eq!(ids(&["--sort", "newest", "--limit", "1"]), [c.as_str()]);
    assert_eq!(ids(&["--since", "1h"]).len(), 3);
    assert_eq!(ids(&["--until", "1h"]).len(), 0);
    assert_eq!(ids(&["--since", "2000-01-01", "--status", "queued", "--limit", "2"]), [c.clone(), b.clone()]);
    // The record shows the labels; a task without labels has no labels key (the shape of the
    // existing keys is unchanged).
    let (rec, _) = q.json(&["task", "peek", &a]);
    assert_eq!(rec["labels"], serde_json::json!({"area": "db", "kind": "bug"}), "{rec}");
    let plain = q.start(&["--worker", "coder", "true"]);
    let (rec, _) = q.json(&["task", "peek", &plain]);
    assert!(rec.get("labels").is_none() && rec.get("after").is_none(), "{rec}");
    for key in common::RECORD_KEYS {
        assert!(rec.get(key).is_some(), "{key} missing: {rec}");
    }
    let table = q.ok(&["task", "list"]);
    assert!(table.contains("| Labels") && table.contains("area=db kind=bug"), "{table}");

    let err = q.refused(&["task", "start", "--label", "bad key=1", "true"]);
    assert!(err.contains("Invalid label key \"bad key\""), "{err}");
    let err = q.refused(&["task", "start", "--label", "novalue", "true"]);
    assert!(err.contains("key=value"), "{err}");
    let err = q.refused(&["task", "list", "--since", "yesterday"]);
    assert!(err.contains("since must be an ISO-8601 time"), "{err}");
    let err = q.refused(&["task", "list", "--status", "paused"]);
    assert!(err.contains("waiting, queued, running"), "{err}");
}

#[test]
fn a_pause_holds_new_claims_across_processes_until_resumed() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let said = q.ok(&["pause", "--profile", "coder"]);
    assert!(said.contains("paused: coder"), "{said}");
    let held = q.start(&["--worker", "coder", "echo held"]);
    let free = q.start(&["--worker", "docs", "echo free"]);
    q.dispatcher();
    let (done, _) = q.json(&["task", "await", &free, "--timeout", "30000"]);
    assert_eq!(text(&done, "status"), "succeeded", "another profile runs: {done}");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(q.state(&held), "queued", "a paused profile's task is not claimed");
    let (status, _) = q.json(&["status"]);
    assert_eq!(status["paused"][0]["profile"], "coder", "{status}");
    assert!(q.ok(&["status"]).contains("Paused:     coder"));

    // Pausing everything holds every profile; a running task goes on.
    q.ok(&["resume"]);
    q.json(&["task", "await", &held, "--timeout", "30000"]);
    assert_eq!(q.state(&held), "succeeded");
    let long = q.start(&["--worker", "coder", "sleep 1; echo long"]);
    wait_for(20, "long running", || q.state(&long) == "running");
    q.ok(&["pause"]);
    let later = q.start(&["--worker", "docs", "echo later"]);
    let (done, _) = q.json(&["task", "await", &long, "--timeout", "30000"]);
    assert_eq!(text(&done, "status"), "succeeded", "a running task goes on while paused: {done}");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(q.state(&later), "queued");
    let err = q.refused(&["pause", "--profile", "nosuch"]);
    assert!(err.contains("Unknown profile \"nosuch\""), "{err}");
    let left = q.ok(&["resume"]);
    assert!(left.contains("Nothing is paused"), "{left}");
    let (done, _) = q.json(&["task", "await", &later, "--timeout", "30000"]);
    assert_eq!(text(&done, "status"), "succeeded", "{done}");
    assert_eq!(q.scalar_i64("SELECT count(*) FROM pauses"), 0);
}

//! The schema refuses what baton itself never does, even when it comes from the `sqlite3` shell:
//! a finished job, run or step never changes; ids and the columns that link rows never change;
//! unfinished jobs, live workers and running workflow runs are never deleted, and a run goes
//! whole; the transitions tables are fixed; the lease row is never replaced or deleted. Every
//! edit goes through the real `sqlite3` binary (foreign keys off, as the shell leaves them)
//! against a queue the baton binary filled by running real tasks, and every refused edit leaves
//! its rows as they were. The paths baton does take (claim, finish, cancel, a server worker
//! taking and giving back jobs, recovery's requeue, retry, pruning) still work.

use std::process::{Command, Output, Stdio};

use crate::common::{self, Kill, TestQueue, wait_for};
use rusqlite::types::Value as Sql;
use serde_json::{Value, json};

/// Run `sql` through the sqlite3 shell on the queue file.
fn sqlite3(q: &TestQueue, sql: &str) -> Output {
    Command::new("sqlite3")
        .arg("-bail")
        .args(["-cmd", ".timeout 30000"])
        .arg(&q.db)
        .arg(sql)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running sqlite3 (these tests need the SQLite shell on PATH): {e}"))
}

/// Every row `select` returns, every column.
fn snapshot(q: &TestQueue, select: &str) -> Vec<Vec<Sql>> {
    let c = q.raw();
    let mut st = c.prepare(select).unwrap_or_else(|e| panic!("{select}: {e}"));
    let n = st.column_count();
    st.query_map([], |r| (0..n).map(|i| r.get::<_, Sql>(i)).collect()).unwrap().map(Result::unwrap).collect()
}

/// `sql` fails in the sqlite3 shell with the trigger message `baton: <expect>...`, and the rows
/// the `rows` selects return are the same afterwards (and not none).
fn refused(q: &TestQueue, sql: &str, expect: &str, rows: &[&str]) {
    let before: Vec<_> = rows.iter().map(|s| snapshot(q, s)).collect();
    for (s, b) in rows.iter().zip(&before) {
        assert!(!b.is_empty(), "{s} selects nothing: the test would prove nothing");
    }
    let o = sqlite3(q, sql);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "sqlite3 accepted {sql:?}");
    assert!(stderr.contains(&format!("baton: {expect}")), "{sql:?}: stderr {stderr:?} lacks \"baton: {expect}\"");
    let after: Vec<_> = rows.iter().map(|s| snapshot(q, s)).collect();
    assert_eq!(after, before, "{sql:?} changed rows");
}

/// `sql` succeeds in the sqlite3 shell.
fn accepted(q: &TestQueue, sql: &str) {
    let o = sqlite3(q, sql);
    assert!(o.status.success(), "sqlite3 refused {sql:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// Try to change every column of the one row `where_` picks in `table`, but its state, each to a
/// value it does not hold; each must be refused with the message `expect(column)` gives. A column
/// a later migration adds without its guard fails here.
fn every_column_refused(q: &TestQueue, table: &str, where_: &str, expect: impl Fn(&str) -> &'static str) {
    let cols: Vec<(String, String)> = {
        let c = q.raw();
        let mut st = c.prepare("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid").unwrap();
        st.query_map([table], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    assert!(cols.len() > 10, "{table}: {cols:?}");
    let row = format!("SELECT * FROM {table} WHERE {where_}");
    assert_eq!(snapshot(q, &row).len(), 1, "{row}");
    for (name, ty) in cols.iter().filter(|(n, _)| n != "state") {
        let other = match ty.as_str() {
            "TEXT" => format!("coalesce({name}, '') || '-edited'"),
            "INTEGER" => format!("coalesce({name}, 0) + 1"),
            "REAL" => format!("coalesce({name}, 0) + 1.5"),
            t => panic!("{table}.{name}: type {t} not covered by this test"),
        };
        refused(q, &format!("UPDATE {table} SET {name} = {other} WHERE {where_}"), expect(name), &[&row]);
    }
}

fn await_one(q: &TestQueue, id: &str) -> Value {
    let (v, _) = q.json(&["task", "await", id, "--timeout", "60000"]);
    v
}

/// A `baton run` of our own, to kill like a crash.
fn dispatcher(q: &TestQueue) -> Kill {
    Kill(q.cmd().arg("run").stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn baton run"))
}

fn job_row(id: &str) -> String {
    format!("SELECT * FROM jobs WHERE id = '{id}'")
}

#[test]
fn finished_jobs_never_change() {
    let _g = common::heavy();
    let q = TestQueue::new();
    q.dispatcher();
    let ok = q.start(&["echo hello"]);
    let bad = q.start(&["echo oops >&2; exit 3"]);
    assert_eq!(await_one(&q, &ok)["status"], "succeeded");
    let v = await_one(&q, &bad);
    assert_eq!((v["status"].as_str(), v["exitCode"].as_i64()), (Some("failed"), Some(3)), "{v}");

    // Results rewritten by hand.
    let finished = "a finished job never changes";
    for set in [
        "response = 'forged'",
        "response_chars = 1",
        "exit_code = coalesce(exit_code, 0) + 7",
        "error = 'forged'",
        "output_tail = 'forged'",
        "finished_ms = finished_ms + 1",
        "tokens = 1000",
        "input_tokens = 1",
        "output_tokens = 1",
        "cached_tokens = 1",
        "cost_usd = 9.5",
        "report = '{\"forged\": true}'",
    ] {
        for id in [&ok, &bad] {
            refused(&q, &format!("UPDATE jobs SET {set} WHERE id = '{id}'"), finished, &[&job_row(id)]);
        }
    }
    // Failed made succeeded, with the results to match: still no way out of a terminal state.
    refused(
        &q,
        &format!("UPDATE jobs SET state = 'succeeded', exit_code = 0, error = NULL WHERE id = '{bad}'"),
        "illegal job transition",
        &[&job_row(&bad)],
    );
    // The succeeded job sent back to run again, after widening the state machine first.
    let transitions = "SELECT * FROM job_transitions ORDER BY 1, 2";
    refused(
        &q,
        "INSERT INTO job_transitions (from_state, to_state) VALUES ('succeeded', 'queued')",
        "job_transitions is the job state machine",
        &[transitions],
    );
    refused(
        &q,
        "UPDATE job_transitions SET from_state = 'succeeded' WHERE from_state = 'running' AND to_state = 'queued'",
        "job_transitions is the job state machine",
        &[transitions],
    );
    refused(
        &q,
        &format!("UPDATE jobs SET state = 'queued' WHERE id = '{ok}'"),
        "illegal job transition",
        &[&job_row(&ok)],
    );
    // Every other column of a finished job, one by one.
    for id in [&ok, &bad] {
        every_column_refused(&q, "jobs", &format!("id = '{id}'"), |c| match c {
            "id" | "seq" => "a job id never changes",
            "profile" | "workflow_run_id" | "workflow_step" | "worktree_id" => {
                "a job's worker profile, workflow run, step and worktree never change"
            }
            "owner" | "epoch" => "a job's owner and epoch change only when it is claimed",
            "attempt" => "a job's attempt changes only when it is claimed",
            _ => finished,
        });
    }
    // Nothing of it reached the records.
    let v = await_one(&q, &ok);
    assert_eq!((v["status"].as_str(), v["responseText"].as_str()), (Some("succeeded"), Some("hello")), "{v}");
}

#[test]
fn unfinished_jobs_and_live_workers_are_not_deleted_or_relinked_and_recovery_still_requeues() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let mut first = dispatcher(&q);
    // Sleeps through attempt 1 (the one whose dispatcher dies), answers on attempt 2.
    let id = q.start(&[r#"if [ "$BATON_ATTEMPT" = 1 ]; then sleep 60; fi; echo "attempt $BATON_ATTEMPT""#]);
    let later = q.start(&["--delay", "600000", "echo later"]);
    wait_for(30, "the running job's worker row with its pid", || {
        q.raw()
            .query_row(
                "SELECT count(*) FROM workers w JOIN jobs j ON j.id = w.job_id
                  WHERE j.id = ?1 AND j.state = 'running' AND w.state = 'busy' AND w.pid IS NOT NULL",
                [&id],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 1
    });
    assert_eq!(q.state(&later), "queued");
    let job = job_row(&id);
    let worker = format!("SELECT * FROM workers WHERE job_id = '{id}'");
    let workers = "SELECT * FROM workers ORDER BY seq";

    let unfinished = "an unfinished job cannot be deleted";
    refused(&q, &format!("DELETE FROM jobs WHERE id = '{id}'"), unfinished, &[&job, workers]);
    refused(&q, &format!("DELETE FROM jobs WHERE id = '{later}'"), unfinished, &[&job_row(&later)]);
    refused(&q, "DELETE FROM jobs", unfinished, &["SELECT * FROM jobs ORDER BY seq", workers]);

    // The running job's fencing, its attempt, its id and links.
    let owner = "a job's owner and epoch change only when it is claimed";
    refused(&q, &format!("UPDATE jobs SET owner = 'intruder' WHERE id = '{id}'"), owner, &[&job]);
    refused(&q, &format!("UPDATE jobs SET epoch = epoch + 1 WHERE id = '{id}'"), owner, &[&job]);
    refused(&q, &format!("UPDATE jobs SET owner = 'intruder' WHERE id = '{later}'"), owner, &[&job_row(&later)]);
    let attempt = "a job's attempt changes only when it is claimed";
    refused(&q, &format!("UPDATE jobs SET attempt = attempt + 1 WHERE id = '{id}'"), attempt, &[&job]);
    refused(&q, &format!("UPDATE jobs SET attempt = 0 WHERE id = '{id}'"), attempt, &[&job]);
    let link = "a job's worker profile, workflow run, step and worktree never change";
    refused(&q, &format!("UPDATE jobs SET profile = 'architect' WHERE id = '{id}'"), link, &[&job]);
    refused(&q, &format!("UPDATE jobs SET workflow_run_id = '{later}' WHERE id = '{id}'"), link, &[&job]);
    refused(&q, &format!("UPDATE jobs SET workflow_step = 0 WHERE id = '{later}'"), link, &[&job_row(&later)]);
    refused(&q, &format!("UPDATE jobs SET id = 'x' WHERE id = '{id}'"), "a job id never changes", &[&job]);

    // Its oneshot worker's row.
    refused(
        &q,
        &format!("DELETE FROM workers WHERE job_id = '{id}'"),
        "a live worker's row cannot be deleted",
        &[&worker],
    );
    let moved = "a worker's job never changes";
    refused(&q, &format!("UPDATE workers SET job_id = '{later}' WHERE job_id = '{id}'"), moved, &[&worker]);
    refused(&q, &format!("UPDATE workers SET attempt = 2 WHERE job_id = '{id}'"), moved, &[&worker]);
    let ids = "a worker's id, profile, owner and epoch never change";
    for set in ["id = 'w'", "seq = seq + 100", "profile = 'architect'", "owner = 'intruder'", "epoch = epoch + 1"] {
        refused(&q, &format!("UPDATE workers SET {set} WHERE job_id = '{id}'"), ids, &[&worker]);
    }

    // The leader dies; the next one requeues the job (owner cleared, the lost worker's row ended
    // by trigger) and runs attempt 2.
    let _ = first.0.kill();
    let _ = first.0.wait();
    q.dispatcher();
    let v = await_one(&q, &id);
    assert_eq!((v["status"].as_str(), v["attempt"].as_i64()), (Some("succeeded"), Some(2)), "{v}");
    assert_eq!(v["responseText"], "attempt 2", "{v}");
    let states = snapshot(&q, &format!("SELECT attempt, state FROM workers WHERE job_id = '{id}' ORDER BY seq"));
    assert_eq!(
        states,
        [[Sql::Integer(1), Sql::Text("error".into())], [Sql::Integer(2), Sql::Text("stopped".into())]],
        "the lost attempt's worker ended with the requeue"
    );
    // A queued job is canceled the ordinary way.
    let (v, _) = q.json(&["task", "cancel", &later]);
    assert_eq!(v["status"], "canceled", "{v}");
}

#[test]
fn a_server_worker_takes_and_gives_back_jobs_only_its_own_way() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(
        json!({"profiles": [crate::servers::server_profile("srv")], "limits": {"spawnRateLimitMs": 50}}),
    );
    q.dispatcher();
    let first = q.start(&["--worker", "srv", "hello"]);
    assert_eq!(await_one(&q, &first)["status"], "succeeded");
    let worker = "SELECT * FROM workers WHERE kind = 'server'";
    let sessions = "SELECT * FROM worker_sessions";
    wait_for(30, "the server worker back to ready, its session given back", || {
        snapshot(&q, "SELECT state, job_id FROM workers WHERE kind = 'server'")
            == [[Sql::Text("ready".into()), Sql::Null]]
            && q.scalar_i64("SELECT count(*) FROM worker_sessions") == 0
    });
    let moved = "a worker's job never changes";
    // A server worker's tasks are its sessions, never its job_id.
    refused(&q, &format!("UPDATE workers SET job_id = '{first}' WHERE kind = 'server'"), moved, &[worker]);
    refused(&q, "UPDATE workers SET attempt = 1 WHERE kind = 'server'", moved, &[worker]);
    refused(&q, "DELETE FROM workers WHERE kind = 'server'", "a live worker's row cannot be deleted", &[worker]);
    refused(
        &q,
        "UPDATE workers SET owner = 'intruder' WHERE kind = 'server'",
        "a worker's id, profile, owner",
        &[worker],
    );
    // A finished job cannot be handed to it as a session.
    refused(
        &q,
        &format!(
            "INSERT INTO worker_sessions (job_id, attempt, worker_id, acp_session, started_ms)
             SELECT '{first}', 1, id, 'forged', 0 FROM workers WHERE kind = 'server'"
        ),
        "a worker session is the running attempt of a server job",
        &[worker],
    );

    // Busy with a job that waits for its cancel: its session cannot be changed, ended or
    // doubled, and the job cannot be deleted.
    let waiting = q.start(&["--worker", "srv", "WAIT"]);
    wait_for(30, "the server worker busy with the waiting job", || {
        snapshot(&q, "SELECT w.state, s.job_id FROM workers w JOIN worker_sessions s ON s.worker_id = w.id")
            == [[Sql::Text("busy".into()), Sql::Text(waiting.clone())]]
    });
    refused(&q, "UPDATE worker_sessions SET acp_session = 'other'", "a worker session never changes", &[sessions]);
    refused(&q, "DELETE FROM worker_sessions", "a worker session ends only with its attempt", &[sessions, worker]);
    refused(&q, &format!("UPDATE workers SET job_id = '{waiting}' WHERE kind = 'server'"), moved, &[worker]);
    refused(
        &q,
        "UPDATE workers SET max_sessions = 2 WHERE kind = 'server'",
        "a worker's max_sessions never",
        &[worker],
    );
    refused(
        &q,
        &format!("DELETE FROM jobs WHERE id = '{waiting}'"),
        "an unfinished job cannot be deleted",
        &[&job_row(&waiting), worker, sessions],
    );
    // Its end gives the session back (trigger jobs_release_server_worker), and it takes the next.
    let (v, _) = q.json(&["task", "cancel", &waiting]);
    assert_eq!(v["status"], "canceled", "{v}");
    let next = q.start(&["--worker", "srv", "again"]);
    let v = await_one(&q, &next);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(q.scalar_i64("SELECT count(*) FROM workers WHERE kind = 'server'"), 1, "one worker served all three");
    assert_eq!(q.scalar_i64("SELECT count(*) FROM worker_sessions"), 0, "every session given back");
}

#[test]
fn the_transitions_tables_change_only_through_migrations() {
    let q = TestQueue::new();
    q.ok(&["init"]);
    let tables = [
        ("job_transitions", "job", "('succeeded', 'queued')", "to_state = 'queued'"),
        ("worker_transitions", "worker", "('oneshot', 'stopped', 'busy')", "to_state = 'busy'"),
        ("run_transitions", "workflow run", "('failed', 'running')", "to_state = 'running'"),
        ("step_transitions", "workflow step", "('succeeded', 'pending')", "to_state = 'pending'"),
    ];
    for (table, what, new_row, set) in tables {
        let expect = format!("{table} is the {what} state machine: only a migration changes it");
        // WITHOUT ROWID: read in primary key order.
        let rows = format!("SELECT * FROM {table}");
        for sql in [
            format!("INSERT INTO {table} VALUES {new_row}"),
            format!("INSERT OR IGNORE INTO {table} VALUES {new_row}"),
            format!("REPLACE INTO {table} SELECT * FROM {table} LIMIT 1"),
            format!("UPDATE {table} SET {set}"),
            format!("DELETE FROM {table}"),
            format!("DELETE FROM {table} WHERE from_state = '(new)'"),
        ] {
            refused(&q, &sql, &expect, &[&rows]);
        }
    }
}

#[test]
fn the_lease_row_is_never_replaced_or_deleted() {
    let _g = common::heavy();
    let q = TestQueue::new();
    let mut first = dispatcher(&q);
    assert_eq!(await_one(&q, &q.start(&["echo one"]))["status"], "succeeded");
    // The leader gone, the row holds still (no heartbeats) for the comparisons.
    let _ = first.0.kill();
    let _ = first.0.wait();
    let lease = "SELECT * FROM dispatcher_lease";
    assert_eq!(q.scalar_i64("SELECT epoch FROM dispatcher_lease"), 1);
    let exists = "the lease row exists: a new leader updates it to a higher epoch";
    refused(&q, "REPLACE INTO dispatcher_lease VALUES (1, 'intruder', 0, 1, 0, 0)", exists, &[lease]);
    refused(&q, "INSERT OR REPLACE INTO dispatcher_lease VALUES (1, 'intruder', 0, 1, 0, 0)", exists, &[lease]);
    refused(&q, "INSERT INTO dispatcher_lease VALUES (1, 'intruder', 9, 1, 0, 0)", exists, &[lease]);
    refused(&q, "DELETE FROM dispatcher_lease", "the lease row is never deleted", &[lease]);
    let hands = "the lease changes hands only with a higher epoch";
    refused(&q, "UPDATE dispatcher_lease SET owner = 'intruder'", hands, &[lease]);
    refused(&q, "UPDATE dispatcher_lease SET pid = 1, started_ms = 0", hands, &[lease]);
    refused(&q, "UPDATE dispatcher_lease SET epoch = 0", "the lease epoch only increases", &[lease]);
    // The next leader takes it over the ordinary way: the same row, one epoch up.
    q.dispatcher();
    assert_eq!(await_one(&q, &q.start(&["echo two"]))["status"], "succeeded");
    assert_eq!(q.scalar_i64("SELECT epoch FROM dispatcher_lease"), 2);
    assert_eq!(q.scalar_i64("SELECT count(*) FROM dispatcher_lease"), 1);
}

#[test]
fn workflow_runs_go_whole_and_never_while_running() {
    let _g = common::heavy();
    let q = TestQueue::with_overrides(json!({
        "workflows": {"definitions": [{"id": "two", "steps": [{"id": "a", "prompt": "{task}"}, {"id": "b", "prompt": "{task}"}]}]}
    }));
    q.dispatcher();
    let (v, _) = q.json(&["workflow", "run", "two", "echo done"]);
    let done = v["taskId"].as_str().unwrap().to_string();
    assert_eq!(await_one(&q, &done)["status"], "succeeded");
    let (v, _) = q.json(&["workflow", "run", "two", "sleep 60"]);
    let live = v["taskId"].as_str().unwrap().to_string();
    wait_for(30, "the live run's first step running", || {
        q.raw()
            .query_row("SELECT count(*) FROM jobs WHERE workflow_run_id = ?1 AND state = 'running'", [&live], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
            == 1
    });
    let run = |id: &str| format!("SELECT * FROM workflow_runs WHERE id = '{id}'");
    let steps = |id: &str| format!("SELECT * FROM workflow_steps WHERE run_id = '{id}' ORDER BY idx");
    let jobs = |id: &str| format!("SELECT * FROM jobs WHERE workflow_run_id = '{id}' ORDER BY seq");

    // A finished run, its steps and its jobs.
    refused(
        &q,
        &format!("UPDATE workflow_runs SET response = 'forged' WHERE id = '{done}'"),
        "a finished workflow run never changes",
        &[&run(&done)],
    );
    every_column_refused(&q, "workflow_runs", &format!("id = '{done}'"), |c| match c {
        "id" | "seq" | "workflow_id" | "worktree_id" => "a workflow run's id, workflow and worktree never change",
        _ => "a finished workflow run never changes",
    });
    refused(
        &q,
        &format!("UPDATE workflow_steps SET error = 'forged' WHERE run_id = '{done}'"),
        "a finished workflow step never changes",
        &[&steps(&done)],
    );
    for idx in [0, 1] {
        every_column_refused(&q, "workflow_steps", &format!("run_id = '{done}' AND idx = {idx}"), |c| match c {
            "run_id" | "idx" | "step_id" | "worker_id" => {
                "a workflow step's run, index, step id and worker never change"
            }
            "job_id" => "a workflow step's job is set once, when the step starts",
            _ => "a finished workflow step never changes",
        });
    }
    refused(
        &q,
        &format!("UPDATE jobs SET workflow_run_id = '{live}' WHERE workflow_run_id = '{done}'"),
        "a job's worker profile, workflow run, step and worktree never change",
        &[&jobs(&done)],
    );

    // The running run: nothing of it is deleted, its step keeps its job.
    let all = [run(&live), steps(&live), jobs(&live)];
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    refused(
        &q,
        &format!("DELETE FROM workflow_runs WHERE id = '{live}'"),
        "a running workflow run cannot be deleted",
        &all,
    );
    refused(
        &q,
        &format!("DELETE FROM workflow_steps WHERE run_id = '{live}'"),
        "a step of a running workflow run cannot be deleted",
        &all,
    );
    refused(
        &q,
        &format!("DELETE FROM jobs WHERE workflow_run_id = '{live}'"),
        "an unfinished job cannot be deleted",
        &all,
    );
    refused(
        &q,
        &format!("UPDATE workflow_steps SET job_id = '{done}' WHERE run_id = '{live}' AND idx = 0"),
        "a workflow step's job is set once",
        &all,
    );
    refused(
        &q,
        &format!("UPDATE workflow_steps SET run_id = '{done}' WHERE run_id = '{live}' AND idx = 1"),
        "a workflow step's run, index, step id and worker never change",
        &all,
    );
    refused(
        &q,
        &format!("UPDATE jobs SET workflow_step = 1 WHERE workflow_run_id = '{live}'"),
        "a job's worker profile, workflow run, step and worktree never change",
        &all,
    );

    // The finished run deleted by hand goes whole: steps, jobs and their workers' rows.
    let step_jobs: Vec<String> = {
        let c = q.raw();
        let mut st = c.prepare("SELECT id FROM jobs WHERE workflow_run_id = ?1").unwrap();
        st.query_map([&done], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(step_jobs.len(), 2);
    accepted(&q, &format!("DELETE FROM workflow_runs WHERE id = '{done}'"));
    assert!(snapshot(&q, &steps(&done)).is_empty(), "its steps went with it");
    assert!(snapshot(&q, &jobs(&done)).is_empty(), "its jobs went with it");
    for j in &step_jobs {
        assert_eq!(snapshot(&q, &format!("SELECT * FROM workers WHERE job_id = '{j}'")).len(), 0, "worker rows of {j}");
    }
    // The running one ends the ordinary way, and can go then.
    let (v, _) = q.json(&["task", "cancel", &live]);
    assert_eq!(v["status"], "canceled", "{v}");
    accepted(&q, &format!("DELETE FROM workflow_runs WHERE id = '{live}'"));
    assert!(snapshot(&q, &steps(&live)).is_empty() && snapshot(&q, &jobs(&live)).is_empty());
}

#[test]
fn retry_pruning_and_deleting_a_finished_job_still_work() {
    let _g = common::heavy();
    let q = TestQueue::new();
    q.dispatcher();
    let a = q.start(&["echo a"]);
    let b = q.start(&["echo b"]);
    assert_eq!(await_one(&q, &a)["status"], "succeeded");
    assert_eq!(await_one(&q, &b)["status"], "succeeded");
    // Retry starts a new job; the finished one stays as it was.
    let before = snapshot(&q, &job_row(&a));
    let (v, code) = q.json(&["task", "retry", &a]);
    assert_eq!(code, 0, "{v}");
    let c = v["taskId"].as_str().unwrap().to_string();
    assert_ne!(c, a);
    let v = await_one(&q, &c);
    assert_eq!((v["status"].as_str(), v["responseText"].as_str()), (Some("succeeded"), Some("a")), "{v}");
    assert_eq!(snapshot(&q, &job_row(&a)), before);
    // A finished job deleted by hand takes its worker row.
    assert_eq!(q.scalar_i64(&format!("SELECT count(*) FROM workers WHERE job_id = '{b}'")), 1);
    accepted(&q, &format!("DELETE FROM jobs WHERE id = '{b}'"));
    assert_eq!(q.scalar_i64(&format!("SELECT count(*) FROM workers WHERE job_id = '{b}'")), 0);
    // Pruning deletes finished jobs with their worker rows.
    let mut cfg = common::default_config();
    cfg["retention"] = json!({"minAgeMs": 0, "maxJobs": 0});
    std::fs::write(q.project.join(".baton/config.json"), cfg.to_string()).unwrap();
    let out = q.ok(&["prune"]);
    assert!(out.contains("Deleted"), "{out}");
    assert_eq!(q.scalar_i64("SELECT count(*) FROM jobs"), 0);
    assert_eq!(q.scalar_i64("SELECT count(*) FROM workers"), 0);
}

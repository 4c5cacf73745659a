//! Many dispatchers, one PostgreSQL queue, on one machine: three nodes with distinct ids
//! (`BATON_NODE`) share the queue. Every task runs once; kill -9 of a node hands its tasks to
//! the others after `dispatcher.staleMs`; a node paused (SIGSTOP) past its lease wakes to find
//! its lease gone, stops its workers and writes nothing; a node whose clock is far off the
//! server's refuses to start. Skipped, saying so, without PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::common::pg::Pg;
use crate::common::{self, Kill, TestQueue, wait_for};

struct Shared {
    q: TestQueue,
    pg: Pg,
}

fn shared(overrides: serde_json::Value) -> Option<Shared> {
    let pg = Pg::start()?;
    let mut q = TestQueue::with_overrides(overrides);
    q.db = PathBuf::from(pg.create_db("q"));
    // Create the schema once, before three nodes race to.
    q.ok(&["init"]);
    Some(Shared { q, pg })
}

impl Shared {
    /// `baton run` as node `id`, its log in the temp dir.
    fn node(&self, id: &str) -> Kill {
        let log = std::fs::File::create(self.q.dir.path().join(format!("node-{id}.log"))).unwrap();
        let child = self.q.cmd().env("BATON_NODE", id).arg("run").stdout(Stdio::null()).stderr(log).spawn().unwrap();
        Kill(child)
    }

    fn log_of(&self, id: &str) -> String {
        std::fs::read_to_string(self.q.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }

    fn sql(&self, sql: &str) -> String {
        self.pg.psql_ok("q", sql)
    }

    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.sql(sql).lines().filter(|l| !l.is_empty()).map(|l| l.split('|').map(String::from).collect()).collect()
    }

    /// Start `n` tasks that append their id to `runs.log` after `sleep` seconds.
    fn start_tasks(&self, n: usize, sleep: &str) -> Vec<String> {
        let log = self.q.dir.path().join("runs.log");
        (0..n)
            .map(|_| self.q.start(&[&format!("sleep {sleep}; echo \"$BATON_TASK_ID\" >> '{}'", log.display())]))
            .collect()
    }

    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.q.dir.path().join("runs.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn count(&self, sql_where: &str) -> i64 {
        self.sql(&format!("SELECT count(*) FROM jobs WHERE {sql_where}")).parse().unwrap()
    }
}

/// The tasks whose workers these processes are (their `BATON_TASK_ID`).
fn tasks_of(pids: &[i32]) -> BTreeSet<String> {
    pids.iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/environ")).ok())
        .filter_map(|env| {
            env.split(|b| *b == 0)
                .find_map(|v| v.strip_prefix(b"BATON_TASK_ID=").map(|id| String::from_utf8_lossy(id).into_owned()))
        })
        .collect()
}

#[test]
fn three_nodes_run_300_tasks_each_once() {
    let _g = common::heavy();
    let Some(s) = shared(json!({"limits": {"maxConcurrency": 4}})) else { return };
    let ids = s.start_tasks(300, "0");
    let nodes = [s.node("n1"), s.node("n2"), s.node("n3")];
    wait_for(240, "all 300 tasks to finish", || s.count("state IN ('queued', 'running')") == 0);
    assert_eq!(s.count("state = 'succeeded'"), 300, "{}", s.log_of("n1"));
    let runs = s.runs();
    assert_eq!(runs.len(), 300, "each task ran exactly once");
    assert_eq!(runs.iter().collect::<BTreeSet<_>>().len(), 300);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>(), runs.iter().collect::<BTreeSet<_>>());
    assert_eq!(s.count("attempt <> 1"), 0, "no task was claimed twice");
    let by_node: BTreeMap<String, i64> = s
        .rows("SELECT owner, count(*) FROM jobs GROUP BY owner ORDER BY owner")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert!(by_node.keys().all(|n| ["n1", "n2", "n3"].contains(&n.as_str())), "{by_node:?}");
    assert!(by_node.len() >= 2, "the nodes shared the work: {by_node:?}");
    assert_eq!(s.sql("SELECT count(*) FROM nodes WHERE stopped_ms IS NULL"), "3", "three live nodes");
    let (st, _) = s.q.json(&["status"]);
    let ids: Vec<&str> = st["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["n1", "n2", "n3"], "{st}");
    assert!(s.q.ok(&["status"]).contains("Nodes:      n1 ("));
    // A node stopped cleanly says so: no one waits for its heartbeat to go stale.
    let [mut n1, n2, n3] = nodes;
    kill(Pid::from_raw(n1.pid()), Signal::SIGTERM).unwrap();
    wait_for(30, "n1 to drain and exit", || n1.exited().is_some());
    assert_eq!(s.sql("SELECT stopped_ms IS NOT NULL FROM nodes WHERE id = 'n1'"), "t");
    assert_eq!(s.sql("SELECT count(*) FROM nodes WHERE stopped_ms IS NULL"), "2");
    drop((n2, n3));
}

#[test]
fn kill_9_of_a_node_hands_its_tasks_to_the_others() {
    let _g = common::heavy();
    let Some(s) = shared(json!({
        "limits": {"maxConcurrency": 3},
        "jobs": {"retryBackoffMs": 100},
        "dispatcher": {"heartbeatMs": 200, "staleMs": 1500}
    })) else {
        return;
    };
    let mut n1 = s.node("n1");
    let ids = s.start_tasks(12, "2");
    wait_for(30, "n1 to run tasks", || s.count("state = 'running' AND owner = 'n1'") == 3);
    let taken: Vec<String> = s.rows("SELECT id FROM jobs WHERE state = 'running' AND owner = 'n1'").concat();
    let others = [s.node("n2"), s.node("n3")];
    kill(Pid::from_raw(n1.pid()), Signal::SIGKILL).unwrap();
    wait_for(60, "n1 to be gone", || n1.exited().is_some());
    wait_for(120, "every task to finish on the others", || s.count("state IN ('queued', 'running')") == 0);
    assert_eq!(s.count("state = 'succeeded'"), 12);
    for id in &taken {
        let row = &s.rows(&format!("SELECT owner, attempt FROM jobs WHERE id = '{id}'"))[0];
        assert_ne!(row[0], "n1", "{id} finished on another node");
        assert_eq!(row[1], "2", "{id} ran again after n1 died");
    }
    let runs = s.runs();
    for id in &ids {
        assert!(runs.contains(id), "{id} ran at least once");
    }
    assert_eq!(s.sql("SELECT stopped_ms IS NOT NULL FROM nodes WHERE id = 'n1'"), "t", "n1 was taken over");
    drop(others);
}

#[test]
fn a_node_paused_past_its_lease_wakes_stops_its_workers_and_writes_nothing() {
    let _g = common::heavy();
    let Some(s) = shared(json!({
        "limits": {"maxConcurrency": 2},
        "jobs": {"retryBackoffMs": 100, "killGraceMs": 300},
        "dispatcher": {"heartbeatMs": 200, "staleMs": 1500}
    })) else {
        return;
    };
    // A ends on its own while n1 sleeps (a late result); B outlives the pause (a worker to stop).
    // Both are queued before n1 starts, so it claims them together.
    let a = s.start_tasks(1, "4").remove(0);
    let b = s.start_tasks(1, "30").remove(0);
    let mut n1 = s.node("n1");
    wait_for(30, "n1 to run both", || s.count("state = 'running' AND owner = 'n1'") == 2);
    wait_for(30, "both workers to appear", || tasks_of(&common::live_workers_of(&s.q.db)).len() == 2);
    let workers: Vec<i32> = common::live_workers_of(&s.q.db);
    kill(Pid::from_raw(n1.pid()), Signal::SIGSTOP).unwrap();
    let n2 = s.node("n2");
    wait_for(60, "n2 to take both over", || s.count("owner = 'n2' AND attempt = 2") == 2);
    wait_for(30, "A's first worker to end while n1 sleeps", || {
        let live: Vec<i32> = workers.iter().copied().filter(|p| !common::is_dead(*p)).collect();
        tasks_of(&live) == BTreeSet::from([b.clone()])
    });
    wait_for(30, "A's second attempt to succeed on n2", || {
        s.count(&format!("id = '{a}' AND state = 'succeeded'")) == 1
    });
    kill(Pid::from_raw(n1.pid()), Signal::SIGCONT).unwrap();
    wait_for(30, "n1 to find its lease gone and exit", || n1.exited().is_some());
    assert!(s.log_of("n1").contains("lost the dispatcher lease"), "{}", s.log_of("n1"));
    for pid in &workers {
        assert!(common::is_dead(*pid), "n1's worker {pid} was stopped");
    }
    let row = &s.rows(&format!("SELECT owner, attempt, state FROM jobs WHERE id = '{a}'"))[0];
    assert_eq!(row, &["n2", "2", "succeeded"], "A: n1's late result never landed");
    let row = &s.rows(&format!("SELECT owner, attempt, state FROM jobs WHERE id = '{b}'"))[0];
    assert_eq!(row, &["n2", "2", "running"], "B runs on n2, untouched by n1");
    assert_eq!(s.runs().iter().filter(|r| **r == a).count(), 2, "A ran on both nodes (at least once across a pause)");
    s.q.ok(&["task", "cancel", &b]);
    wait_for(30, "B to be canceled on n2", || s.sql(&format!("SELECT state FROM jobs WHERE id = '{b}'")) == "canceled");
    drop(n2);
}

#[test]
fn a_node_whose_clock_is_far_off_the_servers_refuses_to_start() {
    if !common::test_hooks("the clock skew test hook") {
        return;
    }
    let _g = common::heavy();
    let Some(s) = shared(json!({"dispatcher": {"staleMs": 4000}})) else { return };
    // This machine three seconds behind: more than half of staleMs. Refused at once, registering nothing.
    let mut c = s.q.cmd();
    c.env("BATON_NODE", "skewed").env("BATON_TEST_CLOCK_SKEW_MS", "-3000").arg("run");
    let o = common::run_within(c, 30);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("ms behind the database server's"), "{err}");
    assert!(err.contains("NTP"), "{err}");
    assert_eq!(s.sql("SELECT count(*) FROM nodes WHERE id = 'skewed'"), "0", "nothing registered");
    // A small skew (0.9 s ahead) only warns; the node runs its task.
    let _node = {
        let log = std::fs::File::create(s.q.dir.path().join("node-near.log")).unwrap();
        let mut c = s.q.cmd();
        c.env("BATON_NODE", "near").env("BATON_TEST_CLOCK_SKEW_MS", "900").arg("run");
        Kill(c.stdout(Stdio::null()).stderr(log).spawn().unwrap())
    };
    let id = s.q.start(&["echo on time"]);
    let (v, _) = s.q.json(&["task", "await", &id, "--timeout", "30000"]);
    assert_eq!(v["status"], "succeeded", "{v}");
    assert!(s.log_of("near").contains("ahead of the database server's"), "{}", s.log_of("near"));
}

//! The PostgreSQL schema (`migrations/postgres/`) on a real, throwaway server: the same state
//! machines and guards as the SQLite file, refused from `psql` as they are from `sqlite3`, the
//! same tables and columns (plus the nodes that share a queue), and a notification per change.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::TestQueue;
use crate::common::pg::Pg;

/// Every migration, in order.
const MIGRATIONS: [&str; 2] = [
    include_str!("../../migrations/postgres/0001_queue.sql"),
    include_str!("../../migrations/postgres/0002_imports.sql"),
];

/// A cluster with one migrated database, `q`; None when PostgreSQL is not installed.
fn migrated() -> Option<Pg> {
    let pg = Pg::start()?;
    pg.create_db("q");
    for migration in MIGRATIONS {
        let out = pg.psql("q", &format!("BEGIN;\n{migration}\nCOMMIT;\n"));
        assert!(out.status.success(), "migration failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Some(pg)
}

/// An INSERT of a job with the given id and state, and `column, value` pairs added to or
/// replacing the defaults (profile coder, project /p, due at once).
fn job(id: &str, state: &str, extra: &[(&str, &str)]) -> String {
    let task = format!("'task {id}'");
    let (id, state) = (format!("'{id}'"), format!("'{state}'"));
    let mut cols: Vec<(&str, &str)> = vec![
        ("id", &id),
        ("state", &state),
        ("profile", "'coder'"),
        ("task", &task),
        ("requested_by", "'cli'"),
        ("project_dir", "'/p'"),
        ("argv", "'[]'"),
        ("max_attempts", "1"),
        ("run_after_ms", "0"),
        ("timeout_ms", "60000"),
        ("created_ms", "1"),
    ];
    for &(c, v) in extra {
        match cols.iter_mut().find(|(name, _)| *name == c) {
            Some(col) => col.1 = v,
            None => cols.push((c, v)),
        }
    }
    let names: Vec<&str> = cols.iter().map(|(c, _)| *c).collect();
    let values: Vec<&str> = cols.iter().map(|(_, v)| *v).collect();
    format!("INSERT INTO jobs ({}) VALUES ({});\n", names.join(", "), values.join(", "))
}

/// `sql` must fail with an error whose message contains `expect`, and leave `check` (a query)
/// answering as before.
fn refused(pg: &Pg, sql: &str, expect: &str, check: &str) {
    let before = pg.psql_ok("q", check);
    let out = pg.psql("q", sql);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted, should be refused: {sql}");
    assert!(err.contains(expect), "{sql}: expected an error with {expect:?}, got {err}");
    assert_eq!(pg.psql_ok("q", check), before, "{sql} changed {check}");
}

fn state(pg: &Pg, id: &str) -> String {
    pg.psql_ok("q", &format!("SELECT state || coalesce(':' || error, '') FROM jobs WHERE id = '{id}'"))
}

#[test]
fn jobs_move_only_along_their_transitions_and_finished_ones_never_change() {
    let Some(pg) = migrated() else { return };
    let all = "SELECT id, state, owner, epoch, attempt, task, finished_ms FROM jobs ORDER BY seq";
    pg.psql_ok("q", "INSERT INTO nodes VALUES ('n1', 1, 'o1', 'host', 1, NULL, 1, 1, NULL);");
    refused(&pg, &job("a", "running", &[]), "illegal job state for a new job", all);
    refused(&pg, &job("a", "waiting", &[]), "a job starts waiting exactly when it has dependencies", all);
    pg.psql_ok("q", &job("a", "queued", &[]));
    refused(&pg, "UPDATE jobs SET state = 'succeeded', finished_ms = 5 WHERE id = 'a'", "illegal job transition", all);
    refused(
        &pg,
        "UPDATE jobs SET state = 'running', owner = 'n1', epoch = 1, attempt = 2, started_ms = 2 WHERE id = 'a'",
        "attempt changes only when it is claimed",
        all,
    );
    refused(&pg, "UPDATE jobs SET owner = 'n1', epoch = 1 WHERE id = 'a'", "owner and epoch change only", all);
    refused(&pg, "UPDATE jobs SET state = 'running', attempt = 1 WHERE id = 'a'", "jobs_running_have_an_owner", all);
    refused(&pg, "UPDATE jobs SET profile = 'docs' WHERE id = 'a'", "never change", all);
    refused(&pg, "DELETE FROM jobs WHERE id = 'a'", "an unfinished job cannot be deleted", all);
    // The claim, then the result: both legal; with an onFinish hook configured, the result
    // queues the hook's run.
    pg.psql_ok("q", "INSERT INTO hooks VALUES ('onFinish', '[\"notify-send\", \"{taskId}\"]', 1)");
    pg.psql_ok(
        "q",
        "UPDATE jobs SET state = 'running', owner = 'n1', epoch = 1, attempt = 1, started_ms = 2 WHERE id = 'a'",
    );
    assert_eq!(pg.psql_ok("q", "SELECT count(*) FROM finish_hooks"), "0");
    pg.psql_ok("q", "UPDATE jobs SET state = 'succeeded', finished_ms = 5, response = 'ok' WHERE id = 'a'");
    assert_eq!(state(&pg, "a"), "succeeded");
    assert_eq!(pg.psql_ok("q", "SELECT task_id, finished_ms, attempts FROM finish_hooks"), "a|5|0");
    refused(
        &pg,
        "UPDATE finish_hooks SET finished_ms = 6",
        "task and finishing time never change",
        "SELECT * FROM finish_hooks",
    );
    refused(&pg, "UPDATE jobs SET response = 'edited' WHERE id = 'a'", "a finished job never changes", all);
    refused(&pg, "UPDATE jobs SET state = 'queued' WHERE id = 'a'", "illegal job transition", all);
    // Writing the same values is no change.
    pg.psql_ok("q", "UPDATE jobs SET response = 'ok' WHERE id = 'a'");
    // The state machine itself is fixed, whichever way one tries.
    let transitions = "SELECT from_state, to_state FROM job_transitions ORDER BY 1, 2";
    for sql in [
        "INSERT INTO job_transitions VALUES ('succeeded', 'queued')",
        "UPDATE job_transitions SET to_state = 'succeeded' WHERE from_state = 'queued'",
        "DELETE FROM job_transitions",
        "TRUNCATE job_transitions",
    ] {
        refused(&pg, sql, "job_transitions is a state machine", transitions);
    }
    // Pruning deletes a finished job, and its links go with it.
    pg.psql_ok("q", "DELETE FROM jobs WHERE id = 'a'");
    assert_eq!(pg.psql_ok("q", "SELECT count(*) FROM jobs"), "0");
}

#[test]
fn dedup_keys_dependencies_and_workflows_are_kept_by_the_database() {
    let Some(pg) = migrated() else { return };
    let all = "SELECT id, state, coalesce(error, '') FROM jobs ORDER BY seq";
    // One unfinished task per dedup key.
    pg.psql_ok("q", &job("k1", "queued", &[("dedup_key", "'nightly'")]));
    refused(&pg, &job("k2", "queued", &[("dedup_key", "'nightly'")]), "jobs_dedup", all);
    pg.psql_ok("q", "UPDATE jobs SET state = 'canceled', finished_ms = 3 WHERE id = 'k1'");
    pg.psql_ok("q", &job("k2", "queued", &[("dedup_key", "'nightly'")]));

    // Dependencies: written with their job, resolved as their dependencies end.
    pg.psql_ok("q", &job("d1", "queued", &[]));
    pg.psql_ok("q", &job("w1", "waiting", &[("after", "'[\"d1\"]'")]));
    pg.psql_ok("q", &job("w2", "waiting", &[("after", "'[\"w1\"]'")]));
    pg.psql_ok("q", &job("w3", "waiting", &[("after", "'[\"d1\"]'"), ("after_any", "1")]));
    assert_eq!(pg.psql_ok("q", "SELECT count(*) FROM job_deps"), "3");
    refused(&pg, "UPDATE jobs SET state = 'queued' WHERE id = 'w1'", "only once its dependencies are met", all);
    refused(&pg, "INSERT INTO job_deps VALUES ('w1', 'w2', 'succeeded')", "an older task", all);
    refused(&pg, "DELETE FROM job_deps WHERE job_id = 'w1'", "a dependency goes only with its job", all);
    refused(&pg, "DELETE FROM jobs WHERE id = 'k2'", "an unfinished job cannot be deleted", all);
    // d1 fails: w1 fails, and w2 behind it; w3 only needed d1 to finish, so it is queued.
    pg.psql_ok("q", "UPDATE jobs SET state = 'failed', finished_ms = 9, error = 'boom' WHERE id = 'd1'");
    assert_eq!(state(&pg, "w1"), "failed:Dependency d1 failed");
    assert_eq!(state(&pg, "w2"), "failed:Dependency w1 failed");
    assert_eq!(state(&pg, "w3"), "queued");
    // A dependency already met when the job is written: queued at once.
    pg.psql_ok("q", &job("w4", "waiting", &[("after", "'[\"k1\"]'"), ("after_any", "1")]));
    assert_eq!(state(&pg, "w4"), "queued");
    // One already failed: failed at once.
    pg.psql_ok("q", &job("w5", "waiting", &[("after", "'[\"d1\"]'")]));
    assert_eq!(state(&pg, "w5"), "failed:Dependency d1 failed");

    // A workflow run: its steps follow the run's state machine, and canceling the running
    // step's job cancels the run with its pending steps. The finish hook is the run's, not
    // its steps'.
    pg.psql_ok("q", "INSERT INTO hooks VALUES ('onFinish', '[\"true\"]', 1);");
    pg.psql_ok(
        "q",
        "INSERT INTO workflow_runs (id, workflow_id, name, state, task, requested_by, project_dir, max_attempts,
                                    max_carry_chars, created_ms)
         VALUES ('r1', 'two', 'Two', 'running', 't', 'cli', '/p', 1, 1000, 1);
         INSERT INTO workflow_steps (run_id, idx, step_id, title, worker_id, prompt, carry, timeout_ms, runner, state)
         VALUES ('r1', 0, 'a', 'A', 'coder', '{task}', 1, 60000, '[]', 'pending'),
                ('r1', 1, 'b', 'B', 'coder', '{carry}', 1, 60000, '[]', 'pending');",
    );
    let steps = "SELECT idx, state, coalesce(job_id, '') FROM workflow_steps ORDER BY idx";
    refused(
        &pg,
        "UPDATE workflow_steps SET state = 'succeeded' WHERE idx = 0",
        "illegal workflow step transition",
        steps,
    );
    refused(&pg, "DELETE FROM workflow_runs WHERE id = 'r1'", "a running workflow run cannot be deleted", steps);
    pg.psql_ok("q", &job("s0", "queued", &[("workflow_run_id", "'r1'"), ("workflow_step", "0")]));
    pg.psql_ok("q", "UPDATE workflow_steps SET state = 'running', job_id = 's0', started_ms = 2 WHERE idx = 0");
    refused(&pg, "UPDATE workflow_steps SET job_id = 'other' WHERE idx = 0", "job is set once", steps);
    pg.psql_ok("q", "UPDATE jobs SET state = 'canceled', finished_ms = 4, error = 'Canceled: by hand' WHERE id = 's0'");
    assert_eq!(pg.psql_ok("q", steps), "0|canceled|s0\n1|canceled|");
    assert_eq!(
        pg.psql_ok("q", "SELECT state, error, finished_ms FROM workflow_runs WHERE id = 'r1'"),
        "canceled|Canceled: by hand|4"
    );
    assert_eq!(pg.psql_ok("q", "SELECT task_id FROM finish_hooks"), "r1");
    refused(
        &pg,
        "UPDATE workflow_runs SET carry = 'x' WHERE id = 'r1'",
        "a finished workflow run never changes",
        steps,
    );
    // A finished run goes whole: its jobs and steps with it.
    pg.psql_ok("q", "DELETE FROM workflow_runs WHERE id = 'r1'");
    assert_eq!(pg.psql_ok("q", "SELECT count(*) FROM jobs WHERE workflow_run_id = 'r1'"), "0");
    assert_eq!(pg.psql_ok("q", "SELECT count(*) FROM workflow_steps"), "0");
}

#[test]
fn nodes_fence_their_workers_and_every_change_notifies() {
    let Some(pg) = migrated() else { return };
    let nodes = "SELECT id, epoch, owner FROM nodes ORDER BY id";
    pg.psql_ok("q", "INSERT INTO nodes VALUES ('n1', 1, 'o1', 'host', 1, NULL, 1, 1, NULL);");
    refused(&pg, "UPDATE nodes SET epoch = 0 WHERE id = 'n1'", "epoch only increases", nodes);
    refused(&pg, "UPDATE nodes SET owner = 'o2', pid = 2 WHERE id = 'n1'", "only with a higher epoch", nodes);
    // A take-over raises the epoch.
    pg.psql_ok("q", "UPDATE nodes SET owner = 'o2', pid = 2, epoch = 2 WHERE id = 'n1'");
    assert_eq!(pg.psql_ok("q", nodes), "n1|2|o2");

    // One live server worker per profile on each node; a second node may run its own.
    let workers = "SELECT id, owner, state FROM workers ORDER BY seq";
    let server = |id: &str, node: &str| {
        format!(
            "INSERT INTO workers (id, profile, kind, state, owner, epoch, started_ms, last_activity_ms)
             VALUES ('{id}', 'coder', 'server', 'starting', '{node}', 2, 1, 1);"
        )
    };
    pg.psql_ok("q", &server("s1", "n1"));
    refused(&pg, &server("s2", "n1"), "workers_one_server", workers);
    pg.psql_ok("q", &server("s3", "n2"));
    refused(&pg, "UPDATE workers SET state = 'busy' WHERE id = 's1'", "illegal worker transition", workers);
    refused(&pg, "UPDATE workers SET owner = 'n2' WHERE id = 's1'", "never change", workers);
    refused(&pg, "DELETE FROM workers WHERE id = 's1'", "a live worker's row cannot be deleted", workers);
    refused(&pg, "DELETE FROM nodes WHERE id = 'n1'", "live workers is not deleted", nodes);

    // Events only for the running attempt; every write to the queue notifies channel `baton`.
    pg.psql_ok("q", &job("e1", "queued", &[]));
    refused(
        &pg,
        "INSERT INTO job_events VALUES ('e1', 1, 1, 1, 'message', 'hi', NULL)",
        "only for the running attempt",
        "SELECT count(*) FROM job_events",
    );
    let listened = pg.psql_ok("q", &format!("LISTEN baton;\n{}\nSELECT 'done';\n", job("e2", "queued", &[])));
    assert!(listened.contains("notification \"baton\" with payload \"jobs\""), "no notification: {listened}");
}

/// Table and column names of the SQLite schema, as `sqlite3` sees a fresh queue, and its
/// schema version.
fn sqlite_columns() -> (BTreeMap<String, BTreeSet<String>>, i64) {
    let q = TestQueue::new();
    q.ok(&["init"]);
    let c = q.raw();
    let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    let mut st = c
        .prepare(
            "SELECT m.name, p.name FROM sqlite_schema m, pragma_table_info(m.name) p
              WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'",
        )
        .unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).unwrap() {
        let (t, c) = row.unwrap();
        out.entry(t).or_default().insert(c);
    }
    (out, version)
}

#[test]
fn both_schemas_hold_the_same_tables_and_columns() {
    let Some(pg) = migrated() else { return };
    let rows = pg.psql_ok(
        "q",
        "SELECT table_name, column_name FROM information_schema.columns
          WHERE table_schema = 'public' AND table_name IN
                (SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE')",
    );
    let mut pg_cols: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in rows.lines() {
        let (t, c) = line.split_once('|').expect("table|column");
        pg_cols.entry(t.to_string()).or_default().insert(c.to_string());
    }
    let (mut lite, version) = sqlite_columns();
    // What only one side has: one SQLite file has one leader (its lease row); PostgreSQL has
    // nodes, a task's node constraint, and its schema version in a table (SQLite keeps it in the
    // file header).
    assert!(lite.remove("dispatcher_lease").is_some(), "the SQLite schema has dispatcher_lease");
    assert!(pg_cols.remove("nodes").is_some(), "the PostgreSQL schema has nodes");
    assert!(pg_cols.remove("baton_schema").is_some(), "the PostgreSQL schema has baton_schema");
    assert!(pg_cols.get_mut("jobs").is_some_and(|c| c.remove("node")), "jobs.node on PostgreSQL");
    assert_eq!(pg_cols, lite, "tables and columns differ between migrations/postgres and migrations/sqlite");
    assert_eq!(pg.psql_ok("q", "SELECT application, version FROM baton_schema"), format!("baton|{version}"));
}

const CLAIM: &str = include_str!("../../queries/postgres/claim.sql");

/// The lock every claim takes first (see queries/postgres/claim.sql).
const CLAIM_LOCK: &str = "SELECT pg_advisory_xact_lock(1111577678);";

/// A psql script that prepares the claim as `claim(node, epoch, now, maxConcurrency,
/// maxWorkers, maxWorkersPerSession, batch, dirs)`.
fn prepare_claim() -> String {
    format!("PREPARE claim(text, bigint, bigint, bigint, bigint, bigint, bigint, text) AS\n{CLAIM};\n")
}

/// One claim in its own transaction; the ids claimed, sorted.
fn claim(pg: &Pg, node: &str, epoch: i64, max_running: i64, batch: i64, dirs: &str) -> Vec<String> {
    let out = pg.psql_ok(
        "q",
        &format!(
            "{}BEGIN;\n{CLAIM_LOCK}\nEXECUTE claim('{node}', {epoch}, 100, {max_running}, 100, 2, {batch}, '{dirs}');\nCOMMIT;\n",
            prepare_claim()
        ),
    );
    // RETURNING jobs.*: seq, then id; in no particular order (the store sorts them), so sorted.
    let mut ids: Vec<String> = out.lines().filter_map(|l| l.split('|').nth(1)).map(str::to_string).collect();
    ids.sort();
    ids
}

fn node(pg: &Pg, id: &str, epoch: i64) {
    pg.psql_ok("q", &format!("INSERT INTO nodes VALUES ('{id}', {epoch}, '{id}-1', 'host', 1, NULL, 1, 1, NULL);"));
}

#[test]
fn a_claim_keeps_node_project_pause_and_limit_rules_and_a_taken_over_node_claims_nothing() {
    let Some(pg) = migrated() else { return };
    node(&pg, "n1", 1);
    node(&pg, "n2", 1);
    let mut script = String::new();
    for i in 0..4 {
        script.push_str(&job(&format!("any{i}"), "queued", &[("priority", &i.to_string())]));
    }
    script.push_str(&job("n2only", "queued", &[("node", "'n2'"), ("priority", "10")]));
    script.push_str(&job("elsewhere", "queued", &[("project_dir", "'/q'"), ("priority", "10")]));
    script.push_str(&job("paused", "queued", &[("profile", "'docs'"), ("priority", "10")]));
    script.push_str(&job("later", "queued", &[("run_after_ms", "1000"), ("priority", "10")]));
    script.push_str("INSERT INTO pauses VALUES ('docs', 1, 'cli');");
    pg.psql_ok("q", &script);
    // A node taken over (epoch raised) claims nothing.
    pg.psql_ok("q", "UPDATE nodes SET epoch = 2, owner = 'n1-2' WHERE id = 'n1'");
    assert_eq!(claim(&pg, "n1", 1, 10, 10, "[\"/p\"]"), Vec::<String>::new());
    // n1 (epoch 2): by priority, only its own projects, never n2's task, the paused profile or
    // a task not yet due; at most maxConcurrency running.
    assert_eq!(claim(&pg, "n1", 2, 3, 10, "[\"/p\"]"), ["any1", "any2", "any3"]);
    assert_eq!(claim(&pg, "n1", 2, 3, 10, "[\"/p\"]"), Vec::<String>::new(), "maxConcurrency 3 is reached");
    assert_eq!(claim(&pg, "n2", 1, 5, 10, "[\"/p\"]"), ["any0", "n2only"]);
    assert_eq!(
        pg.psql_ok("q", "SELECT id, owner, epoch, attempt FROM jobs WHERE state = 'running' ORDER BY id"),
        "any0|n2|1|1\nany1|n1|2|1\nany2|n1|2|1\nany3|n1|2|1\nn2only|n2|1|1"
    );
    assert_eq!(claim(&pg, "n2", 1, 10, 10, "[\"/p\", \"/q\"]"), ["elsewhere"]);
    assert_eq!(state(&pg, "paused"), "queued");
    assert_eq!(state(&pg, "later"), "queued");
}

#[test]
fn concurrent_claims_from_three_nodes_never_share_a_job_or_pass_a_limit() {
    let Some(pg) = migrated() else { return };
    for n in ["n1", "n2", "n3"] {
        node(&pg, n, 1);
    }
    let mut script = String::from("BEGIN;\n");
    for i in 0..120 {
        // Every fourth task is the `docs` profile's, limited to one running at a time.
        let extra: Vec<(&str, &str)> =
            if i % 4 == 0 { vec![("profile", "'docs'"), ("profile_limit", "1")] } else { vec![] };
        script.push_str(&job(&format!("j{i:03}"), "queued", &extra));
    }
    script.push_str("COMMIT;\n");
    pg.psql_ok("q", &script);
    // Each node claims two at a time, reports what runs inside its claim's transaction, and
    // finishes what it runs after each claim; all three at once, until the queue is empty.
    let max_running = 5;
    let rounds = 80;
    let per_node = |n: &str| {
        let mut s = prepare_claim();
        s.push_str(&format!(
            "PREPARE finish AS UPDATE jobs SET state = 'succeeded', finished_ms = 200 WHERE owner = '{n}' AND state = 'running';\n"
        ));
        for _ in 0..rounds {
            s.push_str(&format!(
                "BEGIN;\n{CLAIM_LOCK}\nEXECUTE claim('{n}', 1, 100, {max_running}, 100, 2, 2, '[\"/p\"]');\n\
                 SELECT 'running ' || count(*) || ' docs ' || count(*) FILTER (WHERE profile = 'docs') FROM jobs WHERE state = 'running';\n\
                 COMMIT;\nEXECUTE finish;\n"
            ));
        }
        s
    };
    let outputs: Vec<(String, String)> = std::thread::scope(|sc| {
        let handles: Vec<_> = ["n1", "n2", "n3"]
            .into_iter()
            .map(|n| {
                let script = per_node(n);
                let pg = &pg;
                sc.spawn(move || (n.to_string(), pg.psql_ok("q", &script)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    let mut reports = 0;
    for (n, out) in &outputs {
        for line in out.lines() {
            if let Some(counts) = line.strip_prefix("running ") {
                let (running, docs) = counts.split_once(" docs ").unwrap();
                let (running, docs): (i64, i64) = (running.parse().unwrap(), docs.parse().unwrap());
                assert!(running <= max_running, "{n} saw {running} running (maxConcurrency {max_running})");
                assert!(docs <= 1, "{n} saw {docs} docs tasks running (its limit is 1)");
                reports += 1;
            } else if let Some(id) = line.split('|').nth(1) {
                let before = claimed.insert(id.to_string(), n.clone());
                assert!(before.is_none(), "{id} claimed by {} and by {n}", before.unwrap());
            }
        }
    }
    assert_eq!(reports, 3 * rounds, "every claim reported");
    assert_eq!(claimed.len(), 120, "every task claimed once");
    assert!(["n1", "n2", "n3"].iter().all(|n| claimed.values().any(|v| v == n)), "every node took part: {claimed:?}");
    assert_eq!(pg.psql_ok("q", "SELECT count(*) FROM jobs WHERE state = 'succeeded' AND attempt = 1"), "120");
}

#[test]
fn an_open_import_restores_rows_in_any_known_state_and_only_into_an_empty_queue() {
    let Some(pg) = migrated() else { return };
    let open = "INSERT INTO imports (source, format, started_ms) VALUES ('a file', 1, 1);\n";
    let finished = job("f", "succeeded", &[("finished_ms", "2"), ("attempt", "2")]);
    // Outside an import a finished job is no new job.
    refused(&pg, &finished, "illegal job state for a new job", "SELECT count(*) FROM jobs");
    // Inside one, in one transaction: a finished job, an event of its attempt, a run; an unknown
    // word is still refused, and the whole transaction with it.
    refused(
        &pg,
        &format!("BEGIN;\n{open}{finished}{}COMMIT;\n", job("x", "exploded", &[])),
        "illegal job state for a new job",
        "SELECT count(*) FROM jobs",
    );
    pg.psql_ok(
        "q",
        &format!(
            "BEGIN;\n{open}{finished}\
             INSERT INTO job_events (job_id, attempt, seq, at_ms, kind, text) VALUES ('f', 1, 1, 1, 'message', 'hi');\n\
             UPDATE imports SET finished_ms = 3, jobs = 1, runs = 0, events = 1;\nCOMMIT;\n"
        ),
    );
    assert_eq!(state(&pg, "f"), "succeeded");
    assert_eq!(pg.psql_ok("q", "SELECT count(*) FROM job_events"), "1");
    // Closed, the guards of new rows hold again; a second import finds tasks; the record stays.
    refused(&pg, &job("g", "failed", &[("finished_ms", "2")]), "illegal job state", "SELECT count(*) FROM jobs");
    refused(&pg, open, "only a queue that holds no tasks", "SELECT count(*) FROM imports");
    refused(&pg, "UPDATE imports SET finished_ms = 9;", "finished once", "SELECT finished_ms FROM imports");
    refused(&pg, "DELETE FROM imports;", "stays with the queue", "SELECT count(*) FROM imports");
    refused(&pg, "TRUNCATE imports;", "stays with the queue", "SELECT count(*) FROM imports");
}

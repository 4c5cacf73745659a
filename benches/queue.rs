//! baton's benchmark: every figure next to a baseline measured in the same run.
//!
//! `cargo bench --bench queue` (release). Real SQLite files in temp dirs, the real `baton`
//! binary for the dispatcher and the CLI, real worker processes; no mocks. One line per figure.
//! `cargo bench --bench queue -- c i` runs only the sections named (by letter).
//!
//! (a) job lifecycle, one autocommit statement per step, vs. raw rusqlite with the same SQL
//! (b) batched enqueue / claim 64 / grouped finish, vs. raw rusqlite with the same batching
//! (c) end-to-end jobs/s with a `/bin/true` worker, vs. a raw spawn-and-wait loop
//! (d) cross-process await wake latency
//! (e) `baton task start` wall time
//! (f) dispatcher RSS and idle CPU
//! (g) claim+finish throughput against growing backlogs
//! (h) two-step workflow runs/s vs. spawning the same steps by hand
//! (i) jobs/s through one long-lived ACP server worker (no-op agent) vs. oneshot spawns of the same program,
//!     and one worker serving one session at a time vs. four at once (`maxConcurrency` 4)
//! (j) a real agent (opencode) against a local fake model: a warm ACP worker vs. a cold
//!     `opencode run` per task, task start -> first activity event and -> answer
//! (k) a task in a git worktree of a repository of K_FILES files vs. the same task in the
//!     checkout, start -> finished, beside raw `git worktree add` + `remove` of the same repository
//! (l) claim+finish throughput of queued jobs beside 0, 10 000 and 100 000 `waiting` ones
//! (s) scale of the file: one claim beside 1 000 and 1 000 000 queued, `baton task list` and the
//!     dispatcher's RSS at 1 000 000, file size per 100 000 finished jobs before and after pruning

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use baton::api::{self, Caller, OpenOptions, Queue, StartParams};
use baton::job::{JobRow, JobState, NewJob, WorkerKind, now_ms};
use baton::store::{Durability, Store};

#[path = "common.rs"]
mod common;
use baton_sqlite::jobs::{self, ClaimLimits, Outcome};

/// The queue file's pool: the benchmark measures baton's SQLite statements themselves.
fn pool(store: &Store) -> &sqlx::SqlitePool {
    store.sqlite_pool().expect("the benchmark's queue is a file")
}
use rusqlite::ffi;
use sqlx::SqliteConnection;
use tokio::runtime::Runtime;

// ---------------------------------------------------------------------------------------------
// Sizes (printed in the header).

/// (a) lifecycles per round (ROUNDS rounds per side, alternating; the median is printed).
const A_JOBS: usize = 3000;
/// (b) jobs per round (ROUNDS rounds per side, alternating; the median is printed).
const B_JOBS: usize = 10_000;
/// (c) jobs through the real dispatcher, and its concurrency.
const C_JOBS: usize = 300;
const C_CONCURRENCY: usize = 4;
/// (c) runs at each of these concurrencies.
const C_LEVELS: [usize; 3] = [1, C_CONCURRENCY, 16];
/// (d) await samples.
const D_SAMPLES: usize = 40;
/// (e) `baton task start` runs.
const E_RUNS: usize = 30;
/// (f) idle window.
const F_IDLE: Duration = Duration::from_secs(5);
/// (g) backlog sizes and how many jobs to drain from each.
const G_BACKLOGS: [usize; 3] = [1000, 10_000, 100_000];
const G_DRAIN: usize = 10_000;
const ROUNDS: usize = 5;
/// (h) two-step workflow runs.
const H_RUNS: usize = 100;
/// (i) jobs per run (a server run, then oneshot runs at concurrency 1 and C_CONCURRENCY).
const I_JOBS: usize = 300;
/// (i) jobs per run of the sessions comparison with a turn that takes I_TURN.
const I_SLOW_JOBS: usize = 100;
const I_TURN: &str = "0.05";

/// (k) files in the repository, tasks per side (alternating), raw worktree adds.
const K_FILES: usize = 3000;
const K_TASKS: usize = 10;

/// (s) queued jobs in the small and the large file; single claims timed in each; finished jobs.
const S_QUEUED: [usize; 2] = [1000, 1_000_000];
const S_CLAIMS: usize = 300;
const S_FINISHED: usize = 100_000;
const S_LIST_RUNS: usize = 5;
const S_RUN_FOR: Duration = Duration::from_secs(5);

const OWNER: &str = "bench-owner";
const EPOCH: i64 = 1;

// ---------------------------------------------------------------------------------------------
// The very statements baton runs (src/store/jobs.rs loads the same files).

const INSERT_SQL: &str = include_str!("../queries/jobs/insert.sql");
const CLAIM_SQL: &str = include_str!("../queries/jobs/claim.sql");
const FINISH_SQL: &str = include_str!("../queries/jobs/finish_many.sql");

/// The migration files baton applies, in order (`migrations/sqlite/*.sql`): the raw baseline gets the
/// very same schema, whatever version the crate is at.
fn migration_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read migrations/sqlite/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".sql") && !name.ends_with(".down.sql")
        })
        .collect();
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------------
// Counting SQLite statements (round trips) with sqlite3_trace_v2. sqlx and rusqlite link the
// same libsqlite3-sys, so one callback serves both.

static BATON_STMTS: AtomicU64 = AtomicU64::new(0);
static RAW_STMTS: AtomicU64 = AtomicU64::new(0);

/// SQLITE_TRACE_STMT fires when a statement starts, and again at the start of each trigger
/// subprogram (text "-- <trigger name>"): count only top-level statements.
unsafe extern "C" fn count_stmt(mask: c_uint, ctx: *mut c_void, _stmt: *mut c_void, sql: *mut c_void) -> c_int {
    if mask == ffi::SQLITE_TRACE_STMT as c_uint {
        // SAFETY: for SQLITE_TRACE_STMT, `sql` is the statement's NUL-terminated text.
        let text = if sql.is_null() { &b""[..] } else { unsafe { CStr::from_ptr(sql as *const c_char) }.to_bytes() };
        // A trigger subprogram's text is the one-line comment "-- <trigger name>"; baton's own
        // statements may open with comment lines, but always go on to SQL on a later line.
        let trigger = text.starts_with(b"--") && !text.contains(&b'\n');
        if !trigger {
            // SAFETY: `ctx` is one of the static counters above (see `count_statements`).
            unsafe { &*(ctx as *const AtomicU64) }.fetch_add(1, Ordering::Relaxed);
        }
    }
    0
}

/// Install the statement counter on a connection handle.
///
/// # Safety
/// `db` must be a live connection that no other thread uses during this call.
unsafe fn count_statements(db: *mut ffi::sqlite3, counter: &'static AtomicU64) {
    let ctx = counter as *const AtomicU64 as *mut c_void;
    // SAFETY: per this function's contract; the callback and its context live for the program.
    let rc = unsafe { ffi::sqlite3_trace_v2(db, ffi::SQLITE_TRACE_STMT as c_uint, Some(count_stmt), ctx) };
    assert_eq!(rc, ffi::SQLITE_OK, "sqlite3_trace_v2");
}

async fn trace_sqlx(conn: &mut SqliteConnection) {
    let mut handle = conn.lock_handle().await.expect("lock handle");
    // SAFETY: the locked handle guarantees sqlx's worker thread is not using the connection.
    unsafe { count_statements(handle.as_raw_handle().as_ptr(), &BATON_STMTS) };
}

/// Trace every connection of a store's pool: hold all of them at once, install, release.
async fn trace_pool(store: &Store) {
    let max = pool(store).options().get_max_connections();
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(pool(store).acquire().await.expect("acquire"));
    }
    for c in &mut held {
        trace_sqlx(c).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

fn limits(batch: i64) -> ClaimLimits {
    ClaimLimits { batch, max_running: 64, max_workers: 1000, max_per_session: 1000 }
}

fn new_job(i: usize, now: i64) -> NewJob {
    common::job(i, now, "/tmp/baton-bench-project")
}

fn new_jobs(n: usize) -> Vec<NewJob> {
    let now = now_ms();
    (0..n).map(|i| new_job(i, now)).collect()
}

fn outcome(id: &str) -> Outcome {
    Outcome {
        id: id.to_string(),
        state: baton::job::JobState::Succeeded,
        response: Some("ok".into()),
        response_chars: Some(2),
        error: None,
        report: None,
        exit_code: Some(0),
        output_tail: None,
        tokens: None,
        input_tokens: None,
        output_tokens: None,
        cached_tokens: None,
        cost_usd: None,
    }
}

/// `12345.6` -> `"12 346"`.
fn group(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nearest-rank percentile of sorted samples.
fn pct<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A queue whose lease is held by the benchmark's owner (claims and results are fenced by it).
async fn open_store(dir: &Path) -> Store {
    let store =
        Store::open(&dir.join("baton.db"), &dir.join("migrate.lock"), Durability::Normal).await.expect("Store::open");
    let mut conn = pool(&store).acquire().await.expect("acquire");
    let epoch =
        baton_sqlite::lease::acquire(&mut conn, OWNER, i64::from(std::process::id()), now_ms()).await.expect("lease");
    assert_eq!(epoch, EPOCH);
    drop(conn);
    store
}

// ---------------------------------------------------------------------------------------------
// The raw rusqlite baseline: same schema, same pragmas, same statements, same binds.

fn open_raw(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("open raw");
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    // auto_vacuum first: it only takes effect before the first table exists.
    c.execute_batch("PRAGMA auto_vacuum = INCREMENTAL").unwrap();
    let mode: String = c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    c.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON").unwrap();
    for f in migration_files() {
        let sql = std::fs::read_to_string(&f).expect("read migration");
        c.execute_batch(&sql).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    c.execute(
        "INSERT INTO dispatcher_lease (singleton, owner, epoch, pid, started_ms, heartbeat_ms) VALUES (1, ?1, ?2, 0, 0, 0)",
        rusqlite::params![OWNER, EPOCH],
    )
    .unwrap();
    // SAFETY: the connection was just opened on this thread and is used only here.
    unsafe { count_statements(c.handle(), &RAW_STMTS) };
    c
}

fn raw_insert(c: &rusqlite::Connection, j: &NewJob) {
    let mut st = c.prepare_cached(INSERT_SQL).unwrap();
    st.execute(rusqlite::params![
        j.id,
        j.kind,
        j.profile,
        j.task,
        j.session,
        j.requested_by,
        j.project_dir,
        j.argv,
        j.prompt_stdin,
        j.model,
        j.env,
        j.attachments,
        j.priority,
        j.max_attempts,
        j.run_after_ms,
        j.timeout_ms,
        j.profile_limit,
        j.created_ms,
        j.dedup_key,
        j.workflow_run_id,
        j.workflow_step,
        j.output,
        j.worker_kind.as_str(),
        j.system_prompt,
        j.permissions,
        j.worktree_id,
        j.labels,
        j.after,
        j.after_any,
    ])
    .unwrap();
}

/// A state word decoded as the store decodes it.
fn word<T>(r: &rusqlite::Row, i: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text = r.get_ref(i)?.as_str()?;
    parse(text).ok_or_else(|| rusqlite::Error::InvalidColumnType(i, text.to_string(), rusqlite::types::Type::Text))
}

fn raw_row(r: &rusqlite::Row) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        state: word(r, 2, JobState::parse)?,
        kind: r.get(3)?,
        profile: r.get(4)?,
        task: r.get(5)?,
        session: r.get(6)?,
        requested_by: r.get(7)?,
        project_dir: r.get(8)?,
        argv: r.get(9)?,
        prompt_stdin: r.get(10)?,
        model: r.get(11)?,
        env: r.get(12)?,
        attachments: r.get(13)?,
        priority: r.get(14)?,
        attempt: r.get(15)?,
        max_attempts: r.get(16)?,
        run_after_ms: r.get(17)?,
        timeout_ms: r.get(18)?,
        profile_limit: r.get(19)?,
        created_ms: r.get(20)?,
        started_ms: r.get(21)?,
        finished_ms: r.get(22)?,
        response: r.get(23)?,
        response_chars: r.get(24)?,
        error: r.get(25)?,
        report: r.get(26)?,
        exit_code: r.get(27)?,
        owner: r.get(28)?,
        epoch: r.get(29)?,
        output_tail: r.get(30)?,
        cancel_requested_ms: r.get(31)?,
        cancel_reason: r.get(32)?,
        workflow_run_id: r.get(33)?,
        workflow_step: r.get(34)?,
        dedup_key: r.get(35)?,
        tokens: r.get(36)?,
        cost_usd: r.get(37)?,
        output: r.get(38)?,
        worker_kind: word(r, 39, WorkerKind::parse)?,
        input_tokens: r.get(40)?,
        output_tokens: r.get(41)?,
        cached_tokens: r.get(42)?,
        system_prompt: r.get(43)?,
        permissions: r.get(44)?,
        worktree_id: r.get(45)?,
        labels: r.get(46)?,
        after: r.get(47)?,
        after_any: r.get(48)?,
    })
}

fn raw_claim(c: &rusqlite::Connection, now: i64, l: ClaimLimits) -> Vec<JobRow> {
    let mut st = c.prepare_cached(CLAIM_SQL).unwrap();
    let mut rows: Vec<JobRow> = st
        .query_map(
            rusqlite::params![OWNER, EPOCH, now, l.max_running, l.max_workers, l.max_per_session, l.batch],
            raw_row,
        )
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.seq.cmp(&b.seq)));
    rows
}

/// The raw side of `jobs::finish_many`: the same statement with the same JSON batch; returns how
/// many rows it wrote.
fn raw_finish(c: &rusqlite::Connection, batch: &[Outcome], now: i64) -> usize {
    let json = serde_json::to_string(batch).unwrap();
    let mut st = c.prepare_cached(FINISH_SQL).unwrap();
    let rows = st.query_map(rusqlite::params![json, now, OWNER, EPOCH], |r| r.get::<_, String>(0)).unwrap();
    rows.count()
}

// ---------------------------------------------------------------------------------------------
// (a) lifecycle, one statement per step.

/// Time spent in each step: insert, claim, finish.
type Steps = [Duration; 3];

async fn baton_lifecycles(conn: &mut SqliteConnection, batch: &[NewJob]) -> Steps {
    let mut steps = [Duration::ZERO; 3];
    for j in batch {
        let t = Instant::now();
        jobs::insert(conn, j).await.expect("insert");
        let t1 = Instant::now();
        let claimed = jobs::claim(conn, OWNER, EPOCH, now_ms(), limits(1)).await.expect("claim");
        let t2 = Instant::now();
        assert_eq!(claimed.len(), 1, "claim batch 1");
        assert!(jobs::finish(conn, &outcome(&claimed[0].id), OWNER, EPOCH, now_ms()).await.expect("finish"));
        let t3 = Instant::now();
        steps[0] += t1 - t;
        steps[1] += t2 - t1;
        steps[2] += t3 - t2;
    }
    steps
}

fn raw_lifecycles(c: &rusqlite::Connection, batch: &[NewJob]) -> Steps {
    let mut steps = [Duration::ZERO; 3];
    for j in batch {
        let t = Instant::now();
        raw_insert(c, j);
        let t1 = Instant::now();
        let claimed = raw_claim(c, now_ms(), limits(1));
        let t2 = Instant::now();
        assert_eq!(claimed.len(), 1, "raw claim batch 1");
        assert_eq!(raw_finish(c, &[outcome(&claimed[0].id)], now_ms()), 1);
        let t3 = Instant::now();
        steps[0] += t1 - t;
        steps[1] += t2 - t1;
        steps[2] += t3 - t2;
    }
    steps
}

/// The simplest correct SQLite queue, for (a)'s floor: one table, one partial index, a claim by
/// `UPDATE ... RETURNING`, WAL and synchronous=NORMAL, through rusqlite. No transitions table,
/// no triggers, no worker rows, no lease fence: what a queue costs before it guards anything.
fn open_minimal(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("open minimal");
    let mode: String = c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    c.execute_batch(
        "PRAGMA synchronous = NORMAL;
         CREATE TABLE q (
             id TEXT PRIMARY KEY NOT NULL, state TEXT NOT NULL, task TEXT NOT NULL,
             priority INTEGER NOT NULL, run_after_ms INTEGER NOT NULL, owner TEXT,
             response TEXT, exit_code INTEGER, created_ms INTEGER NOT NULL,
             started_ms INTEGER, finished_ms INTEGER
         );
         CREATE INDEX q_ready ON q (priority DESC, run_after_ms) WHERE state = 'queued';",
    )
    .unwrap();
    c
}

fn minimal_lifecycles(c: &rusqlite::Connection, batch: &[NewJob]) -> Steps {
    let mut steps = [Duration::ZERO; 3];
    for j in batch {
        let t = Instant::now();
        c.prepare_cached(
            "INSERT INTO q (id, state, task, priority, run_after_ms, created_ms) VALUES (?1, 'queued', ?2, ?3, ?4, ?5)",
        )
        .unwrap()
        .execute(rusqlite::params![j.id, j.task, j.priority, j.run_after_ms, j.created_ms])
        .unwrap();
        let t1 = Instant::now();
        let now = now_ms();
        let id: String = c
            .prepare_cached(
                "UPDATE q SET state = 'running', owner = ?1, started_ms = ?2
                  WHERE id = (SELECT id FROM q WHERE state = 'queued' AND run_after_ms <= ?2
                               ORDER BY priority DESC, run_after_ms LIMIT 1)
                 RETURNING id",
            )
            .unwrap()
            .query_row(rusqlite::params![OWNER, now], |r| r.get(0))
            .expect("minimal claim");
        let t2 = Instant::now();
        let n = c
            .prepare_cached(
                "UPDATE q SET state = 'succeeded', response = 'ok', exit_code = 0, finished_ms = ?3
                  WHERE id = ?1 AND state = 'running' AND owner = ?2",
            )
            .unwrap()
            .execute(rusqlite::params![id, OWNER, now_ms()])
            .unwrap();
        assert_eq!(n, 1, "minimal finish");
        let t3 = Instant::now();
        steps[0] += t1 - t;
        steps[1] += t2 - t1;
        steps[2] += t3 - t2;
    }
    steps
}

/// What the schema's guards cost, group by group: baton's SQL through rusqlite on a fresh file
/// with one group of triggers (or indexes) dropped, beside the same with everything kept.
const A_GROUPS: [(&str, &[&str]); 7] = [
    ("transitions", &["jobs_insert_guard", "jobs_state_guard"]),
    (
        "hand-edit guards",
        &[
            "jobs_id_guard",
            "jobs_owner_guard",
            "jobs_link_guard",
            "jobs_labels_guard",
            "jobs_finished_guard",
            "jobs_waiting_guard",
        ],
    ),
    ("worker release", &["jobs_release_worker", "jobs_release_server_worker"]),
    ("workflow cancel", &["jobs_cancel_workflow"]),
    ("dependencies", &["jobs_deps_insert", "jobs_dependents_fail", "jobs_dependents_queue"]),
    ("finish hooks", &["jobs_finish_hook", "jobs_finish_hook_insert"]),
    (
        "secondary indexes",
        &["jobs_finished", "jobs_session", "jobs_workflow_run", "jobs_worktree", "jobs_waiting", "jobs_dedup"],
    ),
];

fn guard_costs(dir: &Path) {
    let run = |name: &str, drops: &[&str]| {
        let c = open_raw(&dir.join(format!("guards-{}.db", name.replace(' ', "-"))));
        for d in drops {
            let kind = if A_GROUPS[6].1.contains(d) { "INDEX" } else { "TRIGGER" };
            c.execute_batch(&format!("DROP {kind} {d}")).unwrap_or_else(|e| panic!("drop {d}: {e}"));
        }
        raw_lifecycles(&c, &new_jobs(200));
        median((0..ROUNDS).map(|_| rate(A_JOBS, total(&raw_lifecycles(&c, &new_jobs(A_JOBS))))).collect())
    };
    let all = run("all", &[]);
    let parts: Vec<String> = A_GROUPS
        .iter()
        .map(|(name, drops)| {
            let r = run(name, drops);
            format!("{name} {} ({:+.0} %)", group(r), (r / all - 1.0) * 100.0)
        })
        .collect();
    println!(
        "    baton's SQL with one group dropped (jobs/s, change vs all kept {}): {}",
        group(all),
        parts.join(" | ")
    );
}

fn total(s: &Steps) -> Duration {
    s.iter().sum()
}

fn bench_lifecycle(rt: &Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let raw = open_raw(&dir.path().join("raw.db"));
    let minimal = open_minimal(&dir.path().join("minimal.db"));
    rt.block_on(async {
        let store = open_store(dir.path()).await;
        trace_pool(&store).await;
        let mut conn = pool(&store).acquire().await.unwrap();
        // Warm both sides (statement caches, file growth).
        baton_lifecycles(&mut conn, &new_jobs(200)).await;
        raw_lifecycles(&raw, &new_jobs(200));
        minimal_lifecycles(&minimal, &new_jobs(200));
        let (mut b_runs, mut r_runs): (Vec<Steps>, Vec<Steps>) = (Vec::new(), Vec::new());
        let mut m_runs: Vec<Steps> = Vec::new();
        let (mut b_stmts, mut r_stmts) = (0, 0);
        for _ in 0..ROUNDS {
            let batch = new_jobs(A_JOBS);
            let s0 = BATON_STMTS.load(Ordering::Relaxed);
            b_runs.push(baton_lifecycles(&mut conn, &batch).await);
            b_stmts += BATON_STMTS.load(Ordering::Relaxed) - s0;
            let batch = new_jobs(A_JOBS);
            let s0 = RAW_STMTS.load(Ordering::Relaxed);
            r_runs.push(raw_lifecycles(&raw, &batch));
            r_stmts += RAW_STMTS.load(Ordering::Relaxed) - s0;
            m_runs.push(minimal_lifecycles(&minimal, &new_jobs(A_JOBS)));
        }
        let b = median(b_runs.iter().map(|s| rate(A_JOBS, total(s))).collect());
        let r = median(r_runs.iter().map(|s| rate(A_JOBS, total(s))).collect());
        let m = median(m_runs.iter().map(|s| rate(A_JOBS, total(s))).collect());
        let per = |n: u64| n as f64 / (ROUNDS * A_JOBS) as f64;
        println!(
            "(a) lifecycle, one tx per step:  baton {} jobs/s | raw rusqlite {} jobs/s | ratio {:.2}x (target >= 0.35x)",
            group(b),
            group(r),
            b / r
        );
        println!(
            "    minimal queue (one table, one index, UPDATE ... RETURNING claim) {} jobs/s | baton/minimal {:.2}x (goal >= 0.5x) | baton's SQL/minimal {:.2}x",
            group(m),
            b / m,
            r / m
        );
        println!(
            "    SQLite statements (round trips) per lifecycle: baton {:.2} | raw {:.2}  [insert, claim batch 1, finish; one pooled connection held]",
            per(b_stmts),
            per(r_stmts)
        );
        let us = |runs: &[Steps], k: usize| {
            runs.iter().map(|s| s[k]).sum::<Duration>().as_secs_f64() * 1e6 / (ROUNDS * A_JOBS) as f64
        };
        println!(
            "    mean us per step (insert / claim / finish): baton {:.0} / {:.0} / {:.0} | raw {:.0} / {:.0} / {:.0} | minimal {:.0} / {:.0} / {:.0}",
            us(&b_runs, 0),
            us(&b_runs, 1),
            us(&b_runs, 2),
            us(&r_runs, 0),
            us(&r_runs, 1),
            us(&r_runs, 2),
            us(&m_runs, 0),
            us(&m_runs, 1),
            us(&m_runs, 2)
        );
        drop(conn);
        store.close().await;
    });
    guard_costs(dir.path());
}

// ---------------------------------------------------------------------------------------------
// (b) batched.

/// Returns (enqueue time, drain time).
async fn baton_batched(store: &Store, batch: &[NewJob]) -> (Duration, Duration) {
    let t = Instant::now();
    let mut tx = pool(store).begin().await.unwrap();
    for j in batch {
        jobs::insert(&mut tx, j).await.expect("insert");
    }
    tx.commit().await.unwrap();
    let enqueue = t.elapsed();
    let t = Instant::now();
    let mut done = 0;
    loop {
        let mut conn = pool(store).acquire().await.unwrap();
        let claimed = jobs::claim(&mut conn, OWNER, EPOCH, now_ms(), limits(64)).await.expect("claim");
        drop(conn);
        if claimed.is_empty() {
            break;
        }
        let outcomes: Vec<Outcome> = claimed.iter().map(|j| outcome(&j.id)).collect();
        let mut conn = pool(store).acquire().await.unwrap();
        let written = jobs::finish_many(&mut conn, &outcomes, OWNER, EPOCH, now_ms()).await.expect("finish");
        assert_eq!(written.len(), claimed.len());
        done += claimed.len();
    }
    assert_eq!(done, batch.len());
    (enqueue, t.elapsed())
}

fn raw_batched(c: &mut rusqlite::Connection, batch: &[NewJob]) -> (Duration, Duration) {
    let t = Instant::now();
    let tx = c.transaction().unwrap();
    for j in batch {
        raw_insert(&tx, j);
    }
    tx.commit().unwrap();
    let enqueue = t.elapsed();
    let t = Instant::now();
    let mut done = 0;
    loop {
        let claimed = raw_claim(c, now_ms(), limits(64));
        if claimed.is_empty() {
            break;
        }
        let outcomes: Vec<Outcome> = claimed.iter().map(|j| outcome(&j.id)).collect();
        assert_eq!(raw_finish(c, &outcomes, now_ms()), claimed.len());
        done += claimed.len();
    }
    assert_eq!(done, batch.len());
    (enqueue, t.elapsed())
}

fn bench_batched(rt: &Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = open_raw(&dir.path().join("raw.db"));
    rt.block_on(async {
        let store = open_store(dir.path()).await;
        trace_pool(&store).await;
        baton_batched(&store, &new_jobs(500)).await;
        raw_batched(&mut raw, &new_jobs(500));
        let mut rows: Vec<[f64; 6]> = Vec::new();
        let (mut b_stmts, mut r_stmts) = (0, 0);
        for _ in 0..ROUNDS {
            let batch = new_jobs(B_JOBS);
            let s0 = BATON_STMTS.load(Ordering::Relaxed);
            let (be, bd) = baton_batched(&store, &batch).await;
            b_stmts += BATON_STMTS.load(Ordering::Relaxed) - s0;
            let batch = new_jobs(B_JOBS);
            let s0 = RAW_STMTS.load(Ordering::Relaxed);
            let (re, rd) = raw_batched(&mut raw, &batch);
            r_stmts += RAW_STMTS.load(Ordering::Relaxed) - s0;
            rows.push([
                rate(B_JOBS, be + bd),
                rate(B_JOBS, re + rd),
                rate(B_JOBS, be),
                rate(B_JOBS, re),
                rate(B_JOBS, bd),
                rate(B_JOBS, rd),
            ]);
        }
        let m = |k: usize| median(rows.iter().map(|r| r[k]).collect());
        println!(
            "(b) batched (enqueue in 1 tx, claim 64, finish each batch in 1 statement):  baton {} jobs/s | raw rusqlite {} jobs/s | ratio {:.2}x (target >= 0.5x)",
            group(m(0)),
            group(m(1)),
            m(0) / m(1)
        );
        println!(
            "    enqueue only: baton {} | raw {} jobs/s (ratio {:.2}x);  claim+finish only: baton {} | raw {} jobs/s (ratio {:.2}x)",
            group(m(2)),
            group(m(3)),
            m(2) / m(3),
            group(m(4)),
            group(m(5)),
            m(4) / m(5)
        );
        let per = |n: u64| n as f64 / (ROUNDS * B_JOBS) as f64;
        println!("    SQLite statements per job: baton {:.3} | raw {:.3}", per(b_stmts), per(r_stmts));
        store.close().await;
    });
}

// ---------------------------------------------------------------------------------------------
// Real queues and the real binary, for (c) to (f).

/// The release `baton` binary cargo built with this bench.
fn baton_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_baton") {
        return PathBuf::from(p);
    }
    // target/release/deps/queue-<hash> -> target/release/baton
    let exe = std::env::current_exe().expect("current_exe");
    let p = exe.parent().and_then(Path::parent).expect("target dir").join("baton");
    assert!(p.is_file(), "baton binary not found at {}", p.display());
    p
}

/// A temp project with `.git/` and `.baton/config.json` (HOME and XDG_CONFIG_HOME are set for
/// the whole bench process in `main`).
struct Project {
    dir: tempfile::TempDir,
    project: PathBuf,
    db: PathBuf,
}

impl Project {
    fn new(config: serde_json::Value) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir_all(project.join(".git")).unwrap();
        std::fs::create_dir_all(project.join(".baton")).unwrap();
        std::fs::write(project.join(".baton/config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let db = project.join(".baton/baton.db");
        Project { dir, project, db }
    }

    async fn queue(&self) -> Queue {
        Queue::open(&OpenOptions { cwd: self.project.clone(), db: Some(self.db.clone()), config_paths: None })
            .await
            .expect("Queue::open")
    }

    fn cmd(&self, bin: &Path) -> Command {
        let mut c = Command::new(bin);
        c.current_dir(&self.project).env("BATON_DB", &self.db).env("BATON_LOG", "warn").stdin(Stdio::null());
        c
    }

    fn raw(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(&self.db).expect("open raw");
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        c
    }
}

/// A running `baton run`; killed (SIGKILL) if still alive when dropped.
struct Dispatcher {
    child: Child,
}

impl Dispatcher {
    fn start(p: &Project, bin: &Path) -> Dispatcher {
        Dispatcher::start_logging(p, bin, "warn")
    }

    /// With `filter` as its `BATON_LOG`, logging to `dispatcher.log` in the project's temp dir.
    fn start_logging(p: &Project, bin: &Path, filter: &str) -> Dispatcher {
        let log = std::fs::File::create(p.dir.path().join("dispatcher.log")).unwrap();
        let child = p
            .cmd(bin)
            .arg("run")
            .env("BATON_LOG", filter)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dispatcher");
        Dispatcher { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (up to 10 s) for a clean drain.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("dispatcher {} did not stop on SIGTERM within 10 s; killing it", self.child.id());
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn caller() -> Caller {
    Caller { session: None, requested_by: "cli:bench".into() }
}

fn worker_params(task: &str) -> StartParams {
    StartParams {
        task: task.into(),
        kind: Some("worker".into()),
        worker_id: Some("coder".into()),
        ..Default::default()
    }
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    let after = &s[s.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime field 15.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

// ---------------------------------------------------------------------------------------------
// (h) two-step workflows with no-op steps that print a short handoff.

/// The no-op step: prints a one-line handoff.
const H_STEP: [&str; 3] = ["/bin/sh", "-c", "printf '## Summary\\nok\\n'"];

/// The (h) baseline: the same steps spawned by hand, C_CONCURRENCY threads each running whole
/// runs (step a, then step b), H_RUNS runs in all; with `logs`, each step gets its own log
/// directory and files as a baton worker does.
fn two_step_loop(logs: Option<&Path>) -> Duration {
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..C_CONCURRENCY {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= H_RUNS {
                        break;
                    }
                    for step in 0..2 {
                        let mut cmd = Command::new(H_STEP[0]);
                        cmd.args(&H_STEP[1..]).stdin(Stdio::null());
                        match logs {
                            Some(dir) => {
                                let d = dir.join(format!("run-{i}-{step}"));
                                std::fs::create_dir(&d).unwrap();
                                let f = |n: &str| std::fs::File::create(d.join(n)).unwrap();
                                cmd.stdout(f("1.out")).stderr(f("1.err"));
                            }
                            None => {
                                cmd.stdout(Stdio::piped()).stderr(Stdio::null());
                            }
                        }
                        assert!(cmd.output().expect("spawn step").status.success());
                    }
                }
            });
        }
    });
    t.elapsed()
}

fn bench_workflows(rt: &Runtime, bin: &Path) {
    let p = Project::new(serde_json::json!({
        "runner": H_STEP,
        "autoSpawn": false,
        "limits": {"maxConcurrency": C_CONCURRENCY},
        "workflows": {"definitions": [{"id": "two", "steps": [{"id": "a", "carry": true}, {"id": "b", "carry": true}]}]},
    }));
    rt.block_on(async {
        let q = p.queue().await;
        for i in 0..H_RUNS {
            let params = StartParams {
                task: format!("run {i}"),
                kind: Some("workflow".into()),
                workflow_id: Some("two".into()),
                ..Default::default()
            };
            let a = api::start(&q, &caller(), params).await.expect("api::start workflow");
            assert_eq!(a.status, JobState::Running, "{a:?}");
        }
        q.store.close().await;
    });
    let raw = p.raw();
    let t = Instant::now();
    let d = Dispatcher::start(&p, bin);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done: i64 = raw
            .query_row(
                "SELECT count(*) FROM workflow_runs WHERE state IN ('succeeded', 'failed', 'canceled')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if done as usize == H_RUNS {
            break;
        }
        assert!(Instant::now() < deadline, "(h): runs still unfinished after 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let wall = t.elapsed();
    d.stop();
    let ok: i64 =
        raw.query_row("SELECT count(*) FROM workflow_runs WHERE state = 'succeeded'", [], |r| r.get(0)).unwrap();
    assert_eq!(ok as usize, H_RUNS, "(h): every run succeeds");
    let (first, last): (i64, i64) = raw
        .query_row("SELECT min(started_ms), max(finished_ms) FROM jobs", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    let steady = Duration::from_millis((last - first).max(1) as u64);
    let by_hand = two_step_loop(None);
    let logs = tempfile::tempdir().unwrap();
    let by_hand_logs = two_step_loop(Some(logs.path()));
    let (b, h, hl) = (rate(H_RUNS, steady), rate(H_RUNS, by_hand), rate(H_RUNS, by_hand_logs));
    println!(
        "(h) two-step workflows (no-op steps printing a handoff), {H_RUNS} runs, concurrency {C_CONCURRENCY}:  baton {} runs/s | steps by hand {} runs/s | machinery overhead {:+.0}% (target < +20%)",
        group(b),
        group(h),
        (h / b - 1.0) * 100.0
    );
    println!(
        "    baton wall {:.0} ms from dispatcher spawn; by hand with per-step log files as a worker has: {} runs/s (overhead {:+.0}%)",
        ms(wall),
        group(hl),
        (hl / b - 1.0) * 100.0
    );
}

// ---------------------------------------------------------------------------------------------
// (c) end to end with /bin/true workers.

/// The (c) baseline: `concurrency` threads each spawning `/bin/true` and waiting for it, C_JOBS
/// in all. With `logs`, each run first gets its own directory and two log files as stdout and
/// stderr, as a baton worker does.
fn spawn_loop(concurrency: usize, logs: Option<&Path>) -> Duration {
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= C_JOBS {
                        break;
                    }
                    let mut cmd = Command::new("/bin/true");
                    cmd.stdin(Stdio::null());
                    match logs {
                        Some(dir) => {
                            let d = dir.join(format!("job-{i}"));
                            std::fs::create_dir(&d).unwrap();
                            let f = |n: &str| std::fs::File::create(d.join(n)).unwrap();
                            cmd.stdout(f("1.out")).stderr(f("1.err"));
                        }
                        None => {
                            cmd.stdout(Stdio::null()).stderr(Stdio::null());
                        }
                    }
                    assert!(cmd.status().expect("spawn /bin/true").success());
                }
            });
        }
    });
    t.elapsed()
}

/// One (c) run: C_JOBS `/bin/true` jobs queued while the queue is paused, a dispatcher started
/// and leading, then `baton resume`: from there to the last job's end, and what the dispatcher
/// spent on it (its start-up excluded).
struct E2e {
    project: Project,
    wall: Duration,
    /// First claim -> last finish, from the rows.
    steady: Duration,
    mean_job_ms: f64,
    cpu: Duration,
    /// SQL statements the dispatcher ran (a run with sqlx's statement log on).
    statements: Option<u64>,
    rss_kb: u64,
    enqueue: Duration,
}

/// Lines of sqlx's statement log in a dispatcher's log.
fn logged_statements(log: &Path) -> u64 {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains(" sqlx::query: ")).count() as u64
}

fn e2e_run(rt: &Runtime, bin: &Path, concurrency: usize, count_statements: bool) -> E2e {
    let p = Project::new(serde_json::json!({
        "runner": ["/bin/true"],
        "autoSpawn": false,
        "limits": {"maxConcurrency": concurrency},
    }));
    let ok = |args: &[&str]| {
        let o = p.cmd(bin).args(args).output().expect("run baton");
        assert!(o.status.success(), "baton {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    ok(&["pause"]);
    let enqueue = rt.block_on(async {
        let q = p.queue().await;
        let t = Instant::now();
        for i in 0..C_JOBS {
            let a = api::start(&q, &caller(), worker_params(&format!("bench job {i}"))).await.expect("api::start");
            assert_eq!(a.status, JobState::Queued, "{a:?}");
        }
        let d = t.elapsed();
        q.store.close().await;
        d
    });
    let raw = p.raw();
    let log = p.dir.path().join("dispatcher.log");
    let filter = if count_statements { "warn,sqlx::query=debug" } else { "warn" };
    let d = Dispatcher::start_logging(&p, bin, filter);
    let deadline = Instant::now() + Duration::from_secs(120);
    let pid = i64::from(d.pid());
    while raw.query_row("SELECT count(*) FROM dispatcher_lease WHERE pid = ?1", [pid], |r| r.get::<_, i64>(0)).unwrap()
        == 0
    {
        assert!(Instant::now() < deadline, "(c): the dispatcher does not lead after 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let its start-up end (recovery, the first look at the queue), then count from here.
    std::thread::sleep(Duration::from_millis(200));
    let (cpu0, st0) = (cpu_ns(d.pid()), logged_statements(&log));
    let t = Instant::now();
    ok(&["resume"]);
    let open = |c: &rusqlite::Connection| -> i64 {
        c.query_row("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')", [], |r| r.get(0)).unwrap()
    };
    while open(&raw) > 0 {
        assert!(Instant::now() < deadline, "(c): jobs still unfinished after 120 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = t.elapsed();
    let cpu = Duration::from_nanos(cpu_ns(d.pid()).saturating_sub(cpu0));
    let rss_kb = status_kb(d.pid(), "VmRSS");
    d.stop();
    let statements = count_statements.then(|| logged_statements(&log).saturating_sub(st0));
    let (done, first_start, last_finish, mean_job_ms): (i64, i64, i64, f64) = raw
        .query_row(
            "SELECT count(*) FILTER (WHERE state = 'succeeded'), min(started_ms), max(finished_ms),
                    avg(finished_ms - started_ms) FROM jobs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(done as usize, C_JOBS, "(c): not every job succeeded (see {})", p.dir.path().display());
    let steady = Duration::from_millis((last_finish - first_start).max(1) as u64);
    E2e { project: p, wall, steady, mean_job_ms, cpu, statements, rss_kb, enqueue }
}

fn bench_end_to_end(rt: &Runtime, bin: &Path) -> Project {
    let mut kept = None;
    for concurrency in C_LEVELS {
        let run = e2e_run(rt, bin, concurrency, false);
        let counted = e2e_run(rt, bin, concurrency, true);
        let base = spawn_loop(concurrency, None);
        let logs_dir = run.project.dir.path().join("baseline-logs");
        std::fs::create_dir_all(&logs_dir).unwrap();
        let base_logs = spawn_loop(concurrency, Some(&logs_dir));
        let (b, r, rl) = (rate(C_JOBS, run.wall), rate(C_JOBS, base), rate(C_JOBS, base_logs));
        println!(
            "(c) end-to-end /bin/true, {C_JOBS} jobs, concurrency {concurrency}:  baton {} jobs/s | raw spawn+wait loop {} jobs/s | ratio {:.2}x (target >= 0.8x)",
            group(b),
            group(r),
            b / r
        );
        println!(
            "    resume -> all terminal {:.0} ms (first claim -> last finish {} ms, {} jobs/s); mean claim -> finish per job {:.2} ms; raw with a log dir and 2 log files per job {} jobs/s (ratio {:.2}x)",
            ms(run.wall),
            run.steady.as_millis(),
            group(rate(C_JOBS, run.steady)),
            run.mean_job_ms,
            group(rl),
            b / rl
        );
        println!(
            "    dispatcher per job: CPU {:.0} us (start-up excluded), SQL statements {:.2} (a second run with the statement log on: {:.0} ms); VmRSS {:.1} MiB; enqueue via api::start {} jobs/s",
            run.cpu.as_secs_f64() * 1e6 / C_JOBS as f64,
            counted.statements.unwrap_or(0) as f64 / C_JOBS as f64,
            ms(counted.wall),
            run.rss_kb as f64 / 1024.0,
            group(rate(C_JOBS, run.enqueue))
        );
        if concurrency == C_CONCURRENCY {
            kept = Some(run.project);
        }
    }
    kept.expect("C_LEVELS holds C_CONCURRENCY")
}

// ---------------------------------------------------------------------------------------------
// (d) await wake latency, (f) dispatcher RSS and idle CPU.

fn bench_await(rt: &Runtime, bin: &Path) -> (Project, Dispatcher) {
    let p = Project::new(serde_json::json!({
        "runner": ["sh", "-c", "{prompt}"],
        "autoSpawn": false,
        "limits": {"maxConcurrency": 4},
    }));
    // Create the queue (migrated) before the dispatcher opens it.
    let q = rt.block_on(p.queue());
    let d = Dispatcher::start(&p, bin);
    let raw = p.raw();
    let deadline = Instant::now() + Duration::from_secs(20);
    while raw.query_row("SELECT count(*) FROM dispatcher_lease", [], |r| r.get::<_, i64>(0)).unwrap() == 0 {
        assert!(Instant::now() < deadline, "(d): the dispatcher never took the lease");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut lat: Vec<i64> = Vec::with_capacity(D_SAMPLES);
    rt.block_on(async {
        for _ in 0..D_SAMPLES {
            let a = api::start(&q, &caller(), worker_params("sleep 0.2")).await.expect("api::start");
            let id = a.task_id;
            let ans = api::await_jobs(&q, &caller(), std::slice::from_ref(&id), Some(30_000.0), false, None)
                .await
                .expect("await_jobs");
            let woke = now_ms();
            assert_eq!(ans[0].state(), Some(JobState::Succeeded), "(d): the job did not succeed");
            let finished: i64 =
                raw.query_row("SELECT finished_ms FROM jobs WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
            lat.push(woke - finished);
        }
    });
    lat.sort_unstable();
    println!(
        "(d) cross-process await wake latency (row finished_ms -> api::await_jobs returns in the bench process), {} samples:  p50 {} ms | p99 {} ms | max {} ms (target p99 < 20 ms)",
        lat.len(),
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        lat[lat.len() - 1]
    );
    rt.block_on(q.store.close());
    (p, d)
}

/// CPU time of all threads of a process in ns, from /proc/PID/task/*/schedstat (finer than
/// the clock ticks of /proc/PID/stat).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    dir.filter_map(|e| {
        let s = std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok()?;
        s.split_whitespace().next()?.parse::<u64>().ok()
    })
    .sum()
}

fn bench_idle(d: &Dispatcher) {
    let pid = d.pid();
    // Let the last jobs' aftermath settle, then measure a quiet window.
    std::thread::sleep(Duration::from_millis(500));
    let (c0, n0) = (cpu_ticks(pid), cpu_ns(pid));
    let t = Instant::now();
    std::thread::sleep(F_IDLE);
    let (c1, n1) = (cpu_ticks(pid), cpu_ns(pid));
    let secs = t.elapsed().as_secs_f64();
    let hz = clock_ticks_per_s();
    let cpu = (c1 - c0) as f64 / hz / secs * 100.0;
    let cpu_fine = n1.saturating_sub(n0) as f64 / 1e9 / secs * 100.0;
    println!(
        "(f) dispatcher idle {:.1} s: CPU {:.2}% of a core from utime+stime ({} ticks at {hz} Hz), {:.2}% from schedstat (target < 1%) | VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        secs,
        cpu,
        c1 - c0,
        cpu_fine,
        status_kb(pid, "VmRSS") as f64 / 1024.0,
        status_kb(pid, "VmHWM") as f64 / 1024.0
    );
}

// ---------------------------------------------------------------------------------------------
// (e) `baton task start` wall time.

/// Wall times of `baton task start --no-auto-spawn <task> <i>`, E_RUNS runs after one warm-up.
fn cli_start_times(p: &Project, bin: &Path, task: &str) -> Vec<Duration> {
    let run = |text: String| -> Duration {
        let mut c = p.cmd(bin);
        c.args(["task", "start", "--no-auto-spawn", &text]);
        let t = Instant::now();
        let o = c.output().expect("run baton task start");
        let d = t.elapsed();
        assert!(o.status.success(), "baton task start failed: {}", String::from_utf8_lossy(&o.stderr));
        d
    };
    run(format!("{task} warm-up"));
    let mut v: Vec<Duration> = (0..E_RUNS).map(|i| run(format!("{task} {i}"))).collect();
    v.sort_unstable();
    v
}

/// `idle`: a queue with no dispatcher; `live`: a queue whose dispatcher runs (and runs the jobs).
fn bench_cli_start(idle: &Project, live: &Project, bin: &Path) {
    let no_dispatcher = cli_start_times(idle, bin, "bench start");
    // `sh -c "true <i>"`: each job the live dispatcher runs ends at once.
    let with_dispatcher = cli_start_times(live, bin, "true");
    let mut floor: Vec<Duration> = (0..E_RUNS)
        .map(|_| {
            let t = Instant::now();
            let o = Command::new("/bin/true").stdin(Stdio::null()).output().expect("run /bin/true");
            assert!(o.status.success());
            t.elapsed()
        })
        .collect();
    floor.sort_unstable();
    let v = &no_dispatcher;
    println!(
        "(e) `baton task start --no-auto-spawn` wall, {E_RUNS} runs, existing queue, no dispatcher:  p50 {:.2} ms | p90 {:.2} ms | min {:.2} ms (target p50 < 10 ms)",
        ms(pct(v, 50.0)),
        ms(pct(v, 90.0)),
        ms(v[0])
    );
    let v = &with_dispatcher;
    println!(
        "    same with a dispatcher running on the queue: p50 {:.2} ms | p90 {:.2} ms | min {:.2} ms;  /bin/true spawn+wait floor p50 {:.2} ms",
        ms(pct(v, 50.0)),
        ms(pct(v, 90.0)),
        ms(v[0]),
        ms(pct(&floor, 50.0))
    );
    // Let the live dispatcher finish those jobs before the idle measurement.
    let raw = live.raw();
    let deadline = Instant::now() + Duration::from_secs(60);
    while raw
        .query_row("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')", [], |r| r.get::<_, i64>(0))
        .unwrap()
        > 0
    {
        assert!(Instant::now() < deadline, "(e): the live dispatcher did not finish the started jobs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// (g) backlog drain.

async fn drain(store: &Store, target: usize) -> Duration {
    let t = Instant::now();
    let mut done = 0;
    while done < target {
        let mut conn = pool(store).acquire().await.unwrap();
        let claimed = jobs::claim(&mut conn, OWNER, EPOCH, now_ms(), limits(64)).await.expect("claim");
        drop(conn);
        assert!(!claimed.is_empty(), "(g): the queue ran dry at {done}");
        let outcomes: Vec<Outcome> = claimed.iter().map(|j| outcome(&j.id)).collect();
        let mut conn = pool(store).acquire().await.unwrap();
        let written = jobs::finish_many(&mut conn, &outcomes, OWNER, EPOCH, now_ms()).await.expect("finish");
        assert_eq!(written.len(), claimed.len());
        done += claimed.len();
    }
    t.elapsed()
}

fn raw_drain(c: &mut rusqlite::Connection, target: usize) -> Duration {
    let t = Instant::now();
    let mut done = 0;
    while done < target {
        let claimed = raw_claim(c, now_ms(), limits(64));
        assert!(!claimed.is_empty(), "(g): the raw queue ran dry at {done}");
        let outcomes: Vec<Outcome> = claimed.iter().map(|j| outcome(&j.id)).collect();
        assert_eq!(raw_finish(c, &outcomes, now_ms()), claimed.len());
        done += claimed.len();
    }
    t.elapsed()
}

/// Enqueue `backlog` jobs in transactions of 10 000 through the library, then drain; the same
/// on a raw file. Returns (baton enqueue, baton drain, raw drain) times.
fn backlog_once(rt: &Runtime, backlog: usize, target: usize) -> (Duration, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (enq, drained) = rt.block_on(async {
        let store = open_store(dir.path()).await;
        let t = Instant::now();
        let mut left = backlog;
        while left > 0 {
            let n = left.min(10_000);
            let batch = new_jobs(n);
            let mut tx = pool(&store).begin().await.unwrap();
            for j in &batch {
                jobs::insert(&mut tx, j).await.expect("insert");
            }
            tx.commit().await.unwrap();
            left -= n;
        }
        let enq = t.elapsed();
        let d = drain(&store, target).await;
        store.close().await;
        (enq, d)
    });
    let mut raw = open_raw(&dir.path().join("raw.db"));
    let mut left = backlog;
    while left > 0 {
        let n = left.min(10_000);
        let batch = new_jobs(n);
        let tx = raw.transaction().unwrap();
        for j in &batch {
            raw_insert(&tx, j);
        }
        tx.commit().unwrap();
        left -= n;
    }
    let raw_d = raw_drain(&mut raw, target);
    (enq, drained, raw_d)
}

fn bench_backlog(rt: &Runtime) {
    let (mut b_rates, mut r_rates, mut parts, mut enq) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for backlog in G_BACKLOGS {
        let target = backlog.min(G_DRAIN);
        let (e, b, r) = backlog_once(rt, backlog, target);
        let (b, r) = (rate(target, b), rate(target, r));
        b_rates.push(b);
        r_rates.push(r);
        parts.push(format!("{}: baton {} | raw {} jobs/s", group(backlog as f64), group(b), group(r)));
        enq.push(format!("{}: {} jobs/s", group(backlog as f64), group(rate(backlog, e))));
    }
    let last = b_rates.len() - 1;
    println!(
        "(g) backlog drain (claim 64 + grouped finish, first {} jobs), queued backlog ->  {} | baton last/first {:.2}x (should not fall; raw last/first {:.2}x)",
        group(G_DRAIN as f64),
        parts.join(" ; "),
        b_rates[last] / b_rates[0],
        r_rates[last] / r_rates[0]
    );
    println!("    backlog enqueue through the library (10 000 inserts per tx): {}", enq.join(" | "));
}

// ---------------------------------------------------------------------------------------------
// (l) the claim beside a deep backlog of waiting tasks (`--after`): the claim's index holds
// queued jobs only, so thousands waiting behind an unfinished dependency should not slow it.

const L_WAITING: [usize; 3] = [0, 10_000, 100_000];
const L_DRAIN: usize = 5_000;

/// One (l) run: a dependency claimed and left running, `waiting` jobs behind it, then L_DRAIN
/// queued jobs drained (claim 64 + grouped finish). Returns (enqueue of the waiting, drain).
fn waiting_once(rt: &Runtime, waiting: usize) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let store = open_store(dir.path()).await;
        let dep = new_jobs(1).remove(0);
        let mut conn = pool(&store).acquire().await.unwrap();
        jobs::insert(&mut conn, &dep).await.expect("insert the dependency");
        let claimed = jobs::claim(&mut conn, OWNER, EPOCH, now_ms(), limits(1)).await.expect("claim");
        assert_eq!(claimed.len(), 1, "(l): the dependency runs");
        drop(conn);
        let after = serde_json::to_string(&[&dep.id]).unwrap();
        let t = Instant::now();
        let mut left = waiting;
        while left > 0 {
            let n = left.min(10_000);
            let mut batch = new_jobs(n);
            let mut tx = pool(&store).begin().await.unwrap();
            for j in &mut batch {
                j.after = Some(after.clone());
                jobs::insert(&mut tx, j).await.expect("insert a waiting job");
            }
            tx.commit().await.unwrap();
            left -= n;
        }
        let enq = t.elapsed();
        let mut tx = pool(&store).begin().await.unwrap();
        for j in &new_jobs(L_DRAIN) {
            jobs::insert(&mut tx, j).await.expect("insert");
        }
        tx.commit().await.unwrap();
        let d = drain(&store, L_DRAIN).await;
        let mut conn = pool(&store).acquire().await.unwrap();
        let still: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'waiting'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(still as usize, waiting, "(l): the waiting jobs still wait");
        drop(conn);
        store.close().await;
        (enq, d)
    })
}

fn bench_waiting(rt: &Runtime) {
    let (mut rates, mut parts, mut enq) = (Vec::new(), Vec::new(), Vec::new());
    for w in L_WAITING {
        let (e, d) = waiting_once(rt, w);
        let r = rate(L_DRAIN, d);
        rates.push(r);
        parts.push(format!("{}: {} jobs/s", group(w as f64), group(r)));
        if w > 0 {
            enq.push(format!("{}: {} jobs/s", group(w as f64), group(rate(w, e))));
        }
    }
    println!(
        "(l) drain of {} queued (claim 64 + grouped finish) beside a waiting backlog ->  {} | {}/0 {:.2}x (should stay near 1)",
        group(L_DRAIN as f64),
        parts.join(" ; "),
        group(*L_WAITING.last().unwrap() as f64),
        rates[rates.len() - 1] / rates[0]
    );
    println!("    waiting enqueue through the library (10 000 per tx, one dependency each): {}", enq.join(" | "));
}

// ---------------------------------------------------------------------------------------------
// (s) scale of the file.

/// `n` queued jobs for `p` (runnable there: `/bin/true` in its project), through the library,
/// 10 000 per transaction, under the bench's lease. The wall time of the inserts.
async fn fill_queued(store: &Store, p: &Project, n: usize) -> Duration {
    let t = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000);
        let mut batch = new_jobs(k);
        for j in &mut batch {
            j.project_dir = p.project.display().to_string();
        }
        let mut tx = pool(store).begin().await.unwrap();
        for j in &batch {
            jobs::insert(&mut tx, j).await.expect("insert");
        }
        tx.commit().await.unwrap();
        left -= k;
    }
    t.elapsed()
}

/// Median of S_CLAIMS single claims (each job then finished), in microseconds.
async fn single_claims(store: &Store) -> f64 {
    let mut v = Vec::with_capacity(S_CLAIMS);
    for _ in 0..S_CLAIMS {
        let mut conn = pool(store).acquire().await.unwrap();
        let t = Instant::now();
        let claimed = jobs::claim(&mut conn, OWNER, EPOCH, now_ms(), limits(1)).await.expect("claim");
        v.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(claimed.len(), 1, "(s): the claim found no job");
        jobs::finish_many(&mut conn, &[outcome(&claimed[0].id)], OWNER, EPOCH, now_ms()).await.expect("finish");
    }
    median(v)
}

fn file_bytes(db: &Path) -> u64 {
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    size(db.to_path_buf()) + size(db.with_file_name(format!("{name}-wal")))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn bench_scale(rt: &Runtime, bin: &Path) {
    let config = serde_json::json!({
        "runner": ["/bin/true"],
        "autoSpawn": false,
        "limits": {"maxConcurrency": C_CONCURRENCY},
        "retention": {"minAgeMs": 0},
    });
    // One claim beside each backlog.
    let mut claims = Vec::new();
    let mut large = None;
    for n in S_QUEUED {
        let p = Project::new(config.clone());
        let (fill, claim) = rt.block_on(async {
            let store = open_store(p.db.parent().unwrap()).await;
            let fill = fill_queued(&store, &p, n).await;
            let claim = single_claims(&store).await;
            store.close().await;
            (fill, claim)
        });
        claims.push((n, claim, fill));
        large = Some(p);
    }
    let p = large.expect("the large file");
    let parts: Vec<String> =
        claims.iter().map(|(n, c, _)| format!("{} queued: {:.0} us", group(*n as f64), c)).collect();
    let (n_last, c_last, fill_last) = claims[claims.len() - 1];
    println!(
        "(s) one claim (median of {S_CLAIMS}, each job then finished) ->  {} | {}/{} {:.2}x (goal < 2)",
        parts.join(" ; "),
        group(n_last as f64),
        group(claims[0].0 as f64),
        c_last / claims[0].1
    );
    println!(
        "    {} queued through the library in {:.1} s ({} jobs/s); file {:.0} MiB",
        group(n_last as f64),
        fill_last.as_secs_f64(),
        group(rate(n_last, fill_last)),
        mib(file_bytes(&p.db))
    );
    // `baton task list` on the large file, no dispatcher.
    let mut list: Vec<Duration> = (0..=S_LIST_RUNS)
        .map(|_| {
            let t = Instant::now();
            let o = p.cmd(bin).args(["task", "list"]).output().expect("baton task list");
            assert!(o.status.success(), "baton task list: {}", String::from_utf8_lossy(&o.stderr));
            t.elapsed()
        })
        .skip(1)
        .collect();
    list.sort_unstable();
    let mut list_all: Vec<Duration> = (0..=S_LIST_RUNS)
        .map(|_| {
            let t = Instant::now();
            let o = p
                .cmd(bin)
                .args(["task", "list", "--status", "queued", "--limit", "50"])
                .output()
                .expect("baton task list");
            assert!(o.status.success(), "baton task list: {}", String::from_utf8_lossy(&o.stderr));
            t.elapsed()
        })
        .skip(1)
        .collect();
    list_all.sort_unstable();
    println!(
        "    `baton task list` with {} rows: p50 {:.1} ms | max {:.1} ms; `--status queued --limit 50`: p50 {:.1} ms (median of {S_LIST_RUNS} after one warm-up)",
        group(n_last as f64 + S_CLAIMS as f64),
        ms(pct(&list, 50.0)),
        ms(list[list.len() - 1]),
        ms(pct(&list_all, 50.0))
    );
    // The dispatcher running jobs off the large file.
    let raw = p.raw();
    let done = |c: &rusqlite::Connection| -> i64 {
        c.query_row("SELECT count(*) FROM jobs WHERE state = 'succeeded'", [], |r| r.get(0)).unwrap()
    };
    let before = done(&raw);
    let d = Dispatcher::start(&p, bin);
    let t = Instant::now();
    let mut rss_max = 0;
    while t.elapsed() < S_RUN_FOR {
        rss_max = rss_max.max(status_kb(d.pid(), "VmRSS"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let hwm = status_kb(d.pid(), "VmHWM");
    d.stop();
    let ran = done(&raw) - before;
    println!(
        "    dispatcher on {} queued, {:.0} s running /bin/true at concurrency {C_CONCURRENCY}: RSS max {:.1} MiB (high-water {:.1} MiB; goal < 50 MB), {} jobs run ({} jobs/s)",
        group(n_last as f64),
        S_RUN_FOR.as_secs_f64(),
        rss_max as f64 / 1024.0,
        hwm as f64 / 1024.0,
        group(ran as f64),
        group(ran as f64 / S_RUN_FOR.as_secs_f64())
    );
    drop(raw);
    drop(p);
    // File size per S_FINISHED finished jobs, before and after `baton prune`.
    let p = Project::new(config);
    rt.block_on(async {
        let store = open_store(p.db.parent().unwrap()).await;
        fill_queued(&store, &p, S_FINISHED).await;
        drain(&store, S_FINISHED).await;
        store.close().await;
    });
    let checkpoint = |c: &rusqlite::Connection| {
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    };
    let raw = p.raw();
    checkpoint(&raw);
    let before = file_bytes(&p.db);
    let t = Instant::now();
    let o = p.cmd(bin).arg("prune").output().expect("baton prune");
    let prune = t.elapsed();
    assert!(o.status.success(), "baton prune: {}", String::from_utf8_lossy(&o.stderr));
    checkpoint(&raw);
    let after = file_bytes(&p.db);
    let (left, free): (i64, i64) = raw
        .query_row("SELECT (SELECT count(*) FROM jobs), (SELECT freelist_count FROM pragma_freelist_count)", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    println!(
        "    {} finished jobs: file {:.1} MiB ({:.0} bytes/job); `baton prune` {:.1} s -> {:.2} MiB with {} jobs kept (retention.maxJobs), {} free pages",
        group(S_FINISHED as f64),
        mib(before),
        before as f64 / S_FINISHED as f64,
        prune.as_secs_f64(),
        mib(after),
        left,
        free
    );
}

// ---------------------------------------------------------------------------------------------
// (i) one long-lived server worker vs. oneshot spawns of the same program.

/// The (i) worker, one bash script for both kinds. With `--server [DELAY]` it is a no-op ACP
/// agent: it answers `initialize`, `session/new` and `session/prompt` (one message chunk "ok",
/// then `end_turn`; after DELAY seconds from a subshell of its own when DELAY is given), picking
/// the request id, method and session out with bash patterns, no other parsing (baton writes
/// `"id"` first); without it, it is a oneshot worker: prints "ok" and exits.
const I_WORKER: &str = r#"#!/usr/bin/env bash
if [ "${1:-}" = --server ]; then
    delay=${2:-0}
    n=0
    while IFS= read -r line; do
        [[ $line =~ \"id\":([0-9]+) ]] || continue
        id=${BASH_REMATCH[1]}
        case $line in
            *'"method":"initialize"'*)
                printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":1,"agentCapabilities":{}}}\n' "$id" ;;
            *'"method":"session/new"'*)
                n=$((n + 1))
                printf '{"jsonrpc":"2.0","id":%s,"result":{"sessionId":"s%s"}}\n' "$id" "$n" ;;
            *'"method":"session/prompt"'*)
                [[ $line =~ \"sessionId\":\"(s[0-9]+)\" ]] && sid=${BASH_REMATCH[1]}
                answer='{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"%s","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"ok"}}}}\n{"jsonrpc":"2.0","id":%s,"result":{"stopReason":"end_turn"}}\n'
                if [ "$delay" = 0 ]; then
                    printf "$answer" "$sid" "$id"
                else
                    # A turn that takes a while, answered from a subshell so turns overlap.
                    ( sleep "$delay"; printf "$answer" "$sid" "$id" ) &
                fi ;;
        esac
    done
    wait
else
    echo ok
fi
"#;

/// What one (i) run measured.
struct ServerRun {
    /// First `api::start` -> last job finished (`created_ms` -> `finished_ms` of the rows).
    submit_to_finish: Duration,
    /// First claim -> last job finished (`started_ms` -> `finished_ms`).
    claim_to_finish: Duration,
    /// The `api::start` loop, with the dispatcher already running.
    enqueue: Duration,
    /// Server worker processes the run spawned.
    servers: i64,
}

/// One (i) run on a fresh queue: both profiles of the same script (`srv`, a server profile,
/// and `one`, a oneshot one), `limits.maxConcurrency` = `concurrency`, a spawn rate limit of 0.
/// The dispatcher is started and holds the lease first; then I_JOBS jobs of `profile` are
/// submitted through `api::start` and awaited. Asserts that every job succeeded with the
/// script's answer and ran as the profile's kind.
fn server_run(rt: &Runtime, bin: &Path, script: &Path, profile: &str, concurrency: usize, jobs: usize) -> ServerRun {
    let script = script.to_str().expect("utf-8 script path");
    let prof = |id: &str| serde_json::json!({"id": id, "name": id, "model": "bench", "purpose": "bench", "whenToUse": "bench"});
    let server = |id: &str, delay: &str, sessions: usize| {
        let mut p = prof(id);
        p["kind"] = "server".into();
        p["command"] = serde_json::json!(["bash", script, "--server", delay]);
        p["maxConcurrency"] = sessions.into();
        p
    };
    let mut one = prof("one");
    one["command"] = serde_json::json!(["bash", script, "{prompt}"]);
    let p = Project::new(serde_json::json!({
        "autoSpawn": false,
        "limits": {"maxConcurrency": concurrency, "spawnRateLimitMs": 0},
        "profiles": [server("srv", "0", 1), server("srv4", "0", 4), server("slow", I_TURN, 1), server("slow4", I_TURN, 4), one],
    }));
    // Create the queue (migrated) before the dispatcher opens it.
    let q = rt.block_on(p.queue());
    let d = Dispatcher::start(&p, bin);
    let raw = p.raw();
    let deadline = Instant::now() + Duration::from_secs(20);
    while raw.query_row("SELECT count(*) FROM dispatcher_lease", [], |r| r.get::<_, i64>(0)).unwrap() == 0 {
        assert!(Instant::now() < deadline, "(i): the dispatcher never took the lease");
        std::thread::sleep(Duration::from_millis(10));
    }
    let enqueue = rt.block_on(async {
        let t = Instant::now();
        for i in 0..jobs {
            let params = StartParams {
                task: format!("bench job {i}"),
                kind: Some("worker".into()),
                worker_id: Some(profile.into()),
                ..Default::default()
            };
            let a = api::start(&q, &caller(), params).await.expect("api::start");
            assert_eq!(a.status, JobState::Queued, "{a:?}");
        }
        t.elapsed()
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while raw
        .query_row("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')", [], |r| r.get::<_, i64>(0))
        .unwrap()
        > 0
    {
        assert!(Instant::now() < deadline, "(i) {profile}: jobs still unfinished after 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    d.stop();
    rt.block_on(q.store.close());
    let kind = if profile == "one" { "oneshot" } else { "server" };
    let (ok, created, started, finished): (i64, i64, i64, i64) = raw
        .query_row(
            "SELECT count(*) FILTER (WHERE state = 'succeeded' AND trim(response) = 'ok' AND worker_kind = ?1),
                    min(created_ms), min(started_ms), max(finished_ms)
             FROM jobs",
            [kind],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        ok as usize,
        jobs,
        "(i) {profile}: not every job succeeded with \"ok\" as a {kind} job (see {})",
        p.dir.path().display()
    );
    let servers: i64 = raw.query_row("SELECT count(*) FROM workers WHERE kind = 'server'", [], |r| r.get(0)).unwrap();
    let span = |from: i64| Duration::from_millis((finished - from).max(1) as u64);
    ServerRun { submit_to_finish: span(created), claim_to_finish: span(started), enqueue, servers }
}

/// The (i) floors, without baton: the script as an ACP agent driven in lock step as baton
/// drives it (`initialize` once; per job `session/new`, then `session/prompt` and its update
/// and answer), and the script spawned and waited for I_JOBS times, one at a time. Returns
/// (server, oneshot) times.
fn server_floors(script: &Path) -> (Duration, Duration) {
    use std::io::{BufRead, BufReader, Write};
    let t = Instant::now();
    let mut child = Command::new("bash")
        .arg(script)
        .arg("--server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the server script");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut call = |id: i64, method: &str, params: serde_json::Value, lines: usize| -> serde_json::Value {
        let msg = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
        let mut last = serde_json::Value::Null;
        for _ in 0..lines {
            line.clear();
            stdout.read_line(&mut line).unwrap();
            last = serde_json::from_str(&line).expect("a JSON-RPC line");
        }
        assert_eq!(last["id"], id, "{last}");
        last
    };
    call(1, "initialize", serde_json::json!({"protocolVersion": 1}), 1);
    for i in 0..I_JOBS {
        let id = 2 + 2 * i as i64;
        let new = call(id, "session/new", serde_json::json!({"cwd": "/tmp/baton-bench-project", "mcpServers": []}), 1);
        let sid = new["result"]["sessionId"].clone();
        let prompt =
            serde_json::json!({"sessionId": sid, "prompt": [{"type": "text", "text": format!("bench job {i}")}]});
        let answer = call(id + 1, "session/prompt", prompt, 2);
        assert_eq!(answer["result"]["stopReason"], "end_turn");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let server = t.elapsed();
    let t = Instant::now();
    for i in 0..I_JOBS {
        let o = Command::new("bash")
            .arg(script)
            .arg(format!("bench job {i}"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("spawn the script");
        assert!(o.status.success() && o.stdout == b"ok\n");
    }
    (server, t.elapsed())
}

/// (i) jobs/s through one long-lived ACP worker (a no-op agent) vs. oneshot spawns of the same
/// script. A server profile's jobs run one at a time on its one process unless its
/// `maxConcurrency` says more (`srv` does not), so the fair baseline is oneshot at
/// `maxConcurrency` 1; oneshot at C_CONCURRENCY (the default 4) is printed too. Then one worker
/// with one session at a time vs. four at once. The figures are
/// first submit -> last finish, with the dispatcher already up (the server's spawn included).
/// The floors without baton (`server_floors`) show how much of each figure is the script.
fn bench_server(rt: &Runtime, bin: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("worker.sh");
    std::fs::write(&script, I_WORKER).unwrap();
    let server = server_run(rt, bin, &script, "srv", C_CONCURRENCY, I_JOBS);
    assert_eq!(server.servers, 1, "(i): one server worker serves every job");
    let one = server_run(rt, bin, &script, "one", 1, I_JOBS);
    let four = server_run(rt, bin, &script, "one", C_CONCURRENCY, I_JOBS);
    assert_eq!(one.servers + four.servers, 0, "(i): oneshot runs start no server worker");
    let r = |run: &ServerRun| rate(I_JOBS, run.submit_to_finish);
    let (s, o1, o4) = (r(&server), r(&one), r(&four));
    println!(
        "(i) one ACP server worker (no-op agent) vs. oneshot spawns of the same bash script, {I_JOBS} jobs each, first submit -> last finish:  server {} jobs/s | oneshot at concurrency 1 {} jobs/s | ratio {:.2}x;  oneshot at concurrency {C_CONCURRENCY} {} jobs/s | ratio {:.2}x",
        group(s),
        group(o1),
        s / o1,
        group(o4),
        s / o4
    );
    let c = |run: &ServerRun| group(rate(I_JOBS, run.claim_to_finish));
    let e = |run: &ServerRun| group(rate(I_JOBS, run.enqueue));
    println!(
        "    first claim -> last finish: server {} | oneshot c1 {} | oneshot c{C_CONCURRENCY} {} jobs/s;  api::start with the dispatcher running: {} / {} / {} jobs/s",
        c(&server),
        c(&one),
        c(&four),
        e(&server),
        e(&one),
        e(&four)
    );
    let (fs, fo) = server_floors(&script);
    println!(
        "    the script alone, no baton: as an ACP agent driven in lock step (session/new + prompt per job) {} jobs/s | spawned and waited for one at a time {} jobs/s | ratio {:.2}x",
        group(rate(I_JOBS, fs)),
        group(rate(I_JOBS, fo)),
        fo.as_secs_f64() / fs.as_secs_f64()
    );
    // One worker, one session at a time vs. four at once: with the no-op turn (baton's own
    // per-task work overlaps) and with a turn that takes I_TURN s (the agent's time overlaps).
    let runs: Vec<(&str, usize)> =
        vec![("srv", I_JOBS), ("srv4", I_JOBS), ("slow", I_SLOW_JOBS), ("slow4", I_SLOW_JOBS)];
    let rates: Vec<f64> = runs
        .iter()
        .map(|&(profile, jobs)| {
            let run = server_run(rt, bin, &script, profile, C_CONCURRENCY, jobs);
            assert_eq!(run.servers, 1, "(i) {profile}: one server worker serves every job");
            rate(jobs, run.submit_to_finish)
        })
        .collect();
    println!(
        "    sessions per worker (maxConcurrency), first submit -> last finish:  no-op turn, {I_JOBS} jobs: 1 session {} | 4 sessions {} jobs/s | ratio {:.2}x;  {I_TURN} s turn, {I_SLOW_JOBS} jobs: 1 session {} | 4 sessions {} jobs/s | ratio {:.2}x (ideal 4x)",
        group(rates[0]),
        group(rates[1]),
        rates[1] / rates[0],
        group(rates[2]),
        group(rates[3]),
        rates[3] / rates[2]
    );
}

// ---------------------------------------------------------------------------------------------
// (j) a real agent, warm over ACP vs. cold per task.

#[path = "../tests/it/common/fake_model.rs"]
mod fake_model;

/// (j) tasks per kind (after one warm-up task each).
const J_TASKS: usize = 5;

/// Run J_TASKS tasks of `profile` one after another through a dispatcher whose PATH has the
/// agent CLIs; return, per task, (start -> first event, start -> finish) in ms from the rows
/// (`created_ms`, the first `job_events.at_ms`, `finished_ms`).
fn agent_runs(rt: &Runtime, p: &Project, q: &Queue, profile: &str) -> Vec<(Option<f64>, f64)> {
    let raw = p.raw();
    let mut out = Vec::new();
    for i in 0..=J_TASKS {
        let id = rt.block_on(async {
            let params = StartParams {
                task: format!("say ok {i}"),
                kind: Some("worker".into()),
                worker_id: Some(profile.into()),
                ..Default::default()
            };
            api::start(q, &caller(), params).await.expect("api::start").task_id
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let state: String = raw.query_row("SELECT state FROM jobs WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
            if state == "succeeded" {
                break;
            }
            assert!(
                state == "queued" || state == "running",
                "(j) {profile}: task {id} ended {state} (see {})",
                p.dir.path().display()
            );
            assert!(Instant::now() < deadline, "(j) {profile}: task {id} unfinished after 120 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        let (created, first, finished): (i64, Option<i64>, i64) = raw
            .query_row(
                "SELECT created_ms, (SELECT min(at_ms) FROM job_events WHERE job_id = jobs.id), finished_ms
                   FROM jobs WHERE id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        // The first task of each kind warms up (the ACP worker's spawn and initialize).
        if i > 0 {
            out.push((first.map(|f| (f - created) as f64), (finished - created) as f64));
        }
    }
    out
}

/// (j) opencode against the fake model (loopback, a one-line answer): task start -> first
/// activity event and -> answer, through a warm `opencode acp` worker (spawned and initialized
/// by a warm-up task) vs. `opencode run` started per task. Skipped, saying so, without the CLI.
fn bench_real_agent(rt: &Runtime, bin: &Path) {
    let clis = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/agent-clis/node_modules/.bin");
    if !clis.join("opencode").exists() {
        println!("(j) SKIPPED: opencode is not installed in {} (bash .ci/agent-clis)", clis.display());
        return;
    }
    let model = fake_model::FakeModel::start(vec![fake_model::Reply::text("ok")]);
    let prof =
        |id: &str| serde_json::json!({"id": id, "name": id, "model": "node", "purpose": "bench", "whenToUse": "bench"});
    let mut warm = prof("warm");
    warm["kind"] = "server".into();
    warm["command"] = "opencode-acp".into();
    let mut cold = prof("cold");
    cold["command"] = "opencode".into();
    let p = Project::new(serde_json::json!({"autoSpawn": false, "profiles": [warm, cold], "jobs": {"maxAttempts": 1}}));
    let home = p.dir.path().join("home");
    std::fs::create_dir_all(home.join(".config/opencode")).unwrap();
    let config = serde_json::json!({
        "$schema": "https://opencode.ai/config.json", "autoupdate": false, "share": "disabled",
        "provider": {"fake": {"npm": "@ai-sdk/openai-compatible", "name": "Fake",
            "options": {"baseURL": format!("{}/v1", model.url()), "apiKey": "sk-test"},
            "models": {"fake-model": {"name": "Fake model"}}}},
        "model": "fake/fake-model", "small_model": "fake/fake-model"
    });
    std::fs::write(home.join(".config/opencode/opencode.json"), config.to_string()).unwrap();
    let q = rt.block_on(p.queue());
    let log = std::fs::File::create(p.dir.path().join("dispatcher.log")).unwrap();
    let path = format!("{}:{}", clis.display(), std::env::var("PATH").unwrap_or_default());
    let child = p
        .cmd(bin)
        .arg("run")
        .env("PATH", path)
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
        .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn dispatcher");
    let d = Dispatcher { child };
    let warm = agent_runs(rt, &p, &q, "warm");
    let cold = agent_runs(rt, &p, &q, "cold");
    d.stop();
    rt.block_on(q.store.close());
    let med = |v: Vec<f64>| if v.is_empty() { "n/a".to_string() } else { format!("{:.0} ms", median(v)) };
    let firsts = |runs: &[(Option<f64>, f64)]| runs.iter().filter_map(|r| r.0).collect::<Vec<_>>();
    let answers = |runs: &[(Option<f64>, f64)]| runs.iter().map(|r| r.1).collect::<Vec<_>>();
    let (wa, ca) = (median(answers(&warm)), median(answers(&cold)));
    println!(
        "(j) opencode vs. a local fake model, {J_TASKS} tasks each after a warm-up, median:  warm ACP worker: first event {} | answer {:.0} ms;  cold `opencode run` per task: first event {} | answer {:.0} ms;  cold/warm answer {:.2}x",
        med(firsts(&warm)),
        wa,
        med(firsts(&cold)),
        ca,
        ca / wa
    );
}

// ---------------------------------------------------------------------------------------------

fn header(rt: &Runtime, bin: &Path) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("model name")?.split(':').nth(1).map(|m| m.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let raw_version: String =
        rusqlite::Connection::open_in_memory().unwrap().query_row("SELECT sqlite_version()", [], |r| r.get(0)).unwrap();
    let (sqlx_version, open_writes): (String, bool) = rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let v = sqlx::query_scalar("SELECT sqlite_version()").fetch_one(pool(&store)).await.unwrap();
        // Does opening one more connection on an existing queue commit a write? Another
        // connection's `PRAGMA data_version` moves only when someone else commits.
        let raw = rusqlite::Connection::open(dir.path().join("baton.db")).unwrap();
        let dv = |c: &rusqlite::Connection| c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)).unwrap();
        let before = dv(&raw);
        let extra = store.dedicated_connection().await.expect("dedicated connection");
        let moved = dv(&raw) != before;
        drop(extra);
        store.close().await;
        (v, moved)
    });
    println!("baton queue benchmark (release build)");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    println!(
        "machine: nproc {nproc}, {cpu}; SQLite {sqlx_version} (sqlx) / {raw_version} (rusqlite); load average {load}"
    );
    println!("binary: {}", bin.display());
    let names: Vec<String> =
        migration_files().iter().filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned())).collect();
    println!("raw baseline schema: {} applied with execute_batch (same pragmas as baton)", names.join(" + "));
    println!(
        "note: opening a baton connection on an existing queue commits a write (other connections' data_version moves): {}",
        if open_writes { "YES" } else { "no" }
    );
    println!(
        "sizes: (a) {} lifecycles x {ROUNDS} rounds per side, median | (b) {} jobs x {ROUNDS} rounds, median | (c) {C_JOBS} jobs at concurrency {C_LEVELS:?} | (d) {D_SAMPLES} samples | (e) {E_RUNS} runs | (f) {} s idle | (g) backlogs {:?}, drain {} | (i) {I_JOBS} jobs per run",
        A_JOBS,
        B_JOBS,
        F_IDLE.as_secs(),
        G_BACKLOGS,
        G_DRAIN
    );
}

// ---------------------------------------------------------------------------------------------
// (k) worktree cost.

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git");
    assert!(o.status.success(), "(k) git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn bench_worktrees(rt: &Runtime, bin: &Path) {
    let p = Project::new(serde_json::json!({
        "runner": ["sh", "-c", "{prompt}"],
        "autoSpawn": false,
        "limits": {"maxConcurrency": 4},
        "retention": {"minAgeMs": 0, "maxAgeMs": 0, "maxJobs": 0},
    }));
    std::fs::remove_dir_all(p.project.join(".git")).unwrap();
    git(&p.project, &["init", "-q", "-b", "main"]);
    let mut bytes = 0usize;
    for i in 0..K_FILES {
        let dir = p.project.join(format!("src/m{:02}", i % 60));
        std::fs::create_dir_all(&dir).unwrap();
        let text = format!("// file {i}\n{}", "fn f() { let x = 1; }\n".repeat(40));
        bytes += text.len();
        std::fs::write(dir.join(format!("f{i}.rs")), text).unwrap();
    }
    let q = rt.block_on(p.queue());
    git(&p.project, &["add", "-A"]);
    git(&p.project, &["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "files"]);

    // Raw: the git commands alone, in a sibling directory.
    let raw_root = p.dir.path().join("raw-trees");
    let mut raw = Vec::with_capacity(K_TASKS);
    for i in 0..K_TASKS {
        let path = raw_root.join(format!("t{i}"));
        let path = path.to_str().unwrap();
        let t = Instant::now();
        git(&p.project, &["worktree", "add", "--quiet", "-b", &format!("raw/{i}"), path, "HEAD"]);
        raw.push(ms(t.elapsed()));
        git(&p.project, &["worktree", "remove", "--force", path]);
        git(&p.project, &["branch", "-D", "-q", &format!("raw/{i}")]);
    }

    let d = Dispatcher::start(&p, bin);
    let (mut plain, mut isolated) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for i in 0..2 * K_TASKS {
            let worktree = i % 2 == 1;
            let params = StartParams {
                isolation: worktree.then(|| "worktree".into()),
                ..worker_params("echo change >> src/m00/f0.rs")
            };
            let t = Instant::now();
            let a = api::start(&q, &caller(), params).await.expect("(k) api::start");
            let ans = api::await_jobs(&q, &caller(), std::slice::from_ref(&a.task_id), Some(60_000.0), false, None)
                .await
                .expect("(k) await");
            assert_eq!(ans[0].state(), Some(JobState::Succeeded), "(k): the task did not succeed");
            if worktree {
                isolated.push(ms(t.elapsed()));
                api::discard(&q, &caller(), &a.task_id, true).await.expect("(k) discard");
            } else {
                plain.push(ms(t.elapsed()));
                git(&p.project, &["checkout", "-q", "--", "."]);
            }
        }
    });
    d.stop();
    let (raw, plain, isolated) = (median(raw), median(plain), median(isolated));
    println!(
        "(k) worktree per task, repository of {K_FILES} files ({:.1} MB), median of {K_TASKS}:  raw `git worktree add` {raw:.1} ms | task in the checkout {plain:.1} ms | task in a worktree {isolated:.1} ms (+{:.1} ms, {:.2}x; baton's cost beyond the raw add {:.1} ms)",
        bytes as f64 / 1e6,
        isolated - plain,
        isolated / plain,
        isolated - plain - raw,
    );
    rt.block_on(q.store.close());
}

fn main() {
    let started = Instant::now();
    // Sections to run: the letters given as arguments (`cargo bench --bench queue -- c i`);
    // none: all of them. Arguments starting with '-' (cargo passes `--bench`) are ignored.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |section: &str| only.is_empty() || only.iter().any(|a| a == section);
    // The queues' HOME and XDG_CONFIG_HOME: no user configuration leaks in. The bench process
    // itself opens queues through the library, so it sets them for itself (its children inherit).
    let home = tempfile::tempdir().expect("home tempdir");
    std::fs::create_dir_all(home.path().join(".config")).unwrap();
    // SAFETY: no other thread exists yet (the runtime is built below).
    unsafe {
        std::env::set_var("HOME", home.path());
        std::env::set_var("XDG_CONFIG_HOME", home.path().join(".config"));
        for v in ["BATON_DB", "BATON_WORKER", "BATON_SESSION", "BATON_LOG", "RUST_LOG"] {
            std::env::remove_var(v);
        }
    }
    // baton's SQLite and allocator settings, before any connection (the rusqlite baselines share
    // the process's SQLite, so every contender runs with the same ones).
    baton::store::tune_memory();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let bin = baton_bin();
    header(&rt, &bin);

    if want("a") {
        bench_lifecycle(&rt);
    }
    if want("b") {
        bench_batched(&rt);
    }
    // (e) uses the queues of (c) and (d), (f) the dispatcher of (d).
    let c_queue = (want("c") || want("e")).then(|| bench_end_to_end(&rt, &bin));
    if want("h") {
        bench_workflows(&rt, &bin);
    }
    if want("d") || want("e") || want("f") {
        let (d_queue, dispatcher) = bench_await(&rt, &bin);
        if let Some(c_queue) = &c_queue {
            bench_cli_start(c_queue, &d_queue, &bin);
        }
        if want("f") {
            bench_idle(&dispatcher);
        }
        dispatcher.stop();
        drop(d_queue);
    }
    drop(c_queue);
    if want("g") {
        bench_backlog(&rt);
    }
    if want("l") {
        bench_waiting(&rt);
    }
    if want("s") {
        bench_scale(&rt, &bin);
    }
    if want("i") {
        bench_server(&rt, &bin);
    }
    if want("j") {
        bench_real_agent(&rt, &bin);
    }
    if want("k") {
        bench_worktrees(&rt, &bin);
    }

    println!("total bench run: {:.1} s", started.elapsed().as_secs_f64());
}

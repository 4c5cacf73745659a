//! The two backends side by side, in one run: a queue file and a throwaway PostgreSQL server on
//! loopback (started by the benchmark, stopped at the end; skipped, saying so, without the
//! PostgreSQL binaries).
//!
//! - lifecycle: insert (own transaction), claim (batch of one) and finish of one job at a time,
//!   through baton's store, on each backend: jobs/s and microseconds per step.
//! - drain: N queued `/bin/true` tasks run to their recorded results by real `baton run`
//!   processes: one on the file, 1, 2 and 4 nodes on PostgreSQL (the same global
//!   `limits.maxConcurrency`): tasks/s, and the ratio to the file.
//!
//! `cargo bench --bench backends` (`-- lifecycle` or `-- drain` runs one section).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton::job::now_ms;
use baton::state::JobState;
use baton::store::jobs::{ClaimLimits, Outcome};
use baton::store::{self, Durability, Node, Store};

#[path = "common.rs"]
mod common;
#[path = "../tests/it/common/pg.rs"]
mod pg;

use common::job;

const LIFECYCLE_JOBS: usize = 2_000;
const DRAIN_JOBS: usize = 600;

fn outcome(id: &str) -> Outcome {
    Outcome {
        id: id.into(),
        state: JobState::Succeeded,
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

/// Per step, in microseconds, and jobs/s.
struct Lifecycle {
    insert: f64,
    claim: f64,
    finish: f64,
    per_s: f64,
}

async fn lifecycle(st: &Store, project: &str) -> Lifecycle {
    let owner = st.new_owner();
    let mut conn = st.conn().await.unwrap();
    let epoch = store::lease::acquire(&mut conn, &owner, i64::from(std::process::id()), now_ms()).await.unwrap();
    let limits = ClaimLimits { max_running: 64, max_workers: 1000, max_per_session: 1000, batch: 1 };
    let (mut ins, mut cl, mut fin) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    for i in 0..LIFECYCLE_JOBS {
        let t = Instant::now();
        let mut tx = st.begin().await.unwrap();
        store::jobs::insert(&mut tx, &job(i, now_ms(), project)).await.unwrap();
        tx.commit().await.unwrap();
        let t2 = Instant::now();
        let got = store::jobs::claim(&mut conn, &owner, epoch, now_ms(), limits).await.unwrap();
        assert_eq!(got.len(), 1, "one claimed");
        let t3 = Instant::now();
        assert!(store::jobs::finish(&mut conn, &outcome(&got[0].id), &owner, epoch, now_ms()).await.unwrap());
        let t4 = Instant::now();
        ins += t2 - t;
        cl += t3 - t2;
        fin += t4 - t3;
    }
    let total = start.elapsed();
    let us = |d: Duration| d.as_secs_f64() * 1e6 / LIFECYCLE_JOBS as f64;
    Lifecycle { insert: us(ins), claim: us(cl), finish: us(fin), per_s: LIFECYCLE_JOBS as f64 / total.as_secs_f64() }
}

fn baton_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_baton"))
}

/// A project directory with its config (no auto-started dispatchers).
fn project(dir: &Path) -> PathBuf {
    let p = dir.join("project");
    std::fs::create_dir_all(p.join(".git")).unwrap();
    std::fs::create_dir_all(p.join(".baton")).unwrap();
    let cfg = serde_json::json!({
        "autoSpawn": false,
        "limits": {"maxConcurrency": 8},
        "dispatcher": {"heartbeatMs": 500, "staleMs": 15000}
    });
    std::fs::write(p.join(".baton/config.json"), cfg.to_string()).unwrap();
    p
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && self.0.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Queue DRAIN_JOBS `/bin/true` tasks, start `nodes` dispatchers, and time until every task
/// has its result. Tasks/s.
async fn drain(st: &Store, db: &str, project: &Path, nodes: usize) -> f64 {
    let now = now_ms();
    let mut tx = st.begin().await.unwrap();
    for i in 0..DRAIN_JOBS {
        store::jobs::insert(&mut tx, &job(i, now, project.to_str().unwrap())).await.unwrap();
    }
    tx.commit().await.unwrap();
    let start = Instant::now();
    let _running: Vec<Killed> = (0..nodes)
        .map(|i| {
            Killed(
                Command::new(baton_bin())
                    .arg("run")
                    .current_dir(project)
                    .env("BATON_DB", db)
                    .env("BATON_NODE", format!("bench-{i}"))
                    .env("BATON_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn baton run"),
            )
        })
        .collect();
    let mut conn = st.conn().await.unwrap();
    loop {
        let counts = store::jobs::counts(&mut conn).await.unwrap();
        let open: i64 = counts.iter().filter(|(s, _)| !s.is_terminal()).map(|(_, n)| n).sum();
        if open == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(600), "the drain did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    let failed: i64 = store::jobs::counts(&mut conn)
        .await
        .unwrap()
        .iter()
        .filter(|(s, _)| *s != JobState::Succeeded)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(failed, 0, "every task succeeded");
    DRAIN_JOBS as f64 / took.as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: set before any thread starts; the bench's dispatchers inherit a private HOME.
    unsafe {
        std::env::set_var("HOME", dir.path().join("home"));
        std::env::set_var("XDG_CONFIG_HOME", dir.path().join("home/.config"));
    }
    let Some(server) = pg::Pg::start() else {
        println!("backends: skipped, no PostgreSQL binaries here (initdb, pg_ctl)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        if want("lifecycle") {
            println!("lifecycle ({LIFECYCLE_JOBS} jobs, one at a time: insert, claim, finish)");
            let file = dir.path().join("lifecycle.db");
            let st = Store::open(&file, &dir.path().join("lifecycle.lock"), Durability::Normal).await.unwrap();
            let f = lifecycle(&st, "/tmp").await;
            st.close().await;
            let url = server.create_db("lifecycle");
            let st = Store::open_postgres(&url, Node::new(Some("bench")), true).await.unwrap();
            let p = lifecycle(&st, "/tmp").await;
            st.close().await;
            for (name, l) in [("SQLite file", &f), ("PostgreSQL", &p)] {
                println!(
                    "  {name:<12} {:>7.0} jobs/s   insert {:>6.0} us  claim {:>6.0} us  finish {:>6.0} us   ({:.2}x of the file)",
                    l.per_s,
                    l.insert,
                    l.claim,
                    l.finish,
                    l.per_s / f.per_s
                );
            }
        }
        if want("drain") {
            println!("drain ({DRAIN_JOBS} /bin/true tasks, limits.maxConcurrency 8 across all dispatchers)");
            let d = dir.path().join("drain-file");
            let proj = project(&d);
            let file = proj.join(".baton/baton.db");
            let st = Store::open(&file, &proj.join(".baton/migrate.lock"), Durability::Normal).await.unwrap();
            let base = drain(&st, file.to_str().unwrap(), &proj, 1).await;
            st.close().await;
            println!("  SQLite file, 1 dispatcher   {base:>7.0} tasks/s");
            for nodes in [1, 2, 4] {
                let d = dir.path().join(format!("drain-pg-{nodes}"));
                let proj = project(&d);
                let url = server.create_db(&format!("drain{nodes}"));
                let st = Store::open_postgres(&url, Node::new(Some("bench-loader")), true).await.unwrap();
                let r = drain(&st, &url, &proj, nodes).await;
                st.close().await;
                println!("  PostgreSQL, {nodes} node(s)       {r:>7.0} tasks/s   ({:.2}x of the file)", r / base);
            }
        }
    });
}

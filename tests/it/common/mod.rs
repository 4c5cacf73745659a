//! Shared test helpers: an isolated queue per test (its own BATON_DB, HOME and
//! XDG_CONFIG_HOME, generous timing knobs), the built binary, polling with deadlines, and
//! cleanup of every dispatcher a test started (killed by pid).
#![allow(dead_code)]

pub mod fake_model;
pub mod pg;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Process-heavy tests take this lock so they run one at a time: all the integration tests
/// are modules of one binary (`tests/it`), so this serialises them across every module.
static HEAVY: Mutex<()> = Mutex::new(());

pub fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

pub const BIN: &str = env!("CARGO_BIN_EXE_baton");

/// Every key of a job record (SPEC 4): always present, `null` when unset.
pub const RECORD_KEYS: [&str; 29] = [
    "id",
    "workerId",
    "kind",
    "message",
    "status",
    "sessionId",
    "requestedBy",
    "createdAt",
    "startedAt",
    "finishedAt",
    "durationMs",
    "elapsedMs",
    "responseText",
    "responseTruncated",
    "responseChars",
    "error",
    "report",
    "exitCode",
    "attempt",
    "maxAttempts",
    "priority",
    "workflowRunId",
    "logPath",
    "lastActivityAt",
    "stalled",
    "outputTail",
    "cancelRequested",
    "tokens",
    "costUsd",
];

/// Default test configuration: shell runner, autoSpawn off, short but generous timings.
pub fn default_config() -> serde_json::Value {
    serde_json::json!({
        "autoSpawn": false,
        "runner": ["sh", "-c", "{prompt}"],
        "jobs": {"killGraceMs": 500, "retryBackoffMs": 100},
        "dispatcher": {"idleExitMs": 20000, "shutdownGraceMs": 2000, "heartbeatMs": 200, "staleMs": 5000},
        "limits": {"maxConcurrency": 8}
    })
}

/// One isolated queue in a temp dir.
pub struct TestQueue {
    pub dir: tempfile::TempDir,
    pub project: PathBuf,
    pub db: PathBuf,
    pub home: PathBuf,
    children: Mutex<Vec<Child>>,
}

impl TestQueue {
    pub fn new() -> TestQueue {
        Self::with_config(default_config())
    }

    /// A queue whose project config is `default_config()` merged with `overrides`.
    pub fn with_overrides(overrides: serde_json::Value) -> TestQueue {
        let mut cfg = default_config();
        merge(&mut cfg, &overrides);
        Self::with_config(cfg)
    }

    pub fn with_config(config: serde_json::Value) -> TestQueue {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = dir.path().join("project");
        let home = dir.path().join("home");
        std::fs::create_dir_all(project.join(".git")).unwrap();
        std::fs::create_dir_all(project.join(".baton")).unwrap();
        std::fs::create_dir_all(home.join(".config")).unwrap();
        std::fs::write(project.join(".baton/config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let db = project.join(".baton/baton.db");
        TestQueue { dir, project, db, home, children: Mutex::new(Vec::new()) }
    }

    /// A `baton` command isolated to this queue.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        self.isolate(&mut c);
        c
    }

    /// Isolate any command to this queue: its project directory, queue file, home and config,
    /// no inherited worker guard, session or log filter, null stdin.
    pub fn isolate(&self, c: &mut Command) {
        c.current_dir(&self.project)
            .env("BATON_DB", &self.db)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("BATON_LOG", "info")
            .env_remove("BATON_WORKER")
            .env_remove("BATON_SESSION")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
    }

    /// Run `baton <args>` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run baton")
    }

    /// Run and expect exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "baton {args:?} failed: {}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    /// `baton <args>`, failing the test (instead of hanging it) when it has not exited in 30 s.
    pub fn run_within(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        run_within(c, 30)
    }

    /// Run a command expected to fail with exit 2 (within 30 s); returns stderr.
    pub fn refused(&self, args: &[&str]) -> String {
        let o = self.run_within(args);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(
            o.status.code(),
            Some(2),
            "baton {args:?}: stdout {} stderr {stderr}",
            String::from_utf8_lossy(&o.stdout)
        );
        stderr
    }

    /// How many jobs the queue holds (0 when there is no queue file).
    pub fn job_count(&self) -> i64 {
        if !self.db.exists() {
            return 0;
        }
        self.scalar_i64("SELECT count(*) FROM jobs")
    }

    /// `baton task start ... ` and return the id.
    pub fn start(&self, args: &[&str]) -> String {
        let mut a = vec!["task", "start"];
        a.extend_from_slice(args);
        self.ok(&a).trim().to_string()
    }

    /// `--json` output parsed.
    pub fn json(&self, args: &[&str]) -> (serde_json::Value, i32) {
        let mut a = args.to_vec();
        a.push("--json");
        let o = self.run(&a);
        let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
        });
        (v, o.status.code().unwrap_or(-1))
    }

    /// Start `baton run` in the foreground as a child (stderr to a log file in the temp dir).
    pub fn dispatcher(&self) -> u32 {
        self.dispatcher_with_log().0
    }

    /// A dispatcher (killed with the queue) and the file its log goes to.
    pub fn dispatcher_with_log(&self) -> (u32, PathBuf) {
        let path = self.dir.path().join(format!("dispatcher-{}.log", now_nanos()));
        let log = std::fs::File::create(&path).unwrap();
        let child = self.cmd().arg("run").stdout(Stdio::null()).stderr(log).spawn().expect("spawn dispatcher");
        let pid = child.id();
        self.children.lock().unwrap().push(child);
        (pid, path)
    }

    /// A raw SQLite connection to the queue (no baton logic).
    pub fn raw(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(&self.db).expect("open raw");
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        c
    }

    pub fn scalar_i64(&self, sql: &str) -> i64 {
        self.raw().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// `n` copies of the queued task `seed`, written in one statement through sqlite (a deep
    /// backlog in a blink; the CLI would take 10 ms a task). Each copy keeps the seed's fields
    /// but gets its own id and a later `created_ms`.
    pub fn copy_queued(&self, seed: &str, n: u32) {
        let copies = self
            .raw()
            .execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2)
                 INSERT INTO jobs (id, state, kind, profile, task, session, requested_by, project_dir, argv,
                                   prompt_stdin, model, env, attachments, priority, attempt, max_attempts,
                                   run_after_ms, timeout_ms, profile_limit, created_ms, labels)
                 SELECT printf('%s-%05d', substr(id, 1, 30), i), state, kind, profile, task, session, requested_by,
                        project_dir, argv, prompt_stdin, model, env, attachments, priority, attempt, max_attempts,
                        run_after_ms, timeout_ms, profile_limit, created_ms + i, labels
                   FROM jobs, n WHERE jobs.id = ?1 AND jobs.state = 'queued'",
                rusqlite::params![seed, n],
            )
            .unwrap();
        assert_eq!(copies, n as usize, "copies of {seed}");
    }

    pub fn state(&self, id: &str) -> String {
        self.raw().query_row("SELECT state FROM jobs WHERE id = ?1", [id], |r| r.get(0)).unwrap()
    }

    /// Write an executable helper script in the temp dir; returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// The pid of the leading dispatcher, from the lease row.
    pub fn lease_pid(&self) -> Option<i32> {
        self.raw().query_row("SELECT pid FROM dispatcher_lease", [], |r| r.get(0)).ok()
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        for mut c in self.children.lock().unwrap().drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // An auto-started dispatcher: kill it by the pid in the lease, if it is ours.
        if self.db.exists()
            && let Some(pid) = self.lease_pid()
            && std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|e| {
                let needle = format!("BATON_DB={}", self.db.display());
                e.split(|b| *b == 0).any(|v| v == needle.as_bytes())
            })
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

pub fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// Whether the binary has the `test-hooks` feature; a test that needs a hook says plainly that
/// it skipped when it is off.
pub fn test_hooks(what: &str) -> bool {
    if !cfg!(feature = "test-hooks") {
        eprintln!("SKIPPED: {what} needs the test hooks: run `cargo test --workspace --features test-hooks`");
    }
    cfg!(feature = "test-hooks")
}

/// Run a command, failing the test (instead of hanging it) when it has not exited in `secs`.
pub fn run_within(mut cmd: Command, secs: u64) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn baton");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let o = child.wait_with_output().expect("output");
            panic!("{cmd:?} still running after {secs}s (stderr: {})", String::from_utf8_lossy(&o.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll `cond` every 20 ms until it holds or `secs` pass; panics with `what` on timeout.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {secs}s waiting for: {what}");
}

/// A child process killed (and reaped) when this goes out of scope.
pub struct Kill(pub Child);

impl Kill {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Has it exited? (Reaps it when it has.)
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().expect("try_wait")
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child stopped with SIGTERM when dropped (SIGKILL after 10 s): a dispatcher stops its
/// server workers, which agents that ignore their stdin closing need (they would outlive a
/// SIGKILLed dispatcher until the next one's recovery).
pub struct Term(pub std::process::Child);

impl Drop for Term {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Dead means gone or a zombie.
pub fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rfind(')').and_then(|i| s[i + 2..].chars().next()).is_none_or(|st| st == 'Z' || st == 'X'),
    }
}

/// Pids of live processes whose environment has `BATON_DB=<db>` and a `BATON_TASK_ID`
/// (workers of this queue).
pub fn live_workers_of(db: &Path) -> Vec<i32> {
    let needle = format!("BATON_DB={}", db.display());
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !is_dead(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|e| {
                let vars: Vec<&[u8]> = e.split(|b| *b == 0).collect();
                vars.contains(&needle.as_bytes()) && vars.iter().any(|v| v.starts_with(b"BATON_TASK_ID="))
            })
        })
        .collect()
}

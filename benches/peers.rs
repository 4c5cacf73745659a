//! baton beside the queues a user would install instead, each through its own CLI, in one run.
//!
//! `cargo bench --bench peers` (release). Contenders: baton (`baton task start`, a `baton run`
//! dispatcher on the queue), pueue (`pueue add`, its `pueued` daemon started here), task-spooler
//! (`tsp`) and nq (`nq`). A contender that is not installed is skipped with a line saying so;
//! `.ci/bench-peers` installs them (pueue from crates.io, the others from Debian).
//!
//! Every contender runs the same `true` task, from a clean environment (PATH, HOME, LANG and its
//! own variables) in temp directories of its own:
//!
//! - enqueue: a `sh` loop adding N_ENQUEUE tasks to a held queue (baton and pueue paused,
//!   task-spooler and nq behind a running `sleep`), wall time of the whole loop;
//! - per add at depth 0, 1 000 and 10 000 held tasks: ADD_SAMPLES adds, each timed alone (the
//!   depth is built by the fastest means the tool has: baton through its library, pueue by
//!   writing the state file its daemon loads, task-spooler and nq by their CLI);
//! - drain: N_ENQUEUE held tasks released at parallelism 1 and 4 (nq runs one at a time only),
//!   release -> the last one done.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton::api::{self, Caller, OpenOptions, Queue, StartParams};

const N_ENQUEUE: usize = 1000;
const DEPTHS: [usize; 3] = [0, 1000, 10_000];
const ADD_SAMPLES: usize = 20;
const PARALLEL: [usize; 2] = [1, 4];
/// An add that takes longer than this is counted as blocked (task-spooler waits for a free
/// connection once its server holds as many queued jobs as it can).
const ADD_TIMEOUT: Duration = Duration::from_secs(5);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

fn baton_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_baton") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("target dir").join("baton")
}

/// `name` on PATH, if it is there.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// A command with a clean environment: PATH, LANG, HOME (a temp dir) and `envs`.
fn clean(program: &Path, home: &Path, envs: &[(String, PathBuf)]) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LANG", "C.UTF-8")
        .env("HOME", home)
        .current_dir(home)
        .stdin(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

/// Runs `c`; its stdout on success, else the error with its stderr.
fn run(mut c: Command) -> Result<String, String> {
    let words: Vec<String> =
        std::iter::once(c.get_program()).chain(c.get_args()).map(|w| w.to_string_lossy().into_owned()).collect();
    let shown = words.join(" ");
    let o = c.output().map_err(|e| format!("`{shown}`: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!("`{shown}` exited with {}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim()))
    }
}

/// Runs `c` with its output discarded; the wall time, or None when it took longer than
/// ADD_TIMEOUT (it is killed) or failed.
fn timed(mut c: Command) -> Option<Duration> {
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let t = Instant::now();
    let mut child = c.spawn().ok()?;
    loop {
        if let Some(s) = child.try_wait().ok()? {
            return s.success().then(|| t.elapsed());
        }
        if t.elapsed() > ADD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// One contender's queue in temp directories of its own, held (nothing runs) from creation
/// until `release`.
trait Peer {
    /// The command that adds one `true` task, as a shell word list (for the enqueue loop).
    fn add_words(&self) -> Vec<String>;
    /// The environment the tool's commands run with.
    fn envs(&self) -> Vec<(String, PathBuf)>;
    fn home(&self) -> &Path;
    /// Adds held tasks until `depth` are queued (not timed). Err: why it could not.
    fn fill(&mut self, queued: usize, depth: usize) -> Result<(), String>;
    /// Lets the held tasks run, `parallel` at a time.
    fn release(&mut self, parallel: usize) -> Result<(), String>;
    /// Blocks until every added task is done.
    fn wait_done(&mut self, count: usize) -> Result<(), String>;

    /// The drain's time from its wall time (release -> wait returned), where the tool records
    /// a closer end of its own.
    fn drain_time(&self, wall: Duration) -> Duration {
        wall
    }

    fn add_command(&self) -> Command {
        let words = self.add_words();
        let mut c = clean(Path::new(&words[0]), self.home(), &self.envs());
        c.args(&words[1..]);
        c
    }
}

// ---------------------------------------------------------------------------------------------
// baton

struct Baton {
    dir: tempfile::TempDir,
    bin: PathBuf,
    db: PathBuf,
    dispatcher: Child,
    rt: tokio::runtime::Runtime,
}

impl Baton {
    fn new(parallel: usize) -> Result<Baton, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let project = dir.path().to_path_buf();
        std::fs::create_dir_all(project.join(".git")).unwrap();
        std::fs::create_dir_all(project.join(".baton")).unwrap();
        let config = serde_json::json!({
            "runner": ["sh", "-c", "{prompt}"],
            "autoSpawn": false,
            "limits": {"maxConcurrency": parallel},
        });
        std::fs::write(project.join(".baton/config.json"), config.to_string()).unwrap();
        let db = project.join(".baton/baton.db");
        let bin = baton_bin();
        let envs = vec![("BATON_DB".to_string(), db.clone()), ("BATON_LOG".to_string(), PathBuf::from("warn"))];
        let mut pause = clean(&bin, &project, &envs);
        pause.arg("pause");
        run(pause)?;
        let dispatcher = clean(&bin, &project, &envs)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("baton run: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let b = Baton { dir, bin, db, dispatcher, rt };
        let raw = b.raw();
        let deadline = Instant::now() + Duration::from_secs(30);
        while raw.query_row("SELECT count(*) FROM dispatcher_lease", [], |r| r.get::<_, i64>(0)).unwrap_or(0) == 0 {
            if Instant::now() > deadline {
                return Err("the baton dispatcher did not take the lease in 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(b)
    }

    fn raw(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(&self.db).expect("open the baton queue");
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        c
    }

    fn baton(&self, args: &[&str]) -> Result<String, String> {
        let mut c = clean(&self.bin, self.dir.path(), &self.envs());
        c.args(args);
        run(c)
    }
}

impl Peer for Baton {
    fn add_words(&self) -> Vec<String> {
        vec![self.bin.display().to_string(), "task".into(), "start".into(), "true".into()]
    }

    fn envs(&self) -> Vec<(String, PathBuf)> {
        vec![("BATON_DB".into(), self.db.clone()), ("BATON_LOG".into(), PathBuf::from("warn"))]
    }

    fn home(&self) -> &Path {
        self.dir.path()
    }

    fn fill(&mut self, queued: usize, depth: usize) -> Result<(), String> {
        let opts = OpenOptions { cwd: self.dir.path().to_path_buf(), db: Some(self.db.clone()), config_paths: None };
        self.rt.block_on(async {
            let q = Queue::open(&opts).await.map_err(|e| e.to_string())?;
            let caller = Caller { session: None, requested_by: "cli:bench".into() };
            for _ in queued..depth {
                let p = StartParams { task: "true".into(), ..Default::default() };
                api::start(&q, &caller, p).await.map_err(|e| e.to_string())?;
            }
            q.store.close().await;
            Ok(())
        })
    }

    fn release(&mut self, _parallel: usize) -> Result<(), String> {
        self.baton(&["resume"]).map(drop)
    }

    fn wait_done(&mut self, _count: usize) -> Result<(), String> {
        let raw = self.raw();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let open: i64 = raw
                .query_row("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')", [], |r| r.get(0))
                .map_err(|e| e.to_string())?;
            if open == 0 {
                let failed: i64 = raw
                    .query_row("SELECT count(*) FROM jobs WHERE state <> 'succeeded'", [], |r| r.get(0))
                    .map_err(|e| e.to_string())?;
                return if failed == 0 { Ok(()) } else { Err(format!("{failed} baton tasks did not succeed")) };
            }
            if Instant::now() > deadline {
                return Err(format!("{open} baton tasks unfinished after {DRAIN_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Baton {
    fn drop(&mut self) {
        let _ = self.dispatcher.kill();
        let _ = self.dispatcher.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// pueue

struct Pueue {
    dir: tempfile::TempDir,
    pueue: PathBuf,
    pueued: PathBuf,
    daemon: Option<Child>,
    /// Where its daemon was told to release the held tasks (wall-clock).
    released: Option<chrono::DateTime<chrono::Utc>>,
}

impl Pueue {
    fn new() -> Result<Pueue, String> {
        let (pueue, pueued) = match (which("pueue"), which("pueued")) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err("pueue is not installed (cargo install --locked pueue)".into()),
        };
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(
            dir.path().join("pueue.yml"),
            format!("shared:\n  pueue_directory: {0}\n  runtime_directory: {0}\n", state.display()),
        )
        .unwrap();
        let mut p = Pueue { dir, pueue, pueued, daemon: None, released: None };
        p.start_daemon()?;
        p.pueue(&["pause"])?;
        Ok(p)
    }

    fn state_file(&self) -> PathBuf {
        self.dir.path().join("state/state.json")
    }

    fn start_daemon(&mut self) -> Result<(), String> {
        let child = clean(&self.pueued, self.dir.path(), &self.envs())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("pueued: {e}"))?;
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.pueue(&["status"]).is_err() {
            if Instant::now() > deadline {
                return Err("pueued did not answer in 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn stop_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = self.pueue(&["shutdown"]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while d.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    fn pueue(&self, args: &[&str]) -> Result<String, String> {
        let mut c = clean(&self.pueue, self.dir.path(), &self.envs());
        c.args(args);
        run(c)
    }
}

impl Peer for Pueue {
    fn add_words(&self) -> Vec<String> {
        vec![self.pueue.display().to_string(), "add".into(), "--".into(), "true".into()]
    }

    fn envs(&self) -> Vec<(String, PathBuf)> {
        vec![("PUEUE_CONFIG_PATH".into(), self.dir.path().join("pueue.yml"))]
    }

    fn home(&self) -> &Path {
        self.dir.path()
    }

    /// pueue's add rewrites its whole state file, so building 10 000 tasks through the CLI
    /// takes minutes; the daemon is stopped, the state it saved gets copies of its last task
    /// (the same record an add writes), and it is started again on that state.
    fn fill(&mut self, queued: usize, depth: usize) -> Result<(), String> {
        if depth <= queued {
            return Ok(());
        }
        if queued == 0 {
            self.pueue(&["add", "--", "true"])?;
        }
        self.stop_daemon();
        let path = self.state_file();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut state: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("pueue state: {e}"))?;
        let tasks = state["tasks"].as_object_mut().ok_or("pueue state has no tasks map")?;
        let last = tasks.values().max_by_key(|t| t["id"].as_u64()).cloned().ok_or("pueue state has no task")?;
        let mut id = last["id"].as_u64().unwrap_or(0);
        while tasks.len() < depth {
            id += 1;
            let mut t = last.clone();
            t["id"] = id.into();
            tasks.insert(id.to_string(), t);
        }
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).map_err(|e| e.to_string())?;
        self.start_daemon()
    }

    fn release(&mut self, parallel: usize) -> Result<(), String> {
        self.released = Some(chrono::Utc::now());
        self.pueue(&["parallel", &parallel.to_string()])?;
        self.pueue(&["start"]).map(drop)
    }

    /// `pueue wait` returns once every task is done; the time taken is up to the last task's
    /// own end time in pueue's status (its wait polls).
    fn wait_done(&mut self, count: usize) -> Result<(), String> {
        self.pueue(&["wait"])?;
        let status: serde_json::Value =
            serde_json::from_str(&self.pueue(&["status", "--json"])?).map_err(|e| format!("pueue status: {e}"))?;
        let tasks = status["tasks"].as_object().ok_or("pueue status has no tasks")?;
        let mut ok = 0;
        for t in tasks.values() {
            if t["status"]["Done"]["result"] == "Success" {
                ok += 1;
            }
        }
        if ok != count {
            return Err(format!("pueue: {ok} of {count} tasks succeeded"));
        }
        Ok(())
    }

    /// From the release to the last task's end time in pueue's own status (`pueue wait` polls).
    fn drain_time(&self, wall: Duration) -> Duration {
        let last_end = || {
            let status: serde_json::Value = serde_json::from_str(&self.pueue(&["status", "--json"]).ok()?).ok()?;
            let end = status["tasks"]
                .as_object()?
                .values()
                .filter_map(|t| t["status"]["Done"]["end"].as_str())
                .filter_map(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .max()?;
            (end.with_timezone(&chrono::Utc) - self.released?).to_std().ok()
        };
        last_end().unwrap_or(wall)
    }
}

impl Drop for Pueue {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// task-spooler

struct Spooler {
    dir: tempfile::TempDir,
    tsp: PathBuf,
    /// The id of the `sleep` holding the queue.
    blocker: String,
}

impl Spooler {
    fn new() -> Result<Spooler, String> {
        let tsp = which("tsp").ok_or("task-spooler is not installed (apt-get install task-spooler)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut s = Spooler { dir, tsp, blocker: String::new() };
        s.tsp(&["-S", "1"])?;
        s.blocker = s.tsp(&["-n", "sleep", "3600"])?.trim().to_string();
        Ok(s)
    }

    fn tsp(&self, args: &[&str]) -> Result<String, String> {
        let mut c = clean(&self.tsp, self.dir.path(), &self.envs());
        c.args(args);
        run(c)
    }
}

impl Peer for Spooler {
    fn add_words(&self) -> Vec<String> {
        // -B: when the server holds all the jobs it can, fail at once instead of waiting.
        vec![self.tsp.display().to_string(), "-B".into(), "-n".into(), "true".into()]
    }

    fn envs(&self) -> Vec<(String, PathBuf)> {
        vec![
            ("TS_SOCKET".into(), self.dir.path().join("socket")),
            ("TMPDIR".into(), self.dir.path().to_path_buf()),
            ("TS_MAXFINISHED".into(), PathBuf::from("100000")),
        ]
    }

    fn home(&self) -> &Path {
        self.dir.path()
    }

    fn fill(&mut self, queued: usize, depth: usize) -> Result<(), String> {
        for n in queued..depth {
            if timed(self.add_command()).is_none() {
                return Err(format!("an add blocked (> {ADD_TIMEOUT:?}) with {n} tasks queued"));
            }
        }
        Ok(())
    }

    fn release(&mut self, parallel: usize) -> Result<(), String> {
        self.tsp(&["-S", &parallel.to_string()])?;
        self.tsp(&["-k", &self.blocker]).map(drop)
    }

    /// `tsp -w` on the last task added (its id is the highest), then every task finished.
    fn wait_done(&mut self, count: usize) -> Result<(), String> {
        let last = (count as u64 + self.blocker.parse::<u64>().unwrap_or(0)).to_string();
        let _ = self.tsp(&["-w", &last]);
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let list = self.tsp(&["-l"])?;
            let unfinished = list.lines().skip(1).filter(|l| !l.contains("finished")).count();
            if unfinished == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{unfinished} task-spooler tasks unfinished"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Spooler {
    fn drop(&mut self) {
        let _ = self.tsp(&["-K"]);
    }
}

// ---------------------------------------------------------------------------------------------
// nq

struct Nq {
    dir: tempfile::TempDir,
    nq: PathBuf,
}

impl Nq {
    fn new() -> Result<Nq, String> {
        let nq = which("nq").ok_or("nq is not installed (apt-get install nq)")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir.path().join("queue")).unwrap();
        let n = Nq { dir, nq };
        let mut c = clean(&n.nq, n.dir.path(), &n.envs());
        c.args(["sleep", "3600"]);
        run(c)?;
        Ok(n)
    }

    /// The pids of nq's jobs, oldest first, from its lock files (`,<time>.<pid>`).
    fn jobs(&self) -> Vec<i32> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path().join("queue"))
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        names.sort();
        names.iter().filter_map(|n| n.strip_prefix(',')?.rsplit('.').next()?.parse().ok()).collect()
    }
}

impl Peer for Nq {
    fn add_words(&self) -> Vec<String> {
        vec![self.nq.display().to_string(), "true".into()]
    }

    fn envs(&self) -> Vec<(String, PathBuf)> {
        vec![("NQDIR".into(), self.dir.path().join("queue"))]
    }

    fn home(&self) -> &Path {
        self.dir.path()
    }

    /// Each queued nq job is a process waiting on a lock: refused when the pids left would not
    /// hold them.
    fn fill(&mut self, queued: usize, depth: usize) -> Result<(), String> {
        let pid_max: usize = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(32768);
        let in_use = std::fs::read_dir("/proc").map(|d| d.count()).unwrap_or(0);
        if in_use + 2 * (depth - queued.min(depth)) + 1000 > pid_max {
            return Err(format!("{depth} waiting nq processes would not fit in pid_max {pid_max}"));
        }
        let script =
            format!("i={queued}; while [ $i -lt {depth} ]; do \"$0\" true >/dev/null || exit 1; i=$((i+1)); done");
        let mut c = clean(Path::new("/bin/sh"), self.dir.path(), &self.envs());
        c.args(["-c", &script, &self.nq.display().to_string()]);
        run(c).map(drop)
    }

    fn release(&mut self, _parallel: usize) -> Result<(), String> {
        let blocker = *self.jobs().first().ok_or("nq's blocker is gone")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(blocker), nix::sys::signal::Signal::SIGTERM)
            .map_err(|e| format!("kill nq's blocker: {e}"))
    }

    fn wait_done(&mut self, _count: usize) -> Result<(), String> {
        let mut c = clean(&self.nq, self.dir.path(), &self.envs());
        c.arg("-w");
        run(c).map(drop)
    }
}

impl Drop for Nq {
    fn drop(&mut self) {
        for pid in self.jobs() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// What one contender measured; None where it could not (the reason is printed).
#[derive(Default)]
struct Figures {
    enqueue: Option<Duration>,
    add: Vec<Option<Duration>>,
    drain: Vec<Option<Duration>>,
}

fn contender(name: &str, new: &dyn Fn(usize) -> Result<Box<dyn Peer>, String>, serial_only: bool) -> Option<Figures> {
    let mut f = Figures::default();
    let say = |what: &str, e: &str| println!("    {name}: {what}: {e}");
    // enqueue N_ENQUEUE from the shell
    match new(1) {
        Err(e) => {
            println!("    {name}: skipped: {e}");
            return None;
        }
        Ok(p) => {
            let words: Vec<String> = p.add_words().iter().map(|w| format!("'{w}'")).collect();
            let script = format!(
                "i=0; while [ $i -lt {N_ENQUEUE} ]; do {} >/dev/null || {{ echo \"add $((i+1)) failed\" >&2; exit 1; }}; i=$((i+1)); done",
                words.join(" ")
            );
            let mut c = clean(Path::new("/bin/sh"), p.home(), &p.envs());
            c.args(["-c", &script]);
            let t = Instant::now();
            match run(c) {
                Ok(_) => f.enqueue = Some(t.elapsed()),
                Err(e) => say("enqueue", &e),
            }
        }
    }
    // per add at depth
    match new(1) {
        Err(e) => say("per add", &e),
        Ok(mut p) => {
            let mut queued = 0;
            for &depth in &DEPTHS {
                if let Err(e) = p.fill(queued, depth) {
                    say(&format!("depth {depth}"), &e);
                    f.add.push(None);
                    // Deeper is out of reach too.
                    while f.add.len() < DEPTHS.len() {
                        f.add.push(None);
                    }
                    break;
                }
                queued = depth;
                let mut v = Vec::with_capacity(ADD_SAMPLES);
                for _ in 0..ADD_SAMPLES {
                    match timed(p.add_command()) {
                        Some(d) => v.push(d),
                        None => break,
                    }
                }
                queued += v.len();
                if v.len() < ADD_SAMPLES {
                    say(&format!("depth {depth}"), &format!("an add blocked or failed after {} adds", v.len()));
                    f.add.push(None);
                } else {
                    f.add.push(Some(median(v)));
                }
            }
        }
    }
    // drain N_ENQUEUE at each parallelism
    for &parallel in &PARALLEL {
        if serial_only && parallel > 1 {
            f.drain.push(None);
            continue;
        }
        let r = new(parallel).and_then(|mut p| {
            p.fill(0, N_ENQUEUE)?;
            let t = Instant::now();
            p.release(parallel)?;
            p.wait_done(N_ENQUEUE)?;
            let wall = t.elapsed();
            Ok(p.drain_time(wall))
        });
        match r {
            Ok(d) => f.drain.push(Some(d)),
            Err(e) => {
                say(&format!("drain at {parallel}"), &e);
                f.drain.push(None);
            }
        }
    }
    Some(f)
}

fn print_row(name: &str, f: &Figures) {
    println!(
        "    {:<13} {:>14} {:>12} {:>12} {:>12} {:>14} {:>14}",
        name,
        cell(f.enqueue),
        cell(f.add[0]),
        cell(f.add[1]),
        cell(f.add[2]),
        cell(f.drain[0]),
        cell(f.drain[1])
    );
}

fn cell(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2} ms", ms(d))).unwrap_or_else(|| "-".into())
}

fn main() {
    let started = Instant::now();
    // SAFETY: no other thread exists yet.
    unsafe {
        for v in ["BATON_DB", "BATON_WORKER", "BATON_SESSION", "BATON_LOG", "RUST_LOG"] {
            std::env::remove_var(v);
        }
    }
    println!(
        "(p) baton beside pueue, task-spooler and nq through their CLIs: {N_ENQUEUE} `true` tasks from a `sh` loop; per add \
         (median of {ADD_SAMPLES}) at {DEPTHS:?} held tasks; release -> all done at parallelism {PARALLEL:?}; {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "    {:<13} {:>14} {:>12} {:>12} {:>12} {:>14} {:>14}",
        "", "enqueue 1000", "add @0", "add @1000", "add @10000", "drain at 1", "drain at 4"
    );
    let mut rows: Vec<(&str, Figures)> = Vec::new();
    let baton = |p: usize| Baton::new(p).map(|b| Box::new(b) as Box<dyn Peer>);
    if let Some(f) = contender("baton", &baton, false) {
        print_row("baton", &f);
        rows.push(("baton", f));
    }
    let pueue = |_: usize| Pueue::new().map(|b| Box::new(b) as Box<dyn Peer>);
    if let Some(f) = contender("pueue", &pueue, false) {
        print_row("pueue", &f);
        rows.push(("pueue", f));
    }
    let tsp = |_: usize| Spooler::new().map(|b| Box::new(b) as Box<dyn Peer>);
    if let Some(f) = contender("task-spooler", &tsp, false) {
        print_row("task-spooler", &f);
        rows.push(("task-spooler", f));
    }
    let nq = |_: usize| Nq::new().map(|b| Box::new(b) as Box<dyn Peer>);
    if let Some(f) = contender("nq", &nq, true) {
        print_row("nq", &f);
        rows.push(("nq", f));
    }
    // Ratios: the peer's figure over baton's (above 1: baton is faster).
    if let Some((_, b)) = rows.iter().find(|(n, _)| *n == "baton") {
        let ratio = |peer: Option<Duration>, baton: Option<Duration>| match (peer, baton) {
            (Some(p), Some(b)) => format!("{:.2}x", p.as_secs_f64() / b.as_secs_f64()),
            _ => "-".into(),
        };
        for (name, f) in rows.iter().filter(|(n, _)| *n != "baton") {
            println!(
                "    {name} / baton: enqueue {} | add @0 {} @1000 {} @10000 {} | drain at 1 {} at 4 {} (above 1: baton is faster)",
                ratio(f.enqueue, b.enqueue),
                ratio(f.add[0], b.add[0]),
                ratio(f.add[1], b.add[1]),
                ratio(f.add[2], b.add[2]),
                ratio(f.drain[0], b.drain[0]),
                ratio(f.drain[1], b.drain[1])
            );
        }
        if let (Some(a0), Some(a2)) = (b.add[0], b.add[2]) {
            println!("    baton add @10000 / @0: {:.2}x (flat: 1)", a2.as_secs_f64() / a0.as_secs_f64());
        }
    }
    println!("total bench run: {:.1} s", started.elapsed().as_secs_f64());
}

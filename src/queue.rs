//! The queue handle: a queue file opened with the caller's project configuration (config,
//! profiles and workflows loaded together, and reloaded together), whether a dispatcher leads
//! it, and starting one. The faces' API and the engine both build on it; it imports neither.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

use crate::agent::profile::ProfileSet;
use crate::config::{self, ConfigPaths, LoadedConfig};
use crate::engine::proc;
use crate::error::{Error, Result};
use crate::job::{JobRow, Record, RecordOptions, now_ms};
use crate::location::{self, Database, Location};
use crate::store::lease::Lease;
use crate::store::{self, Store};
use crate::workflow::{self, WorkflowDef};

/// An open queue with the configuration of the caller's project.
#[derive(Debug, Clone)]
pub struct Queue {
    pub store: Store,
    pub loc: Location,
    pub config: LoadedConfig,
    pub profiles: ProfileSet,
    /// Workflow definitions: the built-in and the configured ones.
    pub workflows: Vec<WorkflowDef>,
}

/// Where to open a queue from.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The caller's working directory (its project is discovered from here).
    pub cwd: PathBuf,
    /// `--db`.
    pub db: Option<PathBuf>,
    /// Where the config files are; `None`: from HOME / XDG_CONFIG_HOME and the project.
    pub config_paths: Option<ConfigPaths>,
}

impl Queue {
    /// Discover the project, load its configuration, locate and open the queue file, creating
    /// it (and its directory) when there is none: for commands that write tasks.
    pub async fn open(opts: &OpenOptions) -> Result<Queue> {
        Self::open_with(opts, true).await
    }

    /// Like [`Queue::open`], for commands that read the queue or change tasks already in it: where
    /// there is no queue this answers [`Error::NoQueue`] and creates nothing, not even a directory.
    pub async fn open_existing(opts: &OpenOptions) -> Result<Queue> {
        Self::open_with(opts, false).await
    }

    async fn open_with(opts: &OpenOptions, create: bool) -> Result<Queue> {
        let project = location::find_project(&opts.cwd);
        let paths = opts.config_paths.clone().unwrap_or_else(|| ConfigPaths::from_env(&project));
        let config = config::load(&paths)?;
        let env_db = std::env::var_os("BATON_DB").filter(|v| !v.is_empty()).map(PathBuf::from);
        let loc = location::resolve(&project, opts.db.as_deref(), env_db.as_deref(), config.config.database.as_deref());
        let settings = store::Settings {
            durability: config.config.storage.synchronous.parse()?,
            busy_timeout: Duration::from_millis(config.config.storage.busy_timeout_ms),
        };
        let (profiles, workflows) = load_definitions(&config)?;
        // Configuration errors first: they hold whether or not there is a queue yet.
        let store = match &loc.db {
            Database::File(path) if create => {
                location::ensure_state_dir(&loc)?;
                Store::open(path, &loc.migrate_lock(), settings).await?
            }
            Database::File(path) => Store::open_existing(path, &loc.migrate_lock(), settings).await?,
            Database::Postgres(url) => {
                let node = std::env::var("BATON_NODE").ok().or_else(|| config.config.node.clone());
                let store = Store::open_postgres(url, store::Node::new(node.as_deref()), create).await?;
                // Logs and the node lock live on this machine, whoever opens the queue.
                location::ensure_state_dir(&loc)?;
                store
            }
        };
        Ok(Queue { store, loc, config, profiles, workflows })
    }

    /// Load the configuration files again, with the profiles and workflows they define, all
    /// together: a broken edit changes nothing and says why. Settings that only a new open can
    /// apply (the queue file, its storage settings) are kept, and the answer names them.
    pub fn reload(&mut self) -> Result<Vec<&'static str>> {
        let config = config::load(&self.config.paths)?;
        let (profiles, workflows) = load_definitions(&config)?;
        let (old, new) = (&self.config.config, &config.config);
        let mut kept = Vec::new();
        if old.database != new.database {
            kept.push("database");
        }
        if old.storage.synchronous != new.storage.synchronous {
            kept.push("storage.synchronous");
        }
        if old.storage.busy_timeout_ms != new.storage.busy_timeout_ms {
            kept.push("storage.busyTimeoutMs");
        }
        self.config = config;
        self.profiles = profiles;
        self.workflows = workflows;
        Ok(kept)
    }

    /// The lock its dispatcher holds: one per queue file; on a shared queue, one per node on
    /// this machine (several nodes may run here, each under its own id).
    pub fn dispatcher_lock(&self) -> PathBuf {
        match self.store.node() {
            None => self.loc.dispatcher_lock(),
            Some(n) => self.loc.state_dir.join(format!("dispatcher-{}.lock", file_safe(&n.id))),
        }
    }

    /// Where a detached dispatcher logs (per node on a shared queue, like its lock).
    pub fn dispatcher_log(&self) -> PathBuf {
        match self.store.node() {
            None => self.loc.dispatcher_log(),
            Some(n) => self.loc.state_dir.join(format!("dispatcher-{}.log", file_safe(&n.id))),
        }
    }

    pub(crate) fn record_options(&self, live: bool, full: bool) -> RecordOptions {
        RecordOptions {
            max_response_chars: (!full).then_some(self.config.config.ui.max_response_chars as usize),
            live,
            stall_ms: self.config.config.jobs.stall_ms as i64,
            now: now_ms(),
        }
    }

    pub(crate) fn record(&self, row: &JobRow, live: bool, full: bool) -> Record {
        Record::from_row(row, &self.loc.logs_dir(), self.record_options(live, full))
    }
}

/// A node id as part of a file name: anything but letters, digits, `.`, `_` and `-` becomes `_`.
fn file_safe(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect()
}

/// The profiles and workflows of the project around `cwd`, without opening its queue (for shell
/// completions).
pub fn definitions_at(cwd: &std::path::Path) -> Result<(ProfileSet, Vec<WorkflowDef>)> {
    let project = location::find_project(cwd);
    load_definitions(&config::load(&ConfigPaths::from_env(&project))?)
}

/// The profiles and workflow definitions a configuration gives (its warnings logged).
fn load_definitions(config: &LoadedConfig) -> Result<(ProfileSet, Vec<WorkflowDef>)> {
    let custom: Vec<(Value, String)> = config
        .config
        .profiles
        .iter()
        .map(|p| {
            let id = p.get("id").and_then(Value::as_str).unwrap_or_default().to_lowercase();
            let origin = config.profile_origins.get(&id).map_or("global", |l| l.name());
            (p.clone(), origin.to_string())
        })
        .collect();
    let profiles = ProfileSet::load(&custom)?;
    for w in profiles.warnings() {
        tracing::warn!("{w}");
    }
    let (workflows, wf_warnings) = workflow::definitions(&config.config, |id| {
        config.workflow_origins.get(id).map_or("global", |l| l.name()).to_string()
    })?;
    for w in wf_warnings {
        tracing::warn!("{w}");
    }
    Ok((profiles, workflows))
}

/// Does some process hold the dispatcher lock? Probed through a read-only descriptor, creating
/// nothing (no lock file: no holder), so it works in a directory this process cannot write.
fn lock_held(queue: &Queue) -> Result<bool> {
    let path = queue.dispatcher_lock();
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_) => Ok(false),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(true),
        Err((_, e)) => Err(Error::io("probing the dispatcher lock", e.into())),
    }
}

/// Whether a lease shows a live leader: renewed within `stale_ms`, by a process that holds the
/// dispatcher lock (`lock_held`: someone holds it) or is still running. A leader that replaced
/// a paused one leads without the lock, which the paused one keeps until it wakes and exits.
pub(crate) fn leads(lease: &Lease, lock_held: bool, stale_ms: u64, now: i64) -> bool {
    now - lease.heartbeat_ms <= stale_ms as i64 && (lock_held || !proc::is_dead(lease.pid as i32))
}

/// The queue's live leader, as any process can tell: none when no dispatcher ever ran, when
/// the last one is gone, or when its heartbeat is older than `dispatcher.staleMs` (it is paused
/// or hung, and the next dispatcher to start replaces it).
///
/// It reads the lease on the caller's connection: one taken here right after the caller gave
/// its own back would often be a new one (the pool takes returns back asynchronously).
pub async fn leader(queue: &Queue, conn: &mut impl store::Handle) -> Result<Option<Lease>> {
    let lease = store::lease::get(conn).await?;
    leading(queue, lease)
}

/// The lease if it shows a live leader (see [`leader`]), for a caller that has read it already.
pub fn leading(queue: &Queue, lease: Option<Lease>) -> Result<Option<Lease>> {
    let held = lock_held(queue)?;
    Ok(lease.filter(|l| leads(l, held, queue.config.config.dispatcher.stale_ms, now_ms())))
}

/// Start a fully detached dispatcher when none is alive. Concurrent starters race safely:
/// the losers find the lock taken and exit.
pub async fn ensure_dispatcher(q: &Queue, conn: &mut impl store::Handle) -> Result<()> {
    if leader(q, conn).await?.is_some() {
        return Ok(());
    }
    spawn_detached_dispatcher(q)
}

/// `baton run --auto` in a new session, stdio on /dev/null, no inherited descriptors, never
/// waited for (a thread collects it if this process outlives it).
fn spawn_detached_dispatcher(q: &Queue) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| Error::io("finding the baton executable", e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--db")
        .arg(q.store.locator())
        .args(["run", "--auto"])
        .current_dir(&q.loc.project_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, close_range) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            nix::libc::syscall(nix::libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::io("starting a dispatcher", e))?;
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

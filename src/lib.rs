//! baton: a durable task queue for coding-agent workers, whose whole state lives in one SQLite
//! file.
//!
//! An agent or a person starts a task; it is written to SQLite before its id is returned; a
//! dispatcher claims it and runs a worker process from a named profile; the worker's output,
//! exit status and timings land back in SQLite; any process can await, peek, list or cancel it.
//! Nothing lives only in memory: kill any process at any moment and every task is still there,
//! finished, running, or back in the queue.
//!
//! # Layout
//!
//! - [`api`]: the five operations (start, await, peek, list, cancel), shared by every face.
//! - `store`: all SQL: opening a queue file safely, migrations, every statement.
//! - `dispatch`: the leader lock and lease, the claim loop, recovery, draining.
//! - `worker`: spawning and watching one oneshot worker process; `server`: long-lived server
//!   workers and their JSON-lines protocol; `proc`: `/proc` and process groups.
//! - `wake`: waking on queue changes (inotify on the WAL, a bounded `data_version` poll).
//! - [`config`]: defaults -> global -> project; [`profile`]: profiles, runners, auto-selection.
//! - `job`: states, rows and the JSON record; `handoff`: handoff sections (pure).
//! - [`extract`]: reading an agent CLI's output (text, JSON, JSON Lines); [`preset`]: ready
//!   runners for the agent CLIs, by profile access.
//! - `location`: where a queue lives; [`logging`]: tracing set-up; `prune`: retention; `format`: markdown tables.
//! - [`cli`]: the command line, a thin face over `api`.
//! - [`mcp`]: the MCP server on stdio (`baton mcp`), another thin face over `api`.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> baton::Result<()> {
//! use baton::api::{self, Caller, OpenOptions, Queue, StartParams};
//! let q = Queue::open(&OpenOptions { cwd: std::env::current_dir().unwrap(), db: None, config_paths: None }).await?;
//! let caller = Caller::cli(None);
//! let started = api::start(&q, &caller, StartParams { task: "say hello".into(), ..Default::default() }).await?;
//! let id = started.task_id;
//! let done = api::await_jobs(&q, &caller, &[id], Some(60_000.0), false, None).await?;
//! println!("{}", serde_json::to_string_pretty(&done)?);
//! # Ok(()) }
//! ```

pub mod api;
mod attach;
pub mod cli;
pub mod config;
mod dispatch;
mod error;
pub mod extract;
mod format;
pub mod handoff;
pub mod job;
mod launch;
mod location;
pub mod logging;
pub mod mcp;
mod output;
pub mod preset;
mod proc;
pub mod profile;
mod prune;
mod queue;
mod runs;
mod server;
pub mod store;
mod wake;
mod worker;
pub mod workflow;

pub use error::{Error, ExitCode, Result};
pub use store::{APPLICATION_ID, SCHEMA_VERSION};

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
//! - The faces: [`cli`] (the command line), [`watch`] (`baton watch`, the live full-screen
//!   view) and [`mcp`] (the MCP server on stdio, with `mcp::stdio`, the line filter in front of
//!   rmcp). Both only format what [`api`] answers.
//! - [`api`]: the operations (start, await, peek, list, cancel, status, retry, workers stop,
//!   workflow runs), their validation and typed answers; `api::attach` (attachment checks),
//!   `api::format` (markdown tables).
//! - `queue`: the queue handle: a queue file opened with the caller's config, profiles and
//!   workflows (reloaded together), whether a dispatcher leads it, and starting one.
//! - [`agent`]: `profile` (profiles, runner templates, auto-selection), `preset` (the agent
//!   CLIs' runners by profile access), `launch` (runner resolution and the one builder of a
//!   job's row), `extract` (reading an agent's output), `output` (responses and tails from logs).
//! - `engine`: `dispatch` (leadership by lease, the loop, recovery, draining), `worker` (the one
//!   way to start a worker process; oneshot workers), `server` (server workers and their
//!   protocol), `proc` (`/proc`, process groups, proof of identity), `wake` (waking on
//!   commits), `prune` (retention).
//! - [`workflow`]: definitions and step timeouts; `workflow::runs` (durable runs advancing in
//!   the dispatcher's transactions), `workflow::handoff` (handoff sections, pure).
//! - [`worktree`]: a git worktree per task: planning, creating, committing leftovers, diff,
//!   merge back, apply, discard (git by argv only).
//! - [`store`]: opening a queue file safely, migrations, connections; the statements (the
//!   `baton-sqlite` crate's, re-exported here) over the rows of `baton-rows`.
//! - [`hook`]: the finish hook's argv template (pure).
//! - [`config`]: defaults, then global, then project, each key declared once; [`state`]: every
//!   state word of the schema as an enum; [`job`]: job rows and the JSON record; `location`:
//!   where a queue and its state live; [`logging`]: tracing set-up; `error`: the error type and
//!   exit codes.
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

pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
mod engine;
mod error;
pub mod hook;
pub mod job;
mod location;
pub mod logging;
pub mod mcp;
mod queue;
pub use baton_rows::state;
pub mod store;
pub mod watch;
pub mod workflow;
pub mod worktree;

pub use error::{Error, ExitCode, Result};
pub use store::{APPLICATION_ID, SCHEMA_VERSION};

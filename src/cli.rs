//! The command line: a thin face over `api`. Parses, calls, formats; data on stdout,
//! diagnostics on stderr.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::api::{self, Answer, Caller, ListParams, OpenOptions, Queue, StartParams};
use crate::error::{Error, ExitCode, Result};
use crate::job;
use crate::state::JobState;

/// baton: a durable task queue for coding-agent workers.
///
/// Tasks are written to one SQLite file (.baton/baton.db in your project) before their id is
/// returned; a dispatcher (started automatically) claims them and runs a worker process from a
/// named profile (coder, architect, docs, explorer, vision, or your own). Any process can await,
/// peek, list or cancel them; kill anything at any moment and every task is still there.
///
///   id=$(baton task start "add a --verbose flag")   # enqueue; prints the task id
///   baton task await "$id"                          # wait for the result
///   baton task list                                 # what ran, what runs
///   sqlite3 .baton/baton.db 'select * from v_jobs'  # the queue is plain SQLite
///
/// Exit codes: 0 ok, 1 a task failed, 2 usage/config/database error, 3 a task was canceled,
/// 4 an id is unknown, 124 still unfinished when a wait ran out.
#[derive(Debug, Parser)]
#[command(name = "baton", version, verbatim_doc_comment)]
pub struct Cli {
    /// The queue: a file (default: <project>/.baton/baton.db) or a postgres:// URL (also BATON_DB).
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Session id recorded on tasks (also BATON_SESSION).
    #[arg(long, global = true, value_name = "ID")]
    pub session: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start, await, peek, list, cancel tasks.
    #[command(subcommand)]
    Task(Box<TaskCommand>),
    /// Run the dispatcher in the foreground (one leader per queue; a second one stands by).
    Run {
        /// Started automatically: exit if another dispatcher leads, or when idle.
        #[arg(long, hide = true)]
        auto: bool,
    },
    /// A full-screen live view: running tasks with their activity, the queue, workflow runs and
    /// workers; open a task's log or events, cancel, retry, filter. Keys are shown at the bottom.
    Watch {
        /// Only tasks in this state (waiting, queued, running, succeeded, failed, canceled).
        #[arg(long, value_name = "STATE")]
        status: Option<String>,
        /// Only tasks of this profile.
        #[arg(long = "worker", visible_alias = "profile", value_name = "ID")]
        worker: Option<String>,
        /// Only tasks with this label: key=value, or key for any value (repeatable; all match).
        #[arg(long = "label", value_name = "KEY[=VALUE]")]
        labels: Vec<String>,
        /// Only tasks of this session id.
        #[arg(long = "of-session", value_name = "ID")]
        of_session: Option<String>,
    },
    /// Is a dispatcher alive? Counts by state and the database path.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List profiles (built-in and configured).
    Profiles {
        #[arg(long)]
        json: bool,
    },
    /// List live workers, or stop some.
    Workers {
        #[command(subcommand)]
        action: Option<WorkersAction>,
        #[arg(long)]
        json: bool,
    },
    /// Claim no new tasks (of one profile, or of all) until `baton resume`; running tasks go on.
    /// The pause lives in the queue: every dispatcher and session sees it.
    Pause {
        /// Only this profile's tasks.
        #[arg(long, value_name = "ID")]
        profile: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Lift a pause (of one profile, or every pause).
    Resume {
        #[arg(long, value_name = "ID")]
        profile: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete old finished tasks and their logs now.
    Prune {
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// What was (or would be) deleted, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run workflows (plan -> implement -> review -> fix...) and look at their runs.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Show, check or locate the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create .baton/ (queue, .gitignore) in this project.
    Init,
    /// MCP server on stdio (task_start, task_await, task_peek, task_list, task_cancel, and task_diff,
    /// task_merge, task_discard for worktrees).
    Mcp,
    /// Print a shell completion script (with this project's profile and workflow names):
    /// `baton completions bash > ~/.local/share/bash-completion/completions/baton`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into a directory.
    Man {
        /// Write baton.1, baton-task.1, baton-task-start.1, ... here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// A tour with nothing installed: a queue in a temporary project, a few shell tasks (one
    /// fails, one is canceled), then the list.
    Demo,
    /// Write this queue as JSON lines, to move it to another database (see `baton import`).
    ///
    /// Its tasks, workflow runs, events, worktrees, pauses and hook: `baton export | baton --db
    /// postgres://host/db import`. Refused while a dispatcher runs on the queue (stop it first)
    /// or a task runs without one; the queue itself is left as it is.
    Export {
        /// Write here instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Restore an export into this queue (`--db`), which must hold no tasks yet.
    ///
    /// All of it in one transaction, or nothing: an export cut short, damaged or from another
    /// baton version is refused with the line that says why.
    Import {
        /// The export to read (default, or `-`: standard input).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// What was imported, as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Enqueue a task and print its id.
    Start(Box<StartArgs>),
    /// Wait until tasks finish (or the timeout passes) and print their records.
    Await {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Milliseconds to wait (default 600000, clamped to [1000, 600000]; 0 answers at once).
        #[arg(long, value_name = "MS", allow_negative_numbers = true)]
        timeout: Option<f64>,
        #[arg(long)]
        json: bool,
        /// Do not cap responseText.
        #[arg(long)]
        full: bool,
    },
    /// Show tasks as they are now, with their output tail.
    Peek {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        full: bool,
    },
    /// List tasks (newest first), workers, profiles, workflows or a status overview.
    List {
        #[arg(long, default_value = "tasks", value_parser = ["tasks", "workers", "profiles", "workflows", "status"])]
        view: String,
        /// Only tasks of this profile.
        #[arg(long = "worker", visible_alias = "profile", value_name = "ID")]
        worker: Option<String>,
        /// Only tasks in this state (waiting, queued, running, succeeded, failed, canceled).
        #[arg(long, value_name = "STATE")]
        status: Option<String>,
        /// Only tasks with this label: key=value, or key for any value (repeatable; all match).
        #[arg(long = "label", value_name = "KEY[=VALUE]")]
        labels: Vec<String>,
        /// Only tasks of this session id.
        #[arg(long = "of-session", value_name = "ID")]
        of_session: Option<String>,
        /// Only tasks created at or after: ISO-8601, a date, or a span ago (30m, 2h, 7d).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only tasks created before (same forms as --since).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Order: newest (default), oldest, priority, duration.
        #[arg(long, value_parser = ["newest", "oldest", "priority", "duration"])]
        sort: Option<String>,
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..))]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel tasks: queued ones at once, running ones by stopping their whole process group.
    Cancel {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print what a task's agent did (messages, tool calls, plan, usage), or follow it live.
    Events {
        id: String,
        /// Keep printing new events until the task finishes.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Only events after this sequence number.
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: i64,
    },
    /// Print a task's whole output (stdout, then stderr), or follow it live.
    Logs {
        id: String,
        #[arg(long, value_name = "N")]
        attempt: Option<i64>,
        #[arg(long)]
        follow: bool,
    },
    /// Start a new task with the same task text and profile.
    Retry {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Show what a worktree task changed against the commit it started from.
    Diff {
        id: String,
        /// Only the files and their line counts.
        #[arg(long)]
        stat: bool,
    },
    /// Merge a finished worktree task into the branch it started from (one merge at a time; a
    /// conflict changes nothing).
    Merge {
        id: String,
        /// One commit with the task's changes.
        #[arg(long, group = "how")]
        squash: bool,
        /// Replay the task's commits onto the branch.
        #[arg(long, group = "how")]
        rebase: bool,
        /// A merge commit (the default).
        #[arg(long, group = "how")]
        merge: bool,
        #[arg(long)]
        json: bool,
    },
    /// Stage a finished worktree task's changes in this checkout, without committing.
    Apply {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a finished task's worktree and branch (refused while they hold unmerged work).
    Discard {
        id: String,
        /// Remove them even though unmerged commits or uncommitted files are lost.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The task text, or - to read it from stdin.
    pub task: String,
    #[arg(long, value_parser = ["auto", "worker", "workflow"])]
    pub kind: Option<String>,
    /// The profile (workerId).
    #[arg(long = "worker", value_name = "ID")]
    pub worker: Option<String>,
    #[arg(long, value_name = "ID")]
    pub workflow: Option<String>,
    /// A file attachment, relative to the project (repeatable).
    #[arg(long = "attach", value_name = "PATH")]
    pub attach: Vec<String>,
    /// Job timeout in ms (<= 0: the configured default).
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub timeout: Option<f64>,
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i64>,
    #[arg(long, value_name = "MS", conflicts_with = "run_at")]
    pub delay: Option<i64>,
    /// ISO-8601 time to run at.
    #[arg(long, value_name = "TIME")]
    pub run_at: Option<String>,
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<i64>,
    #[arg(long, value_name = "K")]
    pub dedup_key: Option<String>,
    /// On a PostgreSQL queue: only this node's dispatcher runs it.
    #[arg(long, value_name = "ID")]
    pub node: Option<String>,
    /// `worktree`: run in a git worktree of its own, on a branch `baton/<id>` (default: the profile's).
    #[arg(long, value_parser = ["none", "worktree"])]
    pub isolation: Option<String>,
    /// With --isolation worktree: the commit or branch to start from (default HEAD).
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// Wait for these tasks (ids or unique prefixes, comma-separated or repeated): the task
    /// stays `waiting` until they all succeeded; if one fails or is canceled, so does this one.
    #[arg(long, value_name = "ID[,ID...]", value_delimiter = ',')]
    pub after: Vec<String>,
    /// With --after: run once they all finished, whatever their outcome.
    #[arg(long, requires = "after")]
    pub after_any: bool,
    /// A label, key=value (repeatable): `task list --label key=value` finds the task again.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Do not start a dispatcher; the task waits, queued.
    #[arg(long)]
    pub no_auto_spawn: bool,
    #[arg(long)]
    pub json: bool,
}

/// `--label key=value`.
fn parse_label(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("a label is key=value, not \"{s}\"")),
    }
}

#[derive(Debug, Subcommand)]
pub enum WorkersAction {
    /// Stop workers: a server worker's stdin is closed, then its process group gets SIGTERM,
    /// then SIGKILL (each after jobs.killGraceMs); a worker's current task is canceled
    /// ("Worker stopped").
    Stop {
        /// Worker ids (or unique prefixes), as `baton workers` shows them.
        ids: Vec<String>,
        /// Stop every live worker.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Start a run of a workflow; prints its task id (await, peek and cancel it like any task).
    Run {
        /// The workflow id (e.g. roocode-boomerang).
        workflow: String,
        /// The task text, or - to read it from stdin.
        task: String,
        /// A file attachment for the first step (repeatable).
        #[arg(long = "attach", value_name = "PATH")]
        attach: Vec<String>,
        /// `worktree`: every step runs, in order, in one git worktree of the run.
        #[arg(long, value_parser = ["none", "worktree"])]
        isolation: Option<String>,
        /// With --isolation worktree: the commit or branch to start from (default HEAD).
        #[arg(long, value_name = "REF")]
        base: Option<String>,
        #[arg(long)]
        no_auto_spawn: bool,
        #[arg(long)]
        json: bool,
    },
    /// List workflow definitions.
    List {
        #[arg(long)]
        json: bool,
    },
    /// List workflow runs, newest first.
    Runs {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..))]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show a run: every step, its state, and the carry that went into it.
    Show {
        #[arg(value_name = "RUN")]
        run: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The merged configuration and where each value came from.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration files; report unknown keys.
    Check,
    /// The config file paths.
    Path,
}

/// Print to stdout; a closed pipe is not an error.
fn out(text: &str) {
    let mut so = std::io::stdout().lock();
    let _ = writeln!(so, "{text}");
    let _ = so.flush();
}

fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Run a parsed command line; the exit code follows SPEC 4.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let cwd = std::env::current_dir().map_err(|e| Error::io("reading the current directory", e))?;
    let opts = OpenOptions { cwd: cwd.clone(), db: cli.db.clone(), config_paths: None };
    let caller = Caller::cli(cli.session.clone());
    match cli.command {
        Command::Config(c) => return config_command(&cwd, c),
        Command::Completions { shell } => return completions(&cwd, shell),
        Command::Man { dir } => return manual(dir.as_deref()),
        Command::Demo => return demo(&caller).await,
        Command::Mcp => {
            crate::mcp::serve(opts, cli.session.clone()).await?;
            return Ok(ExitCode::Ok);
        }
        Command::Run { auto } => {
            let q = Queue::open(&opts).await?;
            api::check_recursive_guard(&q.config.config)?;
            let mode =
                if auto { crate::engine::dispatch::Mode::Auto } else { crate::engine::dispatch::Mode::Foreground };
            let store = q.store.clone();
            crate::engine::dispatch::run(q, mode).await.map_err(|e| store.explain(e))?;
            return Ok(ExitCode::Ok);
        }
        _ => {}
    }
    // Commands that write new tasks create the queue where there is none; the others only read
    // it or change tasks already in it, so a mistyped --db must not conjure up an empty queue.
    // (profiles and workflow list show configuration and open it as before.)
    let creates = match &cli.command {
        Command::Task(t) => matches!(**t, TaskCommand::Start(_)),
        Command::Workflow(w) => matches!(w, WorkflowCommand::Run { .. } | WorkflowCommand::List { .. }),
        Command::Init | Command::Profiles { .. } | Command::Pause { .. } | Command::Import { .. } => true,
        _ => false,
    };
    let q = if creates { Queue::open(&opts).await? } else { Queue::open_existing(&opts).await? };
    let store = q.store.clone();
    command(q, caller, cli.command).await.map_err(|e| store.explain(e))
}

/// A command on an open queue.
async fn command(q: Queue, caller: Caller, command: Command) -> Result<ExitCode> {
    match command {
        Command::Task(t) => task_command(&q, &caller, *t).await,
        Command::Watch { status, worker, labels, of_session } => {
            let filter = crate::watch::Filter::new(status, worker, labels, of_session).map_err(Error::Invalid)?;
            crate::watch::run(q, caller, filter).await
        }
        Command::Status { json } => {
            let s = api::status(&q).await?;
            if json {
                out(&pretty(&s));
            } else {
                out(&status_text(&s));
            }
            Ok(ExitCode::Ok)
        }
        Command::Pause { profile, json } => {
            let paused = api::pause(&q, &caller, profile.as_deref()).await?;
            out(&if json { pretty(&paused) } else { paused_text(&paused) });
            Ok(ExitCode::Ok)
        }
        Command::Resume { profile, json } => {
            let paused = api::resume(&q, profile.as_deref()).await?;
            out(&if json { pretty(&paused) } else { paused_text(&paused) });
            Ok(ExitCode::Ok)
        }
        Command::Workflow(w) => workflow_command(&q, &caller, w).await,
        Command::Profiles { json } => {
            let code = list_view(&q, &caller, "profiles", json).await?;
            let configured = crate::agent::profile::RunnerSpec::parse(&q.config.config.runner)
                .map_err(|e| Error::Invalid(format!("config runner: {e}")))?;
            let advisory: Vec<String> = q
                .profiles
                .all()
                .iter()
                .filter_map(|p| {
                    let limits = crate::agent::profile::advisory_limits(p, &configured);
                    (!limits.is_empty()).then(|| format!("{} ({})", p.id, limits.join(", ")))
                })
                .collect();
            if !json && !advisory.is_empty() {
                out(&format!(
                    "\nNote: advisory, not enforced: {}. A plain argv runner cannot pass tool limits to the agent \
                     CLI (a preset runner maps them to its permission flags), and no CLI takes a temperature.",
                    advisory.join("; ")
                ));
            }
            Ok(code)
        }
        Command::Workers { action: None, json } => list_view(&q, &caller, "workers", json).await,
        Command::Workers { action: Some(WorkersAction::Stop { ids, all, json }), .. } => {
            let stopped = api::stop_workers(&q, &ids, all).await?;
            if json {
                out(&pretty(&stopped));
            } else {
                for w in &stopped {
                    out(&format!("{} ({} {}): {}", w.id, w.kind, w.profile, w.status));
                }
                if stopped.is_empty() {
                    out("No live workers.");
                }
            }
            Ok(ExitCode::Ok)
        }
        Command::Prune { dry_run, json } => {
            let r = crate::engine::prune::prune(&q, job::now_ms(), dry_run).await?;
            if json {
                out(&pretty(&r));
            } else if dry_run {
                out(&format!("Would delete {} finished task(s).", r.jobs.len()));
                for id in &r.jobs {
                    out(id);
                }
            } else {
                out(&format!(
                    "Deleted {} finished task(s); swept {} orphaned file set(s); removed {} merged or unchanged \
                     worktree(s).",
                    r.jobs.len(),
                    r.swept_dirs,
                    r.worktrees.len()
                ));
            }
            Ok(ExitCode::Ok)
        }
        Command::Init => {
            out(&format!("Queue ready at {}", q.store.describe()));
            Ok(ExitCode::Ok)
        }
        Command::Export { output } => export(&q, output.as_deref()).await,
        Command::Import { file, json } => {
            let stdin = file.as_deref().is_none_or(|f| f == std::path::Path::new("-"));
            let (name, moved) = if stdin {
                let mut input = std::io::stdin().lock();
                ("standard input".to_string(), api::transfer::import(&q, &mut input, "standard input").await?)
            } else {
                let path = file.unwrap_or_default();
                let name = path.display().to_string();
                let f = std::fs::File::open(&path).map_err(|e| Error::io(format!("opening {name}"), e))?;
                let mut input = std::io::BufReader::new(f);
                let moved = api::transfer::import(&q, &mut input, &name).await?;
                (name, moved)
            };
            if json {
                out(&pretty(&moved));
            } else {
                out(&format!(
                    "Imported {} from {} ({name}) into {}.",
                    moved.summary(),
                    moved.source,
                    q.store.describe()
                ));
                if moved.unpinned > 0 {
                    out(&format!(
                        "{} unfinished task(s) were pinned to a node; a queue file has one dispatcher, which runs them.",
                        moved.unpinned
                    ));
                }
                out("The source queue is unchanged: use this one from now on (--db, BATON_DB or config `database`).");
            }
            Ok(ExitCode::Ok)
        }
        Command::Config(_)
        | Command::Run { .. }
        | Command::Demo
        | Command::Mcp
        | Command::Completions { .. }
        | Command::Man { .. } => Ok(ExitCode::Ok),
    }
}

/// `baton export`: to standard output, or to a file that is removed again if the export fails
/// (an export cut short is refused by import anyway, by its missing last line).
async fn export(q: &Queue, output: Option<&std::path::Path>) -> Result<ExitCode> {
    let moved = match output {
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            api::transfer::export(q, &mut out).await?
        }
        Some(path) => {
            let f = std::fs::File::create(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
            let mut out = std::io::BufWriter::new(f);
            match api::transfer::export(q, &mut out).await {
                Ok(m) => m,
                Err(e) => {
                    drop(out);
                    let _ = std::fs::remove_file(path);
                    return Err(e);
                }
            }
        }
    };
    eprintln!("Exported {} from {}.", moved.summary(), moved.source);
    Ok(ExitCode::Ok)
}

async fn list_view(q: &Queue, caller: &Caller, view: &str, json: bool) -> Result<ExitCode> {
    let l = api::list(q, caller, &ListParams { view: Some(view.into()), ..Default::default() }, "all").await?;
    out(&if json { pretty(&l.data) } else { l.markdown });
    Ok(ExitCode::Ok)
}

fn status_text(s: &api::Status) -> String {
    let d = &s.dispatcher;
    let disp = match (d.alive, d.pid, &d.since, d.epoch) {
        (true, Some(pid), Some(since), Some(epoch)) => format!("alive (pid {pid}, since {since}, epoch {epoch})"),
        _ => "none".to_string(),
    };
    let counts: Vec<String> = job::JobState::ALL
        .iter()
        .map(|st| format!("{} {}", st.as_str(), s.jobs.get(st.as_str()).copied().unwrap_or(0)))
        .collect();
    let mut text = format!("Database:   {}\nDispatcher: {disp}\nTasks:      {}", s.database, counts.join(", "));
    if !s.paused.is_empty() {
        let names: Vec<&str> =
            s.paused.iter().map(|p| if p.profile == "*" { "every profile" } else { p.profile.as_str() }).collect();
        text.push_str(&format!("\nPaused:     {} (baton resume)", names.join(", ")));
    }
    if let Some(nodes) = &s.nodes {
        let shown: Vec<String> =
            nodes.iter().map(|n| format!("{} ({}, pid {}, epoch {})", n.id, n.host, n.pid, n.epoch)).collect();
        text.push_str(&format!(
            "\nNodes:      {}",
            if shown.is_empty() { "none".to_string() } else { shown.join(", ") }
        ));
    }
    text
}

/// `baton completions SHELL`: clap's script, with the project's profile ids offered for
/// `--worker` and `--profile` and its workflow ids for `--workflow` and `workflow run` (as they
/// are when the script is generated; a project whose config does not load gets none).
fn completions(cwd: &std::path::Path, shell: clap_complete::Shell) -> Result<ExitCode> {
    use clap::CommandFactory;
    use clap::builder::PossibleValuesParser;
    let mut cmd = Cli::command();
    if let Ok((profiles, workflows)) = crate::queue::definitions_at(cwd) {
        let p: Vec<String> = profiles.ids().into_iter().map(str::to_string).collect();
        let w: Vec<String> = workflows.iter().map(|d| d.id.clone()).collect();
        let values = |v: &Vec<String>| PossibleValuesParser::new(v.clone());
        cmd = cmd
            .mut_subcommand("task", |t| {
                t.mut_subcommand("start", |s| {
                    s.mut_arg("worker", |a| a.value_parser(values(&p)))
                        .mut_arg("workflow", |a| a.value_parser(values(&w)))
                })
                .mut_subcommand("list", |s| s.mut_arg("worker", |a| a.value_parser(values(&p))))
            })
            .mut_subcommand("workflow", |c| {
                c.mut_subcommand("run", |s| s.mut_arg("workflow", |a| a.value_parser(values(&w))))
            })
            .mut_subcommand("pause", |s| s.mut_arg("profile", |a| a.value_parser(values(&p))))
            .mut_subcommand("resume", |s| s.mut_arg("profile", |a| a.value_parser(values(&p))));
    }
    let mut so = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "baton", &mut so);
    Ok(ExitCode::Ok)
}

/// `baton man [--dir DIR]`.
fn manual(dir: Option<&std::path::Path>) -> Result<ExitCode> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
            clap_mangen::generate_to(cmd, d)
                .map_err(|e| Error::io(format!("writing man pages to {}", d.display()), e))?;
            out(&format!("man pages written to {} (man -l {}/baton.1)", d.display(), d.display()));
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page).map_err(|e| Error::io("rendering the man page", e))?;
            let mut so = std::io::stdout().lock();
            let _ = so.write_all(&page);
        }
    }
    Ok(ExitCode::Ok)
}

fn config_command(cwd: &std::path::Path, c: ConfigCommand) -> Result<ExitCode> {
    let project = crate::location::find_project(cwd);
    let paths = crate::config::ConfigPaths::from_env(&project);
    match c {
        ConfigCommand::Path => {
            out(&format!("global:  {}\nproject: {}", paths.global.display(), paths.project.display()));
        }
        ConfigCommand::Show { json } => {
            let loaded = crate::config::load(&paths)?;
            out(&if json { pretty(&loaded.merged) } else { crate::config::render_with_origins(&loaded) });
        }
        ConfigCommand::Check => {
            let loaded = crate::config::load(&paths)?;
            let custom: Vec<(Value, String)> =
                loaded.config.profiles.iter().map(|p| (p.clone(), "config".into())).collect();
            let profiles = crate::agent::profile::ProfileSet::load(&custom)?;
            let runner = crate::agent::profile::RunnerSpec::parse(&loaded.config.runner)
                .map_err(|e| Error::Invalid(format!("runner: {e}")))?;
            for w in profiles.warnings() {
                eprintln!("warning: {w}");
            }
            if let crate::agent::profile::RunnerSpec::Argv(r) = &runner {
                for w in r.shell_script_warnings() {
                    eprintln!("warning: runner: {w}");
                }
            }
            for p in profiles.all() {
                if let Some(crate::agent::profile::RunnerSpec::Argv(r)) = &p.command {
                    for w in r.shell_script_warnings() {
                        eprintln!("warning: profile \"{}\" command: {w}", p.id);
                    }
                }
            }
            for id in &loaded.config.workers {
                match profiles.get(id) {
                    Some(p) if p.kind == crate::agent::profile::ProfileKind::Server => {}
                    Some(_) => eprintln!("warning: workers: \"{id}\" is not a server profile; it is not started"),
                    None => eprintln!("warning: workers: no profile \"{id}\"; it is not started"),
                }
            }
            for k in &loaded.unknown_keys {
                eprintln!("warning: unknown key `{k}`");
            }
            out("Configuration is valid.");
        }
    }
    Ok(ExitCode::Ok)
}

/// Exit code of a set of answers.
fn answers_exit(answers: &[Answer]) -> ExitCode {
    answers.iter().fold(ExitCode::Ok, |acc, a| {
        acc.max(match a.state() {
            None => ExitCode::Unknown,
            Some(JobState::Failed) => ExitCode::Failed,
            Some(JobState::Canceled) => ExitCode::Canceled,
            _ if a.timed_out() || a.cancel_requested() => ExitCode::TimedOut,
            _ => ExitCode::Ok,
        })
    })
}

/// Exit code of a cancel: it did what was asked when every job is canceled or had already
/// finished (0); an unknown id is 4; a job still unfinished when the bounded wait ran out, 124.
fn cancel_exit(answers: &[Answer]) -> ExitCode {
    answers.iter().fold(ExitCode::Ok, |acc, a| {
        acc.max(match a.state() {
            None => ExitCode::Unknown,
            Some(s) if s.is_terminal() => ExitCode::Ok,
            _ => ExitCode::TimedOut,
        })
    })
}

/// Print answers: one object for one id, else an array (as the JSON API does); or a table.
fn print_answers(answers: &[Answer], json: bool) {
    if json {
        if let [one] = answers {
            out(&pretty(one));
        } else {
            out(&pretty(&answers));
        }
        return;
    }
    for a in answers {
        match a {
            Answer::Missing(m) => out(&format!("{}: {}", m.id, m.status)),
            Answer::Record(r) => out(&record_text(r)),
        }
    }
}

/// `task await`'s spinner on stderr: elapsed time, how many tasks are unfinished, and what the
/// first running one is doing (its agent's current activity, else its last line of output), as
/// a peek every half second finds them.
struct Spinner {
    bar: indicatif::ProgressBar,
}

impl Spinner {
    fn new() -> Spinner {
        let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message("waiting");
        Spinner { bar }
    }

    fn doing(&self, answers: &[Answer]) {
        let records = answers.iter().filter_map(|a| match a {
            Answer::Record(r) => Some(r),
            Answer::Missing(_) => None,
        });
        let unfinished: Vec<&Box<job::Record>> = records.filter(|r| !r.status.is_terminal()).collect();
        let first = unfinished.iter().find(|r| r.status == JobState::Running).or(unfinished.first());
        let text = first.map(|r| {
            let what = r
                .activity
                .as_ref()
                .map(|a| a.doing.clone())
                .or_else(|| {
                    r.output_tail
                        .as_deref()
                        .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()))
                        .map(str::to_string)
                })
                .unwrap_or_default();
            format!("{} {} {}", &r.id[..8.min(r.id.len())], r.status, what)
        });
        let line = format!("{} unfinished  {}", unfinished.len(), text.unwrap_or_default());
        self.bar.set_message(line.chars().take(160).collect::<String>());
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// What is paused, in words.
fn paused_text(paused: &[api::Paused]) -> String {
    if paused.is_empty() {
        return "Nothing is paused: the dispatcher claims tasks of every profile.".into();
    }
    let lines: Vec<String> = paused
        .iter()
        .map(|p| match p.profile.as_str() {
            "*" => format!("paused: every profile (since {}, by {})", p.since, p.by),
            id => format!("paused: {id} (since {}, by {})", p.since, p.by),
        })
        .collect();
    format!("{}\nRunning tasks go on; `baton resume` lifts a pause.", lines.join("\n"))
}

/// One line on what a merge, an apply or a discard did.
fn reviewed_text(r: &api::Reviewed) -> String {
    let short = |c: &str| c[..12.min(c.len())].to_string();
    match (r.action, &r.commit) {
        ("apply", _) => {
            format!("{}: changes of {} staged in {} (not committed)", r.task_id, r.branch, r.worktree.target)
        }
        ("discard", _) => format!("{}: worktree and branch {} removed", r.task_id, r.branch),
        (how, Some(c)) => format!("{}: {} merged into {} ({how}), now at {}", r.task_id, r.branch, r.target, short(c)),
        (how, None) => format!("{}: {} merged into {} ({how})", r.task_id, r.branch, r.target),
    }
}

/// A record for people: a header line, then the response or error, then the output tail.
fn record_text(r: &job::Record) -> String {
    let mut s = format!("{}  {}  {}", r.id, r.worker_id, r.status);
    if let Some(d) = r.duration_ms.or(r.elapsed_ms) {
        s.push_str(&format!("  {d}ms"));
    }
    if r.timed_out == Some(true) {
        s.push_str("  (still running: wait timed out)");
    }
    if r.dispatcher.as_deref() == Some("none") {
        s.push_str("  (no dispatcher alive)");
    }
    if let Some(l) = &r.labels {
        let pairs: Vec<String> = l.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect();
        s.push_str(&format!("\nlabels: {}", pairs.join(" ")));
    }
    if let Some(after) = &r.after {
        let any = if r.after_any { " (whatever their outcome)" } else { "" };
        s.push_str(&format!("\nafter: {}{any}", after.join(", ")));
    }
    if let Some(w) = &r.worktree {
        s.push_str(&format!(
            "\nworktree: {} (branch {} from {} into {}, {})",
            w.path,
            w.branch,
            &w.base[..12.min(w.base.len())],
            w.target,
            w.state
        ));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!("\nerror: {e}"));
    }
    if let Some(t) = &r.response_text {
        s.push_str(&format!("\n{t}"));
        if r.response_truncated {
            s.push_str(&format!(
                "\n... ({} chars in all; see {})",
                r.response_chars.unwrap_or(0),
                r.log_path.as_deref().unwrap_or("the log")
            ));
        }
    } else if let Some(t) = r.output_tail.as_deref().filter(|t| !t.is_empty()) {
        s.push_str(&format!("\n--- output tail ---\n{t}"));
    }
    s
}

async fn task_command(q: &Queue, caller: &Caller, t: TaskCommand) -> Result<ExitCode> {
    match t {
        TaskCommand::Start(a) => {
            let mut a = *a;
            let task = read_task(a.task)?;
            let attachments = file_attachments(a.attach);
            let params = StartParams {
                task,
                kind: a.kind,
                worker_id: a.worker,
                workflow_id: a.workflow,
                attachments,
                auto_spawn: a.no_auto_spawn.then_some(false),
                timeout_ms: a.timeout,
                priority: a.priority,
                delay_ms: a.delay,
                run_at: a.run_at,
                max_attempts: a.max_attempts,
                dedup_key: a.dedup_key,
                isolation: a.isolation,
                base: a.base,
                after: (!a.after.is_empty()).then_some(a.after),
                after_any: a.after_any.then_some(true),
                labels: (!a.labels.is_empty()).then(|| std::mem::take(&mut a.labels).into_iter().collect()),
                node: a.node,
            };
            let answer = api::start(q, caller, params).await?;
            if let Some(w) = &answer.warning {
                eprintln!("baton: warning: {w}");
            }
            if a.json {
                out(&pretty(&answer));
            } else {
                out(&answer.task_id);
                if let Some(e) = &answer.error {
                    eprintln!("baton: task {} failed: {e}", answer.task_id);
                }
            }
            Ok(ExitCode::Ok)
        }
        TaskCommand::Await { ids, timeout, json, full } => {
            // A spinner on a terminal only: never on a pipe, never with --json.
            let spinner = (std::io::stderr().is_terminal() && !json).then(Spinner::new);
            let wait = api::await_jobs(q, caller, &ids, Some(timeout.unwrap_or(600_000.0)), full, None);
            let answers = match &spinner {
                None => wait.await?,
                Some(s) => {
                    tokio::pin!(wait);
                    let mut tick = tokio::time::interval(Duration::from_millis(500));
                    loop {
                        tokio::select! {
                            a = &mut wait => break a?,
                            _ = tick.tick() => {
                                if let Ok(now) = api::peek(q, caller, &ids, false).await {
                                    s.doing(&now);
                                }
                            }
                        }
                    }
                }
            };
            if let Some(s) = spinner {
                s.finish();
            }
            print_answers(&answers, json);
            Ok(answers_exit(&answers))
        }
        TaskCommand::Peek { ids, json, full } => {
            let answers = api::peek(q, caller, &ids, full).await?;
            print_answers(&answers, json);
            Ok(if answers.iter().any(|a| matches!(a, Answer::Missing(_))) { ExitCode::Unknown } else { ExitCode::Ok })
        }
        TaskCommand::List { view, worker, status, labels, of_session, since, until, sort, limit, json } => {
            let p = ListParams {
                view: Some(view),
                worker_id: worker,
                status,
                scope: Some(if caller.session.is_some() && of_session.is_none() { "session" } else { "all" }.into()),
                session_id: of_session,
                label: (!labels.is_empty()).then_some(labels),
                since,
                until,
                sort,
                limit: Some(limit),
                format: None,
            };
            let l = api::list(q, caller, &p, "all").await?;
            let as_json = json || q.config.config.ui.default_list_format == "json" && !std::io::stdout().is_terminal();
            out(&if as_json { pretty(&l.data) } else { l.markdown });
            Ok(ExitCode::Ok)
        }
        TaskCommand::Cancel { ids, reason, json } => {
            let answers = api::cancel(q, caller, &ids, reason.as_deref()).await?;
            print_answers(&answers, json);
            Ok(cancel_exit(&answers))
        }
        TaskCommand::Events { id, follow, json, after } => events(q, caller, &id, after, follow, json).await,
        TaskCommand::Logs { id, attempt, follow } => {
            let (o, e, _) = api::log_paths(q, caller, &id, attempt).await?;
            logs(q, caller, &id, &o, &e, follow).await
        }
        TaskCommand::Diff { id, stat } => {
            let text = api::diff(q, caller, &id, stat).await?;
            if !text.is_empty() {
                out(&text);
            }
            Ok(ExitCode::Ok)
        }
        TaskCommand::Merge { id, squash, rebase, merge: _, json } => {
            use crate::worktree::How;
            let how = if squash {
                How::Squash
            } else if rebase {
                How::Rebase
            } else {
                How::Merge
            };
            let r = api::land(q, caller, &id, api::Landing::Merge(how)).await?;
            out(&if json { pretty(&r) } else { reviewed_text(&r) });
            Ok(ExitCode::Ok)
        }
        TaskCommand::Apply { id, json } => {
            let r = api::land(q, caller, &id, api::Landing::Apply).await?;
            out(&if json { pretty(&r) } else { reviewed_text(&r) });
            Ok(ExitCode::Ok)
        }
        TaskCommand::Discard { id, force, json } => {
            let r = api::discard(q, caller, &id, force).await?;
            out(&if json { pretty(&r) } else { reviewed_text(&r) });
            Ok(ExitCode::Ok)
        }
        TaskCommand::Retry { id, json } => {
            let answer = api::retry(q, caller, &id).await?;
            out(&if json { pretty(&answer) } else { answer.task_id });
            Ok(ExitCode::Ok)
        }
    }
}

/// Print a task's events, one line each (or one JSON object each); with `follow`, until the task
/// is finished and every event is printed.
async fn events(q: &Queue, caller: &Caller, id: &str, mut after: i64, follow: bool, json: bool) -> Result<ExitCode> {
    let mut so = std::io::stdout().lock();
    loop {
        let (batch, state) = api::events(q, caller, id, after, 500).await?;
        for e in &batch {
            let line = if json { serde_json::to_string(e).unwrap_or_default() } else { e.line() };
            if writeln!(so, "{line}").is_err() {
                return Ok(ExitCode::Ok);
            }
            after = e.seq;
        }
        let _ = so.flush();
        if batch.len() == 500 {
            continue;
        }
        if !follow || state.is_terminal() {
            return Ok(ExitCode::Ok);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Print stdout then stderr of an attempt; with `follow`, keep printing stdout as it grows until
/// the task is terminal.
async fn logs(
    q: &Queue,
    caller: &Caller,
    id: &str,
    o: &std::path::Path,
    e: &std::path::Path,
    follow: bool,
) -> Result<ExitCode> {
    let mut so = std::io::stdout().lock();
    let mut printed = 0u64;
    loop {
        if let Ok(mut f) = std::fs::File::open(o) {
            use std::io::{Seek, SeekFrom};
            let _ = f.seek(SeekFrom::Start(printed));
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            printed += buf.len() as u64;
            if so.write_all(&buf).is_err() {
                return Ok(ExitCode::Ok);
            }
            let _ = so.flush();
        }
        if !follow {
            break;
        }
        let (_, _, state) = api::log_paths(q, caller, id, None).await?;
        if state.is_terminal() {
            // One last read picks up what was written before the end.
            if let Ok(meta) = std::fs::metadata(o)
                && meta.len() <= printed
            {
                break;
            }
            continue;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(so);
    if let Ok(err) = std::fs::read(e)
        && !err.is_empty()
    {
        let _ = std::io::stderr().write_all(&err);
    }
    Ok(ExitCode::Ok)
}

/// `baton demo`: a temporary project whose runner is `sh -c {prompt}`, four tasks through a real
/// auto-started dispatcher, then the list.
async fn demo(caller: &Caller) -> Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("baton-demo-{}", uuid::Uuid::new_v4()));
    let state = dir.join(crate::location::STATE_DIR);
    crate::location::create_private_dir(&state)?;
    let config = r#"{
  // The demo runs tasks as shell commands instead of an agent CLI.
  "runner": ["sh", "-c", "{prompt}"],
  "dispatcher": {"idleExitMs": 3000}
}
"#;
    std::fs::write(state.join("config.json"), config).map_err(|e| Error::io("writing the demo config", e))?;
    let q = Queue::open(&OpenOptions {
        cwd: dir.clone(),
        db: Some(state.join(crate::location::DB_FILE)),
        config_paths: None,
    })
    .await?;
    out(&format!("Demo project: {}\nQueue file:   {}\n", dir.display(), q.store.describe()));
    let tasks = [
        ("coder", "echo 'Summary'; echo 'wrote hello.txt'; echo hello > hello.txt"),
        ("explorer", "ls -la; echo 'Summary'; echo listed the project"),
        ("coder", "echo 'this one fails' >&2; exit 3"),
        ("coder", "echo 'this one sleeps until canceled'; sleep 60"),
    ];
    let mut ids = Vec::new();
    for (worker, task) in tasks {
        let p = StartParams { task: task.into(), worker_id: Some(worker.into()), ..Default::default() };
        let a = api::start(&q, caller, p).await?;
        let id = a.task_id;
        out(&format!("started {id}  {worker}: {task}"));
        ids.push(id);
    }
    let (done, sleeper) = ids.split_at(3);
    api::await_jobs(&q, caller, done, Some(30_000.0), false, None).await?;
    // Wait until the sleeper runs, then cancel it: its process group is stopped for real.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let a = api::peek(&q, caller, sleeper, false).await?;
        if a.first().is_some_and(|a| a.state() == Some(JobState::Running)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api::cancel(&q, caller, sleeper, Some("demo")).await?;
    out("");
    let l = api::list(&q, caller, &ListParams::default(), "all").await?;
    out(&l.markdown);
    out(&format!("\nInspect it: sqlite3 {} 'select * from v_jobs'", q.store.describe()));
    Ok(ExitCode::Ok)
}

fn read_task(task: String) -> Result<String> {
    if task != "-" {
        return Ok(task);
    }
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).map_err(|e| Error::io("reading the task from stdin", e))?;
    Ok(s)
}

fn file_attachments(paths: Vec<String>) -> Vec<api::Attachment> {
    paths
        .into_iter()
        .map(|p| {
            let image = matches!(
                std::path::Path::new(&p).extension().and_then(|e| e.to_str()).map(str::to_lowercase).as_deref(),
                Some("png" | "jpg" | "jpeg" | "gif" | "webp" | "bmp")
            );
            api::Attachment {
                kind: if image { api::AttachmentType::Image } else { api::AttachmentType::File },
                path: Some(p),
                base64: None,
                mime_type: None,
            }
        })
        .collect()
}

async fn workflow_command(q: &Queue, caller: &Caller, w: WorkflowCommand) -> Result<ExitCode> {
    match w {
        WorkflowCommand::Run { workflow, task, attach, isolation, base, no_auto_spawn, json } => {
            let params = StartParams {
                task: read_task(task)?,
                kind: Some("workflow".into()),
                workflow_id: Some(workflow),
                attachments: file_attachments(attach),
                auto_spawn: no_auto_spawn.then_some(false),
                isolation,
                base,
                ..Default::default()
            };
            let answer = api::start(q, caller, params).await?;
            if let Some(w) = &answer.warning {
                eprintln!("baton: warning: {w}");
            }
            out(&if json { pretty(&answer) } else { answer.task_id });
            Ok(ExitCode::Ok)
        }
        WorkflowCommand::List { json } => list_view(q, caller, "workflows", json).await,
        WorkflowCommand::Runs { limit, json } => {
            let runs = api::workflow_runs(q, caller, limit).await?;
            if json {
                out(&pretty(&runs));
            } else if runs.is_empty() {
                out("No workflow runs recorded yet.");
            } else {
                let rows: Vec<Vec<String>> = runs
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.clone(),
                            r.worker_id.trim_start_matches("workflow:").to_string(),
                            r.status.to_string(),
                            r.started_at.clone().unwrap_or_default(),
                            r.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
                            r.message.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(60).collect(),
                        ]
                    })
                    .collect();
                out(&crate::api::format::table(&["Run", "Workflow", "Status", "Started", "ms", "Message"], &rows));
            }
            Ok(ExitCode::Ok)
        }
        WorkflowCommand::Show { run, json } => {
            let shown = api::workflow_show(q, caller, &run).await?;
            if json {
                out(&pretty(&shown));
                return Ok(ExitCode::Ok);
            }
            out(&format!("{}  {}  {}\nTask: {}", shown.id, shown.workflow_id, shown.status, shown.task));
            if let Some(e) = &shown.error {
                out(&format!("error: {e}"));
            }
            for s in &shown.steps {
                out(&format!(
                    "\n## Step {} {} ({}, {}) {}{}",
                    s.index,
                    s.title,
                    s.worker_id,
                    s.status,
                    s.task_id.as_deref().unwrap_or(""),
                    s.warning.as_ref().map(|w| format!("\nwarning: {w}")).unwrap_or_default()
                ));
                if let Some(e) = &s.error {
                    out(&format!("error: {e}"));
                }
                match s.carry_in.as_deref() {
                    Some("") => out("carry in: (empty)"),
                    Some(c) => out(&format!("carry in:\n{c}")),
                    None => {}
                }
            }
            out(&format!("\n## Carry now\n{}", shown.carry));
            Ok(ExitCode::Ok)
        }
    }
}

//! Moving a queue from one store to another (a file to PostgreSQL, back, or to a new file):
//! `baton export` writes its tasks, workflow runs, worktrees, events, finish hooks, pauses and
//! hook as JSON lines; `baton import` restores them into a queue that holds no tasks yet, in
//! one transaction. `baton export | baton --db postgres://... import` moves a queue.
//!
//! The lines: a header (`{"baton":"export","format":1,"schema":13,...}`), one line per row
//! (`{"table":"jobs","row":{...every column...}}`, tables in the order an import restores
//! them), and a last line with the count of each table's rows, so an export cut short is
//! refused whole. Workers and nodes stay behind (they are processes of the machine that ran
//! them), and so does every running task: the export refuses while a dispatcher runs on the
//! queue, or while a task runs without one, as a task copied mid-run would run twice.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::job::{self, now_ms};
use crate::queue::{self, Queue};
use crate::state::JobState;
use crate::store::{self, transfer::Table};

/// The version of the lines' format.
pub const FORMAT: i64 = 1;

/// Rows read per statement.
const PAGE: i64 = 256;

/// Rows restored per statement, and the most text one carries.
const BATCH_ROWS: usize = 256;
const BATCH_BYTES: usize = 4 << 20;

/// What an export wrote or an import restored.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Moved {
    /// The queue the rows came from, as baton describes it.
    pub source: String,
    /// The queue they went into (an import's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Rows by table.
    pub rows: BTreeMap<&'static str, u64>,
    /// Unfinished tasks pinned to a node (`task start --node`) that an import into a file
    /// unpinned: a file has one dispatcher, which runs them.
    pub unpinned: u64,
}

impl Moved {
    fn count(&self, table: Table) -> u64 {
        self.rows.get(table.name()).copied().unwrap_or(0)
    }

    /// "118 jobs, 2 workflow runs, 3400 events, ..." (the tables with rows).
    pub fn summary(&self) -> String {
        let words = |t: Table| match t {
            Table::Worktrees => "worktrees",
            Table::WorkflowRuns => "workflow runs",
            Table::Jobs => "jobs",
            Table::JobEvents => "events",
            Table::WorkflowSteps => "workflow steps",
            Table::FinishHooks => "finish hook runs",
            Table::Pauses => "pauses",
            Table::Hooks => "hooks",
        };
        let parts: Vec<String> = Table::ALL
            .into_iter()
            .filter(|t| self.count(*t) > 0)
            .map(|t| format!("{} {}", self.count(t), words(t)))
            .collect();
        if parts.is_empty() { "no tasks".into() } else { parts.join(", ") }
    }
}

/// Write queue `q` to `out` as an export's lines. Refused (nothing written) while a dispatcher
/// runs on the queue or a task runs without one; the rows come from one snapshot, so tasks
/// started meanwhile are either wholly in it or not at all.
pub async fn export(q: &Queue, out: &mut dyn Write) -> Result<Moved> {
    let source = q.store.describe();
    let mut tx = q.store.begin().await?;
    store::transfer::snapshot(&mut tx).await?;
    refuse_while_running(q, &mut tx).await?;
    let io = |e| Error::io("writing the export", e);
    let header = json!({
        "baton": "export",
        "format": FORMAT,
        "schema": store::SCHEMA_VERSION,
        "source": source,
        "exportedAt": job::iso(now_ms()),
    });
    writeln!(out, "{header}").map_err(io)?;
    let mut moved = Moved { source, ..Moved::default() };
    for table in Table::ALL {
        let mut after = store::transfer::Key::default();
        let mut n = 0u64;
        loop {
            let page = store::transfer::page(&mut tx, table, &after, PAGE).await?;
            for r in &page {
                writeln!(out, "{{\"table\":\"{}\",\"row\":{}}}", table.name(), r.row).map_err(io)?;
            }
            n += page.len() as u64;
            let full = page.len() as i64 == PAGE;
            match page.into_iter().next_back() {
                Some(last) if full => after = last.key,
                _ => break,
            }
        }
        moved.rows.insert(table.name(), n);
    }
    writeln!(out, "{}", json!({ "end": moved.rows })).map_err(io)?;
    out.flush().map_err(io)?;
    Ok(moved)
}

/// A running task cannot move: its worker runs on the source's machine, under its dispatcher.
async fn refuse_while_running(q: &Queue, tx: &mut store::Tx<'_>) -> Result<()> {
    let described = q.store.describe();
    let stale_before = now_ms() - q.config.config.dispatcher.stale_ms as i64;
    match store::lease::live_nodes(tx, stale_before).await? {
        Some(nodes) if !nodes.is_empty() => {
            let ids: Vec<String> = nodes.iter().map(|n| format!("{} (pid {} on {})", n.id, n.pid, n.host)).collect();
            return Err(Error::Invalid(format!(
                "dispatchers run on the queue at {described}: {}. Stop them first (Ctrl-C, or kill: each queues \
                 its running tasks again), then export; nothing was exported",
                ids.join(", ")
            )));
        }
        Some(_) => {}
        None => {
            if let Some(l) = queue::leader(q, tx).await? {
                return Err(Error::Invalid(format!(
                    "a dispatcher (pid {}) runs on the queue at {described}. Stop it first (Ctrl-C, or kill {}: it \
                     queues its running tasks again), then export; nothing was exported",
                    l.pid, l.pid
                )));
            }
        }
    }
    let running = store::jobs::counts(tx).await?.into_iter().find(|(s, _)| *s == JobState::Running).map_or(0, |c| c.1);
    if running > 0 {
        return Err(Error::Invalid(format!(
            "{running} task(s) are running in the queue at {described} with no dispatcher (it stopped without queuing \
             them again). Start one (`baton run`) so it recovers them and stop it once they are queued or done, or \
             cancel them (`baton task cancel`), then export; nothing was exported"
        )));
    }
    Ok(())
}

/// Restore the export read from `input` (named `name` in errors) into queue `q`, which must
/// hold no tasks: all of it in one transaction, or nothing.
pub async fn import(q: &Queue, input: &mut dyn BufRead, name: &str) -> Result<Moved> {
    let mut lines = input.lines().enumerate().map(|(i, l)| (i + 1, l));
    let read = |l: std::io::Result<String>| l.map_err(|e| Error::io(format!("reading {name}"), e));
    let header = match lines.next() {
        Some((_, l)) => read(l)?,
        None => return Err(Error::Invalid(format!("{name} is empty: not a baton export; nothing was imported"))),
    };
    let source = check_header(&header, name)?;
    let target = q.store.describe();
    let file_target = q.store.file().is_some();
    let mut tx = q.store.begin().await?;
    let held = store::transfer::held(&mut tx).await?;
    if held > 0 {
        return Err(Error::Invalid(format!(
            "the queue at {target} already holds tasks ({held} tasks, workflow runs and worktrees): an import fills \
             only an empty queue (name a new file or database with --db); nothing was imported"
        )));
    }
    let id = store::transfer::open(&mut tx, &source, FORMAT, now_ms()).await.map_err(|e| q.store.explain(e))?;
    let mut moved = Moved { source, target: Some(target), ..Moved::default() };
    let mut last_table = 0;
    let mut ended = None;
    let mut batch = Batch::default();
    for (n, line) in lines {
        let line = read(line)?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: String| Error::Invalid(format!("{name} line {n}: {what}; nothing was imported"));
        if ended.is_some() {
            return Err(bad("a line after the export's last line".into()));
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| bad(format!("not JSON ({e})")))?;
        if let Some(end) = v.get("end") {
            ended = Some(end.clone());
            continue;
        }
        let table = v.get("table").and_then(Value::as_str).ok_or_else(|| bad("a line without a table".into()))?;
        let table = Table::parse(table).ok_or_else(|| bad(format!("unknown table {table:?}")))?;
        let Some(row) = v.get("row").filter(|r| r.is_object()) else {
            return Err(bad(format!("a {} line without its row (an object of its columns)", table.name())));
        };
        let idx = Table::ALL.iter().position(|t| *t == table).unwrap_or_default();
        if idx < last_table {
            return Err(bad(format!(
                "{} rows after {} rows: the tables are out of order",
                table.name(),
                Table::ALL[last_table].name()
            )));
        }
        last_table = idx;
        if table == Table::Jobs {
            let state = row.get("state").and_then(Value::as_str).unwrap_or_default();
            if state == "running" {
                return Err(bad("a running task (an export carries none: its worker cannot move)".into()));
            }
            let unfinished = matches!(state, "waiting" | "queued");
            if file_target && unfinished && row.get("node").is_some_and(|n| !n.is_null()) {
                moved.unpinned += 1;
            }
        }
        if batch.table != Some(table) || batch.rows.len() >= BATCH_ROWS || batch.bytes >= BATCH_BYTES {
            batch.flush(q, &mut tx, name).await?;
            batch.table = Some(table);
        }
        batch.push(n, row.to_string());
        *moved.rows.entry(table.name()).or_default() += 1;
    }
    batch.flush(q, &mut tx, name).await?;
    let Some(end) = ended else {
        return Err(Error::Invalid(format!(
            "{name} ends before the export's last line: it was cut short; nothing was imported"
        )));
    };
    for table in Table::ALL {
        let said = end.get(table.name()).and_then(Value::as_u64).unwrap_or(0);
        if said != moved.count(table) {
            return Err(Error::Invalid(format!(
                "{name} says it holds {said} {} rows but {} came: it is damaged; nothing was imported",
                table.name(),
                moved.count(table)
            )));
        }
    }
    let restored = store::transfer::Restored {
        jobs: moved.count(Table::Jobs) as i64,
        runs: moved.count(Table::WorkflowRuns) as i64,
        events: moved.count(Table::JobEvents) as i64,
    };
    store::transfer::close(&mut tx, id, restored, now_ms()).await?;
    tx.commit().await.map_err(|e| q.store.explain(e))?;
    Ok(moved)
}

/// The header's source, once it shows an export this baton reads.
fn check_header(line: &str, name: &str) -> Result<String> {
    let not = || {
        Error::Invalid(format!(
            "{name} is not a baton export (its first line is no export header); nothing was imported"
        ))
    };
    let v: Value = serde_json::from_str(line).map_err(|_| not())?;
    if v.get("baton").and_then(Value::as_str) != Some("export") {
        return Err(not());
    }
    let format = v.get("format").and_then(Value::as_i64).unwrap_or(0);
    if format != FORMAT {
        return Err(Error::Invalid(format!(
            "{name} is an export of format {format}; this baton reads format {FORMAT}; nothing was imported"
        )));
    }
    let schema = v.get("schema").and_then(Value::as_i64).unwrap_or(0);
    if schema != store::SCHEMA_VERSION {
        return Err(Error::Invalid(format!(
            "{name} was exported at schema version {schema} and this baton's is {}: export and import with the same \
             baton version; nothing was imported",
            store::SCHEMA_VERSION
        )));
    }
    Ok(v.get("source").and_then(Value::as_str).unwrap_or("an export").to_string())
}

/// Consecutive rows of one table, restored by one statement. A batch the database refuses is
/// undone alone and its rows tried one by one, so the refusal names its line.
#[derive(Default)]
struct Batch {
    table: Option<Table>,
    rows: Vec<(usize, String)>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, line: usize, row: String) {
        self.bytes += row.len();
        self.rows.push((line, row));
    }

    async fn flush(&mut self, q: &Queue, tx: &mut store::Tx<'_>, name: &str) -> Result<()> {
        let Some(table) = self.table else { return Ok(()) };
        if self.rows.is_empty() {
            return Ok(());
        }
        let mut all = String::with_capacity(self.bytes + self.rows.len() + 2);
        all.push('[');
        for (i, (_, row)) in self.rows.iter().enumerate() {
            if i > 0 {
                all.push(',');
            }
            all.push_str(row);
        }
        all.push(']');
        store::transfer::mark(tx).await?;
        if store::transfer::restore(tx, table, &all).await.is_ok() {
            store::transfer::release_mark(tx).await?;
        } else {
            store::transfer::rollback_to_mark(tx).await?;
            for (line, row) in &self.rows {
                store::transfer::restore(tx, table, &format!("[{row}]")).await.map_err(|e| {
                    let v: Value = serde_json::from_str(row).unwrap_or_default();
                    let key =
                        v.get("id").or_else(|| v.get("job_id")).or_else(|| v.get("task_id")).and_then(Value::as_str);
                    let what = key.map_or_else(|| table.name().to_string(), |k| format!("{} {k}", table.name()));
                    Error::Invalid(format!(
                        "{name} line {line}: {what} was refused: {}; nothing was imported",
                        q.store.explain(e)
                    ))
                })?;
            }
        }
        self.rows.clear();
        self.bytes = 0;
        Ok(())
    }
}

//! Moving a queue (`baton export`, `baton import`): each table's rows a page at a time as
//! JSON objects of their columns, restored as they were inside an open import (see
//! migrations/sqlite/0013_imports.sql), and the import's own record.

use sqlx::SqliteConnection;

use crate::Result;
pub use baton_rows::transfer::{Exported, Key, Restored, Table};

/// A page of exported rows: `$sql` selects `text`, `num` (the row's key) and `row` (its JSON).
macro_rules! exported {
    ($conn:expr, $sql:literal, $($arg:expr),*) => {
        sqlx::query!($sql, $($arg),*)
            .fetch_all($conn)
            .await?
            .into_iter()
            .map(|r| Exported { key: Key { text: r.text, num: r.num }, row: r.row })
            .collect()
    };
}

/// A restoring statement, run.
macro_rules! written {
    ($conn:expr, $sql:literal, $arg:expr) => {
        sqlx::query!($sql, $arg).execute($conn).await?
    };
}

/// The rows of `table` after `after` in its key order, at most `limit`.
pub async fn page(conn: &mut SqliteConnection, table: Table, after: &Key, limit: i64) -> Result<Vec<Exported>> {
    let text = after.text.as_str();
    Ok(match table {
        Table::Worktrees => exported!(
            conn,
            r#"SELECT id AS "text!: String", 0 AS "num!: i64", json_object('id', id, 'state', state, 'repo', repo, 'path', path, 'subdir', subdir, 'branch', branch, 'base_commit', base_commit, 'target', target, 'auto_commit', auto_commit, 'setup', setup, 'created_ms', created_ms, 'ready_ms', ready_ms, 'merged_ms', merged_ms, 'merged_how', merged_how, 'merge_commit', merge_commit, 'merged_head', merged_head, 'ended_ms', ended_ms) AS "row!: String"
              FROM worktrees WHERE id > ?1 ORDER BY id LIMIT ?2"#,
            text,
            limit
        ),
        Table::WorkflowRuns => exported!(
            conn,
            r#"SELECT '' AS "text!: String", seq AS "num!: i64", json_object('seq', seq, 'id', id, 'workflow_id', workflow_id, 'name', name, 'state', state, 'task', task, 'session', session, 'requested_by', requested_by, 'project_dir', project_dir, 'priority', priority, 'max_attempts', max_attempts, 'max_carry_chars', max_carry_chars, 'carry', carry, 'current_step', current_step, 'created_ms', created_ms, 'finished_ms', finished_ms, 'response', response, 'error', error, 'cancel_requested_ms', cancel_requested_ms, 'cancel_reason', cancel_reason, 'worktree_id', worktree_id) AS "row!: String"
              FROM workflow_runs WHERE seq > ?1 ORDER BY seq LIMIT ?2"#,
            after.num,
            limit
        ),
        Table::Jobs => exported!(
            conn,
            r#"SELECT '' AS "text!: String", seq AS "num!: i64", json_object('seq', seq, 'id', id, 'state', state, 'kind', kind, 'profile', profile, 'task', task, 'session', session, 'requested_by', requested_by, 'project_dir', project_dir, 'argv', argv, 'prompt_stdin', prompt_stdin, 'model', model, 'env', env, 'attachments', attachments, 'priority', priority, 'attempt', attempt, 'max_attempts', max_attempts, 'run_after_ms', run_after_ms, 'timeout_ms', timeout_ms, 'profile_limit', profile_limit, 'created_ms', created_ms, 'started_ms', started_ms, 'finished_ms', finished_ms, 'response', response, 'response_chars', response_chars, 'error', error, 'report', report, 'exit_code', exit_code, 'owner', owner, 'epoch', epoch, 'output_tail', output_tail, 'cancel_requested_ms', cancel_requested_ms, 'cancel_reason', cancel_reason, 'workflow_run_id', workflow_run_id, 'workflow_step', workflow_step, 'dedup_key', dedup_key, 'tokens', tokens, 'cost_usd', cost_usd, 'output', output, 'worker_kind', worker_kind, 'input_tokens', input_tokens, 'output_tokens', output_tokens, 'cached_tokens', cached_tokens, 'system_prompt', system_prompt, 'permissions', permissions, 'worktree_id', worktree_id, 'labels', labels, 'after', after, 'after_any', after_any) AS "row!: String"
              FROM jobs WHERE seq > ?1 ORDER BY seq LIMIT ?2"#,
            after.num,
            limit
        ),
        Table::JobEvents => exported!(
            conn,
            r#"SELECT job_id AS "text!: String", seq AS "num!: i64", json_object('job_id', job_id, 'attempt', attempt, 'seq', seq, 'at_ms', at_ms, 'kind', kind, 'text', text, 'payload', payload) AS "row!: String"
              FROM job_events WHERE (job_id, seq) > (?1, ?2) ORDER BY job_id, seq LIMIT ?3"#,
            text,
            after.num,
            limit
        ),
        Table::WorkflowSteps => exported!(
            conn,
            r#"SELECT run_id AS "text!: String", idx AS "num!: i64", json_object('run_id', run_id, 'idx', idx, 'step_id', step_id, 'title', title, 'worker_id', worker_id, 'prompt', prompt, 'carry', carry, 'timeout_ms', timeout_ms, 'runner', runner, 'model', model, 'system_prompt', system_prompt, 'prompt_via', prompt_via, 'env', env, 'profile_limit', profile_limit, 'attachments', attachments, 'state', state, 'job_id', job_id, 'carry_in', carry_in, 'warning', warning, 'error', error, 'started_ms', started_ms, 'finished_ms', finished_ms, 'output', output, 'worker_kind', worker_kind, 'permissions', permissions) AS "row!: String"
              FROM workflow_steps WHERE (run_id, idx) > (?1, ?2) ORDER BY run_id, idx LIMIT ?3"#,
            text,
            after.num,
            limit
        ),
        Table::FinishHooks => exported!(
            conn,
            r#"SELECT task_id AS "text!: String", 0 AS "num!: i64", json_object('task_id', task_id, 'finished_ms', finished_ms, 'attempts', attempts, 'started_ms', started_ms, 'done_ms', done_ms, 'exit_code', exit_code, 'error', error) AS "row!: String"
              FROM finish_hooks WHERE task_id > ?1 ORDER BY task_id LIMIT ?2"#,
            text,
            limit
        ),
        Table::Pauses => exported!(
            conn,
            r#"SELECT profile AS "text!: String", 0 AS "num!: i64", json_object('profile', profile, 'paused_ms', paused_ms, 'paused_by', paused_by) AS "row!: String"
              FROM pauses WHERE profile > ?1 ORDER BY profile LIMIT ?2"#,
            text,
            limit
        ),
        Table::Hooks => exported!(
            conn,
            r#"SELECT name AS "text!: String", 0 AS "num!: i64", json_object('name', name, 'argv', argv, 'updated_ms', updated_ms) AS "row!: String"
              FROM hooks WHERE name > ?1 ORDER BY name LIMIT ?2"#,
            text,
            limit
        ),
    })
}

/// Restore rows of `table` as they were: `rows` is a JSON array of them (objects of their
/// columns), in order, each parsed once (to JSONB), not once per column. Only an open import
/// admits rows the guards of new ones would refuse.
pub async fn restore(conn: &mut SqliteConnection, table: Table, rows: &str) -> Result<()> {
    match table {
        Table::Worktrees => written!(conn, "WITH b (r) AS MATERIALIZED (SELECT jsonb(value) FROM json_each(?1))
             INSERT INTO worktrees (id, state, repo, path, subdir, branch, base_commit, target, auto_commit, setup, created_ms, ready_ms, merged_ms, merged_how, merge_commit, merged_head, ended_ms)
             SELECT r ->> 'id', r ->> 'state', r ->> 'repo', r ->> 'path', r ->> 'subdir', r ->> 'branch', r ->> 'base_commit', r ->> 'target', r ->> 'auto_commit', r ->> 'setup', r ->> 'created_ms', r ->> 'ready_ms', r ->> 'merged_ms', r ->> 'merged_how', r ->> 'merge_commit', r ->> 'merged_head', r ->> 'ended_ms'
               FROM b", rows),
        Table::WorkflowRuns => written!(conn, "WITH b (r) AS MATERIALIZED (SELECT jsonb(value) FROM json_each(?1))
             INSERT INTO workflow_runs (seq, id, workflow_id, name, state, task, session, requested_by, project_dir, priority, max_attempts, max_carry_chars, carry, current_step, created_ms, finished_ms, response, error, cancel_requested_ms, cancel_reason, worktree_id)
             SELECT r ->> 'seq', r ->> 'id', r ->> 'workflow_id', r ->> 'name', r ->> 'state', r ->> 'task', r ->> 'session', r ->> 'requested_by', r ->> 'project_dir', r ->> 'priority', r ->> 'max_attempts', r ->> 'max_carry_chars', r ->> 'carry', r ->> 'current_step', r ->> 'created_ms', r ->> 'finished_ms', r ->> 'response', r ->> 'error', r ->> 'cancel_requested_ms', r ->> 'cancel_reason', r ->> 'worktree_id'
               FROM b", rows),
        Table::Jobs => written!(conn, "WITH b (r) AS MATERIALIZED (SELECT jsonb(value) FROM json_each(?1))
             INSERT INTO jobs (seq, id, state, kind, profile, task, session, requested_by, project_dir, argv, prompt_stdin, model, env, attachments, priority, attempt, max_attempts, run_after_ms, timeout_ms, profile_limit, created_ms, started_ms, finished_ms, response, response_chars, error, report, exit_code, owner, epoch, output_tail, cancel_requested_ms, cancel_reason, workflow_run_id, workflow_step, dedup_key, tokens, cost_usd, output, worker_kind, input_tokens, output_tokens, cached_tokens, system_prompt, permissions, worktree_id, labels, after, after_any)
             SELECT r ->> 'seq', r ->> 'id', r ->> 'state', r ->> 'kind', r ->> 'profile', r ->> 'task', r ->> 'session', r ->> 'requested_by', r ->> 'project_dir', r ->> 'argv', r ->> 'prompt_stdin', r ->> 'model', r ->> 'env', r ->> 'attachments', r ->> 'priority', r ->> 'attempt', r ->> 'max_attempts', r ->> 'run_after_ms', r ->> 'timeout_ms', r ->> 'profile_limit', r ->> 'created_ms', r ->> 'started_ms', r ->> 'finished_ms', r ->> 'response', r ->> 'response_chars', r ->> 'error', r ->> 'report', r ->> 'exit_code', r ->> 'owner', r ->> 'epoch', r ->> 'output_tail', r ->> 'cancel_requested_ms', r ->> 'cancel_reason', r ->> 'workflow_run_id', r ->> 'workflow_step', r ->> 'dedup_key', r ->> 'tokens', r ->> 'cost_usd', r ->> 'output', r ->> 'worker_kind', r ->> 'input_tokens', r ->> 'output_tokens', r ->> 'cached_tokens', r ->> 'system_prompt', r ->> 'permissions', r ->> 'worktree_id', r ->> 'labels', r ->> 'after', r ->> 'after_any'
               FROM b", rows),
        Table::JobEvents => written!(conn, "WITH b (r) AS MATERIALIZED (SELECT jsonb(value) FROM json_each(?1))
             INSERT INTO job_events (job_id, attempt, seq, at_ms, kind, text, payload)
             SELECT r ->> 'job_id', r ->> 'attempt', r ->> 'seq', r ->> 'at_ms', r ->> 'kind', r ->> 'text', r ->> 'payload'
               FROM b", rows),
        Table::WorkflowSteps => written!(conn, "WITH b (r) AS MATERIALIZED (SELECT jsonb(value) FROM json_each(?1))
             INSERT INTO workflow_steps (run_id, idx, step_id, title, worker_id, prompt, carry, timeout_ms, runner, model, system_prompt, prompt_via, env, profile_limit, attachments, state, job_id, carry_in, warning, error, started_ms, finished_ms, output, worker_kind, permissions)
             SELECT r ->> 'run_id', r ->> 'idx', r ->> 'step_id', r ->> 'title', r ->> 'worker_id', r ->> 'prompt', r ->> 'carry', r ->> 'timeout_ms', r ->> 'runner', r ->> 'model', r ->> 'system_prompt', r ->> 'prompt_via', r ->> 'env', r ->> 'profile_limit', r ->> 'attachments', r ->> 'state', r ->> 'job_id', r ->> 'carry_in', r ->> 'warning', r ->> 'error', r ->> 'started_ms', r ->> 'finished_ms', r ->> 'output', r ->> 'worker_kind', r ->> 'permissions'
               FROM b", rows),
        Table::FinishHooks => written!(conn, "WITH b (r) AS MATERIALIZED (SELECT jsonb(value) FROM json_each(?1))
             INSERT INTO finish_hooks (task_id, finished_ms, attempts, started_ms, done_ms, exit_code, error)
             SELECT r ->> 'task_id', r ->> 'finished_ms', r ->> 'attempts', r ->> 'started_ms', r ->> 'done_ms', r ->> 'exit_code', r ->> 'error'
               FROM b", rows),
        Table::Pauses => written!(conn, "WITH b (r) AS MATERIALIZED (SELECT jsonb(value) FROM json_each(?1))
             INSERT INTO pauses (profile, paused_ms, paused_by)
             SELECT r ->> 'profile', r ->> 'paused_ms', r ->> 'paused_by'
               FROM b", rows),
        Table::Hooks => written!(conn, "WITH b (r) AS MATERIALIZED (SELECT jsonb(value) FROM json_each(?1))
             INSERT INTO hooks (name, argv, updated_ms)
             SELECT r ->> 'name', r ->> 'argv', r ->> 'updated_ms'
               FROM b", rows),
    };
    Ok(())
}

/// Mark the transaction's state, so a batch that fails can be undone alone
/// ([`rollback_to_mark`]) and its rows tried one by one.
pub async fn mark(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query!("SAVEPOINT baton_import_batch").execute(conn).await?;
    Ok(())
}

/// Undo what followed the last [`mark`].
pub async fn rollback_to_mark(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query!("ROLLBACK TO SAVEPOINT baton_import_batch").execute(conn).await?;
    Ok(())
}

/// Keep what followed the last [`mark`].
pub async fn release_mark(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query!("RELEASE SAVEPOINT baton_import_batch").execute(conn).await?;
    Ok(())
}

/// How many tasks, workflow runs and worktrees the queue holds (an import fills only an empty
/// queue).
pub async fn held(conn: &mut SqliteConnection) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM workflow_runs) + (SELECT count(*) FROM worktrees)
               AS "n!: i64""#
    )
    .fetch_one(conn)
    .await?)
}

/// Open an import of rows from `source`: the schema refuses it on a queue with tasks in it, or
/// while another is open. Its id.
pub async fn open(conn: &mut SqliteConnection, source: &str, format: i64, now: i64) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"INSERT INTO imports (source, format, started_ms) VALUES (?1, ?2, ?3) RETURNING id AS "id!: i64""#,
        source,
        format,
        now
    )
    .fetch_one(conn)
    .await?)
}

/// Close import `id` with what it restored: from here the guards of new rows hold again.
pub async fn close(conn: &mut SqliteConnection, id: i64, restored: Restored, now: i64) -> Result<()> {
    sqlx::query!(
        "UPDATE imports SET finished_ms = ?2, jobs = ?3, runs = ?4, events = ?5 WHERE id = ?1 AND finished_ms IS NULL",
        id,
        now,
        restored.jobs,
        restored.runs,
        restored.events
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A consistent view for an export: a SQLite transaction reads one snapshot already.
pub async fn snapshot(_conn: &mut SqliteConnection) -> Result<()> {
    Ok(())
}

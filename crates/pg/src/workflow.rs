//! Statements on `workflow_runs` and `workflow_steps`. Every state change is guarded by the
//! expected state, like jobs; a step advances in the same transaction as its job's result,
//! which the node's fence guards.

use sqlx::PgConnection;

use crate::Result;
use baton_rows::state::{RunState, StepState, WorkerKind};
pub use baton_rows::workflow::{NewRun, NewStep, RunRow, StepRow};

pub async fn insert_run(conn: &mut PgConnection, r: &NewRun<'_>) -> Result<()> {
    sqlx::query!(
        "INSERT INTO workflow_runs (id, workflow_id, name, state, task, session, requested_by, project_dir, priority,
                                    max_attempts, max_carry_chars, created_ms, worktree_id)
         VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        r.id,
        r.workflow_id,
        r.name,
        r.task,
        r.session,
        r.requested_by,
        r.project_dir,
        r.priority,
        r.max_attempts,
        r.max_carry_chars,
        r.now,
        r.worktree_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert_step(conn: &mut PgConnection, s: &NewStep<'_>) -> Result<()> {
    sqlx::query!(
        "INSERT INTO workflow_steps (run_id, idx, step_id, title, worker_id, prompt, carry, timeout_ms, runner, model,
                                     system_prompt, prompt_via, env, profile_limit, attachments, state, output,
                                     worker_kind, permissions)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'pending', $16, $17, $18)",
        s.run_id,
        s.idx,
        s.step_id,
        s.title,
        s.worker_id,
        s.prompt,
        i64::from(s.carry),
        s.timeout_ms,
        s.runner,
        s.model,
        s.system_prompt,
        s.prompt_via,
        s.env,
        s.profile_limit,
        s.attachments,
        s.output,
        s.worker_kind.as_str(),
        s.permissions
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// `query_as!` into [`RunRow`], state words decoded as enums; the argument is the rest of
/// the statement after `FROM workflow_runs`.
macro_rules! select_runs {
    ($rest:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            RunRow,
            r#"SELECT seq, id, workflow_id, name, state AS "state: RunState", task, session, requested_by,
                      project_dir, priority, max_attempts, max_carry_chars, carry, current_step, created_ms,
                      finished_ms, response, error, cancel_requested_ms, cancel_reason, worktree_id
                 FROM workflow_runs "# + $rest
            $(, $arg)*
        )
    };
}

/// `query_as!` into [`StepRow`], state words decoded as enums; the argument is the rest of
/// the statement after `FROM workflow_steps`.
macro_rules! select_steps {
    ($rest:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            StepRow,
            r#"SELECT run_id, idx, step_id, title, worker_id, prompt, carry, timeout_ms, runner, model,
                      system_prompt, prompt_via, env, profile_limit, attachments, state AS "state: StepState",
                      job_id, carry_in, warning, error, started_ms, finished_ms, output, worker_kind AS
                      "worker_kind: WorkerKind", permissions
                 FROM workflow_steps "# + $rest
            $(, $arg)*
        )
    };
}

pub async fn get_run(conn: &mut PgConnection, id: &str) -> Result<Option<RunRow>> {
    Ok(select_runs!("WHERE id = $1", id).fetch_optional(conn).await?)
}

/// Several runs by exact id.
pub async fn get_runs(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<RunRow>> {
    Ok(select_runs!("WHERE id = ANY($1)", ids).fetch_all(conn).await?)
}

pub async fn steps(conn: &mut PgConnection, run_id: &str) -> Result<Vec<StepRow>> {
    Ok(select_steps!("WHERE run_id = $1 ORDER BY idx", run_id).fetch_all(conn).await?)
}

/// At most `n` steps of a run from step `idx` on, in order.
pub async fn steps_from(conn: &mut PgConnection, run_id: &str, idx: i64, n: i64) -> Result<Vec<StepRow>> {
    Ok(select_steps!("WHERE run_id = $1 AND idx >= $2 ORDER BY idx LIMIT $3", run_id, idx, n).fetch_all(conn).await?)
}

/// Runs, newest first.
pub async fn list_runs(conn: &mut PgConnection, session: Option<&str>, limit: i64) -> Result<Vec<RunRow>> {
    Ok(select_runs!("WHERE ($1::text IS NULL OR session = $1) ORDER BY seq DESC LIMIT $2", session, limit)
        .fetch_all(conn)
        .await?)
}

/// Run ids starting with `prefix` (at most two).
pub async fn ids_with_prefix(conn: &mut PgConnection, prefix: &str) -> Result<Vec<String>> {
    // ids are lowercase hex and dashes; callers validate the prefix, so a range on the id's
    // bytes (its "C" collation index) is exact.
    let hi = format!("{prefix}\u{10FFFF}");
    Ok(sqlx::query_scalar!(
        r#"SELECT id FROM workflow_runs WHERE id COLLATE "C" >= $1 AND id COLLATE "C" < $2 ORDER BY id COLLATE "C" LIMIT 2"#,
        prefix,
        hi
    )
    .fetch_all(conn)
    .await?)
}

/// `pending -> running`: the step's job exists now; the run's current step and carry (what the
/// step started with) follow. False, and the run untouched, when the step was not pending.
pub async fn start_step(
    conn: &mut PgConnection,
    run_id: &str,
    idx: i64,
    job_id: &str,
    carry_in: &str,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE workflow_steps SET state = 'running', job_id = $3, carry_in = $4, started_ms = $5
          WHERE run_id = $1 AND idx = $2 AND state = 'pending'",
        run_id,
        idx,
        job_id,
        carry_in,
        now
    )
    .execute(&mut *conn)
    .await?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query!(
        "UPDATE workflow_runs SET current_step = $2, carry = $3 WHERE id = $1 AND state = 'running'",
        run_id,
        idx,
        carry_in
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// `running -> succeeded | failed` for a step.
pub async fn end_step(
    conn: &mut PgConnection,
    run_id: &str,
    idx: i64,
    state: StepState,
    warning: Option<&str>,
    error: Option<&str>,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE workflow_steps SET state = $3, warning = $4, error = $5, finished_ms = $6
          WHERE run_id = $1 AND idx = $2 AND state = 'running'",
        run_id,
        idx,
        state.as_str(),
        warning,
        error,
        now
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Store the carry after a step.
pub async fn set_carry(conn: &mut PgConnection, run_id: &str, carry: &str) -> Result<()> {
    sqlx::query!("UPDATE workflow_runs SET carry = $2 WHERE id = $1 AND state = 'running'", run_id, carry)
        .execute(conn)
        .await?;
    Ok(())
}

/// Skip every pending step of a run (after a failed step).
pub async fn skip_pending(conn: &mut PgConnection, run_id: &str, now: i64) -> Result<()> {
    sqlx::query!(
        "UPDATE workflow_steps SET state = 'skipped', finished_ms = $2 WHERE run_id = $1 AND state = 'pending'",
        run_id,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// `running -> succeeded | failed | canceled` for a run.
pub async fn end_run(
    conn: &mut PgConnection,
    run_id: &str,
    state: RunState,
    response: Option<&str>,
    error: Option<&str>,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE workflow_runs SET state = $2, response = $3, error = $4, finished_ms = $5, current_step = NULL
          WHERE id = $1 AND state = 'running'",
        run_id,
        state.as_str(),
        response,
        error,
        now
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Record a cancel request on a run; returns the job of its running step, if any.
pub async fn request_cancel(
    conn: &mut PgConnection,
    run_id: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<Option<String>> {
    sqlx::query!(
        "UPDATE workflow_runs SET cancel_requested_ms = coalesce(cancel_requested_ms, $2),
                                  cancel_reason = coalesce(cancel_reason, $3)
          WHERE id = $1 AND state = 'running'",
        run_id,
        now,
        reason
    )
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar!(
        "SELECT job_id FROM workflow_steps WHERE run_id = $1 AND state = 'running' AND job_id IS NOT NULL",
        run_id
    )
    .fetch_optional(conn)
    .await?
    .flatten())
}

/// Finished runs that pruning may delete (with their steps and jobs), oldest first; never one
/// whose worktree is still on disk.
pub async fn prunable(
    conn: &mut PgConnection,
    now: i64,
    max_age_ms: i64,
    min_age_ms: i64,
    max_runs: i64,
    batch: i64,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM workflow_runs
          WHERE finished_ms IS NOT NULL AND finished_ms <= $1::bigint - $3::bigint
            AND (worktree_id IS NULL OR worktree_id IN (SELECT id FROM worktrees WHERE state = 'discarded'))
            AND (finished_ms < $1::bigint - $2::bigint
                 OR seq NOT IN (SELECT seq FROM workflow_runs WHERE finished_ms IS NOT NULL
                                 ORDER BY finished_ms DESC, seq DESC LIMIT $4))
          ORDER BY finished_ms, seq
          LIMIT $5",
        now,
        max_age_ms,
        min_age_ms,
        max_runs,
        batch
    )
    .fetch_all(conn)
    .await?)
}

/// Delete runs with their steps and their steps' jobs; returns the deleted job ids (for their logs).
pub async fn delete_runs(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<String>> {
    let jobs = sqlx::query_scalar!("DELETE FROM jobs WHERE workflow_run_id = ANY($1) RETURNING id", ids)
        .fetch_all(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM workflow_steps WHERE run_id = ANY($1)", ids).execute(&mut *conn).await?;
    sqlx::query!("DELETE FROM workflow_runs WHERE id = ANY($1)", ids).execute(conn).await?;
    Ok(jobs)
}

//! Statements on `jobs`: insert, read, claim, results.

use baton_rows::job::{JobRow, NewJob};
use baton_rows::jobs::{ClaimLimits, Inserted, Leader, NewWorker, Outcome};
use baton_rows::state::{JobState, WorkerKind};
use sqlx::{Connection, PgConnection};

/// `query_as!` into [`JobRow`], state words decoded as enums; the argument is the rest of the
/// statement after `FROM jobs`.
macro_rules! select_jobs {
    ($($rest:literal)+ $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            JobRow,
            r#"SELECT seq, id, state AS "state: JobState", kind, profile, task, session, requested_by,
                 project_dir, argv, prompt_stdin, model, env, attachments, priority, attempt, max_attempts,
                 run_after_ms, timeout_ms, profile_limit, created_ms, started_ms, finished_ms, response,
                 response_chars, error, report, exit_code, owner, epoch, output_tail, cancel_requested_ms,
                 cancel_reason, workflow_run_id, workflow_step, dedup_key, tokens, cost_usd, output,
                 worker_kind AS "worker_kind: WorkerKind", input_tokens, output_tokens, cached_tokens,
                 system_prompt, permissions, worktree_id, labels, after,
                 after_any <> 0 AS "after_any!: bool"
                 FROM jobs "# $(+ $rest)+
            $(, $arg)*
        )
    };
}

/// Insert a job (`node`: the only node that may run it). The `jobs_dedup` partial unique index,
/// not a check-then-insert, decides whether a dedup key is taken.
pub async fn insert(conn: &mut PgConnection, job: &NewJob, node: Option<&str>) -> sqlx::Result<Inserted> {
    // A unique violation aborts the transaction it happens in: try inside a savepoint, so a
    // caller's transaction goes on to read the holder.
    let mut sp = conn.begin().await?;
    let res = sqlx::query_file!(
        "../../queries/postgres/insert.sql",
        job.id,
        job.kind,
        job.profile,
        job.task,
        job.session,
        job.requested_by,
        job.project_dir,
        job.argv,
        job.prompt_stdin,
        job.model,
        job.env,
        job.attachments,
        job.priority,
        job.max_attempts,
        job.run_after_ms,
        job.timeout_ms,
        job.profile_limit,
        job.created_ms,
        job.dedup_key,
        job.workflow_run_id,
        job.workflow_step,
        job.output,
        job.worker_kind as WorkerKind,
        job.system_prompt,
        job.permissions,
        job.worktree_id,
        job.labels,
        job.after,
        job.after_any,
        node,
    )
    .execute(&mut *sp)
    .await;
    match res {
        Ok(_) => {
            sp.commit().await?;
            Ok(Inserted::New)
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() && job.dedup_key.is_some() => {
            sp.rollback().await?;
            let existing = sqlx::query_scalar!(
                "SELECT id FROM jobs WHERE dedup_key = $1 AND state IN ('waiting', 'queued', 'running')",
                job.dedup_key
            )
            .fetch_optional(&mut *conn)
            .await?;
            match existing {
                Some(id) => Ok(Inserted::Duplicate(id)),
                None => Err(sqlx::Error::Database(e)),
            }
        }
        Err(e) => Err(e),
    }
}

/// One job by exact id.
pub async fn get(conn: &mut PgConnection, id: &str) -> sqlx::Result<Option<JobRow>> {
    select_jobs!("WHERE id = $1", id).fetch_optional(conn).await
}

/// Claim runnable jobs for node `node` at `epoch`, within every limit across all nodes, among
/// the jobs whose project directory is one of `dirs` (those that exist on this node), in its
/// own transaction after the claim lock; best first.
pub async fn claim(
    conn: &mut PgConnection,
    node: &str,
    epoch: i64,
    now: i64,
    limits: ClaimLimits,
    dirs: &[String],
) -> sqlx::Result<Vec<JobRow>> {
    let dirs = serde_json::to_string(dirs).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let mut tx = conn.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", crate::CLAIM_LOCK).execute(&mut *tx).await?;
    let mut rows = sqlx::query_file_as!(
        JobRow,
        "../../queries/postgres/claim.sql",
        node,
        epoch,
        now,
        limits.max_running,
        limits.max_workers,
        limits.max_per_session,
        limits.batch,
        dirs
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.seq.cmp(&b.seq)));
    Ok(rows)
}

/// Write several running jobs' results in one statement, each fenced by node and epoch;
/// returns the ids that were written.
pub async fn finish_many(
    conn: &mut PgConnection,
    outcomes: &[Outcome],
    node: &str,
    epoch: i64,
    now: i64,
) -> sqlx::Result<Vec<String>> {
    let batch = serde_json::to_string(outcomes).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query_file_scalar!("../../queries/postgres/finish_many.sql", batch, now, node, epoch).fetch_all(conn).await
}

/// Running jobs whose node no longer holds the epoch they were claimed under, oldest first: a
/// node that was taken over (or restarted) can no longer watch them.
pub async fn orphans(conn: &mut PgConnection) -> sqlx::Result<Vec<JobRow>> {
    select_jobs!(
        "WHERE state = 'running' AND NOT EXISTS (SELECT 1 FROM nodes n
                 WHERE n.id = jobs.owner AND n.epoch = jobs.epoch AND n.stopped_ms IS NULL)
          ORDER BY seq"
    )
    .fetch_all(conn)
    .await
}

/// A running job whose worker was lost: back to `queued` after `backoff_ms` while attempts
/// remain (and no cancel was asked for), else `failed` (or `canceled`) with `error`. Fenced by
/// the node and epoch found on the row, and by `by` still holding its own epoch. Returns the
/// state it moved to, or None when it was no longer so.
#[allow(clippy::too_many_arguments)]
pub async fn requeue_lost(
    conn: &mut PgConnection,
    id: &str,
    owner: &str,
    epoch: i64,
    by: Leader<'_>,
    now: i64,
    backoff_ms: i64,
    error: &str,
) -> sqlx::Result<Option<JobState>> {
    // Two guarded statements, at most one of which matches: a retry, or the final failure.
    let r = sqlx::query!(
        "UPDATE jobs SET state = 'queued', owner = NULL, epoch = NULL, run_after_ms = $4::bigint + $5::bigint, error = $6
          WHERE id = $1 AND state = 'running' AND owner = $2 AND epoch = $3 AND attempt < max_attempts
            AND cancel_requested_ms IS NULL
            AND EXISTS (SELECT 1 FROM nodes WHERE id = $7 AND epoch = $8 AND stopped_ms IS NULL)",
        id,
        owner,
        epoch,
        now,
        backoff_ms,
        error,
        by.owner,
        by.epoch
    )
    .execute(&mut *conn)
    .await?;
    if r.rows_affected() == 1 {
        return Ok(Some(JobState::Queued));
    }
    let state = sqlx::query_scalar!(
        r#"UPDATE jobs SET state = CASE WHEN cancel_requested_ms IS NULL THEN 'failed' ELSE 'canceled' END,
                         finished_ms = $4,
                         error = CASE WHEN cancel_requested_ms IS NULL THEN $5
                                      ELSE coalesce('Canceled: ' || cancel_reason, 'Canceled') END
          WHERE id = $1 AND state = 'running' AND owner = $2 AND epoch = $3
            AND EXISTS (SELECT 1 FROM nodes WHERE id = $6 AND epoch = $7 AND stopped_ms IS NULL)
         RETURNING state AS "state: JobState""#,
        id,
        owner,
        epoch,
        now,
        error,
        by.owner,
        by.epoch
    )
    .fetch_optional(conn)
    .await?;
    Ok(state)
}

/// Record oneshot workers' processes in one statement, while node `node` holds `epoch` (a node
/// that was taken over records nothing).
pub async fn insert_oneshot_workers(
    conn: &mut PgConnection,
    workers: &[NewWorker],
    node: &str,
    epoch: i64,
) -> sqlx::Result<u64> {
    let batch = serde_json::to_string(workers).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let r = sqlx::query!(
        "INSERT INTO workers (id, profile, kind, state, pid, pid_start, pgid, owner, epoch, session, job_id,
                              attempt, model, started_ms, last_activity_ms)
         SELECT w.id, w.profile, 'oneshot', 'busy', w.pid, w.pid_start, w.pid, $2, $3, w.session, w.job_id,
                w.attempt, w.model, w.started_ms, w.started_ms
           FROM jsonb_to_recordset($1::text::jsonb) AS w(id text, profile text, pid bigint, pid_start bigint,
                                                        session text, job_id text, attempt bigint, model text,
                                                        started_ms bigint)
          WHERE EXISTS (SELECT 1 FROM nodes WHERE id = $2 AND epoch = $3 AND stopped_ms IS NULL)",
        batch,
        node,
        epoch
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}

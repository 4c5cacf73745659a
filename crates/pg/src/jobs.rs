//! Statements on `jobs`: insert, read, claim, results.

use sqlx::{Connection, PgConnection};

use crate::{Error, Result};
use baton_rows::job::{JobRow, NewJob};
pub use baton_rows::jobs::{ClaimLimits, Inserted, Leader, ListFilter, NewWorker, Outcome};
use baton_rows::state::{JobState, WorkerKind};

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

/// Insert a job (`job.node`: the only node that may run it): queued, or waiting when it has
/// dependencies (the schema's triggers then queue or fail it at once if they are already
/// decided). The `jobs_dedup` partial unique index, not a check-then-insert, decides whether a
/// dedup key is taken.
pub async fn insert(conn: &mut PgConnection, job: &NewJob) -> Result<Inserted> {
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
        job.node,
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
                None => Err(Error::Invalid("dedup key raced with a finishing job; try again".into())),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// One job by exact id.
pub async fn get(conn: &mut PgConnection, id: &str) -> Result<Option<JobRow>> {
    Ok(select_jobs!("WHERE id = $1", id).fetch_optional(conn).await?)
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
) -> Result<Vec<JobRow>> {
    let dirs = serde_json::to_string(dirs)?;
    // BEGIN and the lock in one round trip (a simple query may hold several statements).
    let mut tx = conn.begin_with(format!("BEGIN; SELECT pg_advisory_xact_lock({})", crate::CLAIM_LOCK)).await?;
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
) -> Result<Vec<String>> {
    let batch = serde_json::to_string(outcomes)?;
    Ok(sqlx::query_file_scalar!("../../queries/postgres/finish_many.sql", batch, now, node, epoch)
        .fetch_all(conn)
        .await?)
}

/// Write a running job's result, fenced by node and epoch. False when the job was not ours
/// any more (recovered by another node, or already terminal): the first terminal state wins.
pub async fn finish(conn: &mut PgConnection, o: &Outcome, owner: &str, epoch: i64, now: i64) -> Result<bool> {
    Ok(!finish_many(conn, std::slice::from_ref(o), owner, epoch, now).await?.is_empty())
}

/// Running jobs not owned by (`owner`, `epoch`) whose node no longer holds the epoch they were
/// claimed under, oldest first: a node that was taken over (or restarted) can no longer watch
/// them. Other live nodes' jobs are theirs.
pub async fn orphans(conn: &mut PgConnection, owner: &str, epoch: i64) -> Result<Vec<JobRow>> {
    Ok(select_jobs!(
        "WHERE state = 'running' AND NOT (owner = $1 AND epoch = $2)
           AND NOT EXISTS (SELECT 1 FROM nodes n
                 WHERE n.id = jobs.owner AND n.epoch = jobs.epoch AND n.stopped_ms IS NULL)
          ORDER BY seq",
        owner,
        epoch
    )
    .fetch_all(conn)
    .await?)
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
) -> Result<Option<JobState>> {
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
) -> Result<()> {
    let batch = serde_json::to_string(workers)?;
    sqlx::query!(
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
    Ok(())
}

/// End a queued job that can never run (`queued -> failed`).
pub async fn fail_queued(conn: &mut PgConnection, id: &str, error: &str, now: i64) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE jobs SET state = 'failed', error = $2, finished_ms = $3 WHERE id = $1 AND state = 'queued'",
        id,
        error,
        now
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Several jobs by exact id, in one statement (order not guaranteed).
pub async fn get_many(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<JobRow>> {
    Ok(select_jobs!("WHERE id = ANY($1)", ids).fetch_all(conn).await?)
}

/// The states of several jobs or workflow runs (the awaiter's cheap re-read, one statement). A
/// run's state words are a subset of a job's.
pub async fn states(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<(String, JobState)>> {
    // UNION ALL columns come back as nullable to sqlx: both sides are NOT NULL columns.
    let rows = sqlx::query!(
        r#"SELECT id AS "id!", state AS "state!: JobState" FROM jobs WHERE id = ANY($1)
           UNION ALL
           SELECT id, state FROM workflow_runs WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.state)).collect())
}

/// Ids starting with `prefix` (at most two: enough to tell unique from ambiguous).
pub async fn ids_with_prefix(conn: &mut PgConnection, prefix: &str) -> Result<Vec<String>> {
    // ids are lowercase hex and dashes; callers validate the prefix, so a range on the id's
    // bytes (its "C" collation index) is exact.
    let hi = format!("{prefix}\u{10FFFF}");
    Ok(sqlx::query_scalar!(
        r#"SELECT id FROM jobs WHERE id COLLATE "C" >= $1 AND id COLLATE "C" < $2 ORDER BY id COLLATE "C" LIMIT 2"#,
        prefix,
        hi
    )
    .fetch_all(conn)
    .await?)
}

/// Jobs by `f`; `now` is the end of a running job's duration so far.
///
/// One statement per order, so that newest and oldest walk the `seq` index and stop after
/// `limit` matches. Running jobs are few however deep the queue: their statements say
/// `state = 'running'` in words, so the planner can read them by their partial index even in
/// a generic plan (a bound state cannot match a partial index's predicate).
pub async fn list(conn: &mut PgConnection, f: &ListFilter, now: i64) -> Result<Vec<JobRow>> {
    let labels = serde_json::to_string(&f.labels)?;
    let state = f.state.map(JobState::as_str);
    macro_rules! list_by {
        ($($order:literal)+ $(, $extra:expr)*) => {
            select_jobs!(
                "WHERE ($1::text IS NULL OR profile = $1) AND ($2::text IS NULL OR state = $2)
                   AND ($3::text IS NULL OR session = $3)
                   AND ($4::bigint IS NULL OR created_ms >= $4) AND ($5::bigint IS NULL OR created_ms < $5)
                   AND ($6::text = '[]' OR NOT EXISTS (
                          SELECT 1 FROM jsonb_array_elements($6::text::jsonb) f
                           WHERE jobs.labels IS NULL
                              OR (jobs.labels::jsonb -> (f ->> 0)) IS NULL
                              OR (f ->> 1 IS NOT NULL AND jobs.labels::jsonb ->> (f ->> 0) IS DISTINCT FROM f ->> 1)))
                 "
                $($order)+,
                f.profile,
                state,
                f.session,
                f.since_ms,
                f.until_ms,
                labels,
                f.limit
                $(, $extra)*
            )
            .fetch_all(&mut *conn)
            .await?
        };
    }
    macro_rules! by_order {
        ($only:literal) => {
            match f.sort.as_str() {
                "oldest" => list_by!($only "ORDER BY seq ASC LIMIT $7"),
                "priority" => list_by!($only "ORDER BY priority DESC, seq DESC LIMIT $7"),
                "duration" => list_by!(
                    $only "ORDER BY coalesce(finished_ms, $8) - coalesce(started_ms, coalesce(finished_ms, $8)) DESC, seq DESC LIMIT $7",
                    now
                ),
                _ => list_by!($only "ORDER BY seq DESC LIMIT $7"),
            }
        };
    }
    Ok(if f.state == Some(JobState::Running) { by_order!("AND state = 'running' ") } else { by_order!("") })
}

/// Job counts by state.
pub async fn counts(conn: &mut PgConnection) -> Result<Vec<(JobState, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT state AS "state: JobState", count(*) AS "n!: i64" FROM jobs GROUP BY state ORDER BY state"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.state, r.n)).collect())
}

/// Is there any queued or running job? And when is the earliest future run-after?
pub async fn pending(conn: &mut PgConnection, now: i64) -> Result<(bool, Option<i64>)> {
    let r = sqlx::query!(
        r#"SELECT (EXISTS (SELECT 1 FROM jobs WHERE state = 'running')
                   OR EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND run_after_ms <= $1)) AS "busy!: bool",
                  (SELECT min(run_after_ms) FROM jobs WHERE state = 'queued' AND run_after_ms > $1) AS "next: i64""#,
        now
    )
    .fetch_one(conn)
    .await?;
    Ok((r.busy, r.next))
}

/// The project directories of queued jobs (a node claims only those that exist on its machine):
/// a skip scan of `jobs_queued_dirs`, one index probe per directory however deep the queue.
pub async fn queued_dirs(conn: &mut PgConnection) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        r#"WITH RECURSIVE d (dir) AS (
               (SELECT project_dir FROM jobs WHERE state = 'queued' ORDER BY project_dir LIMIT 1)
               UNION ALL
               SELECT (SELECT project_dir FROM jobs WHERE state = 'queued' AND project_dir > d.dir
                        ORDER BY project_dir LIMIT 1)
                 FROM d WHERE d.dir IS NOT NULL)
           SELECT dir AS "dir!" FROM d WHERE dir IS NOT NULL"#
    )
    .fetch_all(conn)
    .await?)
}

/// The live worker processes recorded for a job's attempt: (pid, start time).
pub async fn worker_pids(conn: &mut PgConnection, job_id: &str, attempt: i64) -> Result<Vec<(i64, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT pid AS "pid!", pid_start AS "pid_start!" FROM workers
            WHERE job_id = $1 AND attempt = $2 AND pid IS NOT NULL AND pid_start IS NOT NULL"#,
        job_id,
        attempt
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.pid, r.pid_start)).collect())
}

/// Ask for a job to be canceled. A waiting or queued job ends `canceled` at once; a running
/// one gets the request (its node stops the process group, then writes `canceled`). Returns
/// the state the job is in afterwards, or None when unknown.
pub async fn request_cancel(
    conn: &mut PgConnection,
    id: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<Option<JobState>> {
    let error = match reason {
        Some(r) => format!("Canceled: {r}"),
        None => "Canceled".to_string(),
    };
    sqlx::query!(
        "UPDATE jobs SET state = 'canceled', finished_ms = $2, error = $3, cancel_requested_ms = $2, cancel_reason = $4
          WHERE id = $1 AND state IN ('waiting', 'queued')",
        id,
        now,
        error,
        reason
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE jobs SET cancel_requested_ms = $2, cancel_reason = $3
          WHERE id = $1 AND state = 'running' AND cancel_requested_ms IS NULL",
        id,
        now,
        reason
    )
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar!(r#"SELECT state AS "state: JobState" FROM jobs WHERE id = $1"#, id)
        .fetch_optional(conn)
        .await?)
}

/// Finished jobs that pruning may delete now, oldest first, at most `batch`: past `max_age`, or
/// beyond the newest `max_jobs`, and never younger than `min_age`, part of a workflow run, with
/// a worktree still on disk, or needed by a waiting job.
pub async fn prunable(
    conn: &mut PgConnection,
    now: i64,
    max_age_ms: i64,
    min_age_ms: i64,
    max_jobs: i64,
    batch: i64,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM jobs
          WHERE finished_ms IS NOT NULL AND finished_ms <= $1::bigint - $3::bigint AND workflow_run_id IS NULL
            AND (worktree_id IS NULL OR worktree_id IN (SELECT id FROM worktrees WHERE state = 'discarded'))
            AND NOT EXISTS (SELECT 1 FROM job_deps d JOIN jobs w ON w.id = d.job_id
                             WHERE d.dep_id = jobs.id AND w.state = 'waiting')
            AND (finished_ms < $1::bigint - $2::bigint
                 OR seq NOT IN (SELECT seq FROM jobs WHERE finished_ms IS NOT NULL
                                 ORDER BY finished_ms DESC, seq DESC LIMIT $4))
          ORDER BY finished_ms, seq
          LIMIT $5",
        now,
        max_age_ms,
        min_age_ms,
        max_jobs,
        batch
    )
    .fetch_all(conn)
    .await?)
}

/// Delete jobs (their oneshot worker rows go with them, by trigger).
pub async fn delete(conn: &mut PgConnection, ids: &[String]) -> Result<u64> {
    let r = sqlx::query!("DELETE FROM jobs WHERE id = ANY($1)", ids).execute(conn).await?;
    Ok(r.rows_affected())
}

/// Those of `ids` that name neither a job nor a workflow run (to find log and attachment
/// directories left without a row), looked up by the unique indexes.
pub async fn without_row(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT d AS "id!" FROM unnest($1::text[]) AS d
            WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = d)
              AND NOT EXISTS (SELECT 1 FROM workflow_runs WHERE id = d)"#,
        ids
    )
    .fetch_all(conn)
    .await?)
}

/// Give dead rows' space back now: a `VACUUM` of the queue's tables, passing over any another
/// session holds. PostgreSQL runs `VACUUM` only outside a transaction: inside one (the caller's
/// `&mut *tx`) this does nothing, and autovacuum gives the space back later by itself.
pub async fn vacuum(conn: &mut PgConnection) -> Result<()> {
    if conn.is_in_transaction() {
        return Ok(());
    }
    // A utility statement with nothing to check, not kept as a prepared statement.
    sqlx::query(
        "VACUUM (SKIP_LOCKED) jobs, job_deps, job_events, workers, worker_sessions, workflow_runs, workflow_steps,
                              finish_hooks, worktrees",
    )
    .persistent(false)
    .execute(conn)
    .await?;
    Ok(())
}

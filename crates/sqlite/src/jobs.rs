//! Statements on the `jobs` and `workers` tables.
//!
//! Every state change is one guarded statement (`... WHERE id = ? AND state = <expected>`):
//! zero rows changed means someone else got there first, which callers handle.

use sqlx::SqliteConnection;

use crate::{Error, Result};
use baton_rows::job::{JobRow, NewJob};
pub use baton_rows::jobs::{ClaimLimits, Inserted, Leader, ListFilter, NewWorker, Outcome};
use baton_rows::state::JobState;
use baton_rows::state::WorkerKind;

/// Insert a job: queued, or waiting when it has dependencies (the schema's triggers then queue
/// or fail it at once if they are already decided). The `jobs_dedup` partial unique index, not a check-then-insert, decides
/// whether a dedup key is taken.
#[tracing::instrument(skip_all, fields(task_id = %job.id), err)]
pub async fn insert(conn: &mut SqliteConnection, job: &NewJob) -> Result<Inserted> {
    let res = sqlx::query_file!(
        "../../queries/jobs/insert.sql",
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
        job.worker_kind,
        job.system_prompt,
        job.permissions,
        job.worktree_id,
        job.labels,
        job.after,
        job.after_any,
    )
    .execute(&mut *conn)
    .await;
    match res {
        Ok(_) => Ok(Inserted::New),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() && job.dedup_key.is_some() => {
            let existing = sqlx::query_scalar!(
                "SELECT id FROM jobs WHERE dedup_key = ?1 AND state IN ('waiting', 'queued', 'running')",
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

/// End a queued job that can never run (`queued -> failed`).
pub async fn fail_queued(conn: &mut SqliteConnection, id: &str, error: &str, now: i64) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE jobs SET state = 'failed', error = ?2, finished_ms = ?3 WHERE id = ?1 AND state = 'queued'",
        id,
        error,
        now
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// `query_as!` into [`JobRow`]: every column listed once, state words decoded as enums. The
/// argument is the rest of the statement after `FROM jobs`.
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
                 after_any AS "after_any: bool"
                 FROM jobs "# $(+ $rest)+
            $(, $arg)*
        )
    };
}

/// One job by exact id.
pub async fn get(conn: &mut SqliteConnection, id: &str) -> Result<Option<JobRow>> {
    Ok(select_jobs!("WHERE id = ?1", id).fetch_optional(conn).await?)
}

/// Several jobs by exact id, in one statement (order not guaranteed).
pub async fn get_many(conn: &mut SqliteConnection, ids: &[String]) -> Result<Vec<JobRow>> {
    let ids = serde_json::to_string(ids)?;
    Ok(select_jobs!("WHERE id IN (SELECT value FROM json_each(?1))", ids).fetch_all(conn).await?)
}

/// The states of several jobs or workflow runs (the awaiter's cheap re-read, one statement). A
/// run's state words are a subset of a job's.
pub async fn states(conn: &mut SqliteConnection, ids: &[String]) -> Result<Vec<(String, JobState)>> {
    let ids = serde_json::to_string(ids)?;
    // UNION ALL columns come back as nullable to sqlx: both sides are NOT NULL columns.
    let rows = sqlx::query!(
        r#"SELECT id AS "id!", state AS "state!: JobState" FROM jobs WHERE id IN (SELECT value FROM json_each(?1))
           UNION ALL
           SELECT id, state FROM workflow_runs WHERE id IN (SELECT value FROM json_each(?1))"#,
        ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.state)).collect())
}

/// Ids starting with `prefix` (at most two: enough to tell unique from ambiguous).
pub async fn ids_with_prefix(conn: &mut SqliteConnection, prefix: &str) -> Result<Vec<String>> {
    // ids are lowercase hex and dashes; callers validate the prefix, so a range scan on the
    // unique index is exact.
    let hi = format!("{prefix}\u{10FFFF}");
    Ok(sqlx::query_scalar!("SELECT id FROM jobs WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 2", prefix, hi)
        .fetch_all(conn)
        .await?)
}

/// Jobs by `f`; `now` is the end of a running job's duration so far.
///
/// One statement per order, so that newest and oldest walk the primary key and stop after
/// `limit` matches instead of sorting every row (a `CASE` in `ORDER BY` forces the full sort).
/// Running jobs are few however deep the queue: they are read by their partial index, which
/// the planner would not choose over the walk (`INDEXED BY`).
pub async fn list(conn: &mut SqliteConnection, f: &ListFilter, now: i64) -> Result<Vec<JobRow>> {
    let labels = serde_json::to_string(&f.labels)?;
    macro_rules! list_by {
        ($from:literal, $($order:literal)+ $(, $extra:expr)*) => {
            select_jobs!(
                $from
                "WHERE (?1 IS NULL OR profile = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR session = ?3)
                   AND (?4 IS NULL OR created_ms >= ?4) AND (?5 IS NULL OR created_ms < ?5)
                   AND (?6 = '[]' OR NOT EXISTS (SELECT 1 FROM json_each(?6) f
                                    WHERE NOT EXISTS (SELECT 1 FROM json_each(jobs.labels) l
                                                       WHERE l.key = f.value ->> 0
                                                         AND (f.value ->> 1 IS NULL OR l.value = f.value ->> 1))))
                 "
                $($order)+,
                f.profile,
                f.state,
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
        ($from:literal, $only:literal) => {
            match f.sort.as_str() {
                "oldest" => list_by!($from, $only "ORDER BY seq ASC LIMIT ?7"),
                "priority" => list_by!($from, $only "ORDER BY priority DESC, seq DESC LIMIT ?7"),
                "duration" => list_by!(
                    $from,
                    $only "ORDER BY coalesce(finished_ms, ?8) - coalesce(started_ms, coalesce(finished_ms, ?8)) DESC, seq DESC LIMIT ?7",
                    now
                ),
                _ => list_by!($from, $only "ORDER BY seq DESC LIMIT ?7"),
            }
        };
    }
    Ok(if f.state == Some(JobState::Running) {
        by_order!("INDEXED BY jobs_running ", "AND state = 'running' ")
    } else {
        by_order!("", "")
    })
}

/// Job counts by state.
pub async fn counts(conn: &mut SqliteConnection) -> Result<Vec<(JobState, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT state AS "state: JobState", count(*) AS "n!: i64" FROM jobs GROUP BY state ORDER BY state"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.state, r.n)).collect())
}

/// Is there any queued or running job? And when is the earliest future run-after?
pub async fn pending(conn: &mut SqliteConnection, now: i64) -> Result<(bool, Option<i64>)> {
    let r = sqlx::query!(
        r#"SELECT (EXISTS (SELECT 1 FROM jobs WHERE state = 'running')
                   OR EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND run_after_ms <= ?1)) AS "busy!: bool",
                  (SELECT min(run_after_ms) FROM jobs WHERE state = 'queued' AND run_after_ms > ?1) AS "next: i64""#,
        now
    )
    .fetch_one(conn)
    .await?;
    Ok((r.busy, r.next))
}

/// Atomically claim up to `batch` runnable jobs: higher priority first, then the session with
/// fewer running jobs, then oldest; jobs whose profile or session is at its limit are skipped
/// (not waited on); the global limits cap the count. The attempt is recorded here, before any
/// spawn. One statement, so two dispatchers can never claim the same job.
///
/// Too dynamic for the checked macros (window functions and a computed LIMIT); checked against
/// a model of these rules on random queues by the `claim` tests.
#[tracing::instrument(skip_all, err)]
pub async fn claim(
    conn: &mut SqliteConnection,
    owner: &str,
    epoch: i64,
    now: i64,
    limits: ClaimLimits,
) -> Result<Vec<JobRow>> {
    const SQL: &str = include_str!("../../../queries/jobs/claim.sql");
    let mut rows: Vec<JobRow> = sqlx::query_as(SQL)
        .bind(owner)
        .bind(epoch)
        .bind(now)
        .bind(limits.max_running)
        .bind(limits.max_workers)
        .bind(limits.max_per_session)
        .bind(limits.batch)
        .fetch_all(conn)
        .await?;
    rows.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.seq.cmp(&b.seq)));
    Ok(rows)
}

/// Record oneshot workers' processes in one statement, while `owner` holds the lease under
/// `epoch` (a leader that was replaced records nothing).
#[tracing::instrument(skip_all, fields(workers = workers.len()), err)]
pub async fn insert_oneshot_workers(
    conn: &mut SqliteConnection,
    workers: &[NewWorker],
    owner: &str,
    epoch: i64,
) -> Result<()> {
    let batch = serde_json::to_string(workers)?;
    sqlx::query!(
        "INSERT INTO workers (id, profile, kind, state, pid, pid_start, pgid, owner, epoch, session, job_id,
                              attempt, model, started_ms, last_activity_ms)
         SELECT w.value ->> 'id', w.value ->> 'profile', 'oneshot', 'busy', w.value ->> 'pid',
                w.value ->> 'pid_start', w.value ->> 'pid', ?2, ?3, w.value ->> 'session',
                w.value ->> 'job_id', w.value ->> 'attempt', w.value ->> 'model',
                w.value ->> 'started_ms', w.value ->> 'started_ms'
           FROM json_each(?1) AS w
          WHERE EXISTS (SELECT 1 FROM dispatcher_lease WHERE singleton = 1 AND owner = ?2 AND epoch = ?3)",
        batch,
        owner,
        epoch
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Write a running job's result, fenced by its owner and epoch. False when the job was not ours
/// any more (recovered by a newer leader, or already terminal): the first terminal state wins.
pub async fn finish(conn: &mut SqliteConnection, o: &Outcome, owner: &str, epoch: i64, now: i64) -> Result<bool> {
    Ok(!finish_many(conn, std::slice::from_ref(o), owner, epoch, now).await?.is_empty())
}

/// Write several running jobs' results in one statement (the dispatcher's grouped
/// completions), each fenced by owner and epoch; returns the ids that were written. A canceled
/// job's error comes from its recorded cancel reason.
#[tracing::instrument(skip_all, fields(jobs = outcomes.len()), err)]
pub async fn finish_many(
    conn: &mut SqliteConnection,
    outcomes: &[Outcome],
    owner: &str,
    epoch: i64,
    now: i64,
) -> Result<Vec<String>> {
    let batch = serde_json::to_string(outcomes)?;
    Ok(sqlx::query_file_scalar!("../../queries/jobs/finish_many.sql", batch, now, owner, epoch).fetch_all(conn).await?)
}

/// A running job whose worker was lost or stopped: back to `queued` after `backoff_ms` while
/// attempts remain, else `failed` with `error`. Fenced by the owner the caller found on the
/// row, and by `by` holding the lease.
#[allow(clippy::too_many_arguments)]
pub async fn requeue_lost(
    conn: &mut SqliteConnection,
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
        "UPDATE jobs SET state = 'queued', owner = NULL, epoch = NULL, run_after_ms = ?4 + ?5, error = ?6
          WHERE id = ?1 AND state = 'running' AND owner = ?2 AND epoch = ?3 AND attempt < max_attempts
            AND cancel_requested_ms IS NULL
            AND EXISTS (SELECT 1 FROM dispatcher_lease WHERE singleton = 1 AND owner = ?7 AND epoch = ?8)",
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
    let r = sqlx::query!(
        "UPDATE jobs SET state = CASE WHEN cancel_requested_ms IS NULL THEN 'failed' ELSE 'canceled' END,
                         finished_ms = ?4,
                         error = CASE WHEN cancel_requested_ms IS NULL THEN ?5
                                      ELSE coalesce('Canceled: ' || cancel_reason, 'Canceled') END
          WHERE id = ?1 AND state = 'running' AND owner = ?2 AND epoch = ?3
            AND EXISTS (SELECT 1 FROM dispatcher_lease WHERE singleton = 1 AND owner = ?6 AND epoch = ?7)",
        id,
        owner,
        epoch,
        now,
        error,
        by.owner,
        by.epoch
    )
    .execute(conn)
    .await?;
    Ok((r.rows_affected() == 1).then_some(JobState::Failed))
}

/// Running jobs not owned by (`owner`, `epoch`): orphans of an earlier leader.
pub async fn orphans(conn: &mut SqliteConnection, owner: &str, epoch: i64) -> Result<Vec<JobRow>> {
    Ok(select_jobs!("WHERE state = 'running' AND NOT (owner = ?1 AND epoch = ?2)", owner, epoch)
        .fetch_all(conn)
        .await?)
}

/// The live worker processes recorded for a job's attempt: (pid, start time).
pub async fn worker_pids(conn: &mut SqliteConnection, job_id: &str, attempt: i64) -> Result<Vec<(i64, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT pid AS "pid!", pid_start AS "pid_start!" FROM workers
            WHERE job_id = ?1 AND attempt = ?2 AND pid IS NOT NULL AND pid_start IS NOT NULL"#,
        job_id,
        attempt
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.pid, r.pid_start)).collect())
}

/// Ask for a job to be canceled. A queued job ends `canceled` at once; a running one gets the
/// request (its owner stops the process group, then writes `canceled`). Returns the state the
/// job is in afterwards, or None when unknown.
pub async fn request_cancel(
    conn: &mut SqliteConnection,
    id: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<Option<JobState>> {
    let error = match reason {
        Some(r) => format!("Canceled: {r}"),
        None => "Canceled".to_string(),
    };
    sqlx::query!(
        "UPDATE jobs SET state = 'canceled', finished_ms = ?2, error = ?3, cancel_requested_ms = ?2, cancel_reason = ?4
          WHERE id = ?1 AND state IN ('waiting', 'queued')",
        id,
        now,
        error,
        reason
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE jobs SET cancel_requested_ms = ?2, cancel_reason = ?3
          WHERE id = ?1 AND state = 'running' AND cancel_requested_ms IS NULL",
        id,
        now,
        reason
    )
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar!(r#"SELECT state AS "state: JobState" FROM jobs WHERE id = ?1"#, id)
        .fetch_optional(conn)
        .await?)
}

/// Finished jobs that pruning may delete now, oldest first, at most `batch`: past `max_age`, or
/// beyond the newest `max_jobs`, and never younger than `min_age`, part of a workflow run, with
/// a worktree still on disk, or needed by a waiting job.
pub async fn prunable(
    conn: &mut SqliteConnection,
    now: i64,
    max_age_ms: i64,
    min_age_ms: i64,
    max_jobs: i64,
    batch: i64,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM jobs
          WHERE finished_ms IS NOT NULL AND finished_ms <= ?1 - ?3 AND workflow_run_id IS NULL
            AND (worktree_id IS NULL OR worktree_id IN (SELECT id FROM worktrees WHERE state = 'discarded'))
            AND NOT EXISTS (SELECT 1 FROM job_deps d JOIN jobs w ON w.id = d.job_id
                             WHERE d.dep_id = jobs.id AND w.state = 'waiting')
            AND (finished_ms < ?1 - ?2
                 OR seq NOT IN (SELECT seq FROM jobs WHERE finished_ms IS NOT NULL
                                 ORDER BY finished_ms DESC, seq DESC LIMIT ?4))
          ORDER BY finished_ms, seq
          LIMIT ?5",
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
pub async fn delete(conn: &mut SqliteConnection, ids: &[String]) -> Result<u64> {
    let ids = serde_json::to_string(ids)?;
    let r = sqlx::query!("DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?1))", ids).execute(conn).await?;
    Ok(r.rows_affected())
}

/// Those of `ids` that name neither a job nor a workflow run (to find log and attachment
/// directories left without a row); looked up by the unique indexes, so a large queue is not read.
pub async fn without_row(conn: &mut SqliteConnection, ids: &[String]) -> Result<Vec<String>> {
    let ids = serde_json::to_string(ids)?;
    Ok(sqlx::query_scalar!(
        r#"SELECT CAST(d.value AS TEXT) AS "id!: String" FROM json_each(?1) d
            WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = d.value)
              AND NOT EXISTS (SELECT 1 FROM workflow_runs WHERE id = d.value)"#,
        ids
    )
    .fetch_all(conn)
    .await?)
}

/// Give free pages back and fold the WAL into the file.
pub async fn vacuum(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query("PRAGMA incremental_vacuum").execute(&mut *conn).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(conn).await?;
    Ok(())
}

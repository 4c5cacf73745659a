//! Statements on workers' rows: reading them, server workers' lifecycle and stop requests
//! (oneshot rows are written with their jobs in `jobs`). A node owns the workers it started;
//! each write of its own is fenced by its id and epoch.

use sqlx::PgConnection;

use crate::Result;
use baton_rows::state::{WorkerKind, WorkerState};
pub use baton_rows::workers::{NewServer, Registered, ServerRow, SpawnLimits, WorkerRow};

/// Register a server worker before its process exists: one statement, after the claim lock (so
/// the limits hold across nodes), that inserts the `starting` row only within the limits and
/// while the node holds its epoch; the unique partial index `workers_one_server` refuses a
/// second live server worker of the profile on this node. The spawn rate is per node. When
/// nothing was inserted, a read says why.
pub async fn register(conn: &mut PgConnection, w: &NewServer<'_>, lim: SpawnLimits) -> Result<Registered> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", crate::CLAIM_LOCK).execute(&mut *tx).await?;
    let inserted = {
        // A unique violation aborts the transaction: try inside a savepoint.
        let mut sp = sqlx::Connection::begin(&mut *tx).await?;
        let r = sqlx::query!(
            "INSERT INTO workers (id, profile, kind, state, owner, epoch, session, model, started_ms, last_activity_ms,
                                  max_sessions)
             SELECT $1, $2, 'server', 'starting', $3, $4, $5, $6, $7, $7, $11
              WHERE EXISTS (SELECT 1 FROM nodes WHERE id = $3 AND epoch = $4 AND stopped_ms IS NULL)
                AND (SELECT count(*) FROM workers WHERE state IN ('starting', 'ready', 'busy')) < $8
                AND ($5::text IS NULL OR (SELECT count(*) FROM workers
                                           WHERE session = $5 AND state IN ('starting', 'ready', 'busy')) < $9)
                AND coalesce((SELECT max(started_ms) FROM workers WHERE kind = 'server' AND owner = $3), 0)
                    <= $7::bigint - $10::bigint",
            w.id,
            w.profile,
            w.owner,
            w.epoch,
            w.session,
            w.model,
            w.now,
            lim.max_workers,
            lim.max_per_session,
            lim.rate_ms,
            w.max_sessions
        )
        .execute(&mut *sp)
        .await;
        match r {
            Ok(r) => {
                sp.commit().await?;
                Ok(r.rows_affected())
            }
            Err(e) => {
                sp.rollback().await?;
                Err(e)
            }
        }
    };
    match inserted {
        Ok(1) => {
            tx.commit().await?;
            return Ok(Registered::New);
        }
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(Registered::Exists),
        Err(e) => return Err(e.into()),
    }
    let why = sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM nodes WHERE id = $1 AND epoch = $2 AND stopped_ms IS NULL) AS "leader!: bool",
                  (SELECT count(*) FROM workers WHERE state IN ('starting', 'ready', 'busy')) AS "live!: i64",
                  (SELECT count(*) FROM workers
                    WHERE session = $3 AND state IN ('starting', 'ready', 'busy')) AS "session_live!: i64",
                  (SELECT max(started_ms) FROM workers WHERE kind = 'server' AND owner = $1) AS "last: i64""#,
        w.owner,
        w.epoch,
        w.session
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(if !why.leader {
        Registered::NotLeader
    } else if why.live >= lim.max_workers {
        Registered::WorkerLimit
    } else if w.session.is_some() && why.session_live >= lim.max_per_session {
        Registered::SessionLimit
    } else {
        // Only the rate limit is left (or a row that ended since: try again at once).
        Registered::RateLimited((why.last.unwrap_or(0) + lim.rate_ms - w.now).max(0))
    })
}

/// Record the spawned process of a `starting` server worker. False: the row is no longer ours
/// or no longer starting (stopped meanwhile): the process must not live on unregistered.
pub async fn spawned(
    conn: &mut PgConnection,
    id: &str,
    pid: i64,
    pid_start: i64,
    owner: &str,
    epoch: i64,
) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE workers SET pid = $2, pid_start = $3, pgid = $2
          WHERE id = $1 AND state = 'starting' AND owner = $4 AND epoch = $5
            AND EXISTS (SELECT 1 FROM nodes WHERE id = $4 AND epoch = $5 AND stopped_ms IS NULL)",
        id,
        pid,
        pid_start,
        owner,
        epoch
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// `starting -> ready` once the worker said it is ready.
pub async fn ready(conn: &mut PgConnection, id: &str, owner: &str, epoch: i64, now: i64) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE workers SET state = 'ready', last_activity_ms = $4
          WHERE id = $1 AND state = 'starting' AND owner = $2 AND epoch = $3
            AND EXISTS (SELECT 1 FROM nodes WHERE id = $2 AND epoch = $3 AND stopped_ms IS NULL)",
        id,
        owner,
        epoch,
        now
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// A server worker takes a job's running attempt in the agent's session `acp_session` (a row
/// of `worker_sessions`; the schema's trigger makes it busy, and the job's end gives the
/// session back). False: the worker is no longer live and ours, or asked to stop.
#[allow(clippy::too_many_arguments)]
pub async fn take_session(
    conn: &mut PgConnection,
    id: &str,
    job_id: &str,
    attempt: i64,
    acp_session: &str,
    owner: &str,
    epoch: i64,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query!(
        "INSERT INTO worker_sessions (job_id, attempt, worker_id, acp_session, started_ms)
         SELECT $2, $3, $1, $4, $7
          WHERE EXISTS (SELECT 1 FROM workers
                         WHERE id = $1 AND state IN ('ready', 'busy') AND stop_requested_ms IS NULL
                           AND owner = $5 AND epoch = $6)
            AND EXISTS (SELECT 1 FROM nodes WHERE id = $5 AND epoch = $6 AND stopped_ms IS NULL)",
        id,
        job_id,
        attempt,
        acp_session,
        owner,
        epoch,
        now
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// End a live server worker's row: `stopped` (baton stopped it) or `error` (it died, broke the
/// protocol, or was lost), with its exit code and reason. False: it had ended already.
pub async fn end(
    conn: &mut PgConnection,
    id: &str,
    state: WorkerState,
    exit_code: Option<i64>,
    error: Option<&str>,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE workers SET state = $2, exit_code = $3, error = $4, finished_ms = $5, last_activity_ms = $5
          WHERE id = $1 AND state IN ('starting', 'ready', 'busy')",
        id,
        state.as_str(),
        exit_code,
        error,
        now
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// `query_as!` into [`WorkerRow`], state words decoded as enums; the argument is the rest of
/// the statement after `FROM workers`.
macro_rules! select_workers {
    ($rest:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            WorkerRow,
            r#"SELECT id, profile, kind AS "kind: WorkerKind", state AS "state: WorkerState", pid,
                      coalesce(job_id, (SELECT s.job_id FROM worker_sessions s WHERE s.worker_id = workers.id
                                         ORDER BY s.started_ms, s.job_id LIMIT 1)) AS "job_id: String",
                      CASE WHEN job_id IS NOT NULL THEN jsonb_build_array(job_id)::text
                           ELSE (SELECT coalesce(jsonb_agg(s.job_id ORDER BY s.started_ms, s.job_id), '[]')::text
                                   FROM worker_sessions s WHERE s.worker_id = workers.id) END AS "job_ids!: String",
                      max_sessions, model, session, started_ms, last_activity_ms
                 FROM workers "# + $rest
            $(, $arg)*
        )
    };
}

/// Every live worker, newest first.
pub async fn live_workers(conn: &mut PgConnection) -> Result<Vec<WorkerRow>> {
    Ok(select_workers!("WHERE state IN ('starting', 'ready', 'busy') ORDER BY seq DESC").fetch_all(conn).await?)
}

/// Live server workers whose node no longer holds the epoch they were started under (but
/// ours): their processes lost their dispatcher and its pipes. Other live nodes' are theirs.
pub async fn stale(conn: &mut PgConnection, owner: &str, epoch: i64) -> Result<Vec<ServerRow>> {
    Ok(sqlx::query_as!(
        ServerRow,
        "SELECT id, profile, pid, pid_start FROM workers
          WHERE kind = 'server' AND state IN ('starting', 'ready', 'busy') AND NOT (owner = $1 AND epoch = $2)
            AND NOT EXISTS (SELECT 1 FROM nodes n
                             WHERE n.id = workers.owner AND n.epoch = workers.epoch AND n.stopped_ms IS NULL)",
        owner,
        epoch
    )
    .fetch_all(conn)
    .await?)
}

/// The live server workers of a profile (at most one per node, by the unique index).
pub async fn live_servers(conn: &mut PgConnection, profile: &str) -> Result<Vec<ServerRow>> {
    Ok(sqlx::query_as!(
        ServerRow,
        "SELECT id, profile, pid, pid_start FROM workers
          WHERE kind = 'server' AND state IN ('starting', 'ready', 'busy') AND profile = $1",
        profile
    )
    .fetch_all(conn)
    .await?)
}

/// Ask the owner of live workers to stop them.
pub async fn request_stop(conn: &mut PgConnection, ids: &[String], now: i64) -> Result<()> {
    sqlx::query!(
        "UPDATE workers SET stop_requested_ms = $2
          WHERE id = ANY($1) AND state IN ('starting', 'ready', 'busy') AND stop_requested_ms IS NULL",
        ids,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What the node was asked, in one read: its running jobs with a cancel request, and its live
/// server workers with a stop request: (job ids, (worker id, profile)).
pub async fn owner_requests(
    conn: &mut PgConnection,
    owner: &str,
    epoch: i64,
) -> Result<(Vec<String>, Vec<(String, String)>)> {
    let rows = sqlx::query!(
        r#"SELECT 'job' AS "what!: String", id AS "id!: String", profile AS "profile!: String" FROM jobs
            WHERE state = 'running' AND owner = $1 AND epoch = $2 AND cancel_requested_ms IS NOT NULL
           UNION ALL
           SELECT 'worker', id, profile FROM workers
            WHERE kind = 'server' AND state IN ('starting', 'ready', 'busy') AND stop_requested_ms IS NOT NULL
              AND owner = $1 AND epoch = $2"#,
        owner,
        epoch
    )
    .fetch_all(conn)
    .await?;
    let (jobs, workers): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.what == "job");
    Ok((jobs.into_iter().map(|r| r.id).collect(), workers.into_iter().map(|r| (r.id, r.profile)).collect()))
}

/// Live server workers (with their process) by id: for a stop with no dispatcher alive.
pub async fn servers(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<ServerRow>> {
    Ok(sqlx::query_as!(
        ServerRow,
        "SELECT id, profile, pid, pid_start FROM workers
          WHERE kind = 'server' AND state IN ('starting', 'ready', 'busy') AND id = ANY($1)",
        ids
    )
    .fetch_all(conn)
    .await?)
}

/// Workers by id, any state.
pub async fn get_many(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<WorkerRow>> {
    Ok(select_workers!("WHERE id = ANY($1) ORDER BY seq", ids).fetch_all(conn).await?)
}

/// How many of these workers are still live.
pub async fn count_live(conn: &mut PgConnection, ids: &[String]) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!: i64" FROM workers WHERE state IN ('starting', 'ready', 'busy') AND id = ANY($1)"#,
        ids
    )
    .fetch_one(conn)
    .await?)
}

/// Delete ended server workers' rows that ended before `before` (oneshot rows go with their
/// jobs); returns their ids.
pub async fn prune_ended(conn: &mut PgConnection, before: i64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        "DELETE FROM workers
          WHERE kind = 'server' AND state IN ('error', 'stopped') AND finished_ms < $1
            AND NOT EXISTS (SELECT 1 FROM worker_sessions s WHERE s.worker_id = workers.id)
         RETURNING id",
        before
    )
    .fetch_all(conn)
    .await?)
}

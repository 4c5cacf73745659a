//! Statements on workers' rows: reading them, server workers' lifecycle and stop requests
//! (oneshot rows are written with their jobs in `store::jobs`).

use sqlx::SqliteConnection;

use crate::Result;
use baton_rows::state::{WorkerKind, WorkerState};
pub use baton_rows::workers::{NewServer, Registered, ServerRow, SpawnLimits, WorkerRow};

/// Register a server worker before its process exists: one statement that inserts the
/// `starting` row only within the limits and under our lease; the unique partial index
/// `workers_one_server` refuses a second live server worker of the profile. When nothing was
/// inserted, a read says why.
#[tracing::instrument(skip_all, fields(profile = %w.profile), err)]
pub async fn register(conn: &mut SqliteConnection, w: &NewServer<'_>, lim: SpawnLimits) -> Result<Registered> {
    let inserted = sqlx::query!(
        "INSERT INTO workers (id, profile, kind, state, owner, epoch, session, model, started_ms, last_activity_ms,
                              max_sessions)
         SELECT ?1, ?2, 'server', 'starting', ?3, ?4, ?5, ?6, ?7, ?7, ?11
          WHERE EXISTS (SELECT 1 FROM dispatcher_lease WHERE owner = ?3 AND epoch = ?4)
            AND (SELECT count(*) FROM workers WHERE state IN ('starting', 'ready', 'busy')) < ?8
            AND (?5 IS NULL OR (SELECT count(*) FROM workers
                                 WHERE session = ?5 AND state IN ('starting', 'ready', 'busy')) < ?9)
            AND coalesce((SELECT max(started_ms) FROM workers WHERE kind = 'server'), 0) <= ?7 - ?10",
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
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(r) if r.rows_affected() == 1 => return Ok(Registered::New),
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(Registered::Exists),
        Err(e) => return Err(e.into()),
    }
    let why = sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM dispatcher_lease WHERE owner = ?1 AND epoch = ?2) AS "leader!: bool",
                  (SELECT count(*) FROM workers WHERE state IN ('starting', 'ready', 'busy')) AS "live!: i64",
                  (SELECT count(*) FROM workers
                    WHERE session = ?3 AND state IN ('starting', 'ready', 'busy')) AS "session_live!: i64",
                  (SELECT max(started_ms) FROM workers WHERE kind = 'server') AS "last: i64""#,
        w.owner,
        w.epoch,
        w.session
    )
    .fetch_one(&mut *conn)
    .await?;
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
    conn: &mut SqliteConnection,
    id: &str,
    pid: i64,
    pid_start: i64,
    owner: &str,
    epoch: i64,
) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE workers SET pid = ?2, pid_start = ?3, pgid = ?2
          WHERE id = ?1 AND state = 'starting' AND owner = ?4 AND epoch = ?5",
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
pub async fn ready(conn: &mut SqliteConnection, id: &str, owner: &str, epoch: i64, now: i64) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE workers SET state = 'ready', last_activity_ms = ?4
          WHERE id = ?1 AND state = 'starting' AND owner = ?2 AND epoch = ?3",
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
/// of `worker_sessions`; the trigger `worker_sessions_take` makes it busy, and the job's end
/// gives the session back). False: the worker is no longer live and ours, or asked to stop.
#[allow(clippy::too_many_arguments)]
pub async fn take_session(
    conn: &mut SqliteConnection,
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
         SELECT ?2, ?3, ?1, ?4, ?7
          WHERE EXISTS (SELECT 1 FROM workers
                         WHERE id = ?1 AND state IN ('ready', 'busy') AND stop_requested_ms IS NULL
                           AND owner = ?5 AND epoch = ?6)",
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
    conn: &mut SqliteConnection,
    id: &str,
    state: WorkerState,
    exit_code: Option<i64>,
    error: Option<&str>,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE workers SET state = ?2, exit_code = ?3, error = ?4, finished_ms = ?5, last_activity_ms = ?5
          WHERE id = ?1 AND state IN ('starting', 'ready', 'busy')",
        id,
        state,
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
                      CASE WHEN job_id IS NOT NULL THEN json_array(job_id)
                           ELSE (SELECT json_group_array(job_id) FROM
                                   (SELECT s.job_id FROM worker_sessions s WHERE s.worker_id = workers.id
                                     ORDER BY s.started_ms, s.job_id)) END AS "job_ids!: String",
                      max_sessions, model, session, started_ms, last_activity_ms
                 FROM workers "# + $rest
            $(, $arg)*
        )
    };
}

pub async fn live_workers(conn: &mut SqliteConnection) -> Result<Vec<WorkerRow>> {
    Ok(select_workers!("WHERE state IN ('starting', 'ready', 'busy') ORDER BY seq DESC").fetch_all(conn).await?)
}

/// Live server workers of an earlier leader (any owner or epoch but ours): their processes
/// lost their dispatcher and its pipes.
pub async fn stale(conn: &mut SqliteConnection, owner: &str, epoch: i64) -> Result<Vec<ServerRow>> {
    Ok(sqlx::query_as!(
        ServerRow,
        "SELECT id, profile, pid, pid_start FROM workers
          WHERE kind = 'server' AND state IN ('starting', 'ready', 'busy') AND NOT (owner = ?1 AND epoch = ?2)",
        owner,
        epoch
    )
    .fetch_all(conn)
    .await?)
}

/// The live server workers of a profile (at most one, by the unique index).
pub async fn live_servers(conn: &mut SqliteConnection, profile: &str) -> Result<Vec<ServerRow>> {
    Ok(sqlx::query_as!(
        ServerRow,
        "SELECT id, profile, pid, pid_start FROM workers
          WHERE kind = 'server' AND state IN ('starting', 'ready', 'busy') AND profile = ?1",
        profile
    )
    .fetch_all(conn)
    .await?)
}

/// Ask the owner of live workers to stop them.
pub async fn request_stop(conn: &mut SqliteConnection, ids: &[String], now: i64) -> Result<()> {
    let ids = serde_json::to_string(ids)?;
    sqlx::query!(
        "UPDATE workers SET stop_requested_ms = ?2
          WHERE id IN (SELECT value FROM json_each(?1)) AND state IN ('starting', 'ready', 'busy')
            AND stop_requested_ms IS NULL",
        ids,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What the owner was asked, in one read: our running jobs with a cancel request, and our live
/// server workers with a stop request: (job ids, (worker id, profile)).
pub async fn owner_requests(
    conn: &mut SqliteConnection,
    owner: &str,
    epoch: i64,
) -> Result<(Vec<String>, Vec<(String, String)>)> {
    let rows = sqlx::query!(
        r#"SELECT 'job' AS "what!: String", id AS "id!: String", profile AS "profile!: String" FROM jobs
            WHERE state = 'running' AND owner = ?1 AND epoch = ?2 AND cancel_requested_ms IS NOT NULL
           UNION ALL
           SELECT 'worker', id, profile FROM workers
            WHERE kind = 'server' AND state IN ('starting', 'ready', 'busy') AND stop_requested_ms IS NOT NULL
              AND owner = ?1 AND epoch = ?2"#,
        owner,
        epoch
    )
    .fetch_all(conn)
    .await?;
    let (jobs, workers): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.what == "job");
    Ok((jobs.into_iter().map(|r| r.id).collect(), workers.into_iter().map(|r| (r.id, r.profile)).collect()))
}

/// Live server workers (with their process) by id: for a stop with no dispatcher alive.
pub async fn servers(conn: &mut SqliteConnection, ids: &[String]) -> Result<Vec<ServerRow>> {
    let ids = serde_json::to_string(ids)?;
    Ok(sqlx::query_as!(
        ServerRow,
        "SELECT id, profile, pid, pid_start FROM workers
          WHERE kind = 'server' AND state IN ('starting', 'ready', 'busy') AND id IN (SELECT value FROM json_each(?1))",
        ids
    )
    .fetch_all(conn)
    .await?)
}

/// Workers by id, any state.
pub async fn get_many(conn: &mut SqliteConnection, ids: &[String]) -> Result<Vec<WorkerRow>> {
    let ids = serde_json::to_string(ids)?;
    Ok(select_workers!("WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY seq", ids).fetch_all(conn).await?)
}

/// How many of these workers are still live.
pub async fn count_live(conn: &mut SqliteConnection, ids: &[String]) -> Result<i64> {
    let ids = serde_json::to_string(ids)?;
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!: i64" FROM workers
            WHERE state IN ('starting', 'ready', 'busy') AND id IN (SELECT value FROM json_each(?1))"#,
        ids
    )
    .fetch_one(conn)
    .await?)
}

/// Delete ended server workers' rows that ended before `before` (oneshot rows go with their
/// jobs); returns their ids.
pub async fn prune_ended(conn: &mut SqliteConnection, before: i64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar!(
        "DELETE FROM workers
          WHERE kind = 'server' AND state IN ('error', 'stopped') AND finished_ms < ?1
            AND NOT EXISTS (SELECT 1 FROM worker_sessions s WHERE s.worker_id = workers.id)
         RETURNING id",
        before
    )
    .fetch_all(conn)
    .await?)
}

//! Nodes: the dispatchers sharing a queue, each with its epoch and heartbeat.

use sqlx::PgConnection;

use crate::Result;
use baton_rows::lease::Lease;

/// Register node `id` for the process `owner` (or take it back after a restart), at the next
/// epoch; returns that epoch. From then on the node's earlier process writes nothing.
pub async fn register(conn: &mut PgConnection, id: &str, owner: &str, host: &str, pid: i64, now: i64) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        "INSERT INTO nodes (id, epoch, owner, host, pid, started_ms, heartbeat_ms)
         VALUES ($1, 1, $2, $3, $4, $5, $5)
         ON CONFLICT (id) DO UPDATE
            SET epoch = nodes.epoch + 1, owner = excluded.owner, host = excluded.host, pid = excluded.pid,
                started_ms = excluded.started_ms, heartbeat_ms = excluded.heartbeat_ms, stopped_ms = NULL
         RETURNING epoch",
        id,
        owner,
        host,
        pid,
        now
    )
    .fetch_one(conn)
    .await?)
}

/// Renew the node's heartbeat; false when it no longer holds `epoch` (it was taken over): it
/// must stop its workers and write nothing more.
pub async fn heartbeat(conn: &mut PgConnection, id: &str, epoch: i64, now: i64) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE nodes SET heartbeat_ms = greatest(heartbeat_ms, $3)
          WHERE id = $1 AND epoch = $2 AND stopped_ms IS NULL",
        id,
        epoch,
        now
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Take over every node (but `by`) whose heartbeat is older than `stale_before`: its epoch is
/// raised and it is marked stopped, so nothing its process still writes lands. Only while `by`
/// itself holds `epoch` (a node taken over takes over no one). Returns the nodes taken over
/// with their new epochs; their running jobs are then recovered by `by`.
pub async fn take_over_stale(
    conn: &mut PgConnection,
    by: &str,
    epoch: i64,
    stale_before: i64,
    now: i64,
) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        "UPDATE nodes SET epoch = epoch + 1, stopped_ms = $3
          WHERE id <> $1 AND stopped_ms IS NULL AND heartbeat_ms < $2
            AND EXISTS (SELECT 1 FROM nodes me WHERE me.id = $1 AND me.epoch = $4 AND me.stopped_ms IS NULL)
         RETURNING id, epoch",
        by,
        stale_before,
        now,
        epoch
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.epoch)).collect())
}

/// A node as stored.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub id: String,
    pub epoch: i64,
    pub owner: String,
    pub host: String,
    pub pid: i64,
    pub labels: Option<String>,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    pub stopped_ms: Option<i64>,
}

/// Node `id`'s row as a lease (its owner named by the node id), unless it stopped.
pub async fn get(conn: &mut PgConnection, id: &str) -> Result<Option<Lease>> {
    Ok(sqlx::query_as!(
        Lease,
        "SELECT id AS owner, epoch, pid, started_ms, heartbeat_ms FROM nodes WHERE id = $1 AND stopped_ms IS NULL",
        id
    )
    .fetch_optional(conn)
    .await?)
}

/// Register node `id` for `owner` at the next epoch, but only if its heartbeat is older than
/// `stale_before` (its process is paused or gone) or it stopped; returns the new epoch.
#[allow(clippy::too_many_arguments)]
pub async fn take_back_stale(
    conn: &mut PgConnection,
    id: &str,
    owner: &str,
    host: &str,
    pid: i64,
    now: i64,
    stale_before: i64,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        "UPDATE nodes SET epoch = epoch + 1, owner = $2, host = $3, pid = $4, started_ms = $5, heartbeat_ms = $5,
                          stopped_ms = NULL
          WHERE id = $1 AND (heartbeat_ms < $6 OR stopped_ms IS NOT NULL)
         RETURNING epoch",
        id,
        owner,
        host,
        pid,
        now,
        stale_before
    )
    .fetch_optional(conn)
    .await?)
}

/// A clean exit: node `id` stops at `epoch` (its jobs were drained), so no one waits for its
/// heartbeat to go stale. False when it no longer held that epoch.
pub async fn stop(conn: &mut PgConnection, id: &str, epoch: i64, now: i64) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE nodes SET stopped_ms = $3 WHERE id = $1 AND epoch = $2 AND stopped_ms IS NULL",
        id,
        epoch,
        now
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Nodes running and heart-beating since `stale_before`, by id.
pub async fn live(conn: &mut PgConnection, stale_before: i64) -> Result<Vec<NodeRow>> {
    Ok(sqlx::query_as!(
        NodeRow,
        "SELECT id, epoch, owner, host, pid, labels, started_ms, heartbeat_ms, stopped_ms FROM nodes
          WHERE stopped_ms IS NULL AND heartbeat_ms >= $1 ORDER BY id",
        stale_before
    )
    .fetch_all(conn)
    .await?)
}

/// The database server's clock, in milliseconds since the Unix epoch: the one clock every node
/// shares, against which each checks its own (heartbeats are written and judged by the nodes'
/// clocks).
pub async fn server_clock(conn: &mut PgConnection) -> Result<i64> {
    Ok(sqlx::query_scalar!(r#"SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS "ms!""#)
        .fetch_one(conn)
        .await?)
}

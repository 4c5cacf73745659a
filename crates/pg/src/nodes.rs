//! Nodes: the dispatchers sharing a queue, each with its epoch and heartbeat.

use sqlx::PgConnection;

/// Register node `id` for the process `owner` (or take it back after a restart), at the next
/// epoch; returns that epoch. From then on the node's earlier process writes nothing.
pub async fn register(
    conn: &mut PgConnection,
    id: &str,
    owner: &str,
    host: &str,
    pid: i64,
    now: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
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
    .await
}

/// Renew the node's heartbeat; false when it no longer holds `epoch` (it was taken over): it
/// must stop its workers and write nothing more.
pub async fn heartbeat(conn: &mut PgConnection, id: &str, epoch: i64, now: i64) -> sqlx::Result<bool> {
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
/// raised and it is marked stopped, so nothing its process still writes lands. Returns the
/// nodes taken over with their new epochs; their running jobs are then recovered by `by`.
pub async fn take_over_stale(
    conn: &mut PgConnection,
    by: &str,
    stale_before: i64,
    now: i64,
) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query!(
        "UPDATE nodes SET epoch = epoch + 1, stopped_ms = $3
          WHERE id <> $1 AND stopped_ms IS NULL AND heartbeat_ms < $2
         RETURNING id, epoch",
        by,
        stale_before,
        now
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.epoch)).collect())
}

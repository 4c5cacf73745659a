//! The dispatcher lease row: who leads the queue, under which epoch.

use sqlx::SqliteConnection;

use crate::Result;
pub use baton_rows::lease::Lease;

/// Take the lease for `owner` (the caller holds the dispatcher lock) and return the new epoch,
/// one above any before it. The row is inserted once, the first time, and only updated after
/// (the schema refuses a second insert, so `REPLACE` cannot move the epoch back).
#[tracing::instrument(skip_all, fields(owner = %owner), err)]
pub async fn acquire(conn: &mut SqliteConnection, owner: &str, pid: i64, now: i64) -> Result<i64> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query!(
        "INSERT INTO dispatcher_lease (singleton, owner, epoch, pid, started_ms, heartbeat_ms)
         SELECT 1, ?1, 0, ?2, ?3, ?3 WHERE NOT EXISTS (SELECT 1 FROM dispatcher_lease)",
        owner,
        pid,
        now
    )
    .execute(&mut *tx)
    .await?;
    let epoch = sqlx::query_scalar!(
        r#"UPDATE dispatcher_lease
              SET owner = ?1, epoch = epoch + 1, pid = ?2, started_ms = ?3, heartbeat_ms = ?3
            WHERE singleton = 1
        RETURNING epoch AS "epoch!: i64""#,
        owner,
        pid,
        now
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(epoch)
}

/// Take the lease from a leader whose heartbeat is older than `stale_before` (it is paused or
/// hung: it still holds the dispatcher lock, so the lock cannot tell). The epoch bump fences
/// everything it might still try to write. `None`: the lease is fresh (or was just taken).
#[tracing::instrument(skip_all, fields(owner = %owner), err)]
pub async fn take_over_stale(
    conn: &mut SqliteConnection,
    owner: &str,
    pid: i64,
    now: i64,
    stale_before: i64,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar!(
        r#"UPDATE dispatcher_lease
              SET owner = ?1, epoch = epoch + 1, pid = ?2, started_ms = ?3, heartbeat_ms = ?3
            WHERE singleton = 1 AND heartbeat_ms < ?4
        RETURNING epoch AS "epoch!: i64""#,
        owner,
        pid,
        now,
        stale_before
    )
    .fetch_optional(conn)
    .await?)
}

/// Renew the lease; false when it is no longer ours (fenced by owner and epoch).
pub async fn renew(conn: &mut SqliteConnection, owner: &str, epoch: i64, now: i64) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE dispatcher_lease SET heartbeat_ms = ?3 WHERE singleton = 1 AND owner = ?1 AND epoch = ?2",
        owner,
        epoch,
        now
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The current lease, if any dispatcher ever ran.
pub async fn get(conn: &mut SqliteConnection) -> Result<Option<Lease>> {
    Ok(sqlx::query_as!(
        Lease,
        "SELECT owner, epoch, pid, started_ms, heartbeat_ms FROM dispatcher_lease WHERE singleton = 1"
    )
    .fetch_optional(conn)
    .await?)
}

/// The schema version as the file says now (a newer baton may migrate under a running leader).
pub async fn schema_version(conn: &mut SqliteConnection) -> Result<i64> {
    Ok(sqlx::query_scalar("PRAGMA user_version").fetch_one(conn).await?)
}

/// `PRAGMA data_version`: changes when another connection commits.
pub async fn data_version(conn: &mut SqliteConnection) -> Result<i64> {
    Ok(sqlx::query_scalar("PRAGMA data_version").fetch_one(conn).await?)
}

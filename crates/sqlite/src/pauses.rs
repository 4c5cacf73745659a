//! Pauses: while a row names a profile (or `*`, every profile) the claim takes none of its jobs.

use sqlx::SqliteConnection;

use crate::Result;
pub use baton_rows::pauses::{ALL, PauseRow};

/// Pause `profile` (or [`ALL`]); pausing what is paused keeps the first pause. True when new.
pub async fn pause(conn: &mut SqliteConnection, profile: &str, by: &str, now: i64) -> Result<bool> {
    let r = sqlx::query!(
        "INSERT INTO pauses (profile, paused_ms, paused_by) VALUES (?1, ?2, ?3) ON CONFLICT (profile) DO NOTHING",
        profile,
        now,
        by
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Lift the pause of `profile`, or every pause for None. How many were lifted.
pub async fn resume(conn: &mut SqliteConnection, profile: Option<&str>) -> Result<u64> {
    let r = sqlx::query!("DELETE FROM pauses WHERE ?1 IS NULL OR profile = ?1", profile).execute(conn).await?;
    Ok(r.rows_affected())
}

/// Every pause, oldest first.
pub async fn all(conn: &mut SqliteConnection) -> Result<Vec<PauseRow>> {
    Ok(sqlx::query_as!(PauseRow, "SELECT profile, paused_ms, paused_by FROM pauses ORDER BY paused_ms, profile")
        .fetch_all(conn)
        .await?)
}

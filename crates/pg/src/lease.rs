//! The schema's own record (each node's lease is its row in `nodes`, see `nodes`).

use sqlx::PgConnection;

use crate::Result;

/// The schema version as the database says now (a newer baton may migrate under running nodes).
pub async fn schema_version(conn: &mut PgConnection) -> Result<i64> {
    Ok(sqlx::query_scalar!("SELECT version FROM baton_schema WHERE singleton = 1").fetch_one(conn).await?)
}

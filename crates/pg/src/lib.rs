//! baton's queue on PostgreSQL: the schema's migrations (`migrations/postgres/`) and the
//! statements, each checked against PostgreSQL by sqlx (this crate's `.sqlx/`). A crate of its
//! own because sqlx checks one crate's queries against one database; the rows are
//! `baton-rows`', the same the SQLite store reads and writes.
//!
//! Every write a node makes is fenced by the node's id and epoch in `nodes` (see the schema):
//! a node that was taken over writes nothing.

pub mod events;
pub mod hooks;
pub mod jobs;
pub mod lease;
pub mod nodes;
pub mod pauses;
pub mod transfer;
pub mod workers;
pub mod workflow;
pub mod worktrees;

/// What a statement can fail with (the same as the SQLite store's statements).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Bad input, in words for the user.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The schema, embedded.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The advisory lock every claim takes first, so claims from all nodes take turns and each
/// counts what the others committed (0x4241544E, 'BATN').
pub const CLAIM_LOCK: i64 = 0x4241_544E;

/// The sqlx this crate is built with (its PostgreSQL pool and listener types, for callers).
pub use sqlx;

/// A pool on the queue at `url`, its schema migrated.
pub async fn open(url: &str) -> sqlx::Result<sqlx::PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(url).await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

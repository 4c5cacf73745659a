//! baton's queue file: every statement the SQLite store runs, each checked against SQLite by
//! sqlx (this crate's `.sqlx/`). A crate of its own because sqlx checks one crate's queries
//! against one database (the PostgreSQL statements are `baton-pg`'s); the rows are
//! `baton-rows`'. Opening the file, its identity, migrations and connection settings stay with
//! the main crate's `store`, which re-exports these modules.

pub mod events;
pub mod hooks;
pub mod jobs;
pub mod lease;
pub mod pauses;
pub mod transfer;
pub mod workers;
pub mod workflow;
pub mod worktrees;

/// What a statement can fail with.
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

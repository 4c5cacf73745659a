//! baton's rows and state words: what its two stores (the SQLite file and PostgreSQL) read
//! and write. They live in a crate of their own because sqlx checks a crate's queries against
//! one database, so each backend's statements sit in a crate of their own over these types.

pub mod events;
pub mod hooks;
pub mod job;
pub mod jobs;
pub mod lease;
pub mod pauses;
pub mod state;
pub mod transfer;
pub mod workers;
pub mod workflow;
pub mod worktrees;

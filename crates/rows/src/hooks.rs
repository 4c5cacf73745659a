//! The finish hook's outbox rows.

/// Attempts at one hook: a dispatcher that dies while it runs leaves it to the next, this often.
pub const MAX_ATTEMPTS: i64 = 3;

/// A hook not run yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub task_id: String,
    pub attempts: i64,
}

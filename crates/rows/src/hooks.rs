//! The finish hook's outbox rows.

/// A hook not run yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub task_id: String,
    pub attempts: i64,
}

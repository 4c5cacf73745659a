//! Pauses.

/// Every profile, as a pause row names it.
pub const ALL: &str = "*";

/// A pause as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseRow {
    pub profile: String,
    pub paused_ms: i64,
    pub paused_by: String,
}

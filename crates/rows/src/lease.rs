//! The dispatcher lease.

/// The lease as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Lease {
    pub owner: String,
    pub epoch: i64,
    pub pid: i64,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
}

//! Worktrees' rows.

use std::path::{Path, PathBuf};

use crate::state::WorktreeState;

/// A `worktrees` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorktreeRow {
    pub id: String,
    pub state: WorktreeState,
    pub repo: String,
    pub path: String,
    pub subdir: String,
    pub branch: String,
    pub base_commit: String,
    pub target: String,
    pub auto_commit: bool,
    /// JSON argv.
    pub setup: Option<String>,
    pub created_ms: i64,
    pub ready_ms: Option<i64>,
    pub merged_ms: Option<i64>,
    pub merged_how: Option<String>,
    pub merge_commit: Option<String>,
    pub merged_head: Option<String>,
    pub ended_ms: Option<i64>,
}

impl WorktreeRow {
    /// Where the worker runs: the worktree's copy of the requester's project directory.
    pub fn workdir(&self) -> PathBuf {
        workdir(Path::new(&self.path), &self.subdir)
    }

    /// The setup command to run in a new worktree, if any.
    pub fn setup_argv(&self) -> Option<Vec<String>> {
        self.setup.as_deref().and_then(|s| serde_json::from_str(s).ok()).filter(|a: &Vec<String>| !a.is_empty())
    }
}

/// A worktree about to be written with its task (state `planned`).
#[derive(Debug, Clone)]
pub struct NewWorktree {
    pub id: String,
    pub repo: String,
    pub path: String,
    pub subdir: String,
    pub branch: String,
    pub base_commit: String,
    pub target: String,
    pub auto_commit: bool,
    pub setup: Option<String>,
    pub created_ms: i64,
}

impl NewWorktree {
    pub fn workdir(&self) -> PathBuf {
        workdir(Path::new(&self.path), &self.subdir)
    }
}

/// The worker's directory in a worktree: its top level, or the project's place inside it.
pub fn workdir(path: &Path, subdir: &str) -> PathBuf {
    if subdir.is_empty() { path.to_path_buf() } else { path.join(subdir) }
}

//! Review of a task's worktree: `task diff`, `task merge` (one at a time per queue, under
//! `merge.lock`), `task apply` and `task discard`. A workflow run's worktree is reviewed by the
//! run's id, or by any of its steps' task ids.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::job::now_ms;
use crate::queue::Queue;
use crate::state::WorktreeState;
use crate::store;
use crate::worktree::{self, How, WorktreeRow};

use super::Caller;

/// What `task merge`, `task apply` and `task discard` answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reviewed {
    pub task_id: String,
    /// `merge`, `squash`, `rebase`, `apply` or `discard`.
    pub action: &'static str,
    pub branch: String,
    pub target: String,
    /// The target's new commit (merge, squash, rebase).
    pub commit: Option<String>,
    pub worktree: worktree::Info,
}

/// Where landing goes: into the branch the task started from, or staged in the checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    Merge(How),
    Apply,
}

/// The worktree of a task or a run, once the caller may see it, with whether its work is over.
async fn worktree_of(q: &Queue, caller: &Caller, id: &str) -> Result<(String, WorktreeRow, bool)> {
    let resolved = super::resolve_ids(q, &[id.to_string()]).await?;
    let Some(Ok(full)) = resolved.into_iter().next() else {
        return Err(Error::UnknownTask(id.to_string()));
    };
    let mut conn = q.store.conn().await?;
    let isolated = q.config.config.security.session_isolation;
    let (session, wt_id, finished) = match store::jobs::get(&mut conn, &full).await? {
        Some(job) => {
            // A step's task reviews its run's worktree, which is over when the run is.
            let over = match &job.workflow_run_id {
                Some(run) => store::workflow::get_run(&mut conn, run).await?.is_none_or(|r| r.state.is_terminal()),
                None => job.state.is_terminal(),
            };
            (job.session, job.worktree_id, over)
        }
        None => match store::workflow::get_run(&mut conn, &full).await? {
            Some(run) => (run.session, run.worktree_id, run.state.is_terminal()),
            None => return Err(Error::UnknownTask(id.to_string())),
        },
    };
    if isolated && session != caller.session {
        return Err(Error::UnknownTask(id.to_string()));
    }
    let Some(wt_id) = wt_id else {
        return Err(Error::Invalid(format!(
            "Task {full} ran in the project's own checkout (isolation \"none\"): it has no worktree to review"
        )));
    };
    let row = store::worktrees::get(&mut conn, &wt_id).await?.ok_or_else(|| Error::UnknownTask(id.to_string()))?;
    Ok((full, row, finished))
}

/// `task diff`: the task's changes against its base.
pub async fn diff(q: &Queue, caller: &Caller, id: &str, stat: bool) -> Result<String> {
    let (_, row, _) = worktree_of(q, caller, id).await?;
    if row.state == WorktreeState::Planned {
        return Ok(String::new());
    }
    worktree::diff(&row, stat).await
}

/// `task merge` / `task apply`: land a finished task's work, one landing at a time per queue.
pub async fn land(q: &Queue, caller: &Caller, id: &str, landing: Landing) -> Result<Reviewed> {
    let (task_id, row, finished) = worktree_of(q, caller, id).await?;
    if !finished {
        return Err(Error::Invalid(format!(
            "Task {task_id} is not finished: merge it once it is (task await {task_id}), or cancel it first"
        )));
    }
    let _one = merge_lock(&q.loc.state_dir.join("merge.lock")).await?;
    // Read again under the lock: another merge may have landed it meanwhile.
    let mut conn = q.store.conn().await?;
    let row = store::worktrees::get(&mut conn, &row.id).await?.unwrap_or(row);
    match row.state {
        WorktreeState::Ready => {}
        WorktreeState::Planned => {
            return Err(Error::Invalid(format!("Task {task_id} never ran in its worktree: nothing to merge")));
        }
        WorktreeState::Merged => {
            return Err(Error::Invalid(format!(
                "Task {task_id} was already merged ({}{})",
                row.merged_how.as_deref().unwrap_or("merge"),
                row.merge_commit.as_deref().map(|c| format!(" as {}", &c[..12.min(c.len())])).unwrap_or_default()
            )));
        }
        WorktreeState::Discarded => {
            return Err(Error::Invalid(format!("Task {task_id}'s worktree was discarded: nothing to merge")));
        }
    }
    let subject = subject_of(q, &row).await?;
    let (action, commit, head) = match landing {
        Landing::Merge(how) => {
            let landed = worktree::merge(&row, how, &subject).await?;
            (how.as_str(), Some(landed.commit), landed.head)
        }
        Landing::Apply => ("apply", None, worktree::apply(&row).await?),
    };
    store::worktrees::mark_merged(&mut conn, &row.id, action, commit.as_deref(), &head, now_ms()).await?;
    let row = store::worktrees::get(&mut conn, &row.id).await?.unwrap_or(row);
    Ok(Reviewed {
        task_id,
        action,
        branch: row.branch.clone(),
        target: row.target.clone(),
        commit,
        worktree: (&row).into(),
    })
}

/// `task discard`: remove a finished task's worktree and branch; without `force`, only when
/// that loses nothing.
pub async fn discard(q: &Queue, caller: &Caller, id: &str, force: bool) -> Result<Reviewed> {
    let (task_id, row, finished) = worktree_of(q, caller, id).await?;
    if !finished {
        return Err(Error::Invalid(format!("Task {task_id} is not finished: cancel it first, then discard it")));
    }
    if row.state == WorktreeState::Discarded {
        return Err(Error::Invalid(format!("Task {task_id}'s worktree was already discarded")));
    }
    let held = worktree::holdings(&row).await?;
    if !force && !held.removable(&row) {
        return Err(Error::Invalid(format!(
            "Task {task_id}'s worktree holds work: {}. Nothing was removed. Merge it (task merge {task_id}), or \
             discard it with --force to lose that work.",
            held.describe(&row)
        )));
    }
    worktree::remove(&row).await?;
    let mut conn = q.store.conn().await?;
    store::worktrees::mark_discarded(&mut conn, &row.id, now_ms()).await?;
    let row = store::worktrees::get(&mut conn, &row.id).await?.unwrap_or(row);
    Ok(Reviewed {
        task_id,
        action: "discard",
        branch: row.branch.clone(),
        target: row.target.clone(),
        commit: None,
        worktree: (&row).into(),
    })
}

/// The first line of the task text (or the run's), for commit messages.
async fn subject_of(q: &Queue, row: &WorktreeRow) -> Result<String> {
    let mut conn = q.store.conn().await?;
    let task = match store::jobs::get(&mut conn, &row.id).await? {
        Some(j) => j.task,
        None => store::workflow::get_run(&mut conn, &row.id).await?.map(|r| r.task).unwrap_or_default(),
    };
    Ok(crate::worktree::subject(&task))
}

/// Hold `merge.lock` (flock) until the guard drops: merges of one queue never race, across
/// processes.
async fn merge_lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io(format!("locking {}", path.display()), std::io::Error::from(e)))
    })
    .await
    .map_err(|e| Error::io("waiting for the merge lock", std::io::Error::other(e)))?
}

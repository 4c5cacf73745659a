//! Retention (SPEC 12): delete old finished jobs in small batches, their logs and attachments
//! with them, sweep files left without a row, then give the space back.

use serde::Serialize;

use crate::error::Result;
use crate::queue::Queue;
use crate::store;
use crate::worktree;

/// Deletes go in batches this small so writers are never blocked for long.
const BATCH: i64 = 100;

/// Directory names looked up per statement when sweeping.
const SWEEP_CHUNK: usize = 500;

/// What a prune did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub jobs: Vec<String>,
    /// Finished workflow runs deleted whole (their steps' jobs are not listed in `jobs`).
    pub runs: Vec<String>,
    pub swept_dirs: usize,
    /// Rows (and logs) of server workers that ended longer than `maxAgeMs` ago.
    pub server_workers: usize,
    /// Worktrees of finished tasks removed (clean and merged, or never changed), by task id.
    pub worktrees: Vec<String>,
    pub dry_run: bool,
}

/// Prune per `retention`; `dry_run` only says what would go.
pub async fn prune(q: &Queue, now: i64, dry_run: bool) -> Result<PruneReport> {
    let r = &q.config.config.retention;
    let (max_age, min_age, max_jobs) = (r.max_age_ms as i64, r.min_age_ms as i64, r.max_jobs as i64);
    let mut report = PruneReport { dry_run, ..Default::default() };
    let mut conn = q.store.conn().await?;
    if dry_run {
        report.jobs = store::jobs::prunable(&mut conn, now, max_age, min_age, max_jobs, i64::MAX).await?;
        report.runs = store::workflow::prunable(&mut conn, now, max_age, min_age, max_jobs, i64::MAX).await?;
        return Ok(report);
    }
    report.worktrees = remove_finished_worktrees(now, min_age, &mut conn).await?;
    loop {
        let runs = store::workflow::prunable(&mut conn, now, max_age, min_age, max_jobs, BATCH).await?;
        if runs.is_empty() {
            break;
        }
        let mut tx = q.store.begin().await?;
        let jobs = store::workflow::delete_runs(&mut tx, &runs).await?;
        tx.commit().await?;
        remove_all(q, jobs.into_iter().chain(runs.iter().cloned()).collect(), false).await;
        report.runs.extend(runs);
    }
    loop {
        let ids = store::jobs::prunable(&mut conn, now, max_age, min_age, max_jobs, BATCH).await?;
        if ids.is_empty() {
            break;
        }
        store::jobs::delete(&mut conn, &ids).await?;
        remove_all(q, ids.clone(), false).await;
        report.jobs.extend(ids);
    }
    store::worktrees::delete_unused(&mut conn).await?;
    let ended = store::workers::prune_ended(&mut conn, now - max_age).await?;
    for id in &ended {
        let _ = std::fs::remove_file(crate::engine::server::log_path(&q.loc.logs_dir(), id));
    }
    report.server_workers = ended.len();
    report.swept_dirs = sweep(q, &mut conn).await?;
    if !report.jobs.is_empty() || !report.runs.is_empty() || report.swept_dirs > 0 || !ended.is_empty() {
        store::jobs::vacuum(&mut conn).await?;
        tracing::info!(jobs = report.jobs.len(), runs = report.runs.len(), swept = report.swept_dirs, "pruned");
    }
    Ok(report)
}

/// Remove the worktrees (directory and branch) of tasks finished at least `min_age` ago that
/// lose nothing by it: no uncommitted or untracked files, every commit on the target branch
/// or merged as it stands. The others stay, and so do their tasks.
async fn remove_finished_worktrees(now: i64, min_age: i64, conn: &mut store::Conn) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for row in store::worktrees::of_finished(conn, now - min_age).await? {
        let held = match worktree::holdings(&row).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(task_id = %row.id, "worktree kept: could not read it: {e}");
                continue;
            }
        };
        if !held.removable(&row) {
            tracing::debug!(task_id = %row.id, "worktree kept: {}", held.describe(&row));
            continue;
        }
        if let Err(e) = worktree::remove(&row).await {
            tracing::warn!(task_id = %row.id, "worktree kept: {e}");
            continue;
        }
        store::worktrees::mark_discarded(conn, &row.id, now).await?;
        removed.push(row.id);
    }
    Ok(removed)
}

fn remove_files(q: &Queue, id: &str) {
    let _ = std::fs::remove_dir_all(q.loc.job_log_dir(id));
    let _ = std::fs::remove_dir_all(q.loc.attachments_dir(id));
}

/// Remove the logs and attachments of `ids` on a blocking thread (a dispatcher prunes beside
/// its loop); `unless_young` keeps a set whose attachments directory is under a minute old (its
/// row may be on its way). How many sets went.
async fn remove_all(q: &Queue, ids: Vec<String>, unless_young: bool) -> usize {
    let q = q.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let young = |id: &str| {
            std::fs::metadata(q.loc.attachments_dir(id))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|e| e.as_secs() < 60))
        };
        ids.iter().filter(|id| !(unless_young && young(id))).map(|id| remove_files(&q, id)).count()
    })
    .await;
    removed.unwrap_or(0)
}

/// Remove log and attachment directories whose job row is gone (a crash between delete and
/// unlink). The directories are read and looked up a chunk at a time, so a queue with a
/// million logs is never held in memory.
async fn sweep(q: &Queue, conn: &mut store::Conn) -> Result<usize> {
    let mut swept = 0;
    for parent in [q.loc.logs_dir(), q.loc.state_dir.join("attachments")] {
        let Ok(rd) = std::fs::read_dir(&parent) else { continue };
        // Only names that could be ids are looked up; others (server workers' logs) are not ours.
        let mut names = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|d| uuid::Uuid::parse_str(d).is_ok())
            .peekable();
        while names.peek().is_some() {
            let chunk: Vec<String> = names.by_ref().take(SWEEP_CHUNK).collect();
            let orphans = store::jobs::without_row(conn, &chunk).await?;
            swept += remove_all(q, orphans, true).await;
        }
    }
    Ok(swept)
}

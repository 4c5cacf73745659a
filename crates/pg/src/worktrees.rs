//! Statements on `worktrees`: a row is written with its task, and its state moves only along
//! `worktree_transitions` (enforced by trigger), each change guarded by the expected state.

use sqlx::PgConnection;

use crate::Result;
use baton_rows::state::WorktreeState;
pub use baton_rows::worktrees::{NewWorktree, WorktreeRow};

/// `query_as!` into [`WorktreeRow`]; the argument is the rest after `FROM worktrees`.
macro_rules! select_worktrees {
    ($rest:tt $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            WorktreeRow,
            r#"SELECT id, state AS "state: WorktreeState", repo, path, subdir, branch, base_commit, target,
                      auto_commit <> 0 AS "auto_commit!: bool", setup, created_ms, ready_ms, merged_ms, merged_how,
                      merge_commit, merged_head, ended_ms
                 FROM worktrees "# + $rest
            $(, $arg)*
        )
    };
}

pub async fn insert(conn: &mut PgConnection, w: &NewWorktree) -> Result<()> {
    sqlx::query!(
        "INSERT INTO worktrees (id, state, repo, path, subdir, branch, base_commit, target, auto_commit, setup, created_ms)
         VALUES ($1, 'planned', $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        w.id,
        w.repo,
        w.path,
        w.subdir,
        w.branch,
        w.base_commit,
        w.target,
        i64::from(w.auto_commit),
        w.setup,
        w.created_ms
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut PgConnection, id: &str) -> Result<Option<WorktreeRow>> {
    Ok(select_worktrees!("WHERE id = $1", id).fetch_optional(conn).await?)
}

pub async fn get_many(conn: &mut PgConnection, ids: &[String]) -> Result<Vec<WorktreeRow>> {
    Ok(select_worktrees!("WHERE id = ANY($1)", ids).fetch_all(conn).await?)
}

/// Created: `planned` -> `ready`.
pub async fn mark_ready(conn: &mut PgConnection, id: &str, now: i64) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE worktrees SET state = 'ready', ready_ms = $2 WHERE id = $1 AND state = 'planned'",
        id,
        now
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Merged back (or applied, `merge_commit` NULL): `ready` -> `merged`.
pub async fn mark_merged(
    conn: &mut PgConnection,
    id: &str,
    how: &str,
    merge_commit: Option<&str>,
    head: &str,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE worktrees SET state = 'merged', merged_ms = $2, merged_how = $3, merge_commit = $4, merged_head = $5
          WHERE id = $1 AND state = 'ready'",
        id,
        now,
        how,
        merge_commit,
        head
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Directory and branch removed.
pub async fn mark_discarded(conn: &mut PgConnection, id: &str, now: i64) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE worktrees SET state = 'discarded', ended_ms = $2 WHERE id = $1 AND state != 'discarded'",
        id,
        now
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Worktrees still on disk whose task (or workflow run) finished before `before`, for pruning
/// to look at.
pub async fn of_finished(conn: &mut PgConnection, before: i64) -> Result<Vec<WorktreeRow>> {
    Ok(select_worktrees!(
        "WHERE state != 'discarded'
           AND (EXISTS (SELECT 1 FROM jobs j WHERE j.id = worktrees.id AND j.finished_ms <= $1)
                OR EXISTS (SELECT 1 FROM workflow_runs r WHERE r.id = worktrees.id AND r.finished_ms <= $1))",
        before
    )
    .fetch_all(conn)
    .await?)
}

/// Delete discarded worktree rows no job or run names any more (after their tasks were pruned).
pub async fn delete_unused(conn: &mut PgConnection) -> Result<u64> {
    let r = sqlx::query!(
        "DELETE FROM worktrees WHERE state = 'discarded'
            AND NOT EXISTS (SELECT 1 FROM jobs WHERE worktree_id = worktrees.id)
            AND NOT EXISTS (SELECT 1 FROM workflow_runs WHERE worktree_id = worktrees.id)"
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}

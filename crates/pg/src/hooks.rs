//! The finish hook's rows: `hooks` (the configured argv, synced by the dispatchers) and the
//! `finish_hooks` outbox the schema's triggers fill when a task or run ends. Each write is
//! fenced by the writing node still holding its epoch. One node runs the hooks, as one
//! dispatcher does on a queue file: the live node that started first (then by id), so a hook
//! in flight is never begun again by another node while its node lives; when that node stops
//! or is taken over, the next one takes its pending hooks up.

use sqlx::PgConnection;

use crate::Result;
pub use baton_rows::hooks::{MAX_ATTEMPTS, Pending};

/// The hook's name in `hooks`.
const ON_FINISH: &str = "onFinish";

/// Make the `hooks` row say what the configuration says (`None`: no hook). Removing the hook
/// closes what it left pending, so a hook configured again later does not run for old tasks.
/// Fenced by the node's epoch. True when the row changed.
pub async fn sync(conn: &mut PgConnection, argv: Option<&[String]>, owner: &str, epoch: i64, now: i64) -> Result<bool> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let changed = match argv {
        Some(argv) => {
            let argv = serde_json::to_string(argv)?;
            sqlx::query!(
                "INSERT INTO hooks (name, argv, updated_ms)
                 SELECT $1, $2, $3
                  WHERE EXISTS (SELECT 1 FROM nodes WHERE id = $4 AND epoch = $5 AND stopped_ms IS NULL)
                 ON CONFLICT (name) DO UPDATE SET argv = excluded.argv, updated_ms = excluded.updated_ms
                  WHERE hooks.argv IS DISTINCT FROM excluded.argv",
                ON_FINISH,
                argv,
                now,
                owner,
                epoch
            )
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0
        }
        None => {
            let gone = sqlx::query!(
                "DELETE FROM hooks WHERE name = $1
                   AND EXISTS (SELECT 1 FROM nodes WHERE id = $2 AND epoch = $3 AND stopped_ms IS NULL)",
                ON_FINISH,
                owner,
                epoch
            )
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if gone {
                sqlx::query!(
                    "UPDATE finish_hooks SET done_ms = $1, error = 'hooks.onFinish was removed from the configuration'
                      WHERE done_ms IS NULL",
                    now
                )
                .execute(&mut *tx)
                .await?;
            }
            gone
        }
    };
    tx.commit().await?;
    Ok(changed)
}

/// Hooks not run yet, oldest ending first, at most `limit`.
pub async fn pending(conn: &mut PgConnection, limit: i64) -> Result<Vec<Pending>> {
    Ok(sqlx::query_as!(
        Pending,
        "SELECT task_id, attempts FROM finish_hooks WHERE done_ms IS NULL ORDER BY finished_ms LIMIT $1",
        limit
    )
    .fetch_all(conn)
    .await?)
}

/// Count an attempt before the hook process starts; false when the row is done already, or
/// node `owner` at `epoch` is not the node that runs hooks (see the module). A row out of
/// attempts is closed with the reason instead, by that node.
pub async fn begin(conn: &mut PgConnection, task_id: &str, owner: &str, epoch: i64, now: i64) -> Result<bool> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // The hooks' node: the first live node by start time, then id (NULL, so false, when none).
    let begun = sqlx::query!(
        "UPDATE finish_hooks SET attempts = attempts + 1, started_ms = $2
          WHERE task_id = $1 AND done_ms IS NULL AND attempts < $3
            AND (SELECT id = $4 AND epoch = $5 FROM nodes WHERE stopped_ms IS NULL ORDER BY started_ms, id LIMIT 1)",
        task_id,
        now,
        MAX_ATTEMPTS,
        owner,
        epoch
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !begun {
        let message = format!("gave up: the dispatcher stopped while the hook ran, {MAX_ATTEMPTS} times");
        sqlx::query!(
            "UPDATE finish_hooks SET done_ms = $2, error = $3
              WHERE task_id = $1 AND done_ms IS NULL AND attempts >= $4
                AND (SELECT id = $5 AND epoch = $6 FROM nodes WHERE stopped_ms IS NULL ORDER BY started_ms, id LIMIT 1)",
            task_id,
            now,
            message,
            MAX_ATTEMPTS,
            owner,
            epoch
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(begun)
}

/// Record how the hook ended: its exit code, or why it failed, while node `owner` holds
/// `epoch`. Never run again after this.
pub async fn done(
    conn: &mut PgConnection,
    task_id: &str,
    exit_code: Option<i64>,
    error: Option<&str>,
    owner: &str,
    epoch: i64,
    now: i64,
) -> Result<bool> {
    let r = sqlx::query!(
        "UPDATE finish_hooks SET done_ms = $2, exit_code = $3, error = $4
          WHERE task_id = $1 AND done_ms IS NULL
            AND EXISTS (SELECT 1 FROM nodes WHERE id = $5 AND epoch = $6 AND stopped_ms IS NULL)",
        task_id,
        now,
        exit_code,
        error,
        owner,
        epoch
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

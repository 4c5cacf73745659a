//! Moving a queue (`baton export`, `baton import`): each table's rows a page at a time as
//! JSON objects of their columns (`row_to_json`), restored as they were inside an open import
//! (see migrations/postgres/0002_imports.sql), and the import's own record.

use sqlx::PgConnection;

use crate::Result;
pub use baton_rows::transfer::{Exported, Key, Restored, Table};

/// A page of exported rows: `$sql` selects `text`, `num` (the row's key) and `row` (its JSON).
macro_rules! exported {
    ($conn:expr, $sql:literal, $($arg:expr),*) => {
        sqlx::query!($sql, $($arg),*)
            .fetch_all($conn)
            .await?
            .into_iter()
            .map(|r| Exported { key: Key { text: r.text, num: r.num }, row: r.row })
            .collect()
    };
}

/// A restoring statement, run.
macro_rules! written {
    ($conn:expr, $sql:literal, $arg:expr) => {
        sqlx::query!($sql, $arg).execute($conn).await?
    };
}

/// The rows of `table` after `after` in its key order, at most `limit`.
pub async fn page(conn: &mut PgConnection, table: Table, after: &Key, limit: i64) -> Result<Vec<Exported>> {
    let text = after.text.as_str();
    Ok(match table {
        Table::Worktrees => exported!(
            conn,
            r#"SELECT id AS "text!", 0::bigint AS "num!", row_to_json(r)::text AS "row!"
              FROM worktrees r WHERE id > $1 ORDER BY id LIMIT $2"#,
            text,
            limit
        ),
        Table::WorkflowRuns => exported!(
            conn,
            r#"SELECT ''::text AS "text!", seq AS "num!", row_to_json(r)::text AS "row!"
              FROM workflow_runs r WHERE seq > $1 ORDER BY seq LIMIT $2"#,
            after.num,
            limit
        ),
        Table::Jobs => exported!(
            conn,
            r#"SELECT ''::text AS "text!", seq AS "num!", row_to_json(r)::text AS "row!"
              FROM jobs r WHERE seq > $1 ORDER BY seq LIMIT $2"#,
            after.num,
            limit
        ),
        Table::JobEvents => exported!(
            conn,
            r#"SELECT job_id AS "text!", seq AS "num!", row_to_json(r)::text AS "row!"
              FROM job_events r WHERE (job_id, seq) > ($1, $2) ORDER BY job_id, seq LIMIT $3"#,
            text,
            after.num,
            limit
        ),
        Table::WorkflowSteps => exported!(
            conn,
            r#"SELECT run_id AS "text!", idx AS "num!", row_to_json(r)::text AS "row!"
              FROM workflow_steps r WHERE (run_id, idx) > ($1, $2) ORDER BY run_id, idx LIMIT $3"#,
            text,
            after.num,
            limit
        ),
        Table::FinishHooks => exported!(
            conn,
            r#"SELECT task_id AS "text!", 0::bigint AS "num!", row_to_json(r)::text AS "row!"
              FROM finish_hooks r WHERE task_id > $1 ORDER BY task_id LIMIT $2"#,
            text,
            limit
        ),
        Table::Pauses => exported!(
            conn,
            r#"SELECT profile AS "text!", 0::bigint AS "num!", row_to_json(r)::text AS "row!"
              FROM pauses r WHERE profile > $1 ORDER BY profile LIMIT $2"#,
            text,
            limit
        ),
        Table::Hooks => exported!(
            conn,
            r#"SELECT name AS "text!", 0::bigint AS "num!", row_to_json(r)::text AS "row!"
              FROM hooks r WHERE name > $1 ORDER BY name LIMIT $2"#,
            text,
            limit
        ),
    })
}

/// Restore rows of `table` as they were: `rows` is a JSON array of them (objects of their
/// columns), in order. Only an open import admits rows the guards of new ones would refuse.
pub async fn restore(conn: &mut PgConnection, table: Table, rows: &str) -> Result<()> {
    match table {
        Table::Worktrees => written!(
            conn,
            "INSERT INTO worktrees SELECT * FROM json_populate_recordset(NULL::worktrees, $1::text::json)",
            rows
        ),
        Table::WorkflowRuns => written!(
            conn,
            "INSERT INTO workflow_runs SELECT * FROM json_populate_recordset(NULL::workflow_runs, $1::text::json)",
            rows
        ),
        Table::Jobs => {
            written!(conn, "INSERT INTO jobs SELECT * FROM json_populate_recordset(NULL::jobs, $1::text::json)", rows)
        }
        Table::JobEvents => written!(
            conn,
            "INSERT INTO job_events SELECT * FROM json_populate_recordset(NULL::job_events, $1::text::json)",
            rows
        ),
        Table::WorkflowSteps => written!(
            conn,
            "INSERT INTO workflow_steps SELECT * FROM json_populate_recordset(NULL::workflow_steps, $1::text::json)",
            rows
        ),
        Table::FinishHooks => written!(
            conn,
            "INSERT INTO finish_hooks SELECT * FROM json_populate_recordset(NULL::finish_hooks, $1::text::json)",
            rows
        ),
        Table::Pauses => written!(
            conn,
            "INSERT INTO pauses SELECT * FROM json_populate_recordset(NULL::pauses, $1::text::json)",
            rows
        ),
        Table::Hooks => {
            written!(conn, "INSERT INTO hooks SELECT * FROM json_populate_recordset(NULL::hooks, $1::text::json)", rows)
        }
    };
    Ok(())
}

/// Mark the transaction's state, so a batch that fails can be undone alone
/// ([`rollback_to_mark`]) and its rows tried one by one.
pub async fn mark(conn: &mut PgConnection) -> Result<()> {
    sqlx::query!("SAVEPOINT baton_import_batch").execute(conn).await?;
    Ok(())
}

/// Undo what followed the last [`mark`].
pub async fn rollback_to_mark(conn: &mut PgConnection) -> Result<()> {
    sqlx::query!("ROLLBACK TO SAVEPOINT baton_import_batch").execute(conn).await?;
    Ok(())
}

/// Keep what followed the last [`mark`].
pub async fn release_mark(conn: &mut PgConnection) -> Result<()> {
    sqlx::query!("RELEASE SAVEPOINT baton_import_batch").execute(conn).await?;
    Ok(())
}

/// How many tasks, workflow runs and worktrees the queue holds (an import fills only an empty
/// queue).
pub async fn held(conn: &mut PgConnection) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM workflow_runs) + (SELECT count(*) FROM worktrees)
               AS "n!""#
    )
    .fetch_one(conn)
    .await?)
}

/// Open an import of rows from `source`: the schema refuses it on a queue with tasks in it, or
/// while another is open. Its id.
pub async fn open(conn: &mut PgConnection, source: &str, format: i64, now: i64) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"INSERT INTO imports (source, format, started_ms) VALUES ($1, $2, $3) RETURNING id AS "id!""#,
        source,
        format,
        now
    )
    .fetch_one(conn)
    .await?)
}

/// Close import `id` with what it restored: from here the guards of new rows hold again. The
/// sequences of seq columns move past the restored rows, so new ones come after them.
pub async fn close(conn: &mut PgConnection, id: i64, restored: Restored, now: i64) -> Result<()> {
    sqlx::query!(
        "UPDATE imports SET finished_ms = $2, jobs = $3, runs = $4, events = $5 WHERE id = $1 AND finished_ms IS NULL",
        id,
        now,
        restored.jobs,
        restored.runs,
        restored.events
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        r#"SELECT setval(pg_get_serial_sequence('jobs', 'seq'), coalesce((SELECT max(seq) FROM jobs), 0) + 1, false) AS "jobs!",
                  setval(pg_get_serial_sequence('workflow_runs', 'seq'),
                         coalesce((SELECT max(seq) FROM workflow_runs), 0) + 1, false) AS "runs!""#
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// A consistent view for an export: the transaction reads one snapshot, and writes nothing.
pub async fn snapshot(conn: &mut PgConnection) -> Result<()> {
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(conn).await?;
    Ok(())
}

//! Statements on `job_events`: a running attempt's activity, appended in batches by its owner,
//! trimmed to the job's cap, read back by peek and `task events`.

use sqlx::PgConnection;

use crate::Result;
pub use baton_rows::events::{EventCaps, EventRow, NewEvent, Writer};
use baton_rows::state::EventKind;

/// Append events to a running attempt and trim the job to its caps, in one transaction.
/// Returns how many were written (none when the attempt no longer runs under this node and
/// epoch, or the node was taken over).
pub async fn append(conn: &mut PgConnection, w: Writer<'_>, events: &[NewEvent], caps: EventCaps) -> Result<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let batch = serde_json::to_string(events)?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let r = sqlx::query!(
        r#"INSERT INTO job_events (job_id, attempt, seq, at_ms, kind, text, payload)
           SELECT $1, $2,
                  (SELECT coalesce(max(seq), 0) FROM job_events WHERE job_id = $1) + e.n,
                  (e.v ->> 'at_ms')::bigint, e.v ->> 'kind', e.v ->> 'text', e.v ->> 'payload'
             FROM jsonb_array_elements($5::text::jsonb) WITH ORDINALITY AS e(v, n)
            WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND state = 'running' AND attempt = $2
                                                 AND owner = $3 AND epoch = $4)
              AND EXISTS (SELECT 1 FROM nodes WHERE id = $3 AND epoch = $4 AND stopped_ms IS NULL)"#,
        w.job_id,
        w.attempt,
        w.owner,
        w.epoch,
        batch
    )
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() > 0 {
        trim(&mut tx, w.job_id, caps).await?;
    }
    tx.commit().await?;
    Ok(r.rows_affected())
}

/// Keep the newest `max_events` events of a job, and of those the newest that fit `max_bytes`.
async fn trim(conn: &mut PgConnection, job_id: &str, caps: EventCaps) -> Result<()> {
    sqlx::query!(
        "DELETE FROM job_events
          WHERE job_id = $1
            AND seq <= coalesce((SELECT seq FROM job_events WHERE job_id = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2), 0)",
        job_id,
        caps.max_events
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM job_events
          WHERE job_id = $1
            AND seq < (SELECT coalesce(min(seq), 0) FROM (
                         SELECT seq, sum(octet_length(text) + coalesce(octet_length(payload), 0))
                                     OVER (ORDER BY seq DESC ROWS UNBOUNDED PRECEDING) AS total
                           FROM job_events WHERE job_id = $1) t
                        WHERE total <= $2)",
        job_id,
        caps.max_bytes
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A job's events after `after_seq`, oldest first, at most `limit`.
pub async fn after(conn: &mut PgConnection, job_id: &str, after_seq: i64, limit: i64) -> Result<Vec<EventRow>> {
    Ok(sqlx::query_as!(
        EventRow,
        r#"SELECT seq, attempt, at_ms, kind AS "kind: EventKind", text, payload
             FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"#,
        job_id,
        after_seq,
        limit
    )
    .fetch_all(conn)
    .await?)
}

/// The newest event of each kind of an attempt (what peek summarises as its activity).
pub async fn latest_by_kind(conn: &mut PgConnection, job_id: &str, attempt: i64) -> Result<Vec<EventRow>> {
    Ok(sqlx::query_as!(
        EventRow,
        r#"SELECT seq, attempt, at_ms, kind AS "kind: EventKind", text, payload
             FROM job_events
            WHERE job_id = $1
              AND seq IN (SELECT max(seq) FROM job_events WHERE job_id = $1 AND attempt = $2 GROUP BY kind)
            ORDER BY seq"#,
        job_id,
        attempt
    )
    .fetch_all(conn)
    .await?)
}

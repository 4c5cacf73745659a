//! A queue on PostgreSQL: opening it (what the database holds decides: a baton queue, an empty
//! database to create one in, or another application's tables, refused), this process's node,
//! and PostgreSQL's errors in words. Its statements are `baton-pg`'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baton_pg::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use baton_pg::sqlx::{self, Connection, PgConnection, PgPool};

use super::SCHEMA_VERSION;

/// The channel every commit to the queue notifies (the schema's `baton_notify`).
const CHANNEL: &str = "baton";
use crate::error::{Error, Result};

/// The dispatcher identity this process takes on the queue: its node (`BATON_NODE`, config
/// `node`, else the host name), the host it runs on, and this process's instance.
#[derive(Debug)]
pub struct Node {
    pub id: String,
    pub host: String,
    /// This process's instance (pid and a random part), recorded as the node's `owner`.
    pub instance: String,
}

impl Node {
    pub fn new(id: Option<&str>) -> Node {
        let host =
            nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into());
        let id = id.filter(|s| !s.is_empty()).map(str::to_string).unwrap_or_else(|| host.clone());
        let instance = format!("{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        Node { id, host, instance }
    }
}

/// An open queue on a PostgreSQL server.
#[derive(Debug, Clone)]
pub struct Server {
    pub(super) pool: PgPool,
    options: PgConnectOptions,
    /// The URL without its password: what messages and logs show.
    pub(super) shown: String,
    /// The URL as given: what workers and a detached dispatcher are handed.
    pub(super) url: String,
    pub(super) node: Arc<Node>,
}

/// Whether `s` names a PostgreSQL queue rather than a file.
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// `url` with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (auth, host) = match rest.rfind('@') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{host}"),
        None => url.to_string(),
    }
}

impl Server {
    /// Connect and check what the database holds: a baton queue at this schema or an older one
    /// (migrated, under the migrator's own advisory lock), nothing (a queue is created when
    /// `create`, else [`Error::NoQueue`]), or another application's tables (refused, untouched).
    pub async fn open(url: &str, node: Node, create: bool) -> Result<Server> {
        let shown = redact(url);
        let bad = |problem: String| Error::QueueFile { path: PathBuf::from(&shown), problem };
        let options: PgConnectOptions =
            url.parse().map_err(|e| bad(format!("the URL does not parse as a PostgreSQL connection URL ({e})")))?;
        let options = options.application_name("baton");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await
            .map_err(|e| explain_connect(&shown, e))?;
        let mut conn = pool.acquire().await?;
        let (has_schema, tables): (bool, i64) = sqlx::query_as(
            "SELECT to_regclass('baton_schema') IS NOT NULL,
                    (SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()
                        AND tablename <> '_sqlx_migrations')",
        )
        .fetch_one(&mut *conn)
        .await?;
        let path = || PathBuf::from(&shown);
        if has_schema {
            let (app, version): (String, i64) =
                sqlx::query_as("SELECT application, version FROM baton_schema").fetch_one(&mut *conn).await?;
            if app != "baton" {
                return Err(Error::ForeignDatabase { path: path(), reason: format!("its baton_schema names {app:?}") });
            }
            if version > SCHEMA_VERSION {
                return Err(Error::NewerSchema { path: path(), found: version, known: SCHEMA_VERSION });
            }
        } else if tables > 0 {
            return Err(Error::ForeignDatabase {
                path: path(),
                reason: format!("its schema holds {tables} tables of another application and no baton_schema"),
            });
        } else if !create {
            return Err(Error::NoQueue { path: path() });
        }
        drop(conn);
        // The migrator takes its lock and reads its table on every run: only when behind.
        if !has_schema || current_version(&pool).await? < SCHEMA_VERSION {
            baton_pg::MIGRATOR.run(&pool).await?;
        }
        Ok(Server { pool, options, shown, url: url.to_string(), node: Arc::new(node) })
    }

    /// A connection of its own, outside the pool, with its backend's process id (the one the
    /// notifications of its own commits carry).
    pub async fn dedicated(&self) -> Result<(PgConnection, u32)> {
        let mut conn = PgConnection::connect_with(&self.options).await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut conn).await?;
        Ok((conn, pid as u32))
    }

    /// A listener on the channel every commit to the queue notifies.
    pub async fn listener(&self) -> Result<sqlx::postgres::PgListener> {
        let mut l = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        l.listen(CHANNEL).await?;
        Ok(l)
    }
}

/// The schema version `baton_schema` records.
async fn current_version(pool: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT version FROM baton_schema").fetch_one(pool).await?)
}

/// Database errors a long-lived process outlives: the server restarting or unreachable for a
/// while, a serialization failure or deadlock. A missing or foreign schema, refused
/// authentication or damaged data will not heal by waiting.
pub fn is_transient(d: &dyn sqlx::error::DatabaseError) -> bool {
    let code = d.code().unwrap_or_default();
    !(code.starts_with("XX") || code.starts_with("42") || code.starts_with("28") || code.starts_with("3D"))
}

/// A failed first connection, in words.
fn explain_connect(shown: &str, e: sqlx::Error) -> Error {
    let problem = match &e {
        sqlx::Error::Io(io) => format!(
            "the PostgreSQL server cannot be reached ({io}). Check that it runs and listens at the URL's host and port."
        ),
        sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("28")) => {
            format!("PostgreSQL refused the login ({}). Check the user and password in the URL.", d.message())
        }
        sqlx::Error::Database(d) if d.code().as_deref() == Some("3D000") => {
            format!("{} Create it first (createdb), or name an existing database in the URL.", d.message())
        }
        sqlx::Error::Tls(t) => format!("the TLS handshake failed ({t})."),
        sqlx::Error::PoolTimedOut => "the PostgreSQL server did not answer within 60 s.".to_string(),
        _ => return Error::Sqlx(e),
    };
    Error::QueueFile { path: PathBuf::from(shown), problem }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgresql://h/db"), "postgresql://h/db");
        assert_eq!(redact("postgres://u:p:q@h/db"), "postgres://u:***@h/db");
        assert!(is_url("postgres://x") && is_url("postgresql://x") && !is_url("/tmp/postgres.db"));
    }
}

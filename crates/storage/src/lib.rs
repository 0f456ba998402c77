//! Storage adapters of ordo: SQLite (the embedded default) and PostgreSQL, through one code path
//! (sqlx's `Any` driver), with each dialect's migrations under `migrations/`.
//!
//! Layout:
//! - [`Database`]: connecting, migrating, health; the read pool and the write path.
//! - [`catalog`]: products, warehouses and stock levels.
//! - [`orders`]: reading orders and their timeline; [`WriteTx`] for the steps of a write.
//! - [`outbox`]: appending events in a write, and the relay's claims; processed-event ids.
//! - [`fulfillment`]: shipments and their items, risk facts, refunds.
//! - [`payments`]: payment intents, provider callback events, the unpaid orders to time out.
//! - [`records`]: the row shapes handed to the service layer.
//!
//! Invariants a reader must not break:
//! - Stock changes are conditional updates (`... WHERE reserved + n <= on_hand`); the row locks
//!   taken by [`WriteTx::lock_stock`] are always taken in (sku, warehouse) order. Nothing reads a
//!   level, decides in Rust, and writes it back unguarded.
//! - A state change and everything that must happen with it commit in one [`WriteTx`].
//! - SQLite has one writer connection: writes queue in-process instead of failing with
//!   `SQLITE_BUSY`; reads use a separate pool and never block on writes (WAL).

pub mod catalog;
mod error;
pub mod fulfillment;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod records;
mod traced;

pub use orders::WriteTx;

use ordo_domain::{Error, Result};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::time::Duration;

pub(crate) use error::db_error;
use traced::Traced;

/// Which database a URL names; decides the dialect-specific bits of SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::invalid_field(
                "database_url",
                "must start with sqlite:// or postgres://",
            ))
        }
    }

    /// The `db.system.name` of the OpenTelemetry conventions.
    pub fn system_name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }
}

/// Connection pools to the one database ordo uses.
#[derive(Clone)]
pub struct Database {
    reader: AnyPool,
    writer: AnyPool,
    backend: Backend,
}

/// How long a caller waits for a pooled connection before the database counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

impl Database {
    /// Connects and checks the database answers. For SQLite the file (and its folder) is
    /// created when missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Database> {
        install_default_drivers();
        let backend = Backend::from_url(url)?;
        let database = match backend {
            Backend::Sqlite => {
                let url = sqlite_url_creating_file(url)?;
                let options = || {
                    AnyPoolOptions::new()
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .after_connect(|conn, _meta| {
                            Box::pin(async move {
                                // WAL lets readers run beside the writer; NORMAL sync keeps
                                // commits durable across a process crash (not power loss).
                                conn.execute(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                                )
                                .await?;
                                Ok(())
                            })
                        })
                };
                let writer = options().max_connections(1).connect(&url).await;
                let writer = writer.map_err(|e| connect_error(backend, e))?;
                let reader = options()
                    .max_connections(max_connections)
                    .connect(&url)
                    .await
                    .map_err(|e| connect_error(backend, e))?;
                Database {
                    reader,
                    writer,
                    backend,
                }
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .max_connections(max_connections)
                    .connect(url)
                    .await
                    .map_err(|e| connect_error(backend, e))?;
                Database {
                    reader: pool.clone(),
                    writer: pool,
                    backend,
                }
            }
        };
        database.ping().await?;
        Ok(database)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the migrations of this backend's dialect that have not run yet.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator
            .run(&self.writer)
            .await
            .map_err(|e| Error::unavailable(format!("cannot apply database migrations: {e}")))
    }

    /// Answers whether the database can run a query now (the readiness check). Probes run
    /// every second or so (gRPC health, `/readyz`, start-up): housekeeping, never exported as
    /// traces (the statement is still timed in the database histogram).
    pub async fn ping(&self) -> Result<()> {
        use tracing::Instrument;
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .traced(self.backend, "SELECT 1")
            .instrument(ordo_telemetry::propagation::unexported_span(
                "database ping",
            ))
            .await
            .map(|_| ())
    }

    /// Closes the pools, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    pub(crate) fn reader(&self) -> &AnyPool {
        &self.reader
    }

    pub(crate) fn writer(&self) -> &AnyPool {
        &self.writer
    }
}

fn connect_error(backend: Backend, error: sqlx::Error) -> Error {
    Error::unavailable(format!(
        "cannot connect to the {} database: {error}",
        backend.system_name()
    ))
}

/// `sqlite://PATH` → a URL that creates the file, after creating its folder.
fn sqlite_url_creating_file(url: &str) -> Result<String> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Err(Error::invalid_field(
            "database_url",
            "ordo needs a SQLite file, not an in-memory database",
        ));
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            Error::unavailable(format!(
                "cannot create the folder of the SQLite database {}: {e}",
                parent.display()
            ))
        })?;
    }
    let query = if query.contains("mode=") {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// Milliseconds since the Unix epoch: the time unit of every stored timestamp.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// `$1, $2, ..., $n` starting at `$first`: placeholders for an `IN (...)` list.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = std::env::temp_dir().join(format!("ordo-url-{}", std::process::id()));
        let url = format!("sqlite://{}/a.db", dir.display());
        assert!(
            sqlite_url_creating_file(&url)
                .unwrap()
                .ends_with("a.db?mode=rwc")
        );
        assert!(dir.exists());
        assert!(sqlite_url_creating_file("sqlite::memory:").is_err());
    }

    #[test]
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }
}

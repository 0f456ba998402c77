//! Schema migrations: each dialect's numbered SQL files under `migrations/`, applied in order,
//! each version once, recorded in `ordo_migrations`.
//!
//! A database created by an ordo that migrated through sqlx has its history in
//! `_sqlx_migrations`: the versions recorded there as successful count as applied, so such a
//! database is migrated forward, never recreated. All pending migrations run in one transaction
//! (PostgreSQL: under an advisory lock, so instances starting together apply them once).

use crate::sql::{Conn, params};
use crate::{Backend, Database, now_ms};
use ordo_domain::{Error, Result};

struct Migration {
    version: i64,
    description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            description: $name,
            sqlite: include_str!(concat!("../migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!("../migrations/postgres/", $name, ".sql")),
        }
    };
}

const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_foundation"),
    migration!(2, "0002_payments"),
    migration!(3, "0003_outbox"),
    migration!(4, "0004_fulfillment"),
    migration!(5, "0005_outbox_attempts"),
    migration!(6, "0006_place_orders"),
    migration!(7, "0007_scan_free_housekeeping"),
    migration!(8, "0008_pos"),
    migration!(9, "0009_erasure"),
];

/// An arbitrary constant naming ordo's migration lock among PostgreSQL advisory locks.
const ADVISORY_LOCK: i64 = 0x6f72_646f_6d69_6772;

/// Runs under an unexported span: start-up housekeeping is no trace of anyone's (the
/// statements are still timed in the database histogram).
pub(crate) async fn run(db: &Database) -> Result<()> {
    use tracing::Instrument;
    migrate(db)
        .instrument(ordo_telemetry::propagation::unexported_span(
            "database migrations",
        ))
        .await
}

async fn migrate(db: &Database) -> Result<()> {
    crate::sql::unbounded(migrate_unbounded(db)).await
}

/// Migrations may run for minutes on a large database: no statement time-out, on either side.
async fn migrate_unbounded(db: &Database) -> Result<()> {
    let mut tx = db.begin().await?;
    let backend = db.backend();
    if backend == Backend::Postgres {
        tx.conn()
            .batch("SET statement_timeout", "SET LOCAL statement_timeout = 0")
            .await?;
    }
    let result = apply_pending(&tx.conn(), backend).await;
    match result {
        Ok(()) => tx.commit().await,
        Err(error) => Err(Error::unavailable(format!(
            "cannot apply database migrations: {}",
            error.message
        ))),
    }
}

async fn apply_pending(conn: &Conn<'_>, backend: Backend) -> Result<()> {
    if backend == Backend::Postgres {
        conn.execute(
            "SELECT pg_advisory_xact_lock",
            "SELECT pg_advisory_xact_lock($1)::text",
            &params![ADVISORY_LOCK],
        )
        .await?;
    }
    conn.batch(
        "CREATE ordo_migrations",
        "CREATE TABLE IF NOT EXISTS ordo_migrations (
             version       BIGINT PRIMARY KEY,
             description   TEXT NOT NULL,
             applied_at_ms BIGINT NOT NULL
         )",
    )
    .await?;
    let mut applied: Vec<i64> = conn
        .query(
            "SELECT ordo_migrations",
            "SELECT version FROM ordo_migrations",
            &[],
            |row| row.get(0),
        )
        .await?;
    if applied.is_empty() {
        applied = sqlx_history(conn, backend).await?;
        for version in &applied {
            record(conn, *version, "applied before (sqlx)").await?;
        }
    }
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        let sql = match backend {
            Backend::Sqlite => migration.sqlite,
            Backend::Postgres => migration.postgres,
        };
        conn.batch("MIGRATE", sql).await.inspect_err(|_| {
            tracing::error!(migration = migration.description, "migration failed");
        })?;
        if backend == Backend::Sqlite {
            // At once, not after the last one: a later migration's `ALTER TABLE` must edit
            // the definition as it is now, not as this connection parsed it before.
            reload_sqlite_schema(conn).await?;
        }
        record(conn, migration.version, migration.description).await?;
        tracing::info!(migration = migration.description, "migration applied");
    }
    Ok(())
}

/// A SQLite migration may edit a table's definition in `sqlite_master` (widening a CHECK):
/// a new schema version makes every connection, this one included, read the definitions
/// again instead of enforcing (or altering) the ones it parsed before.
async fn reload_sqlite_schema(conn: &Conn<'_>) -> Result<()> {
    let version: i64 = conn
        .query_one(
            "PRAGMA schema_version",
            "PRAGMA schema_version",
            &[],
            |row| row.get(0),
        )
        .await?;
    conn.batch(
        "PRAGMA schema_version",
        &format!("PRAGMA schema_version = {}", version + 1),
    )
    .await
}

async fn record(conn: &Conn<'_>, version: i64, description: &str) -> Result<()> {
    conn.execute(
        "INSERT ordo_migrations",
        "INSERT INTO ordo_migrations (version, description, applied_at_ms) VALUES ($1, $2, $3)",
        &params![version, description, now_ms()],
    )
    .await?;
    Ok(())
}

/// The versions sqlx recorded as applied, if this database was migrated by sqlx.
async fn sqlx_history(conn: &Conn<'_>, backend: Backend) -> Result<Vec<i64>> {
    let exists = match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename = '_sqlx_migrations'"
        }
    };
    let count: i64 = conn
        .query_one("SELECT tables", exists, &[], |row| row.get(0))
        .await?;
    if count == 0 {
        return Ok(Vec::new());
    }
    conn.query(
        "SELECT _sqlx_migrations",
        "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        &[],
        |row| row.get(0),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ascending_and_unique() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        for migration in MIGRATIONS {
            assert!(
                migration
                    .description
                    .starts_with(&format!("{:04}_", migration.version))
            );
        }
    }
}

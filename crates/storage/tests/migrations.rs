//! A database migrated by an earlier ordo (through sqlx, history in `_sqlx_migrations`) is
//! migrated forward by this one: its data stays, only the missing migrations run, and running
//! again changes nothing. SQLite always; PostgreSQL when reachable (required in CI).

use ordo_storage::Database;

/// The migrations sqlx applied before ordo migrated by itself.
const SQLX_ERA: [(i64, &str, &str); 5] = [
    (
        1,
        include_str!("../migrations/sqlite/0001_foundation.sql"),
        include_str!("../migrations/postgres/0001_foundation.sql"),
    ),
    (
        2,
        include_str!("../migrations/sqlite/0002_payments.sql"),
        include_str!("../migrations/postgres/0002_payments.sql"),
    ),
    (
        3,
        include_str!("../migrations/sqlite/0003_outbox.sql"),
        include_str!("../migrations/postgres/0003_outbox.sql"),
    ),
    (
        4,
        include_str!("../migrations/sqlite/0004_fulfillment.sql"),
        include_str!("../migrations/postgres/0004_fulfillment.sql"),
    ),
    (
        5,
        include_str!("../migrations/sqlite/0005_outbox_attempts.sql"),
        include_str!("../migrations/postgres/0005_outbox_attempts.sql"),
    ),
];

const SQLX_TABLE: &str = "CREATE TABLE _sqlx_migrations (
    version BIGINT PRIMARY KEY, description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)";

const A_PRODUCT: &str = "INSERT INTO products (sku, name, price_minor, currency, created_at_ms,
    updated_at_ms) VALUES ('OLD-1', 'Kept', 500, 'EUR', 1, 1)";

async fn assert_migrated_forward(url: &str) {
    let db = Database::connect(url, 2).await.unwrap();
    db.migrate().await.unwrap();
    let product = db
        .product("OLD-1")
        .await
        .unwrap()
        .expect("the old row stays");
    assert_eq!(product.name, "Kept");
    let versions: Vec<Vec<i64>> = db
        .query_unchecked("SELECT version FROM ordo_migrations ORDER BY version")
        .await
        .unwrap();
    assert_eq!(versions.concat(), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // The widened status list and the added column are in force on this very connection
    // pool (SQLite: the definition edited in place, then re-read).
    db.execute_unchecked(
        "INSERT INTO orders (id, customer_id, status, currency, total_minor, shipping_address,
             contact, created_at_ms, updated_at_ms, trace_id, span_id,
             personal_data_erased_at_ms)
         VALUES ('ord_pos', 'pos:till', 'completed', 'USD', 100, 'null', 'null', 1, 1, 't', 's',
             NULL)",
    )
    .await
    .expect("a completed order fits the migrated schema");
    // Again: nothing to do, nothing changes.
    db.migrate().await.unwrap();
    let count: Vec<Vec<i64>> = db
        .query_unchecked("SELECT COUNT(*) FROM ordo_migrations")
        .await
        .unwrap();
    assert_eq!(count, [[9]]);
    db.close().await;
}

#[tokio::test]
async fn a_sqlite_database_of_the_sqlx_era_is_migrated_forward() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let old = rusqlite::Connection::open(&path).unwrap();
        old.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        old.execute_batch(&SQLX_TABLE.replace("BYTEA", "BLOB"))
            .unwrap();
        for (version, sqlite, _) in SQLX_ERA {
            old.execute_batch(sqlite).unwrap();
            old.execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum,
                     execution_time) VALUES (?1, 'old', 1, x'00', 1)",
                [version],
            )
            .unwrap();
        }
        old.execute_batch(A_PRODUCT).unwrap();
    }
    assert_migrated_forward(&format!("sqlite://{}", path.display())).await;
}

#[tokio::test]
async fn a_postgres_database_of_the_sqlx_era_is_migrated_forward() {
    let admin = std::env::var("ORDO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let (client, connection) = match tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
        Ok(pair) => pair,
        Err(error) if std::env::var_os("CI").is_some() => {
            panic!("PostgreSQL at {admin} is unreachable in CI: {error}")
        }
        Err(error) => {
            eprintln!("SKIPPED: PostgreSQL unreachable at {admin}: {error}");
            return;
        }
    };
    tokio::spawn(connection);
    let name = format!("ordo_migrations_{}", std::process::id());
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await
        .unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    {
        let (old, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(connection);
        old.batch_execute(SQLX_TABLE).await.unwrap();
        for (version, _, postgres) in SQLX_ERA {
            old.batch_execute(postgres).await.unwrap();
            old.execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum,
                     execution_time) VALUES ($1, 'old', true, '\\x00', 1)",
                &[&version],
            )
            .await
            .unwrap();
        }
        old.batch_execute(A_PRODUCT).await.unwrap();
        drop(old);
        let _ = task.await;
    }
    assert_migrated_forward(&url).await;
    // ordo's own connections carry the server-side statement time-out (migrations lift it).
    let db = ordo_storage::Database::connect(&url, 2).await.unwrap();
    let timeout: Vec<Vec<String>> = db.query_unchecked("SHOW statement_timeout").await.unwrap();
    assert_eq!(timeout, [["1500ms"]]);
    db.close().await;
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
}

//! Backends and their databases: a SQLite file or a PostgreSQL database of the test's own, and SQL
//! on a running server's database beside it.

use crate::*;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::time::Duration;

/// The storage a test server runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file in the server's temporary directory.
    Sqlite,
    /// A fresh database created on the PostgreSQL server at `admin_url`.
    Postgres { admin_url: String },
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend::Sqlite
    }

    /// The PostgreSQL backend, or `None` (after a loud notice on stderr) when its server is
    /// unreachable outside CI. In CI (`CI` set) an unreachable server fails the test.
    pub async fn postgres() -> Option<Backend> {
        let admin_url = postgres_admin_url();
        match connect_postgres(&admin_url).await {
            Ok(connection) => {
                connection.close().await;
                Some(Backend::Postgres { admin_url })
            }
            Err(reason) if std::env::var_os("CI").is_some() => {
                panic!("PostgreSQL at {admin_url} is unreachable in CI: {reason}")
            }
            Err(reason) => {
                eprintln!(
                    "\n**********************************************************\n\
                     SKIPPED: postgres unreachable at {admin_url}: {reason}\n\
                     (set ORDO_TEST_POSTGRES_URL or run scripts/test.sh)\n\
                     **********************************************************\n"
                );
                None
            }
        }
    }

    /// A database URL of this backend's kind that cannot be opened, for start-up failure tests.
    pub fn unreachable_database_url(&self, workdir: &Path) -> String {
        match self {
            Backend::Sqlite => {
                // A directory cannot be created under a regular file.
                let file = workdir.join("not-a-directory");
                std::fs::write(&file, b"").expect("write a plain file");
                format!("sqlite://{}/ordo.db", file.display())
            }
            Backend::Postgres { .. } => "postgres://postgres@127.0.0.1:1/x".to_owned(),
        }
    }
}

fn postgres_admin_url() -> String {
    std::env::var("ORDO_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

async fn connect_postgres(url: &str) -> Result<ordo_storage::Database, String> {
    let connect = ordo_storage::Database::connect(url, 1);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("connection timed out after 5 s".to_owned()),
    }
}

/// Runs one statement on the PostgreSQL server at `admin_url`.
async fn postgres_execute(admin_url: &str, statement: String) -> Result<(), String> {
    let connection = connect_postgres(admin_url).await?;
    let result = connection.execute_unchecked(&statement).await;
    connection.close().await;
    result.map(|_| ()).map_err(|error| error.to_string())
}

/// `url` with its path (the database name) replaced by `database`, query string kept.
fn with_database_name(url: &str, database: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let (base, query) = match url.find('?') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let host_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{database}{query}", &base[..host_end])
}

/// A test's own database; a PostgreSQL one is dropped (best effort) with it.
pub struct TestDatabase {
    pub url: String,
    postgres: Option<(String, String)>, // (admin URL, database name)
}

impl TestDatabase {
    pub async fn create(backend: &Backend, workdir: &Path) -> TestDatabase {
        match backend {
            Backend::Sqlite => TestDatabase {
                url: format!("sqlite://{}/ordo.db", workdir.display()),
                postgres: None,
            },
            Backend::Postgres { admin_url } => {
                let name = format!("ordo_test_{}", random_hex());
                postgres_execute(admin_url, format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
                TestDatabase {
                    url: with_database_name(admin_url, &name),
                    postgres: Some((admin_url.clone(), name)),
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread with a
        // runtime of its own, and give up quietly after a few seconds.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                tokio::time::timeout(
                    Duration::from_secs(10),
                    postgres_execute(&admin_url, statement),
                )
                .await
                .ok()
            })
        });
        let _ = dropper.join();
    }
}

/// 64 random bits in hex, from the standard library's randomly seeded hasher.
pub fn random_hex() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// (rows, published rows, largest number of claims of any row) of the server's outbox, read
/// straight from its database.
pub async fn outbox_state(server: &TestServer) -> (i64, i64, i64) {
    let rows = sql_i64s(
        server,
        "SELECT COUNT(*), COUNT(published_at_ms), COALESCE(MAX(attempts), 0) FROM outbox",
    )
    .await;
    (rows[0][0], rows[0][1], rows[0][2])
}

/// Runs `statement` on the PostgreSQL server of a PostgreSQL test server, connected to its
/// maintenance database (for statements about the server's own database: `ALTER DATABASE`,
/// `pg_terminate_backend`); `{database}` in `statement` is replaced by that database's name.
pub async fn postgres_admin_execute(server: &TestServer, statement: &str) {
    let Some((admin_url, name)) = &server.database.postgres else {
        panic!("not a PostgreSQL test server");
    };
    postgres_execute(admin_url, statement.replace("{database}", name))
        .await
        .unwrap_or_else(|e| panic!("{statement} failed: {e}"));
}

/// Runs `statement` on the server's database, beside the server; returns the rows it changed.
pub async fn sql_execute(server: &TestServer, statement: &str) -> u64 {
    let db = ordo_storage::Database::connect(server.database_url(), 1)
        .await
        .expect("connect to the test database");
    let changed = db
        .execute_unchecked(statement)
        .await
        .expect("run the statement");
    db.close().await;
    changed
}

/// The rows of `query` on the server's database, every column an integer.
pub async fn sql_i64s(server: &TestServer, query: &str) -> Vec<Vec<i64>> {
    sql_rows(server, query).await
}

/// The rows of `query` on the server's database, every column text.
pub async fn sql_texts(server: &TestServer, query: &str) -> Vec<Vec<String>> {
    sql_rows(server, query).await
}

async fn sql_rows<T: ordo_storage::sql::Column>(server: &TestServer, query: &str) -> Vec<Vec<T>> {
    let db = ordo_storage::Database::connect(server.database_url(), 1)
        .await
        .expect("connect to the test database");
    let rows = db.query_unchecked(query).await.expect("run the query");
    db.close().await;
    rows
}

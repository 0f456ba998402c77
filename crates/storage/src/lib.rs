//! Storage adapters of ordo: SQLite (the embedded default, rusqlite) and PostgreSQL
//! (tokio-postgres), each through its native driver behind one port ([`Database`], [`WriteTx`]),
//! with each dialect's migrations under `migrations/`.
//!
//! Layout:
//! - [`Database`]: connecting, migrating, health; the read pool and the write path.
//! - [`transaction`]: [`WriteTx`], the steps of a write that commit together; the steps live
//!   with their tables, one module per aggregate:
//! - [`catalog`]: products, warehouses and stock levels; [`stock`]: reservations.
//! - [`erasure`]: erasure of a customer's personal data, and scrubbing the files after it.
//! - [`pos`]: the batches POS terminals sync and the sales in them.
//! - [`cache`]: the in-process caches of order and product reads, invalidated after every
//!   commit that changed them (`WriteTx` and placement batches report the orders they touched).
//! - [`orders`]: orders and their items; [`timeline`]: an order's timeline entries;
//!   [`idempotency`]: the keys of order creations.
//! - [`placement`]: order creation, batched (one statement per batch on PostgreSQL).
//! - [`payments`]: payment intents, provider callback events, the unpaid orders to time out.
//! - [`shipments`]: shipments and their items.
//! - [`outbox`]: appending events in a write, and the relay's claims; processed-event ids.
//! - [`records`]: the row shapes handed to the service layer, statuses as domain enums.
//! - [`sql`]: the one way a statement reaches a driver (parameters, rows, spans, time-out).
//!
//! Invariants a reader must not break:
//! - Stock changes are conditional updates (`... WHERE reserved + n <= on_hand`, or checks
//!   against rows `ordo_place_orders` locked in (sku, warehouse) order). Nothing reads a
//!   level, decides in Rust, and writes it back unguarded.
//! - A state change and everything that must happen with it commit in one [`WriteTx`].
//! - SQLite has one writer connection: writes queue in-process instead of failing with
//!   `SQLITE_BUSY`; reads use connections of their own and never block on writes (WAL).

pub mod cache;
pub mod catalog;
mod connect;
mod deferred;
pub mod erasure;
mod error;
mod group_commit;
pub mod idempotency;
mod migrate;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod placement;
pub mod pos;
pub mod records;
pub mod shipments;
pub mod sql;
pub mod stock;
pub mod timeline;
pub mod transaction;

pub use transaction::WriteTx;

use ordo_domain::{Error, Result};
use sql::Conn;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// The one database ordo uses, and its connections.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Connections>,
    /// Where order placements queue for their batch (none in the task that writes them).
    placements: Option<placement::Queue>,
    /// Order reads, invalidated by every write that changes an order ([`cache`]).
    orders_cache: Arc<cache::ReadCache<records::OrderSnapshot>>,
    /// Product reads, invalidated by the upsert of the product.
    products_cache: Arc<cache::ReadCache<records::ProductRecord>>,
}

pub(crate) enum Connections {
    Postgres(PostgresConnections),
    Sqlite(SqliteConnections),
}

/// A pool of tokio-postgres connections, each caching its prepared statements. Transactions
/// and writes take a connection of their own; reads share a few connections held aside, where
/// tokio-postgres pipelines the statements of concurrent requests (one server process answers
/// many reads in a row, instead of many processes taking turns on the cores).
///
/// A read goes to the first shared connection with fewer than [`SPILL_AFTER`] reads in flight:
/// the reads pipeline as deep as they can on one server process, and spill to the next
/// connection only past that depth, which bounds the wait behind a slow statement. On two
/// cores, uncached reads (BENCHMARKS.md, session 10): four connections taken in turn 13–14k/s,
/// p99 55 ms; spilling after 16 reads 15k/s, p99 48 ms; after 64, 19–20k/s, p99 110–136 ms
/// (the tail: everything waits when the one busy server process is descheduled).
pub(crate) struct PostgresConnections {
    pub(crate) pool: deadpool_postgres::Pool,
    readers: Vec<SharedReader>,
}

/// One connection the reads share, and how many reads it carries now.
#[derive(Default)]
struct SharedReader {
    client: StdMutex<Option<Arc<deadpool_postgres::Object>>>,
    in_flight: Arc<AtomicUsize>,
}

impl PostgresConnections {
    /// The first shared connection with room in its pipeline, else the least busy one.
    fn reader(&self) -> &SharedReader {
        let load = |reader: &SharedReader| reader.in_flight.load(Ordering::Relaxed);
        self.readers
            .iter()
            .find(|reader| load(reader) < SPILL_AFTER)
            .or_else(|| self.readers.iter().min_by_key(|reader| load(reader)))
            .expect("read() checks that there are shared readers")
    }
}

/// A read's turn on a shared connection: counted in its reads in flight until dropped.
pub(crate) struct SharedLease {
    client: Arc<deadpool_postgres::Object>,
    /// Held for its drop.
    _in_flight: InFlight,
}

/// One read in flight on a shared connection, for as long as it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many pooled connections the reads share, at most.
const SHARED_READERS: usize = 4;
/// Reads in flight on one shared connection before the next one takes the overflow.
const SPILL_AFTER: usize = 16;

/// SQLite allows one writer at a time: writes queue for the writer's turn (in-process, never
/// `SQLITE_BUSY`); reads run on connections of their own beside the writer (WAL). Statements
/// run inline on the calling task: microseconds each, never held across an `.await`.
pub(crate) struct SqliteConnections {
    /// The writer's turn, and the group commit of the transactions queued for it.
    pub(crate) group: Arc<group_commit::GroupCommit>,
    pub(crate) writer: Arc<StdMutex<rusqlite::Connection>>,
    pub(crate) readers: Vec<StdMutex<rusqlite::Connection>>,
    pub(crate) next_reader: AtomicUsize,
    pub(crate) _checkpointer: connect::Checkpointer,
    pub(crate) file: Arc<connect::FileWatch>,
}

/// A connection for a read, or for a write outside a [`WriteTx`].
// A pooled client is large; a lease lives briefly on one task's stack, so it is not boxed.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Lease<'d> {
    Postgres(deadpool_postgres::Object),
    PostgresShared(SharedLease),
    SqliteRead(&'d StdMutex<rusqlite::Connection>),
    SqliteWrite {
        _turn: tokio::sync::OwnedMutexGuard<()>,
        connection: &'d StdMutex<rusqlite::Connection>,
    },
}

impl Lease<'_> {
    pub(crate) fn conn(&self) -> Conn<'_> {
        match self {
            Lease::Postgres(client) => Conn::Pg {
                client,
                begin_first: false,
            },
            Lease::PostgresShared(lease) => Conn::Pg {
                client: &lease.client,
                begin_first: false,
            },
            Lease::SqliteRead(connection) | Lease::SqliteWrite { connection, .. } => {
                Conn::Sqlite(connection)
            }
        }
    }
}

impl Database {
    /// Connects and checks the database answers. For SQLite the file (and its folder) is
    /// created when missing. Reads are cached in process only.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Database> {
        Database::connect_with_cache(url, max_connections, None).await
    }

    /// [`Database::connect`], with order and product reads cached in `shared` (Redis) too.
    pub async fn connect_with_cache(
        url: &str,
        max_connections: u32,
        shared: Option<Arc<cache::shared::SharedCache>>,
    ) -> Result<Database> {
        let connections = match Backend::from_url(url)? {
            Backend::Sqlite => Connections::Sqlite(connect::sqlite(url, max_connections)?),
            Backend::Postgres => {
                let pool = connect::postgres(url, max_connections)?;
                // Leave most of the pool to transactions.
                let shared = SHARED_READERS.min(max_connections as usize / 2);
                Connections::Postgres(PostgresConnections {
                    pool,
                    readers: (0..shared).map(|_| SharedReader::default()).collect(),
                })
            }
        };
        let inner = Arc::new(connections);
        let orders_cache = Arc::new(cache::ReadCache::new("order", shared.clone()));
        let products_cache = Arc::new(cache::ReadCache::new("product", shared));
        let writer = Database {
            inner: Arc::clone(&inner),
            placements: None,
            orders_cache: Arc::clone(&orders_cache),
            products_cache: Arc::clone(&products_cache),
        };
        writer.ping().await?;
        Ok(Database {
            inner,
            orders_cache,
            products_cache,
            placements: Some(placement::start(writer)),
        })
    }

    pub fn backend(&self) -> Backend {
        match &*self.inner {
            Connections::Postgres(_) => Backend::Postgres,
            Connections::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies the migrations of this backend's dialect that have not run yet.
    pub async fn migrate(&self) -> Result<()> {
        migrate::run(self).await
    }

    /// Answers whether the database can run a query now (the readiness check). Probes run
    /// every second or so (gRPC health, `/readyz`, start-up): housekeeping, never exported as
    /// traces (the statement is still timed in the database histogram).
    pub async fn ping(&self) -> Result<()> {
        use tracing::Instrument;
        // On SQLite `SELECT 1` never opens the file: read its schema, which needs the lock
        // every query needs, so a file another process holds (or that is gone) fails the probe.
        let probe = match self.backend() {
            Backend::Postgres => "SELECT 1",
            Backend::Sqlite => "SELECT count(*) FROM sqlite_master",
        };
        async {
            let lease = self.read().await?;
            lease.conn().batch("SELECT 1", probe).await
        }
        .instrument(ordo_telemetry::propagation::unexported_span(
            "database ping",
        ))
        .await
    }

    /// Closes the connections; statements in flight finish first.
    pub async fn close(&self) {
        match &*self.inner {
            Connections::Postgres(postgres) => {
                for reader in &postgres.readers {
                    crate::sql::lock_any(&reader.client).take();
                }
                postgres.pool.close()
            }
            Connections::Sqlite(sqlite) => {
                // Waits for the write in progress; SQLite connections close when dropped.
                let _turn = sqlite.group.turn().await;
                let _ = sqlite.group.commit(&sql::lock_any(&sqlite.writer));
            }
        }
    }

    /// A connection for a read: one shared by concurrent reads on PostgreSQL (or one of its
    /// own when the pool is too small to share), one of the reader connections on SQLite.
    pub(crate) async fn read(&self) -> Result<Lease<'_>> {
        match &*self.inner {
            Connections::Postgres(postgres) if postgres.readers.is_empty() => self.write().await,
            Connections::Postgres(postgres) => {
                let reader = postgres.reader();
                let in_flight = InFlight::enter(&reader.in_flight);
                let shared = crate::sql::lock_any(&reader.client).clone();
                if let Some(client) = shared
                    && !client.is_closed()
                {
                    return Ok(Lease::PostgresShared(SharedLease {
                        client,
                        _in_flight: in_flight,
                    }));
                }
                // First use, or the connection broke: a fresh one from the pool.
                let fresh = Arc::new(postgres.pool.get().await.map_err(error::pool_error)?);
                *crate::sql::lock_any(&reader.client) = Some(Arc::clone(&fresh));
                Ok(Lease::PostgresShared(SharedLease {
                    client: fresh,
                    _in_flight: in_flight,
                }))
            }
            Connections::Sqlite(sqlite) => {
                sqlite.file.ensure_present()?;
                let index = sqlite.next_reader.fetch_add(1, Ordering::Relaxed);
                Ok(Lease::SqliteRead(
                    &sqlite.readers[index % sqlite.readers.len()],
                ))
            }
        }
    }

    /// A connection of the caller's own for a write outside a [`WriteTx`]: from the pool on
    /// PostgreSQL (never a shared one: a long statement must not hold up the reads behind
    /// it), the writer's turn on SQLite.
    pub(crate) async fn write(&self) -> Result<Lease<'_>> {
        match &*self.inner {
            Connections::Postgres(postgres) => postgres
                .pool
                .get()
                .await
                .map(Lease::Postgres)
                .map_err(error::pool_error),
            Connections::Sqlite(sqlite) => {
                sqlite.file.ensure_present()?;
                let turn = sqlite.group.turn().await;
                // A statement of its own runs outside any group: the open one commits first.
                sqlite.group.commit(&sql::lock_any(&sqlite.writer))?;
                Ok(Lease::SqliteWrite {
                    _turn: turn,
                    connection: &sqlite.writer,
                })
            }
        }
    }

    /// Runs one statement given as text, outside any transaction; returns the rows it changed.
    /// For operators' tools and tests: the text is trusted, never built from input.
    pub async fn execute_unchecked(&self, sql: &str) -> Result<u64> {
        let lease = self.write().await?;
        lease.conn().execute("SQL", sql, &[]).await
    }

    /// Runs one query given as text and returns every column of every row as `T`. For
    /// operators' tools and tests, like [`Database::execute_unchecked`].
    pub async fn query_unchecked<T: sql::Column>(&self, sql: &str) -> Result<Vec<Vec<T>>> {
        let lease = self.read().await?;
        lease
            .conn()
            .query("SQL", sql, &[], |row| {
                (0..row.len()).map(|index| row.get(index)).collect()
            })
            .await
    }

    pub(crate) fn connections(&self) -> &Connections {
        &self.inner
    }

    pub(crate) fn orders_cache(&self) -> &Arc<cache::ReadCache<records::OrderSnapshot>> {
        &self.orders_cache
    }
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
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }
}

//! The one way a statement reaches a database: native drivers (tokio-postgres, rusqlite) behind
//! a borrowed connection ([`Conn`]), typed parameters ([`Param`]) and rows read straight from the
//! driver's own row ([`RowRef`]), with no generic value in between.
//!
//! Every round trip runs in one database CLIENT span (OpenTelemetry database conventions:
//! `db.system.name`, `db.operation.name`, `db.query.summary`; never values) and is timed into
//! `db_client_operation_duration_seconds`, so no statement goes unobserved.
//!
//! SQL is written once, in PostgreSQL's `$n` style. SQLite reads `$1` as a parameter *named*
//! "$1" and numbers parameters in order of first appearance, so every statement must name its
//! parameters in ascending order of first use (`$1` before `$2`...); debug builds check it.

use crate::Backend;
use crate::error::{pg_error, sqlite_error};
use ordo_domain::named::Named;
use ordo_domain::{Error, Result};
use ordo_telemetry::client_span::{ClientSpan, KeyValue};
use std::time::{Duration, Instant};
use tracing::{Instrument, field};

/// How long one round trip may take before the caller gets `unavailable`: a database that stops
/// answering must not hold requests to their own time-out (the contract: `503` within 2 s).
/// PostgreSQL also ends a statement itself after [`crate::connect::SERVER_STATEMENT_TIMEOUT`]
/// (lock waits included), which frees its connection; this bound covers a server that answers
/// nothing at all. Migrations run without either ([`unbounded`]).
pub(crate) const STATEMENT_TIMEOUT: Duration = Duration::from_millis(1900);

/// A statement parameter: the few types ordo stores (BIGINT and TEXT, each maybe NULL).
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int(i64),
    Text(&'a str),
    OptInt(Option<i64>),
    OptText(Option<&'a str>),
}

impl From<i64> for Param<'_> {
    fn from(value: i64) -> Self {
        Param::Int(value)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(value: &'a str) -> Self {
        Param::Text(value)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(value: &'a String) -> Self {
        Param::Text(value)
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Param::OptText(value)
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(value: Option<i64>) -> Self {
        Param::OptInt(value)
    }
}

/// `params![a, b, c]`: a `[Param; n]` from values convertible into [`Param`].
macro_rules! params {
    ($($value:expr),* $(,)?) => { [$($crate::sql::Param::from($value)),*] };
}
pub(crate) use params;

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            Param::Int(value) => ToSqlOutput::Owned(Value::Integer(*value)),
            Param::Text(value) => ToSqlOutput::Borrowed(ValueRef::Text(value.as_bytes())),
            Param::OptInt(Some(value)) => ToSqlOutput::Owned(Value::Integer(*value)),
            Param::OptText(Some(value)) => ToSqlOutput::Borrowed(ValueRef::Text(value.as_bytes())),
            Param::OptInt(None) | Param::OptText(None) => ToSqlOutput::Owned(Value::Null),
        })
    }
}

/// A value a column can be read as, from either driver.
pub trait Column: for<'a> tokio_postgres::types::FromSql<'a> + rusqlite::types::FromSql {}
impl<T: for<'a> tokio_postgres::types::FromSql<'a> + rusqlite::types::FromSql> Column for T {}

/// One row as the driver returned it.
pub enum RowRef<'r> {
    Pg(&'r tokio_postgres::Row),
    Sqlite(&'r rusqlite::Row<'r>),
}

impl RowRef<'_> {
    /// How many columns the row has.
    pub fn len(&self) -> usize {
        match self {
            RowRef::Pg(row) => row.len(),
            RowRef::Sqlite(row) => row.as_ref().column_count(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Column `index` as `T`; a type mismatch is a fault of the schema, not of the caller.
    pub fn get<T: Column>(&self, index: usize) -> Result<T> {
        match self {
            RowRef::Pg(row) => row.try_get(index).map_err(pg_error),
            RowRef::Sqlite(row) => row.get(index).map_err(sqlite_error),
        }
    }

    /// Column `index` parsed into the domain's named value (a status, a timeline kind): rows
    /// become domain types here, at the seam, and nowhere else.
    pub fn named<T: Named>(&self, index: usize) -> Result<T> {
        T::parse(&self.get::<String>(index)?).map_err(corrupt_row)
    }
}

/// A JSON value a statement built from stored rows (an aggregate of child rows), parsed; one
/// that does not parse is a corrupt row.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json)
        .map_err(|error| corrupt_row(Error::internal(format!("a JSON column: {error}"))))
}

/// A stored value that no longer parses: storage was written by something other than ordo.
pub(crate) fn corrupt_row(error: Error) -> Error {
    tracing::error!(error = %error, "a stored row failed validation");
    Error::internal("a stored row is not valid")
}

/// A borrowed connection, inside or outside a transaction.
pub enum Conn<'c> {
    Pg {
        client: &'c deadpool_postgres::ClientWrapper,
        /// A transaction that has not sent its `BEGIN` yet sends it together with this
        /// statement (pipelined: one round trip for both).
        begin_first: bool,
    },
    /// Behind a mutex only to be `Sync` (futures holding it cross threads): whoever holds a
    /// `Conn` owns the connection already, so the lock is never contended for long; it is
    /// held for one statement and never across an `.await`.
    Sqlite(&'c std::sync::Mutex<rusqlite::Connection>),
}

impl Conn<'_> {
    fn backend(&self) -> Backend {
        match self {
            Conn::Pg { .. } => Backend::Postgres,
            Conn::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Runs a statement that returns rows, mapping each with `map`.
    pub async fn query<T>(
        &self,
        summary: &'static str,
        sql: &str,
        params: &[Param<'_>],
        map: impl Fn(&RowRef<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        observed(self.backend(), summary, async {
            match self {
                Conn::Pg {
                    client,
                    begin_first,
                } => {
                    let rows = pg_round_trip(client, *begin_first, async {
                        let statement = client.prepare_cached(sql).await?;
                        client.query(&statement, &pg_params(params)).await
                    })
                    .await?;
                    rows.iter().map(|row| map(&RowRef::Pg(row))).collect()
                }
                Conn::Sqlite(connection) => {
                    let connection = lock_any(connection);
                    let mut statement = sqlite_prepare(&connection, sql, params.len())?;
                    let mut rows = statement
                        .query(rusqlite::params_from_iter(params))
                        .map_err(sqlite_error)?;
                    let mut out = Vec::new();
                    while let Some(row) = rows.next().map_err(sqlite_error)? {
                        out.push(map(&RowRef::Sqlite(row))?);
                    }
                    Ok(out)
                }
            }
        })
        .await
    }

    /// Runs a statement that returns at most one row.
    pub async fn query_opt<T>(
        &self,
        summary: &'static str,
        sql: &str,
        params: &[Param<'_>],
        map: impl Fn(&RowRef<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut rows = self.query(summary, sql, params, map).await?;
        if rows.len() > 1 {
            return Err(Error::internal(format!("{summary} returned several rows")));
        }
        Ok(rows.pop())
    }

    /// Runs a statement that returns exactly one row.
    pub async fn query_one<T>(
        &self,
        summary: &'static str,
        sql: &str,
        params: &[Param<'_>],
        map: impl Fn(&RowRef<'_>) -> Result<T>,
    ) -> Result<T> {
        self.query_opt(summary, sql, params, map)
            .await?
            .ok_or_else(|| Error::internal(format!("{summary} returned no row")))
    }

    /// Runs a statement without rows; returns how many rows it changed.
    pub async fn execute(
        &self,
        summary: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<u64> {
        observed(self.backend(), summary, async {
            match self {
                Conn::Pg {
                    client,
                    begin_first,
                } => {
                    pg_round_trip(client, *begin_first, async {
                        let statement = client.prepare_cached(sql).await?;
                        client.execute(&statement, &pg_params(params)).await
                    })
                    .await
                }
                Conn::Sqlite(connection) => {
                    let connection = lock_any(connection);
                    let mut statement = sqlite_prepare(&connection, sql, params.len())?;
                    statement
                        .execute(rusqlite::params_from_iter(params))
                        .map(|changed| changed as u64)
                        .map_err(sqlite_error)
                }
            }
        })
        .await
    }

    /// Runs SQL text of one or more statements without parameters (transaction control,
    /// migrations).
    pub async fn batch(&self, summary: &'static str, sql: &str) -> Result<()> {
        observed(self.backend(), summary, async {
            match self {
                Conn::Pg {
                    client,
                    begin_first,
                } => pg_round_trip(client, *begin_first, client.batch_execute(sql)).await,
                Conn::Sqlite(connection) => lock_any(connection)
                    .execute_batch(sql)
                    .map_err(sqlite_error),
            }
        })
        .await
    }
}

/// A parameter owned by a statement that waits for its transaction's commit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OwnedParam {
    Int(i64),
    Text(String),
    OptInt(Option<i64>),
    OptText(Option<String>),
}

impl From<&Param<'_>> for OwnedParam {
    fn from(param: &Param<'_>) -> Self {
        match param {
            Param::Int(value) => OwnedParam::Int(*value),
            Param::Text(value) => OwnedParam::Text((*value).to_owned()),
            Param::OptInt(value) => OwnedParam::OptInt(*value),
            Param::OptText(value) => OwnedParam::OptText(value.map(str::to_owned)),
        }
    }
}

impl OwnedParam {
    fn borrowed(&self) -> Param<'_> {
        match self {
            OwnedParam::Int(value) => Param::Int(*value),
            OwnedParam::Text(value) => Param::Text(value),
            OwnedParam::OptInt(value) => Param::OptInt(*value),
            OwnedParam::OptText(value) => Param::OptText(value.as_deref()),
        }
    }
}

/// Commits a PostgreSQL transaction in one round trip: the pending `BEGIN` (if nothing else
/// was sent), the deferred writes (merged per kind: [`crate::deferred`]) and `COMMIT` are
/// written before any answer is awaited. One CLIENT span `COMMIT`, with
/// `db.operation.batch.size` (the writes it carried, plus the commit) when writes rode along.
/// A failed write fails the commit (the server then ends the transaction with a rollback).
pub(crate) async fn pg_commit(
    client: &deadpool_postgres::ClientWrapper,
    begin_first: bool,
    deferred: &[crate::deferred::Deferred],
) -> Result<()> {
    let batch_size = (!deferred.is_empty()).then_some(deferred.len() + 1);
    observed_with(Backend::Postgres, "COMMIT", batch_size, async {
        let merged = crate::deferred::statements(deferred);
        // Prepared first (cached after a connection's first use), so that nothing comes
        // between the requests below: they must reach the server in this order.
        let mut statements = Vec::with_capacity(merged.len());
        for statement in &merged {
            statements.push(
                client
                    .prepare_cached(&statement.sql)
                    .await
                    .map_err(pg_error)?,
            );
        }
        let params: Vec<Vec<Param<'_>>> = merged
            .iter()
            .map(|statement| statement.params.iter().map(|p| p.borrowed()).collect())
            .collect();
        let bound: Vec<_> = params.iter().map(|p| pg_params(p)).collect();
        let begin = async {
            if begin_first {
                client.batch_execute("BEGIN").await
            } else {
                Ok(())
            }
        };
        let writes = futures::future::join_all(
            statements
                .iter()
                .zip(&bound)
                .map(|(statement, params)| client.execute(statement, params)),
        );
        let (begun, written, committed) =
            futures::join!(begin, writes, client.batch_execute("COMMIT"));
        begun.map_err(pg_error)?;
        for result in written {
            result.map_err(pg_error)?;
        }
        committed.map_err(pg_error)
    })
    .await
}

/// Locks a mutex whose data stays valid through a panic of its holder (a SQLite connection:
/// SQLite itself keeps the database consistent; a slot of shared connections).
pub(crate) fn lock_any<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The parameters as tokio-postgres binds them: each value with its own type, so an integer
/// bound to a TEXT parameter is refused, never sent as garbage.
fn pg_params<'p>(params: &'p [Param<'_>]) -> Vec<&'p (dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|param| -> &(dyn tokio_postgres::types::ToSql + Sync) {
            match param {
                Param::Int(value) => value,
                Param::Text(value) => value,
                Param::OptInt(value) => value,
                Param::OptText(value) => value,
            }
        })
        .collect()
}

/// Awaits `work` on `client`, sending a pending `BEGIN` in the same flight when asked.
async fn pg_round_trip<T>(
    client: &tokio_postgres::Client,
    begin_first: bool,
    work: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    if begin_first {
        // Both requests are written before either answer is awaited: tokio-postgres
        // pipelines the requests of concurrently polled futures on one connection.
        let (begun, result) = futures::join!(client.batch_execute("BEGIN"), work);
        begun.map_err(pg_error)?;
        result.map_err(pg_error)
    } else {
        work.await.map_err(pg_error)
    }
}

/// A cached prepared statement; in debug builds, checks the `$n` order rule of this module.
fn sqlite_prepare<'c>(
    connection: &'c rusqlite::Connection,
    sql: &str,
    param_count: usize,
) -> Result<rusqlite::CachedStatement<'c>> {
    let statement = connection.prepare_cached(sql).map_err(sqlite_error)?;
    if cfg!(debug_assertions) {
        assert_eq!(
            statement.parameter_count(),
            param_count,
            "parameter count of {sql}"
        );
        for index in 1..=param_count {
            let expected = format!("${index}");
            assert_eq!(
                statement.parameter_name(index),
                Some(expected.as_str()),
                "parameters of {sql} must first appear in order $1, $2, ..."
            );
        }
    }
    Ok(statement)
}

tokio::task_local! {
    /// Set while a batch runs its statements: the batch is one span, not one per statement.
    static IN_BATCH: ();
    /// Set while statements may run as long as they need (migrations).
    static UNBOUNDED: ();
}

/// Runs `work` without the statement time-out: schema migrations, which may rightly take
/// minutes on a large database (they run at start-up or by `ordo migrate`, never in a request).
pub(crate) async fn unbounded<T>(work: impl Future<Output = T>) -> T {
    UNBOUNDED.scope((), work).await
}

/// Runs `work` with its statements unspanned (still timed): the steps of one batch, which has a
/// span of its own ([`db_span`]).
pub(crate) async fn unspanned<T>(work: impl Future<Output = T>) -> T {
    IN_BATCH.scope((), work).await
}

/// A database CLIENT span named `summary`, child of the current span (OpenTelemetry database
/// conventions; `summary` is static text, never values: it is also a metric label).
pub(crate) fn db_span(backend: Backend, summary: &'static str) -> tracing::Span {
    let operation = summary.split(' ').next().unwrap_or(summary);
    tracing::info_span!(
        "db",
        otel.name = summary,
        otel.kind = "client",
        otel.status_code = field::Empty,
        db.system.name = backend.system_name(),
        db.operation.name = operation,
        db.query.summary = summary,
        db.operation.batch.size = field::Empty,
        error.type = field::Empty,
    )
}

/// Runs `work` in a CLIENT span named `summary` (none inside a batch), timed into the database
/// histogram, bounded by [`STATEMENT_TIMEOUT`]. The span is made straight through
/// OpenTelemetry ([`ClientSpan`]): a statement is a leaf, and the hottest span ordo makes.
pub(crate) async fn observed<T>(
    backend: Backend,
    summary: &'static str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    observed_with(backend, summary, None, work).await
}

/// [`observed`], recording `db.operation.batch.size` when the round trip carried several
/// statements.
async fn observed_with<T>(
    backend: Backend,
    summary: &'static str,
    batch_size: Option<usize>,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let mut span = if IN_BATCH.try_with(|_| ()).is_ok() {
        None
    } else {
        Some(client_span(backend, summary, batch_size))
    };
    let result = timed(backend, summary, work).await;
    if let (Some(span), Err(error)) = (&mut span, &result)
        && error.kind.is_server_fault()
    {
        span.set_error(error.kind.code());
    }
    result
}

/// The CLIENT span of one round trip (OpenTelemetry database conventions; `summary` is static
/// text, never values: it is also a metric label).
fn client_span(backend: Backend, summary: &'static str, batch_size: Option<usize>) -> ClientSpan {
    let operation = summary.split(' ').next().unwrap_or(summary);
    let mut attributes = vec![
        KeyValue::new("db.system.name", backend.system_name()),
        KeyValue::new("db.operation.name", operation),
        KeyValue::new("db.query.summary", summary),
    ];
    if let Some(size) = batch_size {
        attributes.push(KeyValue::new("db.operation.batch.size", size as i64));
    }
    ClientSpan::start(summary, attributes)
}

/// [`observed`] in a `tracing` span of the caller's making (a batch whose span other spans
/// link to).
pub(crate) async fn observed_in<T>(
    span: tracing::Span,
    backend: Backend,
    summary: &'static str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let result = timed(backend, summary, work.instrument(span.clone())).await;
    if let Err(error) = &result
        && error.kind.is_server_fault()
    {
        span.record("otel.status_code", "error");
        span.record("error.type", error.kind.code());
    }
    result
}

/// Runs `work` bounded by [`STATEMENT_TIMEOUT`] and times it into the database histogram.
async fn timed<T>(
    backend: Backend,
    summary: &'static str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let result = if UNBOUNDED.try_with(|_| ()).is_ok() {
        work.await
    } else {
        tokio::time::timeout(STATEMENT_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| {
                tracing::warn!(summary, "database statement timed out");
                Err(Error::unavailable("the database did not answer in time"))
            })
    };
    ordo_telemetry::metrics::observe_db(
        backend.system_name(),
        summary,
        started.elapsed().as_secs_f64(),
    );
    result
}

//! ordo's application services: the use cases behind every transport.
//!
//! REST handlers (and, later, gRPC methods) parse nothing and decide nothing: they hand the
//! request's [`api`] input to a [`Service`] method and render what comes back. So both transports
//! share one set of semantics, one validation and one error model.
//!
//! Layout:
//! - [`api`]: the request inputs and response views (JSON and OpenAPI shapes of the contract).
//! - `catalog`: products, warehouses, stock.
//! - `orders`: create (idempotent, reserving stock atomically), read, list, cancel, timeline.
//!
//! Invariant: every write that changes an order also appends its timeline entry, stamped with
//! the trace and span ids of the step that wrote it, in the same transaction.

pub mod api;
mod catalog;
mod orders;

pub use orders::Created;

use ordo_storage::Database;

/// The use cases of ordo over one database. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    db: Database,
}

impl Service {
    pub fn new(db: Database) -> Self {
        Service { db }
    }

    /// Whether the service can do its work now (the readiness check).
    pub async fn ready(&self) -> ordo_domain::Result<()> {
        self.db.ping().await
    }

    pub fn database(&self) -> &Database {
        &self.db
    }
}

/// The trace and span ids of the running step, for rows and timeline entries. All zeros when
/// telemetry is not installed (a unit test), which readers know as "no trace".
fn step_ids() -> ordo_telemetry::propagation::TraceIds {
    ordo_telemetry::propagation::current_ids().unwrap_or_else(|| {
        ordo_telemetry::propagation::TraceIds {
            trace_id: "0".repeat(32),
            span_id: "0".repeat(16),
        }
    })
}

/// RFC 3339 in UTC with exactly three fractional digits, so that the text sorts like the time.
fn rfc3339(ms: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_milliseconds_render_as_rfc3339_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_700_000_000_100),
            "2023-11-14T22:13:20.100Z"
        );
        assert_eq!(
            super::rfc3339(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
    }
}

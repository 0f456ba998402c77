//! Every statement ordo sends runs in a database CLIENT span (OpenTelemetry database
//! conventions: `db.system.name`, `db.operation.name`, `db.query.summary`; never values) and is
//! timed into `db_client_operation_duration_seconds`. One place, so no query goes unobserved.

use crate::{Backend, db_error};
use std::future::Future;
use std::time::Instant;
use tracing::{Instrument, field};

pub(crate) trait Traced<T>: Future<Output = Result<T, sqlx::Error>> + Sized {
    /// Awaits the statement inside its span; `summary` is `"<OPERATION> <table>"`, static text
    /// (it becomes the span name and a metric label, so it must never carry values).
    async fn traced(self, backend: Backend, summary: &'static str) -> ordo_domain::Result<T> {
        let operation = summary.split(' ').next().unwrap_or(summary);
        let span = tracing::info_span!(
            "db",
            otel.name = summary,
            otel.kind = "client",
            otel.status_code = field::Empty,
            db.system.name = backend.system_name(),
            db.operation.name = operation,
            db.query.summary = summary,
        );
        let started = Instant::now();
        let result = self.instrument(span.clone()).await;
        ordo_telemetry::metrics::observe_db(
            backend.system_name(),
            summary,
            started.elapsed().as_secs_f64(),
        );
        result.map_err(|error| {
            let error = span.in_scope(|| db_error(error));
            if error.kind.is_server_fault() {
                span.record("otel.status_code", "error");
            }
            error
        })
    }
}

impl<T, F: Future<Output = Result<T, sqlx::Error>>> Traced<T> for F {}

//! The timeline of an order: each state change, compensation and payment fact with its time,
//! detail, and the trace and span of the step that wrote it.

use crate::deferred::AtCommit;
use crate::records::TimelineRecord;
use crate::sql::params;
use crate::{Database, WriteTx};
use ordo_domain::Result;
use ordo_domain::timeline::TimelineKind;

impl Database {
    /// The timeline of order `id`, oldest first.
    pub async fn timeline(&self, id: &str) -> Result<Vec<TimelineRecord>> {
        let lease = self.read().await?;
        lease
            .conn()
            .query(
                "SELECT order_events",
                "SELECT at_ms, type, detail, trace_id, span_id FROM order_events
                 WHERE order_id = $1 ORDER BY seq",
                &params![id],
                |row| {
                    Ok(TimelineRecord {
                        at_ms: row.get(0)?,
                        kind: row.named(1)?,
                        detail: row.get(2)?,
                        trace_id: row.get(3)?,
                        span_id: row.get(4)?,
                    })
                },
            )
            .await
    }
}

/// A timeline entry to append.
#[derive(Debug, Clone)]
pub struct NewTimelineEntry<'a> {
    pub order_id: &'a str,
    pub at_ms: i64,
    pub kind: TimelineKind,
    pub detail: &'a str,
    pub trace_id: &'a str,
    pub span_id: &'a str,
}

impl WriteTx {
    /// Appends `entry` (on PostgreSQL it travels with the `COMMIT`).
    pub async fn append_timeline(&mut self, entry: &NewTimelineEntry<'_>) -> Result<()> {
        self.execute_at_commit(
            &APPEND_TIMELINE,
            &params![
                entry.order_id,
                entry.at_ms,
                entry.kind.as_str(),
                entry.detail,
                entry.trace_id,
                entry.span_id,
            ],
        )
        .await
    }
}

pub(crate) static APPEND_TIMELINE: AtCommit = AtCommit::insert(
    "INSERT order_events",
    "INSERT INTO order_events (order_id, at_ms, type, detail, trace_id, span_id)
         VALUES ($1, $2, $3, $4, $5, $6)",
);

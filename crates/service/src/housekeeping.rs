//! The common run of the periodic jobs (payment timeout, saga watchdog, erasure sweep): how
//! they look for work and how their traces read.
//!
//! Looking is never exported, so an idle service does not send a one-span trace every few
//! seconds. A run that finds rows is one root span; the work on each row is a span in that
//! row's own trace (a child of the step that stored its ids), linked to the run's span, so the
//! order's trace shows what the job did to it and the run shows every order it touched.

use ordo_domain::{Error, Result};
use ordo_telemetry::propagation;
use tracing::Instrument;

/// The rows a batch of housekeeping looks at at most, per run.
pub(crate) const BATCH: u32 = 100;

/// What one run found and did.
pub(crate) struct Run {
    /// The rows it found.
    pub found: usize,
    /// The rows its work acted on (the others had changed since it looked).
    pub acted: usize,
    /// The run's span, still open: the job records its outcome in it.
    pub span: tracing::Span,
}

/// Looks for rows with `poll` (in an unexported span named `poll_name`); when there are some,
/// runs `each` on every row inside the run's span `run_span(found)`. `each` answers whether it
/// acted; its first error ends the run (the next run retries).
pub(crate) async fn run<R, Work>(
    poll_name: &'static str,
    poll: impl Future<Output = Result<Vec<R>>>,
    run_span: impl FnOnce(usize) -> tracing::Span,
    mut each: impl FnMut(R) -> Work,
) -> Result<Run>
where
    Work: Future<Output = Result<bool>>,
{
    let rows = poll
        .instrument(propagation::unexported_span(poll_name))
        .await?;
    if rows.is_empty() {
        return Ok(Run {
            found: 0,
            acted: 0,
            span: tracing::Span::none(),
        });
    }
    let found = rows.len();
    let span = run_span(found);
    let acted = async {
        let mut acted = 0;
        for row in rows {
            if each(row).await? {
                acted += 1;
            }
        }
        Ok::<_, Error>(acted)
    }
    .instrument(span.clone())
    .await?;
    Ok(Run { found, acted, span })
}

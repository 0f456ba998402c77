//! A call's time budget and running a call within it. The budget is the request timeout, or
//! less when the caller said how long it waits (gRPC's `grpc-timeout`): then a margin is kept
//! to answer DEADLINE_EXCEEDED before the caller gives up. The call runs with its deadline as
//! the current one (`ordo_telemetry::deadline`), so every call it makes downstream carries
//! what is left of it.

use ordo_domain::{Error, ErrorKind};
use std::future::Future;
use std::time::Duration;

/// Kept from a caller's deadline to answer DEADLINE_EXCEEDED before the caller gives up.
pub const CALLER_MARGIN: Duration = Duration::from_millis(5);

/// The time a call may take: `request_timeout`, or what the caller `asked` for less the
/// [`CALLER_MARGIN`] when that is shorter (zero when the margin eats it all).
pub fn budget(request_timeout: Duration, asked: Option<Duration>) -> Duration {
    asked
        .map(|asked| asked.saturating_sub(CALLER_MARGIN))
        .map_or(request_timeout, |asked| asked.min(request_timeout))
}

/// A call that did not finish within its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Late {
    /// The budget was spent before the call began: it started no work at all.
    Spent,
    /// The call ran out of its budget.
    Exceeded(Duration),
}

impl Late {
    /// The error answered; `noun` names the exchange (`request`, `call`).
    pub fn error(&self, noun: &str) -> Error {
        let message = match self {
            Late::Spent => format!("the {noun}'s deadline had passed before it began"),
            Late::Exceeded(budget) => {
                format!("the {noun} took longer than {} ms", budget.as_millis())
            }
        };
        Error::new(ErrorKind::DeadlineExceeded, message)
    }
}

/// Runs the call `start` begins within `budget`; a budget already spent does not begin it.
pub async fn run<F: Future>(
    budget: Duration,
    start: impl FnOnce() -> F,
) -> Result<F::Output, Late> {
    if budget.is_zero() {
        return Err(Late::Spent);
    }
    let deadline = tokio::time::Instant::now() + budget;
    let handled = ordo_telemetry::deadline::within(deadline, start());
    tokio::time::timeout_at(deadline, handled)
        .await
        .map_err(|_| Late::Exceeded(budget))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn the_budget_is_the_request_timeout_unless_the_caller_asks_for_less() {
        assert_eq!(budget(TIMEOUT, None), TIMEOUT);
        assert_eq!(budget(TIMEOUT, Some(Duration::from_secs(60))), TIMEOUT);
        assert_eq!(
            budget(TIMEOUT, Some(Duration::from_millis(250))),
            Duration::from_millis(245),
            "the margin is kept from the caller's deadline"
        );
        assert_eq!(
            budget(TIMEOUT, Some(TIMEOUT)),
            TIMEOUT - CALLER_MARGIN,
            "a caller waiting as long as the timeout still gets its margin"
        );
        assert_eq!(
            budget(TIMEOUT, Some(TIMEOUT + CALLER_MARGIN * 2)),
            TIMEOUT,
            "no margin is kept from the request timeout"
        );
        assert_eq!(
            budget(TIMEOUT, Some(Duration::from_millis(3))),
            Duration::ZERO
        );
    }

    #[tokio::test]
    async fn a_spent_budget_never_begins_the_call() {
        let mut began = false;
        let late = run(Duration::ZERO, || {
            began = true;
            async {}
        })
        .await;
        assert_eq!(late, Err(Late::Spent));
        assert!(!began);
    }

    #[tokio::test]
    async fn the_call_sees_its_deadline_and_is_cut_off_at_it() {
        let left = run(TIMEOUT, || async { ordo_telemetry::deadline::remaining() }).await;
        let left = left.unwrap().expect("the deadline is the call's");
        assert!(left <= TIMEOUT && left > TIMEOUT - Duration::from_secs(1));
        let budget = Duration::from_millis(20);
        let started = std::time::Instant::now();
        let late = run(budget, || tokio::time::sleep(Duration::from_secs(5))).await;
        assert_eq!(late, Err(Late::Exceeded(budget)));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_late_call_is_deadline_exceeded_in_the_words_of_its_transport() {
        let error = Late::Exceeded(Duration::from_millis(200)).error("request");
        assert_eq!(error.kind, ErrorKind::DeadlineExceeded);
        assert_eq!(error.message, "the request took longer than 200 ms");
        assert_eq!(
            Late::Spent.error("call").message,
            "the call's deadline had passed before it began"
        );
    }
}

//! The deadline of the call being served, so that every call it makes downstream (another
//! role over gRPC, Redis) carries what is left of it. The edge (`ordo-edge`) sets it around
//! every handler, REST or gRPC; clients read it with [`remaining`].
//!
//! It is a task-local: work spawned for later (a delayed sandbox callback, the outbox relay) is
//! deliberately not bound by the request that started it.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `future` with `deadline` as the current call's deadline.
pub async fn within<F: Future>(deadline: Instant, future: F) -> F::Output {
    DEADLINE.scope(deadline, future).await
}

/// What is left of the current call's deadline (zero once it passed); `None` outside a call.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_deadline_is_seen_inside_the_call_and_not_outside() {
        assert_eq!(remaining(), None);
        let left = within(Instant::now() + Duration::from_secs(5), async {
            remaining()
        })
        .await;
        let left = left.expect("inside the call");
        assert!(left <= Duration::from_secs(5) && left > Duration::from_secs(4));
        let passed = within(Instant::now(), async { remaining() }).await;
        assert_eq!(passed, Some(Duration::ZERO));
    }
}

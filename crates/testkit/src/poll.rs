//! Waiting for something the server does in its own time.

use std::time::{Duration, Instant};

/// How often [`eventually`] looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Looks with `probe` every [`POLL_INTERVAL`] until it answers `Ok`, and returns that value.
///
/// `Err` is "not yet", with what the probe saw instead. Once `within` has passed since the first
/// look, the last of those goes to `failure`, whose message the test panics with: name what was
/// awaited, what was seen, and whatever output helps (e.g. the server's).
pub async fn eventually<T, S>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, S>,
    failure: impl FnOnce(S) -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let seen = match probe().await {
            Ok(done) => return done,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            panic!("{}", failure(seen));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

//! The one way ordo connects to Redis (`ORDO_REDIS_URL`): a `redis::aio::ConnectionManager`,
//! which multiplexes every caller over one connection and reconnects by itself.
//!
//! Redis is optional: a URL that does not parse, or a server unreachable at start-up, is a
//! warning that names it, never a start-up failure. An unreachable server still gets a lazy
//! manager, which connects on first use, so Redis is used once it comes up; callers time out
//! their own calls and fall back to what they do without it.

use ordo_config::{ExposeSecret, SecretUrl};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// How long start-up waits for a first connection before going on without one.
const CONNECT_WAIT: Duration = Duration::from_millis(500);

/// A manager for `url`, or `None` when `url` is unset or not a Redis URL.
pub async fn connect_redis(url: Option<&SecretUrl>) -> Option<ConnectionManager> {
    let url = url?;
    let shown = url.to_string();
    let client = match redis::Client::open(url.expose_secret()) {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(redis = %shown, %error, "ORDO_REDIS_URL is not usable; running without Redis");
            return None;
        }
    };
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(250)))
        .set_response_timeout(Some(Duration::from_millis(500)))
        // Reconnects are retried by the next call, not inside one: a caller never waits for
        // a backoff schedule.
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    let manager = match ConnectionManager::new_lazy_with_config(client, config) {
        Ok(manager) => manager,
        Err(error) => {
            tracing::warn!(redis = %shown, %error, "cannot set up Redis; running without it");
            return None;
        }
    };
    let mut probe = manager.clone();
    let command = redis::cmd("PING");
    let ping = command.query_async::<String>(&mut probe);
    match tokio::time::timeout(CONNECT_WAIT, ping).await {
        Ok(Ok(_)) => tracing::info!(redis = %shown, "Redis connected"),
        Ok(Err(error)) => tracing::warn!(
            redis = %shown, %error,
            "Redis is unreachable at start-up (ORDO_REDIS_URL); running without it until it answers"
        ),
        Err(_) => tracing::warn!(
            redis = %shown,
            "Redis did not answer within 500 ms at start-up (ORDO_REDIS_URL); running without it until it answers"
        ),
    }
    Some(manager)
}

//! Graceful shutdown: which signals stop ordo, and the bounded wait for in-flight work.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!(signal = "SIGINT", "shutdown requested"),
        () = terminate => tracing::info!(signal = "SIGTERM", "shutdown requested"),
    }
}

/// Waits for `servers` to finish their in-flight requests after `token` was cancelled, at most
/// `drain`. Returns false if the drain time ran out first.
pub async fn drain(
    token: &CancellationToken,
    servers: impl Future<Output = ()>,
    drain: Duration,
) -> bool {
    token.cancel();
    tokio::time::timeout(drain, servers).await.is_ok()
}

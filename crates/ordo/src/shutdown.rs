//! Signals: which ones stop ordo, the bounded wait for in-flight work, and SIGHUP, which
//! reloads the live settings (log filter, sampling ratio, rate limits) from the configuration
//! file.

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

/// Applies the configuration file's live settings on every SIGHUP until aborted. A file that
/// does not parse changes nothing and says why.
pub async fn reload_on_sighup(
    config: ordo_config::Config,
    handle: ordo_telemetry::ReloadHandle,
    admission: ordo_admission::Admission,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match config.reload_live() {
                Ok(Some(live)) => apply(&handle, &admission, &live),
                Ok(None) => tracing::warn!("SIGHUP: no configuration file to reload (--config)"),
                Err(error) => tracing::error!(%error, "SIGHUP: configuration not reloaded"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (config, handle, admission);
}

fn apply(
    handle: &ordo_telemetry::ReloadHandle,
    admission: &ordo_admission::Admission,
    live: &ordo_config::LiveSettings,
) {
    let filter = live.log_filter.as_deref().unwrap_or("info");
    if let Err(error) = handle.set_log_filter(filter) {
        tracing::error!(%error, "SIGHUP: log filter not changed");
    }
    if let Some(ratio) = live.trace_sampling_ratio
        && let Err(error) = handle.set_sampling_ratio(ratio)
    {
        tracing::error!(%error, "SIGHUP: sampling ratio not changed");
    }
    admission.set_rate_limit(live.rate_limit.map(crate::serve::rate_limit));
    tracing::warn!(
        log_filter = filter,
        trace_sampling_ratio = live.trace_sampling_ratio,
        rate_limit_per_second = live.rate_limit.map(|l| l.per_second),
        rate_limit_burst = live.rate_limit.map(|l| l.burst),
        "configuration reloaded"
    );
}

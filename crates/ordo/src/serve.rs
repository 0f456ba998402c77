//! `ordo serve`: start-up in an explicit order, each step failing with a message that names
//! what is missing, then serving until a signal and draining within a bound.

use crate::admin::{self, AdminState};
use crate::shutdown;
use anyhow::Context;
use axum::serve::ListenerExt;
use ordo_config::Config;
use ordo_http_api::HttpLimits;
use ordo_service::Service;
use ordo_storage::Database;
use ordo_telemetry::ReloadHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub async fn serve(config: Config, reload: ReloadHandle) -> anyhow::Result<()> {
    let db = connect_database(&config).await?;
    db.migrate()
        .await
        .context("cannot apply database migrations")?;
    let service = Service::new(db.clone());

    let http_listener = bind(config.http_addr, "ORDO_HTTP_ADDR").await?;
    let admin_listener = bind(config.admin_addr, "ORDO_ADMIN_ADDR").await?;
    let http_addr = http_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let draining = Arc::new(AtomicBool::new(false));
    let api = ordo_http_api::router(
        service.clone(),
        HttpLimits {
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout,
        },
    );
    let admin = admin::router(AdminState {
        service,
        draining: Arc::clone(&draining),
        admin_token: config.admin_token.as_deref().map(Arc::from),
    });
    let runtime_sampler =
        ordo_telemetry::metrics::spawn_runtime_sampler(&tokio::runtime::Handle::current());

    let token = CancellationToken::new();
    let http_server = tokio::spawn(
        axum::serve(
            http_listener.tap_io(|tcp| {
                // Small JSON responses: do not wait to coalesce them.
                let _ = tcp.set_nodelay(true);
            }),
            api,
        )
        .with_graceful_shutdown(token.clone().cancelled_owned())
        .into_future(),
    );
    let admin_server = tokio::spawn(
        axum::serve(admin_listener, admin)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .into_future(),
    );

    tracing::info!(
        http_addr = %http_addr,
        admin_addr = %admin_addr,
        database = db.backend().system_name(),
        profile = ?config.profile,
        version = env!("CARGO_PKG_VERSION"),
        "ordo is ready"
    );

    let reloader = tokio::spawn(shutdown::reload_on_sighup(config.clone(), reload));
    shutdown::signal().await;
    reloader.abort();
    draining.store(true, Ordering::Relaxed);
    let servers = async {
        for (name, server) in [("http", http_server), ("admin", admin_server)] {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(server = name, %error, "server failed"),
                Err(error) => tracing::error!(server = name, %error, "server task failed"),
            }
        }
    };
    if shutdown::drain(&token, servers, config.shutdown_drain).await {
        tracing::info!("in-flight requests finished");
    } else {
        tracing::warn!(
            drain_secs = config.shutdown_drain.as_secs(),
            "drain time ran out; stopping with requests still in flight"
        );
    }
    runtime_sampler.abort();
    db.close().await;
    tracing::info!("ordo stopped");
    Ok(())
}

pub async fn connect_database(config: &Config) -> anyhow::Result<Database> {
    Database::connect(&config.database_url, config.database_max_connections)
        .await
        .with_context(|| {
            format!(
                "cannot use the database at {} (ORDO_DATABASE_URL)",
                redact_url(&config.database_url)
            )
        })
}

async fn bind(addr: std::net::SocketAddr, variable: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({variable})"))
}

/// The URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://ordo:s3cret@db:5432/ordo"),
            "postgres://ordo:***@db:5432/ordo"
        );
        assert_eq!(redact_url("sqlite://data/ordo.db"), "sqlite://data/ordo.db");
    }
}

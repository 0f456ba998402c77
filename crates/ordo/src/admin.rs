//! The admin port: liveness and readiness for orchestrators (open, no token). Metrics and
//! profiling join it behind `ORDO_ADMIN_TOKEN`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use ordo_service::Service;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Clone)]
pub struct AdminState {
    pub service: Service,
    /// Set when shutdown begins: readiness turns false so load balancers stop sending work.
    pub draining: Arc<AtomicBool>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Alive: the process runs and answers. Says nothing about dependencies.
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Ready: not draining and the database answers within a second.
async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.draining.load(Ordering::Relaxed) {
        return not_ready("draining");
    }
    match tokio::time::timeout(Duration::from_secs(1), state.service.ready()).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ready"})),
        ),
        Ok(Err(_)) => not_ready("database unavailable"),
        Err(_) => not_ready("database did not answer in time"),
    }
}

fn not_ready(reason: &str) -> (StatusCode, axum::Json<serde_json::Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({"status": "not_ready", "reason": reason})),
    )
}

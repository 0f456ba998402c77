//! The admin port: liveness and readiness for orchestrators (open, no token), and Prometheus
//! metrics behind `ORDO_ADMIN_TOKEN` when one is configured (open in the dev profile, which has
//! none).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ordo_domain::ErrorKind;
use ordo_service::Service;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use subtle::ConstantTimeEq;

#[derive(Clone)]
pub struct AdminState {
    pub service: Service,
    /// Set when shutdown begins: readiness turns false so load balancers stop sending work.
    pub draining: Arc<AtomicBool>,
    /// The bearer token `/metrics` requires; `None` leaves it open.
    pub admin_token: Option<Arc<str>>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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

/// The Prometheus exposition: text format 0.0.4, or OpenMetrics (with exemplars) when the
/// scraper accepts `application/openmetrics-text`.
async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.admin_token
        && !bearer_matches(&headers, token)
    {
        return unauthenticated();
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    let (content_type, body) = ordo_telemetry::metrics::encode(openmetrics);
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Whether `Authorization: Bearer <token>` names `expected`, compared in constant time (a
/// length mismatch fails at once; the length of the token is not the secret).
fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some((scheme, token)) = value
        .iter()
        .position(|&b| b == b' ')
        .map(|i| (&value[..i], &value[i + 1..]))
    else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer") && bool::from(token.ct_eq(expected.as_bytes()))
}

fn unauthenticated() -> Response {
    let kind = ErrorKind::Unauthenticated;
    let body = serde_json::json!({
        "error": {
            "code": kind.code(),
            "message": "the admin endpoints need Authorization: Bearer <ORDO_ADMIN_TOKEN>",
            "details": [],
            "trace_id": null,
        }
    });
    (
        StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::UNAUTHORIZED),
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        assert!(bearer_matches(
            &with_authorization("Bearer s3cret"),
            "s3cret"
        ));
        assert!(bearer_matches(
            &with_authorization("bearer s3cret"),
            "s3cret"
        ));
        assert!(!bearer_matches(
            &with_authorization("Bearer s3cre"),
            "s3cret"
        ));
        assert!(!bearer_matches(
            &with_authorization("Bearer s3cret "),
            "s3cret"
        ));
        assert!(!bearer_matches(
            &with_authorization("Basic s3cret"),
            "s3cret"
        ));
        assert!(!bearer_matches(&with_authorization("s3cret"), "s3cret"));
        assert!(!bearer_matches(&HeaderMap::new(), "s3cret"));
    }
}

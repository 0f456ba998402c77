//! The admin port: liveness and readiness for orchestrators (open, no token); Prometheus
//! metrics and CPU profiles behind `ORDO_ADMIN_TOKEN` when one is configured (open in the dev
//! profile, which has none; staging and prod refuse to start without one).

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ordo_domain::{Error, ErrorKind};
use ordo_http_api::error::ApiError;
use ordo_service::ports::Api;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use subtle::ConstantTimeEq;

mod profile;

#[derive(Clone)]
pub struct AdminState {
    /// What this process serves; ready when every face is (its database answers, or a peer of
    /// its role is up).
    pub api: Api,
    /// Set when shutdown begins: readiness turns false so load balancers stop sending work.
    pub draining: Arc<AtomicBool>,
    /// The bearer token `/metrics` requires; `None` leaves it open.
    pub admin_token: Option<Arc<str>>,
}

pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/debug/pprof/profile", get(profile::cpu_profile))
        .route_layer(middleware::from_fn_with_state(
            state.admin_token.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(state)
}

/// Lets a request through only with `Authorization: Bearer <token>` when a token is set.
async fn require_token(
    State(token): State<Option<Arc<str>>>,
    request: Request,
    next: Next,
) -> Response {
    match token {
        Some(token) if !bearer_matches(request.headers(), &token) => unauthenticated(),
        _ => next.run(request).await,
    }
}

/// Alive: the process runs and answers. Says nothing about dependencies.
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Ready: not draining, and every face this process serves can serve (its database answers,
/// or a healthy peer runs its role) within a second.
async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.draining.load(Ordering::Relaxed) {
        return not_ready("draining");
    }
    match tokio::time::timeout(Duration::from_secs(1), state.api.ready()).await {
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
async fn metrics(headers: HeaderMap) -> Response {
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
    let mut response = ApiError(Error::new(
        ErrorKind::Unauthenticated,
        "the admin endpoints need Authorization: Bearer <ORDO_ADMIN_TOKEN>",
    ))
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
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

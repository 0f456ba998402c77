//! ordo's REST API: the axum router for `/v1`, its OpenAPI document, and the layers every request
//! passes (the server span and `traceparent`, the deadline, the body limit, panic recovery).
//!
//! Layout:
//! - `routes`: thin handlers, one call each to a face of [`ordo_service::ports::Api`].
//! - `extract`: JSON, path and query extractors that reject with the contract's error body.
//! - [`error`]: the error body; statuses come from the error kind, decided in `ordo_domain`.
//! - `middleware`: the per-request span, deadline and `traceparent` response header.
//! - [`server`]: the accept loop (header-read timeout, connection caps, graceful drain).
//!
//! Invariant: every response, success or error, leaves through `middleware::serve_request`,
//! so every response carries `traceparent` and every error has the one body shape.

pub mod error;
// Public, though not API, for the fuzz targets (fuzz/), which run request bodies through it.
#[doc(hidden)]
pub mod extract;
mod middleware;
mod routes;
pub mod server;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use ordo_service::auth::ApiKeys;
use ordo_service::ports::Api;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the HTTP edge enforces before a handler runs.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// `ORDO_API_KEYS`; empty: open. Payment callbacks (signed) and `/openapi.json` are open.
    pub api_keys: ApiKeys,
    /// Load shedding and rate limits, shared with the gRPC server. Payment callbacks pass
    /// without.
    pub admission: ordo_admission::Admission,
}

/// The body limit of `POST /v1/pos/batches` (500 sales of several lines each), whatever
/// `ORDO_MAX_BODY_BYTES` says for the other routes.
pub const POS_BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ordo",
        description = "Order fulfillment: products and stock, orders with reservations that \
            never oversell. Money is integer minor units plus an ISO 4217 code. Every response \
            carries a W3C `traceparent` header; every error has the body \
            `{\"error\": {\"code\", \"message\", \"details\", \"trace_id\"}}`."
    ),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

/// The OpenAPI document of the API, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

fn api_router() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::put_product, routes::get_product))
        .routes(routes!(routes::put_warehouse))
        .routes(routes!(routes::put_stock))
        .routes(routes!(routes::get_stock))
        .routes(routes!(routes::create_order, routes::list_orders))
        .routes(routes!(routes::get_order))
        .routes(routes!(routes::cancel_order))
        .routes(routes!(routes::order_timeline))
        .routes(routes!(routes::create_payment, routes::list_payments))
        .routes(routes!(routes::payment_callback))
        .routes(routes!(routes::erase_customer))
        .merge(
            // A POS batch holds up to 500 sales: it may need more room than any other body.
            OpenApiRouter::new()
                .routes(routes!(routes::submit_pos_batch))
                .layer(DefaultBodyLimit::max(POS_BATCH_MAX_BYTES)),
        )
}

/// The whole REST API over `api` (each face local or another role's).
pub fn router(api: Api, limits: HttpLimits) -> Router {
    let (routes, openapi) = api_router().split_for_parts();
    let document: Arc<str> = openapi
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
        .into();
    let routes = routes
        .route(
            "/openapi.json",
            get(move || {
                let document = Arc::clone(&document);
                async move {
                    (
                        [(http::header::CONTENT_TYPE, "application/json")],
                        document.to_string(),
                    )
                }
            }),
        )
        .fallback(routes::not_found)
        .with_state(api);
    with_edge_layers(routes, limits)
}

/// The layers every route passes, outermost first: the request span, deadline and
/// `traceparent` (`middleware::serve_request`), panic recovery inside that span, the body limit.
fn with_edge_layers(router: Router, limits: HttpLimits) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(
                middleware::Edge {
                    timeout: limits.request_timeout,
                    api_keys: limits.api_keys,
                    admission: limits.admission,
                },
                middleware::serve_request,
            ))
            .layer(CatchPanicLayer::custom(middleware::panic_response))
            .layer(DefaultBodyLimit::max(limits.max_body_bytes)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::{Request, StatusCode};
    use tower::ServiceExt;

    fn limits() -> HttpLimits {
        HttpLimits {
            max_body_bytes: 1024,
            request_timeout: Duration::from_millis(200),
            api_keys: ApiKeys::default(),
            admission: ordo_admission::Admission::default(),
        }
    }

    async fn body_json(response: axum::response::Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_the_error_body_and_the_router_keeps_serving() {
        let app = with_edge_layers(
            Router::new()
                .route("/boom", get(boom))
                .route("/fine", get(|| async { "fine" })),
            limits(),
        );
        let response = app
            .clone()
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "internal");
        assert!(
            !body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("handler bug")
        );
        let response = app
            .oneshot(Request::get("/fine").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    fn admission(
        rate_limit: Option<(u32, u32)>,
        max_in_flight: usize,
    ) -> ordo_admission::Admission {
        ordo_admission::Admission::new(
            ordo_admission::AdmissionSettings {
                rate_limit: rate_limit
                    .map(|(per_second, burst)| ordo_admission::RateLimit { per_second, burst }),
                max_in_flight,
                adaptive_cpu_threshold_permille: None,
            },
            None,
        )
    }

    #[tokio::test]
    async fn a_caller_over_its_rate_limit_gets_429_with_retry_after_and_callbacks_pass() {
        let app = with_edge_layers(
            Router::new()
                .route("/fine", get(|| async { "fine" }))
                .route("/v1/payments/callbacks/{provider}", get(|| async { "ack" })),
            HttpLimits {
                admission: admission(Some((1, 2)), usize::MAX),
                ..limits()
            },
        );
        let get_status = |path: &'static str| {
            let app = app.clone();
            async move {
                app.oneshot(Request::get(path).body(Body::empty()).unwrap())
                    .await
                    .unwrap()
            }
        };
        assert_eq!(get_status("/fine").await.status(), StatusCode::OK);
        assert_eq!(get_status("/fine").await.status(), StatusCode::OK);
        let limited = get_status("/fine").await;
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[http::header::RETRY_AFTER], "1");
        assert_eq!(body_json(limited).await["error"]["code"], "rate_limited");
        for _ in 0..5 {
            let callback = get_status("/v1/payments/callbacks/sandbox").await;
            assert_eq!(callback.status(), StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn past_max_in_flight_a_request_gets_503_with_retry_after_at_once() {
        let admission = admission(None, 1);
        let app = with_edge_layers(
            Router::new().route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            ),
            HttpLimits {
                admission: admission.clone(),
                request_timeout: Duration::from_secs(120),
                ..limits()
            },
        );
        let first = tokio::spawn(
            app.clone()
                .oneshot(Request::get("/slow").body(Body::empty()).unwrap()),
        );
        while admission.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let shed = tokio::time::timeout(
            Duration::from_secs(1),
            app.oneshot(Request::get("/slow").body(Body::empty()).unwrap()),
        )
        .await
        .expect("a shed request answers at once")
        .unwrap();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()[http::header::RETRY_AFTER], "1");
        assert_eq!(body_json(shed).await["error"]["code"], "unavailable");
        // A cancelled request leaves the count.
        first.abort();
        let _ = first.await;
        assert_eq!(admission.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_answers_504_deadline_exceeded() {
        let app = with_edge_layers(
            Router::new().route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            ),
            limits(),
        );
        let response = app
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            body_json(response).await["error"]["code"],
            "deadline_exceeded"
        );
    }
}

//! ordo's REST API: the axum router for `/v1`, its OpenAPI document, and the layers every request
//! passes (the edge shared with gRPC — server span, API keys, admission, deadline,
//! `traceparent`, metrics, access log — then panic recovery and the body limit).
//!
//! Layout:
//! - `routes`: thin handlers, one call each to a face of [`ordo_service::ports::Api`].
//! - `extract`: JSON, path and query extractors that reject with the contract's error body.
//! - [`error`]: the error body; statuses come from the error kind, decided in `ordo_domain`.
//! - `middleware`: HTTP as `ordo_edge` sees it (route, exemptions, error body, the 405 body).
//! - [`server`]: the accept loop (header-read timeout, connection caps, graceful drain).
//!
//! Invariant: every response, success or error, leaves through the edge layer
//! (`with_edge_layers`), so every response carries `traceparent` and every error has the one
//! body shape.

mod contract;
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
use ordo_service::ports::Api;
use std::sync::Arc;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the HTTP edge enforces before a handler runs.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    /// API keys, admission and the request timeout, shared with the gRPC server. Payment
    /// callbacks (signed) and `/openapi.json` need no key; payment callbacks are never limited.
    pub edge: ordo_edge::Edge,
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
            `{\"error\": {\"code\", \"message\", \"details\", \"trace_id\"}}`. \
            A request valid in itself that the current state cannot satisfy (an unknown \
            product or order, too little stock, a conflict) is answered 404 or 409, never 400."
    ),
    // Referenced by schemas built in code (`ordo_service::api::schema`).
    components(schemas(
        error::ErrorBody,
        ordo_service::api::OrderItemInput,
        ordo_service::api::PosSaleInput
    ))
)]
struct ApiDoc;

/// The OpenAPI document of the API, generated from the handlers and completed with what every
/// operation shares (`contract`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut document) = api_router().split_for_parts();
    contract::complete(&mut document);
    document
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
    let (routes, mut openapi) = api_router().split_for_parts();
    contract::complete(&mut openapi);
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

/// The layers every route passes, outermost first: the edge (`middleware::Http`), panic
/// recovery inside its span, the body limit.
fn with_edge_layers(router: Router, limits: HttpLimits) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(ordo_edge::EdgeLayer::new(limits.edge, middleware::Http))
            .layer(CatchPanicLayer::custom(middleware::panic_response))
            .layer(DefaultBodyLimit::max(limits.max_body_bytes)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::{Request, StatusCode};
    use std::time::Duration;
    use tower::ServiceExt;

    fn limits() -> HttpLimits {
        HttpLimits {
            max_body_bytes: 1024,
            edge: ordo_edge::Edge {
                request_timeout: Duration::from_millis(200),
                api_keys: ordo_edge::auth::ApiKeys::default(),
                admission: ordo_admission::Admission::default(),
            },
        }
    }

    /// [`limits`] with `admission` and `request_timeout`.
    fn limits_with(admission: ordo_admission::Admission, request_timeout: Duration) -> HttpLimits {
        HttpLimits {
            edge: ordo_edge::Edge {
                admission,
                request_timeout,
                ..limits().edge
            },
            ..limits()
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
            limits_with(
                admission(Some((1, 2)), usize::MAX),
                limits().edge.request_timeout,
            ),
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
            limits_with(admission.clone(), Duration::from_secs(120)),
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

    /// The document as JSON, and a resolver of its `$ref`s.
    fn document() -> serde_json::Value {
        serde_json::to_value(openapi()).unwrap()
    }

    fn resolve<'a>(
        doc: &'a serde_json::Value,
        value: &'a serde_json::Value,
    ) -> &'a serde_json::Value {
        match value.get("$ref").and_then(|r| r.as_str()) {
            Some(reference) => {
                let pointer = reference.strip_prefix('#').expect("a local $ref");
                let target = doc
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}"));
                resolve(doc, target)
            }
            None => value,
        }
    }

    /// Every operation: (path, method, operation).
    fn operations(doc: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
        let mut found = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                found.push((path.clone(), method.clone(), operation.clone()));
            }
        }
        found
    }

    fn every_ref(value: &serde_json::Value, refs: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(reference)) = map.get("$ref") {
                    refs.push(reference.clone());
                }
                map.values().for_each(|v| every_ref(v, refs));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| every_ref(v, refs)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_of_the_document_resolves() {
        let doc = document();
        let mut refs = Vec::new();
        every_ref(&doc, &mut refs);
        assert!(!refs.is_empty());
        for reference in refs {
            resolve(&doc, &serde_json::json!({ "$ref": reference }));
        }
    }

    /// Every operation lists the statuses the shared code answers with, each with the error
    /// body: bad input (every operation takes some), server faults, shedding and an unreachable
    /// database, the deadline; API keys and rate limits except on the open routes; the body
    /// limit and the media type where a body is read.
    #[test]
    fn every_operation_documents_every_status_it_can_answer() {
        use ordo_domain::ErrorKind;
        let doc = document();
        let operations = operations(&doc);
        assert_eq!(operations.len(), 15, "every route is documented");
        for (path, method, operation) in &operations {
            let name = format!("{method} {path}");
            let responses = operation["responses"].as_object().unwrap();
            let open = middleware::OPEN_ROUTES.contains(&path.as_str());
            let mut expected = vec![
                ErrorKind::InvalidArgument,
                ErrorKind::Internal,
                ErrorKind::Unavailable,
                ErrorKind::DeadlineExceeded,
            ];
            if open {
                assert_eq!(operation["security"], serde_json::json!([]), "{name}");
            } else {
                assert!(
                    operation.get("security").is_none(),
                    "{name}: the global keys apply"
                );
                expected.extend([ErrorKind::Unauthenticated, ErrorKind::RateLimited]);
            }
            if operation.get("requestBody").is_some() {
                expected.push(ErrorKind::PayloadTooLarge);
                if path.as_str() != middleware::CALLBACKS_ROUTE {
                    expected.push(ErrorKind::UnsupportedMediaType);
                }
            }
            for kind in expected {
                let status = kind.http_status().to_string();
                assert!(
                    responses.contains_key(&status),
                    "{name} lacks {status} ({kind})"
                );
            }
            for (status, response) in responses {
                let response = resolve(&doc, response);
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{name} {status}: no description"
                );
                if status.starts_with('2') {
                    continue;
                }
                // Every error status is one of an error kind, and its body is the error body.
                assert!(
                    ErrorKind::ALL
                        .iter()
                        .any(|kind| kind.http_status().to_string() == *status),
                    "{name}: {status} is the status of no error kind"
                );
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{name} {status}"
                );
            }
        }
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes[contract::API_KEY_SCHEME]["name"], "x-api-key");
        assert_eq!(schemes[contract::BEARER_SCHEME]["scheme"], "bearer");
    }

    /// The error codes of the error body are the error kinds' codes.
    #[test]
    fn the_error_codes_are_the_error_kinds() {
        let doc = document();
        let code =
            resolve(&doc, &doc["components"]["schemas"]["ErrorDetail"])["properties"]["code"]
                .clone();
        let codes: Vec<&str> = ordo_domain::ErrorKind::ALL
            .iter()
            .map(|k| k.code())
            .collect();
        assert_eq!(code["enum"], serde_json::json!(codes));
    }

    /// The request schemas carry the limits the code enforces: the same constants and patterns.
    #[test]
    fn request_schemas_carry_the_limits_the_code_enforces() {
        use ordo_domain::ids::{CountryCode, IDENTIFIER_PATTERN, Sku};
        use ordo_domain::money::{Currency, Money};
        use ordo_domain::order::{Contact, NewOrder, ShippingAddress};
        use ordo_domain::stock::{OnHand, Quantity};
        use ordo_domain::text::TEXT_PATTERN;
        use ordo_service::api::schema as limits;
        use serde_json::json;
        let doc = document();
        let schema = |name: &str| doc["components"]["schemas"][name].clone();
        let property = |name: &str, field: &str| schema(name)["properties"][field].clone();

        let items = property("CreateOrderInput", "items");
        assert_eq!(items["minItems"], 1);
        assert_eq!(items["maxItems"], NewOrder::MAX_LINES);
        let sku = property("OrderItemInput", "sku");
        assert_eq!(sku["pattern"], IDENTIFIER_PATTERN);
        assert_eq!(sku["minLength"], 1);
        assert_eq!(sku["maxLength"], Sku::MAX_CHARS);
        let quantity = property("OrderItemInput", "quantity");
        assert_eq!(
            (quantity["minimum"].clone(), quantity["maximum"].clone()),
            (json!(1), json!(Quantity::MAX))
        );
        let amount = property("MoneyDto", "amount_minor");
        assert_eq!(
            (amount["minimum"].clone(), amount["maximum"].clone()),
            (json!(0), json!(Money::MAX_MINOR))
        );
        for (schema, field, pattern) in [
            ("MoneyDto", "currency", Currency::PATTERN),
            ("CreateOrderInput", "currency", Currency::PATTERN),
            ("WarehouseInput", "country", CountryCode::PATTERN),
        ] {
            assert_eq!(
                property(schema, field)["pattern"],
                pattern,
                "{schema}.{field}"
            );
        }
        assert_eq!(property("StockInput", "on_hand")["maximum"], OnHand::MAX);
        assert_eq!(
            property("ProductInput", "name")["maxLength"],
            limits::PRODUCT_NAME_MAX_CHARS
        );
        for (field, max) in [
            ("name", ShippingAddress::NAME_MAX_CHARS),
            ("line1", ShippingAddress::LINE1_MAX_CHARS),
            ("city", ShippingAddress::CITY_MAX_CHARS),
            ("postal_code", ShippingAddress::POSTAL_CODE_MAX_CHARS),
        ] {
            let text = property("AddressDto", field);
            assert_eq!(
                (text["maxLength"].clone(), text["pattern"].clone()),
                (json!(max), json!(TEXT_PATTERN)),
                "{field}"
            );
        }
        let email = property("ContactDto", "email");
        assert_eq!(
            (email["maxLength"].clone(), email["pattern"].clone()),
            (
                json!(Contact::EMAIL_MAX_CHARS),
                json!(Contact::EMAIL_PATTERN)
            )
        );
        let phone = property("ContactDto", "phone");
        assert_eq!(
            (phone["maxLength"].clone(), phone["pattern"].clone()),
            (
                json!(Contact::PHONE_MAX_CHARS),
                json!(Contact::PHONE_PATTERN)
            )
        );
        assert_eq!(
            property("PosBatchInput", "sales")["maxItems"],
            ordo_domain::pos::MAX_SALES_PER_BATCH
        );
        assert_eq!(
            property("PosBatchInput", "batch_seq")["maximum"],
            ordo_domain::pos::MAX_BATCH_SEQ
        );

        // Every request schema refuses unknown fields, as serde's deny_unknown_fields does.
        for name in [
            "ProductInput",
            "MoneyDto",
            "WarehouseInput",
            "StockInput",
            "CreateOrderInput",
            "OrderItemInput",
            "AddressDto",
            "ContactDto",
            "CreatePaymentInput",
            "PaymentCallbackInput",
            "PosBatchInput",
            "PosSaleInput",
            "PosPaymentInput",
        ] {
            assert_eq!(schema(name)["additionalProperties"], false, "{name}");
        }

        let list = &doc["paths"]["/v1/orders"]["get"]["parameters"];
        let limit = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["maximum"], limits::MAX_PAGE);
        let create = &doc["paths"]["/v1/orders"]["post"];
        let key = &create["parameters"][0];
        assert_eq!(
            (key["name"].clone(), key["in"].clone()),
            (json!("Idempotency-Key"), json!("header"))
        );
        assert_eq!(
            key["schema"]["maxLength"],
            limits::IDEMPOTENCY_KEY_MAX_CHARS
        );
        let sku_path = &doc["paths"]["/v1/products/{sku}"]["get"]["parameters"][0];
        assert_eq!(sku_path["schema"]["pattern"], IDENTIFIER_PATTERN);
    }

    /// The stateful chain a client follows: create an order, read it, pay it, cancel it.
    #[test]
    fn links_lead_from_a_created_order_to_reading_paying_and_cancelling_it() {
        let doc = document();
        let operation_ids: Vec<String> = operations(&doc)
            .iter()
            .map(|(_, _, op)| op["operationId"].as_str().unwrap().to_owned())
            .collect();
        let links = &doc["paths"]["/v1/orders"]["post"]["responses"]["201"]["links"];
        for (link, target) in [
            ("GetOrder", "get_order"),
            ("CreatePayment", "create_payment"),
            ("CancelOrder", "cancel_order"),
        ] {
            assert_eq!(links[link]["operationId"], target, "{link}");
            assert_eq!(
                links[link]["parameters"]["id"], "$response.body#/id",
                "{link}"
            );
        }
        let paid = &doc["paths"]["/v1/orders/{id}/payments"]["post"]["responses"]["201"]["links"];
        assert_eq!(
            paid["CancelOrder"]["parameters"]["id"],
            "$response.body#/order_id"
        );
        for operation in operations(&doc) {
            for link in operation.2["responses"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|r| r.get("links").and_then(|l| l.as_object()))
                .flat_map(|links| links.values())
            {
                let target = link["operationId"].as_str().unwrap();
                assert!(
                    operation_ids.iter().any(|id| id == target),
                    "a link to {target}"
                );
            }
        }
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

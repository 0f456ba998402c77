//! Handlers: each takes typed extractors, calls one [`Service`] method and renders its result.
//! The `#[utoipa::path]` attributes are the source of the OpenAPI document.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, OptionalJson, Path, Query, RawBody};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use ordo_domain::Error;
use ordo_service::api::*;
use ordo_service::ports::Api;

type ApiResult<T> = Result<axum::Json<T>, ApiError>;

#[utoipa::path(put, path = "/v1/products/{sku}", tag = "catalog",
    params(("sku" = String, Path, description = "Stock-keeping unit")),
    request_body = ProductInput,
    responses((status = 200, description = "Created or replaced", body = ProductView),
              (status = 400, body = ErrorBody)))]
pub(crate) async fn put_product(
    State(api): State<Api>,
    Path(sku): Path<String>,
    Json(input): Json<ProductInput>,
) -> ApiResult<ProductView> {
    Ok(axum::Json(api.catalog.put_product(&sku, input).await?))
}

#[utoipa::path(get, path = "/v1/products/{sku}", tag = "catalog",
    params(("sku" = String, Path, description = "Stock-keeping unit")),
    responses((status = 200, body = ProductView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_product(
    State(api): State<Api>,
    Path(sku): Path<String>,
) -> ApiResult<ProductView> {
    Ok(axum::Json(api.catalog.product(&sku).await?))
}

#[utoipa::path(put, path = "/v1/warehouses/{id}", tag = "catalog",
    params(("id" = String, Path, description = "Warehouse id")),
    request_body = WarehouseInput,
    responses((status = 200, body = WarehouseView), (status = 400, body = ErrorBody)))]
pub(crate) async fn put_warehouse(
    State(api): State<Api>,
    Path(id): Path<String>,
    Json(input): Json<WarehouseInput>,
) -> ApiResult<WarehouseView> {
    Ok(axum::Json(api.catalog.put_warehouse(&id, input).await?))
}

#[utoipa::path(put, path = "/v1/stock/{sku}/{warehouse}", tag = "stock",
    params(("sku" = String, Path), ("warehouse" = String, Path)),
    request_body = StockInput,
    responses((status = 200, body = StockEntryView),
              (status = 404, description = "Unknown product or warehouse", body = ErrorBody),
              (status = 409, description = "on_hand below reserved", body = ErrorBody)))]
pub(crate) async fn put_stock(
    State(api): State<Api>,
    Path((sku, warehouse)): Path<(String, String)>,
    Json(input): Json<StockInput>,
) -> ApiResult<StockEntryView> {
    Ok(axum::Json(
        api.catalog.put_stock(&sku, &warehouse, input).await?,
    ))
}

#[utoipa::path(get, path = "/v1/stock/{sku}", tag = "stock",
    params(("sku" = String, Path)),
    responses((status = 200, body = StockView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_stock(
    State(api): State<Api>,
    Path(sku): Path<String>,
) -> ApiResult<StockView> {
    Ok(axum::Json(api.catalog.stock(&sku).await?))
}

#[utoipa::path(post, path = "/v1/orders", tag = "orders",
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Repeating a request with the same key returns the first result")),
    request_body = CreateOrderInput,
    responses(
        (status = 201, description = "Created, or the earlier result for this key \
            (then with `Idempotent-Replayed: true`)", body = OrderView),
        (status = 400, body = ErrorBody),
        (status = 409, description = "insufficient_stock, or the key reused with another body",
            body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub(crate) async fn create_order(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(input): Json<CreateOrderInput>,
) -> Result<Response, ApiError> {
    let key = headers
        .get("idempotency-key")
        .map(|value| {
            value.to_str().map_err(|_| {
                Error::invalid_field("Idempotency-Key", "must be visible ASCII characters")
            })
        })
        .transpose()?;
    let created = api.orders.create_order(key, input).await?;
    let mut response = (StatusCode::CREATED, axum::Json(created.order)).into_response();
    if created.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

#[utoipa::path(get, path = "/v1/orders", tag = "orders",
    params(ListOrdersQuery),
    responses((status = 200, body = OrderPage), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_orders(
    State(api): State<Api>,
    Query(query): Query<ListOrdersQuery>,
) -> ApiResult<OrderPage> {
    Ok(axum::Json(api.orders.orders(query).await?))
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = String, Path)),
    responses((status = 200, body = OrderView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_order(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // Encoded once per cached snapshot, not once per read.
    let json = api.orders.order_json(&id).await?;
    Ok(([(http::header::CONTENT_TYPE, "application/json")], json).into_response())
}

#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path)),
    responses((status = 200, description = "Cancelled (or already cancelled)", body = OrderView),
              (status = 404, body = ErrorBody),
              (status = 409, description = "The order is past payment", body = ErrorBody)))]
pub(crate) async fn cancel_order(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> ApiResult<OrderView> {
    Ok(axum::Json(api.orders.cancel_order(&id).await?))
}

#[utoipa::path(get, path = "/v1/orders/{id}/timeline", tag = "orders",
    params(("id" = String, Path)),
    responses((status = 200, body = TimelineView), (status = 404, body = ErrorBody)))]
pub(crate) async fn order_timeline(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> ApiResult<TimelineView> {
    Ok(axum::Json(api.orders.timeline(&id).await?))
}

#[utoipa::path(post, path = "/v1/orders/{id}/payments", tag = "payments",
    params(("id" = String, Path)),
    request_body(content = Option<CreatePaymentInput>,
        description = "Optional: empty, `{}`, or `{\"provider\": \"webhook\"}`; without a \
            provider the routing rules choose"),
    responses(
        (status = 201, description = "The payment intent; the order's pending one if it has one \
            (then with `Idempotent-Replayed: true`)", body = PaymentView),
        (status = 400, description = "Unknown or disabled provider", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The order is not in pending_payment", body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 503, description = "No healthy provider takes this payment", body = ErrorBody)))]
pub(crate) async fn create_payment(
    State(api): State<Api>,
    Path(id): Path<String>,
    OptionalJson(input): OptionalJson<CreatePaymentInput>,
) -> Result<Response, ApiError> {
    let created = api
        .payments
        .create_payment(&id, input.unwrap_or_default())
        .await?;
    let mut response = (StatusCode::CREATED, axum::Json(created.payment)).into_response();
    if created.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

#[utoipa::path(get, path = "/v1/orders/{id}/payments", tag = "payments",
    params(("id" = String, Path)),
    responses((status = 200, body = PaymentList), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_payments(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> ApiResult<PaymentList> {
    Ok(axum::Json(api.payments.order_payments(&id).await?))
}

#[utoipa::path(post, path = "/v1/payments/callbacks/{provider}", tag = "payments",
    params(("provider" = String, Path, description = "`sandbox` or `webhook`"),
        ("Ordo-Signature" = String, Header,
            description = "`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>`; \
                the timestamp must be within 300 s")),
    request_body(content = PaymentCallbackInput,
        description = "Signed as sent: the signature covers the raw bytes"),
    responses(
        (status = 200, description = "Applied, or a replay of an event id answered with its \
            first outcome", body = PaymentCallbackAck),
        (status = 400, body = ErrorBody),
        (status = 401, description = "Missing or bad signature, or a stale timestamp",
            body = ErrorBody),
        (status = 404, description = "Unknown or disabled provider, or unknown payment",
            body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub(crate) async fn payment_callback(
    State(api): State<Api>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<PaymentCallbackAck> {
    // A header that is not visible ASCII cannot be a valid signature: let it fail as one.
    let signature = headers
        .get(ordo_domain::signature::HEADER)
        .map(|value| value.to_str().unwrap_or(""));
    Ok(axum::Json(
        api.payments
            .payment_callback(&provider, signature, &body)
            .await?,
    ))
}

/// Any path the API does not have.
pub(crate) async fn not_found() -> ApiError {
    ApiError(Error::not_found("path"))
}

#[utoipa::path(post, path = "/v1/pos/batches", tag = "pos",
    request_body = PosBatchInput,
    responses(
        (status = 200, description = "Each sale's outcome; a replay of the batch (same \
            terminal_id and batch_seq) returns the first answer again", body = PosBatchView),
        (status = 400, body = ErrorBody),
        (status = 404, description = "unknown warehouse", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub(crate) async fn submit_pos_batch(
    State(api): State<Api>,
    Json(input): Json<PosBatchInput>,
) -> ApiResult<PosBatchView> {
    Ok(axum::Json(api.orders.submit_pos_batch(input).await?))
}

#[utoipa::path(post, path = "/v1/customers/{customer_id}/erasure", tag = "customers",
    params(("customer_id" = String, Path)),
    responses(
        (status = 200, description = "Erased (or erased before: a repeat changes nothing \
            more); orders still in fulfillment are listed in `orders_pending` and erased by \
            themselves once terminal", body = ErasureView),
        (status = 400, body = ErrorBody)))]
pub(crate) async fn erase_customer(
    State(api): State<Api>,
    Path(customer_id): Path<String>,
) -> ApiResult<ErasureView> {
    Ok(axum::Json(api.orders.erase_customer(&customer_id).await?))
}

//! Handlers: each takes typed extractors, calls one [`Service`] method and renders its result.
//! The `#[utoipa::path]` attributes are the source of the OpenAPI document.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use ordo_domain::Error;
use ordo_service::Service;
use ordo_service::api::*;

type ApiResult<T> = Result<axum::Json<T>, ApiError>;

#[utoipa::path(put, path = "/v1/products/{sku}", tag = "catalog",
    params(("sku" = String, Path, description = "Stock-keeping unit")),
    request_body = ProductInput,
    responses((status = 200, description = "Created or replaced", body = ProductView),
              (status = 400, body = ErrorBody)))]
pub(crate) async fn put_product(
    State(service): State<Service>,
    Path(sku): Path<String>,
    Json(input): Json<ProductInput>,
) -> ApiResult<ProductView> {
    Ok(axum::Json(service.put_product(&sku, input).await?))
}

#[utoipa::path(get, path = "/v1/products/{sku}", tag = "catalog",
    params(("sku" = String, Path, description = "Stock-keeping unit")),
    responses((status = 200, body = ProductView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_product(
    State(service): State<Service>,
    Path(sku): Path<String>,
) -> ApiResult<ProductView> {
    Ok(axum::Json(service.product(&sku).await?))
}

#[utoipa::path(put, path = "/v1/warehouses/{id}", tag = "catalog",
    params(("id" = String, Path, description = "Warehouse id")),
    request_body = WarehouseInput,
    responses((status = 200, body = WarehouseView), (status = 400, body = ErrorBody)))]
pub(crate) async fn put_warehouse(
    State(service): State<Service>,
    Path(id): Path<String>,
    Json(input): Json<WarehouseInput>,
) -> ApiResult<WarehouseView> {
    Ok(axum::Json(service.put_warehouse(&id, input).await?))
}

#[utoipa::path(put, path = "/v1/stock/{sku}/{warehouse}", tag = "stock",
    params(("sku" = String, Path), ("warehouse" = String, Path)),
    request_body = StockInput,
    responses((status = 200, body = StockEntryView),
              (status = 404, description = "Unknown product or warehouse", body = ErrorBody),
              (status = 409, description = "on_hand below reserved", body = ErrorBody)))]
pub(crate) async fn put_stock(
    State(service): State<Service>,
    Path((sku, warehouse)): Path<(String, String)>,
    Json(input): Json<StockInput>,
) -> ApiResult<StockEntryView> {
    Ok(axum::Json(
        service.put_stock(&sku, &warehouse, input).await?,
    ))
}

#[utoipa::path(get, path = "/v1/stock/{sku}", tag = "stock",
    params(("sku" = String, Path)),
    responses((status = 200, body = StockView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_stock(
    State(service): State<Service>,
    Path(sku): Path<String>,
) -> ApiResult<StockView> {
    Ok(axum::Json(service.stock(&sku).await?))
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
    State(service): State<Service>,
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
    let created = service.create_order(key, input).await?;
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
    State(service): State<Service>,
    Query(query): Query<ListOrdersQuery>,
) -> ApiResult<OrderPage> {
    Ok(axum::Json(service.orders(query).await?))
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = String, Path)),
    responses((status = 200, body = OrderView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_order(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> ApiResult<OrderView> {
    Ok(axum::Json(service.order(&id).await?))
}

#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path)),
    responses((status = 200, description = "Cancelled (or already cancelled)", body = OrderView),
              (status = 404, body = ErrorBody),
              (status = 409, description = "The order is past payment", body = ErrorBody)))]
pub(crate) async fn cancel_order(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> ApiResult<OrderView> {
    Ok(axum::Json(service.cancel_order(&id).await?))
}

#[utoipa::path(get, path = "/v1/orders/{id}/timeline", tag = "orders",
    params(("id" = String, Path)),
    responses((status = 200, body = TimelineView), (status = 404, body = ErrorBody)))]
pub(crate) async fn order_timeline(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> ApiResult<TimelineView> {
    Ok(axum::Json(service.timeline(&id).await?))
}

/// Any path the API does not have.
pub(crate) async fn not_found() -> ApiError {
    ApiError(Error::not_found("path"))
}

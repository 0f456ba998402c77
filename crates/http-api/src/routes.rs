//! Handlers: each takes typed extractors, calls one method of its face (`ordo_service::ports`)
//! and renders its result.
//! The `#[utoipa::path]` attributes and the parameter types below are the source of the OpenAPI
//! document; the statuses every operation shares (bad input, API keys, rate limits, load
//! shedding, time-outs) are added by `crate::contract`.

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, OptionalJson, Path, Query, RawBody};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use ordo_domain::Error;
use ordo_service::api::schema;
use ordo_service::api::*;
use ordo_service::ports::Api;
use serde::Deserialize;
use utoipa::IntoParams;

type ApiResult<T> = Result<axum::Json<T>, ApiError>;

// Path parameters: the extractors' types are the document's parameters, with the schemas of
// `ordo_service::api::schema`. A value that breaks its schema is refused with 400 by the
// service, which parses every identifier.

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct SkuParam {
    #[param(schema_with = schema::sku)]
    sku: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct WarehouseParam {
    #[param(schema_with = schema::warehouse_id)]
    id: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct StockParams {
    #[param(schema_with = schema::sku)]
    sku: String,
    #[param(schema_with = schema::warehouse_id)]
    warehouse: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct OrderParam {
    #[param(schema_with = schema::order_id)]
    id: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct CustomerParam {
    #[param(schema_with = schema::customer_id)]
    customer_id: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct ProviderParam {
    /// A provider that is not enabled is 404, as an unknown one.
    #[param(schema_with = schema::provider)]
    provider: String,
}

/// The `Idempotency-Key` header of `POST /v1/orders`, read by the handler itself.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Only its description is used: the handler reads the header map.
pub(crate) struct IdempotencyKeyHeader {
    /// Repeating a request with the same key and body returns the first result and reserves
    /// nothing more; the same key with another body is 409. Visible ASCII.
    #[param(rename = "Idempotency-Key", schema_with = schema::idempotency_key)]
    idempotency_key: Option<String>,
}

#[utoipa::path(put, path = "/v1/products/{sku}", tag = "catalog", operation_id = "put_product",
    params(SkuParam),
    request_body = ProductInput,
    responses((status = 200, description = "Created or replaced", body = ProductView,
        links(("GetProduct" = (operation_id = "get_product",
                  parameters(("sku" = "$response.body#/sku")))),
              ("GetStock" = (operation_id = "get_stock",
                  parameters(("sku" = "$response.body#/sku"))))))))]
pub(crate) async fn put_product(
    State(api): State<Api>,
    Path(SkuParam { sku }): Path<SkuParam>,
    Json(input): Json<ProductInput>,
) -> ApiResult<ProductView> {
    Ok(axum::Json(api.catalog.put_product(&sku, input).await?))
}

#[utoipa::path(get, path = "/v1/products/{sku}", tag = "catalog", operation_id = "get_product",
    params(SkuParam),
    responses((status = 200, description = "The product", body = ProductView),
              (status = 404, description = "No such product", body = ErrorBody)))]
pub(crate) async fn get_product(
    State(api): State<Api>,
    Path(SkuParam { sku }): Path<SkuParam>,
) -> ApiResult<ProductView> {
    Ok(axum::Json(api.catalog.product(&sku).await?))
}

#[utoipa::path(put, path = "/v1/warehouses/{id}", tag = "catalog", operation_id = "put_warehouse",
    params(WarehouseParam),
    request_body = WarehouseInput,
    responses((status = 200, description = "Created or replaced", body = WarehouseView)))]
pub(crate) async fn put_warehouse(
    State(api): State<Api>,
    Path(WarehouseParam { id }): Path<WarehouseParam>,
    Json(input): Json<WarehouseInput>,
) -> ApiResult<WarehouseView> {
    Ok(axum::Json(api.catalog.put_warehouse(&id, input).await?))
}

#[utoipa::path(put, path = "/v1/stock/{sku}/{warehouse}", tag = "stock", operation_id = "put_stock",
    params(StockParams),
    request_body = StockInput,
    responses((status = 200, description = "The new stock level", body = StockEntryView,
                  links(("GetStock" = (operation_id = "get_stock",
                      parameters(("sku" = "$response.body#/sku")))))),
              (status = 404, description = "Unknown product or warehouse", body = ErrorBody),
              (status = 409, description = "on_hand below reserved", body = ErrorBody)))]
pub(crate) async fn put_stock(
    State(api): State<Api>,
    Path(StockParams { sku, warehouse }): Path<StockParams>,
    Json(input): Json<StockInput>,
) -> ApiResult<StockEntryView> {
    Ok(axum::Json(
        api.catalog.put_stock(&sku, &warehouse, input).await?,
    ))
}

#[utoipa::path(get, path = "/v1/stock/{sku}", tag = "stock", operation_id = "get_stock",
    params(SkuParam),
    responses((status = 200, description = "The SKU's stock in every warehouse", body = StockView),
              (status = 404, description = "No such product", body = ErrorBody)))]
pub(crate) async fn get_stock(
    State(api): State<Api>,
    Path(SkuParam { sku }): Path<SkuParam>,
) -> ApiResult<StockView> {
    Ok(axum::Json(api.catalog.stock(&sku).await?))
}

#[utoipa::path(post, path = "/v1/orders", tag = "orders", operation_id = "create_order",
    params(IdempotencyKeyHeader),
    request_body = CreateOrderInput,
    responses(
        (status = 201, description = "Created, with every item reserved; or the earlier result \
            for this key (then with `Idempotent-Replayed: true`)", body = OrderView,
            headers(("Idempotent-Replayed" = String,
                description = "`true` when the order is an earlier request's result")),
            links(
                ("GetOrder" = (operation_id = "get_order",
                    parameters(("id" = "$response.body#/id")))),
                ("CreatePayment" = (operation_id = "create_payment",
                    parameters(("id" = "$response.body#/id")))),
                ("CancelOrder" = (operation_id = "cancel_order",
                    parameters(("id" = "$response.body#/id")))),
                ("GetTimeline" = (operation_id = "order_timeline",
                    parameters(("id" = "$response.body#/id")))),
                ("ListPayments" = (operation_id = "list_payments",
                    parameters(("id" = "$response.body#/id")))),
                ("ListCustomerOrders" = (operation_id = "list_orders",
                    parameters(("customer_id" = "$response.body#/customer_id")))),
                ("EraseCustomer" = (operation_id = "erase_customer",
                    parameters(("customer_id" = "$response.body#/customer_id")))))),
        (status = 404, description = "An item names no product (`items[i].sku`)",
            body = ErrorBody),
        (status = 409, description = "`insufficient_stock`; or `conflict`: an item priced in \
            another currency than the order's, or the key reused with another body",
            body = ErrorBody)))]
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

#[utoipa::path(get, path = "/v1/orders", tag = "orders", operation_id = "list_orders",
    params(ListOrdersQuery),
    responses((status = 200, description = "A page of orders, newest first", body = OrderPage)))]
pub(crate) async fn list_orders(
    State(api): State<Api>,
    Query(query): Query<ListOrdersQuery>,
) -> ApiResult<OrderPage> {
    Ok(axum::Json(api.orders.orders(query).await?))
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", operation_id = "get_order",
    params(OrderParam),
    responses((status = 200, description = "The order", body = OrderView),
              (status = 404, description = "No such order", body = ErrorBody)))]
pub(crate) async fn get_order(
    State(api): State<Api>,
    Path(OrderParam { id }): Path<OrderParam>,
) -> Result<Response, ApiError> {
    // Encoded once per cached snapshot, not once per read.
    let json = api.orders.order_json(&id).await?;
    Ok(([(http::header::CONTENT_TYPE, "application/json")], json).into_response())
}

#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", operation_id = "cancel_order",
    params(OrderParam),
    responses((status = 200, description = "Cancelled (or already cancelled), its stock released",
                  body = OrderView,
                  links(("GetOrder" = (operation_id = "get_order",
                      parameters(("id" = "$response.body#/id")))))),
              (status = 404, description = "No such order", body = ErrorBody),
              (status = 409, description = "The order is past payment", body = ErrorBody)))]
pub(crate) async fn cancel_order(
    State(api): State<Api>,
    Path(OrderParam { id }): Path<OrderParam>,
) -> ApiResult<OrderView> {
    Ok(axum::Json(api.orders.cancel_order(&id).await?))
}

#[utoipa::path(get, path = "/v1/orders/{id}/timeline", tag = "orders",
    operation_id = "order_timeline",
    params(OrderParam),
    responses((status = 200, description = "Every state change, oldest first", body = TimelineView),
              (status = 404, description = "No such order", body = ErrorBody)))]
pub(crate) async fn order_timeline(
    State(api): State<Api>,
    Path(OrderParam { id }): Path<OrderParam>,
) -> ApiResult<TimelineView> {
    Ok(axum::Json(api.orders.timeline(&id).await?))
}

#[utoipa::path(post, path = "/v1/orders/{id}/payments", tag = "payments",
    operation_id = "create_payment",
    params(OrderParam),
    request_body(content = Option<CreatePaymentInput>,
        description = "Optional: empty, `null`, `{}`, or `{\"provider\": \"webhook\"}`; \
            without a provider the routing rules choose"),
    responses(
        (status = 201, description = "The payment intent; the order's pending one if it has one \
            (then with `Idempotent-Replayed: true`)", body = PaymentView,
            headers(("Idempotent-Replayed" = String,
                description = "`true` when the payment is the order's pending one")),
            links(
                ("GetOrder" = (operation_id = "get_order",
                    parameters(("id" = "$response.body#/order_id")))),
                ("ListPayments" = (operation_id = "list_payments",
                    parameters(("id" = "$response.body#/order_id")))),
                ("CancelOrder" = (operation_id = "cancel_order",
                    parameters(("id" = "$response.body#/order_id")))))),
        (status = 404, description = "No such order, or the provider asked for is not enabled",
            body = ErrorBody),
        (status = 409, description = "The order is not in pending_payment, has a pending \
            payment with another provider, or the provider asked for does not take its \
            currency or country", body = ErrorBody),
        (status = 503, description = "No healthy provider takes this payment", body = ErrorBody)))]
pub(crate) async fn create_payment(
    State(api): State<Api>,
    Path(OrderParam { id }): Path<OrderParam>,
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
    operation_id = "list_payments",
    params(OrderParam),
    responses((status = 200, description = "The order's payments", body = PaymentList),
              (status = 404, description = "No such order", body = ErrorBody)))]
pub(crate) async fn list_payments(
    State(api): State<Api>,
    Path(OrderParam { id }): Path<OrderParam>,
) -> ApiResult<PaymentList> {
    Ok(axum::Json(api.payments.order_payments(&id).await?))
}

#[utoipa::path(post, path = "/v1/payments/callbacks/{provider}", tag = "payments",
    operation_id = "payment_callback",
    params(ProviderParam,
        ("Ordo-Signature" = String, Header,
            description = "`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>`; \
                the timestamp must be within 300 s")),
    request_body(content = PaymentCallbackInput,
        description = "Signed as sent: the signature covers the raw bytes"),
    responses(
        (status = 200, description = "Applied, or a replay of an event id answered with its \
            first outcome", body = PaymentCallbackAck),
        (status = 400, description = "A signed body that is not a valid callback",
            body = ErrorBody),
        (status = 401, description = "Missing or bad signature, or a stale timestamp",
            body = ErrorBody),
        (status = 404, description = "Unknown or disabled provider, or unknown payment",
            body = ErrorBody)),
    security(()))]
pub(crate) async fn payment_callback(
    State(api): State<Api>,
    Path(ProviderParam { provider }): Path<ProviderParam>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<PaymentCallbackAck> {
    // A header that is not visible ASCII cannot be a valid signature: let it fail as one.
    let signature = headers
        .get(ordo_domain::signature::HEADER)
        .map(|value| value.to_str().unwrap_or(""));
    Ok(axum::Json(
        api.payments
            .payment_callback(ProviderCallback {
                provider: &provider,
                signature,
                body: &body,
            })
            .await?,
    ))
}

/// Any path the API does not have.
pub(crate) async fn not_found() -> ApiError {
    ApiError(Error::not_found("path"))
}

#[utoipa::path(post, path = "/v1/pos/batches", tag = "pos", operation_id = "submit_pos_batch",
    request_body = PosBatchInput,
    responses(
        (status = 200, description = "Each sale's outcome; a replay of the batch (same \
            terminal_id and batch_seq) returns the first answer again. A sale that breaks a \
            rule is `rejected` on its own, the rest of the batch goes on", body = PosBatchView),
        (status = 404, description = "Unknown warehouse", body = ErrorBody)))]
pub(crate) async fn submit_pos_batch(
    State(api): State<Api>,
    Json(input): Json<PosBatchInput>,
) -> ApiResult<PosBatchView> {
    Ok(axum::Json(api.orders.submit_pos_batch(input).await?))
}

#[utoipa::path(post, path = "/v1/customers/{customer_id}/erasure", tag = "customers",
    operation_id = "erase_customer",
    params(CustomerParam),
    responses(
        (status = 200, description = "Erased (or erased before: a repeat changes nothing \
            more); orders still in fulfillment are listed in `orders_pending` and erased by \
            themselves once terminal", body = ErasureView)))]
pub(crate) async fn erase_customer(
    State(api): State<Api>,
    Path(CustomerParam { customer_id }): Path<CustomerParam>,
) -> ApiResult<ErasureView> {
    Ok(axum::Json(api.orders.erase_customer(&customer_id).await?))
}

//! The `ordo.v1` services: each method converts its message to the API shape, calls the one
//! face of [`Api`] its REST twin calls, and converts the answer back. No rule lives here.

use crate::convert::money;
use crate::error::status_of;
use crate::pb;
use crate::pb::catalog_service_server::CatalogService;
use crate::pb::customers_service_server::CustomersService;
use crate::pb::orders_service_server::OrdersService;
use crate::pb::payments_service_server::PaymentsService;
use crate::pb::pos_service_server::PosService;
use ordo_domain::Error;
use ordo_service::api;
use ordo_service::ports::Api;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

/// The metadata of a replayed idempotent call (as the REST header `Idempotent-Replayed`).
const REPLAYED_KEY: &str = "idempotent-replayed";

/// The three services over the faces of one [`Api`].
#[derive(Clone)]
pub struct GrpcApi {
    api: Api,
}

impl GrpcApi {
    pub fn new(api: Api) -> Self {
        GrpcApi { api }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T, U: From<T>>(result: ordo_domain::Result<T>) -> Reply<U> {
    result
        .map(|value| Response::new(value.into()))
        .map_err(status_of)
}

fn replayed<T>(mut response: Response<T>, replayed: bool) -> Response<T> {
    if replayed {
        response
            .metadata_mut()
            .insert(REPLAYED_KEY, MetadataValue::from_static("true"));
    }
    response
}

/// The `idempotency-key` metadata, refused like the REST header when it is not visible ASCII.
fn idempotency_key(metadata: &MetadataMap) -> Result<Option<String>, Status> {
    metadata
        .get("idempotency-key")
        .map(|value| {
            value.to_str().map(str::to_owned).map_err(|_| {
                status_of(Error::invalid_field(
                    "idempotency-key",
                    "must be visible ASCII characters",
                ))
            })
        })
        .transpose()
}

#[tonic::async_trait]
impl CatalogService for GrpcApi {
    async fn put_product(&self, request: Request<pb::PutProductRequest>) -> Reply<pb::Product> {
        let r = request.into_inner();
        let input = api::ProductInput {
            name: r.name,
            price: money(r.price),
        };
        reply(self.api.catalog.put_product(&r.sku, input).await)
    }

    async fn get_product(&self, request: Request<pb::GetProductRequest>) -> Reply<pb::Product> {
        reply(self.api.catalog.product(&request.into_inner().sku).await)
    }

    async fn put_warehouse(
        &self,
        request: Request<pb::PutWarehouseRequest>,
    ) -> Reply<pb::Warehouse> {
        let r = request.into_inner();
        let input = api::WarehouseInput { country: r.country };
        reply(self.api.catalog.put_warehouse(&r.id, input).await)
    }

    async fn put_stock(&self, request: Request<pb::PutStockRequest>) -> Reply<pb::StockEntry> {
        let r = request.into_inner();
        let input = api::StockInput { on_hand: r.on_hand };
        reply(
            self.api
                .catalog
                .put_stock(&r.sku, &r.warehouse, input)
                .await,
        )
    }

    async fn get_stock(&self, request: Request<pb::GetStockRequest>) -> Reply<pb::Stock> {
        reply(self.api.catalog.stock(&request.into_inner().sku).await)
    }
}

#[tonic::async_trait]
impl OrdersService for GrpcApi {
    async fn create_order(&self, request: Request<pb::CreateOrderRequest>) -> Reply<pb::Order> {
        let key = idempotency_key(request.metadata())?;
        let input = api::CreateOrderInput::from(request.into_inner());
        let created = self
            .api
            .orders
            .create_order(key.as_deref(), input)
            .await
            .map_err(status_of)?;
        Ok(replayed(
            Response::new(created.order.into()),
            created.replayed,
        ))
    }

    async fn get_order(&self, request: Request<pb::GetOrderRequest>) -> Reply<pb::Order> {
        reply(self.api.orders.order(&request.into_inner().id).await)
    }

    async fn list_orders(&self, request: Request<pb::ListOrdersRequest>) -> Reply<pb::OrderPage> {
        reply(self.api.orders.orders(request.into_inner().into()).await)
    }

    async fn cancel_order(&self, request: Request<pb::CancelOrderRequest>) -> Reply<pb::Order> {
        reply(self.api.orders.cancel_order(&request.into_inner().id).await)
    }

    async fn get_order_timeline(
        &self,
        request: Request<pb::GetOrderTimelineRequest>,
    ) -> Reply<pb::Timeline> {
        reply(self.api.orders.timeline(&request.into_inner().id).await)
    }
}

#[tonic::async_trait]
impl CustomersService for GrpcApi {
    async fn erase_customer(
        &self,
        request: Request<pb::EraseCustomerRequest>,
    ) -> Reply<pb::Erasure> {
        reply(
            self.api
                .orders
                .erase_customer(&request.into_inner().customer_id)
                .await,
        )
    }
}

#[tonic::async_trait]
impl PosService for GrpcApi {
    async fn submit_batch(
        &self,
        request: Request<pb::PosBatchRequest>,
    ) -> Reply<pb::PosBatchResult> {
        let input = api::PosBatchInput::from(request.into_inner());
        reply(self.api.orders.submit_pos_batch(input).await)
    }
}

#[tonic::async_trait]
impl PaymentsService for GrpcApi {
    async fn create_payment(
        &self,
        request: Request<pb::CreatePaymentRequest>,
    ) -> Reply<pb::Payment> {
        let r = request.into_inner();
        let input = api::CreatePaymentInput {
            provider: r.provider,
        };
        let created = self
            .api
            .payments
            .create_payment(&r.order_id, input)
            .await
            .map_err(status_of)?;
        Ok(replayed(
            Response::new(created.payment.into()),
            created.replayed,
        ))
    }

    async fn list_payments(
        &self,
        request: Request<pb::ListPaymentsRequest>,
    ) -> Reply<pb::PaymentList> {
        reply(
            self.api
                .payments
                .order_payments(&request.into_inner().order_id)
                .await,
        )
    }

    async fn payment_callback(
        &self,
        request: Request<pb::PaymentCallbackRequest>,
    ) -> Reply<pb::PaymentCallbackAck> {
        let r = request.into_inner();
        let signature = (!r.signature.is_empty()).then_some(r.signature.as_str());
        reply(
            self.api
                .payments
                .payment_callback(api::ProviderCallback {
                    provider: &r.provider,
                    signature,
                    body: &r.body,
                })
                .await,
        )
    }
}

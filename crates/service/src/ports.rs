//! The three faces of ordo that REST and gRPC serve — catalogue and stock, orders, payments —
//! as traits, one per role that owns it (`inventory`, `orders`, `payments`).
//!
//! Each face is local where its role runs — [`Catalog`](crate::Catalog),
//! [`Orders`](crate::Orders), [`Payments`](crate::Payments), which implement these traits —
//! and the gRPC client of the role that owns it elsewhere (`ordo_grpc_api::client`), or
//! [`NotServedHere`]. The transports only ever hold an [`Api`], so REST and gRPC keep one set
//! of semantics whichever way ordo is deployed.

use crate::api::*;
use crate::{Created, PaymentCreated};
use async_trait::async_trait;
use ordo_domain::Result;
use std::sync::Arc;

#[async_trait]
pub trait CatalogApi: Send + Sync + 'static {
    async fn put_product(&self, sku: &str, input: ProductInput) -> Result<ProductView>;
    async fn product(&self, sku: &str) -> Result<ProductView>;
    async fn put_warehouse(&self, id: &str, input: WarehouseInput) -> Result<WarehouseView>;
    async fn put_stock(
        &self,
        sku: &str,
        warehouse: &str,
        input: StockInput,
    ) -> Result<StockEntryView>;
    async fn stock(&self, sku: &str) -> Result<StockView>;
    /// Whether this face can serve now (its database answers, or a peer of its role is up).
    async fn ready(&self) -> Result<()>;
}

#[async_trait]
pub trait OrdersApi: Send + Sync + 'static {
    async fn create_order(
        &self,
        idempotency_key: Option<&str>,
        input: CreateOrderInput,
    ) -> Result<Created>;
    async fn order(&self, id: &str) -> Result<OrderView>;
    /// [`OrdersApi::order`] encoded as the REST API's JSON (the local service keeps it
    /// encoded with its cached snapshot).
    async fn order_json(&self, id: &str) -> Result<bytes::Bytes> {
        let order = self.order(id).await?;
        serde_json::to_vec(&order)
            .map(bytes::Bytes::from)
            .map_err(|e| ordo_domain::Error::internal(format!("cannot encode an order: {e}")))
    }
    async fn orders(&self, query: ListOrdersQuery) -> Result<OrderPage>;
    async fn cancel_order(&self, id: &str) -> Result<OrderView>;
    async fn timeline(&self, id: &str) -> Result<TimelineView>;
    /// A POS terminal's batch of offline sales (they become orders, so the orders role owns
    /// them).
    async fn submit_pos_batch(&self, input: PosBatchInput) -> Result<PosBatchView>;
    /// Erases a customer's personal data in every order (the orders role owns them).
    async fn erase_customer(&self, customer_id: &str) -> Result<ErasureView>;
    async fn ready(&self) -> Result<()>;
}

#[async_trait]
pub trait PaymentsApi: Send + Sync + 'static {
    async fn create_payment(
        &self,
        order_id: &str,
        input: CreatePaymentInput,
    ) -> Result<PaymentCreated>;
    async fn order_payments(&self, order_id: &str) -> Result<PaymentList>;
    async fn payment_callback(&self, callback: ProviderCallback<'_>) -> Result<PaymentCallbackAck>;
    async fn ready(&self) -> Result<()>;
}

/// What a transport serves: each face local or remote. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    pub catalog: Arc<dyn CatalogApi>,
    pub orders: Arc<dyn OrdersApi>,
    pub payments: Arc<dyn PaymentsApi>,
}

impl Api {
    /// Ready when every face is.
    pub async fn ready(&self) -> Result<()> {
        self.catalog.ready().await?;
        self.orders.ready().await?;
        self.payments.ready().await
    }
}

/// The face of a role this process neither runs nor calls (a `workers` process has no use for
/// orders): every call is `unavailable`, naming the role; readiness is not affected.
pub struct NotServedHere(pub &'static str);

impl NotServedHere {
    fn refuse<T>(&self) -> Result<T> {
        Err(ordo_domain::Error::unavailable(format!(
            "the {} role does not run in this process",
            self.0
        )))
    }
}

#[async_trait]
impl CatalogApi for NotServedHere {
    async fn put_product(&self, _: &str, _: ProductInput) -> Result<ProductView> {
        self.refuse()
    }
    async fn product(&self, _: &str) -> Result<ProductView> {
        self.refuse()
    }
    async fn put_warehouse(&self, _: &str, _: WarehouseInput) -> Result<WarehouseView> {
        self.refuse()
    }
    async fn put_stock(&self, _: &str, _: &str, _: StockInput) -> Result<StockEntryView> {
        self.refuse()
    }
    async fn stock(&self, _: &str) -> Result<StockView> {
        self.refuse()
    }
    async fn ready(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl OrdersApi for NotServedHere {
    async fn create_order(&self, _: Option<&str>, _: CreateOrderInput) -> Result<Created> {
        self.refuse()
    }
    async fn order(&self, _: &str) -> Result<OrderView> {
        self.refuse()
    }
    async fn orders(&self, _: ListOrdersQuery) -> Result<OrderPage> {
        self.refuse()
    }
    async fn cancel_order(&self, _: &str) -> Result<OrderView> {
        self.refuse()
    }
    async fn timeline(&self, _: &str) -> Result<TimelineView> {
        self.refuse()
    }
    async fn submit_pos_batch(&self, _: PosBatchInput) -> Result<PosBatchView> {
        self.refuse()
    }
    async fn erase_customer(&self, _: &str) -> Result<ErasureView> {
        self.refuse()
    }
    async fn ready(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl PaymentsApi for NotServedHere {
    async fn create_payment(&self, _: &str, _: CreatePaymentInput) -> Result<PaymentCreated> {
        self.refuse()
    }
    async fn order_payments(&self, _: &str) -> Result<PaymentList> {
        self.refuse()
    }
    async fn payment_callback(&self, _: ProviderCallback<'_>) -> Result<PaymentCallbackAck> {
        self.refuse()
    }
    async fn ready(&self) -> Result<()> {
        Ok(())
    }
}

//! The composition of the faces over one database: which face holds which, built in one place
//! ([`Faces::new`]), and the periodic job that runs on all of them.
//!
//! What each face needs of another is a field of its own, never a shared god object:
//! payments hold the orders face (the payment timeout cancels through its cancel transaction),
//! fulfillment holds the payments face (its first compensation is the refund).

use crate::fulfillment::Fulfillment;
use crate::orders::Orders;
use crate::payments::Payments;
use crate::ports::CatalogApi;
use crate::{Catalog, FulfillmentSettings, OrderSettings, PaymentSettings, Shared};
use ordo_storage::Database;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The settings of every face, as the configuration resolved them.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// POS batches, the saga's watchdog.
    pub orders: OrderSettings,
    /// Providers, secrets, the sandbox's delay, the payment timeout (the default: the sandbox
    /// only, with a random secret).
    pub payments: PaymentSettings,
    /// Risk rules, the carrier (the default: nothing blocked, the sandbox carrier).
    pub fulfillment: FulfillmentSettings,
}

/// Every face of ordo over one database (all roles in one process). Cheap to clone.
#[derive(Clone)]
pub struct Faces {
    pub catalog: Catalog,
    pub orders: Orders,
    pub payments: Payments,
    /// The saga: the pipeline's stages, its compensations and its watchdog.
    pub fulfillment: Fulfillment,
}

impl Faces {
    /// The faces over `db`; a commit that wrote events wakes `wakeup`'s relay.
    pub fn new(db: Database, wakeup: ordo_outbox::Wakeup, settings: Settings) -> Faces {
        let shared = Shared { db, wakeup };
        let orders = Orders::new(shared.clone(), settings.orders.pos_offline_window_hours);
        let payments = Payments::new(shared.clone(), settings.payments, orders.clone());
        let fulfillment = Fulfillment::new(
            shared.clone(),
            &settings.fulfillment,
            settings.orders.saga_stuck_after,
            payments.clone(),
        );
        Faces {
            catalog: Catalog::new(shared),
            orders,
            payments,
            fulfillment,
        }
    }

    /// Prices orders with the products of `catalog` (the `inventory` role in another process),
    /// read before the order's transaction begins, so no write waits on a network call. The
    /// faces that hold the orders face get this one.
    pub fn with_price_source(self, catalog: Arc<dyn CatalogApi>) -> Faces {
        let orders = self.orders.with_price_source(catalog);
        let payments = self.payments.holding(orders.clone());
        let fulfillment = self.fulfillment.holding(payments.clone());
        Faces {
            catalog: self.catalog,
            orders,
            payments,
            fulfillment,
        }
    }

    /// The payment-timeout job: every [`Payments::payment_timeout_interval`], cancels the orders
    /// unpaid for longer than the timeout, then re-drives the orders stuck in a stage of the
    /// saga and erases the orders whose customers asked for it once they are terminal, until
    /// `stop` is cancelled. Safe to run in several instances at once: each of its writes is
    /// conditional, so a second one is a no-op.
    pub async fn run_payment_timeouts(&self, stop: CancellationToken) {
        let every = self.payments.payment_timeout_interval();
        tracing::info!(
            timeout_secs = self.payments.payment_timeout().as_secs(),
            interval_ms = every.as_millis() as u64,
            "payment timeout job started"
        );
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
            self.payments.time_out_unpaid_orders(&stop).await;
            // Orders sitting in a stage with nothing on its way to move them: re-driven.
            if let Err(error) = self.fulfillment.sweep_stuck_orders().await {
                tracing::warn!(error = %error, "saga watchdog run failed; next run retries");
            }
            // Orders of customers who asked for erasure, terminal since: erased now.
            if let Err(error) = self.orders.sweep_pending_erasures().await {
                tracing::warn!(error = %error, "erasure sweep failed; next run retries");
            }
        }
        tracing::info!("payment timeout job stopped");
    }
}

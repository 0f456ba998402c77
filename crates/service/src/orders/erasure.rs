//! Erasure of a customer's personal data (`POST /v1/customers/{customer_id}/erasure`): in
//! every order of the customer, the shipping `name`, `line1`, `postal_code` and the contact
//! `email` and `phone` become `"[erased]"`; city, country, items, amounts, statuses and the
//! timeline stay (financial and tax records). An order in fulfillment (paid to scheduled)
//! keeps its address until it is terminal — the carrier needs it — and is then erased by the
//! housekeeping job ([`Orders::sweep_pending_erasures`]); every other order is erased at once
//! (one awaiting payment too: paid later, it would ship to `[erased]`, which is what its
//! customer asked for). Each erased
//! order gets a `personal_data_erased` timeline entry; a repeated call changes nothing more.

use super::Orders;
use crate::api::ErasureView;
use crate::{housekeeping, rfc3339, step_ids};
use ordo_domain::ids::CustomerId;
use ordo_domain::order::OrderStatus;
use ordo_domain::personal::ERASED;
use ordo_domain::timeline::TimelineKind;
use ordo_domain::{Error, Result};
use ordo_storage::WriteTx;
use ordo_storage::erasure::ErasableOrder;
use ordo_storage::now_ms;
use ordo_storage::timeline::NewTimelineEntry;
use ordo_telemetry::{metrics, propagation};
use tracing::{Instrument, field};

const ERASED_DETAIL: &str =
    "personal data erased: shipping name, address line and postal code, contact email and phone";

impl Orders {
    /// Erases the personal data of `customer_id`; see the module documentation.
    pub(super) async fn erase_personal_data(&self, customer_id: &str) -> Result<ErasureView> {
        let customer = CustomerId::parse(customer_id)?;
        let span = tracing::info_span!(
            "erase_customer",
            customer.id = customer.as_str(),
            orders.erased = field::Empty,
            orders.pending = field::Empty,
        );
        let view = self
            .erase_customer_in(&customer)
            .instrument(span.clone())
            .await?;
        span.record("orders.erased", view.orders_erased);
        span.record("orders.pending", view.orders_pending.len() as i64);
        Ok(view)
    }

    async fn erase_customer_in(&self, customer: &CustomerId) -> Result<ErasureView> {
        let now = now_ms();
        let mut tx = self.shared.db.begin().await?;
        let requested_at = tx.request_erasure(customer.as_str(), now).await?;
        let orders = tx.orders_of_customer_for_erasure(customer.as_str()).await?;
        let (mut erased, mut newly, mut pending) = (0, 0, Vec::new());
        for order in &orders {
            if order.erased_at_ms.is_some() {
                erased += 1;
            } else if in_fulfillment(order.status) {
                pending.push(order.id.clone());
            } else {
                erase_order(&mut tx, order, now).await?;
                erased += 1;
                newly += 1;
            }
        }
        tx.commit().await?;
        if newly > 0 {
            self.scrub_files().await;
            metrics::count_orders_erased(newly);
        }
        metrics::count_erasure_request();
        tracing::info!(
            customer.id = customer.as_str(),
            orders.erased_now = newly,
            orders.erased = erased,
            orders.pending = pending.len(),
            "customer personal data erasure"
        );
        Ok(ErasureView {
            customer_id: customer.as_str().to_owned(),
            orders_erased: erased,
            orders_pending: pending,
            erased_at: rfc3339(requested_at),
        })
    }

    /// One run of the erasure sweep: erases the orders of customers who asked for erasure
    /// that have become terminal since. Each erasure is a span in that order's trace, linked
    /// to the run's span; a run that finds nothing exports nothing.
    pub async fn sweep_pending_erasures(&self) -> Result<usize> {
        let erased = housekeeping::run(
            "erasure poll",
            self.shared.db.orders_awaiting_erasure(housekeeping::BATCH),
            |due| tracing::info_span!(parent: None, "erasure_sweep", orders.due = due),
            |id: String| async move {
                let mut tx = self.shared.db.begin().await?;
                let Some(order) = tx.order_for_erasure(&id).await? else {
                    return Ok(false);
                };
                if order.erased_at_ms.is_some() || in_fulfillment(order.status) {
                    return Ok(false);
                }
                let span = propagation::job_work_in_row_trace(
                    tracing::info_span!(parent: None, "erase_order", order.id = %order.id),
                    &order.trace_id,
                    &order.span_id,
                );
                let now = now_ms();
                async {
                    erase_order(&mut tx, &order, now).await?;
                    tx.commit().await
                }
                .instrument(span)
                .await?;
                Ok(true)
            },
        )
        .await?
        .acted;
        if erased > 0 {
            self.scrub_files().await;
            metrics::count_orders_erased(erased as u64);
            tracing::info!(orders.erased = erased, "orders erased once terminal");
        }
        Ok(erased)
    }

    /// Leaves no old copy in the database files; a failure is logged (the erasure stands).
    async fn scrub_files(&self) {
        if let Err(error) = self.shared.db.scrub_files().await {
            tracing::warn!(%error, "cannot scrub the database files after an erasure");
        }
    }
}

/// Whether an order in `status` is in fulfillment (paid to scheduled): its address is still
/// needed by the carrier.
fn in_fulfillment(status: OrderStatus) -> bool {
    !status.is_terminal() && status != OrderStatus::PendingPayment
}

/// Rewrites the personal fields of `order` in `tx`.
async fn erase_order(tx: &mut WriteTx, order: &ErasableOrder, now: i64) -> Result<bool> {
    let address = erase_fields(&order.shipping_address, &["name", "line1", "postal_code"])?;
    let contact = erase_fields(&order.contact, &["email", "phone"])?;
    let ids = step_ids();
    tx.erase_order(
        &order.id,
        &address,
        &contact,
        now,
        &NewTimelineEntry {
            order_id: &order.id,
            at_ms: now,
            kind: TimelineKind::PersonalDataErased,
            detail: ERASED_DETAIL,
            trace_id: &ids.trace_id,
            span_id: &ids.span_id,
        },
    )
    .await
}

/// `stored` (a JSON object, or `null` for a POS sale) with each of `fields` that is present
/// replaced by [`ERASED`].
fn erase_fields(stored: &str, fields: &[&str]) -> Result<String> {
    let mut value: serde_json::Value = serde_json::from_str(stored)
        .map_err(|_| Error::internal("stored personal data is not valid JSON"))?;
    if let Some(object) = value.as_object_mut() {
        for field in fields {
            if let Some(entry) = object.get_mut(*field)
                && !entry.is_null()
            {
                *entry = serde_json::Value::String(ERASED.to_owned());
            }
        }
    }
    serde_json::to_string(&value).map_err(|_| Error::internal("cannot encode erased data"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_fields_are_erased_and_the_rest_kept() {
        let address = r#"{"name":"Somchai","line1":"99 Sukhumvit","city":"Bangkok","postal_code":"10110","country":"TH"}"#;
        let erased: serde_json::Value = serde_json::from_str(
            &erase_fields(address, &["name", "line1", "postal_code"]).unwrap(),
        )
        .unwrap();
        assert_eq!(
            erased,
            serde_json::json!({"name": ERASED, "line1": ERASED, "city": "Bangkok",
                "postal_code": ERASED, "country": "TH"})
        );
        let contact = erase_fields(r#"{"email":"a@b.c"}"#, &["email", "phone"]).unwrap();
        assert_eq!(
            contact,
            format!(r#"{{"email":"{ERASED}"}}"#),
            "no phone appears"
        );
        assert_eq!(erase_fields("null", &["email"]).unwrap(), "null");
    }
}

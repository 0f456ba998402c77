//! The risk stage: `order.paid` → `order.risk_approved`, or a rejection with its
//! compensations. `ordo_domain::risk::assess` decides on the order's amount, the customer's
//! recent payments, the shipping country and the contact email (compared normalised, never
//! logged).

use super::Fulfillment;
use super::advance;
use super::compensation::Failure;
use super::stage::Step;
use crate::events::{self, OrderRiskApproved};
use crate::{timeline, topics};
use ordo_domain::order::{OrderEvent, OrderStatus};
use ordo_domain::risk::{self, RiskDecision, RiskFacts};
use ordo_domain::timeline::TimelineKind;
use ordo_domain::{Error, Result};
use ordo_storage::WriteTx;
use ordo_storage::now_ms;
use ordo_storage::records::OrderRecord;

pub(crate) struct RiskCheck;

impl Step for RiskCheck {
    const NAME: &'static str = "risk";
    const TOPICS: &'static [&'static str] = &[topics::ORDER_PAID];
    const WAITING: OrderStatus = OrderStatus::Paid;

    /// The recent payments of the batch's customers, in one statement.
    async fn prefetch(fulfillment: &Fulfillment, orders: &[&str], tx: &mut WriteTx) -> Result<()> {
        let customers: Vec<String> = tx
            .locked_orders()
            .iter()
            .filter(|order| orders.contains(&order.id.as_str()))
            .map(|order| order.customer_id.clone())
            .collect();
        let customers: Vec<&str> = customers.iter().map(String::as_str).collect();
        tx.prefetch_recent_payments(&customers, velocity_since(fulfillment))
            .await
    }

    async fn run(fulfillment: &Fulfillment, order: OrderRecord, tx: &mut WriteTx) -> Result<()> {
        let rules = &fulfillment.risk;
        let since = velocity_since(fulfillment);
        let recent = tx
            .recent_payments_of_customer(&order.customer_id, since)
            .await?;
        let country = json_field(&order.shipping_address, "country")?;
        let email = json_field(&order.contact, "email")?;
        let decision = risk::assess(
            rules,
            &RiskFacts {
                currency: &order.currency,
                amount_minor: order.total_minor,
                recent_payments: recent,
                country: &country,
                email: &email,
            },
        );
        match decision {
            RiskDecision::Approved => {
                advance(tx, &order, Self::WAITING, OrderEvent::RiskApproved).await?;
                timeline(
                    tx,
                    &order.id,
                    TimelineKind::RiskApproved,
                    "the risk check passed",
                )
                .await?;
                let approved = OrderRiskApproved {
                    order_id: order.id.clone(),
                };
                events::append(tx, &approved, now_ms()).await?;
                tracing::info!(order.id = %order.id, "risk approved");
            }
            RiskDecision::Rejected { reason, detail } => {
                tracing::info!(order.id = %order.id, risk.reason = reason, "risk rejected");
                let failure = Failure::rejected(
                    reason,
                    format!("rejected by the risk check ({reason}): {detail}"),
                );
                fulfillment
                    .compensate(tx, &order, Self::WAITING, failure)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Where the velocity window of a check made now starts.
fn velocity_since(fulfillment: &Fulfillment) -> i64 {
    let window_ms = fulfillment.risk.velocity.window_secs.saturating_mul(1000);
    now_ms().saturating_sub(window_ms)
}

/// A text field of a stored JSON column (the shipping address, the contact).
fn json_field(raw: &str, field: &str) -> Result<String> {
    serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| v.get(field).and_then(|f| f.as_str()).map(str::to_owned))
        .ok_or_else(|| Error::internal("a stored order field is not valid"))
}

//! The kinds of an order's timeline entries: each state change, compensation and payment fact
//! the order went through (`GET /v1/orders/{id}/timeline`, field `type`).

use crate::error::Error;
use crate::named::named_enum;

named_enum! {
    /// What a timeline entry records.
    pub enum TimelineKind;
    unknown = Error::internal("unknown timeline entry kind");
    {
        OrderCreated = "order_created",
        OrderCancelled = "order_cancelled",
        PaymentRequested = "payment_requested",
        PaymentSucceeded = "payment_succeeded",
        PaymentFailed = "payment_failed",
        /// A callback reported another amount or currency: nothing changed.
        PaymentMismatch = "payment_mismatch",
        /// The money was taken but the order could no longer be paid: it is refunded.
        PaymentNotApplied = "payment_not_applied",
        /// Compensation: the sandbox gave the money back.
        PaymentRefunded = "payment_refunded",
        /// Compensation: the provider was asked to give the money back.
        RefundRequested = "refund_requested",
        /// Compensation: the reserved stock went back.
        StockReleased = "stock_released",
        RiskApproved = "risk_approved",
        OrderRejected = "order_rejected",
        Split = "split",
        Scheduled = "scheduled",
        ShipmentAccepted = "shipment_accepted",
        ShipmentFailed = "shipment_failed",
        Shipped = "shipped",
        FulfillmentFailed = "fulfillment_failed",
        /// A POS terminal's sale, recorded as a completed order.
        PosSaleRecorded = "pos_sale_recorded",
        /// The customer's personal data in this order became `[erased]`.
        PersonalDataErased = "personal_data_erased",
        /// The saga watchdog found the order sitting in a stage and sent its stage's event
        /// again.
        SagaRedriven = "saga_redriven",
    }
}

impl TimelineKind {
    /// Whether the entry records the end of the order's way (shipped, rejected, failed or
    /// cancelled): nothing follows it but late payment facts.
    pub const fn ends_order(self) -> bool {
        matches!(
            self,
            TimelineKind::Shipped
                | TimelineKind::OrderRejected
                | TimelineKind::FulfillmentFailed
                | TimelineKind::OrderCancelled
                | TimelineKind::PosSaleRecorded
        )
    }
}

//! Shipments: the part of an order that leaves from one warehouse, and its status.
//!
//! ```text
//! pending ──scheduled──▶ scheduled ──push claimed──▶ pushing ──carrier accepted──▶ accepted
//!    │                       │                          │  ▲
//!    │                       │                          └──┘ (a push that did not finish is claimed again)
//!    └───────────────────────┴───── given up ──────────▶ failed ◀── carrier refused
//! ```

use crate::error::Error;
use crate::named::named_enum;

named_enum! {
    /// Where a shipment stands. Every change is conditional on the status it leaves, so a
    /// redelivered event cannot apply twice.
    pub enum ShipmentStatus;
    unknown = Error::invalid_field("status", "is not a known shipment status");
    {
        /// Split off the order; no carrier yet.
        Pending = "pending",
        /// A carrier and pickup slot are chosen.
        Scheduled = "scheduled",
        /// Being pushed to its carrier (the attempt is counted).
        Pushing = "pushing",
        /// The carrier accepted it.
        Accepted = "accepted",
        /// The carrier refused it, or ordo gave up on it.
        Failed = "failed",
    }
}

impl ShipmentStatus {
    /// Whether a push to the carrier may (still) be made: scheduled, or a push that did not
    /// finish.
    pub const fn is_pushable(self) -> bool {
        matches!(self, ShipmentStatus::Scheduled | ShipmentStatus::Pushing)
    }

    /// Whether the carrier's answer is final.
    pub const fn is_finished(self) -> bool {
        matches!(self, ShipmentStatus::Accepted | ShipmentStatus::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::ShipmentStatus as S;

    #[test]
    fn only_scheduled_and_unfinished_pushes_are_pushable() {
        let pushable: Vec<S> = S::ALL.iter().copied().filter(|s| s.is_pushable()).collect();
        assert_eq!(pushable, [S::Scheduled, S::Pushing]);
        let finished: Vec<S> = S::ALL.iter().copied().filter(|s| s.is_finished()).collect();
        assert_eq!(finished, [S::Accepted, S::Failed]);
    }
}

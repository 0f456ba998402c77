//! The sandbox carrier: accepts every shipment, in-process.

use super::{Carrier, PushFuture, PushRequest, Pushed};

/// Accepts every shipment, in-process.
pub(super) struct SandboxCarrier;

impl Carrier for SandboxCarrier {
    fn push<'a>(&'a self, request: PushRequest<'a>) -> PushFuture<'a> {
        let span = tracing::info_span!(
            "sandbox_carrier",
            shipment.id = request.shipment_id,
            carrier = request.carrier
        );
        span.in_scope(|| tracing::debug!("sandbox carrier accepted the shipment"));
        Box::pin(async { Pushed::Accepted { status: None } })
    }
}

//! The domain core of ordo: the values and rules of selling stock, free of any I/O.
//!
//! Layout:
//! - [`error`]: the one error model (kinds, each with its HTTP status, gRPC code and label).
//! - [`text`]: Unicode text parsed once at the edge (NFC, limits counted in characters).
//! - [`ids`]: identifiers (SKU, warehouse, customer, country) as validated newtypes.
//! - [`money`]: integer minor units plus an ISO 4217 currency, overflow-checked.
//! - [`stock`]: quantities, stock levels and the allocation of an order's items to warehouses.
//! - [`order`]: order lines, pricing, the shipping address and contact, the status state machine.
//! - [`personal`]: the marking of personal data, which formatting never prints.
//! - [`shipment`]: shipment statuses; [`timeline`]: the kinds of an order's timeline entries.
//! - [`named`]: enums whose variants have stable names (stored, shown, used as labels).
//! - [`payment`]: payment statuses, providers, routing rules and what a provider's callback does.
//! - [`signature`]: the `Ordo-Signature` HMAC scheme of callbacks and webhooks.
//! - [`pos`]: offline POS terminals: sale ids, payment methods, the offline window.
//! - [`breaker`]: the circuit breaker of outbound calls, as a state machine.
//!
//! Invariant: a value of any type here is valid by construction. Parsing happens at the edge
//! (`parse`/`new` constructors return [`Error`]); code inside trusts the types.

pub mod breaker;
pub mod error;
pub mod ids;
pub mod money;
pub mod named;
pub mod order;
pub mod payment;
pub mod personal;
pub mod pos;
pub mod risk;
pub mod shipment;
pub mod signature;
pub mod stock;
pub mod text;
pub mod timeline;

pub use error::{Error, ErrorKind, Result};

//! Request inputs and response views: the JSON shapes of the API contract, and the schemas of
//! the OpenAPI document. Inputs refuse unknown fields; numbers arrive as wide integers so that a
//! value out of range is reported by the domain with the rule it broke.

use ordo_domain::personal::Personal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// An amount in minor units (cents) of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyDto {
    #[schema(example = 1999, minimum = 0, maximum = 1_000_000_000_000_000i64)]
    pub amount_minor: i64,
    #[schema(example = "USD")]
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    #[schema(example = "Green tea 500 g")]
    pub name: String,
    pub price: MoneyDto,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProductView {
    pub sku: String,
    pub name: String,
    pub price: MoneyDto,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WarehouseInput {
    /// ISO 3166-1 alpha-2.
    #[schema(example = "TH")]
    pub country: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WarehouseView {
    pub id: String,
    pub country: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockInput {
    #[schema(minimum = 0, maximum = 1_000_000_000_000i64)]
    pub on_hand: i64,
}

/// One SKU's stock in one warehouse.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StockEntryView {
    pub sku: String,
    pub warehouse: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WarehouseStockView {
    pub warehouse: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

/// A SKU's stock across warehouses.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StockView {
    pub sku: String,
    pub warehouses: Vec<WarehouseStockView>,
    /// Units available in all warehouses together.
    pub available: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderItemInput {
    pub sku: String,
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: i64,
}

/// Personal data (except the country): marked [`Personal`], so formatting never prints it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressDto {
    #[schema(value_type = String, max_length = 100)]
    pub name: Personal<String>,
    #[schema(value_type = String, max_length = 200)]
    pub line1: Personal<String>,
    #[schema(value_type = String, max_length = 100)]
    pub city: Personal<String>,
    #[schema(value_type = String, max_length = 20)]
    pub postal_code: Personal<String>,
    /// ISO 3166-1 alpha-2.
    #[schema(example = "TH")]
    pub country: String,
}

/// Personal data, marked [`Personal`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactDto {
    #[schema(value_type = String, max_length = 254)]
    pub email: Personal<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, max_length = 32)]
    pub phone: Option<Personal<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderInput {
    pub customer_id: String,
    #[schema(example = "USD")]
    pub currency: String,
    /// 1 to 100 lines.
    pub items: Vec<OrderItemInput>,
    pub shipping_address: AddressDto,
    pub contact: ContactDto,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderItemView {
    pub sku: String,
    pub quantity: i64,
    pub unit_price: MoneyDto,
    pub line_total: MoneyDto,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShipmentView {
    pub id: String,
    pub warehouse: String,
    /// One of pending, scheduled, pushing, accepted, failed.
    pub status: String,
    /// The carrier chosen by the scheduling stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// The pickup slot (RFC 3339, UTC), once scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_slot: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    pub id: String,
    pub customer_id: String,
    /// One of pending_payment, paid, risk_approved, split, scheduled, shipped, cancelled,
    /// rejected, fulfillment_failed, completed (a POS terminal's sale).
    pub status: String,
    pub currency: String,
    pub items: Vec<OrderItemView>,
    pub total: MoneyDto,
    /// `null` for a sale a POS terminal recorded (nothing ships).
    pub shipping_address: Option<AddressDto>,
    /// `null` for a sale a POS terminal recorded.
    pub contact: Option<ContactDto>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
    /// The trace the order was created in (32 hex digits).
    pub trace_id: String,
    pub shipments: Vec<ShipmentView>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListOrdersQuery {
    pub customer_id: Option<String>,
    pub status: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    pub orders: Vec<OrderView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimelineEventView {
    /// RFC 3339, UTC.
    pub at: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub detail: String,
    pub trace_id: String,
    pub span_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimelineView {
    pub events: Vec<TimelineEventView>,
}

/// Asks for a payment intent; without a provider the routing rules choose one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentInput {
    /// `sandbox` or `webhook` (enabled by `ORDO_PAYMENT_WEBHOOK_SECRET`).
    #[serde(default)]
    #[schema(example = "webhook")]
    pub provider: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentView {
    /// `pay_` and 32 hex digits.
    pub id: String,
    pub order_id: String,
    #[schema(example = "sandbox")]
    pub provider: String,
    /// One of pending, succeeded, failed.
    pub status: String,
    /// The order's total at the time of the intent.
    pub amount: MoneyDto,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentList {
    /// Oldest first.
    pub payments: Vec<PaymentView>,
}

/// What a provider reports about a payment; signed with `Ordo-Signature` over the raw body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentCallbackInput {
    /// The provider's id of this event; a replay of it changes nothing.
    pub event_id: String,
    pub payment_id: String,
    pub status: CallbackStatus,
    pub amount: MoneyDto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackStatus {
    Succeeded,
    Failed,
}

/// The answer to every delivery of one event: what its first delivery did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentCallbackAck {
    pub event_id: String,
    /// One of succeeded, failed, amount_mismatch, order_not_payable, payment_not_pending.
    pub outcome: String,
}

/// `POST /v1/pos/batches`: the sales a terminal made while offline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PosBatchInput {
    #[schema(example = "till-07", max_length = 64)]
    pub terminal_id: String,
    /// The terminal's warehouse: where the sold goods' stock is taken from.
    #[schema(example = "bkk-1", max_length = 64)]
    pub warehouse: String,
    /// 1 for a terminal's first batch, one more for each next one.
    #[schema(minimum = 1)]
    pub batch_seq: i64,
    /// At most 500.
    #[schema(max_items = 500)]
    pub sales: Vec<PosSaleInput>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PosSaleInput {
    /// Unique per terminal.
    #[schema(example = "sale-000123", max_length = 64)]
    pub client_sale_id: String,
    /// RFC 3339 with an offset: the terminal's local time of the sale.
    #[schema(example = "2026-11-29T14:03:00+07:00")]
    pub sold_at: String,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[schema(example = "THB")]
    pub currency: String,
    /// 1 to 100 lines.
    pub items: Vec<OrderItemInput>,
    pub payment: PosPaymentInput,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PosPaymentInput {
    /// `cash` or `card_offline`.
    #[schema(example = "cash")]
    pub method: String,
    /// What the customer paid: the amount the order records.
    pub amount: MoneyDto,
}

/// The answer to a batch; a replay of the batch gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PosBatchView {
    pub terminal_id: String,
    pub batch_seq: i64,
    /// One per sale, in the batch's order.
    pub results: Vec<PosSaleResultView>,
    /// This terminal's batch numbers below this one never received (at most 1,000, oldest
    /// first).
    pub missing_batch_seqs: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PosSaleResultView {
    pub client_sale_id: String,
    /// `accepted`, `duplicate` (accepted before: `order_id` is that order) or `rejected`.
    pub outcome: String,
    pub order_id: Option<String>,
    /// Units the warehouse's free stock did not cover (the sale is accepted all the same).
    pub stock_deficit: Vec<StockDeficitView>,
    /// Amount paid minus the catalogue total (negative: paid less); accepted sales only.
    pub price_difference: Option<MoneyDifferenceDto>,
    /// Why a sale was rejected.
    pub error: Option<PosSaleErrorView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockDeficitView {
    pub sku: String,
    pub quantity: i64,
}

/// A signed amount of money (a difference may be negative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MoneyDifferenceDto {
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PosSaleErrorView {
    /// An error code of the error model (`invalid_argument`, `not_found`, ...).
    pub code: String,
    pub message: String,
}

/// The answer to `POST /v1/customers/{customer_id}/erasure`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErasureView {
    pub customer_id: String,
    /// Orders of this customer whose personal data is erased (by this call or before).
    pub orders_erased: i64,
    /// Orders still in fulfillment (paid to scheduled): erased by themselves once terminal.
    pub orders_pending: Vec<String>,
    /// When erasure was first asked for (RFC 3339, UTC).
    pub erased_at: String,
}

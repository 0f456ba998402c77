//! The JSON Schemas of constrained request fields, built from the constants and patterns the
//! validating code itself uses (`ordo_domain`'s limits and patterns, this crate's). A field
//! names one of these with `#[schema(schema_with = ...)]`, so the OpenAPI document carries the
//! very limits the code enforces and the two cannot drift apart.
//!
//! Lengths are in characters (Unicode code points), as JSON Schema counts them and as
//! `ordo_domain::text` checks them.
//!
//! Not every field of every request is a request-level rule: a POS batch takes each sale's
//! content as a fact to accept or reject on its own (`rejected` in the answer), so the sales'
//! fields carry their shape only (see [`pos_sale_items`], [`pos_money`]).

use ordo_domain::ErrorKind;
use ordo_domain::ids::{CountryCode, CustomerId, IDENTIFIER_PATTERN, OrderId, Sku, WarehouseId};
use ordo_domain::money::{Currency, Money};
use ordo_domain::order::{Contact, NewOrder, OrderStatus, ShippingAddress};
use ordo_domain::payment::{
    CallbackOutcome, EVENT_ID_MAX_CHARS, PaymentId, PaymentStatus, Provider, VISIBLE_ASCII_PATTERN,
};
use ordo_domain::pos::MAX_SALES_PER_BATCH;
use ordo_domain::shipment::ShipmentStatus;
use ordo_domain::stock::{OnHand, Quantity};
use ordo_domain::text::TEXT_PATTERN;
use ordo_domain::timeline::TimelineKind;
use serde_json::json;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, Ref, SchemaFormat, SchemaType,
    Type,
};
use utoipa::openapi::{Array, Object};

pub use crate::catalog::PRODUCT_NAME_MAX_CHARS;
pub use crate::orders::{IDEMPOTENCY_KEY_MAX_CHARS, MAX_PAGE};
/// The longest terminal id and client sale id (`ordo_domain::pos`).
pub const POS_ID_MAX_CHARS: usize = ordo_domain::pos::ID_MAX_CHARS;

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn nullable_string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

fn int64() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
}

/// Free text (`ordo_domain::text::parse_text`): trimmed and NFC-normalised once accepted.
fn text(max_chars: usize, description: &str) -> ObjectBuilder {
    string()
        .min_length(Some(1))
        .max_length(Some(max_chars))
        .pattern(Some(TEXT_PATTERN))
        .description(Some(format!(
            "{description} At most {max_chars} characters as sent (and after NFC \
             normalisation), no control characters, not blank; stored trimmed and in NFC."
        )))
}

/// An identifier (`ordo_domain::ids::parse_identifier`).
fn identifier(max_chars: usize, description: &str) -> ObjectBuilder {
    string()
        .min_length(Some(1))
        .max_length(Some(max_chars))
        .pattern(Some(IDENTIFIER_PATTERN))
        .description(Some(format!(
            "{description} 1 to {max_chars} letters, marks and digits of any script and \
             `- _ . :`."
        )))
}

/// Names of a closed set, as an `enum`.
fn names(values: impl IntoIterator<Item = &'static str>, description: &str) -> ObjectBuilder {
    string()
        .enum_values(Some(values))
        .description(Some(description))
}

pub fn sku() -> Object {
    identifier(Sku::MAX_CHARS, "A stock-keeping unit.")
        .examples([json!("TEA-1")])
        .build()
}

pub fn warehouse_id() -> Object {
    identifier(WarehouseId::MAX_CHARS, "A warehouse id.")
        .examples([json!("bkk-1")])
        .build()
}

pub fn customer_id() -> Object {
    identifier(CustomerId::MAX_CHARS, "The caller's id of a customer.").build()
}

/// An order id in a path: any identifier (an unknown one is `404`).
pub fn order_id() -> Object {
    identifier(
        OrderId::MAX_CHARS,
        "An order id (`ord_` and 32 hex digits for the orders of this service).",
    )
    .build()
}

pub fn terminal_id() -> Object {
    identifier(POS_ID_MAX_CHARS, "A POS terminal's id.")
        .examples([json!("till-07")])
        .build()
}

pub fn cursor() -> Object {
    string()
        .pattern(Some(OrderId::GENERATED_PATTERN))
        .description(Some("`next_cursor` of the previous page."))
        .build()
}

pub fn currency() -> Object {
    string()
        .pattern(Some(Currency::PATTERN))
        .description(Some("An ISO 4217 code: three upper-case letters."))
        .examples([json!("USD")])
        .build()
}

pub fn country() -> Object {
    string()
        .pattern(Some(CountryCode::PATTERN))
        .description(Some("An ISO 3166-1 alpha-2 code: two upper-case letters."))
        .examples([json!("TH")])
        .build()
}

pub fn amount_minor() -> Object {
    int64()
        .minimum(Some(0))
        .maximum(Some(Money::MAX_MINOR))
        .description(Some("Minor units (cents) of the currency."))
        .examples([json!(1999)])
        .build()
}

pub fn quantity() -> Object {
    int64()
        .minimum(Some(1))
        .maximum(Some(i64::from(Quantity::MAX)))
        .build()
}

pub fn on_hand() -> Object {
    int64()
        .minimum(Some(0))
        .maximum(Some(OnHand::MAX))
        .description(Some("Units physically in the warehouse."))
        .build()
}

pub fn product_name() -> Object {
    text(PRODUCT_NAME_MAX_CHARS, "The product's name.")
        .examples([json!("Green tea 500 g")])
        .build()
}

pub fn address_name() -> Object {
    text(ShippingAddress::NAME_MAX_CHARS, "The recipient's name.").build()
}

pub fn address_line1() -> Object {
    text(ShippingAddress::LINE1_MAX_CHARS, "Street and number.").build()
}

pub fn address_city() -> Object {
    text(ShippingAddress::CITY_MAX_CHARS, "The city.").build()
}

pub fn address_postal_code() -> Object {
    text(ShippingAddress::POSTAL_CODE_MAX_CHARS, "The postal code.").build()
}

pub fn email() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(Contact::EMAIL_MAX_CHARS))
        .pattern(Some(Contact::EMAIL_PATTERN))
        .description(Some(
            "An email address: something before the first `@`, a `.` after it, no white space.",
        ))
        .examples([json!("somchai@example.com")])
        .build()
}

pub fn phone() -> Object {
    nullable_string()
        .min_length(Some(1))
        .max_length(Some(Contact::PHONE_MAX_CHARS))
        .pattern(Some(Contact::PHONE_PATTERN))
        .description(Some(
            "Optional: digits, spaces and `+ - ( )`, at least one digit; stored trimmed.",
        ))
        .examples([json!("+66 81 234 5678")])
        .build()
}

/// The lines of an order: 1 to [`NewOrder::MAX_LINES`].
pub fn order_items() -> Array {
    ArrayBuilder::new()
        .items(Ref::from_schema_name("OrderItemInput"))
        .min_items(Some(1))
        .max_items(Some(NewOrder::MAX_LINES))
        .build()
}

/// The sales of a POS batch: at most [`MAX_SALES_PER_BATCH`].
pub fn pos_sales() -> Array {
    ArrayBuilder::new()
        .items(Ref::from_schema_name("PosSaleInput"))
        .max_items(Some(MAX_SALES_PER_BATCH))
        .build()
}

pub fn batch_seq() -> Object {
    int64()
        .minimum(Some(1))
        .maximum(Some(ordo_domain::pos::MAX_BATCH_SEQ))
        .description(Some(
            "1 for a terminal's first batch, one more for each next one.",
        ))
        .build()
}

pub fn list_limit() -> Object {
    int64()
        .minimum(Some(1))
        .maximum(Some(MAX_PAGE))
        .description(Some("Orders per page; default 20."))
        .build()
}

pub fn idempotency_key() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(IDEMPOTENCY_KEY_MAX_CHARS))
        .pattern(Some(VISIBLE_ASCII_PATTERN))
        .build()
}

pub fn event_id() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(EVENT_ID_MAX_CHARS))
        .pattern(Some(VISIBLE_ASCII_PATTERN))
        .description(Some(
            "The provider's id of this event; a replay of it changes nothing.",
        ))
        .build()
}

pub fn payment_id() -> Object {
    string()
        .pattern(Some(PaymentId::PATTERN))
        .description(Some("`pay_` and 32 hex digits."))
        .build()
}

pub fn provider() -> Object {
    names(
        Provider::ALL.map(Provider::as_str),
        "A payment provider: `sandbox`, or `webhook` where `ORDO_PAYMENT_WEBHOOK_SECRET` \
         enables it.",
    )
    .build()
}

/// `provider` of `POST /v1/orders/{id}/payments`: optional, `null` is the same as absent.
pub fn requested_provider() -> Object {
    let mut values: Vec<serde_json::Value> =
        Provider::ALL.iter().map(|p| json!(p.as_str())).collect();
    values.push(serde_json::Value::Null);
    nullable_string()
        .enum_values(Some(values))
        .description(Some(
            "`sandbox` or `webhook` (enabled by `ORDO_PAYMENT_WEBHOOK_SECRET`; a provider \
             that is not enabled is `404`); absent or null: the routing rules choose.",
        ))
        .examples([json!("webhook")])
        .build()
}

pub fn order_status() -> Object {
    names(
        OrderStatus::ALL.map(OrderStatus::as_str),
        "pending_payment, then paid, risk_approved, split, scheduled, shipped; or one of the \
         terminal failures cancelled, rejected, fulfillment_failed; completed: a sale a POS \
         terminal recorded.",
    )
    .build()
}

pub fn shipment_status() -> Object {
    names(ShipmentStatus::ALL.map(ShipmentStatus::as_str), "").build()
}

pub fn payment_status() -> Object {
    names(PaymentStatus::ALL.map(PaymentStatus::as_str), "").build()
}

pub fn timeline_kind() -> Object {
    names(TimelineKind::ALL.map(TimelineKind::as_str), "").build()
}

pub fn callback_outcome() -> Object {
    names(CallbackOutcome::ALL.map(CallbackOutcome::as_str), "").build()
}

pub fn pos_outcome() -> Object {
    names(
        ["accepted", "duplicate", "rejected"],
        "`accepted`, `duplicate` (accepted before: `order_id` is that order) or `rejected`.",
    )
    .build()
}

/// The `code` of an error body: one per error kind.
pub fn error_code() -> Object {
    names(
        ErrorKind::ALL.map(ErrorKind::code),
        "The error kind; each kind has one HTTP status.",
    )
    .build()
}

/// An error code of a rejected POS sale.
pub fn sale_error_code() -> Object {
    names(
        ErrorKind::ALL.map(ErrorKind::code),
        "Why the sale was rejected.",
    )
    .build()
}

/// A sale's lines: their shape only. A sale whose lines break a rule (no lines, more than
/// [`NewOrder::MAX_LINES`], an unknown SKU, a quantity out of range) is `rejected` on its own
/// in the answer; the batch goes on.
pub fn pos_sale_items() -> Array {
    let item = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("sku", string())
        .required("sku")
        .property("quantity", int64())
        .required("quantity")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .build();
    ArrayBuilder::new()
        .items(item)
        .description(Some(format!(
            "1 to {} lines (else the sale is rejected).",
            NewOrder::MAX_LINES
        )))
        .build()
}

/// An amount paid at a POS terminal: its shape only (an invalid amount rejects the sale).
pub fn pos_money() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("amount_minor", int64())
        .required("amount_minor")
        .property("currency", string())
        .required("currency")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(
            "What the customer paid: the amount the order records.",
        ))
        .build()
}

/// How to reach a customer, as an order shows it: after an erasure its values are the string
/// `"[erased]"`, so the input's formats do not hold here.
pub fn contact_view() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .property("email", string())
        .required("email")
        .property("phone", string())
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(
            "Personal data; `null` for a sale a POS terminal recorded, `\"[erased]\"` values \
             after an erasure.",
        ))
        .build()
}

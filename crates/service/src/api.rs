//! Request inputs and response views: the JSON shapes of the API contract, and the schemas of
//! the OpenAPI document. Inputs refuse unknown fields; numbers arrive as wide integers so that a
//! value out of range is reported by the domain with the rule it broke.
//!
//! Constrained fields take their JSON Schema from [`schema`], built from the same constants and
//! patterns the validating code uses.

pub mod schema;

use ordo_domain::personal::Personal;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The largest integer a JSON number carries exactly everywhere (2^53 - 1, JavaScript's
/// `Number.MAX_SAFE_INTEGER`): no integer of a request may be larger.
pub const MAX_JSON_INTEGER: i64 = (1 << 53) - 1;

/// An integer field. JSON has one number type, and JSON Schema's `integer` is any number with
/// no fraction: `847.0` and `8.47e2` are the integer 847, as `847` is. Such a number is taken
/// if it is within [`MAX_JSON_INTEGER`] in magnitude, where every integer is exact; a fraction
/// is refused, and so is every other type (`"847"` included).
fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_any(IntegerVisitor { text: false })
}

/// A struct that must arrive as a JSON object. serde's derived `Deserialize` also reads a
/// struct from an array of its fields in order (`[1999, "USD"]` for a money object): the API
/// refuses that as the wrong type, as its schema says.
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<T, D::Error> {
    ObjectOnly::deserialize(deserializer).map(|ObjectOnly(value)| value)
}

/// A list of structs, each of which must arrive as a JSON object ([`object`]).
fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    Vec::<ObjectOnly<T>>::deserialize(deserializer)
        .map(|list| list.into_iter().map(|ObjectOnly(value)| value).collect())
}

/// `T` read from a map only: anything else is "invalid type: …, expected a JSON object". The
/// REST extractors read whole request bodies through it; [`object`] and [`objects`] the nested
/// ones.
pub struct ObjectOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapOnly<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for MapOnly<T> {
            type Value = T;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(MapOnly(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

/// An integer query parameter (`?limit=20`): the text of a number, read as [`integer`] reads
/// a JSON number.
fn query_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    deserializer
        .deserialize_any(IntegerVisitor { text: true })
        .map(Some)
}

struct IntegerVisitor {
    /// Whether the integer comes as text (a query string).
    text: bool,
}

impl serde::de::Visitor<'_> for IntegerVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<i64, E> {
        Ok(value)
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<i64, E> {
        i64::try_from(value)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(value), &self))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<i64, E> {
        if value.fract() == 0.0 && value.abs() <= MAX_JSON_INTEGER as f64 {
            // Integral and within 2^53: the conversion is exact.
            Ok(value as i64)
        } else {
            Err(E::invalid_value(serde::de::Unexpected::Float(value), &self))
        }
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<i64, E> {
        if !self.text {
            return Err(E::invalid_type(serde::de::Unexpected::Str(value), &self));
        }
        match (value.parse::<i64>(), value.parse::<f64>()) {
            (Ok(integer), _) => Ok(integer),
            (Err(_), Ok(number)) if number.is_finite() => self.visit_f64(number),
            _ => Err(E::invalid_value(serde::de::Unexpected::Str(value), &self)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyDto {
    #[serde(deserialize_with = "integer")]
    #[schema(schema_with = schema::amount_minor)]
    pub amount_minor: i64,
    #[schema(schema_with = schema::currency)]
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    #[schema(schema_with = schema::product_name)]
    pub name: String,
    #[serde(deserialize_with = "object")]
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
    #[schema(schema_with = schema::country)]
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
    #[serde(deserialize_with = "integer")]
    #[schema(schema_with = schema::on_hand)]
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
    #[schema(schema_with = schema::sku)]
    pub sku: String,
    #[serde(deserialize_with = "integer")]
    #[schema(schema_with = schema::quantity)]
    pub quantity: i64,
}

/// Personal data (except the country): marked [`Personal`], so formatting never prints it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressDto {
    #[schema(schema_with = schema::address_name)]
    pub name: Personal<String>,
    #[schema(schema_with = schema::address_line1)]
    pub line1: Personal<String>,
    #[schema(schema_with = schema::address_city)]
    pub city: Personal<String>,
    #[schema(schema_with = schema::address_postal_code)]
    pub postal_code: Personal<String>,
    #[schema(schema_with = schema::country)]
    pub country: String,
}

/// Personal data, marked [`Personal`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactDto {
    #[schema(schema_with = schema::email)]
    pub email: Personal<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::phone, required = false)]
    pub phone: Option<Personal<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderInput {
    #[schema(schema_with = schema::customer_id)]
    pub customer_id: String,
    #[schema(schema_with = schema::currency)]
    pub currency: String,
    #[schema(schema_with = schema::order_items)]
    #[serde(deserialize_with = "objects")]
    pub items: Vec<OrderItemInput>,
    #[serde(deserialize_with = "object")]
    pub shipping_address: AddressDto,
    #[serde(deserialize_with = "object")]
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
    #[schema(schema_with = schema::shipment_status)]
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
    #[schema(schema_with = schema::order_status)]
    pub status: String,
    pub currency: String,
    pub items: Vec<OrderItemView>,
    pub total: MoneyDto,
    /// `null` for a sale a POS terminal recorded (nothing ships).
    pub shipping_address: Option<AddressDto>,
    #[schema(schema_with = schema::contact_view)]
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
    #[param(schema_with = schema::customer_id)]
    pub customer_id: Option<String>,
    #[param(schema_with = schema::order_status)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "query_integer")]
    #[param(schema_with = schema::list_limit)]
    pub limit: Option<i64>,
    #[param(schema_with = schema::cursor)]
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
    #[schema(schema_with = schema::timeline_kind)]
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
    #[serde(default)]
    #[schema(schema_with = schema::requested_provider, required = false)]
    pub provider: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentView {
    /// `pay_` and 32 hex digits.
    pub id: String,
    pub order_id: String,
    #[schema(schema_with = schema::provider)]
    pub provider: String,
    #[schema(schema_with = schema::payment_status)]
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
    #[schema(schema_with = schema::event_id)]
    pub event_id: String,
    #[schema(schema_with = schema::payment_id)]
    pub payment_id: String,
    pub status: CallbackStatus,
    #[serde(deserialize_with = "object")]
    pub amount: MoneyDto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackStatus {
    Succeeded,
    Failed,
}

/// A provider's callback as it arrived: the provider its path names, its `Ordo-Signature`
/// header, and its raw body (the signature covers these bytes, not a parse of them).
#[derive(Debug, Clone, Copy)]
pub struct ProviderCallback<'a> {
    pub provider: &'a str,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// The answer to every delivery of one event: what its first delivery did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentCallbackAck {
    pub event_id: String,
    #[schema(schema_with = schema::callback_outcome)]
    pub outcome: String,
}

/// `POST /v1/pos/batches`: the sales a terminal made while offline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PosBatchInput {
    #[schema(schema_with = schema::terminal_id)]
    pub terminal_id: String,
    /// The terminal's warehouse: where the sold goods' stock is taken from.
    #[schema(schema_with = schema::warehouse_id)]
    pub warehouse: String,
    #[serde(deserialize_with = "integer")]
    #[schema(schema_with = schema::batch_seq)]
    pub batch_seq: i64,
    #[schema(schema_with = schema::pos_sales)]
    #[serde(deserialize_with = "objects")]
    pub sales: Vec<PosSaleInput>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PosSaleInput {
    /// Unique per terminal: an identifier (letters, marks and digits of any script and
    /// `- _ . :`); else the sale is rejected.
    #[schema(example = "sale-000123")]
    pub client_sale_id: String,
    /// RFC 3339 with an offset: the terminal's local time of the sale. More than 5 minutes
    /// ahead of the service's clock, or older than the offline window
    /// (`ORDO_POS_OFFLINE_WINDOW_HOURS`), the sale is rejected.
    #[schema(example = "2026-11-29T14:03:00+07:00")]
    pub sold_at: String,
    /// Optional: the customer's id (an identifier; else the sale is rejected).
    #[serde(default)]
    pub customer_id: Option<String>,
    /// The sale's ISO 4217 currency, the one its products are priced in (else the sale is
    /// rejected).
    #[schema(example = "THB")]
    pub currency: String,
    #[schema(schema_with = schema::pos_sale_items)]
    #[serde(deserialize_with = "objects")]
    pub items: Vec<OrderItemInput>,
    #[serde(deserialize_with = "object")]
    pub payment: PosPaymentInput,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PosPaymentInput {
    /// `cash` or `card_offline`.
    #[schema(example = "cash")]
    pub method: String,
    #[schema(schema_with = schema::pos_money)]
    #[serde(deserialize_with = "object")]
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
    #[schema(schema_with = schema::pos_outcome)]
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
    #[schema(schema_with = schema::sale_error_code)]
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

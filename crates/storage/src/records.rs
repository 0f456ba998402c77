//! Row shapes exchanged with the service layer. Plain data: the service turns them into API
//! views; storage checked them on the way in.

/// A product of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRecord {
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarehouseRecord {
    pub id: String,
    pub country: String,
}

/// One SKU's stock in one warehouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRecord {
    pub sku: String,
    pub warehouse: String,
    pub on_hand: i64,
    pub reserved: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItemRecord {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    pub id: String,
    pub customer_id: String,
    pub status: String,
    pub currency: String,
    pub total_minor: i64,
    /// JSON of the shipping address (personal data).
    pub shipping_address: String,
    /// JSON of the contact (personal data).
    pub contact: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub trace_id: String,
    pub span_id: String,
    pub items: Vec<OrderItemRecord>,
}

/// One entry of an order's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub at_ms: i64,
    pub kind: String,
    pub detail: String,
    pub trace_id: String,
    pub span_id: String,
}

/// Filters and position of an order listing (newest first).
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub customer_id: Option<String>,
    pub status: Option<String>,
    /// Only orders older than this id (the previous page's last id).
    pub before_id: Option<String>,
    pub limit: u32,
}

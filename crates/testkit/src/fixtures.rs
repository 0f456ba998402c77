//! The catalogue and request bodies the tests use, and small helpers for making them.

use crate::*;
use serde_json::{Value, json};

/// The catalogue [`seed_catalog`] loads.
pub const TEA: &str = "TEA-001"; // 19.99 USD, 100 in BKK-1
pub const MUG: &str = "MUG-002"; // 12.50 USD, 100 in BER-1
pub const BOOK_EUR: &str = "BOOK-EUR"; // 9.00 EUR, 10 in BER-1
pub const BKK: &str = "BKK-1"; // TH
pub const BER: &str = "BER-1"; // DE
pub const TEA_PRICE: i64 = 1999;
pub const MUG_PRICE: i64 = 1250;
pub const SEEDED_ON_HAND: i64 = 100;

pub fn money(amount_minor: i64, currency: &str) -> Value {
    json!({ "amount_minor": amount_minor, "currency": currency })
}

pub async fn put_product(
    server: &TestServer,
    sku: &str,
    amount_minor: i64,
    currency: &str,
) -> Value {
    let body = json!({ "name": format!("Product {sku}"), "price": money(amount_minor, currency) });
    put_ok(server, &format!("/v1/products/{sku}"), &body).await
}

pub async fn put_warehouse(server: &TestServer, id: &str, country: &str) -> Value {
    let body = json!({ "country": country });
    put_ok(server, &format!("/v1/warehouses/{id}"), &body).await
}

pub async fn put_stock(server: &TestServer, sku: &str, warehouse: &str, on_hand: i64) -> Value {
    let body = json!({ "on_hand": on_hand });
    put_ok(server, &format!("/v1/stock/{sku}/{warehouse}"), &body).await
}

/// The body of a PUT of `body` to `path`, failing the test unless the answer is 200.
async fn put_ok(server: &TestServer, path: &str, body: &Value) -> Value {
    server.put_json(path, body).await.expect_status(200).body
}

/// Loads the constants above: two USD products, one EUR product, two warehouses, stock.
pub async fn seed_catalog(server: &TestServer) {
    put_warehouse(server, BKK, "TH").await;
    put_warehouse(server, BER, "DE").await;
    put_product(server, TEA, TEA_PRICE, "USD").await;
    put_product(server, MUG, MUG_PRICE, "USD").await;
    put_product(server, BOOK_EUR, 900, "EUR").await;
    put_stock(server, TEA, BKK, SEEDED_ON_HAND).await;
    put_stock(server, MUG, BER, SEEDED_ON_HAND).await;
    put_stock(server, BOOK_EUR, BER, 10).await;
}

/// One product with `on_hand` units in one warehouse, for tests that need a SKU of their own.
pub async fn seed_single_sku(server: &TestServer, sku: &str, on_hand: i64) {
    put_warehouse(server, "WH-1", "TH").await;
    put_product(server, sku, 500, "USD").await;
    put_stock(server, sku, "WH-1", on_hand).await;
}

/// A valid USD order body for `customer_id` with the given (sku, quantity) items.
/// The string `field` of each element of the JSON array `list`, in order (e.g. the `status` of
/// each of an order's `shipments`); fails the test when `list` is no array or an element has no
/// such string.
pub fn field_of_each<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|item| {
            item[field]
                .as_str()
                .unwrap_or_else(|| panic!("no string {field} in {item}"))
        })
        .collect()
}

pub fn order_body(customer_id: &str, items: &[(&str, i64)]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(sku, quantity)| json!({ "sku": sku, "quantity": quantity }))
        .collect();
    json!({
        "customer_id": customer_id,
        "currency": "USD",
        "items": items,
        "shipping_address": {
            "name": "Somchai Jaidee",
            "line1": "99 Sukhumvit Road",
            "city": "Bangkok",
            "postal_code": "10110",
            "country": "TH"
        },
        "contact": { "email": "somchai@example.com", "phone": "+66812345678" }
    })
}

/// Percent-encodes everything but unreserved characters, for query strings and paths.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A small deterministic PRNG (xorshift64*), enough to mutate request bodies reproducibly.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

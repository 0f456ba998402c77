//! Bad input is answered with a 4xx and the error body, never a 5xx, and writes nothing.
//! One test per class of bad input, each on SQLite and PostgreSQL.

use ordo_testkit::*;
use serde_json::{Value, json};

backend_tests!(
    malformed_json,
    wrong_types,
    bodies_are_objects_not_arrays_of_their_fields,
    missing_fields,
    unknown_fields,
    out_of_range_numbers,
    boundary_numbers_are_accepted,
    empty_items,
    too_many_items,
    over_long_strings,
    nul_bytes,
    control_characters,
    body_too_large,
    body_at_the_size_limit_is_accepted,
    wrong_content_type,
    missing_content_type,
    json_content_type_with_charset_is_accepted,
    invalid_currency_and_country,
    unknown_path,
    wrong_method,
    invalid_ids_in_path,
    invalid_list_parameters,
    garbage_cursor_is_rejected,
    fuzzed_bodies_never_cause_5xx,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn seeded_server(backend: Backend) -> TestServer {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    server
}

/// Asserts `reply` is the error `status`/`code` with a well-formed body; `case` names the input.
#[track_caller]
fn expect_error(case: &str, reply: &Reply, status: u16, code: &str) {
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (status, Some(code)),
        "{case}: expected HTTP {status} `{code}`, got HTTP {} with body: {}",
        reply.status,
        reply.text
    );
    assert_error(reply, status, code);
}

/// No order exists and the seeded stock is untouched.
async fn assert_nothing_written(server: &TestServer) {
    let orders = server.list_all_orders("").await;
    assert!(
        orders.is_empty(),
        "a rejected request created orders: {orders:?}"
    );
    for (sku, on_hand) in [(TEA, SEEDED_ON_HAND), (MUG, SEEDED_ON_HAND), (BOOK_EUR, 10)] {
        let stock = server.stock(sku).await;
        assert_eq!(stock["warehouses"][0]["on_hand"], on_hand, "{sku}: {stock}");
        assert_eq!(stock["warehouses"][0]["reserved"], 0, "{sku}: {stock}");
    }
}

/// The valid order body with the value at JSON pointer `pointer` replaced by `value`.
fn order_with(pointer: &str, value: Value) -> Value {
    let mut body = order_body("c1", &[(TEA, 1)]);
    *body
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in the order body")) = value;
    body
}

/// The valid order body without the field at `pointer`.
fn order_without(pointer: &str) -> Value {
    let mut body = order_body("c1", &[(TEA, 1)]);
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer with a parent");
    body.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|object| object.remove(key))
        .unwrap_or_else(|| panic!("no {pointer} in the order body"));
    body
}

/// POSTs each order body and expects `400 invalid_argument`, then that nothing was written.
async fn expect_orders_rejected(server: &TestServer, cases: Vec<(String, Value)>) {
    for (case, body) in &cases {
        expect_error(
            case,
            &server.post_order(body).await,
            400,
            "invalid_argument",
        );
    }
    assert_nothing_written(server).await;
}

/// PUTs `body` to `path` and expects `400 invalid_argument`.
async fn expect_put_rejected(server: &TestServer, path: &str, body: &Value) {
    let case = format!("PUT {path} {body}");
    expect_error(
        &case,
        &server.put_json(path, body).await,
        400,
        "invalid_argument",
    );
}

fn product(name: Value, price: Value) -> Value {
    json!({ "name": name, "price": price })
}

/// PUTs to a product that does not exist yet and checks it was not created.
async fn expect_new_product_rejected(server: &TestServer, body: Value) {
    expect_put_rejected(server, "/v1/products/NEW-1", &body).await;
    assert_error(&server.get("/v1/products/NEW-1").await, 404, "not_found");
}

/// PUTs on-hand values to the seeded TEA stock and checks it is unchanged.
async fn expect_stock_rejected(server: &TestServer, on_hand: Value) {
    expect_put_rejected(
        server,
        &format!("/v1/stock/{TEA}/{BKK}"),
        &json!({ "on_hand": on_hand }),
    )
    .await;
    assert_eq!(
        server.stock(TEA).await["warehouses"][0]["on_hand"],
        SEEDED_ON_HAND
    );
}

fn cases<const N: usize>(list: [(&str, Value); N]) -> Vec<(String, Value)> {
    list.into_iter()
        .map(|(case, body)| (case.to_owned(), body))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// One test per class
// ---------------------------------------------------------------------------------------------

async fn malformed_json(backend: Backend) {
    let server = seeded_server(backend).await;
    let valid = serde_json::to_string(&order_body("c1", &[(TEA, 1)])).unwrap();
    let bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"not json".to_vec(),
        Vec::new(),
        valid.as_bytes()[..valid.len() / 2].to_vec(),
        format!("{valid},").into_bytes(),
        format!("{valid}{valid}").into_bytes(),
        valid.replacen(':', "=", 1).into_bytes(),
        b"{\"customer_id\": 'c1'}".to_vec(),
        [b"{\"customer_id\": \"".as_slice(), &[0xff, 0xfe], b"\"}"].concat(), // not UTF-8
    ];
    for body in bodies {
        let case = format!("POST /v1/orders {:?}", String::from_utf8_lossy(&body));
        let reply = server
            .post_raw("/v1/orders", Some("application/json"), body.clone())
            .await;
        expect_error(&case, &reply, 400, "invalid_argument");
        let reply = send(
            server
                .request(reqwest::Method::PUT, "/v1/products/NEW-1")
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        expect_error(&case, &reply, 400, "invalid_argument");
    }
    assert_error(&server.get("/v1/products/NEW-1").await, 404, "not_found");
    assert_nothing_written(&server).await;
}

async fn wrong_types(backend: Backend) {
    let server = seeded_server(backend).await;
    expect_orders_rejected(
        &server,
        cases([
            ("whole body an array", json!([])),
            ("whole body a string", json!("order")),
            ("whole body null", Value::Null),
            ("customer_id number", order_with("/customer_id", json!(123))),
            ("currency null", order_with("/currency", Value::Null)),
            (
                "items object",
                order_with("/items", json!({ "sku": TEA, "quantity": 1 })),
            ),
            ("items string", order_with("/items", json!(TEA))),
            ("item a number", order_with("/items", json!([1]))),
            (
                "quantity string",
                order_with("/items/0/quantity", json!("1")),
            ),
            (
                "quantity float",
                order_with("/items/0/quantity", json!(1.5)),
            ),
            (
                "quantity bool",
                order_with("/items/0/quantity", json!(true)),
            ),
            ("sku number", order_with("/items/0/sku", json!(5))),
            (
                "address string",
                order_with("/shipping_address", json!("Bangkok")),
            ),
            ("address null", order_with("/shipping_address", Value::Null)),
            ("contact array", order_with("/contact", json!([]))),
            ("email number", order_with("/contact/email", json!(5))),
            (
                "phone number",
                order_with("/contact/phone", json!(66812345678_i64)),
            ),
        ]),
    )
    .await;

    let bad_products = [
        product(json!("Tea"), json!(1999)),
        product(json!("Tea"), json!("19.99 USD")),
        product(json!(5), money(1999, "USD")),
        product(json!(["Tea"]), money(1999, "USD")),
        product(
            json!("Tea"),
            json!({ "amount_minor": "1999", "currency": "USD" }),
        ),
        product(
            json!("Tea"),
            json!({ "amount_minor": 1999, "currency": 840 }),
        ),
    ];
    for body in bad_products {
        expect_new_product_rejected(&server, body).await;
    }
    for on_hand in [json!("5"), json!(1.5), Value::Null, json!([5])] {
        expect_stock_rejected(&server, on_hand).await;
    }
    expect_put_rejected(
        &server,
        &format!("/v1/warehouses/{BKK}"),
        &json!({ "country": 66 }),
    )
    .await;
}

/// serde reads a struct from an array of its fields in order; the API takes objects only.
async fn bodies_are_objects_not_arrays_of_their_fields(backend: Backend) {
    let server = seeded_server(backend).await;
    // The fields of a warehouse in order: would be `{"country": "TH"}`.
    expect_put_rejected(&server, "/v1/warehouses/NEW-WH", &json!(["TH"])).await;
    // Nested: a money object, an order's item, address and contact as arrays of their fields.
    expect_new_product_rejected(&server, product(json!("Tea"), json!([1999, "USD"]))).await;
    expect_orders_rejected(
        &server,
        cases([
            ("item an array", order_with("/items", json!([[TEA, 1]]))),
            (
                "address an array",
                order_with(
                    "/shipping_address",
                    json!(["Somchai", "1 Sukhumvit Rd", "Bangkok", "10110", "TH"]),
                ),
            ),
            (
                "contact an array",
                order_with("/contact", json!(["somchai@example.com"])),
            ),
        ]),
    )
    .await;
    // A payment's body is optional (empty, `null` or an object); `[]` is none of them.
    let order = server.create_order(&order_body("c1", &[(TEA, 1)])).await;
    let payments = format!("/v1/orders/{}/payments", order["id"].as_str().unwrap());
    for body in [json!([]), json!(["sandbox"]), json!("sandbox"), json!(1)] {
        let reply = server.post_json(&payments, &body).await;
        expect_error(
            &format!("POST payments {body}"),
            &reply,
            400,
            "invalid_argument",
        );
    }
    server
        .post_json(&payments, &Value::Null)
        .await
        .expect_status(201);
}

async fn missing_fields(backend: Backend) {
    let server = seeded_server(backend).await;
    let required = [
        "/customer_id",
        "/currency",
        "/items",
        "/items/0/sku",
        "/items/0/quantity",
        "/shipping_address",
        "/shipping_address/name",
        "/shipping_address/line1",
        "/shipping_address/city",
        "/shipping_address/postal_code",
        "/shipping_address/country",
        "/contact",
        "/contact/email",
    ];
    let cases = required
        .iter()
        .map(|pointer| (format!("without {pointer}"), order_without(pointer)))
        .collect();
    expect_orders_rejected(&server, cases).await;

    expect_new_product_rejected(&server, json!({ "name": "Tea" })).await;
    expect_new_product_rejected(&server, json!({ "price": money(1, "USD") })).await;
    expect_new_product_rejected(&server, product(json!("Tea"), json!({ "amount_minor": 1 }))).await;
    expect_put_rejected(&server, &format!("/v1/stock/{TEA}/{BKK}"), &json!({})).await;
    expect_put_rejected(&server, "/v1/warehouses/NEW-WH", &json!({})).await;
}

async fn unknown_fields(backend: Backend) {
    let server = seeded_server(backend).await;
    let with_extra = |pointer: &str| {
        let mut body = order_body("c1", &[(TEA, 1)]);
        body.pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .expect("an object")
            .insert("unexpected".to_owned(), json!(1));
        (format!("unknown field in {pointer:?}"), body)
    };
    let cases = ["", "/items/0", "/shipping_address", "/contact"]
        .map(with_extra)
        .to_vec();
    expect_orders_rejected(&server, cases).await;

    let mut extra_product = product(json!("Tea"), money(1, "USD"));
    extra_product["colour"] = json!("green");
    expect_new_product_rejected(&server, extra_product).await;
    expect_new_product_rejected(
        &server,
        product(
            json!("Tea"),
            json!({ "amount_minor": 1, "currency": "USD", "scale": 2 }),
        ),
    )
    .await;
    expect_put_rejected(
        &server,
        &format!("/v1/stock/{TEA}/{BKK}"),
        &json!({ "on_hand": 5, "reserved": 0 }),
    )
    .await;
    expect_put_rejected(
        &server,
        "/v1/warehouses/NEW-WH",
        &json!({ "country": "TH", "city": "Bangkok" }),
    )
    .await;
}

async fn out_of_range_numbers(backend: Backend) {
    let server = seeded_server(backend).await;
    let quantity = |value: Value| {
        (
            format!("quantity {value}"),
            order_with("/items/0/quantity", value),
        )
    };
    let too_big: Value = serde_json::from_str("18446744073709551616").unwrap(); // 2^64
    let cases = [
        json!(0),
        json!(-1),
        json!(10_001),
        json!(1_u64 << 40),
        json!(i64::MIN),
        too_big.clone(),
        // A fraction is no integer (`2.0` is: see boundary_numbers_are_accepted).
        json!(2.5),
        json!(1e300),
    ]
    .map(quantity)
    .to_vec();
    expect_orders_rejected(&server, cases).await;

    for amount in [
        json!(-1),
        json!(1_000_000_000_000_001_i64),
        json!(i64::MAX),
        too_big.clone(),
    ] {
        expect_new_product_rejected(
            &server,
            product(
                json!("Tea"),
                json!({ "amount_minor": amount, "currency": "USD" }),
            ),
        )
        .await;
    }
    for on_hand in [json!(-1), json!(1_000_000_000_001_i64), too_big] {
        expect_stock_rejected(&server, on_hand).await;
    }
}

async fn boundary_numbers_are_accepted(backend: Backend) {
    let server = seeded_server(backend).await;
    for amount in [0, 1_000_000_000_000_000_i64] {
        let put = server
            .put_json(
                "/v1/products/EDGE",
                &product(json!("Edge"), money(amount, "USD")),
            )
            .await
            .expect_status(200);
        assert_eq!(put.body["price"]["amount_minor"], amount);
    }
    put_product(&server, "BULK", 1, "USD").await;
    for on_hand in [0, 1_000_000_000_000_i64] {
        assert_eq!(
            put_stock(&server, "BULK", BKK, on_hand).await["on_hand"],
            on_hand
        );
    }
    let order = server
        .create_order(&order_body("c1", &[("BULK", 10_000)]))
        .await;
    assert_eq!(order["items"][0]["quantity"], 10_000);
    assert_eq!(order["total"], money(10_000, "USD"));

    // JSON has one number type: `2.0` and `2e0` are the integer 2, as JSON Schema's `integer`
    // (the document's) says.
    for quantity in [json!(2.0), json!(2e0)] {
        let order = server
            .create_order(&order_with("/items/0/quantity", quantity))
            .await;
        assert_eq!(order["items"][0]["quantity"], 2);
    }
    let put = server
        .put_json(
            "/v1/products/EDGE",
            &product(
                json!("Edge"),
                json!({"amount_minor": 1999.0, "currency": "USD"}),
            ),
        )
        .await
        .expect_status(200);
    assert_eq!(put.body["price"]["amount_minor"], 1999);
}

async fn empty_items(backend: Backend) {
    let server = seeded_server(backend).await;
    expect_orders_rejected(
        &server,
        cases([("no items", order_with("/items", json!([])))]),
    )
    .await;
}

async fn too_many_items(backend: Backend) {
    let server = seeded_server(backend).await;
    let skus: Vec<String> = (0..=100).map(|i| format!("P-{i:03}")).collect();
    for sku in &skus {
        put_product(&server, sku, 100, "USD").await;
        put_stock(&server, sku, BKK, 10).await;
    }
    let items =
        |n: usize| -> Vec<(&str, i64)> { skus[..n].iter().map(|s| (s.as_str(), 1)).collect() };

    let reply = server.post_order(&order_body("c1", &items(101))).await;
    expect_error("101 distinct items", &reply, 400, "invalid_argument");
    assert_nothing_written(&server).await;
    assert_eq!(server.reserved(&skus[0]).await, 0);

    // 100 is the limit and fine.
    let order = server.create_order(&order_body("c1", &items(100))).await;
    assert_eq!(order["items"].as_array().unwrap().len(), 100);
}

/// `count` copies of a three-byte Thai character: limits are in characters, not bytes.
fn thai(count: usize) -> String {
    "ก".repeat(count)
}

async fn over_long_strings(backend: Backend) {
    let server = seeded_server(backend).await;
    let too_long = |pointer: &str, value: String| {
        (
            format!("{pointer} of {} chars", value.chars().count()),
            order_with(pointer, json!(value)),
        )
    };
    let cases = vec![
        too_long("/customer_id", "c".repeat(65)),
        too_long("/customer_id", thai(65)),
        too_long("/items/0/sku", "S".repeat(65)),
        too_long("/shipping_address/name", thai(101)),
        too_long("/shipping_address/line1", thai(201)),
        too_long("/shipping_address/city", thai(101)),
        too_long("/shipping_address/postal_code", "1".repeat(21)),
        too_long("/contact/email", format!("{}@example.com", "a".repeat(243))),
        too_long("/contact/phone", format!("+{}", "1".repeat(32))),
        // Empty after trimming is too short.
        too_long("/shipping_address/name", "   ".to_owned()),
        too_long("/customer_id", String::new()),
    ];
    expect_orders_rejected(&server, cases).await;

    expect_new_product_rejected(&server, product(json!(thai(201)), money(1, "USD"))).await;
    let long_sku = "S".repeat(65);
    let reply = server
        .put_json(
            &format!("/v1/products/{long_sku}"),
            &product(json!("Tea"), money(1, "USD")),
        )
        .await;
    expect_error(
        "65-character sku in the path",
        &reply,
        400,
        "invalid_argument",
    );
}

/// Order bodies with `text` put into each free-text field in turn.
fn with_text_everywhere(text: &str) -> Vec<(String, Value)> {
    [
        "/customer_id",
        "/items/0/sku",
        "/shipping_address/name",
        "/shipping_address/line1",
        "/shipping_address/city",
        "/shipping_address/postal_code",
        "/contact/email",
        "/contact/phone",
    ]
    .iter()
    .map(|pointer| {
        (
            format!("{pointer} = {text:?}"),
            order_with(pointer, json!(text)),
        )
    })
    .collect()
}

async fn nul_bytes(backend: Backend) {
    let server = seeded_server(backend).await;
    expect_orders_rejected(&server, with_text_everywhere("ab\u{0}cd")).await;
    expect_orders_rejected(&server, with_text_everywhere("abcd\u{0}")).await;
    expect_new_product_rejected(&server, product(json!("Te\u{0}a"), money(1, "USD"))).await;
    let reply = server
        .put_json(
            "/v1/products/NUL%00SKU",
            &product(json!("Tea"), money(1, "USD")),
        )
        .await;
    expect_error("NUL in the path", &reply, 400, "invalid_argument");
}

async fn control_characters(backend: Backend) {
    let server = seeded_server(backend).await;
    for text in [
        "a\u{7}b",
        "red\u{1b}[31m",
        "line\nbreak",
        "tab\tinside",
        "del\u{7f}x",
        "c1\u{9b}x",
    ] {
        expect_orders_rejected(&server, with_text_everywhere(text)).await;
        expect_new_product_rejected(&server, product(json!(text), money(1, "USD"))).await;
    }
}

/// The valid order body, serialised and padded with white space to exactly `len` bytes.
fn padded_order(len: usize) -> Vec<u8> {
    let mut body = serde_json::to_vec(&order_body("c1", &[(TEA, 1)])).unwrap();
    assert!(body.len() <= len);
    body.resize(len, b' ');
    body
}

const BODY_LIMIT: usize = 64 * 1024;

async fn body_too_large(backend: Backend) {
    let server = seeded_server(backend).await;
    for len in [BODY_LIMIT + 1, 4 * BODY_LIMIT] {
        let reply = server
            .post_raw("/v1/orders", Some("application/json"), padded_order(len))
            .await;
        expect_error(
            &format!("{len}-byte order"),
            &reply,
            413,
            "payload_too_large",
        );
    }
    // A long string rather than padding.
    let huge = order_with("/shipping_address/name", json!("x".repeat(BODY_LIMIT)));
    expect_error(
        "order with a 64 KiB name",
        &server.post_order(&huge).await,
        413,
        "payload_too_large",
    );
    let huge_product = product(json!("x".repeat(BODY_LIMIT)), money(1, "USD"));
    let reply = server.put_json("/v1/products/NEW-1", &huge_product).await;
    expect_error(
        "product with a 64 KiB name",
        &reply,
        413,
        "payload_too_large",
    );
    assert_error(&server.get("/v1/products/NEW-1").await, 404, "not_found");
    assert_nothing_written(&server).await;
}

async fn body_at_the_size_limit_is_accepted(backend: Backend) {
    let server = seeded_server(backend).await;
    let reply = server
        .post_raw(
            "/v1/orders",
            Some("application/json"),
            padded_order(BODY_LIMIT),
        )
        .await;
    assert_eq!(
        reply.status, 201,
        "a body of exactly 64 KiB must be accepted: {}",
        reply.text
    );
}

async fn wrong_content_type(backend: Backend) {
    let server = seeded_server(backend).await;
    let body = serde_json::to_vec(&order_body("c1", &[(TEA, 1)])).unwrap();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "json",
    ] {
        let reply = server
            .post_raw("/v1/orders", Some(content_type), body.clone())
            .await;
        expect_error(content_type, &reply, 415, "unsupported_media_type");
    }
    let reply = send(
        server
            .request(reqwest::Method::PUT, "/v1/products/NEW-1")
            .header("content-type", "text/plain")
            .body(product(json!("Tea"), money(1, "USD")).to_string()),
    )
    .await;
    expect_error(
        "PUT product as text/plain",
        &reply,
        415,
        "unsupported_media_type",
    );
    assert_error(&server.get("/v1/products/NEW-1").await, 404, "not_found");
    assert_nothing_written(&server).await;
}

async fn missing_content_type(backend: Backend) {
    let server = seeded_server(backend).await;
    let body = serde_json::to_vec(&order_body("c1", &[(TEA, 1)])).unwrap();
    let reply = server.post_raw("/v1/orders", None, body).await;
    expect_error(
        "POST without content type",
        &reply,
        415,
        "unsupported_media_type",
    );
    let reply = send(
        server
            .request(reqwest::Method::PUT, &format!("/v1/stock/{TEA}/{BKK}"))
            .body(r#"{"on_hand": 1}"#),
    )
    .await;
    expect_error(
        "PUT without content type",
        &reply,
        415,
        "unsupported_media_type",
    );
    assert_nothing_written(&server).await;
}

async fn json_content_type_with_charset_is_accepted(backend: Backend) {
    let server = seeded_server(backend).await;
    let body = serde_json::to_vec(&order_body("c1", &[(TEA, 1)])).unwrap();
    let reply = server
        .post_raw("/v1/orders", Some("application/json; charset=utf-8"), body)
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
}

async fn invalid_currency_and_country(backend: Backend) {
    let server = seeded_server(backend).await;
    let mut cases = Vec::new();
    for currency in ["usd", "US", "USDX", "", "U1D", "ÜSD"] {
        cases.push((
            format!("currency {currency:?}"),
            order_with("/currency", json!(currency)),
        ));
    }
    for country in ["th", "THA", "T", "", "T1", "ไท"] {
        cases.push((
            format!("country {country:?}"),
            order_with("/shipping_address/country", json!(country)),
        ));
    }
    expect_orders_rejected(&server, cases).await;

    for currency in ["usd", "US", "USDX"] {
        expect_new_product_rejected(&server, product(json!("Tea"), money(1, currency))).await;
    }
    for country in ["th", "THA", ""] {
        expect_put_rejected(
            &server,
            "/v1/warehouses/NEW-WH",
            &json!({ "country": country }),
        )
        .await;
    }
    // The warehouse was not created: stock cannot be put there.
    let reply = server
        .put_json(&format!("/v1/stock/{TEA}/NEW-WH"), &json!({ "on_hand": 1 }))
        .await;
    assert_error(&reply, 404, "not_found");
}

async fn unknown_path(backend: Backend) {
    let server = seeded_server(backend).await;
    for path in [
        "/v1/nope",
        "/nope",
        "/",
        "/v2/orders",
        "/v1/orders/x/y/z",
        "/v1/products/",
    ] {
        expect_error(
            &format!("GET {path}"),
            &server.get(path).await,
            404,
            "not_found",
        );
    }
    let reply = server.post_json("/v1/nope", &json!({})).await;
    expect_error("POST /v1/nope", &reply, 404, "not_found");
}

async fn wrong_method(backend: Backend) {
    let server = seeded_server(backend).await;
    use reqwest::Method;
    let order = server.create_order(&order_body("c1", &[(TEA, 1)])).await;
    let id = order["id"].as_str().unwrap();
    let cases = [
        (Method::DELETE, "/v1/orders".to_owned()),
        (Method::PUT, "/v1/orders".to_owned()),
        (Method::PATCH, format!("/v1/products/{TEA}")),
        (Method::POST, format!("/v1/products/{TEA}")),
        (Method::DELETE, format!("/v1/orders/{id}")),
        (Method::GET, format!("/v1/orders/{id}/cancel")),
        (Method::POST, format!("/v1/stock/{TEA}")),
    ];
    for (method, path) in cases {
        let reply = send(server.request(method.clone(), &path).json(&json!({}))).await;
        expect_error(
            &format!("{method} {path}"),
            &reply,
            405,
            "method_not_allowed",
        );
    }
    // Nothing changed: the order is still pending, stock still reserved once.
    assert_eq!(server.get_order(id).await["status"], "pending_payment");
    assert_eq!(server.reserved(TEA).await, 1);
}

async fn invalid_ids_in_path(backend: Backend) {
    let server = seeded_server(backend).await;
    let bad_ids = [
        "has%20space",
        &"x".repeat(65),
        "semi%3Bcolon",
        "%00",
        "quote%22",
    ];
    for id in bad_ids {
        for path in [
            format!("/v1/orders/{id}"),
            format!("/v1/orders/{id}/timeline"),
            format!("/v1/products/{id}"),
            format!("/v1/stock/{id}"),
        ] {
            expect_error(
                &format!("GET {path}"),
                &server.get(&path).await,
                400,
                "invalid_argument",
            );
        }
        let path = format!("/v1/orders/{id}/cancel");
        let reply = server.post_json(&path, &json!({})).await;
        expect_error(&format!("POST {path}"), &reply, 400, "invalid_argument");
        let path = format!("/v1/warehouses/{id}");
        let reply = server.put_json(&path, &json!({ "country": "TH" })).await;
        expect_error(&format!("PUT {path}"), &reply, 400, "invalid_argument");
    }
    assert_nothing_written(&server).await;
}

async fn invalid_list_parameters(backend: Backend) {
    let server = seeded_server(backend).await;
    for query in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=99999999999999999999",
        "status=bogus",
    ] {
        let path = format!("/v1/orders?{query}");
        expect_error(
            &format!("GET {path}"),
            &server.get(&path).await,
            400,
            "invalid_argument",
        );
    }
    for query in ["limit=1", "limit=100", "status=pending_payment"] {
        server
            .get(&format!("/v1/orders?{query}"))
            .await
            .expect_status(200);
    }
}

/// A cursor the server did not issue is an error, not an empty (seemingly last) page.
async fn garbage_cursor_is_rejected(backend: Backend) {
    let server = seeded_server(backend).await;
    server.create_order(&order_body("c1", &[(TEA, 1)])).await;
    for cursor in ["garbage", "%00", "ord_", "0"] {
        let path = format!("/v1/orders?cursor={cursor}");
        expect_error(
            &format!("GET {path}"),
            &server.get(&path).await,
            400,
            "invalid_argument",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzzing
// ---------------------------------------------------------------------------------------------

/// JSON pointers of every node in `value`.
fn pointers(value: &Value, prefix: String, out: &mut Vec<String>) {
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                pointers(child, format!("{prefix}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                pointers(child, format!("{prefix}/{index}"), out);
            }
        }
        _ => {}
    }
}

fn random_value(rng: &mut XorShift) -> Value {
    let strings = [
        String::new(),
        " ".to_owned(),
        "TEA-001".to_owned(),
        "\u{0}".to_owned(),
        "\u{1b}[2J".to_owned(),
        "e\u{301}".repeat(30),
        "ก".repeat(300),
        "🦀".repeat(70),
        "\u{feff}\u{200b}".to_owned(),
        "'; DROP TABLE orders; --".to_owned(),
        "../../etc/passwd".to_owned(),
        "x".repeat(5000),
        "\u{d7ff}\u{e000}\u{fffd}".to_owned(),
    ];
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(rng.next_u64()),
        3 => json!(-(rng.below(1_000_000) as i64)),
        4 => json!(i64::MIN),
        5 => json!(f64::from(rng.below(1000) as u32) / 7.0),
        6 | 7 => json!(rng.pick(&strings)),
        8 => json!([]),
        9 => json!({}),
        10 => json!([random_value(rng), random_value(rng)]),
        _ => json!({ "amount_minor": rng.next_u64() >> rng.below(64), "currency": "USD" }),
    }
}

/// One mutation of `base`, as the raw bytes to send.
fn mutate(base: &Value, rng: &mut XorShift) -> Vec<u8> {
    let mut value = base.clone();
    let mut nodes = Vec::new();
    pointers(&value, String::new(), &mut nodes);
    match rng.below(9) {
        0 | 1 => {
            let pointer = rng.pick(&nodes).clone();
            *value.pointer_mut(&pointer).unwrap() = random_value(rng);
        }
        2 => {
            let pointer = rng.pick(&nodes).clone();
            if let Some((parent, key)) = pointer.rsplit_once('/') {
                if let Some(object) = value.pointer_mut(parent).and_then(Value::as_object_mut) {
                    object.remove(key);
                } else if let Some(items) = value.pointer_mut(parent).and_then(Value::as_array_mut)
                {
                    items.clear();
                }
            }
        }
        3 => {
            let pointer = rng.pick(&nodes).clone();
            let extra = random_value(rng);
            if let Some(object) = value.pointer_mut(&pointer).and_then(Value::as_object_mut) {
                object.insert("fuzz".to_owned(), extra);
            } else if let Some(items) = value.pointer_mut(&pointer).and_then(Value::as_array_mut) {
                for _ in 0..rng.below(150) {
                    items.push(items.first().cloned().unwrap_or(Value::Null));
                }
            }
        }
        4 => {
            let mut bytes = serde_json::to_vec(&value).unwrap();
            bytes.truncate(rng.below(bytes.len()));
            return bytes;
        }
        5 => {
            let mut bytes = serde_json::to_vec(&value).unwrap();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len());
                bytes[at] = (rng.next_u64() & 0xff) as u8;
            }
            return bytes;
        }
        6 => {
            let depth = 1 + rng.below(20_000);
            return format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        }
        7 => {
            // Duplicate keys.
            let text = serde_json::to_string(&value).unwrap();
            return text
                .replacen('{', "{\"customer_id\":\"dup\",", 1)
                .into_bytes();
        }
        _ => {
            for _ in 0..3 {
                let pointer = rng.pick(&nodes).clone();
                if let Some(slot) = value.pointer_mut(&pointer) {
                    *slot = random_value(rng);
                }
            }
        }
    }
    serde_json::to_vec(&value).unwrap()
}

async fn fuzzed_bodies_never_cause_5xx(backend: Backend) {
    const CASES: u64 = 200;
    let server = seeded_server(backend).await;
    let targets = [
        (
            reqwest::Method::POST,
            "/v1/orders".to_owned(),
            order_body("fuzz", &[(TEA, 1), (MUG, 2)]),
        ),
        (
            reqwest::Method::PUT,
            "/v1/products/FUZZ-1".to_owned(),
            product(json!("Fuzz"), money(100, "USD")),
        ),
        (
            reqwest::Method::PUT,
            format!("/v1/stock/{MUG}/{BER}"),
            json!({ "on_hand": 100 }),
        ),
        (
            reqwest::Method::PUT,
            "/v1/warehouses/FUZZ-WH".to_owned(),
            json!({ "country": "TH" }),
        ),
    ];
    let mut rng = XorShift::new(0x0bad_5eed_1234_5678);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for case in 0..CASES {
        let (method, path, base) = if rng.below(10) < 6 {
            &targets[0]
        } else {
            rng.pick(&targets)
        };
        let body = mutate(base, &mut rng);
        let mut request = server
            .request(method.clone(), path)
            .header("content-type", "application/json")
            .body(body.clone());
        if rng.below(4) == 0 {
            request = request.header("Idempotency-Key", format!("fuzz-{}", rng.below(5)));
        }
        let reply = send(request).await;
        let shown = String::from_utf8_lossy(&body);
        let shown: String = shown.chars().take(300).collect();
        assert!(
            reply.status < 500,
            "case {case}: {method} {path} answered HTTP {} to {shown:?}: {}",
            reply.status,
            reply.text
        );
        if reply.status >= 400 {
            assert_error_shape(&reply);
        }
        *statuses.entry(reply.status).or_default() += 1;
    }
    eprintln!("fuzzed statuses: {statuses:?}");

    // Still healthy and consistent.
    server.admin_get("/readyz").await.expect_status(200);
    for sku in [TEA, MUG] {
        for warehouse in server.stock(sku).await["warehouses"].as_array().unwrap() {
            let (on_hand, reserved) = (
                warehouse["on_hand"].as_i64().unwrap(),
                warehouse["reserved"].as_i64().unwrap(),
            );
            assert!((0..=on_hand).contains(&reserved), "{sku}: {warehouse}");
        }
    }
}

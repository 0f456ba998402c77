//! The REST API's behaviour, end to end against the real binary, on SQLite and PostgreSQL.

use ordo_testkit::*;
use serde_json::{Value, json};

backend_tests!(
    ready_line_is_flat_json,
    products_round_trip,
    warehouses_round_trip,
    stock_round_trip,
    stock_cannot_go_below_reserved,
    order_create_and_get,
    order_rejections_reserve_nothing,
    orders_list_filters_and_paginates_newest_first,
    cancel_releases_stock_and_is_idempotent,
    order_reads_are_cached_and_every_write_is_seen_by_the_next_read,
    product_reads_are_cached_and_a_put_is_seen_by_the_next_read,
    timeline_records_creation_and_cancellation,
    unicode_limits_count_characters,
    text_is_returned_nfc,
    traceparent_is_honoured,
    invalid_traceparent_is_ignored,
    traceparent_is_present_on_errors,
    openapi_document_is_served,
    health_and_readiness,
);

/// The start-up line carries `message`, `http_addr` and `admin_addr` as top-level keys.
async fn ready_line_is_flat_json(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ready = server
        .logs()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "ordo is ready")
        .unwrap_or_else(|| {
            panic!(
                "no top-level \"message\":\"ordo is ready\" line:\n{}",
                server.output()
            )
        });
    assert_eq!(
        format!("http://{}", ready["http_addr"].as_str().unwrap()),
        server.base_url()
    );
    assert_eq!(
        format!("http://{}", ready["admin_addr"].as_str().unwrap()),
        server.admin_url()
    );
}

async fn products_round_trip(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body = json!({ "name": "Jasmine tea", "price": money(1999, "USD") });

    let put = server
        .put_json("/v1/products/TEA-1", &body)
        .await
        .expect_status(200);
    let expected = json!({ "sku": "TEA-1", "name": "Jasmine tea", "price": money(1999, "USD") });
    assert_eq!(put.body, expected);
    assert_eq!(
        server
            .get("/v1/products/TEA-1")
            .await
            .expect_status(200)
            .body,
        expected
    );

    // PUT replaces.
    let renamed = json!({ "name": "Jasmine tea 2", "price": money(2500, "USD") });
    server
        .put_json("/v1/products/TEA-1", &renamed)
        .await
        .expect_status(200);
    let read = server
        .get("/v1/products/TEA-1")
        .await
        .expect_status(200)
        .body;
    assert_eq!(read["name"], "Jasmine tea 2");
    assert_eq!(read["price"], money(2500, "USD"));

    assert_error(&server.get("/v1/products/NOPE").await, 404, "not_found");
}

async fn warehouses_round_trip(backend: Backend) {
    let server = TestServer::start(backend).await;
    let put = server
        .put_json("/v1/warehouses/BKK-1", &json!({ "country": "TH" }))
        .await
        .expect_status(200);
    assert_eq!(put.body, json!({ "id": "BKK-1", "country": "TH" }));
    // Repeating the PUT is harmless and can change the country.
    let again = server
        .put_json("/v1/warehouses/BKK-1", &json!({ "country": "LA" }))
        .await
        .expect_status(200);
    assert_eq!(again.body, json!({ "id": "BKK-1", "country": "LA" }));
}

async fn stock_round_trip(backend: Backend) {
    let server = TestServer::start(backend).await;
    put_warehouse(&server, BKK, "TH").await;
    put_warehouse(&server, BER, "DE").await;
    put_product(&server, TEA, TEA_PRICE, "USD").await;

    let put = put_stock(&server, TEA, BKK, 7).await;
    assert_eq!(
        put,
        json!({ "sku": TEA, "warehouse": BKK, "on_hand": 7, "reserved": 0, "available": 7 })
    );
    put_stock(&server, TEA, BER, 5).await;

    let stock = server.stock(TEA).await;
    assert_eq!(stock["sku"], TEA);
    assert_eq!(stock["available"], 12);
    let mut warehouses = stock["warehouses"].as_array().expect("warehouses").clone();
    warehouses.sort_by_key(|w| w["warehouse"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        warehouses,
        vec![
            json!({ "warehouse": BER, "on_hand": 5, "reserved": 0, "available": 5 }),
            json!({ "warehouse": BKK, "on_hand": 7, "reserved": 0, "available": 7 }),
        ]
    );

    let on_hand = json!({ "on_hand": 1 });
    let unknown_product = server
        .put_json(&format!("/v1/stock/NOPE/{BKK}"), &on_hand)
        .await;
    assert_error(&unknown_product, 404, "not_found");
    let unknown_warehouse = server
        .put_json(&format!("/v1/stock/{TEA}/NOPE"), &on_hand)
        .await;
    assert_error(&unknown_warehouse, 404, "not_found");
}

async fn stock_cannot_go_below_reserved(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    server.create_order(&order_body("c1", &[(TEA, 5)])).await;

    let below = server
        .put_json(&format!("/v1/stock/{TEA}/{BKK}"), &json!({ "on_hand": 4 }))
        .await;
    assert_error(&below, 409, "conflict");
    assert_eq!(server.reserved(TEA).await, 5);

    let at_reserved = put_stock(&server, TEA, BKK, 5).await;
    assert_eq!(at_reserved["reserved"], 5);
    assert_eq!(at_reserved["available"], 0);
}

async fn order_create_and_get(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let body = order_body("cust-42", &[(TEA, 2), (MUG, 1)]);

    let created = server.post_order(&body).await.expect_status(201);
    let order = &created.body;
    assert!(
        order["id"].as_str().is_some_and(|id| !id.is_empty()),
        "id: {order}"
    );
    assert_eq!(order["customer_id"], "cust-42");
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(order["currency"], "USD");
    assert_eq!(
        order["items"],
        json!([
            { "sku": TEA, "quantity": 2, "unit_price": money(TEA_PRICE, "USD"),
              "line_total": money(2 * TEA_PRICE, "USD") },
            { "sku": MUG, "quantity": 1, "unit_price": money(MUG_PRICE, "USD"),
              "line_total": money(MUG_PRICE, "USD") },
        ])
    );
    assert_eq!(order["total"], money(2 * TEA_PRICE + MUG_PRICE, "USD"));
    assert_eq!(order["shipping_address"], body["shipping_address"]);
    assert_eq!(order["contact"], body["contact"]);
    assert_eq!(order["shipments"], json!([]));
    assert_rfc3339(&order["created_at"], "created_at");
    assert_rfc3339(&order["updated_at"], "updated_at");
    assert_hex_id(&order["trace_id"], 32, "order.trace_id");
    assert_eq!(
        order["trace_id"].as_str(),
        Some(created.trace_id().as_str())
    );

    let id = order["id"].as_str().unwrap();
    assert_eq!(&server.get_order(id).await, order);
    assert_eq!(server.reserved(TEA).await, 2);
    assert_eq!(server.reserved(MUG).await, 1);

    // A well-formed id that does not exist.
    let unknown = server
        .get("/v1/orders/ord_0190000000007000800000000000dead")
        .await;
    assert_error(&unknown, 404, "not_found");
}

async fn order_rejections_reserve_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;

    let too_many = server
        .post_order(&order_body("c1", &[(TEA, SEEDED_ON_HAND + 1)]))
        .await;
    assert_error(&too_many, 409, "insufficient_stock");
    // All or nothing: the first item could be reserved, the second cannot.
    let partly = server
        .post_order(&order_body("c1", &[(MUG, 1), (TEA, SEEDED_ON_HAND + 1)]))
        .await;
    assert_error(&partly, 409, "insufficient_stock");
    // Valid requests the catalogue cannot satisfy: the state's answers, not 400.
    let other_currency = server.post_order(&order_body("c1", &[(BOOK_EUR, 1)])).await;
    let error = assert_error(&other_currency, 409, "conflict");
    assert_eq!(error["details"][0]["field"], "items[0].sku");
    let unknown_sku = server
        .post_order(&order_body("c1", &[("NO-SUCH-SKU", 1)]))
        .await;
    let error = assert_error(&unknown_sku, 404, "not_found");
    assert_eq!(error["details"][0]["field"], "items[0].sku");

    for sku in [TEA, MUG, BOOK_EUR] {
        assert_eq!(server.reserved(sku).await, 0, "{sku} reserved");
    }
    assert!(server.list_all_orders("").await.is_empty());
}

fn ids(orders: &[Value]) -> Vec<String> {
    orders
        .iter()
        .map(|o| o["id"].as_str().expect("order id").to_owned())
        .collect()
}

async fn orders_list_filters_and_paginates_newest_first(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let mut alice = Vec::new();
    for _ in 0..5 {
        alice.push(server.create_order(&order_body("alice", &[(TEA, 1)])).await);
    }
    let bob = server.create_order(&order_body("bob", &[(MUG, 1)])).await;
    let newest_first: Vec<String> = ids(&alice).into_iter().rev().collect();

    // Page through alice's orders two at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page_number in 0.. {
        assert!(page_number < 5, "pagination does not end: {seen:?}");
        let mut path = "/v1/orders?customer_id=alice&limit=2".to_owned();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={}", url_encode(cursor)));
        }
        let page = server.get(&path).await.expect_status(200).body;
        let orders = page["orders"].as_array().expect("orders").clone();
        assert!(orders.len() <= 2, "page larger than the limit: {page}");
        seen.extend(ids(&orders));
        match &page["next_cursor"] {
            Value::String(next) => cursor = Some(next.clone()),
            Value::Null => break,
            other => panic!("next_cursor is neither a string nor null: {other}"),
        }
    }
    assert_eq!(
        seen, newest_first,
        "pages must list each order once, newest first"
    );

    // The listed orders are the full orders.
    let listed = server.list_all_orders("customer_id=bob").await;
    assert_eq!(listed, vec![bob.clone()]);

    // Status filter.
    let cancelled_id = alice[1]["id"].as_str().unwrap();
    server.cancel_order(cancelled_id).await.expect_status(200);
    assert_eq!(
        ids(&server.list_all_orders("status=cancelled").await),
        vec![cancelled_id]
    );
    let pending = ids(&server
        .list_all_orders("customer_id=alice&status=pending_payment")
        .await);
    assert_eq!(pending.len(), 4);
    assert!(!pending.contains(&cancelled_id.to_owned()));

    // No filter, default limit: everything, newest first, no further page.
    let all = server.get("/v1/orders").await.expect_status(200).body;
    let mut expected = vec![bob["id"].as_str().unwrap().to_owned()];
    expected.extend(newest_first);
    assert_eq!(ids(all["orders"].as_array().unwrap()), expected);
    assert_eq!(all["next_cursor"], Value::Null);

    let nobody = server
        .get("/v1/orders?customer_id=nobody")
        .await
        .expect_status(200)
        .body;
    assert_eq!(nobody, json!({ "orders": [], "next_cursor": null }));
}

/// Reads of an order come from the in-process cache after the first, unknown ids are cached as
/// absent, and a write is seen by the very next read (the writer invalidates after its commit,
/// before it answers).
async fn order_reads_are_cached_and_every_write_is_seen_by_the_next_read(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let order = server
        .create_order(&order_body("cached", &[(TEA, 1)]))
        .await;
    let id = order["id"].as_str().unwrap();

    let hits = cache_requests(&server, "local", "hit").await;
    assert_eq!(server.get_order(id).await, order);
    assert_eq!(server.get_order(id).await, order);
    assert!(
        cache_requests(&server, "local", "hit").await > hits,
        "two reads in a row: the second is a hit"
    );

    let unknown = "/v1/orders/ord_0190000000007000800000000000beef";
    let absent = cache_requests(&server, "local", "absent").await;
    server.get(unknown).await.expect_status(404);
    server.get(unknown).await.expect_status(404);
    assert!(cache_requests(&server, "local", "absent").await > absent);

    // The read before the cancel is cached; the read after it must not be that one.
    assert_eq!(server.get_order(id).await["status"], "pending_payment");
    let cancelled = server.cancel_order(id).await.expect_status(200).body;
    assert_eq!(server.get_order(id).await, cancelled);
    assert_eq!(cancelled["status"], "cancelled");
}

/// Product reads are cached too: an unknown SKU is cached as absent, yet its `PUT` is seen by
/// the very next read, and so is every later `PUT`.
async fn product_reads_are_cached_and_a_put_is_seen_by_the_next_read(backend: Backend) {
    let server = TestServer::start(backend).await;
    let path = "/v1/products/CACHED-1";
    let absent = cache_requests(&server, "local", "absent").await;
    server.get(path).await.expect_status(404);
    server.get(path).await.expect_status(404);
    assert!(cache_requests(&server, "local", "absent").await > absent);

    for (name, price) in [("first", 100), ("second", 250)] {
        let body = json!({ "name": name, "price": money(price, "USD") });
        server.put_json(path, &body).await.expect_status(200);
        let hits = cache_requests(&server, "local", "hit").await;
        for _ in 0..2 {
            let read = server.get(path).await.expect_status(200).body;
            assert_eq!(
                (
                    read["name"].as_str(),
                    read["price"]["amount_minor"].as_i64()
                ),
                (Some(name), Some(price))
            );
        }
        assert!(
            cache_requests(&server, "local", "hit").await > hits,
            "the second read is a hit"
        );
    }
}

async fn cancel_releases_stock_and_is_idempotent(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let order = server
        .create_order(&order_body("c1", &[(TEA, 3), (MUG, 2)]))
        .await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(server.reserved(TEA).await, 3);

    let cancelled = server.cancel_order(id).await.expect_status(200).body;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["id"], order["id"]);
    assert_eq!(cancelled["items"], order["items"]);
    assert_eq!(server.reserved(TEA).await, 0);
    assert_eq!(server.reserved(MUG).await, 0);
    assert_eq!(server.stock(TEA).await["available"], SEEDED_ON_HAND);

    // Again: same answer, nothing released twice.
    let again = server.cancel_order(id).await.expect_status(200).body;
    assert_eq!(again, cancelled);
    assert_eq!(server.get_order(id).await, cancelled);
    assert_eq!(server.stock(TEA).await["available"], SEEDED_ON_HAND);
    assert_eq!(server.stock(MUG).await["available"], SEEDED_ON_HAND);

    let unknown = server
        .cancel_order("ord_0190000000007000800000000000dead")
        .await;
    assert_error(&unknown, 404, "not_found");
}

async fn timeline_records_creation_and_cancellation(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let order = server.create_order(&order_body("c1", &[(TEA, 1)])).await;
    let id = order["id"].as_str().unwrap();
    server.cancel_order(id).await.expect_status(200);
    server.cancel_order(id).await.expect_status(200); // a no-op adds no event

    let timeline = server
        .get(&format!("/v1/orders/{id}/timeline"))
        .await
        .expect_status(200)
        .body;
    let events = timeline["events"].as_array().expect("events array");
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        types,
        ["order_created", "order_cancelled"],
        "timeline: {timeline}"
    );
    for event in events {
        assert_rfc3339(&event["at"], "event.at");
        assert!(
            event.get("detail").is_some(),
            "event without detail: {event}"
        );
        assert_hex_id(&event["trace_id"], 32, "event.trace_id");
        assert_hex_id(&event["span_id"], 16, "event.span_id");
    }
    assert_eq!(events[0]["trace_id"], order["trace_id"]);
    assert!(events[0]["at"].as_str() <= events[1]["at"].as_str());

    let unknown = server
        .get("/v1/orders/ord_0190000000007000800000000000dead/timeline")
        .await;
    assert_error(&unknown, 404, "not_found");
}

/// `count` characters cycling through a Thai phrase (each one a code point, all NFC-stable).
fn thai(count: usize) -> String {
    "สวัสดีครับ".chars().cycle().take(count).collect()
}

async fn unicode_limits_count_characters(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;

    // At each limit with 3-byte characters: far more bytes than characters, accepted.
    let mut at_limit = order_body("c1", &[(TEA, 1)]);
    at_limit["shipping_address"]["name"] = json!(thai(100));
    at_limit["shipping_address"]["line1"] = json!(thai(200));
    at_limit["shipping_address"]["city"] = json!(thai(100));
    at_limit["customer_id"] = json!("ก".repeat(64)); // identifiers: letters of any script
    let order = server.create_order(&at_limit).await;
    assert_eq!(order["shipping_address"], at_limit["shipping_address"]);
    assert_eq!(order["customer_id"], at_limit["customer_id"]);

    let mut over = order_body("c1", &[(TEA, 1)]);
    over["shipping_address"]["name"] = json!(thai(101));
    let rejected = server.post_order(&over).await;
    let error = assert_error(&rejected, 400, "invalid_argument");
    assert!(
        error["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["field"].as_str().unwrap().contains("name")),
        "details should name the field: {error}"
    );
    assert_eq!(server.reserved(TEA).await, 1);
}

async fn text_is_returned_nfc(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let decomposed = "Cafe\u{0301}";

    let mut body = order_body("c1", &[(TEA, 1)]);
    body["shipping_address"]["name"] = json!(decomposed);
    body["shipping_address"]["city"] = json!(decomposed);
    let order = server.create_order(&body).await;
    assert_eq!(order["shipping_address"]["name"], "Caf\u{e9}");
    assert_eq!(order["shipping_address"]["city"], "Caf\u{e9}");
    let id = order["id"].as_str().unwrap();
    assert_eq!(
        server.get_order(id).await["shipping_address"]["name"],
        "Caf\u{e9}"
    );

    let product = json!({ "name": decomposed, "price": money(100, "USD") });
    let put = server
        .put_json("/v1/products/CAFE", &product)
        .await
        .expect_status(200);
    assert_eq!(put.body["name"], "Caf\u{e9}");
    assert_eq!(
        server.get("/v1/products/CAFE").await.body["name"],
        "Caf\u{e9}"
    );

    // Limits count the characters as sent, as the document's `maxLength` does (a client can
    // check them before sending): 50 decomposed "é" are 100 characters, the city's limit, and
    // are stored as 50; 100 of them are 200 characters, over it.
    let mut city = order_body("c1", &[(TEA, 1)]);
    city["shipping_address"]["city"] = json!("e\u{0301}".repeat(50));
    let order = server.create_order(&city).await;
    assert_eq!(order["shipping_address"]["city"], "\u{e9}".repeat(50));
    city["shipping_address"]["city"] = json!("e\u{0301}".repeat(100));
    let too_long = server.post_order(&city).await;
    let error = assert_error(&too_long, 400, "invalid_argument");
    assert_eq!(error["details"][0]["field"], "shipping_address.city");
}

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn parent_traceparent() -> String {
    format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01")
}

async fn traceparent_is_honoured(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;

    let read = send(
        server
            .request(reqwest::Method::GET, &format!("/v1/products/{TEA}"))
            .header("traceparent", parent_traceparent()),
    )
    .await
    .expect_status(200);
    let (trace, span) = read.traceparent();
    assert_eq!(trace, PARENT_TRACE);
    assert_ne!(
        span, PARENT_SPAN,
        "the server's span must be a child, not the parent itself"
    );

    let created = send(
        server
            .request(reqwest::Method::POST, "/v1/orders")
            .header("traceparent", parent_traceparent())
            .json(&order_body("c1", &[(TEA, 1)])),
    )
    .await
    .expect_status(201);
    assert_eq!(created.trace_id(), PARENT_TRACE);
    assert_eq!(created.body["trace_id"], PARENT_TRACE);

    // Without a traceparent, each request starts its own trace.
    let first = server.get(&format!("/v1/products/{TEA}")).await.trace_id();
    let second = server.get(&format!("/v1/products/{TEA}")).await.trace_id();
    assert_ne!(first, second);
    assert_hex_id(&json!(first), 32, "fresh trace id");
}

async fn invalid_traceparent_is_ignored(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let invalid = [
        "garbage".to_owned(),
        format!("00-{}-{PARENT_SPAN}-01", "0".repeat(32)), // all-zero trace id
        format!("00-{PARENT_TRACE}-{}-01", "0".repeat(16)), // all-zero span id
        format!("00-{}-{PARENT_SPAN}-01", PARENT_TRACE.to_uppercase()), // upper-case hex
        format!("ff-{PARENT_TRACE}-{PARENT_SPAN}-01"),     // forbidden version
        format!("00-{PARENT_TRACE}-{PARENT_SPAN}"),        // no flags
        format!("00-{}-{PARENT_SPAN}-01", &PARENT_TRACE[..31]), // short trace id
    ];
    for header in invalid {
        let reply = send(
            server
                .request(reqwest::Method::GET, &format!("/v1/products/{TEA}"))
                .header("traceparent", &header),
        )
        .await;
        assert_eq!(
            reply.status, 200,
            "traceparent {header:?} must not fail the request"
        );
        let (trace, _) = reply.traceparent();
        assert_ne!(
            trace, PARENT_TRACE,
            "invalid traceparent {header:?} was honoured"
        );
        assert_hex_id(&json!(trace), 32, "fresh trace id");
    }
}

async fn traceparent_is_present_on_errors(backend: Backend) {
    let server = TestServer::start(backend).await;

    // assert_error checks the header and that the body's trace_id equals it.
    assert_error(&server.get("/v1/products/NOPE").await, 404, "not_found");
    assert_error(
        &server
            .post_raw("/v1/orders", Some("application/json"), b"{".to_vec())
            .await,
        400,
        "invalid_argument",
    );

    let honoured = send(
        server
            .request(reqwest::Method::GET, "/v1/products/NOPE")
            .header("traceparent", parent_traceparent()),
    )
    .await;
    let error = assert_error(&honoured, 404, "not_found");
    assert_eq!(error["trace_id"], PARENT_TRACE);
}

async fn openapi_document_is_served(backend: Backend) {
    let server = TestServer::start(backend).await;
    let reply = server.get("/openapi.json").await.expect_status(200);
    let document = &reply.body;
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with('3')),
        "not an OpenAPI 3 document: {}",
        reply.text
    );
    let paths = document["paths"].as_object().expect("paths object");
    assert!(
        paths.contains_key("/v1/orders"),
        "OpenAPI paths lack /v1/orders: {:?}",
        paths.keys()
    );
    for prefix in [
        "/v1/orders/",
        "/v1/products/",
        "/v1/warehouses/",
        "/v1/stock/",
    ] {
        assert!(
            paths.keys().any(|path| path.starts_with(prefix)),
            "OpenAPI paths lack {prefix}...: {:?}",
            paths.keys()
        );
    }
}

async fn health_and_readiness(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.admin_get("/healthz").await.expect_status(200);
    server.admin_get("/readyz").await.expect_status(200);
}

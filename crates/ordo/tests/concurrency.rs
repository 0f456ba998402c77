//! Racing requests: reserved stock is never sold twice, and idempotency keys hold under
//! concurrency. Runs on SQLite and PostgreSQL.

use ordo_testkit::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

backend_tests!(
    concurrent_orders_never_oversell,
    order_is_split_across_warehouses,
    concurrent_idempotent_replays_create_one_order,
);

/// Sends all `requests` at once, each from its own task, and returns the replies in order.
async fn send_all(requests: Vec<reqwest::RequestBuilder>) -> Vec<Reply> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|r| tokio::spawn(send(r)))
        .collect();
    let mut replies = Vec::with_capacity(tasks.len());
    for task in tasks {
        replies.push(task.await.expect("request task panicked"));
    }
    replies
}

fn count_statuses(replies: &[Reply]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for reply in replies {
        *counts.entry(reply.status).or_insert(0) += 1;
    }
    counts
}

async fn concurrent_orders_never_oversell(backend: Backend) {
    const ON_HAND: i64 = 50;
    const REQUESTS: usize = 200;
    let server = TestServer::start(backend).await;
    seed_single_sku(&server, "HOT-1", ON_HAND).await;

    let requests = (0..REQUESTS)
        .map(|i| {
            server
                .request(reqwest::Method::POST, "/v1/orders")
                .json(&order_body(&format!("racer-{i}"), &[("HOT-1", 1)]))
        })
        .collect();
    let replies = send_all(requests).await;

    let counts = count_statuses(&replies);
    assert_eq!(
        counts,
        BTreeMap::from([(201, ON_HAND as usize), (409, REQUESTS - ON_HAND as usize)]),
        "statuses of {REQUESTS} racing single-unit orders for {ON_HAND} units"
    );
    for reply in replies.iter().filter(|r| r.status == 409) {
        assert_error(reply, 409, "insufficient_stock");
    }
    let created: BTreeSet<&str> = replies
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| r.body["id"].as_str().expect("order id"))
        .collect();
    assert_eq!(
        created.len(),
        ON_HAND as usize,
        "order ids must be distinct"
    );

    let stock = server.stock("HOT-1").await;
    assert_eq!(
        stock["warehouses"][0]["reserved"], ON_HAND,
        "stock: {stock}"
    );
    assert_eq!(stock["available"], 0, "stock: {stock}");
    assert_eq!(server.list_all_orders("").await.len(), ON_HAND as usize);
}

async fn order_is_split_across_warehouses(backend: Backend) {
    let server = TestServer::start(backend).await;
    put_warehouse(&server, "WH-A", "TH").await;
    put_warehouse(&server, "WH-B", "LA").await;
    put_product(&server, "SPLIT-1", 100, "USD").await;
    put_stock(&server, "SPLIT-1", "WH-A", 30).await;
    put_stock(&server, "SPLIT-1", "WH-B", 30).await;

    let order = server
        .create_order(&order_body("c1", &[("SPLIT-1", 50)]))
        .await;
    assert_eq!(order["items"][0]["quantity"], 50);

    let stock = server.stock("SPLIT-1").await;
    let warehouses = stock["warehouses"].as_array().expect("warehouses");
    let reserved: Vec<i64> = warehouses
        .iter()
        .map(|w| w["reserved"].as_i64().unwrap())
        .collect();
    assert_eq!(reserved.iter().sum::<i64>(), 50, "stock: {stock}");
    for warehouse in warehouses {
        let (on_hand, reserved) = (
            warehouse["on_hand"].as_i64().unwrap(),
            warehouse["reserved"].as_i64().unwrap(),
        );
        assert!(reserved <= on_hand, "over-reserved warehouse: {warehouse}");
        assert_eq!(warehouse["available"].as_i64().unwrap(), on_hand - reserved);
    }
    assert_eq!(stock["available"], 10);

    // The remaining 10 can still be ordered, 11 cannot.
    assert_error(
        &server
            .post_order(&order_body("c2", &[("SPLIT-1", 11)]))
            .await,
        409,
        "insufficient_stock",
    );
    server
        .create_order(&order_body("c2", &[("SPLIT-1", 10)]))
        .await;
    assert_eq!(server.stock("SPLIT-1").await["available"], 0);
}

async fn concurrent_idempotent_replays_create_one_order(backend: Backend) {
    const REPLAYS: usize = 20;
    const QUANTITY: i64 = 3;
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let key = format!("key-{}", random_hex());
    let body = order_body("replayer", &[(TEA, QUANTITY)]);

    let requests = (0..REPLAYS)
        .map(|_| {
            server
                .request(reqwest::Method::POST, "/v1/orders")
                .header("Idempotency-Key", &key)
                .json(&body)
        })
        .collect();
    let replies = send_all(requests).await;

    assert_eq!(count_statuses(&replies), BTreeMap::from([(201, REPLAYS)]));
    let ids: BTreeSet<&str> = replies
        .iter()
        .map(|r| r.body["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "one key must give one order, got {ids:?}");
    let replayed = replies
        .iter()
        .filter(|r| r.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(
        replayed,
        REPLAYS - 1,
        "all but the first answer are replays"
    );
    let first: Vec<&Value> = replies
        .iter()
        .filter(|r| r.header("idempotent-replayed") != Some("true"))
        .map(|r| &r.body)
        .collect();
    for reply in &replies {
        assert_eq!(&reply.body, first[0], "a replay must return the same order");
    }
    assert_eq!(server.reserved(TEA).await, QUANTITY);
    assert_eq!(
        server.list_all_orders("customer_id=replayer").await.len(),
        1
    );

    // The same key with another body is a conflict and changes nothing.
    let other = order_body("replayer", &[(TEA, QUANTITY + 1)]);
    assert_error(
        &server.post_order_with_key(&key, &other).await,
        409,
        "conflict",
    );
    assert_eq!(server.reserved(TEA).await, QUANTITY);

    // A later replay still answers with the order.
    let late = server
        .post_order_with_key(&key, &body)
        .await
        .expect_status(201);
    assert_eq!(late.header("idempotent-replayed"), Some("true"));
    assert_eq!(&late.body, first[0]);
    assert_eq!(json!(server.list_all_orders("").await.len()), json!(1));
}

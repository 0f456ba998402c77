//! The writes a transaction defers to its commit (status changes of locked orders, timeline
//! entries, outbox events) land as if sent one by one, though PostgreSQL receives each kind
//! merged into few statements: every order ends in its last status even when one commit moves
//! it twice, timeline entries and outbox events keep the order they were written in.

use ordo_domain::order::OrderStatus;
use ordo_domain::timeline::TimelineKind;
use ordo_storage::records::NewOutboxEvent;
use ordo_storage::timeline::NewTimelineEntry;
use ordo_storage::{Database, now_ms};
use ordo_testkit::{Backend, TestDatabase};

/// An order of customer `cus` in `status`, written directly.
async fn insert_order(db: &Database, id: &str, status: OrderStatus) {
    db.execute_unchecked(&format!(
        "INSERT INTO orders (id, customer_id, status, currency, total_minor, \
         shipping_address, contact, created_at_ms, updated_at_ms, trace_id, span_id) \
         VALUES ('{id}', 'cus', '{}', 'USD', 100, '{{}}', '{{}}', 1, 1, 't', 's')",
        status.as_str()
    ))
    .await
    .unwrap();
}

/// A migrated PostgreSQL database (kept while the returned guard lives) with warehouse `WH`;
/// `None` where PostgreSQL is not configured.
async fn postgres_with_a_warehouse() -> Option<((tempfile::TempDir, TestDatabase), Database)> {
    let backend = Backend::postgres().await?;
    let workdir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&backend, workdir.path()).await;
    let db = Database::connect(&database.url, 4).await.unwrap();
    db.migrate().await.unwrap();
    db.execute_unchecked(
        "INSERT INTO warehouses (id, country, created_at_ms, updated_at_ms) VALUES ('WH', 'TH', 1, 1)",
    )
    .await
    .unwrap();
    Some(((workdir, database), db))
}

/// A `pending` shipment `shp_<order>` of `order_id` from warehouse `WH`.
async fn insert_pending_shipment(db: &Database, order_id: &str) {
    db.execute_unchecked(&format!(
        "INSERT INTO shipments (id, order_id, warehouse, status, attempts, created_at_ms, \
         updated_at_ms) VALUES ('shp_{order_id}', '{order_id}', 'WH', 'pending', 0, 1, 1)"
    ))
    .await
    .unwrap();
}

async fn deferred_writes_land_as_written_one_by_one(backend: Backend) {
    let workdir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&backend, workdir.path()).await;
    let db = Database::connect(&database.url, 2).await.unwrap();
    db.migrate().await.unwrap();
    let orders = ["ord_a", "ord_b", "ord_c", "ord_d"];
    for id in orders {
        insert_order(&db, id, OrderStatus::Paid).await;
    }

    let mut tx = db.begin().await.unwrap();
    tx.lock_orders_without_items(&orders).await.unwrap();
    let now = now_ms();
    // ord_a moves twice in this commit; ord_d's guard does not hold (it is not `split`), so it
    // stays `paid`, as a single guarded update would leave it.
    let moves = [
        ("ord_a", OrderStatus::Paid, OrderStatus::RiskApproved),
        ("ord_b", OrderStatus::Paid, OrderStatus::RiskApproved),
        ("ord_a", OrderStatus::RiskApproved, OrderStatus::Rejected),
        ("ord_c", OrderStatus::Paid, OrderStatus::RiskApproved),
        ("ord_d", OrderStatus::Split, OrderStatus::Scheduled),
    ];
    for (n, (id, from, to)) in moves.into_iter().enumerate() {
        tx.set_status_of_locked(id, from, to, now).await.unwrap();
        let detail = format!("move {n}");
        tx.append_timeline(&NewTimelineEntry {
            order_id: id,
            at_ms: now + n as i64,
            kind: TimelineKind::OrderCreated,
            detail: &detail,
            trace_id: "t",
            span_id: "s",
        })
        .await
        .unwrap();
        tx.append_outbox(&NewOutboxEvent {
            event_id: format!("evt_{n}"),
            topic: "order.moved".to_owned(),
            aggregate_id: id.to_owned(),
            payload: "{}".to_owned(),
            trace_context: "{}".to_owned(),
            created_at_ms: now,
        })
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    for (id, status) in [
        ("ord_a", OrderStatus::Rejected),
        ("ord_b", OrderStatus::RiskApproved),
        ("ord_c", OrderStatus::RiskApproved),
        ("ord_d", OrderStatus::Paid),
    ] {
        let order = db.order(id).await.unwrap().unwrap();
        assert_eq!(order.status, status, "{id}");
    }
    let details: Vec<String> = db
        .timeline("ord_a")
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.detail)
        .collect();
    assert_eq!(details, ["move 0", "move 2"]);
    let events: Vec<String> = db
        .claim_outbox("test", 100, now_ms(), 60_000)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.event_id)
        .collect();
    assert_eq!(events, ["evt_0", "evt_1", "evt_2", "evt_3", "evt_4"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_deferred_writes_land_as_written_one_by_one() {
    deferred_writes_land_as_written_one_by_one(Backend::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_deferred_writes_land_as_written_one_by_one() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    deferred_writes_land_as_written_one_by_one(backend).await;
}

/// A batch's read-ahead answers each order's read once, from what it read; a write to an order
/// forgets its part, so the next read of it asks the database again. PostgreSQL only: a
/// second connection changes the rows behind the transaction's back (on SQLite the
/// transaction holds the one writer).
#[tokio::test(flavor = "multi_thread")]
async fn postgres_batch_reads_are_answered_once_and_forgotten_when_the_order_is_written() {
    let Some((_database, db)) = postgres_with_a_warehouse().await else {
        return;
    };
    for id in ["ord_a", "ord_b"] {
        insert_order(&db, id, OrderStatus::Split).await;
        insert_pending_shipment(&db, id).await;
    }

    let mut tx = db.begin().await.unwrap();
    tx.lock_orders_without_items(&["ord_a", "ord_b"])
        .await
        .unwrap();
    tx.prefetch_shipments(&["ord_a", "ord_b"]).await.unwrap();
    // Behind the transaction's back, after its read-ahead.
    db.execute_unchecked("UPDATE shipments SET carrier = 'changed'")
        .await
        .unwrap();

    let carriers = |shipments: Vec<ordo_storage::records::ShipmentRecord>| -> Vec<Option<String>> {
        shipments.into_iter().map(|s| s.carrier).collect()
    };
    // Answered from the read-ahead, once; then from the database.
    assert_eq!(
        carriers(tx.shipments_of_order("ord_a").await.unwrap()),
        [None]
    );
    assert_eq!(
        carriers(tx.shipments_of_order("ord_a").await.unwrap()),
        [Some("changed".to_owned())]
    );
    // A write to ord_b forgets its part before it is asked for.
    tx.schedule_shipment_of_locked_order("ord_b", "shp_ord_b", "thai-post", 5, now_ms())
        .await
        .unwrap();
    assert_eq!(
        carriers(tx.shipments_of_order("ord_b").await.unwrap()),
        [Some("changed".to_owned())]
    );
    tx.commit().await.unwrap();
    let scheduled = db.shipments_of_order("ord_b").await.unwrap();
    assert_eq!(scheduled[0].carrier.as_deref(), Some("thai-post"));
}

/// A batch's refresh of the order cache reads, for every order at once, what a miss of each
/// would read (items in line order, shipments or none); reads then find them in the cache
/// without asking the database, until a write invalidates them. PostgreSQL only: SQLite has
/// no round trips to save, and its refresh reads nothing.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_refresh_caches_what_each_order_read_would_show() {
    let Some((_database, db)) = postgres_with_a_warehouse().await else {
        return;
    };
    db.execute_unchecked(
        "INSERT INTO products (sku, name, price_minor, currency, created_at_ms, updated_at_ms) \
         VALUES ('SKU-1', 'one', 100, 'USD', 1, 1), ('SKU-2', 'two', 250, 'USD', 1, 1)",
    )
    .await
    .unwrap();
    let orders = ["ord_a", "ord_b", "ord_c"];
    for id in orders {
        insert_order(&db, id, OrderStatus::Split).await;
        db.execute_unchecked(&format!(
            "INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_minor, \
             line_total_minor) VALUES ('{id}', 1, 'SKU-2', 1, 250, 250), ('{id}', 0, 'SKU-1', 2, 100, 200)"
        ))
        .await
        .unwrap();
    }
    // ord_c has no shipment yet.
    for id in ["ord_a", "ord_b"] {
        insert_pending_shipment(&db, id).await;
    }
    let mut missed = Vec::new();
    for id in orders {
        missed.push(db.order_snapshot(id).await.unwrap().unwrap());
    }
    // The misses' entries expire.
    tokio::time::sleep(ordo_storage::cache::TTL + std::time::Duration::from_millis(50)).await;

    db.refresh_cached_orders(&[orders[0], orders[1], orders[2], "ord_unknown"])
        .await
        .unwrap();
    // Behind the cache's back: reads keep answering what the refresh read.
    db.execute_unchecked("UPDATE orders SET status = 'scheduled'")
        .await
        .unwrap();
    for (id, missed) in orders.iter().zip(&missed) {
        let refreshed = db.order_snapshot(id).await.unwrap().unwrap();
        assert_eq!(refreshed.order, missed.order, "{id}");
        assert_eq!(refreshed.shipments, missed.shipments, "{id}");
        assert_eq!(refreshed.order.items.len(), 2, "{id}");
        assert_eq!(refreshed.order.items[0].sku, "SKU-1", "{id}: line order");
    }
    assert!(db.order_snapshot("ord_unknown").await.unwrap().is_none());
    assert!(missed[2].shipments.is_empty());
    tokio::time::sleep(ordo_storage::cache::TTL + std::time::Duration::from_millis(50)).await;
    let reread = db.order_snapshot("ord_a").await.unwrap().unwrap();
    assert_eq!(reread.order.status, OrderStatus::Scheduled);
}

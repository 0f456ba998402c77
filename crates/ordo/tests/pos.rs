//! POS batches (`POST /v1/pos/batches`), end to end against the real binary on SQLite and
//! PostgreSQL: every outcome, replays (also two at once), duplicates across batches, gaps in
//! the sequence, the offline window, bad input, and the trace each sale's order carries.

use ordo_testkit::otlp;

use ordo_testkit::*;
use otlp::{KIND_SERVER, OtlpReceiver, assert_one_tree};
use serde_json::{Value, json};

backend_tests!(
    a_batch_records_each_sale_with_its_own_outcome,
    a_replayed_batch_gets_the_same_answer_and_changes_nothing,
    two_uploads_of_one_batch_at_once_record_it_once,
    a_sale_sent_again_in_a_later_batch_is_a_duplicate,
    gaps_in_a_terminals_batches_are_reported,
    bad_batches_are_refused_whole_and_write_nothing,
    terminals_of_one_shop_sync_at_once_without_losing_a_unit,
);

const BATCHES: &str = "/v1/pos/batches";

/// An RFC 3339 time `minutes_ago` before now, at a +07:00 offset (a Bangkok terminal).
fn sold_minutes_ago(minutes_ago: i64) -> String {
    let at = time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago);
    let at = at.to_offset(time::UtcOffset::from_hms(7, 0, 0).unwrap());
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn sale(id: &str, items: &[(&str, i64)], paid: i64) -> Value {
    json!({
        "client_sale_id": id,
        "sold_at": sold_minutes_ago(30),
        "currency": "USD",
        "items": items.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect::<Vec<_>>(),
        "payment": {"method": "cash", "amount": money(paid, "USD")},
    })
}

fn batch(terminal: &str, seq: i64, sales: Vec<Value>) -> Value {
    json!({"terminal_id": terminal, "warehouse": BKK, "batch_seq": seq, "sales": sales})
}

async fn on_hand(server: &TestServer, sku: &str, warehouse: &str) -> i64 {
    let stock = server.stock(sku).await;
    stock["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["warehouse"] == warehouse)
        .map_or(0, |w| w["on_hand"].as_i64().unwrap())
}

async fn a_batch_records_each_sale_with_its_own_outcome(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    // 5 of the 100 TEA are reserved by an online order: a sale never takes those.
    server
        .create_order(&order_body("online", &[(TEA, 5)]))
        .await;
    let mut future = sale("s-future", &[(TEA, 1)], TEA_PRICE);
    future["sold_at"] = json!(sold_minutes_ago(-10));
    let mut old = sale("s-old", &[(TEA, 1)], TEA_PRICE);
    old["sold_at"] = json!(sold_minutes_ago(73 * 60));
    let mut euros = sale("s-eur", &[(TEA, 1)], TEA_PRICE);
    euros["payment"]["amount"] = money(TEA_PRICE, "EUR");
    let mut named = sale("s-named", &[(TEA, 1)], TEA_PRICE);
    named["customer_id"] = json!("loyal-42");
    let body = batch(
        "till-1",
        1,
        vec![
            sale("s-exact", &[(TEA, 2)], 2 * TEA_PRICE),
            sale(
                "s-discount",
                &[(TEA, 1), (MUG, 1)],
                TEA_PRICE + MUG_PRICE - 300,
            ),
            sale("s-unknown", &[("NO-SUCH-SKU", 1)], 100),
            future,
            old,
            euros,
            named,
            // 100 on hand, 5 reserved, 4 sold above: 91 free; 95 sold here.
            sale("s-short", &[(TEA, 95)], 95 * TEA_PRICE),
        ],
    );
    let reply = server.post_json(BATCHES, &body).await.expect_status(200);
    let (trace_id, _) = reply.traceparent();
    let answer = reply.body;
    assert_eq!(answer["terminal_id"], "till-1");
    assert_eq!(answer["batch_seq"], 1);
    assert_eq!(answer["missing_batch_seqs"], json!([]));
    let results = answer["results"].as_array().unwrap();
    let outcomes: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["client_sale_id"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("s-exact", "accepted"),
            ("s-discount", "accepted"),
            ("s-unknown", "rejected"),
            ("s-future", "rejected"),
            ("s-old", "rejected"),
            ("s-eur", "rejected"),
            ("s-named", "accepted"),
            ("s-short", "accepted"),
        ]
    );
    for rejected in results.iter().filter(|r| r["outcome"] == "rejected") {
        assert_eq!(rejected["order_id"], Value::Null, "{rejected}");
        // A product the catalogue does not have is `not_found`, as in an online order.
        let code = match rejected["client_sale_id"].as_str() {
            Some("s-unknown") => "not_found",
            _ => "invalid_argument",
        };
        assert_eq!(rejected["error"]["code"], code, "{rejected}");
    }
    assert_eq!(
        results[0]["price_difference"],
        json!({"amount_minor": 0, "currency": "USD"})
    );
    assert_eq!(
        results[1]["price_difference"],
        json!({"amount_minor": -300, "currency": "USD"})
    );
    assert_eq!(results[0]["stock_deficit"], json!([]));
    // The MUG is stocked in BER only: none of it at the terminal's warehouse.
    assert_eq!(
        results[1]["stock_deficit"],
        json!([{"sku": MUG, "quantity": 1}])
    );
    assert_eq!(
        results[7]["stock_deficit"],
        json!([{"sku": TEA, "quantity": 4}])
    );
    // Every free unit went, the reserved ones stayed.
    assert_eq!(on_hand(&server, TEA, BKK).await, 5);
    assert_eq!(server.reserved(TEA).await, 5);
    assert_eq!(on_hand(&server, MUG, BER).await, SEEDED_ON_HAND);

    // Each accepted sale is a completed order: the amount paid, no address, in this trace.
    let discount = server
        .get_order(results[1]["order_id"].as_str().unwrap())
        .await;
    assert_eq!(discount["status"], "completed");
    assert_eq!(
        discount["total"],
        json!({"amount_minor": TEA_PRICE + MUG_PRICE - 300, "currency": "USD"})
    );
    assert_eq!(discount["items"][1]["unit_price"], money(MUG_PRICE, "USD"));
    assert_eq!(discount["shipping_address"], Value::Null);
    assert_eq!(discount["contact"], Value::Null);
    assert_eq!(discount["customer_id"], "pos:till-1");
    assert_eq!(discount["trace_id"], trace_id);
    let named = server
        .get_order(results[6]["order_id"].as_str().unwrap())
        .await;
    assert_eq!(named["customer_id"], "loyal-42");
    let events = server.timeline(discount["id"].as_str().unwrap()).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "pos_sale_recorded");
    // A completed order is over: it cannot be cancelled.
    let cancel = server.cancel_order(discount["id"].as_str().unwrap()).await;
    assert_eq!(cancel.status, 409, "{}", cancel.text);

    let metrics = server.admin_get("/metrics").await.expect_status(200).text;
    for line in [
        "pos_sales_total{outcome=\"accepted\"} 4",
        "pos_sales_total{outcome=\"rejected\"} 4",
        "pos_stock_deficit_units_total 5",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pos_terminal_last_sync_timestamp_seconds{terminal=\"till-1\"}"))
    );
}

async fn a_replayed_batch_gets_the_same_answer_and_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let body = batch(
        "till-2",
        1,
        vec![
            sale("r-1", &[(TEA, 3)], 3 * TEA_PRICE),
            sale("r-2", &[("NO-SUCH-SKU", 1)], 100),
        ],
    );
    let first = server.post_json(BATCHES, &body).await.expect_status(200);
    // The trace of the first upload is the trace of its orders.
    let (trace, _) = first.traceparent();
    let order = server
        .get_order(first.body["results"][0]["order_id"].as_str().unwrap())
        .await;
    assert_eq!(order["trace_id"], trace);
    let after_first = on_hand(&server, TEA, BKK).await;
    assert_eq!(after_first, SEEDED_ON_HAND - 3);
    for _ in 0..2 {
        let again = server.post_json(BATCHES, &body).await.expect_status(200);
        assert_eq!(again.text, first.text, "byte for byte");
    }
    assert_eq!(on_hand(&server, TEA, BKK).await, after_first);
    let metrics = server.admin_get("/metrics").await.expect_status(200).text;
    assert!(
        metrics
            .lines()
            .any(|l| l == "pos_sales_total{outcome=\"accepted\"} 1"),
        "replays are not counted again:\n{metrics}"
    );
}

async fn two_uploads_of_one_batch_at_once_record_it_once(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    seed_catalog(&server).await;
    let sales: Vec<Value> = (0..20)
        .map(|i| sale(&format!("c-{i}"), &[(TEA, 1)], TEA_PRICE))
        .collect();
    let body = batch("till-3", 1, sales);
    let uploads: Vec<_> = (0..2)
        .map(|_| {
            let (server, body) = (std::sync::Arc::clone(&server), body.clone());
            tokio::spawn(async move { server.post_json(BATCHES, &body).await.expect_status(200) })
        })
        .collect();
    let mut answers = Vec::new();
    for upload in uploads {
        answers.push(upload.await.unwrap().text);
    }
    assert_eq!(answers[0], answers[1], "both get the one answer");
    assert_eq!(on_hand(&server, TEA, BKK).await, SEEDED_ON_HAND - 20);
    let orders = server.list_all_orders("customer_id=pos:till-3").await;
    assert_eq!(orders.len(), 20, "each sale recorded once");
}

async fn a_sale_sent_again_in_a_later_batch_is_a_duplicate(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let first = server
        .post_json(
            BATCHES,
            &batch("till-4", 1, vec![sale("d-1", &[(TEA, 1)], TEA_PRICE)]),
        )
        .await
        .expect_status(200)
        .body;
    let order_id = first["results"][0]["order_id"].clone();
    let second = server
        .post_json(
            BATCHES,
            &batch(
                "till-4",
                2,
                vec![
                    sale("d-1", &[(TEA, 1)], TEA_PRICE),
                    sale("d-2", &[(TEA, 1)], TEA_PRICE),
                    sale("d-2", &[(TEA, 1)], TEA_PRICE),
                ],
            ),
        )
        .await
        .expect_status(200)
        .body;
    let results = second["results"].as_array().unwrap();
    assert_eq!(results[0]["outcome"], "duplicate");
    assert_eq!(results[0]["order_id"], order_id);
    assert_eq!(results[1]["outcome"], "accepted");
    assert_eq!(results[2]["outcome"], "duplicate", "twice in one batch");
    assert_eq!(results[2]["order_id"], results[1]["order_id"]);
    assert_eq!(on_hand(&server, TEA, BKK).await, SEEDED_ON_HAND - 2);
    // Another terminal may use the same sale id.
    let other = server
        .post_json(
            BATCHES,
            &batch("till-5", 1, vec![sale("d-1", &[(TEA, 1)], TEA_PRICE)]),
        )
        .await
        .expect_status(200)
        .body;
    assert_eq!(other["results"][0]["outcome"], "accepted");
}

async fn gaps_in_a_terminals_batches_are_reported(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let mut missing = Vec::new();
    for seq in [3, 1, 6] {
        let answer = server
            .post_json(BATCHES, &batch("till-6", seq, Vec::new()))
            .await
            .expect_status(200)
            .body;
        missing.push(answer["missing_batch_seqs"].clone());
    }
    assert_eq!(missing, [json!([1, 2]), json!([]), json!([2, 4, 5])]);
    // A replay keeps its first answer, gaps included.
    let replay = server
        .post_json(BATCHES, &batch("till-6", 3, Vec::new()))
        .await
        .expect_status(200)
        .body;
    assert_eq!(replay["missing_batch_seqs"], json!([1, 2]));
}

async fn bad_batches_are_refused_whole_and_write_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let one = || vec![sale("b-1", &[(TEA, 1)], TEA_PRICE)];
    let too_many: Vec<Value> = (0..501)
        .map(|i| sale(&format!("b-{i}"), &[(TEA, 1)], TEA_PRICE))
        .collect();
    let mut unknown_field = batch("till-7", 1, one());
    unknown_field["extra"] = json!(1);
    let mut wrong_type = batch("till-7", 1, one());
    wrong_type["batch_seq"] = json!("one");
    let mut bad_method = batch("till-7", 1, one());
    bad_method["sales"][0]["payment"]["method"] = json!("cheque");
    let cases = [
        (batch("till-7", 1, too_many), 400, "invalid_argument"),
        (batch("till-7", 0, one()), 400, "invalid_argument"),
        (batch("till 7", 1, one()), 400, "invalid_argument"),
        (
            json!({"terminal_id": "till-7", "warehouse": "NOWHERE", "batch_seq": 1, "sales": one()}),
            404,
            "not_found",
        ),
        (unknown_field, 400, "invalid_argument"),
        (wrong_type, 400, "invalid_argument"),
    ];
    for (body, status, code) in cases {
        let reply = server.post_json(BATCHES, &body).await;
        assert_error(&reply, status, code);
    }
    // A sale with a bad payment method is rejected alone, not the batch.
    let answer = server
        .post_json(BATCHES, &bad_method)
        .await
        .expect_status(200)
        .body;
    assert_eq!(answer["results"][0]["outcome"], "rejected");
    assert_eq!(on_hand(&server, TEA, BKK).await, SEEDED_ON_HAND);
    // None of the refused batches was kept: seq 1 was free for the one that got through, and
    // seq 2 sees no gap.
    let next = server
        .post_json(BATCHES, &batch("till-7", 2, Vec::new()))
        .await
        .expect_status(200)
        .body;
    assert_eq!(next["missing_batch_seqs"], json!([]));
}

/// Six terminals of one shop sync at once, their sales over the same SKUs in opposite orders:
/// every batch is recorded (no lock waits run into time-outs, no deadlock), and exactly the
/// units sold leave the shelf, the shortfall reported once the free stock is gone.
async fn terminals_of_one_shop_sync_at_once_without_losing_a_unit(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    seed_catalog(&server).await;
    put_stock(&server, MUG, BKK, 50).await;
    let uploads: Vec<_> = (0..6)
        .map(|terminal| {
            let server = std::sync::Arc::clone(&server);
            tokio::spawn(async move {
                let sales = (0..20)
                    .map(|i| {
                        let items = if (terminal + i) % 2 == 0 {
                            [(TEA, 1), (MUG, 1)]
                        } else {
                            [(MUG, 1), (TEA, 1)]
                        };
                        sale(&format!("t{terminal}-{i}"), &items, TEA_PRICE + MUG_PRICE)
                    })
                    .collect();
                server
                    .post_json(BATCHES, &batch(&format!("till-shop-{terminal}"), 1, sales))
                    .await
                    .expect_status(200)
                    .body
            })
        })
        .collect();
    let mut deficits = std::collections::HashMap::<String, i64>::new();
    for upload in uploads {
        let answer = upload.await.unwrap();
        for result in answer["results"].as_array().unwrap() {
            assert_eq!(result["outcome"], "accepted", "{result}");
            for deficit in result["stock_deficit"].as_array().unwrap() {
                *deficits
                    .entry(deficit["sku"].as_str().unwrap().to_owned())
                    .or_default() += deficit["quantity"].as_i64().unwrap();
            }
        }
    }
    // 120 of each sold: TEA had 100 (20 short), MUG 50 (70 short).
    assert_eq!(on_hand(&server, TEA, BKK).await, 0);
    assert_eq!(on_hand(&server, MUG, BKK).await, 0);
    assert_eq!(deficits.get(TEA), Some(&20));
    assert_eq!(deficits.get(MUG), Some(&70));
}

/// Each sale is a `pos.sale` span, a child of the batch request's SERVER span, and the whole
/// batch is one trace tree: the order a sale became names that trace.
#[tokio::test(flavor = "multi_thread")]
async fn each_sale_is_a_span_under_the_batch_request() {
    let receiver = OtlpReceiver::grpc().await;
    let server = TestServer::start_exporting_to(&receiver, Backend::sqlite(), &[]).await;
    seed_catalog(&server).await;
    let reply = server
        .post_json(
            BATCHES,
            &batch(
                "till-trace",
                1,
                vec![
                    sale("tr-1", &[(TEA, 1)], TEA_PRICE),
                    sale("tr-2", &[("NO-SUCH-SKU", 1)], 100),
                    sale("tr-3", &[(TEA, 2)], 2 * TEA_PRICE),
                ],
            ),
        )
        .await
        .expect_status(200);
    let (trace_id, _) = reply.traceparent();
    let spans = receiver
        .trace(&trace_id, |spans| {
            spans.iter().filter(|s| s.name == "pos.sale").count() == 3
                && spans.iter().any(|s| s.kind == KIND_SERVER)
        })
        .await;
    let root = assert_one_tree(&spans, "");
    assert_eq!(root.kind, KIND_SERVER);
    assert_eq!(root.name, "POST /v1/pos/batches");
    let sales: Vec<_> = spans.iter().filter(|s| s.name == "pos.sale").collect();
    for sale in &sales {
        assert_eq!(sale.parent_span_id, root.span_id, "{sale:#?}");
    }
    let outcomes: Vec<&str> = sales
        .iter()
        .map(|s| s.attributes.get("pos.outcome").map_or("", String::as_str))
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "accepted").count(),
        2,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == "rejected").count(),
        1,
        "{outcomes:?}"
    );
    let order_id = reply.body["results"][0]["order_id"].as_str().unwrap();
    assert_eq!(server.get_order(order_id).await["trace_id"], trace_id);
}

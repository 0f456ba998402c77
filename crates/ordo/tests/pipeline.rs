//! The fulfillment pipeline end to end against the real binary: a paid order goes through risk,
//! split, scheduling and the carrier push to `shipped`; a carrier's transient errors are
//! retried, a refusal fails the order and runs the compensations; a risk rejection refunds and
//! releases the stock; and every span of a shipped order is one tree in the order's trace.
//!
//! The carrier is a test HTTP server (axum) that checks the contract: `Idempotency-Key`,
//! `Ordo-Signature` (verified here with hmac, from the contract), `traceparent`.

use ordo_testkit::carrier;
use ordo_testkit::otlp;

use carrier::Carrier;
use hmac::{Hmac, Mac};
use ordo_testkit::*;
use otlp::{KIND_CLIENT, OtlpReceiver, assert_one_tree, describe};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

backend_tests!(
    a_paid_order_ships_in_one_shipment_per_warehouse,
    a_risk_rejection_refunds_and_releases_the_stock,
);

/// An order of one TEA (reserved in BKK-1) and one MUG (reserved in BER-1), paid with the
/// sandbox. The payment request carries no `traceparent`: the order's trace must continue
/// anyway. Returns the order.
async fn paid_two_warehouse_order(server: &TestServer, customer: &str) -> Value {
    seed_catalog(server).await;
    let created = server
        .post_order(&order_body(customer, &[(TEA, 1), (MUG, 2)]))
        .await
        .expect_status(201);
    let order = created.body.clone();
    let id = order["id"].as_str().unwrap();
    let reply = server
        .post_json(&format!("/v1/orders/{id}/payments"), &json!({}))
        .await
        .expect_status(201);
    assert_eq!(reply.body["provider"], "sandbox");
    order
}

/// A server started with `env` (a carrier's, say), and on it [`paid_two_warehouse_order`] of
/// `customer`: the server, the order and its id.
async fn server_with_paid_order(
    backend: Backend,
    env: &[(&'static str, String)],
    customer: &str,
) -> (TestServer, Value, String) {
    let server = TestServer::start_with_env(backend, &env_refs(env)).await;
    let order = paid_two_warehouse_order(&server, customer).await;
    let id = order["id"].as_str().unwrap().to_owned();
    (server, order, id)
}

async fn wait_for_status(server: &TestServer, order_id: &str, status: &str) -> Value {
    server
        .wait_for_order_status(order_id, status, Duration::from_secs(15))
        .await
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn payment_status(server: &TestServer, order_id: &str) -> String {
    let payments = server
        .get(&format!("/v1/orders/{order_id}/payments"))
        .await
        .expect_status(200)
        .body;
    payments["payments"][0]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Checks that the compensations ran for the order `id` (its payment refunded, its stock
/// released) and answers its timeline.
async fn compensated(server: &TestServer, id: &str) -> Vec<Value> {
    assert_eq!(payment_status(server, id).await, "refunded");
    assert_eq!(server.reserved(TEA).await, 0);
    assert_eq!(server.reserved(MUG).await, 0);
    server.timeline(id).await
}

/// Checks that the order `id` was compensated (see [`compensated`]) after `failed_shipments`
/// failed shipments: from its fourth event on, its timeline is exactly the fulfillment steps,
/// those failures and the compensations. Answers the timeline.
async fn failed_and_compensated(
    server: &TestServer,
    id: &str,
    failed_shipments: usize,
) -> Vec<Value> {
    let events = compensated(server, id).await;
    let mut expected = vec!["risk_approved", "split", "scheduled"];
    expected.extend(std::iter::repeat_n("shipment_failed", failed_shipments));
    expected.extend(["payment_refunded", "stock_released", "fulfillment_failed"]);
    assert_eq!(types(&events)[3..], expected, "{events:#?}");
    events
}

fn shipment_ids(order: &Value) -> Vec<String> {
    order["shipments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_paid_order_ships_in_one_shipment_per_warehouse(backend: Backend) {
    let carrier = Carrier::start(|_, _| 200).await;
    let env = carrier.env(&[]);
    let (server, order, id) = server_with_paid_order(backend, &env, "pipeline-happy").await;

    let shipped = wait_for_status(&server, &id, "shipped").await;
    let shipments = shipped["shipments"].as_array().unwrap();
    assert_eq!(shipments.len(), 2, "{shipped:#}");
    let mut warehouses: Vec<&str> = shipments
        .iter()
        .map(|s| s["warehouse"].as_str().unwrap())
        .collect();
    warehouses.sort();
    assert_eq!(warehouses, [BER, BKK]);
    for shipment in shipments {
        assert_eq!(shipment["status"], "accepted", "{shipment}");
        assert!(shipment["id"].as_str().unwrap().starts_with("shp_"));
        assert!(shipment["carrier"].is_string(), "{shipment}");
        assert_rfc3339(&shipment["pickup_slot"], "pickup_slot");
    }

    // Exactly one push per shipment, with the contract's headers, in the order's trace.
    let pushes = carrier.pushes();
    assert_eq!(pushes.len(), 2, "{pushes:#?}");
    let order_trace = order["trace_id"].as_str().unwrap();
    for push in &pushes {
        assert!(shipment_ids(&shipped).contains(&push.shipment_id));
        assert_eq!(
            push.idempotency_key.as_deref(),
            Some(push.shipment_id.as_str())
        );
        assert!(push.signature_valid, "{push:?}");
        let (trace_id, _) = parse_traceparent(push.traceparent.as_deref().unwrap()).unwrap();
        assert_eq!(trace_id, order_trace);
        assert_eq!(push.body["order_id"], id.as_str());
        assert!(push.body["items"].as_array().is_some_and(|i| !i.is_empty()));
        assert_eq!(push.body["shipping_address"]["country"], "TH");
    }

    let events = server.timeline(&id).await;
    let kinds = types(&events);
    let expected = [
        "order_created",
        "payment_requested",
        "payment_succeeded",
        "risk_approved",
        "split",
        "scheduled",
        "shipment_accepted",
        "shipment_accepted",
        "shipped",
    ];
    assert_eq!(kinds, expected, "{events:#?}");
    for event in &events {
        assert_eq!(event["trace_id"], order_trace, "{event}");
    }
    // The stock stays reserved for the shipped order; the payment stands.
    assert_eq!(server.reserved(TEA).await, 1);
    assert_eq!(server.reserved(MUG).await, 2);
    assert_eq!(payment_status(&server, &id).await, "succeeded");
}

async fn a_risk_rejection_refunds_and_releases_the_stock(backend: Backend) {
    let server =
        TestServer::start_with_env(backend, &[("ORDO_RISK_BLOCKED_COUNTRIES", "TH")]).await;
    let order = paid_two_warehouse_order(&server, "pipeline-risky").await;
    let id = order["id"].as_str().unwrap().to_owned();
    let rejected = wait_for_status(&server, &id, "rejected").await;
    assert_eq!(rejected["shipments"], json!([]));
    let events = compensated(&server, &id).await;
    assert_eq!(
        types(&events),
        [
            "order_created",
            "payment_requested",
            "payment_succeeded",
            "payment_refunded",
            "stock_released",
            "order_rejected",
        ],
        "{events:#?}"
    );
    let last = events.last().unwrap()["detail"].as_str().unwrap();
    assert!(last.contains("blocked_country"), "{last}");
    // Each compensation is a step of its own.
    let spans: std::collections::HashSet<&str> = events[3..]
        .iter()
        .map(|e| e["span_id"].as_str().unwrap())
        .collect();
    assert_eq!(spans.len(), 3, "{events:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_carrier_errors_are_retried_without_duplicates() {
    // Each shipment is answered 503 three times, then 200.
    let carrier = Carrier::start(|_, nth| if nth < 3 { 503 } else { 200 }).await;
    let env = carrier.env(&[]);
    let (server, _, id) = server_with_paid_order(Backend::sqlite(), &env, "pipeline-retry").await;
    let shipped = wait_for_status(&server, &id, "shipped").await;
    let pushes = carrier.pushes();
    let mut accepted: HashMap<String, usize> = HashMap::new();
    for push in &pushes {
        assert_eq!(
            push.idempotency_key.as_deref(),
            Some(push.shipment_id.as_str())
        );
        if push.answered == 200 {
            *accepted.entry(push.shipment_id.clone()).or_default() += 1;
        }
    }
    assert_eq!(pushes.len(), 8, "{pushes:#?}");
    for shipment in shipment_ids(&shipped) {
        assert_eq!(accepted.get(&shipment), Some(&1), "{pushes:#?}");
    }
    let kinds = types(&server.timeline(&id).await);
    assert_eq!(kinds.last().unwrap(), "shipped");
    assert_eq!(
        kinds.iter().filter(|k| *k == "shipment_accepted").count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusing_carrier_fails_the_order_and_compensates() {
    let carrier = Carrier::start(|_, _| 400).await;
    let env = carrier.env(&[]);
    let (server, _, id) = server_with_paid_order(Backend::sqlite(), &env, "pipeline-refused").await;
    let failed = wait_for_status(&server, &id, "fulfillment_failed").await;
    // A 400 is final: one push, no retry; the other shipment is not pushed at all.
    let pushes = carrier.pushes();
    assert_eq!(pushes.len(), 1, "{pushes:#?}");
    let statuses = field_of_each(&failed["shipments"], "status");
    assert!(statuses.contains(&"failed"), "{failed:#}");
    assert!(!statuses.contains(&"accepted"), "{failed:#}");
    failed_and_compensated(&server, &id, 1).await;
    // Dead letters are counted.
    let metrics = server.admin_get("/metrics").await.expect_status(200).text;
    assert_metric_line(&metrics, "shipments_dead_lettered_total 1");
}

/// The values of the `circuit_breaker_state` series of carriers in `metrics`.
fn breaker_states(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|line| line.starts_with("circuit_breaker_state{target=\"carrier:"))
        .filter_map(|line| line.rsplit(' ').next())
        .collect()
}

/// The carrier fails once and opens its breaker (threshold 1), then recovers: after the
/// cool-down a probe goes through, succeeds and closes the breaker, and the order ships —
/// the breaker did not stay open on its own rejections of the redeliveries meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_breaker_closes_by_itself_once_the_carrier_recovers() {
    let pushes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&pushes);
    let carrier = Carrier::start(move |_, _| {
        match counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => 503,
            _ => 200,
        }
    })
    .await;
    let env = carrier.env(&[
        ("ORDO_CARRIER_BREAKER_THRESHOLD", "1"),
        ("ORDO_CARRIER_BREAKER_COOLDOWN_MS", "200"),
        ("ORDO_OUTBOX_RETRY_BASE_MS", "20"),
    ]);
    let (server, _, id) =
        server_with_paid_order(Backend::sqlite(), &env, "pipeline-breaker-heals").await;
    let shipped = wait_for_status(&server, &id, "shipped").await;
    for shipment in shipped["shipments"].as_array().unwrap() {
        assert_eq!(shipment["status"], "accepted", "{shipped:#}");
    }
    let answered: Vec<u16> = carrier.pushes().iter().map(|p| p.answered).collect();
    assert_eq!(
        answered,
        [503, 200, 200],
        "one failure, then one push per shipment"
    );
    let metrics = server.admin_get("/metrics").await.expect_status(200).text;
    // One carrier per warehouse: the one that failed is closed again, the other never opened.
    assert_eq!(
        breaker_states(&metrics),
        ["0", "0"],
        "closed again: {metrics}"
    );
}

/// "Slow down" answers (429) are retried but are not failures of the carrier: they never
/// open its breaker, even at a threshold of 1 and a cool-down that would outlast the test.
#[tokio::test(flavor = "multi_thread")]
async fn slow_down_answers_do_not_open_the_breaker() {
    let carrier = Carrier::start(|_, nth| if nth < 2 { 429 } else { 200 }).await;
    let env = carrier.env(&[
        ("ORDO_CARRIER_BREAKER_THRESHOLD", "1"),
        ("ORDO_CARRIER_BREAKER_COOLDOWN_MS", "600000"),
    ]);
    let (server, _, id) =
        server_with_paid_order(Backend::sqlite(), &env, "pipeline-slow-down").await;
    wait_for_status(&server, &id, "shipped").await;
    assert_eq!(carrier.pushes().len(), 6, "three pushes per shipment");
    let metrics = server.admin_get("/metrics").await.expect_status(200).text;
    assert_eq!(breaker_states(&metrics), ["0", "0"], "{metrics}");
}

/// The carrier keeps failing and its breaker stays open through every redelivery of
/// `order.scheduled`: the last delivery settles the event — the shipments are dead-lettered and
/// the order compensated — instead of leaving the order `scheduled` for ever. Each retried
/// publish links to the attempt before it, and all of it stays in the order's one trace.
#[tokio::test(flavor = "multi_thread")]
async fn a_breaker_open_through_every_redelivery_fails_the_order_and_compensates() {
    let receiver = OtlpReceiver::grpc().await;
    let carrier = Carrier::start(|_, _| 503).await;
    let mut env = carrier.env(&[
        ("ORDO_CARRIER_BREAKER_THRESHOLD", "1"),
        ("ORDO_CARRIER_BREAKER_COOLDOWN_MS", "600000"),
        ("ORDO_OUTBOX_RETRY_BASE_MS", "5"),
    ]);
    env.extend(receiver.env());
    let (server, order, id) =
        server_with_paid_order(Backend::sqlite(), &env, "pipeline-breaker").await;
    let failed = wait_for_status(&server, &id, "fulfillment_failed").await;

    // One push opened the breaker; no later delivery reached the carrier.
    assert_eq!(carrier.pushes().len(), 1, "{:#?}", carrier.pushes());
    for shipment in failed["shipments"].as_array().unwrap() {
        assert_eq!(shipment["status"], "failed", "{failed:#}");
    }
    let events = failed_and_compensated(&server, &id, 2).await;
    assert!(
        events.last().unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("circuit breaker"),
        "{events:#?}"
    );
    // Settled, not dead-lettered: the outbox holds no dead event.
    let metrics = server.admin_get("/metrics").await.expect_status(200).text;
    assert!(
        metrics.lines().any(|l| l == "outbox_dead_letters 0"),
        "{metrics}"
    );
    assert_eq!(
        breaker_states(&metrics),
        ["2"],
        "the breaker is open: {metrics}"
    );

    let trace_id = order["trace_id"].as_str().unwrap();
    let spans = receiver
        .trace(trace_id, |spans| {
            spans
                .iter()
                .any(|s| s.name == "publish order.fulfillment_failed")
        })
        .await;
    assert_one_tree(&spans, "");
    let mut publishes: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "publish order.scheduled")
        .collect();
    publishes.sort_by_key(|s| s.attributes["attempt"].parse::<i64>().unwrap());
    assert_eq!(publishes.len(), 8, "{:#?}", describe(&spans));
    assert!(publishes[0].links.is_empty());
    for pair in publishes.windows(2) {
        assert_eq!(
            pair[1].links,
            vec![(pair[0].trace_id.clone(), pair[0].span_id.clone())],
            "a retried publish links to the attempt before it"
        );
    }
    let last = spans
        .iter()
        .find(|s| s.name == "process order.scheduled" && s.attributes["delivery.attempt"] == "8")
        .expect("the last delivery's CONSUMER span");
    assert_eq!(last.attributes["given_up"], "true");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shipped_order_is_one_trace_tree() {
    let receiver = OtlpReceiver::grpc().await;
    let carrier = Carrier::start(|_, _| 200).await;
    let mut env = carrier.env(&[]);
    env.extend(receiver.env());
    let (server, order, id) =
        server_with_paid_order(Backend::sqlite(), &env, "pipeline-traced").await;
    wait_for_status(&server, &id, "shipped").await;
    let trace_id = order["trace_id"].as_str().unwrap();

    let spans = receiver
        .trace(trace_id, |spans| {
            spans
                .iter()
                .filter(|s| s.kind == KIND_CLIENT && s.name == "POST")
                .count()
                == 2
                && spans.iter().any(|s| s.name == "publish order.shipped")
        })
        .await;
    let root = assert_one_tree(&spans, "");
    assert_eq!(root.name, "POST /v1/orders", "{:#?}", describe(&spans));
    for name in [
        "payment_callback",
        "publish order.paid",
        "process order.paid",
        "publish order.risk_approved",
        "process order.risk_approved",
        "publish order.split",
        "process order.split",
        "publish order.scheduled",
        "process order.scheduled",
        "publish order.shipped",
    ] {
        assert!(
            spans.iter().any(|s| s.name == name),
            "no span {name}: {:#?}",
            describe(&spans)
        );
    }
    let pushes: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == KIND_CLIENT && s.name == "POST")
        .collect();
    assert_eq!(pushes.len(), 2, "{:#?}", describe(&spans));
    for push in pushes {
        assert_eq!(push.attributes["http.request.method"], "POST");
        assert_eq!(push.attributes["http.response.status_code"], "200");
        assert_eq!(push.attributes["url.full"], carrier.url);
        assert_eq!(push.attributes["server.address"], "127.0.0.1");
    }
}

async fn sql(server: &TestServer, statement: &str) {
    sql_execute(server, statement).await;
}

async fn unpublished(server: &TestServer) -> i64 {
    sql_i64s(
        server,
        "SELECT COUNT(*) FROM outbox WHERE published_at_ms IS NULL",
    )
    .await[0][0]
}

async fn wait_until_all_published(server: &TestServer) {
    for _ in 0..200 {
        if unpublished(server).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the outbox did not drain\n{}", server.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivered_events_and_an_interrupted_push_never_push_twice() {
    let carrier = Carrier::start(|_, _| 200).await;
    let env = carrier.env(&[]);
    let (server, _, id) =
        server_with_paid_order(Backend::sqlite(), &env, "pipeline-redelivery").await;
    let shipped = wait_for_status(&server, &id, "shipped").await;
    wait_until_all_published(&server).await;
    assert_eq!(carrier.pushes().len(), 2);
    let events = server.timeline(&id).await;

    // Every event delivered again (a relay that died before marking them): nothing changes.
    sql(
        &server,
        "UPDATE outbox SET published_at_ms = NULL, claimed_until_ms = NULL",
    )
    .await;
    wait_until_all_published(&server).await;
    assert_eq!(carrier.pushes().len(), 2, "{:#?}", carrier.pushes());
    assert_eq!(server.timeline(&id).await, events);

    // A crash in the middle of a push: one shipment accepted, the other claimed (`pushing`),
    // the push stage's transaction not committed, its event not acknowledged.
    let ids = shipment_ids(&shipped);
    let (interrupted, done) = (&ids[0], &ids[1]);
    sql(
        &server,
        &format!("UPDATE orders SET status = 'scheduled' WHERE id = '{id}'"),
    )
    .await;
    sql(
        &server,
        &format!("UPDATE shipments SET status = 'pushing' WHERE id = '{interrupted}'"),
    )
    .await;
    sql(
        &server,
        "DELETE FROM processed_events WHERE consumer = 'push'",
    )
    .await;
    sql(
        &server,
        "UPDATE outbox SET published_at_ms = NULL, claimed_until_ms = NULL
         WHERE topic = 'order.scheduled'",
    )
    .await;
    // The rows changed behind the service's back, so its order cache still shows `shipped`
    // (for up to a second): wait for the redelivery itself, then for the status.
    wait_until_all_published(&server).await;
    wait_for_status(&server, &id, "shipped").await;
    let pushes = carrier.pushes();
    assert_eq!(pushes.len(), 3, "{pushes:#?}");
    // The interrupted one goes again under the same idempotency key; the accepted one never.
    assert_eq!(&pushes[2].shipment_id, interrupted);
    assert_eq!(
        pushes[2].idempotency_key.as_deref(),
        Some(interrupted.as_str())
    );
    assert_eq!(pushes.iter().filter(|p| &p.shipment_id == done).count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn risk_limits_count_recent_payments_and_amounts() {
    let server = TestServer::start_with_env(
        Backend::sqlite(),
        &[
            ("ORDO_RISK_VELOCITY", "1/600"),
            ("ORDO_RISK_MAX_AMOUNT", "USD=5000"),
        ],
    )
    .await;
    seed_catalog(&server).await;
    let mut results = Vec::new();
    // One TEA each: under the amount limit; the second payment within the window is one too
    // many. Then a large order of another customer: over the amount limit.
    for (customer, quantity) in [("fast", 1), ("fast", 1), ("big", 3)] {
        let order = server
            .post_order(&order_body(customer, &[(TEA, quantity)]))
            .await
            .expect_status(201)
            .body;
        let id = order["id"].as_str().unwrap().to_owned();
        server
            .post_json(&format!("/v1/orders/{id}/payments"), &json!({}))
            .await
            .expect_status(201);
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            let status = server.get_order(&id).await["status"].clone();
            if status == "shipped" || status == "rejected" {
                break status;
            }
            assert!(Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let last = server.timeline(&id).await.last().unwrap()["detail"].clone();
        results.push((status, last));
    }
    assert_eq!(results[0].0, "shipped", "{results:?}");
    assert_eq!(results[1].0, "rejected", "{results:?}");
    assert!(
        results[1].1.as_str().unwrap().contains("velocity"),
        "{results:?}"
    );
    assert_eq!(results[2].0, "rejected", "{results:?}");
    assert!(
        results[2].1.as_str().unwrap().contains("amount_limit"),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_webhook_payment_gets_a_refund_request() {
    const SECRET: &str = "whsec_pipeline_0123456789";
    let server = TestServer::start_with_env(
        Backend::sqlite(),
        &[
            ("ORDO_PAYMENT_WEBHOOK_SECRET", SECRET),
            ("ORDO_RISK_BLOCKED_EMAILS", " SOMCHAI@example.com"),
        ],
    )
    .await;
    seed_catalog(&server).await;
    let order = server
        .post_order(&order_body("pipeline-webhook", &[(TEA, 1)]))
        .await
        .expect_status(201)
        .body;
    let id = order["id"].as_str().unwrap().to_owned();
    let payment = server
        .post_json(
            &format!("/v1/orders/{id}/payments"),
            &json!({"provider": "webhook"}),
        )
        .await
        .expect_status(201)
        .body;
    let body = serde_json::to_vec(&json!({
        "event_id": "evt_pipeline_1",
        "payment_id": payment["id"],
        "status": "succeeded",
        "amount": order["total"],
    }))
    .unwrap();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&body);
    let signature = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
    send(
        server
            .request(reqwest::Method::POST, "/v1/payments/callbacks/webhook")
            .header("content-type", "application/json")
            .header("ordo-signature", signature)
            .body(body),
    )
    .await
    .expect_status(200);
    wait_for_status(&server, &id, "rejected").await;
    assert_eq!(payment_status(&server, &id).await, "refund_requested");
    assert_eq!(server.reserved(TEA).await, 0);
    let events = server.timeline(&id).await;
    assert_eq!(
        types(&events)[3..],
        ["refund_requested", "stock_released", "order_rejected"],
        "{events:#?}"
    );
    // The email is personal data: neither the timeline nor the logs name it.
    let last = events.last().unwrap()["detail"].as_str().unwrap();
    assert!(last.contains("blocked_email"), "{last}");
    assert!(!format!("{events:?}").to_lowercase().contains("somchai@"));
    assert!(!server.output().to_lowercase().contains("somchai@"));
}

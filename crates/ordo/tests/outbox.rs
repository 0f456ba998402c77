//! The transactional outbox: every committed state change's event is published exactly once,
//! survives a crash between commit and publish, and continues the trace of the step that wrote
//! it.

use ordo_testkit::otlp;

use ordo_testkit::*;
use otlp::{OtlpReceiver, describe};
use std::time::Duration;

backend_tests!(
    every_committed_event_is_published_exactly_once,
    events_committed_before_a_crash_are_published_after_restart,
    an_operator_redrives_dead_events_and_the_relay_publishes_them,
);

async fn execute(server: &TestServer, statement: &'static str) -> u64 {
    sql_execute(server, statement).await
}

/// Waits until every outbox row is published; returns the final state. Events claimed by a
/// relay that was killed wait for its lease (10 s) to end, so the wait is longer than that.
async fn wait_until_published(server: &TestServer, expected_rows: i64) -> (i64, i64, i64) {
    let mut state = (0, 0, 0);
    for _ in 0..200 {
        state = outbox_state(server).await;
        if state.0 == expected_rows && state.1 == expected_rows {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "outbox not drained: (rows, published, max attempts) = {state:?}, expected {expected_rows} rows"
    );
}

async fn every_committed_event_is_published_exactly_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_single_sku(&server, "EVT-1", 100).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let reply = server
            .post_order(&order_body(&format!("evt-{i}"), &[("EVT-1", 1)]))
            .await
            .expect_status(201);
        ids.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    for id in &ids[..5] {
        server.cancel_order(id).await.expect_status(200);
    }
    // A refused order and a repeated cancel commit nothing, so they publish nothing.
    server
        .post_order(&order_body("evt-big", &[("EVT-1", 1000)]))
        .await
        .expect_status(409);
    server.cancel_order(&ids[0]).await.expect_status(200);

    let (rows, published, max_attempts) = wait_until_published(&server, 25).await;
    assert_eq!((rows, published), (25, 25));
    assert_eq!(max_attempts, 1, "each event was claimed and published once");
    // The relay measures the backlog right after it marks a round published: give that
    // measurement its moment, then it must read zero.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = server.admin_get("/metrics").await.text;
        if metrics.contains("outbox_backlog 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics.contains("outbox_backlog 0"), "{metrics}");
}

async fn events_committed_before_a_crash_are_published_after_restart(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    seed_single_sku(&server, "CRASH-1", 1000).await;
    for i in 0..5 {
        server
            .post_order(&order_body(&format!("before-{i}"), &[("CRASH-1", 1)]))
            .await
            .expect_status(201);
    }
    let burst: Vec<_> = (0..100)
        .map(|i| {
            server
                .request(reqwest::Method::POST, "/v1/orders")
                .json(&order_body(&format!("crash-{i}"), &[("CRASH-1", 1)]))
        })
        .collect();
    let in_flight: Vec<_> = burst.into_iter().map(|r| tokio::spawn(send(r))).collect();
    // Kill the process while the burst is in flight.
    tokio::time::sleep(Duration::from_millis(60)).await;
    server.kill9();
    let mut created = 0;
    for request in in_flight {
        // A request cut by the kill fails (its task panics): it was never answered 201.
        if let Ok(reply) = request.await
            && reply.status == 201
        {
            created += 1;
        }
    }

    // However fast the relay was, make the crash window certain: the last five events are
    // committed but, as far as the database knows, never published.
    let reset = execute(
        &server,
        "UPDATE outbox SET published_at_ms = NULL, claimed_until_ms = NULL
         WHERE seq IN (SELECT seq FROM outbox ORDER BY seq DESC LIMIT 5)",
    )
    .await;
    assert_eq!(reset, 5);

    server.restart().await;
    let committed = server.list_all_orders("").await.len() as i64;
    assert!(committed >= created, "an answered order was lost");
    let (_, published, _) = wait_until_published(&server, committed).await;
    assert_eq!(
        published, committed,
        "every committed order's event is published"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_publish_span_continues_the_trace_of_the_step_that_wrote_the_event() {
    let receiver = OtlpReceiver::grpc().await;
    let server = TestServer::start_exporting_to(&receiver, Backend::sqlite(), &[]).await;
    seed_single_sku(&server, "SPAN-1", 10).await;
    let reply = server
        .post_order(&order_body("span", &[("SPAN-1", 1)]))
        .await
        .expect_status(201);
    let trace_id = reply.body["trace_id"].as_str().unwrap().to_owned();
    let spans = receiver
        .trace(&trace_id, |spans| {
            spans.iter().any(|s| s.name == "publish order.created")
        })
        .await;
    let create = spans
        .iter()
        .find(|s| s.name == "create_order")
        .expect("create_order span");
    let publish = spans
        .iter()
        .find(|s| s.name == "publish order.created")
        .unwrap();
    assert_eq!(
        publish.parent_span_id,
        create.span_id,
        "{:#?}",
        describe(&spans)
    );
    assert_eq!(publish.kind, 4, "PRODUCER");
    assert_eq!(
        publish.attributes["messaging.destination.name"],
        "order.created"
    );
    assert_eq!(
        publish.attributes["order.id"],
        reply.body["id"].as_str().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paid_order_publishes_order_paid_in_the_same_transaction_as_the_status() {
    let server = TestServer::start(Backend::sqlite()).await;
    seed_single_sku(&server, "PAID-1", 10).await;
    let order = server
        .post_order(&order_body("paid", &[("PAID-1", 1)]))
        .await
        .expect_status(201);
    let id = order.body["id"].as_str().unwrap().to_owned();
    server
        .post_json(&format!("/v1/orders/{id}/payments"), &serde_json::json!({}))
        .await
        .expect_status(201);
    // The fulfillment pipeline takes the paid order on to `shipped` (sandbox carrier).
    for _ in 0..100 {
        if server.get_order(&id).await["status"] == "shipped" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.get_order(&id).await["status"], "shipped");
    // order.created, order.paid and the pipeline's order.risk_approved, order.split,
    // order.scheduled and order.shipped, all published.
    wait_until_published(&server, 6).await;
    let paid = sql_texts(
        &server,
        "SELECT payload FROM outbox WHERE topic = 'order.paid'",
    )
    .await;
    let payload: serde_json::Value = serde_json::from_str(&paid[0][0]).unwrap();
    assert_eq!(payload["order_id"], id.as_str());
    assert_eq!(payload["amount"], order.body["total"]);
}

/// `ordo outbox redrive`: dead events go back to the relay with a fresh count of attempts
/// (here only those of the topic named), and a running instance publishes them by itself; the
/// consumers that had seen them already change nothing.
async fn an_operator_redrives_dead_events_and_the_relay_publishes_them(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let order = server
        .create_order(&order_body("redrive", &[(TEA, 1)]))
        .await;
    server
        .create_order(&order_body("redrive-2", &[(TEA, 1)]))
        .await;
    wait_until_published(&server, 2).await;
    // As the relay leaves an event it gave up on: unpublished, dead, attempts spent.
    let killed = execute(
        &server,
        "UPDATE outbox SET published_at_ms = NULL, dead_at_ms = 1, attempts = 8",
    )
    .await;
    assert_eq!(killed, 2);
    let redrive = |topic: &'static str| {
        let url = server.database_url().to_owned();
        async move {
            tokio::process::Command::new(ordo_testkit::ordo_binary())
                .args(["outbox", "redrive", "--topic", topic])
                .env("ORDO_DATABASE_URL", url)
                .env("RUST_LOG", "warn")
                .output()
                .await
                .expect("run ordo outbox redrive")
        }
    };
    let output = redrive("order.created").await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "2 dead event(s) put back for the relay"
    );
    let (rows, published, attempts) = wait_until_published(&server, 2).await;
    assert_eq!((rows, published), (2, 2));
    assert!(attempts <= 1, "a fresh count of attempts: {attempts}");
    let dead = sql_i64s(
        &server,
        "SELECT COUNT(*) FROM outbox WHERE dead_at_ms IS NOT NULL",
    )
    .await;
    assert_eq!(dead[0][0], 0);
    // Nothing dead is left for another topic; the order is as it was.
    let output = redrive("order.paid").await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "0 dead event(s) put back for the relay"
    );
    assert_eq!(server.get_order(order["id"].as_str().unwrap()).await, order);
}

//! The saga under load and under faults, against the real binary.
//!
//! - A burst of paid orders: every order's spans (request, payment callback, every stage, the
//!   carrier call) form exactly one tree in the order's trace, and no exported span anywhere has
//!   a parent that was not exported (zero orphans).
//! - `kill -9` in the middle of a burst: after a restart on the same database every paid order
//!   ends terminal, no shipment is accepted twice by an idempotent carrier, and the reserved
//!   stock is exactly what the live orders hold.
//! - A `kill -9` loop under steady create-and-pay load: the same, across several crashes in a
//!   row, each one while the carrier is receiving pushes.

use ordo_testkit::otlp;

use ordo_testkit::*;
use otlp::{CapturedSpan, KIND_SERVER, OtlpReceiver, assert_one_tree, describe};
use serde_json::{Value, json};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

backend_tests!(kill_9_in_the_middle_of_a_burst_leaves_every_order_terminal_and_no_push_duplicated);
backend_tests!(a_kill_9_loop_under_pay_and_follow_load_loses_nothing_and_leaves_nothing_stuck);

const TERMINAL: [&str; 4] = ["shipped", "cancelled", "rejected", "fulfillment_failed"];

/// POSTs without panicking on a transport error (the server may be killed meanwhile).
async fn try_post(
    client: &reqwest::Client,
    url: String,
    body: Value,
) -> Result<Reply, reqwest::Error> {
    let response = client.post(url).json(&body).send().await?;
    Ok(Reply::read(response).await)
}

/// Runs `make(i)` for `i in 0..n`, at most `in_flight` at a time; results in index order.
async fn bounded<T, F, Fut>(n: usize, in_flight: usize, make: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut set = JoinSet::new();
    for i in 0..n {
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        let work = make(i);
        set.spawn(async move {
            let out = work.await;
            drop(permit);
            (i, out)
        });
    }
    let mut results: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, out) = joined.expect("a task of the burst panicked");
        results[i] = Some(out);
    }
    results.into_iter().map(Option::unwrap).collect()
}

/// Every order of the server, by id.
async fn all_orders(server: &TestServer) -> HashMap<String, Value> {
    server
        .list_all_orders("")
        .await
        .into_iter()
        .map(|o| (o["id"].as_str().unwrap().to_owned(), o))
        .collect()
}

/// Count of orders per status.
fn status_counts(orders: &HashMap<String, Value>) -> Vec<(String, usize)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for order in orders.values() {
        *counts
            .entry(order["status"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort();
    counts
}

// ---------------------------------------------------------------------------------------------
// 1. A burst of orders: one trace tree each, no orphan anywhere
// ---------------------------------------------------------------------------------------------

const BURST: usize = 500;

#[tokio::test(flavor = "multi_thread")]
async fn every_order_of_a_burst_is_one_trace_tree_with_no_orphans() {
    let started = Instant::now();
    let receiver = OtlpReceiver::grpc().await;
    let env = receiver.env();
    let mut server = TestServer::start_with_env(Backend::sqlite(), &env_refs(&env)).await;
    seed_single_sku(&server, "BURST-1", 10_000).await;

    // Create, then pay, each order; 16 requests in flight. Distinct customers keep the risk
    // velocity rule out of the way.
    let client = server.client().clone();
    let base = server.base_url();
    let orders: Vec<(String, String)> = bounded(BURST, 16, |i| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let created = try_post(
                &client,
                format!("{base}/v1/orders"),
                order_body(&format!("burst-{i}"), &[("BURST-1", 1)]),
            )
            .await
            .expect("create an order")
            .expect_status(201);
            let id = created.body["id"].as_str().unwrap().to_owned();
            let trace_id = created.body["trace_id"].as_str().unwrap().to_owned();
            assert_eq!(
                created.trace_id(),
                trace_id,
                "the response names the order's trace"
            );
            try_post(
                &client,
                format!("{base}/v1/orders/{id}/payments"),
                json!({}),
            )
            .await
            .expect("pay the order")
            .expect_status(201);
            (id, trace_id)
        }
    })
    .await;
    let burst_done = started.elapsed();

    // Every order terminal: `shipped` with the sandbox carrier.
    let deadline = Instant::now() + Duration::from_secs(90);
    let terminal = loop {
        let all = all_orders(&server).await;
        let shipped = all.values().filter(|o| o["status"] == "shipped").count();
        if shipped == BURST {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "not every order shipped after 90 s: {:?}",
            status_counts(&all)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(terminal.len(), BURST);
    let pipeline_done = started.elapsed();

    // Spans are flushed at shutdown.
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "ordo did not exit 0 after SIGTERM: {status:?}\n{}",
        server.output()
    );
    let spans = receiver.spans();

    // Zero orphans overall, and no span id exported twice.
    let mut by_trace: HashMap<&str, Vec<CapturedSpan>> = HashMap::new();
    for span in &spans {
        by_trace
            .entry(span.trace_id.as_str())
            .or_default()
            .push(span.clone());
    }
    let known: HashSet<(&str, &str)> = spans
        .iter()
        .map(|s| (s.trace_id.as_str(), s.span_id.as_str()))
        .collect();
    assert_eq!(known.len(), spans.len(), "a span was exported twice");
    let orphans: Vec<&CapturedSpan> = spans
        .iter()
        .filter(|s| {
            !s.parent_span_id.is_empty()
                && !known.contains(&(s.trace_id.as_str(), s.parent_span_id.as_str()))
        })
        .collect();

    // Each order's trace: one tree under its `POST /v1/orders` SERVER span, with every stage.
    let order_traces: HashSet<&str> = orders.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        order_traces.len(),
        BURST,
        "each order has a trace of its own"
    );
    let mut order_spans = 0;
    for (id, trace_id) in &orders {
        let trace = by_trace
            .get(trace_id.as_str())
            .unwrap_or_else(|| panic!("no span of order {id}'s trace {trace_id}"));
        order_spans += trace.len();
        let root = assert_one_tree(trace, "");
        assert_eq!(
            (root.name.as_str(), root.kind),
            ("POST /v1/orders", KIND_SERVER),
            "order {id}: {:#?}",
            describe(trace)
        );
        for name in [
            "create_order",
            "payment_callback",
            "process order.paid",
            "process order.risk_approved",
            "process order.split",
            "process order.scheduled",
            "sandbox_carrier",
            "publish order.shipped",
        ] {
            assert!(
                trace.iter().any(|s| s.name == name),
                "order {id}: no span {name} in its trace: {:#?}",
                describe(trace)
            );
        }
        let shipped_for = trace.iter().filter(|s| s.name == "sandbox_carrier").count();
        assert_eq!(shipped_for, 1, "order {id}: one shipment, one carrier call");
    }

    // The other traces (payment requests, job runs, ...) are small trees of their own.
    let mut other_names: HashMap<String, usize> = HashMap::new();
    let mut other_roots_extra = Vec::new();
    for (trace_id, trace) in &by_trace {
        if order_traces.contains(trace_id) {
            continue;
        }
        let ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
        let roots: Vec<&CapturedSpan> = trace
            .iter()
            .filter(|s| !ids.contains(s.parent_span_id.as_str()))
            .collect();
        for root in &roots {
            *other_names.entry(root.name.clone()).or_default() += 1;
        }
        if roots.len() != 1 {
            other_roots_extra.push((trace_id.to_string(), describe(trace)));
        }
    }
    let mut other_names: Vec<_> = other_names.into_iter().collect();
    other_names.sort();
    eprintln!(
        "burst: {BURST} orders created and paid in {burst_done:?}, all shipped at \
         {pipeline_done:?}; {} traces ({} of orders, {} others), {} spans ({order_spans} in \
         order traces), {} orphans; other traces by root: {other_names:?}",
        by_trace.len(),
        order_traces.len(),
        by_trace.len() - order_traces.len(),
        spans.len(),
        orphans.len(),
    );
    assert!(
        orphans.is_empty(),
        "{} orphan spans, e.g. {:#?}",
        orphans.len(),
        orphans.iter().take(10).collect::<Vec<_>>()
    );
    assert!(
        other_roots_extra.is_empty(),
        "traces with more than one root: {:#?}",
        other_roots_extra.iter().take(5).collect::<Vec<_>>()
    );
    // Each payment request is a small trace of its own (the payment itself joins the order's).
    let payment_requests = other_names
        .iter()
        .find(|(name, _)| name == "POST /v1/orders/{id}/payments")
        .map_or(0, |(_, n)| *n);
    assert_eq!(payment_requests, BURST, "{other_names:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. kill -9 in the middle of a burst
// ---------------------------------------------------------------------------------------------

/// An idempotent carrier: every push is recorded; the first push of an `Idempotency-Key` that
/// completes is an acceptance, a later push with the same key is answered 200 as well but
/// accepts nothing new. Each answer takes `delay`, so pushes are in flight when ordo dies.
#[derive(Default, Clone)]
struct CarrierLog {
    /// (shipment id, Idempotency-Key) of every push received.
    received: Vec<(String, Option<String>)>,
    /// Key → shipment id it was first accepted for.
    accepted: HashMap<String, String>,
    /// Pushes answered 200 for a key accepted before.
    replays: usize,
}

struct IdempotentCarrier {
    url: String,
    log: Arc<Mutex<CarrierLog>>,
}

impl IdempotentCarrier {
    /// A server that pushes its shipments here, retrying fast.
    async fn serve(&self, backend: Backend) -> TestServer {
        let env = [
            ("ORDO_CARRIER_WEBHOOK_URL", self.url.as_str()),
            (
                "ORDO_CARRIER_WEBHOOK_SECRET",
                "carrier_secret_for_tests_0123456789",
            ),
            ("ORDO_CARRIER_RETRY_BASE_MS", "5"),
        ];
        TestServer::start_with_env(backend, &env).await
    }

    async fn start(delay: Duration) -> IdempotentCarrier {
        let log: Arc<Mutex<CarrierLog>> = Arc::default();
        let shared = Arc::clone(&log);
        let app = axum::Router::new().route(
            "/shipments",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let log = Arc::clone(&shared);
                    async move {
                        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let shipment_id = parsed["shipment_id"].as_str().unwrap_or("").to_owned();
                        let key = headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        log.lock()
                            .unwrap()
                            .received
                            .push((shipment_id.clone(), key.clone()));
                        tokio::time::sleep(delay).await;
                        let Some(key) = key else {
                            return axum::http::StatusCode::BAD_REQUEST;
                        };
                        let mut log = log.lock().unwrap();
                        match log.accepted.entry(key) {
                            Entry::Occupied(_) => log.replays += 1,
                            Entry::Vacant(vacant) => {
                                vacant.insert(shipment_id);
                            }
                        }
                        axum::http::StatusCode::OK
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        IdempotentCarrier {
            url: format!("http://{addr}/shipments"),
            log,
        }
    }
}

/// The carrier's view of `orders` (all shipped, two shipments each): every shipment accepted
/// exactly once, every push under the shipment's own id as its `Idempotency-Key`, nothing
/// accepted that is not a shipment of these orders. Returns the number of shipments and how
/// many of them were pushed more than once (the at-least-once window of a crash between a push
/// and its commit).
async fn each_shipment_accepted_once(
    server: &TestServer,
    orders: &HashMap<String, Value>,
    carrier: &IdempotentCarrier,
) -> (usize, usize) {
    let log = carrier.log.lock().unwrap().clone();
    let mut accepted_per_shipment: HashMap<&str, usize> = HashMap::new();
    for (key, shipment) in &log.accepted {
        assert_eq!(key, shipment, "the Idempotency-Key is the shipment id");
        *accepted_per_shipment.entry(shipment.as_str()).or_default() += 1;
    }
    for (shipment, key) in &log.received {
        assert_eq!(key.as_deref(), Some(shipment.as_str()), "{shipment}");
    }
    let mut shipments = HashSet::new();
    for id in orders.keys() {
        // The list shows no shipments: read each order.
        let order = server.get_order(id).await;
        let list = order["shipments"].as_array().unwrap();
        assert_eq!(list.len(), 2, "{order:#}");
        for shipment in list {
            assert_eq!(shipment["status"], "accepted", "{order:#}");
            let id = shipment["id"].as_str().unwrap();
            assert_eq!(
                accepted_per_shipment.get(id),
                Some(&1),
                "shipment {id} accepted once"
            );
            shipments.insert(id.to_owned());
        }
    }
    assert_eq!(
        accepted_per_shipment.len(),
        shipments.len(),
        "the carrier accepted only shipments of these orders"
    );
    let mut pushes_per_shipment: HashMap<&str, usize> = HashMap::new();
    for (shipment, _) in &log.received {
        *pushes_per_shipment.entry(shipment.as_str()).or_default() += 1;
    }
    let pushed_twice = pushes_per_shipment.values().filter(|n| **n > 1).count();
    (shipments.len(), pushed_twice)
}

/// After a crash: orders still `pending_payment` whose payment was never answered are paid
/// again; those answered 201 must go on by themselves (the restarted process resumes their
/// sandbox approval). Returns (paid again, resumed).
async fn pay_the_unanswered(
    server: &TestServer,
    orders: &HashMap<String, Value>,
    answered_paid: &HashSet<String>,
) -> (usize, usize) {
    let (mut repaid, mut resumed) = (0, 0);
    for (id, order) in orders {
        if order["status"] != "pending_payment" {
            continue;
        }
        if answered_paid.contains(id) {
            resumed += 1;
            continue;
        }
        let reply = server
            .post_json(&format!("/v1/orders/{id}/payments"), &json!({}))
            .await;
        if reply.status == 409 {
            // Its payment request had committed but its answer died with the process: the
            // restart resumed that approval, which paid the order since the snapshot.
            assert_ne!(
                server.get_order(id).await["status"],
                "pending_payment",
                "409 for an order still unpaid: {}",
                reply.text
            );
            resumed += 1;
            continue;
        }
        assert_eq!(
            reply.status, 201,
            "paying again after the restart: {}",
            reply.text
        );
        repaid += 1;
    }
    (repaid, resumed)
}

/// Every order of the server once all are terminal; fails after `within` (a dead relay's
/// lease is 10 s, so events it held wait that long).
async fn wait_until_every_order_is_terminal(
    server: &TestServer,
    within: Duration,
) -> HashMap<String, Value> {
    let deadline = Instant::now() + within;
    loop {
        let all = all_orders(server).await;
        if all
            .values()
            .all(|o| TERMINAL.contains(&o["status"].as_str().unwrap_or("")))
        {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "orders stuck {within:?} after the restart: {:?}\n{}",
            status_counts(&all),
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const CRASH_ORDERS: usize = 60;

async fn kill_9_in_the_middle_of_a_burst_leaves_every_order_terminal_and_no_push_duplicated(
    backend: Backend,
) {
    let started = Instant::now();
    let carrier = IdempotentCarrier::start(Duration::from_millis(25)).await;
    let mut server = carrier.serve(backend).await;
    // Two warehouses: each order is one TEA (BKK-1) and one MUG (BER-1), two shipments.
    seed_catalog(&server).await;

    let client = server.client().clone();
    let base = server.base_url();
    let mut ids = Vec::new();
    for chunk in 0..CRASH_ORDERS / 10 {
        let created = bounded(10, 10, |i| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                try_post(
                    &client,
                    format!("{base}/v1/orders"),
                    order_body(&format!("crash-{chunk}-{i}"), &[(TEA, 1), (MUG, 1)]),
                )
                .await
                .expect("create an order")
                .expect_status(201)
                .body["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
        })
        .await;
        ids.extend(created);
    }

    // Pay them one every 40 ms (as shoppers would), and kill -9 once the carrier is busy:
    // then some orders are being pushed, some are in the middle stages, some payment requests
    // are in flight and the rest were never paid.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let payer = {
        let ids = ids.clone();
        tokio::spawn(async move {
            for id in ids {
                let (client, base, tx) = (client.clone(), base.clone(), tx.clone());
                tokio::spawn(async move {
                    let paid = try_post(
                        &client,
                        format!("{base}/v1/orders/{id}/payments"),
                        json!({}),
                    )
                    .await
                    .is_ok_and(|r| r.status == 201);
                    let _ = tx.send((id, paid));
                });
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while carrier.log.lock().unwrap().received.len() < 20 {
        assert!(
            Instant::now() < deadline,
            "the carrier saw no burst of pushes\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    let killed_at = started.elapsed();
    let received_before_kill = carrier.log.lock().unwrap().received.len();
    payer.await.unwrap();
    let mut answered_paid = HashSet::new();
    for _ in 0..ids.len() {
        let (id, paid) = rx.recv().await.unwrap();
        if paid {
            answered_paid.insert(id);
        }
    }
    server.restart().await;
    let before = all_orders(&server).await;
    eprintln!(
        "killed at {killed_at:?} after {received_before_kill} pushes; {} payments answered 201; \
         statuses after restart: {:?}",
        answered_paid.len(),
        status_counts(&before)
    );

    let (repaid, resumed) = pay_the_unanswered(&server, &before, &answered_paid).await;
    let after = wait_until_every_order_is_terminal(&server, Duration::from_secs(60)).await;
    let settled_at = started.elapsed();
    assert_eq!(after.len(), CRASH_ORDERS, "no order lost or added");
    assert_eq!(
        status_counts(&after),
        [("shipped".to_owned(), CRASH_ORDERS)],
        "every paid order ships"
    );

    let (shipments, pushed_twice) = each_shipment_accepted_once(&server, &after, &carrier).await;
    let log = carrier.log.lock().unwrap().clone();

    // A shipped order keeps its reservations (the stock leaves with the carrier): reserved is
    // exactly the shipped units.
    assert_eq!(server.reserved(TEA).await, CRASH_ORDERS as i64);
    assert_eq!(server.reserved(MUG).await, CRASH_ORDERS as i64);

    eprintln!(
        "crash: {CRASH_ORDERS} orders, {repaid} paid again after the restart, {resumed} paid \
         before the kill and resumed by the restart, all shipped at \
         {settled_at:?}; {} shipments, {} pushes received ({} shipments pushed more than once, \
         {} replays answered by key), {} accepted",
        shipments,
        log.received.len(),
        pushed_twice,
        log.replays,
        log.accepted.len(),
    );
}

/// The saga watchdog: an order whose stage event was lost outside the outbox's guarantees
/// (here: marked paid by hand, with no event) sits in `paid` until the watchdog finds it with
/// nothing on its way, sends `order.paid` again, and the pipeline takes it to `shipped`; the
/// timeline says so, once.
#[tokio::test(flavor = "multi_thread")]
async fn the_watchdog_redrives_an_order_whose_stage_event_was_lost() {
    let server = TestServer::start_with_env(
        Backend::sqlite(),
        &[
            ("ORDO_SAGA_STUCK_AFTER_SECS", "1"),
            // The housekeeping job runs every quarter of the payment timeout.
            ("ORDO_PAYMENT_TIMEOUT_SECS", "4"),
        ],
    )
    .await;
    seed_catalog(&server).await;
    let order = server
        .create_order(&order_body("lost-event", &[(TEA, 1)]))
        .await;
    let id = order["id"].as_str().unwrap();
    let changed = sql_execute(
        &server,
        &format!("UPDATE orders SET status = 'paid', updated_at_ms = 0 WHERE id = '{id}'"),
    )
    .await;
    assert_eq!(changed, 1);
    server
        .wait_for_order_status(id, "shipped", Duration::from_secs(20))
        .await;
    let timeline = server.timeline(id).await;
    let kinds: Vec<&str> = timeline
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "saga_redriven").count(),
        1,
        "{kinds:?}"
    );
    let redriven = kinds.iter().position(|k| *k == "saga_redriven").unwrap();
    assert_eq!(kinds[redriven + 1], "risk_approved", "{kinds:?}");
    let metrics = server.admin_get("/metrics").await.expect_status(200).text;
    assert!(
        metrics.lines().any(|l| l == "saga_redriven_orders_total 1"),
        "{metrics}"
    );
}

/// The watchdog and a shipment left `pushing` (its process died between the push and the
/// commit, and the event that would push it again is gone): the order sits in `scheduled`
/// until the watchdog sends `order.scheduled` again; the shipment is pushed once more with its
/// own Idempotency-Key, so the carrier sees a replay, not a second shipment.
#[tokio::test(flavor = "multi_thread")]
async fn the_watchdog_redrives_an_order_whose_shipment_sits_in_pushing() {
    let carrier = ordo_testkit::carrier::Carrier::start(|_, _| 200).await;
    let env = carrier.env(&[
        ("ORDO_SAGA_STUCK_AFTER_SECS", "1"),
        // The housekeeping job runs every quarter of the payment timeout.
        ("ORDO_PAYMENT_TIMEOUT_SECS", "4"),
    ]);
    let server = TestServer::start_with_env(Backend::sqlite(), &env_refs(&env)).await;
    seed_catalog(&server).await;
    let order = server
        .create_order(&order_body("stuck-push", &[(TEA, 1)]))
        .await;
    let id = order["id"].as_str().unwrap();
    server
        .post_json(&format!("/v1/orders/{id}/payments"), &json!({}))
        .await
        .expect_status(201);
    let shipped = server
        .wait_for_order_status(id, "shipped", Duration::from_secs(20))
        .await;
    let shipment = shipped["shipments"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(carrier.pushes().len(), 1);

    // Back to the state a crash after the push and before its commit leaves, with no event.
    assert_eq!(
        sql_execute(
            &server,
            &format!("UPDATE shipments SET status = 'pushing' WHERE id = '{shipment}'"),
        )
        .await,
        1
    );
    assert_eq!(
        sql_execute(
            &server,
            &format!("UPDATE orders SET status = 'scheduled', updated_at_ms = 0 WHERE id = '{id}'"),
        )
        .await,
        1
    );
    // (The order's read is cached for up to a second and the change above went around ordo:
    // the carrier is what tells that the push happened again.)
    let deadline = Instant::now() + Duration::from_secs(20);
    while carrier.pushes().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the shipment was never pushed again\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The timeline is read uncached: after the re-drive, the shipment accepted and the order
    // shipped once more.
    let deadline = Instant::now() + Duration::from_secs(20);
    let kinds = loop {
        let kinds: Vec<String> = server
            .timeline(id)
            .await
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        let redriven = kinds.iter().position(|k| k == "saga_redriven");
        if redriven.is_some_and(|at| kinds[at..].iter().any(|k| k == "shipped")) {
            break kinds;
        }
        assert!(Instant::now() < deadline, "not shipped again: {kinds:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let redriven = kinds.iter().position(|k| k == "saga_redriven").unwrap();
    assert!(
        kinds[redriven..].contains(&"shipment_accepted".to_owned()),
        "{kinds:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pushes = carrier.pushes();
    assert_eq!(pushes.len(), 2, "pushed once more, and only once");
    for push in &pushes {
        assert_eq!(push.shipment_id, shipment);
        assert_eq!(push.idempotency_key.as_deref(), Some(shipment.as_str()));
    }
    assert_eq!(
        kinds.iter().filter(|k| *k == "saga_redriven").count(),
        1,
        "{kinds:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A kill -9 loop under load
// ---------------------------------------------------------------------------------------------

const KILLS: usize = 4;
const LOAD_WORKERS: usize = 8;

/// What the shoppers saw: orders answered 201, and payments answered 201.
#[derive(Default)]
struct Shoppers {
    created: Mutex<Vec<String>>,
    paid: Mutex<HashSet<String>>,
}

/// One shopper: creates an order, pays it, again and again, against whatever process is
/// serving now (`base` changes with each restart); a refused or cut connection is shrugged
/// off and the loop goes on, as a client with retries would.
async fn shop(
    client: reqwest::Client,
    base: Arc<std::sync::RwLock<String>>,
    seen: Arc<Shoppers>,
    worker: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let url = base.read().unwrap().clone();
        let created = try_post(
            &client,
            format!("{url}/v1/orders"),
            order_body(&format!("loop-{worker}-{n}"), &[(TEA, 1), (MUG, 1)]),
        )
        .await;
        let id = match created {
            Ok(reply) if reply.status == 201 => reply.body["id"].as_str().unwrap().to_owned(),
            // Shed under load (503 `unavailable`, Retry-After): the shopper comes back.
            Ok(reply) if reply.status == 503 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Ok(reply) => panic!("creating an order under the kill loop: {}", reply.text),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        seen.created.lock().unwrap().push(id.clone());
        let paid = try_post(&client, format!("{url}/v1/orders/{id}/payments"), json!({})).await;
        match paid {
            Ok(reply) if reply.status == 201 => {
                seen.paid.lock().unwrap().insert(id.clone());
            }
            // Not paid (or not known to be): paid after the loop, see `pay_the_unanswered`.
            Ok(reply) if reply.status == 503 => continue,
            Ok(reply) => panic!("paying an order under the kill loop: {}", reply.text),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        // Follow the order for a while, as a shop page would: this keeps the number of orders
        // on their way bounded by the shoppers, not by how fast the API takes payments.
        let follow_until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < follow_until {
            let Ok(response) = client.get(format!("{url}/v1/orders/{id}")).send().await else {
                break;
            };
            let order = Reply::read(response).await;
            if TERMINAL.contains(&order.body["status"].as_str().unwrap_or("")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn a_kill_9_loop_under_pay_and_follow_load_loses_nothing_and_leaves_nothing_stuck(
    backend: Backend,
) {
    let started = Instant::now();
    let carrier = IdempotentCarrier::start(Duration::from_millis(10)).await;
    let mut server = carrier.serve(backend).await;
    seed_catalog(&server).await;
    put_stock(&server, TEA, BKK, 1_000_000).await;
    put_stock(&server, MUG, BER, 1_000_000).await;

    let base = Arc::new(std::sync::RwLock::new(server.base_url()));
    let seen = Arc::new(Shoppers::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shoppers: Vec<_> = (0..LOAD_WORKERS)
        .map(|worker| {
            tokio::spawn(shop(
                server.client().clone(),
                Arc::clone(&base),
                Arc::clone(&seen),
                worker,
                Arc::clone(&stop),
            ))
        })
        .collect();

    // Each round: wait until the carrier has taken a few more pushes from this process (so the
    // kill lands while shipments are on their way), then kill -9 and start again.
    let mut pushes_at_kill = Vec::new();
    for _ in 0..KILLS {
        let target = carrier.log.lock().unwrap().received.len() + 40;
        let deadline = Instant::now() + Duration::from_secs(30);
        while carrier.log.lock().unwrap().received.len() < target {
            assert!(
                Instant::now() < deadline,
                "the carrier saw no pushes for 30 s\n{}",
                server.output()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill9();
        pushes_at_kill.push(carrier.log.lock().unwrap().received.len());
        server.restart().await;
        *base.write().unwrap() = server.base_url();
    }
    // A last stretch of load on the survivor, then the shoppers go home.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for shopper in shoppers {
        shopper.await.expect("a shopper panicked");
    }
    let load_ended_at = started.elapsed();

    let before = all_orders(&server).await;
    let created = seen.created.lock().unwrap().clone();
    let answered_paid = seen.paid.lock().unwrap().clone();
    for id in &created {
        assert!(
            before.contains_key(id),
            "order {id} was answered 201 and is gone"
        );
    }
    eprintln!(
        "kill loop: {KILLS} kills (carrier pushes at each: {pushes_at_kill:?}); {} orders \
         answered 201, {} in the database, {} payments answered 201; statuses after the last \
         restart: {:?}",
        created.len(),
        before.len(),
        answered_paid.len(),
        status_counts(&before)
    );
    let (repaid, resumed) = pay_the_unanswered(&server, &before, &answered_paid).await;
    let after = wait_until_every_order_is_terminal(&server, Duration::from_secs(60)).await;
    let settled_at = started.elapsed();
    assert_eq!(after.len(), before.len(), "no order lost or added");
    assert_eq!(
        status_counts(&after),
        [("shipped".to_owned(), after.len())],
        "every paid order ships"
    );
    let (shipments, pushed_twice) = each_shipment_accepted_once(&server, &after, &carrier).await;
    // The at-least-once window: only the pushes on their way at a kill may go out again (each
    // shopper has about one order on its way, two shipments), never a replay of everything.
    assert!(
        pushed_twice <= KILLS * LOAD_WORKERS * 2,
        "{pushed_twice} shipments pushed more than once across {KILLS} kills"
    );
    assert_eq!(server.reserved(TEA).await, after.len() as i64);
    assert_eq!(server.reserved(MUG).await, after.len() as i64);

    let log = carrier.log.lock().unwrap().clone();
    eprintln!(
        "kill loop: {} orders all shipped ({repaid} paid again, {resumed} resumed); load ended \
         at {load_ended_at:?}, settled at {settled_at:?}; {shipments} shipments, {} pushes \
         received, {pushed_twice} shipments pushed more than once ({} replays answered by \
         key), each accepted once",
        after.len(),
        log.received.len(),
        log.replays,
    );
}

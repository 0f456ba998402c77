//! Payments end to end against the real binary: the sandbox provider pays on its own through a
//! signed callback; the webhook provider's callbacks are authenticated, idempotent and checked
//! against the amount; the payment timeout cancels unpaid orders and releases their stock, in
//! each order's own trace.
//!
//! The tests sign callbacks themselves, from the contract (`t=<unix seconds>,v1=<hex
//! HMAC-SHA256(secret, "<t>.<raw body>")>`), not with ordo's code.

use ordo_testkit::otlp;

use hmac::{Hmac, Mac};
use ordo_testkit::*;
use otlp::{OtlpReceiver, assert_one_tree, describe};
use serde_json::{Value, json};
use std::time::Duration;

backend_tests!(
    the_sandbox_pays_an_order_on_its_own,
    webhook_callbacks_are_authenticated_and_idempotent,
    a_mismatched_or_failed_payment_leaves_the_order_unpaid,
    payments_need_an_unpaid_order_and_an_enabled_provider,
    the_payment_timeout_cancels_unpaid_orders_and_releases_their_stock,
    a_payment_arriving_after_the_order_was_cancelled_is_refunded,
);

async fn a_payment_arriving_after_the_order_was_cancelled_is_refunded(backend: Backend) {
    let server = TestServer::start_with_env(backend, &webhook_env()).await;
    seed_single_sku(&server, "LATE-1", 10).await;
    let order = new_order(&server, "late-payer", "LATE-1", 1).await;
    let order_id = id_of(&order);
    let payment = create_payment(&server, &order_id, Some(&json!({"provider": "webhook"})))
        .await
        .expect_status(201)
        .body;
    server.cancel_order(&order_id).await.expect_status(200);

    let body = callback_body("evt-late-1", &payment, "succeeded", order["total"].clone());
    let reply = webhook_callback(&server, &body).await.expect_status(200);
    assert_eq!(reply.body["outcome"], "order_not_payable", "{}", reply.text);
    assert_eq!(server.get_order(&order_id).await["status"], "cancelled");

    let payments = server
        .get(&format!("/v1/orders/{order_id}/payments"))
        .await
        .expect_status(200);
    assert_eq!(
        payments.body["payments"][0]["status"], "refund_requested",
        "the webhook provider is asked for the money back: {}",
        payments.text
    );
    let events = server.timeline(&order_id).await;
    let kinds = types(&events);
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["payment_not_applied", "refund_requested"],
        "{events:#?}"
    );
    // A replay of the same callback refunds nothing more.
    webhook_callback(&server, &body).await.expect_status(200);
    assert_eq!(server.timeline(&order_id).await.len(), events.len());
}

const WEBHOOK_SECRET: &str = "whsec_test_payments_0123456789";

fn webhook_env() -> [(&'static str, &'static str); 1] {
    [("ORDO_PAYMENT_WEBHOOK_SECRET", WEBHOOK_SECRET)]
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The `Ordo-Signature` value of the contract.
fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs `body` as a callback of `provider` with the given signature header (or none).
async fn callback_raw(
    server: &TestServer,
    provider: &str,
    signature: Option<&str>,
    body: &[u8],
) -> Reply {
    let mut request = server
        .request(
            reqwest::Method::POST,
            &format!("/v1/payments/callbacks/{provider}"),
        )
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("Ordo-Signature", signature);
    }
    send(request).await
}

/// A webhook callback signed now with the right secret.
async fn webhook_callback(server: &TestServer, body: &Value) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap();
    let signature = sign(WEBHOOK_SECRET, unix_now(), &bytes);
    callback_raw(server, "webhook", Some(&signature), &bytes).await
}

fn callback_body(event_id: &str, payment: &Value, status: &str, amount: Value) -> Value {
    json!({
        "event_id": event_id,
        "payment_id": payment["id"],
        "status": status,
        "amount": amount,
    })
}

async fn create_payment(server: &TestServer, order_id: &str, body: Option<&Value>) -> Reply {
    let path = format!("/v1/orders/{order_id}/payments");
    match body {
        Some(body) => server.post_json(&path, body).await,
        None => server.post_raw(&path, None, Vec::new()).await,
    }
}

async fn new_order(server: &TestServer, customer: &str, sku: &str, quantity: i64) -> Value {
    server
        .create_order(&order_body(customer, &[(sku, quantity)]))
        .await
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// Polls the order until its status is `status` (10 s at most).
async fn wait_for_status(server: &TestServer, order_id: &str, status: &str) -> Value {
    // A paid order goes on through the fulfillment pipeline (risk, split, schedule, the sandbox
    // carrier) to `shipped`: "paid" is waited for as the pipeline's end, where it rests.
    let status = if status == "paid" { "shipped" } else { status };
    server
        .wait_for_order_status(order_id, status, Duration::from_secs(10))
        .await
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect()
}

async fn the_sandbox_pays_an_order_on_its_own(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let order = new_order(&server, "sandbox-customer", TEA, 2).await;
    let order_id = id_of(&order);

    let created = create_payment(&server, &order_id, None)
        .await
        .expect_status(201);
    let payment = created.body.clone();
    let payment_id = id_of(&payment);
    assert!(
        payment_id.starts_with("pay_") && is_lower_hex(&payment_id[4..], 32),
        "{payment}"
    );
    assert_eq!(payment["order_id"], order_id.as_str());
    assert_eq!(payment["provider"], "sandbox");
    assert_eq!(payment["amount"], order["total"]);
    assert_eq!(payment["amount"], money(2 * TEA_PRICE, "USD"));

    let paid = wait_for_status(&server, &order_id, "paid").await;
    assert_eq!(paid["total"], order["total"]);

    let events = server.timeline(&order_id).await;
    assert_eq!(
        types(&events)[..3],
        ["order_created", "payment_requested", "payment_succeeded"],
        "{events:#?}"
    );
    for event in &events {
        assert_hex_id(&event["trace_id"], 32, "timeline trace_id");
        assert_hex_id(&event["span_id"], 16, "timeline span_id");
        assert_rfc3339(&event["at"], "timeline at");
    }
    // Every step acting on the order joins the order's one trace, whatever trace the payment
    // request came in.
    for event in &events[1..3] {
        assert_eq!(event["trace_id"], order["trace_id"], "{events:#?}");
    }

    let listed = server
        .get(&format!("/v1/orders/{order_id}/payments"))
        .await
        .expect_status(200);
    let payments = listed.body["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 1, "{}", listed.text);
    assert_eq!(payments[0]["id"], payment_id.as_str());
    assert_eq!(payments[0]["status"], "succeeded");

    // Paid: no second payment.
    let again = create_payment(&server, &order_id, None).await;
    assert_error(&again, 409, "conflict");
    // The reservation stays with the paid order.
    assert_eq!(server.reserved(TEA).await, 2);
}

async fn webhook_callbacks_are_authenticated_and_idempotent(backend: Backend) {
    let server = TestServer::start_with_env(backend, &webhook_env()).await;
    seed_catalog(&server).await;
    let order = new_order(&server, "webhook-customer", MUG, 1).await;
    let order_id = id_of(&order);

    // With the webhook enabled, routing prefers it.
    let payment = create_payment(&server, &order_id, Some(&json!({})))
        .await
        .expect_status(201)
        .body;
    assert_eq!(payment["provider"], "webhook");
    assert_eq!(payment["status"], "pending");
    // A second request gets the same pending intent back.
    let again = create_payment(&server, &order_id, None)
        .await
        .expect_status(201);
    assert_eq!(again.body["id"], payment["id"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // ... but not under another provider.
    let other = create_payment(&server, &order_id, Some(&json!({"provider": "sandbox"}))).await;
    assert_error(&other, 409, "conflict");

    let body = callback_body("evt_paid_1", &payment, "succeeded", order["total"].clone());
    let bytes = serde_json::to_vec(&body).unwrap();

    // Refusals change nothing.
    let wrong_secret = sign("not the secret", unix_now(), &bytes);
    let refused = callback_raw(&server, "webhook", Some(&wrong_secret), &bytes).await;
    let error = assert_error(&refused, 401, "unauthenticated");
    assert!(
        !error["message"].as_str().unwrap().contains(WEBHOOK_SECRET),
        "{error}"
    );
    let stale = sign(WEBHOOK_SECRET, unix_now() - 301, &bytes);
    assert_error(
        &callback_raw(&server, "webhook", Some(&stale), &bytes).await,
        401,
        "unauthenticated",
    );
    let future = sign(WEBHOOK_SECRET, unix_now() + 301, &bytes);
    assert_error(
        &callback_raw(&server, "webhook", Some(&future), &bytes).await,
        401,
        "unauthenticated",
    );
    assert_error(
        &callback_raw(&server, "webhook", None, &bytes).await,
        401,
        "unauthenticated",
    );
    assert_error(
        &callback_raw(&server, "webhook", Some("t=1,v1=zz"), &bytes).await,
        401,
        "unauthenticated",
    );
    // Signed for another body.
    let tampered = serde_json::to_vec(&callback_body(
        "evt_paid_1",
        &payment,
        "succeeded",
        money(1, "USD"),
    ))
    .unwrap();
    let signature = sign(WEBHOOK_SECRET, unix_now(), &bytes);
    assert_error(
        &callback_raw(&server, "webhook", Some(&signature), &tampered).await,
        401,
        "unauthenticated",
    );
    // Unknown providers do not exist, whatever the signature.
    assert_error(
        &callback_raw(&server, "paypal", Some(&signature), &bytes).await,
        404,
        "not_found",
    );
    // The sandbox does not take the webhook's signature.
    assert_error(
        &callback_raw(&server, "sandbox", Some(&signature), &bytes).await,
        401,
        "unauthenticated",
    );
    assert_eq!(
        server.get_order(&order_id).await["status"],
        "pending_payment"
    );
    assert_eq!(types(&server.timeline(&order_id).await).len(), 2);

    // Signed but malformed bodies are 400s.
    for bad in [
        b"{not json".to_vec(),
        serde_json::to_vec(&json!({"event_id": "e", "payment_id": payment["id"],
            "status": "succeeded", "amount": order["total"], "extra": 1}))
        .unwrap(),
        serde_json::to_vec(&callback_body(
            "e",
            &payment,
            "refunded",
            order["total"].clone(),
        ))
        .unwrap(),
        serde_json::to_vec(&callback_body(
            "",
            &payment,
            "succeeded",
            order["total"].clone(),
        ))
        .unwrap(),
        serde_json::to_vec(&callback_body(
            "e",
            &json!({"id": "pay_nope"}),
            "succeeded",
            order["total"].clone(),
        ))
        .unwrap(),
        serde_json::to_vec(&callback_body("e", &payment, "succeeded", money(-1, "USD"))).unwrap(),
    ] {
        let signature = sign(WEBHOOK_SECRET, unix_now(), &bad);
        let reply = callback_raw(&server, "webhook", Some(&signature), &bad).await;
        assert_error(&reply, 400, "invalid_argument");
    }
    // A well-formed id of no payment.
    let unknown = callback_body(
        "evt_unknown",
        &json!({"id": format!("pay_{}", "0".repeat(32))}),
        "succeeded",
        order["total"].clone(),
    );
    assert_error(&webhook_callback(&server, &unknown).await, 404, "not_found");

    // The real one pays the order.
    let reply = webhook_callback(&server, &body).await.expect_status(200);
    assert_eq!(
        reply.body,
        json!({"event_id": "evt_paid_1", "outcome": "succeeded"})
    );
    wait_for_status(&server, &order_id, "paid").await;
    let events = server.timeline(&order_id).await;
    assert_eq!(
        types(&events)[..3],
        ["order_created", "payment_requested", "payment_succeeded"]
    );

    // Replays, freshly signed or byte for byte, answer the first outcome and change nothing.
    let replay = webhook_callback(&server, &body).await.expect_status(200);
    assert_eq!(replay.body, reply.body);
    let signature = sign(WEBHOOK_SECRET, unix_now(), &bytes);
    let replay = callback_raw(&server, "webhook", Some(&signature), &bytes)
        .await
        .expect_status(200);
    assert_eq!(replay.body, reply.body);
    assert_eq!(server.timeline(&order_id).await, events);
    let payments = server
        .get(&format!("/v1/orders/{order_id}/payments"))
        .await
        .expect_status(200)
        .body;
    assert_eq!(payments["payments"].as_array().unwrap().len(), 1);
    assert_eq!(payments["payments"][0]["status"], "succeeded");

    // Another event id for the settled payment is recorded and changes nothing.
    let late = callback_body("evt_late", &payment, "failed", order["total"].clone());
    let reply = webhook_callback(&server, &late).await.expect_status(200);
    assert_eq!(reply.body["outcome"], "payment_not_pending");
    assert_eq!(server.get_order(&order_id).await["status"], "shipped");
    assert_eq!(server.timeline(&order_id).await, events);
}

async fn a_mismatched_or_failed_payment_leaves_the_order_unpaid(backend: Backend) {
    let server = TestServer::start_with_env(backend, &webhook_env()).await;
    seed_catalog(&server).await;
    let order = new_order(&server, "mismatch-customer", TEA, 1).await;
    let order_id = id_of(&order);
    let payment = create_payment(&server, &order_id, Some(&json!({"provider": "webhook"})))
        .await
        .expect_status(201)
        .body;

    for (event_id, amount) in [
        ("evt_short", money(TEA_PRICE - 1, "USD")),
        ("evt_currency", money(TEA_PRICE, "EUR")),
    ] {
        let body = callback_body(event_id, &payment, "succeeded", amount);
        let reply = webhook_callback(&server, &body).await.expect_status(200);
        assert_eq!(reply.body["outcome"], "amount_mismatch", "{event_id}");
    }
    assert_eq!(
        server.get_order(&order_id).await["status"],
        "pending_payment"
    );
    let events = server.timeline(&order_id).await;
    assert_eq!(
        types(&events),
        [
            "order_created",
            "payment_requested",
            "payment_mismatch",
            "payment_mismatch"
        ]
    );

    let failed = callback_body("evt_failed", &payment, "failed", order["total"].clone());
    let reply = webhook_callback(&server, &failed).await.expect_status(200);
    assert_eq!(reply.body["outcome"], "failed");
    assert_eq!(
        server.get_order(&order_id).await["status"],
        "pending_payment"
    );
    assert_eq!(
        types(&server.timeline(&order_id).await).last(),
        Some(&"payment_failed")
    );
    assert_eq!(server.reserved(TEA).await, 1, "stock stays reserved");

    // The order may try again: a new intent, which can succeed.
    let retry = create_payment(&server, &order_id, None)
        .await
        .expect_status(201)
        .body;
    assert_ne!(retry["id"], payment["id"]);
    assert_eq!(retry["status"], "pending");
    let ok = callback_body("evt_retry_ok", &retry, "succeeded", order["total"].clone());
    let reply = webhook_callback(&server, &ok).await.expect_status(200);
    assert_eq!(reply.body["outcome"], "succeeded");
    wait_for_status(&server, &order_id, "paid").await;
    let payments = server
        .get(&format!("/v1/orders/{order_id}/payments"))
        .await
        .expect_status(200)
        .body;
    let statuses = field_of_each(&payments["payments"], "status");
    assert_eq!(statuses, ["failed", "succeeded"]);
}

async fn payments_need_an_unpaid_order_and_an_enabled_provider(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;

    let cancelled = new_order(&server, "cancelled-customer", TEA, 1).await;
    let cancelled_id = id_of(&cancelled);
    server.cancel_order(&cancelled_id).await.expect_status(200);
    assert_error(
        &create_payment(&server, &cancelled_id, None).await,
        409,
        "conflict",
    );

    let missing = format!("ord_{}", "0".repeat(32));
    assert_error(
        &create_payment(&server, &missing, None).await,
        404,
        "not_found",
    );
    assert_error(
        &server.get(&format!("/v1/orders/{missing}/payments")).await,
        404,
        "not_found",
    );

    let order = new_order(&server, "provider-customer", TEA, 1).await;
    let order_id = id_of(&order);
    // No such provider is a bad request; a provider this deployment has not enabled is not
    // found, as its callbacks are.
    for (provider, status, code) in [
        ("webhook", 404, "not_found"),
        ("bitcoin", 400, "invalid_argument"),
        ("", 400, "invalid_argument"),
    ] {
        let reply = create_payment(&server, &order_id, Some(&json!({"provider": provider}))).await;
        let error = assert_error(&reply, status, code);
        assert_eq!(error["details"][0]["field"], "provider", "{provider:?}");
    }
    let path = format!("/v1/orders/{order_id}/payments");
    assert_error(
        &server
            .post_json(&path, &json!({"provider": "sandbox", "x": 1}))
            .await,
        400,
        "invalid_argument",
    );
    assert_error(
        &server
            .post_raw(&path, Some("application/json"), b"{".to_vec())
            .await,
        400,
        "invalid_argument",
    );
    assert_error(
        &server
            .post_raw(
                &path,
                Some("text/plain"),
                b"{\"provider\":\"sandbox\"}".to_vec(),
            )
            .await,
        415,
        "unsupported_media_type",
    );
    assert_eq!(
        server
            .get(&format!("/v1/orders/{order_id}/payments"))
            .await
            .expect_status(200)
            .body,
        json!({"payments": []})
    );

    // Without a secret the webhook provider does not exist.
    let body = b"{}".to_vec();
    let signature = sign(WEBHOOK_SECRET, unix_now(), &body);
    assert_error(
        &callback_raw(&server, "webhook", Some(&signature), &body).await,
        404,
        "not_found",
    );
    assert_error(
        &callback_raw(&server, "no-such-provider", Some(&signature), &body).await,
        404,
        "not_found",
    );
    assert_eq!(
        server.get_order(&order_id).await["status"],
        "pending_payment"
    );
}

async fn the_payment_timeout_cancels_unpaid_orders_and_releases_their_stock(backend: Backend) {
    // Two seconds: long enough for the paid order to be paid first on a loaded machine.
    let server = TestServer::start_with_env(backend, &[("ORDO_PAYMENT_TIMEOUT_SECS", "2")]).await;
    seed_single_sku(&server, "UNPAID-1", 10).await;
    put_product(&server, "PAID-1", 700, "USD").await;
    put_stock(&server, "PAID-1", "WH-1", 10).await;

    let paid = new_order(&server, "timeout-paid", "PAID-1", 3).await;
    let paid_id = id_of(&paid);
    create_payment(&server, &paid_id, None)
        .await
        .expect_status(201);
    wait_for_status(&server, &paid_id, "paid").await;

    let unpaid = new_order(&server, "timeout-unpaid", "UNPAID-1", 4).await;
    let unpaid_id = id_of(&unpaid);
    assert_eq!(server.reserved("UNPAID-1").await, 4);

    let cancelled = wait_for_status(&server, &unpaid_id, "cancelled").await;
    assert_eq!(cancelled["id"], unpaid_id.as_str());
    assert_eq!(server.reserved("UNPAID-1").await, 0);
    let stock = server.stock("UNPAID-1").await;
    assert_eq!(stock["available"], 10);
    let events = server.timeline(&unpaid_id).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "order_cancelled");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("payment timed out"),
        "{last}"
    );
    assert_hex_id(&last["trace_id"], 32, "trace_id");
    // The cancel joined the order's trace.
    assert_eq!(last["trace_id"], unpaid["trace_id"]);

    // Past the timeout the paid order is untouched, its stock still reserved.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.get_order(&paid_id).await["status"], "shipped");
    assert_eq!(server.reserved("PAID-1").await, 3);
    // A late payment for the cancelled order is refused.
    assert_error(
        &create_payment(&server, &unpaid_id, None).await,
        409,
        "conflict",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timeout_cancel_is_a_span_in_the_orders_trace_linked_to_the_job_run() {
    let receiver = OtlpReceiver::grpc().await;
    let timeout = [("ORDO_PAYMENT_TIMEOUT_SECS", "1")];
    let server = TestServer::start_exporting_to(&receiver, Backend::sqlite(), &timeout).await;
    seed_single_sku(&server, "TIMED-1", 10).await;

    let order = new_order(&server, "traced-timeout", "TIMED-1", 2).await;
    let order_id = id_of(&order);
    let trace_id = order["trace_id"].as_str().unwrap().to_owned();
    let created_span = server.timeline(&order_id).await[0]["span_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for_status(&server, &order_id, "cancelled").await;

    let spans = receiver
        .trace(&trace_id, |spans| {
            spans.iter().any(|s| s.name == "payment_timeout")
                && spans.iter().any(|s| s.name == "COMMIT")
        })
        .await;
    let timeout = spans
        .iter()
        .find(|s| s.name == "payment_timeout")
        .expect("a payment_timeout span");
    assert_eq!(timeout.trace_id, trace_id);
    assert_eq!(timeout.attributes["order.id"], order_id.as_str());
    assert_eq!(
        timeout.parent_span_id,
        created_span,
        "a child of the step that created the order: {:#?}",
        describe(&spans)
    );
    // Its statements are below it, in the same trace.
    assert!(
        spans
            .iter()
            .any(|s| s.parent_span_id == timeout.span_id && s.name == "UPDATE orders"),
        "{:#?}",
        describe(&spans)
    );
    // The whole order's trace is still one tree under the request that created it.
    assert_one_tree(&spans, "");

    // Linked to the job run, a root span of its own trace.
    assert_eq!(timeout.links.len(), 1, "{:?}", timeout.links);
    let (run_trace, run_span) = &timeout.links[0];
    assert_ne!(run_trace, &trace_id);
    let run = receiver
        .trace(run_trace, |spans| {
            spans.iter().any(|s| &s.span_id == run_span)
        })
        .await;
    let sweep = run.iter().find(|s| &s.span_id == run_span).unwrap();
    assert_eq!(sweep.name, "payment_timeout_sweep");
    assert_eq!(sweep.parent_span_id, "", "the job run is a root");
    assert_one_tree(&run, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_steps_join_the_orders_trace_and_link_the_request_that_caused_them() {
    let receiver = OtlpReceiver::grpc().await;
    let server = TestServer::start_exporting_to(&receiver, Backend::sqlite(), &[]).await;
    seed_single_sku(&server, "SBX-1", 10).await;
    let order = new_order(&server, "sandbox-traced", "SBX-1", 1).await;
    let order_id = id_of(&order);
    let order_trace = order["trace_id"].as_str().unwrap().to_owned();
    let reply = create_payment(&server, &order_id, None)
        .await
        .expect_status(201);
    let (request_trace, request_span) = reply.traceparent();
    assert_ne!(
        request_trace, order_trace,
        "the payment request came in a trace of its own"
    );
    wait_for_status(&server, &order_id, "paid").await;

    let spans = receiver
        .trace(&order_trace, |spans| {
            spans.iter().any(|s| s.name == "sandbox_payment")
                && spans.iter().any(|s| s.name == "apply_payment_callback")
        })
        .await;
    let root = assert_one_tree(&spans, "");
    assert_eq!(root.name, "POST /v1/orders", "{:#?}", describe(&spans));
    let create = spans.iter().find(|s| s.name == "create_payment").unwrap();
    assert!(
        create
            .links
            .iter()
            .any(|(t, s)| *t == request_trace && *s == request_span),
        "create_payment links the request that caused it: {:?}",
        create.links
    );
    let applied = spans
        .iter()
        .find(|s| s.name == "apply_payment_callback")
        .unwrap();
    assert_eq!(applied.attributes["payment.outcome"], "succeeded");
    assert_eq!(
        applied.parent_span_id,
        create.span_id,
        "{:#?}",
        describe(&spans)
    );
    assert!(
        spans.iter().any(|s| s.name == "payment_callback"),
        "the sandbox's delivery is in the order's trace too: {:#?}",
        describe(&spans)
    );
}

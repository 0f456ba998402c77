//! Exported traces, captured by an in-test OTLP receiver: the server span continues the caller's
//! trace, database spans are its descendants, nothing is orphaned, sampling is honoured, logs
//! name their trace, SIGHUP changes the log level, and no personal value leaves the process.

use ordo_testkit::otlp;

use ordo_testkit::*;
use otlp::{KIND_CLIENT, KIND_SERVER, OtlpReceiver, assert_one_tree, describe};
use std::time::Duration;

backend_tests!(server_span_continues_the_callers_trace_with_database_spans_below);

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

async fn server_span_continues_the_callers_trace_with_database_spans_below(backend: Backend) {
    let receiver = OtlpReceiver::grpc().await;
    let server = TestServer::start_exporting_to(&receiver, backend.clone(), &[]).await;
    seed_single_sku(&server, "TRACED-1", 10).await;

    let reply = send(
        server
            .request(reqwest::Method::POST, "/v1/orders")
            .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
            .json(&order_body("traced-customer", &[("TRACED-1", 2)])),
    )
    .await
    .expect_status(201);
    let (trace_id, server_span_id) = reply.traceparent();
    assert_eq!(trace_id, CALLER_TRACE);

    let spans = receiver
        .trace(CALLER_TRACE, |spans| {
            spans.iter().any(|s| s.kind == KIND_SERVER)
                && spans.iter().any(|s| s.name == "BATCH orders")
        })
        .await;
    let root = assert_one_tree(&spans, CALLER_SPAN);
    assert_eq!(root.kind, KIND_SERVER, "{:#?}", describe(&spans));
    assert_eq!(root.name, "POST /v1/orders");
    assert_eq!(
        root.span_id, server_span_id,
        "the response names the server span"
    );
    assert_eq!(root.attributes["http.request.method"], "POST");
    assert_eq!(root.attributes["http.route"], "/v1/orders");
    assert_eq!(root.attributes["http.response.status_code"], "201");

    let system = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres { .. } => "postgresql",
    };
    // One span per round trip: the read of prices and stock, the wait for the batch that
    // writes the order, and that batch (this order was its first, so it is in this trace).
    let db_spans: Vec<_> = spans.iter().filter(|s| s.kind == KIND_CLIENT).collect();
    let names: Vec<_> = db_spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names.len(),
        3,
        "a create is three database spans: {:#?}",
        describe(&spans)
    );
    for name in ["SELECT products", "INSERT orders", "BATCH orders"] {
        assert!(names.contains(&name), "no {name} span: {names:?}");
    }
    let wait = db_spans.iter().find(|s| s.name == "INSERT orders").unwrap();
    let batch = db_spans.iter().find(|s| s.name == "BATCH orders").unwrap();
    assert_eq!(batch.parent_span_id, wait.span_id);
    assert_eq!(wait.attributes["db.operation.batch.size"], "1");
    assert_eq!(batch.attributes["db.operation.batch.size"], "1");
    assert!(
        batch
            .links
            .contains(&(wait.trace_id.clone(), wait.span_id.clone()))
    );
    assert!(
        wait.links
            .contains(&(batch.trace_id.clone(), batch.span_id.clone()))
    );
    for span in &db_spans {
        assert_eq!(span.attributes["db.system.name"], system);
        assert!(span.attributes.contains_key("db.query.summary"));
        assert!(
            !span.attributes.contains_key("db.query.text"),
            "no query text, no values"
        );
    }
    let create = spans
        .iter()
        .find(|s| s.name == "create_order")
        .expect("a create_order span");
    assert_eq!(create.parent_span_id, root.span_id);
    assert_eq!(
        create.attributes["order.id"],
        reply.body["id"].as_str().unwrap()
    );
    assert_eq!(create.attributes["order.item_count"], "1");

    let resource = &root.resource;
    assert_eq!(resource["service.name"], "ordo-under-test");
    for key in [
        "service.version",
        "service.instance.id",
        "deployment.environment",
        "vcs.ref.head.revision",
    ] {
        assert!(
            resource.get(key).is_some_and(|v| !v.is_empty()),
            "resource lacks {key}: {resource:?}"
        );
    }
}

/// The hottest read costs two spans: its SERVER span (which names the order) and the one
/// database round trip below it.
#[tokio::test(flavor = "multi_thread")]
async fn an_order_read_is_its_server_span_and_one_database_span() {
    let receiver = OtlpReceiver::grpc().await;
    let server = TestServer::start_exporting_to(&receiver, Backend::sqlite(), &[]).await;
    seed_single_sku(&server, "READ-1", 10).await;
    let created = server
        .post_order(&order_body("reader", &[("READ-1", 1)]))
        .await
        .expect_status(201);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let read = server
        .get(&format!("/v1/orders/{id}"))
        .await
        .expect_status(200);
    let (trace_id, server_span_id) = read.traceparent();
    receiver
        .trace(&trace_id, |spans| {
            spans.iter().any(|s| s.kind == KIND_SERVER)
                && spans.iter().any(|s| s.kind == KIND_CLIENT)
        })
        .await;
    // Anything else of that trace would have arrived in the same export.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = receiver.trace(&trace_id, |_| true).await;
    assert_eq!(spans.len(), 2, "{:#?}", describe(&spans));
    let root = spans.iter().find(|s| s.kind == KIND_SERVER).unwrap();
    assert_eq!(root.span_id, server_span_id);
    assert_eq!(root.attributes["order.id"], id.as_str());
    let db = spans.iter().find(|s| s.kind == KIND_CLIENT).unwrap();
    assert_eq!(db.name, "SELECT orders");
    assert_eq!(db.parent_span_id, root.span_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_is_one_tree_with_no_orphan_spans_over_otlp_http() {
    let receiver = OtlpReceiver::http().await;
    let server = TestServer::start_exporting_to(&receiver, Backend::sqlite(), &[]).await;
    seed_single_sku(&server, "TREE-1", 100).await;

    let created = server
        .post_order(&order_body("tree-customer", &[("TREE-1", 1)]))
        .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let replies = vec![
        created,
        server.get(&format!("/v1/orders/{id}")).await,
        server.get("/v1/orders?customer_id=tree-customer").await,
        server.get(&format!("/v1/orders/{id}/timeline")).await,
        server.cancel_order(&id).await,
        server.get("/v1/no-such-path").await,
        server
            .post_order(&serde_json::json!({"customer_id": 5}))
            .await,
    ];
    for reply in &replies {
        let (trace_id, span_id) = reply.traceparent();
        let spans = receiver
            .trace(&trace_id, |spans| {
                spans.iter().any(|s| s.kind == KIND_SERVER)
            })
            .await;
        let root = assert_one_tree(&spans, "");
        assert_eq!(root.span_id, span_id, "{:#?}", describe(&spans));
        assert_eq!(root.kind, KIND_SERVER);
    }
    // The relay polls the outbox all the time: its housekeeping statements are not traces.
    let polling: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.parent_span_id.is_empty() && s.name.ends_with(" outbox"))
        .map(|s| s.name)
        .collect();
    assert!(
        polling.is_empty(),
        "relay polling exported as traces: {polling:?}"
    );
    let unmatched = receiver
        .spans()
        .into_iter()
        .find(|s| {
            s.attributes
                .get("url.path")
                .is_some_and(|p| p == "/v1/no-such-path")
        })
        .expect("the 404 has a span");
    assert_eq!(
        unmatched.name, "GET",
        "an unmatched path has no route in its name"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sampling_ratio_of_zero_exports_nothing_but_still_answers_with_a_trace() {
    let receiver = OtlpReceiver::grpc().await;
    let server = TestServer::start_exporting_to(
        &receiver,
        Backend::sqlite(),
        &[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ],
    )
    .await;
    seed_single_sku(&server, "UNSAMPLED-1", 10).await;
    let reply = server
        .post_order(&order_body("unsampled", &[("UNSAMPLED-1", 1)]))
        .await
        .expect_status(201);
    let traceparent = reply.header("traceparent").expect("traceparent").to_owned();
    assert!(traceparent.ends_with("-00"), "not sampled: {traceparent}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        receiver.spans().is_empty(),
        "{:#?}",
        describe(&receiver.spans())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_carry_the_trace_id_of_their_request() {
    let server = TestServer::start(Backend::sqlite()).await;
    seed_single_sku(&server, "LOGGED-1", 10).await;
    let reply = server
        .post_order(&order_body("logged", &[("LOGGED-1", 1)]))
        .await
        .expect_status(201);
    let (trace_id, _) = reply.traceparent();
    let line = wait_for_log(&server, |line| {
        line["message"] == "order created" && line["trace_id"] == trace_id.as_str()
    })
    .await;
    assert!(
        is_lower_hex(line["span_id"].as_str().unwrap(), 16),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_log_level_from_the_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ordo.toml");
    // The ready line stays visible; the service crate's info lines do not.
    std::fs::write(&config, "log_filter = \"warn,ordo::serve=info\"\n").unwrap();
    let config_path = config.to_str().unwrap().to_owned();
    let mut server = TestServer::start_with_env(
        Backend::sqlite(),
        &[("ORDO_CONFIG", &config_path), ("RUST_LOG", "")],
    )
    .await;
    seed_single_sku(&server, "HUP-1", 10).await;

    let quiet = server
        .post_order(&order_body("hup", &[("HUP-1", 1)]))
        .await
        .expect_status(201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet_id = quiet.body["id"].as_str().unwrap().to_owned();
    assert!(
        !parsed_logs(&server)
            .iter()
            .any(|l| l["order.id"] == quiet_id.as_str()),
        "info lines are filtered at warn"
    );

    std::fs::write(&config, "log_filter = \"info\"\n").unwrap();
    server.hangup();
    wait_for_log(&server, |line| line["message"] == "configuration reloaded").await;
    let loud = server
        .post_order(&order_body("hup", &[("HUP-1", 1)]))
        .await
        .expect_status(201);
    let loud_id = loud.body["id"].as_str().unwrap().to_owned();
    wait_for_log(&server, |line| {
        line["message"] == "order created" && line["order.id"] == loud_id.as_str()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn personal_values_never_reach_logs_spans_or_metrics() {
    let receiver = OtlpReceiver::grpc().await;
    let server =
        TestServer::start_exporting_to(&receiver, Backend::sqlite(), &[("RUST_LOG", "debug")])
            .await;
    seed_single_sku(&server, "PII-1", 10).await;
    let secrets = [
        "Zebulon Quixotic",
        "77 Hidden Lane",
        "Secretville",
        "SEC-777",
        "zq-secret@example.org",
        "+1 555 0199",
    ];
    let body = serde_json::json!({
        "customer_id": "pii-customer",
        "currency": "USD",
        "items": [{"sku": "PII-1", "quantity": 1}],
        "shipping_address": {"name": secrets[0], "line1": secrets[1], "city": secrets[2],
                             "postal_code": secrets[3], "country": "TH"},
        "contact": {"email": secrets[4], "phone": secrets[5]},
    });
    let reply = server.post_order(&body).await.expect_status(201);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    server
        .get(&format!("/v1/orders/{id}"))
        .await
        .expect_status(200);
    server.cancel_order(&id).await.expect_status(200);
    let (trace_id, _) = reply.traceparent();
    receiver
        .trace(&trace_id, |spans| {
            spans.iter().any(|s| s.name == "BATCH orders")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let metrics = server.admin_get("/metrics").await;
    let mut exported = Vec::new();
    for span in receiver.spans() {
        exported.push(span.name.clone());
        exported.extend(span.attributes.values().cloned());
    }
    let logs = server.logs().join("\n");
    for secret in secrets {
        assert!(!logs.contains(secret), "{secret:?} in the logs");
        assert!(
            !exported.iter().any(|v| v.contains(secret)),
            "{secret:?} in a span"
        );
        assert!(!metrics.text.contains(secret), "{secret:?} in the metrics");
    }
}

fn parsed_logs(server: &TestServer) -> Vec<serde_json::Value> {
    server
        .logs()
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

async fn wait_for_log(
    server: &TestServer,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..100 {
        if let Some(line) = parsed_logs(server).into_iter().find(|l| wanted(l)) {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no such log line in:\n{}", server.logs().join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_still_queued_at_shutdown_are_flushed_before_exit() {
    let receiver = OtlpReceiver::grpc().await;
    let mut env = receiver.env();
    // A batch delay far beyond the test: only the shutdown flush can deliver the spans.
    env.retain(|(key, _)| *key != "OTEL_BSP_SCHEDULE_DELAY");
    env.push(("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()));
    let mut server = TestServer::start_with_env(Backend::sqlite(), &env_refs(&env)).await;
    let reply = server.get("/v1/orders?limit=1").await.expect_status(200);
    let (trace_id, _) = reply.traceparent();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.spans().iter().all(|s| s.trace_id != trace_id),
        "exported before shutdown: the batch delay did not hold"
    );

    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    let spans = receiver
        .trace(&trace_id, |spans| {
            spans.iter().any(|s| s.kind == KIND_SERVER)
        })
        .await;
    assert_one_tree(&spans, "");
}

/// Background jobs look for work all the time (the relay every 200 ms, the payment timeout at a
/// quarter of the timeout): looking finds nothing on an idle service and exports nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_service_exports_no_traces() {
    let receiver = OtlpReceiver::grpc().await;
    // Sweeps every 250 ms.
    let sweeps = [("ORDO_PAYMENT_TIMEOUT_SECS", "1")];
    let server = TestServer::start_exporting_to(&receiver, Backend::sqlite(), &sweeps).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A request flushes the batch exporter's queue soon after; only its trace may arrive.
    let (trace_id, _) = server.get("/v1/products/NONE").await.traceparent();
    receiver.trace(&trace_id, |spans| !spans.is_empty()).await;
    let others: Vec<String> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id != trace_id)
        .map(|s| s.name)
        .collect();
    assert!(others.is_empty(), "an idle service exported {others:?}");
}

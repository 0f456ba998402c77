//! Telemetry that conforms: every attribute ordo exports in a namespace the OpenTelemetry
//! semantic conventions own (`http.*`, `url.*`, `server.*`, `rpc.*`, `db.*`, `messaging.*`,
//! `error.*`, ...) has the name and the OTLP type the conventions give it — an integer
//! `http.response.status_code`, not the string `"201"`, or a backend's
//! `http.response.status_code >= 500` misses it — and each kind of span carries the attributes
//! the conventions require of it. Checked over the exported spans of HTTP and gRPC requests,
//! database round trips, Redis cache lookups, outbox publishes and consumes, and carrier calls
//! (one refused, one accepted).

use ordo_testkit::carrier;
use ordo_testkit::otlp;

use carrier::Carrier;
use ordo_grpc_api::pb;
use ordo_grpc_api::pb::orders_service_client::OrdersServiceClient;
use ordo_testkit::*;
use otlp::{CapturedSpan, KIND_CLIENT, KIND_SERVER, OtlpReceiver, describe};
use serde_json::json;
use std::time::Duration;

backend_tests!(every_exported_attribute_has_its_semantic_convention_name_and_type);

const KIND_PRODUCER: i32 = 4;
const KIND_CONSUMER: i32 = 5;
const STATUS_ERROR: i32 = 2;

/// Every convention-owned attribute ordo may export, with its OTLP type.
const CONVENTIONS: &[(&str, &str)] = &[
    // HTTP server and client spans.
    ("http.request.method", "string"),
    ("http.route", "string"),
    ("http.response.status_code", "int"),
    ("http.request.resend_count", "int"),
    ("url.path", "string"),
    ("url.scheme", "string"),
    ("url.full", "string"),
    ("network.protocol.version", "string"),
    ("client.address", "string"),
    ("server.address", "string"),
    ("server.port", "int"),
    ("error.type", "string"),
    // gRPC server and client spans.
    ("rpc.system", "string"),
    ("rpc.service", "string"),
    ("rpc.method", "string"),
    ("rpc.grpc.status_code", "int"),
    // Database client spans.
    ("db.system.name", "string"),
    ("db.namespace", "string"),
    ("db.operation.name", "string"),
    ("db.query.summary", "string"),
    ("db.operation.batch.size", "int"),
    ("db.response.status_code", "string"),
    // Messaging producer and consumer spans.
    ("messaging.system", "string"),
    ("messaging.operation.type", "string"),
    ("messaging.operation.name", "string"),
    ("messaging.destination.name", "string"),
    ("messaging.message.id", "string"),
    ("messaging.consumer.group.name", "string"),
    ("messaging.batch.message_count", "int"),
];

/// The namespaces the conventions own: an attribute there that is not in [`CONVENTIONS`] is a
/// misspelling or an invention (ordo's own attributes live under names of their own).
const CONVENTION_NAMESPACES: &[&str] = &[
    "http.",
    "url.",
    "server.",
    "client.",
    "network.",
    "rpc.",
    "db.",
    "messaging.",
    "error.",
    "exception.",
    "user_agent.",
    "net.",
];

fn expected_type(name: &str) -> Option<&'static str> {
    CONVENTIONS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, kind)| *kind)
}

/// What the conventions require (or ordo promises) of each kind of span it exports.
fn required_attributes(span: &CapturedSpan) -> &'static [&'static str] {
    let has = |name: &str| span.attributes.contains_key(name);
    match span.kind {
        KIND_SERVER if has("rpc.system") => &[
            "rpc.system",
            "rpc.service",
            "rpc.method",
            "rpc.grpc.status_code",
        ],
        KIND_SERVER => &[
            "http.request.method",
            "http.route",
            "url.path",
            "url.scheme",
            "http.response.status_code",
            "network.protocol.version",
        ],
        KIND_CLIENT if has("db.system.name") => {
            &["db.system.name", "db.operation.name", "db.query.summary"]
        }
        KIND_CLIENT if has("rpc.system") => &[
            "rpc.system",
            "rpc.service",
            "rpc.method",
            "rpc.grpc.status_code",
        ],
        KIND_CLIENT => &[
            "http.request.method",
            "server.address",
            "server.port",
            "url.full",
        ],
        KIND_PRODUCER | KIND_CONSUMER => &[
            "messaging.system",
            "messaging.operation.type",
            "messaging.operation.name",
            "messaging.destination.name",
            "messaging.message.id",
        ],
        _ => &[],
    }
}

/// Every way `span` departs from the conventions.
fn departures(span: &CapturedSpan) -> Vec<String> {
    let mut found = Vec::new();
    for (name, kind) in &span.attribute_types {
        let owned = CONVENTION_NAMESPACES.iter().any(|ns| name.starts_with(ns));
        match expected_type(name) {
            Some(expected) if expected != *kind => {
                found.push(format!("{name} is {kind}, the conventions say {expected}"))
            }
            None if owned => found.push(format!("{name} is not a name the conventions give")),
            // ordo's own attributes: a count or an attempt is a number, not its digits.
            None if *kind == "string"
                && span.attributes[name].parse::<i64>().is_ok()
                && !span.attributes[name].is_empty() =>
            {
                found.push(format!("{name} is a number exported as a string"))
            }
            _ => {}
        }
    }
    for name in required_attributes(span) {
        if !span.attributes.contains_key(*name) {
            found.push(format!("lacks {name}"));
        }
    }
    // A failed client call (or a server's own failure) names what went wrong, in few values.
    let failed_call = span.status_code == STATUS_ERROR
        && (span.kind == KIND_CLIENT || span.kind == KIND_SERVER)
        && (span.attributes.contains_key("http.request.method")
            || span.attributes.contains_key("rpc.system")
            || span.attributes.contains_key("db.system.name"));
    if failed_call && !span.attributes.contains_key("error.type") {
        found.push("failed, without error.type".to_owned());
    }
    found
}

async fn every_exported_attribute_has_its_semantic_convention_name_and_type(backend: Backend) {
    let receiver = OtlpReceiver::grpc().await;
    // The carrier refuses each shipment's first push (503), then accepts: a failed and a
    // successful client call.
    let carrier = Carrier::start(|_, nth| if nth == 0 { 503 } else { 200 }).await;
    // A Redis of the test's own: cache lookups are CLIENT spans too.
    let redis = RedisServer::start().await;
    let mut env = receiver.env();
    env.extend(carrier.env(&[]));
    env.push(("ORDO_REDIS_URL", redis.url()));
    let server = TestServer::start_with_env(backend, &env_refs(&env)).await;
    seed_single_sku(&server, "CONV-1", 10).await;

    // REST: a create, a read, a rejected body, an unknown order; then the payment that starts
    // the pipeline (outbox publish and consume, database, carrier).
    let order = server
        .create_order(&order_body("conventions", &[("CONV-1", 1)]))
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    server.get_order(&id).await;
    server
        .post_json("/v1/orders", &json!({"items": []}))
        .await
        .expect_status(400);
    server
        .get("/v1/orders/ord_unknown")
        .await
        .expect_status(404);
    server
        .post_json(&format!("/v1/orders/{id}/payments"), &json!({}))
        .await
        .expect_status(201);
    server
        .wait_for_order_status(&id, "shipped", Duration::from_secs(20))
        .await;

    // gRPC: a read that is found and one that is not.
    let channel = tonic::transport::Channel::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .expect("connect to the gRPC port");
    let mut orders = OrdersServiceClient::new(channel);
    orders
        .get_order(pb::GetOrderRequest { id: id.clone() })
        .await
        .expect("gRPC GetOrder");
    let missing = orders
        .get_order(pb::GetOrderRequest {
            id: "ord_unknown".to_owned(),
        })
        .await
        .expect_err("an unknown order");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Wait until every kind of span has been exported.
    let kinds_seen = |spans: &[CapturedSpan]| {
        let server_http = spans
            .iter()
            .any(|s| s.kind == KIND_SERVER && s.name == "POST /v1/orders/{id}/payments");
        let server_grpc = spans
            .iter()
            .filter(|s| s.kind == KIND_SERVER && s.attributes.contains_key("rpc.system"))
            .count()
            >= 2;
        let database = spans
            .iter()
            .any(|s| s.kind == KIND_CLIENT && s.attributes.contains_key("db.system.name"));
        let carrier_calls = spans
            .iter()
            .filter(|s| s.kind == KIND_CLIENT && s.attributes.contains_key("url.full"))
            .count()
            >= 2;
        let redis = spans.iter().any(|s| {
            s.kind == KIND_CLIENT
                && s.attributes.get("db.system.name").map(String::as_str) == Some("redis")
        });
        let producer = spans.iter().any(|s| s.kind == KIND_PRODUCER);
        let consumer = spans.iter().any(|s| s.kind == KIND_CONSUMER);
        server_http && server_grpc && database && redis && carrier_calls && producer && consumer
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = receiver.spans();
        if kinds_seen(&spans) {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every kind of span was exported: {:#?}",
            describe(&spans)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let mut report = Vec::new();
    for span in &spans {
        for departure in departures(span) {
            report.push(format!("{} (kind {}): {departure}", span.name, span.kind));
        }
    }
    report.sort();
    report.dedup();
    assert!(
        report.is_empty(),
        "spans that depart from the semantic conventions:\n{}",
        report.join("\n")
    );

    // The values, where the conventions fix them.
    let create = spans
        .iter()
        .find(|s| {
            s.kind == KIND_SERVER
                && s.name == "POST /v1/orders"
                && s.attributes["http.response.status_code"] == "201"
        })
        .expect("the create's server span");
    assert_eq!(create.attributes["url.scheme"], "http");
    assert_eq!(create.attributes["network.protocol.version"], "1.1");
    let refused = spans
        .iter()
        .find(|s| {
            s.attributes
                .get("http.response.status_code")
                .map(String::as_str)
                == Some("503")
        })
        .expect("the refused carrier call");
    assert_eq!(refused.kind, KIND_CLIENT);
    assert_eq!(refused.attributes["error.type"], "503");
    let not_found = spans
        .iter()
        .find(|s| s.attributes.get("rpc.grpc.status_code").map(String::as_str) == Some("5"))
        .expect("the gRPC NOT_FOUND's server span");
    assert_eq!(not_found.attribute_types["rpc.grpc.status_code"], "int");
}

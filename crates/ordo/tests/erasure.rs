//! Erasure of a customer's personal data (`POST /v1/customers/{customer_id}/erasure`), end to
//! end on SQLite and PostgreSQL with Redis and an OTLP receiver: the personal fields become
//! `"[erased]"` while the financial record stays, an order in fulfillment is erased by itself
//! once it has shipped, a repeat changes nothing more — and afterwards the erased
//! values are nowhere: not in the database (SQLite: the raw bytes of the file and its WAL;
//! PostgreSQL: every text column of every table), Redis, the logs or the exported spans,
//! while another customer's are intact.

use ordo_testkit::otlp;

use ordo_testkit::*;
use otlp::OtlpReceiver;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

backend_tests!(an_erased_customer_leaves_no_trace_anywhere);

/// The values of the customer to erase: distinctive, so that a search cannot hit by chance.
const NAME: &str = "Erasable Qwertz";
const LINE1: &str = "17 Forgetmenot Lane";
const POSTAL: &str = "97531";
const EMAIL: &str = "forget.qwertz@example.com";
const PHONE: &str = "+66990001122";
/// The other customer's, which must stay.
const OTHER_NAME: &str = "Staying Asdfgh";
const OTHER_EMAIL: &str = "stay.asdfgh@example.com";

fn body(customer: &str, name: &str, line1: &str, postal: &str, email: &str, phone: &str) -> Value {
    json!({
        "customer_id": customer,
        "currency": "USD",
        "items": [{"sku": TEA, "quantity": 1}],
        "shipping_address": {"name": name, "line1": line1, "city": "Bangkok",
            "postal_code": postal, "country": "TH"},
        "contact": {"email": email, "phone": phone},
    })
}

fn erased_values() -> [&'static str; 5] {
    [NAME, LINE1, POSTAL, EMAIL, PHONE]
}

async fn erase(server: &TestServer, customer: &str) -> Value {
    server
        .post_json(&format!("/v1/customers/{customer}/erasure"), &json!({}))
        .await
        .expect_status(200)
        .body
}

fn assert_erased(order: &Value) {
    let address = &order["shipping_address"];
    assert_eq!(
        (&address["name"], &address["line1"], &address["postal_code"]),
        (&json!("[erased]"), &json!("[erased]"), &json!("[erased]")),
        "{order:#}"
    );
    assert_eq!(
        (&address["city"], &address["country"]),
        (&json!("Bangkok"), &json!("TH"))
    );
    assert_eq!(
        order["contact"],
        json!({"email": "[erased]", "phone": "[erased]"})
    );
    assert_eq!(
        order["total"],
        money(TEA_PRICE, "USD"),
        "the financial record stays"
    );
    assert_eq!(order["items"][0]["sku"], TEA);
}

async fn an_erased_customer_leaves_no_trace_anywhere(backend: Backend) {
    let receiver = OtlpReceiver::grpc().await;
    let redis = RedisServer::start().await;
    // A carrier that refuses (503) until the gate opens: an order stays in fulfillment.
    let gate = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let carrier = {
        let gate = std::sync::Arc::clone(&gate);
        let app = axum::Router::new().route(
            "/shipments",
            axum::routing::post(move || {
                let open = gate.load(std::sync::atomic::Ordering::SeqCst);
                async move {
                    if open {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/shipments")
    };
    let mut env: Vec<(&str, String)> = receiver.env();
    env.extend([
        ("ORDO_REDIS_URL", redis.url()),
        ("ORDO_CARRIER_WEBHOOK_URL", carrier),
        (
            "ORDO_CARRIER_WEBHOOK_SECRET",
            "carrier_secret_for_erasure_tests".to_owned(),
        ),
        ("ORDO_CARRIER_RETRY_BASE_MS", "20".to_owned()),
        ("ORDO_CARRIER_MAX_ATTEMPTS", "100".to_owned()),
        ("ORDO_CARRIER_BREAKER_THRESHOLD", "1000".to_owned()),
    ]);
    let server = TestServer::start_with_env(backend.clone(), &env_refs(&env)).await;
    seed_catalog(&server).await;

    // The customer's orders: one over (cancelled), one awaiting payment, one in fulfillment
    // (paid, its shipment held at the carrier); and another customer's.
    let done = server
        .create_order(&body("to-forget", NAME, LINE1, POSTAL, EMAIL, PHONE))
        .await;
    let done_id = done["id"].as_str().unwrap().to_owned();
    server.cancel_order(&done_id).await.expect_status(200);
    server.get_order(&done_id).await; // cached in process and in Redis
    let unpaid = server
        .create_order(&body("to-forget", NAME, LINE1, POSTAL, EMAIL, PHONE))
        .await;
    let unpaid_id = unpaid["id"].as_str().unwrap().to_owned();
    let shipping = server
        .create_order(&body("to-forget", NAME, LINE1, POSTAL, EMAIL, PHONE))
        .await;
    let shipping_id = shipping["id"].as_str().unwrap().to_owned();
    server
        .post_json(&format!("/v1/orders/{shipping_id}/payments"), &json!({}))
        .await
        .expect_status(201);
    server
        .wait_for_order_status(&shipping_id, "scheduled", Duration::from_secs(20))
        .await;
    let other = server
        .create_order(&body(
            "to-keep",
            OTHER_NAME,
            "5 Remain Road",
            "10110",
            OTHER_EMAIL,
            "+66812345678",
        ))
        .await;

    let first = erase(&server, "to-forget").await;
    assert_eq!(first["customer_id"], "to-forget");
    assert_eq!(first["orders_erased"], 2, "{first}");
    assert_eq!(first["orders_pending"], json!([shipping_id]));
    assert!(first["erased_at"].as_str().unwrap().ends_with('Z'));
    assert_erased(&server.get_order(&done_id).await);
    assert_erased(&server.get_order(&unpaid_id).await);
    let timeline = server.timeline(&done_id).await;
    let kinds: Vec<&str> = timeline
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.last(), Some(&"personal_data_erased"), "{kinds:?}");
    // The order in fulfillment keeps its address (the carrier needs it) ...
    assert_eq!(
        server.get_order(&shipping_id).await["shipping_address"]["name"],
        NAME
    );

    // ... ships with it, and is erased by itself once shipped.
    gate.store(true, std::sync::atomic::Ordering::SeqCst);
    server
        .wait_for_order_status(&shipping_id, "shipped", Duration::from_secs(20))
        .await;
    let erased_by_itself = Instant::now() + Duration::from_secs(15);
    loop {
        let order = server.get_order(&shipping_id).await;
        if order["shipping_address"]["name"] == "[erased]" {
            assert_erased(&order);
            break;
        }
        assert!(
            Instant::now() < erased_by_itself,
            "not erased once shipped: {order:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A repeat changes nothing more.
    let again = erase(&server, "to-forget").await;
    assert_eq!(again["orders_erased"], 3);
    assert_eq!(again["orders_pending"], json!([]));
    assert_eq!(again["erased_at"], first["erased_at"]);
    let timeline = server.timeline(&done_id).await;
    assert_eq!(
        timeline
            .iter()
            .filter(|e| e["type"] == "personal_data_erased")
            .count(),
        1
    );
    // The other customer is untouched.
    assert_eq!(server.get_order(other["id"].as_str().unwrap()).await, other);

    // Nowhere: the database ...
    match &backend {
        Backend::Sqlite => {
            let mut bytes = Vec::new();
            for suffix in ["", "-wal"] {
                let path = format!(
                    "{}{suffix}",
                    server.database_url().trim_start_matches("sqlite://")
                );
                bytes.extend(std::fs::read(&path).unwrap_or_default());
            }
            for value in erased_values() {
                assert!(
                    !contains(&bytes, value),
                    "{value:?} is still in the SQLite file or its WAL"
                );
            }
            assert!(contains(&bytes, OTHER_NAME) && contains(&bytes, OTHER_EMAIL));
        }
        Backend::Postgres { .. } => {
            let db = ordo_storage::Database::connect(server.database_url(), 1)
                .await
                .unwrap();
            let columns: Vec<Vec<String>> = db
                .query_unchecked(
                    "SELECT table_name::text, column_name::text FROM information_schema.columns
                     WHERE table_schema = current_schema()
                       AND data_type IN ('text', 'character varying')",
                )
                .await
                .unwrap();
            assert!(columns.len() > 10, "{columns:?}");
            let count_in = |value: &str| {
                let checks: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        format!(
                            "(SELECT COUNT(*) FROM \"{}\" WHERE \"{}\" LIKE '%{value}%')",
                            c[0], c[1]
                        )
                    })
                    .collect();
                format!("SELECT ({})::text", checks.join(" + "))
            };
            for value in erased_values() {
                let found: Vec<Vec<String>> = db.query_unchecked(&count_in(value)).await.unwrap();
                assert_eq!(found[0][0], "0", "{value:?} is still in a text column");
            }
            let kept: Vec<Vec<String>> = db.query_unchecked(&count_in(OTHER_NAME)).await.unwrap();
            assert_ne!(kept[0][0], "0");
            db.close().await;
        }
    }
    // ... Redis ...
    let redis_values = redis_dump(&redis.url());
    for value in erased_values() {
        assert!(!redis_values.contains(value), "{value:?} is in Redis");
    }
    // ... the logs and the spans.
    let logs = server.all_logs().join("\n");
    let spans = format!("{:?}", receiver.spans());
    for value in erased_values() {
        assert!(!logs.contains(value), "{value:?} is in the logs");
        assert!(!spans.contains(value), "{value:?} is in a span");
    }
    assert!(
        receiver.spans().iter().any(|s| s.name == "erase_customer"),
        "the erasure is a span"
    );
    let metrics = server.admin_get("/metrics").await.expect_status(200).text;
    assert!(
        metrics
            .lines()
            .any(|l| l == "orders_personal_data_erased_total 3"),
        "{metrics}"
    );
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Every string value in the Redis at `url`, one per line (`redis-cli --scan` and `GET`).
fn redis_dump(url: &str) -> String {
    let port = url.rsplit(':').next().unwrap();
    let keys = std::process::Command::new("redis-cli")
        .args(["-p", port, "--scan"])
        .output()
        .expect("redis-cli");
    let mut dump = String::new();
    for key in String::from_utf8_lossy(&keys.stdout).lines() {
        let value = std::process::Command::new("redis-cli")
            .args(["-p", port, "GET", key])
            .output()
            .expect("redis-cli");
        dump.push_str(&String::from_utf8_lossy(&value.stdout));
        dump.push('\n');
    }
    dump
}

//! The real message brokers: with `ORDO_BROKER_URL` naming RabbitMQ or NATS JetStream, every
//! committed outbox event reaches the broker (acknowledged by it, published once), carries the
//! trace context of its publish span and the order id in its headers, and survives a kill -9 of
//! ordo between commit and publish. A broker that cannot be reached stops the start-up with an
//! error naming the variable. A broker outage longer than the relay's whole retry schedule, in
//! the middle of the pipeline, only delays it: every order ends shipped, nothing is
//! dead-lettered, and the carrier sees each shipment once.
//!
//! Servers: RabbitMQ at `ORDO_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`)
//! and NATS at `ORDO_TEST_NATS_URL` (default `nats://127.0.0.1:4222`), as `scripts/test.sh`
//! starts them. Unreachable: skipped loudly, except in CI (`CI` set), where it fails. Each test
//! uses a namespace of its own (`ORDO_BROKER_NAMESPACE`), removed at the end.

use ordo_testkit::carrier;
use ordo_testkit::otlp;
use ordo_testkit::proxy;

use carrier::Carrier;
use futures::StreamExt;
use ordo_testkit::*;
use otlp::{OtlpReceiver, describe};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

#[derive(Clone, Copy, Debug)]
enum Broker {
    RabbitMq,
    Nats,
}

impl Broker {
    fn url(self) -> String {
        match self {
            Broker::RabbitMq => {
                std::env::var("ORDO_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.into())
            }
            Broker::Nats => {
                std::env::var("ORDO_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.into())
            }
        }
    }

    /// Whether the broker answers; outside CI an unreachable one skips the test loudly.
    async fn available(self) -> bool {
        let url = self.url();
        let reached = match self {
            Broker::RabbitMq => tokio::time::timeout(
                Duration::from_secs(5),
                lapin::Connection::connect(&url, lapin::ConnectionProperties::default()),
            )
            .await
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string())),
            Broker::Nats => tokio::time::timeout(Duration::from_secs(5), async_nats::connect(&url))
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string())),
        };
        match reached {
            Ok(()) => true,
            Err(reason) if std::env::var_os("CI").is_some() => {
                panic!("{self:?} at {url} is unreachable in CI: {reason}")
            }
            Err(reason) => {
                eprintln!(
                    "\n**********************************************************\n\
                     SKIPPED: {self:?} unreachable at {url}: {reason}\n\
                     (run scripts/test.sh)\n\
                     **********************************************************\n"
                );
                false
            }
        }
    }
}

/// A message as the broker holds it.
#[derive(Debug)]
struct Seen {
    event_id: String,
    topic: String,
    headers: HashMap<String, String>,
    persistent: bool,
}

/// The outbox rows as (event id → (topic, aggregate id)), and (rows, published, max attempts).
async fn outbox(server: &TestServer) -> (HashMap<String, (String, String)>, (i64, i64, i64)) {
    let rows = sql_texts(server, "SELECT event_id, topic, aggregate_id FROM outbox").await;
    let events = rows
        .into_iter()
        .map(|mut row| {
            let aggregate = row.pop().unwrap();
            let topic = row.pop().unwrap();
            (row.pop().unwrap(), (topic, aggregate))
        })
        .collect();
    let state = outbox_state(server).await;
    (events, state)
}

async fn execute(server: &TestServer, statement: &'static str) -> u64 {
    sql_execute(server, statement).await
}

/// Waits until at least `at_least` rows exist and every row is published (and stays so for a
/// moment: later stages may append more); returns the final outbox.
async fn wait_until_published(
    server: &TestServer,
    at_least: i64,
) -> (HashMap<String, (String, String)>, (i64, i64, i64)) {
    let mut last = None;
    let mut stable = 0;
    for _ in 0..300 {
        let (events, state) = outbox(server).await;
        if state.0 >= at_least && state.0 == state.1 {
            stable += 1;
            if stable >= 5 {
                return (events, state);
            }
        } else {
            stable = 0;
        }
        last = Some(state);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "outbox not drained: (rows, published, max attempts) = {last:?}, expected >= {at_least} rows\n{}",
        server.output()
    );
}

/// A test's view of the broker: a queue bound to everything (RabbitMQ) or the stream (NATS).
enum Probe {
    RabbitMq {
        connection: lapin::Connection,
        channel: lapin::Channel,
        consumer: Box<lapin::Consumer>,
        exchange: String,
    },
    Nats {
        jetstream: async_nats::jetstream::Context,
        stream: String,
    },
}

impl Probe {
    /// Call after ordo started (it declares the exchange / stream).
    async fn attach(broker: Broker, namespace: &str) -> Probe {
        match broker {
            Broker::RabbitMq => {
                use lapin::options::*;
                use lapin::types::FieldTable;
                let connection = lapin::Connection::connect(
                    &broker.url(),
                    lapin::ConnectionProperties::default(),
                )
                .await
                .expect("connect to RabbitMQ");
                let channel = connection.create_channel().await.unwrap();
                let exchange = format!("{namespace}.events");
                let queue = channel
                    .queue_declare(
                        format!("{namespace}.probe").into(),
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .expect("declare the probe queue");
                channel
                    .queue_bind(
                        queue.name().clone(),
                        exchange.as_str().into(),
                        "#".into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .expect("bind the probe queue to the exchange ordo declared");
                let consumer = channel
                    .basic_consume(
                        queue.name().clone(),
                        "probe".into(),
                        BasicConsumeOptions {
                            no_ack: true,
                            ..BasicConsumeOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
                Probe::RabbitMq {
                    connection,
                    channel,
                    consumer: Box::new(consumer),
                    exchange,
                }
            }
            Broker::Nats => {
                let client = tokio::time::timeout(
                    Duration::from_secs(20),
                    async_nats::connect(broker.url()),
                )
                .await
                .expect("NATS accepts the probe's connection in time")
                .unwrap();
                Probe::Nats {
                    jetstream: async_nats::jetstream::new(client),
                    stream: format!("{}_EVENTS", namespace.to_ascii_uppercase()),
                }
            }
        }
    }

    /// The messages the broker holds for the probe, until `expected` distinct ids are seen.
    async fn read(&mut self, expected: &HashSet<String>) -> HashMap<String, Seen> {
        let mut seen = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        match self {
            Probe::RabbitMq { consumer, .. } => {
                while !expected.iter().all(|id| seen.contains_key(id)) {
                    let delivery = match tokio::time::timeout_at(deadline, consumer.next()).await {
                        Ok(Some(Ok(delivery))) => delivery,
                        _ => break,
                    };
                    let mut headers = HashMap::new();
                    if let Some(table) = delivery.properties.headers() {
                        for (key, value) in table.inner() {
                            if let lapin::types::AMQPValue::LongString(text) = value {
                                headers.insert(
                                    key.as_str().to_owned(),
                                    String::from_utf8_lossy(text.as_bytes()).into_owned(),
                                );
                            }
                        }
                    }
                    let event_id = delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|m| m.as_str().to_owned())
                        .unwrap_or_default();
                    seen.insert(
                        event_id.clone(),
                        Seen {
                            event_id,
                            topic: delivery.routing_key.as_str().to_owned(),
                            headers,
                            persistent: *delivery.properties.delivery_mode() == Some(2),
                        },
                    );
                }
            }
            Probe::Nats { jetstream, stream } => {
                use async_nats::jetstream::consumer;
                // Every call to the server within the read's deadline: a stalled client fails
                // the test with the step it stalled in, instead of hanging it.
                let stream =
                    tokio::time::timeout_at(deadline, jetstream.get_stream(stream.as_str()))
                        .await
                        .expect("NATS answers get_stream in time")
                        .expect("the stream");
                let reader = tokio::time::timeout_at(
                    deadline,
                    stream.create_consumer(consumer::pull::Config {
                        deliver_policy: consumer::DeliverPolicy::All,
                        ack_policy: consumer::AckPolicy::None,
                        ..consumer::pull::Config::default()
                    }),
                )
                .await
                .expect("NATS creates the probe's consumer in time")
                .expect("an ephemeral consumer");
                let mut messages = tokio::time::timeout_at(deadline, reader.messages())
                    .await
                    .expect("NATS starts the probe's messages in time")
                    .unwrap();
                while !expected.iter().all(|id| seen.contains_key(id)) {
                    let message = match tokio::time::timeout_at(deadline, messages.next()).await {
                        Ok(Some(Ok(message))) => message,
                        _ => break,
                    };
                    let mut headers = HashMap::new();
                    if let Some(map) = &message.headers {
                        for (name, values) in map.iter() {
                            if let Some(value) = values.first() {
                                headers.insert(name.to_string(), value.as_str().to_owned());
                            }
                        }
                    }
                    let event_id = headers.get("Nats-Msg-Id").cloned().unwrap_or_default();
                    let topic = message
                        .subject
                        .as_str()
                        .split_once(".events.")
                        .map(|(_, topic)| topic.to_owned())
                        .unwrap_or_default();
                    seen.insert(
                        event_id.clone(),
                        Seen {
                            event_id,
                            topic,
                            headers,
                            persistent: true,
                        },
                    );
                }
            }
        }
        seen
    }

    /// Removes what the test run left on the broker (best effort).
    async fn clean_up(self) {
        match self {
            Probe::RabbitMq {
                connection,
                channel,
                exchange,
                ..
            } => {
                let namespace = exchange.trim_end_matches(".events");
                delete_stage_queues(&channel, namespace).await;
                let _ = channel
                    .exchange_delete(
                        exchange.as_str().into(),
                        lapin::options::ExchangeDeleteOptions::default(),
                    )
                    .await;
                let _ = connection.close(0, "done".into()).await;
            }
            Probe::Nats { jetstream, stream } => {
                // Best effort, bounded: the stream has a unique name either way.
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), jetstream.delete_stream(&stream))
                        .await;
            }
        }
    }
}

/// The consumers ordo registers today (the pipeline stages): their durable queues outlive a
/// test run unless deleted.
const CONSUMERS: &[&str] = &["risk", "split", "schedule", "push"];

async fn delete_stage_queues(channel: &lapin::Channel, namespace: &str) {
    for consumer in CONSUMERS {
        for queue in [
            format!("{namespace}.{consumer}"),
            format!("{namespace}.{consumer}.dead"),
        ] {
            let _ = channel
                .queue_delete(
                    queue.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await;
        }
    }
}

async fn start_with_broker(broker: Broker, namespace: &str) -> TestServer {
    let url = broker.url();
    TestServer::start_with_env(
        Backend::sqlite(),
        &[
            ("ORDO_BROKER_URL", url.as_str()),
            ("ORDO_BROKER_NAMESPACE", namespace),
        ],
    )
    .await
}

/// Orders, a cancel and a payment publish every outbox event once, each reaching the broker with
/// its id, topic, order id and the publish span's trace context.
async fn every_event_reaches_the_broker_with_its_trace_context(broker: Broker) {
    if !broker.available().await {
        return;
    }
    let namespace = format!("t{}", random_hex());
    let server = start_with_broker(broker, &namespace).await;
    let mut probe = Probe::attach(broker, &namespace).await;
    seed_single_sku(&server, "BRK-1", 100).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let order = server
            .create_order(&order_body(&format!("brk-{i}"), &[("BRK-1", 1)]))
            .await;
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    server.cancel_order(&ids[2]).await.expect_status(200);
    server
        .post_json(
            &format!("/v1/orders/{}/payments", ids[0]),
            &serde_json::json!({}),
        )
        .await
        .expect_status(201);
    for _ in 0..100 {
        if server.get_order(&ids[0]).await["status"] != "pending_payment" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 3 × order.created, order.cancelled, order.paid at least (later stages may add more).
    let (events, (rows, published, max_attempts)) = wait_until_published(&server, 5).await;
    assert_eq!(rows, published);
    assert_eq!(
        max_attempts, 1,
        "each event was published once, on its first attempt"
    );
    let topics: HashSet<&str> = events.values().map(|(t, _)| t.as_str()).collect();
    assert!(
        topics.contains("order.created") && topics.contains("order.paid"),
        "{topics:?}"
    );

    let expected: HashSet<String> = events.keys().cloned().collect();
    let seen = probe.read(&expected).await;
    for (event_id, (topic, aggregate_id)) in &events {
        let message = seen.get(event_id).unwrap_or_else(|| {
            panic!(
                "{broker:?}: event {event_id} ({topic}) never reached the broker; saw {:?}",
                seen.keys().collect::<Vec<_>>()
            )
        });
        assert_eq!(&message.event_id, event_id);
        assert_eq!(&message.topic, topic, "{message:?}");
        assert!(message.persistent, "{message:?}");
        assert_eq!(
            message.headers.get("ordo-aggregate-id"),
            Some(aggregate_id),
            "{message:?}"
        );
        let traceparent = message
            .headers
            .get("traceparent")
            .unwrap_or_else(|| panic!("no traceparent on {message:?}"));
        assert!(
            parse_traceparent(traceparent).is_some(),
            "malformed traceparent {traceparent:?}"
        );
    }
    // The order's own trace continues through the broker: order.created of the first order
    // carries the trace the order was created in.
    let order = server.get_order(&ids[0]).await;
    let created = events
        .iter()
        .find(|(_, (topic, aggregate))| topic == "order.created" && aggregate == &ids[0])
        .map(|(id, _)| id)
        .expect("order.created of the first order");
    let (trace_id, _) = parse_traceparent(&seen[created].headers["traceparent"]).unwrap();
    assert_eq!(
        order["trace_id"].as_str(),
        Some(trace_id.as_str()),
        "the message's trace is not the order's: {order}"
    );
    probe.clean_up().await;
}

/// Events committed by an ordo killed before it published them are published (once more, at
/// worst) by the next one: nothing committed is lost on the way to the broker.
async fn events_committed_before_a_kill_reach_the_broker_after_restart(broker: Broker) {
    if !broker.available().await {
        return;
    }
    let namespace = format!("t{}", random_hex());
    let mut server = start_with_broker(broker, &namespace).await;
    let mut probe = Probe::attach(broker, &namespace).await;
    seed_single_sku(&server, "BRK-K", 1000).await;
    for i in 0..5 {
        server
            .create_order(&order_body(&format!("kill-{i}"), &[("BRK-K", 1)]))
            .await;
    }
    wait_until_published(&server, 5).await;
    server.kill9();
    // Make the crash window certain: the last three events are committed but, as far as the
    // database knows, never published.
    let reset = execute(
        &server,
        "UPDATE outbox SET published_at_ms = NULL, claimed_until_ms = NULL, attempts = 0
         WHERE seq IN (SELECT seq FROM outbox ORDER BY seq DESC LIMIT 3)",
    )
    .await;
    assert_eq!(reset, 3);
    server.restart().await;
    for i in 0..2 {
        server
            .create_order(&order_body(&format!("after-{i}"), &[("BRK-K", 1)]))
            .await;
    }
    let (events, (rows, published, _)) = wait_until_published(&server, 7).await;
    assert_eq!(rows, published);
    let expected: HashSet<String> = events.keys().cloned().collect();
    let seen = probe.read(&expected).await;
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{broker:?}: never reached the broker: {missing:?}"
    );
    probe.clean_up().await;
}

/// A paid order goes through the pipeline stages over the broker, and each stage's CONSUMER
/// span is the child of the PRODUCER span that published its event: one trace, through the
/// broker.
async fn the_pipeline_runs_over_the_broker_in_the_order_trace(broker: Broker) {
    if !broker.available().await {
        return;
    }
    let receiver = OtlpReceiver::grpc().await;
    let namespace = format!("t{}", random_hex());
    let url = broker.url();
    let mut env: Vec<(&str, String)> = receiver.env();
    env.push(("ORDO_BROKER_URL", url));
    env.push(("ORDO_BROKER_NAMESPACE", namespace.clone()));
    let server = TestServer::start_with_env(Backend::sqlite(), &env_refs(&env)).await;
    seed_single_sku(&server, "BRK-T", 10).await;
    let created = server
        .post_order(&order_body("traced", &[("BRK-T", 1)]))
        .await
        .expect_status(201);
    let order = created.body.clone();
    let id = order["id"].as_str().unwrap().to_owned();
    // The payment joins the order's trace, as a client continuing it would.
    let traceparent = created.header("traceparent").unwrap().to_owned();
    send(
        server
            .request(reqwest::Method::POST, &format!("/v1/orders/{id}/payments"))
            .header("traceparent", traceparent)
            .json(&serde_json::json!({})),
    )
    .await
    .expect_status(201);
    let mut status = String::new();
    for _ in 0..200 {
        status = server.get_order(&id).await["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if status == "shipped" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status, "shipped",
        "{broker:?}: the stages did not run over the broker"
    );
    let system = match broker {
        Broker::RabbitMq => "rabbitmq",
        Broker::Nats => "nats",
    };
    let trace_id = order["trace_id"].as_str().unwrap();
    let spans = receiver
        .trace(trace_id, |spans| {
            spans.iter().any(|s| s.name == "process order.scheduled")
        })
        .await;
    for topic in [
        "order.paid",
        "order.risk_approved",
        "order.split",
        "order.scheduled",
    ] {
        let publish = spans
            .iter()
            .find(|s| s.name == format!("publish {topic}"))
            .unwrap_or_else(|| panic!("no publish {topic}: {:#?}", describe(&spans)));
        let process = spans
            .iter()
            .find(|s| s.name == format!("process {topic}"))
            .unwrap_or_else(|| panic!("no process {topic}: {:#?}", describe(&spans)));
        assert_eq!(publish.kind, 4, "PRODUCER");
        assert_eq!(process.kind, 5, "CONSUMER");
        assert_eq!(publish.attributes["messaging.system"], system);
        assert_eq!(process.attributes["messaging.system"], system);
        assert_eq!(
            process.parent_span_id,
            publish.span_id,
            "{topic}: {:#?}",
            describe(&spans)
        );
    }
    remove_namespace(broker, &namespace).await;
}

/// Removes what a test's namespace left on `broker`: queues and exchange, or the stream.
async fn remove_namespace(broker: Broker, namespace: &str) {
    match broker {
        Broker::RabbitMq => {
            let connection =
                lapin::Connection::connect(&broker.url(), lapin::ConnectionProperties::default())
                    .await
                    .unwrap();
            let channel = connection.create_channel().await.unwrap();
            delete_stage_queues(&channel, namespace).await;
            let _ = channel
                .exchange_delete(
                    format!("{namespace}.events").as_str().into(),
                    lapin::options::ExchangeDeleteOptions::default(),
                )
                .await;
            let _ = connection.close(0, "done".into()).await;
        }
        Broker::Nats => {
            let client = async_nats::connect(broker.url()).await.unwrap();
            let _ = async_nats::jetstream::new(client)
                .delete_stream(format!("{}_EVENTS", namespace.to_ascii_uppercase()))
                .await;
        }
    }
}

/// `host:port` of a broker URL (`scheme://[user:password@]host:port[/path]`).
fn host_and_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// The relay's retry base in this test: its whole schedule (about 256 × base) is ~2.6 s, so
/// the outage below outlasts it.
const CHAOS_RETRY_BASE_MS: &str = "10";
const CHAOS_OUTAGE: Duration = Duration::from_secs(6);

/// The broker vanishes (every connection reset, every new one refused) while orders are being
/// paid and their stages run, for longer than the relay's whole retry schedule; then it comes
/// back. Nothing is dead-lettered, every order ends `shipped`, and the carrier is asked once per
/// shipment.
async fn a_broker_outage_longer_than_the_retry_schedule_loses_nothing(broker: Broker) {
    if !broker.available().await {
        return;
    }
    let started = std::time::Instant::now();
    let url = broker.url();
    let target = host_and_port(&url).to_owned();
    let proxy = proxy::CutProxy::start(&target).await;
    let namespace = format!("t{}", random_hex());
    let carrier = Carrier::start(|_, _| 200).await;
    let mut env = carrier.env(&[("ORDO_OUTBOX_RETRY_BASE_MS", CHAOS_RETRY_BASE_MS)]);
    env.push(("ORDO_BROKER_URL", url.replacen(&target, &proxy.address, 1)));
    env.push(("ORDO_BROKER_NAMESPACE", namespace.clone()));
    let server = TestServer::start_with_env(Backend::sqlite(), &env_refs(&env)).await;
    seed_single_sku(&server, "CHAOS-1", 1_000).await;

    // Order `i`, one CHAOS-1, created and paid: its id.
    let create_and_pay = async |i: usize| {
        let order = server
            .create_order(&order_body(&format!("chaos-{i}"), &[("CHAOS-1", 1)]))
            .await;
        let id = order["id"].as_str().unwrap().to_owned();
        server
            .post_json(&format!("/v1/orders/{id}/payments"), &serde_json::json!({}))
            .await
            .expect_status(201);
        id
    };
    let mut ids = Vec::new();
    // Orders paid before the outage: their stages are under way when it begins.
    for i in 0..5 {
        ids.push(create_and_pay(i).await);
    }
    proxy.cut();
    let outage = std::time::Instant::now();
    // Orders taken and paid during the outage: the API needs no broker (their events wait in
    // the outbox).
    for i in 5..15 {
        ids.push(create_and_pay(i).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(CHAOS_OUTAGE.saturating_sub(outage.elapsed())).await;
    let waiting = sql_i64s(
        &server,
        "SELECT COUNT(*) FROM outbox WHERE published_at_ms IS NULL",
    )
    .await[0][0];
    assert!(waiting > 0, "{broker:?}: no event waited for the broker");
    assert!(
        proxy.refused() > 0,
        "{broker:?}: ordo never tried to reach the broker during the outage"
    );
    proxy.restore();

    for id in &ids {
        let order = server
            .wait_for_order_status(id, "shipped", Duration::from_secs(60))
            .await;
        assert_eq!(order["status"], "shipped", "{broker:?}");
    }
    let dead = sql_i64s(
        &server,
        "SELECT COUNT(*) FROM outbox WHERE dead_at_ms IS NOT NULL",
    )
    .await[0][0];
    assert_eq!(dead, 0, "{broker:?}: an outage dead-lettered events");
    let mut pushes_per_shipment: HashMap<String, usize> = HashMap::new();
    for push in carrier.pushes() {
        *pushes_per_shipment.entry(push.shipment_id).or_default() += 1;
    }
    assert_eq!(
        pushes_per_shipment.len(),
        ids.len(),
        "{broker:?}: one shipment per order"
    );
    let repeated: Vec<_> = pushes_per_shipment
        .iter()
        .filter(|(_, n)| **n > 1)
        .collect();
    assert!(
        repeated.is_empty(),
        "{broker:?}: shipments pushed more than once: {repeated:?}"
    );
    remove_namespace(broker, &namespace).await;
    eprintln!(
        "{broker:?}: outage of {:?}, {} connections refused, {waiting} events waited; the drill took {:?}",
        CHAOS_OUTAGE,
        proxy.refused(),
        started.elapsed()
    );
}

/// Each scenario above as one test per broker: `<scenario>::rabbitmq` and `<scenario>::nats`.
macro_rules! on_each_broker {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread")]
            async fn rabbitmq() {
                super::$scenario(super::Broker::RabbitMq).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn nats() {
                super::$scenario(super::Broker::Nats).await;
            }
        }
    )*};
}

on_each_broker!(
    every_event_reaches_the_broker_with_its_trace_context,
    events_committed_before_a_kill_reach_the_broker_after_restart,
    the_pipeline_runs_over_the_broker_in_the_order_trace,
    a_broker_outage_longer_than_the_retry_schedule_loses_nothing,
);

/// An unreachable broker stops the start-up with an error naming `ORDO_BROKER_URL`, without
/// the password.
async fn an_unreachable_broker_fails_start_up(url: &str) {
    let workdir = tempfile::tempdir().expect("temporary directory");
    let database_url = format!("sqlite://{}/ordo.db", workdir.path().display());
    let mut process = ServerProcess::spawn_with_env(
        &database_url,
        workdir.path(),
        &[("ORDO_BROKER_URL".to_owned(), url.to_owned())],
    );
    let exit = process
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("ordo still runs against {url}\n{}", process.output()));
    let output = process.output();
    assert!(!exit.success(), "{output}");
    assert!(output.contains("ORDO_BROKER_URL"), "{output}");
    assert!(!output.contains("s3cret"), "the password leaked:\n{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_rabbitmq_fails_start_up() {
    an_unreachable_broker_fails_start_up("amqp://ordo:s3cret@127.0.0.1:1/%2f").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_nats_fails_start_up() {
    an_unreachable_broker_fails_start_up("nats://ordo:s3cret@127.0.0.1:1").await;
}

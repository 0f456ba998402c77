//! The broker transports' consumer side against real servers: a consumer registered with
//! [`ordo_outbox::transport::start`] receives every event with its trace context, is acked only
//! after it committed, gets failed events again (bounded), and dead-letters an event that keeps
//! failing; a duplicate publish changes nothing.
//!
//! Servers: `ORDO_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`) and
//! `ORDO_TEST_NATS_URL` (default `nats://127.0.0.1:4222`); unreachable: skipped loudly, except
//! in CI (`CI` set), where it fails.

use ordo_outbox::consumer::{Consumer, ConsumerRunner, HandleFuture};
use ordo_outbox::transport::{self, MAX_DELIVERIES};
use ordo_outbox::{Delivery, Envelope, Wakeup};
use ordo_storage::{Database, WriteTx, now_ms};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "probe.happened";
const DONE: &str = "probe.done";
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[derive(Default)]
struct Log {
    /// The latest delivery of each event id seen by `handle` (the broker counts them). A
    /// batch that fails is retried event by event, so `handle` may run twice in one
    /// delivery: calls are not deliveries.
    deliveries: HashMap<String, u32>,
    /// Events handled successfully, with the headers they arrived with.
    done: HashMap<String, Envelope>,
}

/// Fails the first deliveries of an event, as many as its payload's `fail` says (`-1`:
/// always); a success writes a `probe.done` event in the consumer's transaction, so what
/// committed can be counted.
struct Probe {
    name: &'static str,
    log: Arc<Mutex<Log>>,
}

impl Consumer for Probe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn topics(&self) -> &'static [&'static str] {
        &[TOPIC]
    }

    fn handle<'a>(&'a self, event: &'a Envelope, tx: &'a mut WriteTx) -> HandleFuture<'a> {
        Box::pin(async move {
            let attempt = event.delivery.attempt;
            {
                let mut log = self.log.lock().unwrap();
                let seen = log.deliveries.entry(event.event_id.clone()).or_default();
                *seen = (*seen).max(attempt);
                let fail = event.payload["fail"].as_i64().unwrap_or(0);
                if fail < 0 || i64::from(attempt) <= fail {
                    return Err(ordo_domain::Error::internal("the probe fails on purpose"));
                }
                log.done.insert(event.event_id.clone(), event.clone());
            }
            let payload = serde_json::json!({ "of": event.event_id });
            ordo_outbox::new_event(tx, DONE, &event.aggregate_id, &payload, now_ms()).await?;
            Ok(())
        })
    }
}

/// The `probe.done` events committed, per event handled.
async fn committed_effects(db: &Database) -> HashMap<String, u32> {
    let mut effects = HashMap::new();
    for row in db
        .claim_outbox("test", 1000, now_ms(), 60_000)
        .await
        .unwrap()
    {
        let payload: serde_json::Value = serde_json::from_str(&row.payload).unwrap();
        let of = payload["of"].as_str().unwrap().to_owned();
        *effects.entry(of).or_default() += 1;
    }
    effects
}

async fn reachable(url: &str) -> bool {
    let reached = if url.starts_with("amqp") {
        tokio::time::timeout(
            Duration::from_secs(5),
            lapin::Connection::connect(url, lapin::ConnectionProperties::default()),
        )
        .await
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()))
    } else {
        tokio::time::timeout(Duration::from_secs(5), async_nats::connect(url))
            .await
            .map_err(|_| "timed out".to_owned())
            .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()))
    };
    match reached {
        Ok(()) => true,
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("broker at {url} is unreachable in CI: {reason}")
        }
        Err(reason) => {
            eprintln!(
                "\n**********************************************************\n\
                 SKIPPED: broker unreachable at {url}: {reason}\n\
                 (run scripts/test.sh)\n\
                 **********************************************************\n"
            );
            false
        }
    }
}

fn event(id: &str, fail: i64) -> Envelope {
    Envelope {
        event_id: id.to_owned(),
        topic: TOPIC.to_owned(),
        aggregate_id: format!("ord_{id}"),
        payload: serde_json::json!({ "fail": fail }),
        headers: HashMap::from([("traceparent".to_owned(), TRACEPARENT.to_owned())]),
        delivery: Default::default(),
    }
}

fn unique() -> String {
    format!("{:016x}", uuid_like())
}

fn uuid_like() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.finish()
}

/// Stops the consumers and waits for each to finish.
async fn stop_consumers(stop: &CancellationToken, subscriptions: Vec<tokio::task::JoinHandle<()>>) {
    stop.cancel();
    for subscription in subscriptions {
        tokio::time::timeout(Duration::from_secs(10), subscription)
            .await
            .expect("consumers stop on cancellation")
            .unwrap();
    }
}

/// A scenario's own database (in the returned folder), broker namespace and consumer name
/// (`<prefix>_<unique>`).
async fn fresh_scenario(prefix: &str) -> (tempfile::TempDir, Database, String, &'static str) {
    let workdir = tempfile::tempdir().unwrap();
    let db = Database::connect(&format!("sqlite://{}/t.db", workdir.path().display()), 4)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let namespace = format!("t{}", unique());
    let name: &'static str = Box::leak(format!("{prefix}_{}", unique()).into_boxed_str());
    (workdir, db, namespace, name)
}

/// Runs the scenario on the broker at `url`; returns the namespace and consumer name used.
async fn consume_retry_and_dead_letter(url: &str) -> Option<(String, &'static str)> {
    if !reachable(url).await {
        return None;
    }
    let (_workdir, db, namespace, name) = fresh_scenario("probe").await;
    let log = Arc::new(Mutex::new(Log::default()));
    let runner = ConsumerRunner::new(
        Probe {
            name,
            log: Arc::clone(&log),
        },
        db.clone(),
        Wakeup::default(),
    );
    let stop = CancellationToken::new();
    let started = transport::start(Some(url), &namespace, vec![Arc::new(runner)], stop.clone())
        .await
        .unwrap_or_else(|e| panic!("start the transport at {url}: {e}"));

    let (ok, flaky, poison) = (
        event("evt_ok", 0),
        event("evt_flaky", 2),
        event("evt_poison", -1),
    );
    for e in [&ok, &flaky, &poison, &ok] {
        // `ok` twice: a duplicate publish is absorbed (by the broker or the processed ids).
        started.transport.publish(e).await.expect("the broker acks");
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        {
            let log = log.lock().unwrap();
            if log.done.len() == 2 && log.deliveries.get("evt_poison") == Some(&MAX_DELIVERIES) {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url}: deliveries so far {:?}",
            log.lock().unwrap().deliveries
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give a wrongly scheduled extra delivery the time to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_consumers(&stop, started.subscriptions).await;
    {
        let log = log.lock().unwrap();
        assert_eq!(
            log.deliveries["evt_flaky"], 3,
            "{url}: {:?}",
            log.deliveries
        );
        assert_eq!(
            log.deliveries["evt_poison"], MAX_DELIVERIES,
            "{url}: bounded: {:?}",
            log.deliveries
        );
        let received = &log.done["evt_ok"];
        let delivered_ok = Envelope {
            delivery: Delivery::numbered(1, MAX_DELIVERIES),
            ..ok.clone()
        };
        assert_eq!(received, &delivered_ok, "{url}: the envelope round-trips");
        assert_eq!(
            log.done["evt_flaky"].delivery.attempt, 3,
            "{url}: the broker counts deliveries"
        );
        assert_eq!(received.headers["traceparent"], TRACEPARENT);
        assert_eq!(log.done["evt_flaky"].aggregate_id, "ord_evt_flaky");
    }
    let effects = committed_effects(&db).await;
    assert_eq!(
        (
            effects.get("evt_ok"),
            effects.get("evt_flaky"),
            effects.get("evt_poison")
        ),
        (Some(&1), Some(&1), None),
        "{url}: each success committed once (the duplicate publish of evt_ok too), no failure did: {effects:?}"
    );
    db.close().await;
    Some((namespace, name))
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_consumers_retry_then_dead_letter() {
    let url = std::env::var("ORDO_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let Some((namespace, name)) = consume_retry_and_dead_letter(&url).await else {
        return;
    };
    use lapin::options::*;
    use lapin::types::FieldTable;
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let dead = transport::rabbitmq::dead_queue_name(&namespace, name);
    let queue = channel
        .queue_declare(
            dead.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the dead-letter queue exists");
    assert_eq!(queue.message_count(), 1, "one message in {dead}");
    delete_rabbitmq_namespace(&url, &namespace, name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_consumers_retry_then_dead_letter() {
    let url =
        std::env::var("ORDO_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let Some((namespace, name)) = consume_retry_and_dead_letter(&url).await else {
        return;
    };
    let jetstream = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let stream_name = transport::nats::stream_name(&namespace);
    let stream = jetstream.get_stream(&stream_name).await.unwrap();
    let dead = transport::nats::dead_subject(&namespace, name);
    let message = stream
        .get_last_raw_message_by_subject(&dead)
        .await
        .unwrap_or_else(|e| panic!("no dead letter on {dead}: {e}"));
    assert_eq!(message.subject.as_str(), dead);
    let _ = jetstream.delete_stream(&stream_name).await;
}

/// Records the order in which each order's events were handled, and how many batches began;
/// the first event it sees waits until `release` opens, so that the events published meanwhile
/// reach the consumer together.
struct Batcher {
    name: &'static str,
    handled: Arc<Mutex<Vec<(String, String)>>>,
    batches: Arc<std::sync::atomic::AtomicU32>,
    release: Arc<tokio::sync::Semaphore>,
}

impl Consumer for Batcher {
    fn name(&self) -> &'static str {
        self.name
    }

    fn topics(&self) -> &'static [&'static str] {
        &[TOPIC]
    }

    fn prepare<'a>(&'a self, _event: &'a Envelope) -> HandleFuture<'a> {
        Box::pin(async move {
            // Held until the test has published everything; then open for good.
            let _permit = self.release.acquire().await.expect("never closed");
            Ok(())
        })
    }

    fn begin_batch<'a>(
        &'a self,
        _events: &'a [&'a Envelope],
        _tx: &'a mut WriteTx,
    ) -> HandleFuture<'a> {
        self.batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }

    fn handle<'a>(&'a self, event: &'a Envelope, _tx: &'a mut WriteTx) -> HandleFuture<'a> {
        Box::pin(async move {
            self.handled
                .lock()
                .unwrap()
                .push((event.aggregate_id.clone(), event.event_id.clone()));
            Ok(())
        })
    }
}

/// A broker hands a consumer the messages it has delivered together as one batch (one
/// transaction), one event per order in a batch, so each order's events are still handled in
/// their order, and every event exactly once. Returns the namespace and consumer name used.
async fn batches_keep_each_order_in_its_order(url: &str) -> Option<(String, &'static str)> {
    if !reachable(url).await {
        return None;
    }
    let (_workdir, db, namespace, name) = fresh_scenario("batcher").await;
    let handled = Arc::new(Mutex::new(Vec::new()));
    let batches = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let runner = ConsumerRunner::new(
        Batcher {
            name,
            handled: Arc::clone(&handled),
            batches: Arc::clone(&batches),
            release: Arc::clone(&release),
        },
        db.clone(),
        Wakeup::default(),
    );
    let stop = CancellationToken::new();
    let started = transport::start(Some(url), &namespace, vec![Arc::new(runner)], stop.clone())
        .await
        .unwrap();

    // Three orders; order `a` has three events, `b` two, `c` one.
    let published = [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("c", "c1"),
        ("a", "a3"),
        ("b", "b2"),
    ];
    for (order, id) in published {
        let event = Envelope {
            aggregate_id: format!("ord_{order}"),
            ..event(&format!("evt_{id}_{namespace}"), 0)
        };
        started
            .transport
            .publish(&event)
            .await
            .expect("the broker acks");
    }
    // Everything is delivered before the first event is let through.
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.add_permits(1_000);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while handled.lock().unwrap().len() < published.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "handled so far: {:?}",
            handled.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_consumers(&stop, started.subscriptions).await;

    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled.len(), published.len(), "each once: {handled:?}");
    for order in ["a", "b", "c"] {
        let of_order: Vec<String> = handled
            .iter()
            .filter(|(aggregate, _)| *aggregate == format!("ord_{order}"))
            .map(|(_, id)| id.split('_').nth(1).unwrap().to_owned())
            .collect();
        let expected: Vec<String> = published
            .iter()
            .filter(|(o, _)| *o == order)
            .map(|(_, id)| (*id).to_owned())
            .collect();
        assert_eq!(of_order, expected, "order {order} in its order");
    }
    assert!(
        batches.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "{url}: the events delivered together were handled in a batch"
    );
    db.close().await;
    Some((namespace, name))
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_delivers_what_it_has_in_batches_each_order_in_its_order() {
    let url =
        std::env::var("ORDO_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let Some((namespace, _)) = batches_keep_each_order_in_its_order(&url).await else {
        return;
    };
    let jetstream = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let _ = jetstream
        .delete_stream(transport::nats::stream_name(&namespace))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_delivers_what_it_has_in_batches_each_order_in_its_order() {
    let url = std::env::var("ORDO_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let Some((namespace, name)) = batches_keep_each_order_in_its_order(&url).await else {
        return;
    };
    delete_rabbitmq_namespace(&url, &namespace, name).await;
}

/// Deletes the queues and the exchange a RabbitMQ test used.
async fn delete_rabbitmq_namespace(url: &str, namespace: &str, name: &str) {
    use lapin::options::*;
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let dead = transport::rabbitmq::dead_queue_name(namespace, name);
    let live = transport::rabbitmq::queue_name(namespace, name);
    for q in [&dead, &live] {
        let _ = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = channel
        .exchange_delete(
            transport::rabbitmq::exchange_name(namespace)
                .as_str()
                .into(),
            ExchangeDeleteOptions::default(),
        )
        .await;
}

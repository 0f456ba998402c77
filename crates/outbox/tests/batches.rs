//! A batch of events for one consumer commits in one transaction, and is never worse than the
//! events one by one: an event that fails in a batch fails alone (its partial writes rolled
//! back, the others committed), a redelivered event is recognised in a batch as it is alone,
//! and each event's effect is written exactly once. Both backends: SQLite (savepoint in the
//! writer's group) and PostgreSQL (a failed statement aborts the whole transaction).

use ordo_outbox::consumer::{Consumer, ConsumerRunner, HandleFuture};
use ordo_outbox::{Delivery, Envelope, Wakeup};
use ordo_storage::{Database, WriteTx, now_ms};
use ordo_testkit::{Backend, TestDatabase};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const TOPIC: &str = "probe.happened";
const DONE: &str = "probe.done";

/// Writes a `probe.done` event per event it handles, then fails the events whose payload says
/// `"fail": true` (after writing: the write must not survive).
struct Probe {
    calls: Arc<Mutex<HashMap<String, u32>>>,
}

impl Consumer for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn topics(&self) -> &'static [&'static str] {
        &[TOPIC]
    }

    fn handle<'a>(&'a self, event: &'a Envelope, tx: &'a mut WriteTx) -> HandleFuture<'a> {
        Box::pin(async move {
            *self
                .calls
                .lock()
                .unwrap()
                .entry(event.event_id.clone())
                .or_default() += 1;
            let payload = serde_json::json!({ "of": event.event_id });
            ordo_outbox::new_event(tx, DONE, &event.aggregate_id, &payload, now_ms()).await?;
            if event.payload["fail"].as_bool() == Some(true) {
                return Err(ordo_domain::Error::internal("the probe fails on purpose"));
            }
            Ok(())
        })
    }
}

fn event(n: usize, fail: bool) -> Envelope {
    Envelope {
        event_id: format!("evt_batch_{n}"),
        topic: TOPIC.to_owned(),
        aggregate_id: format!("ord_{n}"),
        payload: serde_json::json!({ "fail": fail }),
        headers: HashMap::new(),
        delivery: Delivery::numbered(1, 8),
    }
}

/// The `probe.done` events committed, per order.
async fn effects(db: &Database) -> HashMap<String, usize> {
    let mut done = HashMap::new();
    for row in db
        .claim_outbox("test", 1000, now_ms(), 60_000)
        .await
        .unwrap()
    {
        if row.topic == DONE {
            *done.entry(row.aggregate_id).or_default() += 1;
        }
    }
    done
}

async fn a_failing_event_fails_alone_and_every_effect_is_written_once(backend: Backend) {
    let workdir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(&backend, workdir.path()).await;
    let db = Database::connect(&database.url, 4).await.unwrap();
    db.migrate().await.unwrap();
    let calls = Arc::new(Mutex::new(HashMap::new()));
    let runner = ConsumerRunner::new(
        Probe {
            calls: Arc::clone(&calls),
        },
        db.clone(),
        Wakeup::default(),
    );

    // Six events, the fourth of which fails.
    let events: Vec<Envelope> = (0..6).map(|n| event(n, n == 3)).collect();
    let batch: Vec<&Envelope> = events.iter().collect();
    let attempts = runner.attempt_batch(&batch, "test").await;
    let failed: Vec<usize> = (0..6).filter(|&n| attempts[n].result.is_err()).collect();
    assert_eq!(failed, vec![3], "only the failing event fails");
    let done = effects(&db).await;
    assert_eq!(done.len(), 5, "{done:?}");
    assert!(
        done.values().all(|&count| count == 1),
        "each effect once: {done:?}"
    );
    assert!(
        !done.contains_key("ord_3"),
        "the failed event's write rolled back"
    );

    // Delivered again with two new events: the five that committed are recognised and not
    // handled again; the one that failed is handled again (and fails again), the new ones
    // commit together.
    let before: HashMap<String, u32> = calls.lock().unwrap().clone();
    let again: Vec<Envelope> = (0..8).map(|n| event(n, n == 3)).collect();
    let batch: Vec<&Envelope> = again.iter().collect();
    let attempts = runner.attempt_batch(&batch, "test").await;
    let failed: Vec<usize> = (0..8).filter(|&n| attempts[n].result.is_err()).collect();
    assert_eq!(failed, vec![3]);
    let after = calls.lock().unwrap().clone();
    for n in [0, 1, 2, 4, 5] {
        let id = format!("evt_batch_{n}");
        assert_eq!(after[&id], before[&id], "{id} was processed already");
    }
    let done = effects(&db).await;
    assert_eq!(done.len(), 2, "only the two new events' effects: {done:?}");
    assert!(done.contains_key("ord_6") && done.contains_key("ord_7"));

    // The failing event, fixed, goes through on its own.
    let fixed = event(3, false);
    let attempts = runner.attempt_batch(&[&fixed], "test").await;
    assert!(attempts[0].result.is_ok());
    assert_eq!(effects(&db).await.get("ord_3"), Some(&1));
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_a_failing_event_fails_alone_and_every_effect_is_written_once() {
    a_failing_event_fails_alone_and_every_effect_is_written_once(Backend::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_failing_event_fails_alone_and_every_effect_is_written_once() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    a_failing_event_fails_alone_and_every_effect_is_written_once(backend).await;
}

//! A broker that is away is not a poison message: the relay waits an outage out — however many
//! rounds it lasts — without counting it toward any event's attempts or dead-lettering anything,
//! and publishes everything once the transport is back.

use ordo_domain::{Error, Result};
use ordo_outbox::transport::{PublishFuture, Transport};
use ordo_outbox::{Envelope, Relay, Wakeup};
use ordo_storage::{Database, now_ms};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A broker stand-in: away (every publish fails) until told otherwise.
#[derive(Default)]
struct Broker {
    away: AtomicBool,
    tries: AtomicUsize,
    stored: Mutex<Vec<String>>,
}

impl Transport for Broker {
    fn system(&self) -> &'static str {
        "test_broker"
    }

    fn publish<'a>(&'a self, event: &'a Envelope) -> PublishFuture<'a> {
        Box::pin(async move {
            self.tries.fetch_add(1, Ordering::SeqCst);
            if self.away.load(Ordering::SeqCst) {
                return Err(Error::unavailable("connection refused"));
            }
            self.stored.lock().unwrap().push(event.event_id.clone());
            Ok(())
        })
    }
}

async fn database() -> (Database, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::connect(&format!("sqlite://{}/ordo.db", dir.path().display()), 4)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    (db, dir)
}

async fn until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_longer_than_every_attempt_dead_letters_nothing() -> Result<()> {
    const EVENTS: usize = 5;
    let (db, _dir) = database().await;
    let mut tx = db.begin().await?;
    for i in 0..EVENTS {
        let payload = serde_json::json!({ "n": i });
        ordo_outbox::new_event(
            &mut tx,
            "probe.happened",
            &format!("ord_{i}"),
            &payload,
            now_ms(),
        )
        .await?;
    }
    tx.commit().await?;

    let broker = Arc::new(Broker::default());
    broker.away.store(true, Ordering::SeqCst);
    let relay = Relay::new(
        db.clone(),
        Arc::clone(&broker) as Arc<dyn Transport>,
        Wakeup::default(),
    )
    .with_retry_base(Duration::from_millis(1));

    // Ten tries of every event while the broker is away: more than the relay's attempts.
    let rounds = ordo_outbox::relay::MAX_ATTEMPTS as usize + 2;
    until("ten tries per event", Duration::from_secs(20), async || {
        relay.publish_pending().await;
        broker.tries.load(Ordering::SeqCst) >= rounds * EVENTS
    })
    .await;
    let backlog = db.outbox_backlog().await?;
    assert_eq!((backlog.pending, backlog.dead), (EVENTS as i64, 0));
    let attempts: Vec<Vec<i64>> = db
        .query_unchecked("SELECT COALESCE(MAX(attempts), 0) FROM outbox")
        .await?;
    assert_eq!(
        attempts,
        [[0]],
        "an outage counts toward no event's attempts"
    );

    broker.away.store(false, Ordering::SeqCst);
    until(
        "everything published",
        Duration::from_secs(10),
        async || {
            relay.publish_pending().await;
            db.outbox_backlog().await.is_ok_and(|b| b.pending == 0)
        },
    )
    .await;
    let mut stored = broker.stored.lock().unwrap().clone();
    stored.sort();
    stored.dedup();
    assert_eq!(
        stored.len(),
        EVENTS,
        "every event published once the broker is back"
    );
    assert_eq!(db.outbox_backlog().await?.dead, 0);
    Ok(())
}

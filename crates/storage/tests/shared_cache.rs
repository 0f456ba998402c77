//! The Redis tier of the read cache against the machine's real Redis (127.0.0.1:6379; the
//! test script starts it, and a missing Redis fails these tests). Each test has a namespace
//! of its own, so that epoch bumps of one do not disturb another.

use ordo_storage::cache::shared::{SharedCache, SharedLookup};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::oneshot;

const REDIS: &str = "redis://127.0.0.1:6379";

fn namespace(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("ordo-test-{test}-{}-{nanos}", std::process::id())
}

fn instance(namespace: &str) -> Arc<SharedCache> {
    Arc::new(SharedCache::new(REDIS, namespace).expect("a valid URL"))
}

async fn read(
    cache: &SharedCache,
    key: &str,
    value: Option<&'static str>,
) -> (Option<String>, SharedLookup) {
    let (found, lookup) = cache
        .get_or_load("order", key, || async move { Ok(value.map(str::to_owned)) })
        .await;
    (found.expect("the load does not fail"), lookup)
}

/// A read that must be answered by Redis (its load would fail the test).
async fn cached(cache: &SharedCache, key: &str) -> (Option<String>, SharedLookup) {
    let (found, lookup) = cache
        .get_or_load::<String, _, _>("order", key, || async {
            panic!("{key}: loaded from the database, expected a Redis hit")
        })
        .await;
    (found.unwrap(), lookup)
}

#[tokio::test]
async fn a_read_is_stored_and_an_invalidation_forgets_it() {
    let cache = instance(&namespace("roundtrip"));
    cache
        .ping()
        .await
        .expect("Redis at 127.0.0.1:6379 (scripts/test.sh starts it)");
    assert_eq!(
        read(&cache, "ord_1", Some("v1")).await,
        (Some("v1".into()), SharedLookup::Miss)
    );
    assert_eq!(
        cached(&cache, "ord_1").await,
        (Some("v1".into()), SharedLookup::Hit)
    );
    cache.invalidate("order", &["ord_1"]).await;
    assert_eq!(
        read(&cache, "ord_1", Some("v2")).await,
        (Some("v2".into()), SharedLookup::Miss)
    );

    // Unknown ids are cached as absent, and forgotten like the rest.
    assert_eq!(
        read(&cache, "ord_2", None).await,
        (None, SharedLookup::Miss)
    );
    assert_eq!(cached(&cache, "ord_2").await, (None, SharedLookup::Absent));
    cache.invalidate("order", &["ord_2"]).await;
    assert_eq!(
        read(&cache, "ord_2", Some("created")).await,
        (Some("created".into()), SharedLookup::Miss)
    );
}

/// The race of cache-aside, played in a fixed order across two instances: instance A misses
/// and reads the old row; instance B's write commits and invalidates; only then does A's
/// answer reach Redis. It must not be stored: the next read of either instance loads the new
/// state.
#[tokio::test]
async fn a_miss_older_than_another_instances_invalidation_is_not_written_back() {
    let namespace = namespace("race");
    let (a, b) = (instance(&namespace), instance(&namespace));
    // Both have begun (each bumps the epoch once, at its first read).
    read(&a, "warm-a", Some("x")).await;
    read(&b, "warm-b", Some("x")).await;

    let (has_read, read_done) = oneshot::channel::<()>();
    let (release, released) = oneshot::channel::<()>();
    let slow = tokio::spawn({
        let a = Arc::clone(&a);
        async move {
            a.get_or_load("order", "ord_race", || async move {
                let _ = has_read.send(());
                let _ = released.await;
                Ok(Some("old".to_owned()))
            })
            .await
        }
    });
    read_done.await.unwrap(); // A's database read saw the state before the write
    b.invalidate("order", &["ord_race"]).await; // B's write committed
    release.send(()).unwrap(); // only now does A try to write back
    let (found, lookup) = slow.await.unwrap();
    assert_eq!(
        (found.unwrap(), lookup),
        (Some("old".into()), SharedLookup::Miss),
        "A answers its own request with what it read"
    );

    let loads = AtomicU32::new(0);
    let (found, lookup) = b
        .get_or_load("order", "ord_race", || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(Some("new".to_owned()))
        })
        .await;
    assert_eq!(
        (found.unwrap(), lookup, loads.load(Ordering::SeqCst)),
        (Some("new".into()), SharedLookup::Miss, 1),
        "the stale write-back must have been refused"
    );
    assert_eq!(
        cached(&a, "ord_race").await,
        (Some("new".into()), SharedLookup::Hit)
    );
}

/// A new instance retires every entry written before it began (it cannot know what an
/// instance that died while Redis was unreachable changed).
#[tokio::test]
async fn a_new_instance_retires_the_entries_written_before_it() {
    let namespace = namespace("epoch");
    let first = instance(&namespace);
    read(&first, "ord_e", Some("before")).await;
    assert_eq!(cached(&first, "ord_e").await.1, SharedLookup::Hit);

    let second = instance(&namespace);
    assert_eq!(
        read(&second, "ord_e", Some("after")).await,
        (Some("after".into()), SharedLookup::Miss)
    );
    assert_eq!(
        cached(&first, "ord_e").await,
        (Some("after".into()), SharedLookup::Hit)
    );
}

/// Redis unreachable: the database answers every read, each counted as an error, and a write
/// does not wait for Redis.
#[tokio::test]
async fn an_unreachable_redis_sends_reads_to_the_database() {
    let cache = instance(&namespace("down"));
    let down = SharedCache::new("redis://127.0.0.1:1", "ordo-test-down").unwrap();
    assert!(down.ping().await.is_err());
    for _ in 0..3 {
        assert_eq!(
            read(&down, "ord_d", Some("db")).await,
            (Some("db".into()), SharedLookup::Error)
        );
    }
    down.invalidate("order", &["ord_d"]).await;
    // The healthy instance is not disturbed by the other's failures.
    assert_eq!(
        read(&cache, "ord_d", Some("db")).await.1,
        SharedLookup::Miss
    );
    assert_eq!(cached(&cache, "ord_d").await.1, SharedLookup::Hit);
}

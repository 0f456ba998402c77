//! The Redis read cache (`ORDO_REDIS_URL`), end to end against the real binary and a
//! `redis-server` of each test's own, which the tests freeze, kill and restart: reads served
//! from Redis, every write seen by the next read, no 5xx and no stale read across Redis
//! outages, a write on one instance seen by another.

use ordo_testkit::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

backend_tests!(reads_come_from_redis_and_every_write_is_seen_by_the_next_read);

/// Longer than the in-process cache's TTL: the next read asks Redis.
const PAST_LOCAL_TTL: Duration = Duration::from_millis(1100);

async fn server_with_redis(backend: Backend, redis: &RedisServer) -> TestServer {
    TestServer::start_with_env(backend, &[("ORDO_REDIS_URL", &redis.url())]).await
}

async fn created_order(server: &TestServer, customer: &str) -> (String, Value) {
    seed_catalog(server).await;
    let order = server
        .create_order(&order_body(customer, &[(TEA, 1)]))
        .await;
    (order["id"].as_str().unwrap().to_owned(), order)
}

async fn reads_come_from_redis_and_every_write_is_seen_by_the_next_read(backend: Backend) {
    let redis = RedisServer::start().await;
    let server = server_with_redis(backend, &redis).await;
    let (id, order) = created_order(&server, "redis-reads").await;

    assert_eq!(server.get_order(&id).await, order);
    tokio::time::sleep(PAST_LOCAL_TTL).await;
    let redis_hits = cache_requests(&server, "redis", "hit").await;
    assert_eq!(server.get_order(&id).await, order);
    assert!(
        cache_requests(&server, "redis", "hit").await > redis_hits,
        "past the local TTL, the read is a Redis hit"
    );

    let cancelled = server.cancel_order(&id).await.expect_status(200).body;
    assert_eq!(server.get_order(&id).await, cancelled);
    tokio::time::sleep(PAST_LOCAL_TTL).await;
    assert_eq!(
        server.get_order(&id).await,
        cancelled,
        "Redis was invalidated"
    );

    // An unknown product is cached as absent in Redis too; its PUT is seen by the next read.
    let path = "/v1/products/REDIS-1";
    server.get(path).await.expect_status(404);
    tokio::time::sleep(PAST_LOCAL_TTL).await;
    let absent = cache_requests(&server, "redis", "absent").await;
    server.get(path).await.expect_status(404);
    assert!(cache_requests(&server, "redis", "absent").await > absent);
    let body = json!({ "name": "Redis tea", "price": money(300, "USD") });
    server.put_json(path, &body).await.expect_status(200);
    assert_eq!(
        server.get(path).await.expect_status(200).body["name"],
        "Redis tea"
    );
}

/// Redis stops answering: reads keep coming from the database, a write made meanwhile is
/// answered at once, and once Redis answers again the entry it still holds from before the
/// write is never served — then the cache is used again by itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_redis_costs_no_error_and_no_stale_read_after_it_thaws() {
    let redis = RedisServer::start().await;
    let server = server_with_redis(Backend::sqlite(), &redis).await;
    let (id, order) = created_order(&server, "redis-frozen").await;
    server.get_order(&id).await; // now in Redis, as pending_payment
    tokio::time::sleep(PAST_LOCAL_TTL).await;

    redis.freeze();
    assert_eq!(server.get_order(&id).await, order, "the database answers");
    server.admin_get("/readyz").await.expect_status(200);
    let errors = cache_requests(&server, "redis", "error").await;
    assert!(errors > 0, "the failed Redis lookup is counted");
    // The write cannot reach Redis: the entry there stays pending_payment.
    let cancelled = server.cancel_order(&id).await.expect_status(200).body;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(server.get_order(&id).await, cancelled);

    redis.thaw();
    let hits = cache_requests(&server, "redis", "hit").await;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(
            server.get_order(&id).await["status"],
            "cancelled",
            "a read after the thaw served the entry written before the cancel"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cache_requests(&server, "redis", "hit").await > hits,
        "the cache is used again by itself"
    );
}

/// Redis killed and restarted (empty) under a steady read load: no client sees an error or
/// an old state.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_restart_under_load_costs_no_error() {
    let mut redis = RedisServer::start().await;
    let server = std::sync::Arc::new(server_with_redis(Backend::sqlite(), &redis).await);
    let (id, order) = created_order(&server, "redis-restart").await;

    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (server, id) = (std::sync::Arc::clone(&server), id.clone());
            tokio::spawn(async move {
                let mut reads = 0;
                let until = Instant::now() + Duration::from_secs(4);
                while Instant::now() < until {
                    let reply = server.get(&format!("/v1/orders/{id}")).await;
                    assert_eq!(reply.status, 200, "{:?}", reply.body);
                    assert_eq!(reply.body["status"], "pending_payment");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart().await;
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.expect("no reader saw an error");
    }
    assert!(reads > 100, "the load kept flowing: {reads} reads");
    assert_eq!(server.get_order(&id).await, order);
    let hits = cache_requests(&server, "redis", "hit").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.get_order(&id).await;
    tokio::time::sleep(PAST_LOCAL_TTL).await;
    server.get_order(&id).await;
    assert!(cache_requests(&server, "redis", "hit").await > hits);
}

/// Redis is optional: unreachable at start-up, ordo starts, names it in a warning, and serves.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_redis_at_start_up_is_a_warning_not_a_failure() {
    let server = TestServer::start_with_env(
        Backend::sqlite(),
        &[("ORDO_REDIS_URL", "redis://127.0.0.1:1")],
    )
    .await;
    let warning = server
        .logs()
        .into_iter()
        .find(|line| line.contains("Redis is unreachable"))
        .unwrap_or_else(|| panic!("no warning names Redis:\n{}", server.output()));
    assert!(
        warning.contains("\"WARN\"") || warning.contains("warn"),
        "{warning}"
    );
    let (id, order) = created_order(&server, "redis-unreachable").await;
    assert_eq!(server.get_order(&id).await, order);
    server.admin_get("/readyz").await.expect_status(200);
}

/// Two instances share one database and one Redis: a write on one is seen by a read on the
/// other once the reader's in-process entry has expired (at most 1 s), never later.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_on_one_instance_is_seen_by_the_other_within_a_second() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let redis = RedisServer::start().await;
    let writer = server_with_redis(backend, &redis).await;
    let (id, order) = created_order(&writer, "redis-two").await;
    let workdir = tempfile::tempdir().unwrap();
    let mut other = ServerProcess::spawn_with_env(
        writer.database_url(),
        workdir.path(),
        &[("ORDO_REDIS_URL".to_owned(), redis.url())],
    );
    let other_url = format!("http://{}", other.wait_ready().await.http_addr);
    let client = http_client();
    let read_on_other = || async {
        let response = client
            .get(format!("{other_url}/v1/orders/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()
    };
    assert_eq!(read_on_other().await, order);

    let cancelled = writer.cancel_order(&id).await.expect_status(200).body;
    let written = Instant::now();
    loop {
        let seen = read_on_other().await;
        if seen == cancelled {
            break;
        }
        assert!(
            // The contract's 1 s, plus the time a read takes here.
            written.elapsed() < Duration::from_millis(1300),
            "the other instance still serves the old state {:?} after {:?}",
            seen["status"],
            written.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    other.kill9();
}

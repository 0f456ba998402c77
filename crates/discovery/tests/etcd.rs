//! Discovery through a real etcd: each test starts its own `etcd` process (Debian package
//! `etcd-server`) on free ports with a temporary data directory through
//! [`ordo_discovery::testing::EtcdServer`], which kills it when the test ends. Without an `etcd`
//! binary the tests that need one are skipped loudly, except in CI (`CI` set), where that fails
//! them.

#![cfg(feature = "etcd")]

use ordo_discovery::testing::EtcdServer;
use ordo_discovery::{Discovery, Instance, Members};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "ordo-test";

/// Log the crate's warnings (retries) in the test output, where a failure shows them.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("ordo_discovery=debug")
        .with_test_writer()
        .try_init();
}

async fn connect(server: &EtcdServer) -> Discovery {
    Discovery::etcd(&server.url(), NAMESPACE)
        .await
        .expect("connects to the test etcd")
}

fn instance(id: &str, address: &str) -> Instance {
    Instance {
        id: id.to_owned(),
        address: address.to_owned(),
    }
}

fn ids(set: &BTreeSet<Instance>) -> Vec<&str> {
    set.iter().map(|instance| instance.id.as_str()).collect()
}

/// Waits until the members satisfy `done`, failing after `within` with the last set seen.
async fn eventually(
    members: &mut Members,
    within: Duration,
    what: &str,
    done: impl FnMut(&BTreeSet<Instance>) -> bool,
) {
    if tokio::time::timeout(within, members.wait_for(done))
        .await
        .is_err()
    {
        panic!(
            "not {what} within {within:?}; members: {:?}",
            ids(&members.borrow())
        );
    }
}

#[tokio::test]
async fn a_registered_instance_appears_in_another_discoverys_members_and_leaves_at_deregistration()
{
    logs();
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let serving = connect(&server).await;
    let reading = connect(&server).await;
    let mut orders = reading.members("orders").await.unwrap();
    assert!(orders.borrow().is_empty());
    assert_eq!(reading.kind(), "etcd");

    let registration = serving
        .register("orders", "orders-1", "127.0.0.1:50061")
        .await
        .unwrap();
    let expected = instance("orders-1", "http://127.0.0.1:50061");
    eventually(&mut orders, Duration::from_secs(5), "registered", |set| {
        set.contains(&expected)
    })
    .await;
    // Another role's members do not see it, nor does a fresh listing miss it.
    assert!(
        reading
            .members("inventory")
            .await
            .unwrap()
            .borrow()
            .is_empty()
    );
    assert_eq!(
        *reading.members("orders").await.unwrap().borrow(),
        BTreeSet::from([expected])
    );

    let started = Instant::now();
    registration.deregister().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "deregistration is bounded"
    );
    // At once, not after the TTL (10 s by default).
    eventually(&mut orders, Duration::from_secs(3), "deregistered", |set| {
        set.is_empty()
    })
    .await;
}

#[tokio::test]
async fn when_one_of_two_instances_deregisters_the_set_shrinks_to_the_other() {
    logs();
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let discovery = connect(&server).await;
    let mut inventory = discovery.members("inventory").await.unwrap();
    let first = discovery
        .register("inventory", "inventory-1", "http://127.0.0.1:50071")
        .await
        .unwrap();
    let second = discovery
        .register("inventory", "inventory-2", "http://127.0.0.1:50072")
        .await
        .unwrap();
    eventually(
        &mut inventory,
        Duration::from_secs(5),
        "both registered",
        |set| set.len() == 2,
    )
    .await;

    first.deregister().await;
    eventually(
        &mut inventory,
        Duration::from_secs(3),
        "down to one",
        |set| set.len() == 1,
    )
    .await;
    assert_eq!(
        *inventory.borrow(),
        BTreeSet::from([instance("inventory-2", "http://127.0.0.1:50072")])
    );
    second.deregister().await;
}

#[tokio::test]
async fn a_registration_outlives_its_ttl_while_kept_alive_and_expires_one_ttl_after_it_stops() {
    logs();
    let Some(server) = EtcdServer::start().await else {
        return;
    };
    let ttl = Duration::from_secs(2);
    let serving = connect(&server).await.with_ttl(ttl);
    let reading = connect(&server).await;
    let registration = serving
        .register("payments", "payments-1", "127.0.0.1:50081")
        .await
        .unwrap();
    let mut payments = reading.members("payments").await.unwrap();
    assert_eq!(ids(&payments.borrow_and_update()), ["payments-1"]);

    // Kept alive: still there after more than twice the TTL, never removed meanwhile.
    tokio::time::sleep(ttl * 5 / 2).await;
    assert!(
        !payments.has_changed().unwrap(),
        "the kept-alive registration changed: {:?}",
        ids(&payments.borrow())
    );

    // The process "dies": nobody keeps the lease alive any more, nobody revokes it.
    drop(registration);
    let stopped = Instant::now();
    eventually(
        &mut payments,
        ttl + Duration::from_secs(3),
        "expired",
        |set| set.is_empty(),
    )
    .await;
    eprintln!(
        "expired {:?} after the keep-alive stopped",
        stopped.elapsed()
    );
}

#[tokio::test]
async fn members_converge_after_etcd_restarts() {
    logs();
    let Some(mut server) = EtcdServer::start().await else {
        return;
    };
    // A short TTL, so that the registration made before the restart outlives it only if its
    // keep-alive recovers (etcd keeps leases across a restart, but not their renewal).
    let ttl = Duration::from_secs(2);
    let serving = connect(&server).await.with_ttl(ttl);
    let reading = connect(&server).await;
    let mut workers = reading.members("workers").await.unwrap();
    let before = serving
        .register("workers", "workers-1", "127.0.0.1:50091")
        .await
        .unwrap();
    eventually(&mut workers, Duration::from_secs(5), "registered", |set| {
        set.len() == 1
    })
    .await;

    server.kill();
    // Long enough for the watch and the keep-alive to notice and start retrying.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart().await;

    // Registering needs no new Discovery: the existing connection redials.
    let after = serving
        .register("workers", "workers-2", "127.0.0.1:50092")
        .await
        .unwrap();
    eventually(
        &mut workers,
        Duration::from_secs(15),
        "converged on both workers",
        |set| ids(set) == ["workers-1", "workers-2"],
    )
    .await;
    assert_eq!(
        *workers.borrow(),
        BTreeSet::from([
            instance("workers-1", "http://127.0.0.1:50091"),
            instance("workers-2", "http://127.0.0.1:50092"),
        ])
    );

    // The registration from before the restart is kept alive again: still listed after more
    // than twice its TTL.
    tokio::time::sleep(ttl * 5 / 2).await;
    assert_eq!(ids(&workers.borrow()), ["workers-1", "workers-2"]);

    // And the followed set still follows: a deregistration after the restart shows.
    before.deregister().await;
    eventually(
        &mut workers,
        Duration::from_secs(5),
        "down to workers-2",
        |set| ids(set) == ["workers-2"],
    )
    .await;
    after.deregister().await;
}

#[tokio::test]
async fn unknown_schemes_and_unreachable_etcd_fail_fast_with_an_error() {
    logs();
    let bounded = Duration::from_secs(15);
    let bogus = tokio::time::timeout(
        bounded,
        Discovery::from_url(Some("bogus://x"), NAMESPACE, HashMap::new()),
    )
    .await
    .expect("from_url answers at once")
    .unwrap_err();
    assert!(bogus.0.contains("bogus://x"), "{bogus}");

    let started = Instant::now();
    let unreachable =
        tokio::time::timeout(bounded, Discovery::etcd("etcd://127.0.0.1:1", NAMESPACE))
            .await
            .expect("an unreachable etcd is reported, not waited on forever")
            .unwrap_err();
    assert!(unreachable.0.contains("127.0.0.1:1"), "{unreachable}");
    eprintln!(
        "unreachable etcd reported after {:?}: {unreachable}",
        started.elapsed()
    );

    let malformed = Discovery::from_url(Some("etcd://127.0.0.1"), NAMESPACE, HashMap::new())
        .await
        .unwrap_err();
    assert!(malformed.0.contains("etcd://127.0.0.1"), "{malformed}");
}

#[tokio::test]
async fn deregistering_while_etcd_is_down_returns_within_its_bound() {
    logs();
    let Some(mut server) = EtcdServer::start().await else {
        return;
    };
    let discovery = connect(&server).await;
    let registration = discovery
        .register("edge", "edge-1", "127.0.0.1:50101")
        .await
        .unwrap();
    server.kill();
    let started = Instant::now();
    registration.deregister().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "deregistration took {:?}",
        started.elapsed()
    );
}

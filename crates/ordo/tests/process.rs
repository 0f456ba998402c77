//! The process's life: kill -9 loses no committed order, SIGTERM under load fails no accepted
//! request and exits 0, and a database that cannot be reached stops start-up with a clear error.
//! Runs on SQLite and PostgreSQL. A PostgreSQL outage while running answers 503 fast and heals.

use ordo_testkit::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

backend_tests!(
    kill9_and_restart_loses_no_committed_order,
    sigterm_under_load_fails_no_accepted_request,
    unreachable_database_fails_start_up_fast,
);

const SKU: &str = "DUR-1";

fn quantity_for(i: usize) -> i64 {
    1 + (i % 3) as i64
}

fn order_quantity(order: &Value) -> i64 {
    order["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["quantity"].as_i64().expect("quantity"))
        .sum()
}

/// The ids of `orders`.
fn ids_of<'a>(orders: impl IntoIterator<Item = &'a Value>) -> BTreeSet<String> {
    orders
        .into_iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every order answered 201 is stored with exactly the content it was answered with.
async fn assert_orders_survived(server: &TestServer, answered: &[Value]) {
    for order in answered {
        let id = order["id"].as_str().expect("order id");
        let reply = server.get(&format!("/v1/orders/{id}")).await;
        assert_eq!(
            reply.status, 200,
            "order {id} answered 201 is gone after the restart: {}",
            reply.text
        );
        assert_eq!(&reply.body, order, "order {id} changed across the restart");
    }
}

/// Reserved stock equals what the stored (pending) orders hold: reservations and orders were
/// committed together.
async fn assert_reservations_match_orders(server: &TestServer) -> Vec<Value> {
    let stored = server.list_all_orders("").await;
    let held: i64 = stored.iter().map(order_quantity).sum();
    assert_eq!(
        server.reserved(SKU).await,
        held,
        "reserved stock differs from the quantities of the {} stored orders",
        stored.len()
    );
    stored
}

/// Creates orders from `workers` concurrent tasks until a request fails at the transport level
/// (the server died) or `stop` is set; returns the orders answered 201, and every other status.
struct LoadResult {
    created: Vec<Value>,
    statuses: BTreeMap<u16, usize>,
    failures: Vec<String>,
}

struct Load {
    created: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Set just before the server is signalled: transport errors are expected from then on.
    signalled: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<LoadResult>>,
}

impl Load {
    fn start(base_url: String, workers: usize, max_requests_per_worker: usize) -> Load {
        let created = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let signalled = Arc::new(AtomicBool::new(false));
        let tasks = (0..workers)
            .map(|worker| {
                let (base_url, created, stop, signalled) = (
                    base_url.clone(),
                    created.clone(),
                    stop.clone(),
                    signalled.clone(),
                );
                tokio::spawn(async move {
                    // A fresh connection per request: shutdown has to handle connection set-up
                    // as well as requests on open connections.
                    let client = reqwest::Client::builder()
                        .no_proxy()
                        .pool_max_idle_per_host(0)
                        .timeout(Duration::from_secs(20))
                        .build()
                        .expect("client");
                    let mut result = LoadResult {
                        created: Vec::new(),
                        statuses: BTreeMap::new(),
                        failures: Vec::new(),
                    };
                    for i in 0..max_requests_per_worker {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let body = order_body(&format!("load-{worker}"), &[(SKU, quantity_for(i))]);
                        let outcome = match client
                            .post(format!("{base_url}/v1/orders"))
                            .json(&body)
                            .send()
                            .await
                        {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                response.json::<Value>().await.map(|body| (status, body))
                            }
                            Err(error) => Err(error),
                        };
                        match outcome {
                            Ok((status, body)) => {
                                *result.statuses.entry(status).or_insert(0) += 1;
                                if status == 201 {
                                    result.created.push(body);
                                    created.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            Err(error) => {
                                if !signalled.load(Ordering::SeqCst) {
                                    result
                                        .failures
                                        .push(format!("worker {worker}, request {i}: {error:?}"));
                                }
                                break;
                            }
                        }
                    }
                    result
                })
            })
            .collect();
        Load {
            created,
            stop,
            signalled,
            tasks,
        }
    }

    /// Waits until at least `count` orders were created (at most 30 s).
    async fn wait_for_created(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.created.load(Ordering::SeqCst) < count {
            assert!(
                Instant::now() < deadline,
                "the load created only {} orders in 30 s",
                self.created.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> LoadResult {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = LoadResult {
            created: Vec::new(),
            statuses: BTreeMap::new(),
            failures: Vec::new(),
        };
        for task in self.tasks {
            let result = task.await.expect("load worker panicked");
            total.created.extend(result.created);
            total.failures.extend(result.failures);
            for (status, count) in result.statuses {
                *total.statuses.entry(status).or_insert(0) += count;
            }
        }
        total
    }
}

async fn kill9_and_restart_loses_no_committed_order(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    seed_single_sku(&server, SKU, 1_000_000).await;

    // Phase 1: orders answered before the kill, sequential then a concurrent burst.
    let mut answered = Vec::new();
    for i in 0..50 {
        answered.push(
            server
                .create_order(&order_body(&format!("seq-{i}"), &[(SKU, quantity_for(i))]))
                .await,
        );
    }
    let burst: Vec<_> = (0..50)
        .map(|i| {
            let request = server
                .request(reqwest::Method::POST, "/v1/orders")
                .json(&order_body(
                    &format!("burst-{i}"),
                    &[(SKU, quantity_for(i))],
                ));
            tokio::spawn(send(request))
        })
        .collect();
    for task in burst {
        answered.push(task.await.expect("burst task").expect_status(201).body);
    }
    server.kill9();
    server.restart().await;

    assert_orders_survived(&server, &answered).await;
    let stored = assert_reservations_match_orders(&server).await;
    assert_eq!(
        stored.len(),
        answered.len(),
        "orders appeared that were never answered"
    );
    assert_eq!(
        server.reserved(SKU).await,
        answered.iter().map(order_quantity).sum::<i64>()
    );

    // Phase 2: kill -9 while requests are in flight. Every answered order survives, and no
    // order or reservation was half-committed.
    let load = Load::start(server.base_url(), 8, 2_000);
    load.wait_for_created(40).await;
    load.signalled.store(true, Ordering::SeqCst);
    server.kill9();
    let result = load.finish().await;
    eprintln!(
        "kill -9 under load: {} orders answered 201, statuses {:?}",
        result.created.len(),
        result.statuses
    );
    assert!(
        result.failures.is_empty(),
        "requests failed before the kill: {:?}",
        result.failures
    );
    server.restart().await;

    assert_orders_survived(&server, &answered).await;
    assert_orders_survived(&server, &result.created).await;
    assert_reservations_match_orders(&server).await;
}

async fn sigterm_under_load_fails_no_accepted_request(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    seed_single_sku(&server, SKU, 1_000_000).await;

    let load = Load::start(server.base_url(), 8, 5_000);
    load.wait_for_created(40).await;
    load.signalled.store(true, Ordering::SeqCst);
    server.sigterm();
    let exit = server.wait_exit(Duration::from_secs(15)).await;
    let result = load.finish().await;
    eprintln!(
        "SIGTERM under load: exit {exit:?}, statuses {:?}",
        result.statuses
    );

    let exit =
        exit.unwrap_or_else(|| panic!("ordo still runs 15 s after SIGTERM\n{}", server.output()));
    assert!(
        exit.success(),
        "ordo exited with {exit} after SIGTERM\n{}",
        server.output()
    );
    assert!(
        result.failures.is_empty(),
        "requests failed before SIGTERM: {:?}",
        result.failures
    );
    let server_errors: Vec<_> = result
        .statuses
        .iter()
        .filter(|(status, _)| **status >= 500)
        .collect();
    assert!(
        server_errors.is_empty(),
        "5xx answers during shutdown: {:?}",
        result.statuses
    );

    server.restart().await;
    let stored = assert_reservations_match_orders(&server).await;
    let stored_ids: BTreeSet<&str> = stored.iter().map(|o| o["id"].as_str().unwrap()).collect();
    let answered_ids: BTreeSet<&str> = result
        .created
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    let lost: Vec<_> = answered_ids.difference(&stored_ids).collect();
    let unanswered: Vec<_> = stored_ids.difference(&answered_ids).collect();
    assert!(
        lost.is_empty(),
        "orders answered 201 but not stored: {lost:?}"
    );
    assert!(
        unanswered.is_empty(),
        "orders stored whose 201 never reached the client (statuses {:?}): {unanswered:?}",
        result.statuses
    );
    assert_orders_survived(&server, &result.created).await;
}

async fn unreachable_database_fails_start_up_fast(backend: Backend) {
    let workdir = tempfile::tempdir().expect("temporary directory");
    let database_url = backend.unreachable_database_url(workdir.path());
    let mut process = ServerProcess::spawn(&database_url, workdir.path());

    let started = Instant::now();
    let exit = process
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| {
            panic!(
                "ordo still runs 15 s after start against {database_url}\n{}",
                process.output()
            )
        });
    let output = process.output();
    eprintln!(
        "start-up against {database_url}: {exit} after {:?}\n{output}",
        started.elapsed()
    );
    assert!(
        !exit.success(),
        "ordo exited successfully against {database_url}\n{output}"
    );
    assert!(
        output.to_lowercase().contains("database"),
        "the error should mention the database (after {:?}):\n{output}",
        started.elapsed()
    );
    assert!(
        !process
            .stdout_lines()
            .iter()
            .any(|line| ReadyLine::parse(line).is_some()),
        "ordo said it was ready without a database:\n{output}"
    );
}

/// Awaits `call` and checks it answered `503 unavailable` in under 2 s: the contract for a call
/// that needs a database that is down or not answering.
async fn assert_unavailable_within_2_s(what: &str, call: impl std::future::Future<Output = Reply>) {
    let started = Instant::now();
    let reply = call.await;
    let took = started.elapsed();
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{what}: {}",
        reply.text
    );
    assert!(took < Duration::from_secs(2), "{what} took {took:?}");
}

/// Before an outage: the catalogue, an order never read (its read needs the database) and an
/// order read once (cached: it keeps answering through the outage, past its TTL too).
async fn before_an_outage(server: &TestServer) -> (Value, Value) {
    seed_single_sku(server, SKU, 1_000).await;
    let order = server
        .create_order(&order_body("before-outage", &[(SKU, 1)]))
        .await;
    let cached = server
        .create_order(&order_body("cached-before-outage", &[(SKU, 1)]))
        .await;
    let cached_path = format!("/v1/orders/{}", cached["id"].as_str().expect("order id"));
    assert_eq!(
        server.get(&cached_path).await.expect_status(200).body,
        cached
    );
    (order, cached)
}

/// One round of requests while the database is away: the read of an order never read before
/// (`id`: uncached), a creation and a list answer `503 unavailable` within 2 s, readiness
/// fails, and the order read before the outage (`cached`) still answers, past its TTL too.
async fn assert_an_outage_round(server: &TestServer, round: usize, id: &str, cached: &Value) {
    let read = format!("/v1/orders/{id}");
    assert_unavailable_within_2_s(&format!("read in round {round}"), server.get(&read)).await;
    let during = order_body("during-outage", &[(SKU, 1)]);
    let create = server.post_order(&during);
    assert_unavailable_within_2_s(&format!("create in round {round}"), create).await;
    let list = server.get("/v1/orders?limit=5");
    assert_unavailable_within_2_s(&format!("list in round {round}"), list).await;
    assert_eq!(server.admin_get("/readyz").await.status, 503);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let cached_path = format!("/v1/orders/{}", cached["id"].as_str().expect("order id"));
    let still = server.get(&cached_path).await;
    assert_eq!(
        (still.status, &still.body),
        (200, cached),
        "a cached read answers through the outage (round {round})"
    );
}

/// Once the database is back: ready again and `order` (accepted before the outage) readable
/// and unchanged, within 5 s.
async fn healed_within_5_s(server: &TestServer, order: &Value) {
    let id = order["id"].as_str().expect("order id");
    let healed = Instant::now();
    loop {
        let ready = server.admin_get("/readyz").await.status == 200;
        let read = server.get(&format!("/v1/orders/{id}")).await;
        if ready && read.status == 200 {
            assert_eq!(
                &read.body, order,
                "the order accepted before the outage changed"
            );
            return;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(5),
            "not healed 5 s after the database came back: readyz ready={ready}, read {}",
            read.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PostgreSQL stops taking connections and its live ones are killed (an outage as an operator
/// sees it): every request that needs the database answers `503 unavailable` at once — never
/// `500`, never after the request time-out — a cached read keeps answering, readiness fails,
/// and once connections are allowed
/// again everything comes back by itself, the orders accepted before included.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_outage_answers_503_fast_and_heals_by_itself() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let server = TestServer::start(backend).await;
    let (order, cached) = before_an_outage(&server).await;
    let id = order["id"].as_str().expect("order id").to_owned();

    postgres_admin_execute(&server, "ALTER DATABASE {database} ALLOW_CONNECTIONS false").await;
    postgres_admin_execute(
        &server,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'",
    )
    .await;
    // Several rounds: the first finds its pooled connections dead, the later ones are refused
    // new ones.
    for round in 0..3 {
        assert_an_outage_round(&server, round, &id, &cached).await;
    }

    postgres_admin_execute(&server, "ALTER DATABASE {database} ALLOW_CONNECTIONS true").await;
    healed_within_5_s(&server, &order).await;
    server
        .create_order(&order_body("after-outage", &[(SKU, 1)]))
        .await;
}

/// The SQLite database becomes unavailable, twice over.
///
/// First another process holds its write lock (an `ordo migrate` or a maintenance script in a
/// long transaction): creations answer `503 unavailable` within 2 s instead of waiting, reads
/// keep answering (WAL readers need no lock), and the first creation after the lock is gone
/// succeeds.
///
/// Then the file disappears from its path (moved away by an operator or a backup tool):
/// ordo's open connections would go on working on the moved file, so what it wrote from then
/// on would be lost at its next start. Instead every call that needs the database answers
/// `503 unavailable` within 2 s, a cached read keeps answering and readiness fails; once the
/// file is back, everything heals by itself within 5 s and every accepted order is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_file_locked_or_moved_away_answers_503_fast_and_heals_by_itself() {
    let server = TestServer::start(Backend::sqlite()).await;
    let (order, cached) = before_an_outage(&server).await;
    let id = order["id"].as_str().expect("order id").to_owned();
    let cached_path = format!("/v1/orders/{}", cached["id"].as_str().expect("order id"));
    let path = server
        .database_url()
        .trim_start_matches("sqlite://")
        .to_owned();

    // 1. Another process holds the write lock.
    let holder = rusqlite::Connection::open(&path).expect("open the database file");
    holder
        .busy_timeout(Duration::from_secs(5))
        .expect("set a busy timeout");
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    for round in 0..2 {
        let during = order_body("during-lock", &[(SKU, 1)]);
        let create = server.post_order(&during);
        assert_unavailable_within_2_s(&format!("create under the lock, round {round}"), create)
            .await;
        server.get("/v1/orders?limit=5").await.expect_status(200);
        assert_eq!(
            server.get(&cached_path).await.expect_status(200).body,
            cached
        );
    }
    holder
        .execute_batch("ROLLBACK")
        .expect("let the write lock go");
    drop(holder);
    let after_lock = server
        .create_order(&order_body("after-lock", &[(SKU, 1)]))
        .await;

    // 2. The file is moved away from its path.
    let moved = format!("{path}.moved");
    std::fs::rename(&path, &moved).expect("move the database file away");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..3 {
        assert_an_outage_round(&server, round, &id, &cached).await;
    }

    std::fs::rename(&moved, &path).expect("put the database file back");
    healed_within_5_s(&server, &order).await;
    let after = server
        .create_order(&order_body("after-outage", &[(SKU, 1)]))
        .await;
    let ids = ids_of(server.list_all_orders("").await.iter());
    let accepted = ids_of([&order, &cached, &after_lock, &after]);
    for extra in ids.difference(&accepted) {
        eprintln!(
            "not accepted, yet written: {:#}",
            server.get_order(extra).await
        );
    }
    assert_eq!(ids, accepted, "every accepted order, and no other");

    // And after a restart, on the file at its path: nothing written meanwhile went elsewhere.
    let mut server = server;
    server.restart().await;
    let ids_after_restart = ids_of(server.list_all_orders("").await.iter());
    assert_eq!(ids_after_restart, accepted);
}

/// PostgreSQL stops answering ordo's statements (a session of its own holds an exclusive lock on
/// `orders` for 8 s): calls that need those rows answer `503 unavailable` within 2 s instead of
/// waiting for the lock, and once it is gone everything works again, with no lasting harm to
/// the connections the stuck statements held.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_that_stops_answering_is_503_within_2_s() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let server = TestServer::start(backend).await;
    seed_single_sku(&server, SKU, 1_000).await;
    server
        .create_order(&order_body("before-lock", &[(SKU, 1)]))
        .await;

    let mut locker = std::process::Command::new("psql")
        .arg(server.database_url())
        .args(["-q", "-c"])
        .arg("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql (postgresql-client) runs");
    // Until the lock is held: a list stops answering at once.
    let locked = Instant::now();
    loop {
        if server.get("/v1/orders?limit=1").await.status == 503 {
            break;
        }
        assert!(
            locked.elapsed() < Duration::from_secs(3),
            "the lock never took"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = order_body("during-lock", &[(SKU, 1)]);
    let list = server.get("/v1/orders?limit=5");
    assert_unavailable_within_2_s("list while the rows are locked", list).await;
    let create = server.post_order(&during);
    assert_unavailable_within_2_s("create while the rows are locked", create).await;

    let status = locker.wait().expect("psql ends");
    assert!(status.success(), "psql failed: {status}");
    server.get("/v1/orders?limit=5").await.expect_status(200);
    server
        .create_order(&order_body("after-lock", &[(SKU, 1)]))
        .await;
}

/// Connection floods (issue 11): ordo raises its soft limit of open files to the hard limit (a
/// server started with the usual 1,024 gets the hard limit), and listens with a backlog sized
/// for bursts of connects (4,096, or the kernel's `somaxconn` when lower), not 128.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn the_open_files_limit_is_raised_and_the_listen_backlog_sized_for_bursts() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given, which lives for the call.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let hard = limit.rlim_max;
    if hard > 1024 {
        // The server inherits this process's limits (each test is a process of its own).
        limit.rlim_cur = 1024;
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    }
    let server = TestServer::start(Backend::sqlite()).await;

    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid()))
        .expect("the server's limits");
    let open_files: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line")
        .split_whitespace()
        .collect();
    let expected = if hard == libc::RLIM_INFINITY {
        "unlimited".to_owned()
    } else {
        hard.to_string()
    };
    assert_eq!(
        open_files[3], expected,
        "soft limit raised to the hard one:\n{limits}"
    );

    let port = server
        .base_url()
        .rsplit(':')
        .next()
        .expect("a port")
        .to_owned();
    let listening = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) runs");
    let listening = String::from_utf8_lossy(&listening.stdout);
    // For a listening socket, ss's Send-Q column is the accept backlog.
    let backlog: u32 = listening
        .split_whitespace()
        .nth(2)
        .and_then(|column| column.parse().ok())
        .unwrap_or_else(|| panic!("no listening socket on {port}: {listening:?}"));
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(4096);
    assert_eq!(backlog, 4096.min(somaxconn), "{listening}");
}

/// Connection floods (issue 11): one client opens 1,500 sockets — half of them silent, half
/// sending a request's headers and never finishing them. Beyond its share of connections
/// (`ORDO_MAX_CONNECTIONS_PER_CLIENT`) each is answered `503` with the error body and closed at
/// once; the ones let in are closed when the header-read timeout passes; meanwhile another
/// client is served as usual, and so is `/readyz` on the admin port.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_flood_from_one_client_does_not_starve_the_others() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const FLOOD: usize = 1_500;
    const PER_CLIENT: usize = 300;
    // This test's own descriptors: the flood needs more than the usual 1,024.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given, which lives for the call.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur > 2 * FLOOD as u64,
        "hard limit {}",
        limit.rlim_cur
    );
    let server = TestServer::start_with_env(
        Backend::sqlite(),
        &[
            ("ORDO_MAX_CONNECTIONS", "1000"),
            ("ORDO_MAX_CONNECTIONS_PER_CLIENT", "300"),
            ("ORDO_HEADER_READ_TIMEOUT_MS", "4000"),
        ],
    )
    .await;
    let addr = server.base_url().trim_start_matches("http://").to_owned();
    let flood_started = Instant::now();

    let mut flood = Vec::with_capacity(FLOOD);
    for i in 0..FLOOD {
        let mut socket = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect (the listen backlog takes the burst)");
        if i % 2 == 1 {
            socket
                .write_all(b"GET /v1/products/FLOOD HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        flood.push(socket);
    }

    // Another client, from another address, is served while the flood holds its sockets.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let reply = other
        .get(server.url("/v1/products/UNKNOWN"))
        .send()
        .await
        .expect("the other client is served");
    assert_eq!(reply.status(), 404);
    assert!(started.elapsed() < Duration::from_secs(2));
    server.admin_get("/readyz").await.expect_status(200);

    // The flood's sockets beyond its share were answered 503 and closed (all looked at
    // together: one by one, the last would be looked at after the header-read timeout).
    let looks = flood.into_iter().map(|mut socket| async move {
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_millis(300), socket.read_to_end(&mut answer)).await;
        (socket, read.map(|read| read.map(|_| answer)))
    });
    let mut refused = 0;
    let mut held = Vec::new();
    for (socket, look) in futures::future::join_all(looks).await {
        match look {
            Ok(answer) => {
                let answer = answer.expect("the refusal arrives before the close");
                let answer = String::from_utf8_lossy(&answer);
                assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
                assert!(answer.contains("retry-after: 1"), "{answer}");
                assert!(answer.contains("\"code\":\"unavailable\""), "{answer}");
                refused += 1;
            }
            Err(_) => held.push(socket),
        }
    }
    assert!(
        flood_started.elapsed() < Duration::from_secs(4),
        "the checks above must end before the header-read timeout"
    );
    assert_eq!(
        (refused, held.len()),
        (FLOOD - PER_CLIENT, PER_CLIENT),
        "the client's share is let in, the rest refused at once"
    );

    // Past the header-read timeout the server closes the held ones, silent or slow alike.
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    for mut socket in held {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_millis(500), socket.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "a held socket is still open past the timeout"
        );
    }
    // The flooding client is served again once it behaves.
    server.get("/v1/products/UNKNOWN").await.expect_status(404);
    let metrics = server.admin_get("/metrics").await.expect_status(200).text;
    let counted = format!(
        "http_connections_refused_total{{reason=\"max_connections_per_client\"}} {}",
        FLOOD - PER_CLIENT
    );
    assert!(metrics.lines().any(|line| line == counted), "{metrics}");
}

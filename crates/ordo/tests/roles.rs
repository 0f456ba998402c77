//! Roles apart: an edge, an orders process and two inventory processes on one database, finding
//! each other through a static list or etcd. An order created at the edge is one connected
//! trace across the processes; killing an inventory process keeps requests succeeding; a
//! process stopped gracefully leaves discovery.

use ordo_testkit::otlp;

use ordo_testkit::*;
use otlp::{OtlpReceiver, assert_one_tree, describe};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

backend_tests!(
    a_split_deployment_found_by_static_lists_serves_one_trace_and_survives_a_dead_inventory,
);

/// The edge's deadline travels with its call to orders, and on to orders' calls to inventory:
/// with every inventory process frozen, the orders process gives up when the edge's deadline
/// passes — not at its own, much longer, request timeout.
#[tokio::test(flavor = "multi_thread")]
async fn the_callers_deadline_bounds_every_downstream_call() {
    let mut deployment = Deployment::start(
        Backend::sqlite(),
        Found::Static,
        &[("ORDO_REQUEST_TIMEOUT_MS", "60000".to_owned())],
    )
    .await;
    deployment.seed().await;
    for name in ["inventory-1", "inventory-2"] {
        deployment.signal(name, libc::SIGSTOP);
    }
    // A gRPC caller at the edge with a 700 ms deadline (the edge's own request timeout, and
    // every process's, is 60 s here).
    let started = Instant::now();
    let mut orders = ordo_grpc_api::pb::orders_service_client::OrdersServiceClient::connect(
        format!("http://{}", deployment.node("edge").ready.grpc_addr),
    )
    .await
    .unwrap();
    let mut request = tonic::Request::new(ordo_grpc_api::pb::CreateOrderRequest {
        customer_id: "deadline".into(),
        currency: "USD".into(),
        items: vec![ordo_grpc_api::pb::OrderItemInput {
            sku: TEA.into(),
            quantity: 1,
        }],
        shipping_address: Some(ordo_grpc_api::pb::Address {
            name: "N".into(),
            line1: "L".into(),
            city: "C".into(),
            postal_code: "1".into(),
            country: "TH".into(),
        }),
        contact: Some(ordo_grpc_api::pb::Contact {
            email: "a@example.com".into(),
            phone: None,
        }),
    });
    request.set_timeout(Duration::from_millis(700));
    let status = orders.create_order(request).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    // The orders process ended its side of the call within the deadline too: its access line
    // for CreateOrder is there well before its own 60 s timeout — DEADLINE_EXCEEDED (4) when
    // its own copy of the deadline fired first, CANCELLED (1) when the edge's cancellation
    // arrived first (a race both sides may win on a loaded machine).
    eventually(
        Duration::from_secs(5),
        async || {
            let ended = deployment
                .node("orders")
                .process
                .stdout_lines()
                .iter()
                .any(|l| {
                    l.contains("\"rpc_method\":\"CreateOrder\"")
                        && (l.contains("\"rpc_grpc_status_code\":4")
                            || l.contains("\"rpc_grpc_status_code\":1"))
                });
            if ended { Ok(()) } else { Err(()) }
        },
        |()| {
            format!(
                "orders kept working past the caller's deadline\n{}",
                deployment.output()
            )
        },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    for name in ["inventory-1", "inventory-2"] {
        deployment.signal(name, libc::SIGCONT);
    }
}

/// How the processes find each other.
#[derive(Clone)]
enum Found {
    Static,
    #[cfg(feature = "etcd")]
    Etcd {
        url: String,
        namespace: String,
    },
}

/// One process of the deployment.
struct Node {
    name: &'static str,
    process: ServerProcess,
    ready: ReadyLine,
}

/// Processes sharing one database, each with its roles.
struct Deployment {
    nodes: Vec<Node>,
    client: reqwest::Client,
    // Dropped last: the processes go first.
    _database: TestDatabase,
    workdir: tempfile::TempDir,
}

impl Deployment {
    /// inventory-1 first (it applies the migrations), then inventory-2, orders (with payments
    /// and workers), and the edge; with static lists each learns the addresses of the ones
    /// started before it.
    async fn start(backend: Backend, found: Found, extra_env: &[(&'static str, String)]) -> Self {
        let workdir = tempfile::tempdir().unwrap();
        let database = TestDatabase::create(&backend, workdir.path()).await;
        let mut deployment = Deployment {
            nodes: Vec::new(),
            client: http_client(),
            _database: database,
            workdir,
        };
        let db_url = deployment._database.url.clone();
        let plan: [(&'static str, &str); 4] = [
            ("inventory-1", "inventory"),
            ("inventory-2", "inventory"),
            ("orders", "orders,payments,workers"),
            ("edge", "edge"),
        ];
        for (name, roles) in plan {
            let mut env: Vec<(String, String)> = vec![("ORDO_ROLES".into(), roles.into())];
            match &found {
                Found::Static => {
                    let inventory = deployment.grpc_urls(&["inventory-1", "inventory-2"]);
                    let orders = deployment.grpc_urls(&["orders"]);
                    env.push(("ORDO_PEERS_INVENTORY".into(), inventory));
                    env.push(("ORDO_PEERS_ORDERS".into(), orders.clone()));
                    env.push(("ORDO_PEERS_PAYMENTS".into(), orders));
                }
                #[cfg(feature = "etcd")]
                Found::Etcd { url, namespace } => {
                    env.push(("ORDO_DISCOVERY".into(), url.clone()));
                    env.push(("ORDO_DISCOVERY_NAMESPACE".into(), namespace.clone()));
                }
            }
            env.extend(extra_env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            env.push(("OTEL_SERVICE_NAME".into(), format!("ordo-{name}")));
            let mut process =
                ServerProcess::spawn_with_env(&db_url, deployment.workdir.path(), &env);
            let ready = process.wait_ready().await;
            deployment.nodes.push(Node {
                name,
                process,
                ready,
            });
        }
        deployment.wait_until_edge_ready().await;
        deployment
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    fn signal(&mut self, name: &str, signal: libc::c_int) {
        self.node_mut(name).process.signal(signal);
    }

    fn grpc_urls(&self, names: &[&str]) -> String {
        self.nodes
            .iter()
            .filter(|n| names.contains(&n.name))
            .map(|n| format!("http://{}", n.ready.grpc_addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn edge(&self, path: &str) -> String {
        format!("http://{}{path}", self.node("edge").ready.http_addr)
    }

    fn output(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("===== {} =====\n{}", n.name, n.process.output()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The edge is ready once a healthy instance of every role it calls is in its balancers.
    async fn wait_until_edge_ready(&self) {
        let url = format!("http://{}/readyz", self.node("edge").ready.admin_addr);
        eventually(
            Duration::from_secs(20),
            async || match self.client.get(&url).send().await {
                Ok(response) if response.status() == 200 => Ok(()),
                Ok(response) => Err(format!("HTTP {}", response.status())),
                Err(error) => Err(error.to_string()),
            },
            |last| format!("the edge never became ready ({last})\n{}", self.output()),
        )
        .await;
    }

    async fn get(&self, path: &str) -> Reply {
        send(self.client.get(self.edge(path))).await
    }

    async fn put(&self, path: &str, body: serde_json::Value) -> Reply {
        send(self.client.put(self.edge(path)).json(&body)).await
    }

    async fn post_order(&self, customer: &str, items: &[(&str, i64)]) -> Reply {
        let body = order_body(customer, items);
        send(self.client.post(self.edge("/v1/orders")).json(&body)).await
    }

    async fn seed(&self) {
        for (id, country) in [(BKK, "TH"), (BER, "DE")] {
            self.put(
                &format!("/v1/warehouses/{id}"),
                serde_json::json!({ "country": country }),
            )
            .await
            .expect_status(200);
        }
        for (sku, price) in [(TEA, TEA_PRICE), (MUG, MUG_PRICE)] {
            let body = serde_json::json!({ "name": sku, "price": money(price, "USD") });
            self.put(&format!("/v1/products/{sku}"), body)
                .await
                .expect_status(200);
        }
        for (sku, warehouse) in [(TEA, BKK), (MUG, BER)] {
            self.put(
                &format!("/v1/stock/{sku}/{warehouse}"),
                serde_json::json!({ "on_hand": 1000 }),
            )
            .await
            .expect_status(200);
        }
    }

    fn kill(&mut self, name: &str) {
        self.node_mut(name).process.kill9();
    }
}

/// The scenario, whichever way the processes find each other.
async fn split_deployment_scenario(backend: Backend, found: Found) {
    let receiver = OtlpReceiver::grpc().await;
    let deployment = Deployment::start(backend, found, &receiver.env()).await;
    let mut deployment = deployment;
    deployment.seed().await;

    // An order created at the edge: edge → orders (gRPC) → inventory (gRPC, prices) and the
    // database, all in the caller's trace.
    let trace_id = format!("{}{}", random_hex(), random_hex());
    let parent = "b7ad6b7169203331";
    let created = send(
        deployment
            .client
            .post(deployment.edge("/v1/orders"))
            .header("traceparent", format!("00-{trace_id}-{parent}-01"))
            .json(&order_body("split-1", &[(TEA, 2), (MUG, 1)])),
    )
    .await
    .expect_status(201);
    assert_eq!(created.body["trace_id"], trace_id);
    assert_eq!(
        created.body["total"]["amount_minor"],
        2 * TEA_PRICE + MUG_PRICE
    );
    let spans = receiver
        .trace(&trace_id, |spans| {
            spans
                .iter()
                .any(|s| s.name == "ordo.v1.CatalogService/GetProduct" && s.kind == 2)
                && spans
                    .iter()
                    .any(|s| s.name == "ordo.v1.OrdersService/CreateOrder" && s.kind == 2)
        })
        .await;
    let root = assert_one_tree(&spans, parent);
    assert_eq!(root.name, "POST /v1/orders", "{:#?}", describe(&spans));
    let processes: BTreeSet<&str> = spans
        .iter()
        .filter_map(|s| s.resource.get("service.name").map(String::as_str))
        .collect();
    assert!(
        processes.contains("ordo-edge")
            && processes.contains("ordo-orders")
            && (processes.contains("ordo-inventory-1") || processes.contains("ordo-inventory-2")),
        "spans from {processes:?}: {:#?}",
        describe(&spans)
    );
    let client_spans = spans
        .iter()
        .filter(|s| s.kind == 3 && s.name.starts_with("ordo.v1."));
    for client in client_spans {
        // Each CLIENT call has the matching SERVER span of the other process as its child.
        assert!(
            spans
                .iter()
                .any(|s| s.parent_span_id == client.span_id && s.kind == 2),
            "{} has no server side: {:#?}",
            client.name,
            describe(&spans)
        );
    }

    // The edge measured its calls to orders.
    let metrics = send(deployment.client.get(format!(
        "http://{}/metrics",
        deployment.node("edge").ready.admin_addr
    )))
    .await
    .expect_status(200)
    .text;
    assert_metric_line(
        &metrics,
        "rpc_client_duration_seconds_count{rpc_service=\"ordo.v1.OrdersService\",\
         rpc_method=\"CreateOrder\",rpc_grpc_status_code=\"0\"}",
    );

    // Reads through the edge, answered by inventory and orders.
    let stock = deployment
        .get(&format!("/v1/stock/{TEA}"))
        .await
        .expect_status(200);
    assert_eq!(stock.body["warehouses"][0]["reserved"], 2);
    let id = created.body["id"].as_str().unwrap();
    let got = deployment
        .get(&format!("/v1/orders/{id}"))
        .await
        .expect_status(200);
    assert_eq!(got.body["id"], id);
    // Errors keep their kind across the hop.
    let missing = deployment.get("/v1/products/NOPE").await;
    assert_error(&missing, 404, "not_found");
    let too_many = deployment.post_order("split-1", &[(TEA, 5_000)]).await;
    assert_error(&too_many, 409, "insufficient_stock");

    // One inventory process dies: orders keep being created (prices come from the other).
    deployment.kill("inventory-1");
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for i in 0..30 {
        let reply = deployment
            .post_order(&format!("split-after-{i}"), &[(TEA, 1)])
            .await;
        *statuses.entry(reply.status).or_default() += 1;
    }
    assert_eq!(
        statuses.get(&201),
        Some(&30),
        "{statuses:?}\n{}",
        deployment.output()
    );
    let stock = deployment
        .get(&format!("/v1/stock/{TEA}"))
        .await
        .expect_status(200);
    assert_eq!(stock.body["warehouses"][0]["reserved"], 32);
}

async fn a_split_deployment_found_by_static_lists_serves_one_trace_and_survives_a_dead_inventory(
    backend: Backend,
) {
    split_deployment_scenario(backend, Found::Static).await;
}

#[cfg(feature = "etcd")]
mod through_etcd {
    use super::*;
    use ordo_discovery::testing::EtcdServer;

    /// The same scenario with every process registered in, and watching, a real etcd.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_split_deployment_found_through_etcd_serves_one_trace_and_survives_a_dead_inventory()
    {
        let Some(etcd) = EtcdServer::start().await else {
            return;
        };
        let found = Found::Etcd {
            url: etcd.url(),
            namespace: format!("t{}", random_hex()),
        };
        let backend = match Backend::postgres().await {
            Some(postgres) => postgres,
            None => Backend::sqlite(),
        };
        split_deployment_scenario(backend, found).await;
    }

    /// Waits up to 5 s until `members` holds `count` instances.
    async fn wait_for_members(
        members: &mut ordo_discovery::Members,
        count: usize,
    ) -> Result<(), tokio::time::error::Elapsed> {
        tokio::time::timeout(Duration::from_secs(5), async {
            while members.borrow_and_update().len() != count {
                if members.changed().await.is_err() {
                    // Discovery stopped: the count can no longer change; let the time run out.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
    }

    /// A process stopped gracefully leaves etcd at once (not one lease later), and one started
    /// later joins the running edge's balancer without a restart.
    #[tokio::test(flavor = "multi_thread")]
    async fn instances_join_and_leave_a_running_deployment_through_etcd() {
        let Some(etcd) = EtcdServer::start().await else {
            return;
        };
        let namespace = format!("t{}", random_hex());
        let found = Found::Etcd {
            url: etcd.url(),
            namespace: namespace.clone(),
        };
        let mut deployment = Deployment::start(Backend::sqlite(), found, &[]).await;
        deployment.seed().await;
        let discovery = ordo_discovery::Discovery::etcd(&etcd.url(), &namespace)
            .await
            .expect("etcd");
        let mut inventory = discovery.members("inventory").await.unwrap();
        assert_eq!(inventory.borrow().len(), 2);

        // SIGTERM: the process deregisters before it drains.
        deployment.signal("inventory-1", libc::SIGTERM);
        wait_for_members(&mut inventory, 1)
            .await
            .expect("inventory-1 left etcd well within its 10 s lease");
        for i in 0..10 {
            deployment
                .post_order(&format!("after-leave-{i}"), &[(MUG, 1)])
                .await
                .expect_status(201);
        }

        // A new inventory process joins; once the other is killed, everything goes to it.
        let db_url = deployment._database.url.clone();
        let env = vec![
            ("ORDO_ROLES".to_owned(), "inventory".to_owned()),
            ("ORDO_DISCOVERY".to_owned(), etcd.url()),
            ("ORDO_DISCOVERY_NAMESPACE".to_owned(), namespace.clone()),
        ];
        let mut process = ServerProcess::spawn_with_env(&db_url, deployment.workdir.path(), &env);
        let ready = process.wait_ready().await;
        deployment.nodes.push(Node {
            name: "inventory-3",
            process,
            ready,
        });
        wait_for_members(&mut inventory, 2)
            .await
            .expect("inventory-3 registered");
        // Give the edge's probe a moment to admit it, then take the old one away.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        deployment.kill("inventory-2");
        for i in 0..10 {
            let reply = deployment
                .post_order(&format!("after-join-{i}"), &[(MUG, 1)])
                .await;
            assert_eq!(reply.status, 201, "{}\n{}", reply.text, deployment.output());
        }
    }
}

//! The test server: the process on its database, ready, with an HTTP client and the calls the
//! tests make most.

use crate::*;
use serde_json::{Value, json};
use std::process::ExitStatus;
use std::time::Duration;

/// A ready `ordo serve` on its own database, killed when dropped.
pub struct TestServer {
    // Field order is drop order: the process goes before its database and directory.
    process: ServerProcess,
    pub(crate) database: TestDatabase,
    workdir: tempfile::TempDir,
    ready: ReadyLine,
    previous_logs: Vec<String>,
    client: reqwest::Client,
    /// Extra environment variables of every process this server starts.
    extra_env: Vec<(String, String)>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        TestServer::start_with_env(backend, &[]).await
    }

    /// Starts a server with extra environment variables, e.g. `[("ORDO_ADMIN_TOKEN", "t")]`;
    /// restarts keep them.
    pub async fn start_with_env(backend: Backend, env: &[(&str, &str)]) -> TestServer {
        let extra_env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let workdir = tempfile::tempdir().expect("create a temporary directory");
        let database = TestDatabase::create(&backend, workdir.path()).await;
        let mut process = ServerProcess::spawn_with_env(&database.url, workdir.path(), &extra_env);
        let ready = process.wait_ready().await;
        TestServer {
            process,
            database,
            workdir,
            ready,
            previous_logs: Vec::new(),
            client: http_client(),
            extra_env,
        }
    }

    /// Starts a server that exports its traces to `receiver`, with `extra` environment too.
    pub async fn start_exporting_to(
        receiver: &otlp::OtlpReceiver,
        backend: Backend,
        extra: &[(&str, &str)],
    ) -> TestServer {
        let env = receiver.env();
        let mut pairs = env_refs(&env);
        pairs.extend_from_slice(extra);
        TestServer::start_with_env(backend, &pairs).await
    }

    /// Starts the server again on the same database (killing the old process if it still runs).
    pub async fn restart(&mut self) {
        self.process.kill9();
        self.previous_logs.extend(self.process.stdout_lines());
        self.process =
            ServerProcess::spawn_with_env(&self.database.url, self.workdir.path(), &self.extra_env);
        self.ready = self.process.wait_ready().await;
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.ready.http_addr)
    }

    /// `http://` and the gRPC address (HTTP/2 for gRPC, HTTP/1.1 too for gRPC-Web).
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.ready.grpc_addr)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.ready.admin_addr)
    }

    pub fn database_url(&self) -> &str {
        &self.database.url
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// The stdout lines of the current process.
    pub fn logs(&self) -> Vec<String> {
        self.process.stdout_lines()
    }

    /// The stdout lines of every process started so far, oldest first.
    pub fn all_logs(&self) -> Vec<String> {
        let mut logs = self.previous_logs.clone();
        logs.extend(self.logs());
        logs
    }

    pub fn output(&self) -> String {
        self.process.output()
    }

    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// SIGHUP: reload the live settings from the configuration file.
    pub fn hangup(&mut self) {
        self.process.signal(libc::SIGHUP);
    }

    pub fn sigterm(&mut self) {
        self.process.signal(libc::SIGTERM);
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout).await
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    // --- requests ---

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn get(&self, path: &str) -> Reply {
        send(self.request(reqwest::Method::GET, path)).await
    }

    /// The body of a GET of `path`, failing the test unless the answer is 200.
    pub async fn get_ok(&self, path: &str) -> Value {
        self.get(path).await.expect_status(200).body
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        send(self.client.get(format!("{}{path}", self.admin_url()))).await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Reply {
        send(self.request(reqwest::Method::PUT, path).json(body)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// POSTs `body` (raw bytes) with the given content type, or none.
    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
        let mut request = self.request(reqwest::Method::POST, path).body(body);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        send(request).await
    }

    /// POSTs `body` as it is (well-formed or not), labelled `application/json`.
    pub async fn post_raw_json(&self, path: &str, body: &[u8]) -> Reply {
        self.post_raw(path, Some("application/json"), body.to_vec())
            .await
    }

    /// A payment callback from the sandbox provider with an empty body and no signature.
    pub async fn post_unsigned_callback(&self) -> Reply {
        self.post_raw_json("/v1/payments/callbacks/sandbox", b"{}")
            .await
    }

    pub async fn post_order(&self, body: &Value) -> Reply {
        self.post_json("/v1/orders", body).await
    }

    pub async fn post_order_with_key(&self, key: &str, body: &Value) -> Reply {
        send(
            self.request(reqwest::Method::POST, "/v1/orders")
                .header("Idempotency-Key", key)
                .json(body),
        )
        .await
    }

    /// Creates an order and returns it, failing the test unless the answer is 201.
    pub async fn create_order(&self, body: &Value) -> Value {
        self.post_order(body).await.expect_status(201).body
    }

    pub async fn get_order(&self, id: &str) -> Value {
        self.get_ok(&format!("/v1/orders/{id}")).await
    }

    pub async fn cancel_order(&self, id: &str) -> Reply {
        self.post_json(&format!("/v1/orders/{id}/cancel"), &json!({}))
            .await
    }

    /// Polls the order until its status is `status`; panics with the server's output after
    /// `within`.
    pub async fn wait_for_order_status(&self, id: &str, status: &str, within: Duration) -> Value {
        eventually(
            within,
            async || {
                let order = self.get_order(id).await;
                if order["status"] == status {
                    Ok(order)
                } else {
                    Err(order["status"].clone())
                }
            },
            |last| {
                format!(
                    "order {id} is still {last} after {within:?}, expected {status}\n{}",
                    self.output()
                )
            },
        )
        .await
    }

    /// The order's timeline events.
    pub async fn timeline(&self, id: &str) -> Vec<Value> {
        self.get_ok(&format!("/v1/orders/{id}/timeline")).await["events"]
            .as_array()
            .expect("events array")
            .clone()
    }

    pub async fn stock(&self, sku: &str) -> Value {
        self.get_ok(&format!("/v1/stock/{sku}")).await
    }

    /// Total units of `sku` reserved over all warehouses.
    pub async fn reserved(&self, sku: &str) -> i64 {
        let stock = self.stock(sku).await;
        stock["warehouses"]
            .as_array()
            .expect("warehouses array")
            .iter()
            .map(|w| w["reserved"].as_i64().expect("reserved is an integer"))
            .sum()
    }

    /// Every order matching `query` (e.g. `customer_id=c1`), following the cursor to the end.
    pub async fn list_all_orders(&self, query: &str) -> Vec<Value> {
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        for _page in 0..10_000 {
            let mut path = format!("/v1/orders?limit=100&{query}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={}", url_encode(cursor)));
            }
            let page = self.get_ok(&path).await;
            orders.extend(
                page["orders"]
                    .as_array()
                    .expect("orders array")
                    .iter()
                    .cloned(),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return orders,
            }
        }
        panic!("pagination did not end after 10000 pages");
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build an HTTP client")
}

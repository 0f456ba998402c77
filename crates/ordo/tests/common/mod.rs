//! The black-box harness shared by the integration tests: it runs the real `ordo serve` binary
//! against a fresh database (a SQLite file or a PostgreSQL database of its own), waits for its
//! "ready" log line and talks to it over HTTP.
//!
//! Every behaviour is tested on both storage backends through [`backend_tests!`].

#![allow(dead_code)]

use serde_json::{Value, json};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long `ordo serve` may take to log that it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The PostgreSQL server the tests create their databases on, unless `ORDO_TEST_POSTGRES_URL`
/// names another.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Generates, for each `async fn NAME(backend: Backend)` in the calling file, a module `NAME`
/// with one test per storage backend: `NAME::sqlite` and `NAME::postgres`.
///
/// The PostgreSQL variant is skipped (loudly) when no server is reachable outside CI, and fails
/// in CI, where a missing service is a broken set-up.
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread")]
                async fn sqlite() {
                    super::$name(crate::common::Backend::sqlite()).await
                }

                #[tokio::test(flavor = "multi_thread")]
                async fn postgres() {
                    if let Some(backend) = crate::common::Backend::postgres().await {
                        super::$name(backend).await
                    }
                }
            }
        )+
    };
}

// ---------------------------------------------------------------------------------------------
// Backends and their databases
// ---------------------------------------------------------------------------------------------

/// The storage a test server runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file in the server's temporary directory.
    Sqlite,
    /// A fresh database created on the PostgreSQL server at `admin_url`.
    Postgres { admin_url: String },
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend::Sqlite
    }

    /// The PostgreSQL backend, or `None` (after a loud notice on stderr) when its server is
    /// unreachable outside CI. In CI (`CI` set) an unreachable server fails the test.
    pub async fn postgres() -> Option<Backend> {
        let admin_url = postgres_admin_url();
        match connect_postgres(&admin_url).await {
            Ok(connection) => {
                connection.close().await;
                Some(Backend::Postgres { admin_url })
            }
            Err(reason) if std::env::var_os("CI").is_some() => {
                panic!("PostgreSQL at {admin_url} is unreachable in CI: {reason}")
            }
            Err(reason) => {
                eprintln!(
                    "\n**********************************************************\n\
                     SKIPPED: postgres unreachable at {admin_url}: {reason}\n\
                     (set ORDO_TEST_POSTGRES_URL or run scripts/test.sh)\n\
                     **********************************************************\n"
                );
                None
            }
        }
    }

    /// A database URL of this backend's kind that cannot be opened, for start-up failure tests.
    pub fn unreachable_database_url(&self, workdir: &Path) -> String {
        match self {
            Backend::Sqlite => {
                // A directory cannot be created under a regular file.
                let file = workdir.join("not-a-directory");
                std::fs::write(&file, b"").expect("write a plain file");
                format!("sqlite://{}/ordo.db", file.display())
            }
            Backend::Postgres { .. } => "postgres://postgres@127.0.0.1:1/x".to_owned(),
        }
    }
}

fn postgres_admin_url() -> String {
    std::env::var("ORDO_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

async fn connect_postgres(url: &str) -> Result<ordo_storage::Database, String> {
    let connect = ordo_storage::Database::connect(url, 1);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("connection timed out after 5 s".to_owned()),
    }
}

/// Runs one statement on the PostgreSQL server at `admin_url`.
async fn postgres_execute(admin_url: &str, statement: String) -> Result<(), String> {
    let connection = connect_postgres(admin_url).await?;
    let result = connection.execute_unchecked(&statement).await;
    connection.close().await;
    result.map(|_| ()).map_err(|error| error.to_string())
}

/// `url` with its path (the database name) replaced by `database`, query string kept.
fn with_database_name(url: &str, database: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let (base, query) = match url.find('?') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let host_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{database}{query}", &base[..host_end])
}

/// A test's own database; a PostgreSQL one is dropped (best effort) with it.
pub struct TestDatabase {
    pub url: String,
    postgres: Option<(String, String)>, // (admin URL, database name)
}

impl TestDatabase {
    pub async fn create(backend: &Backend, workdir: &Path) -> TestDatabase {
        match backend {
            Backend::Sqlite => TestDatabase {
                url: format!("sqlite://{}/ordo.db", workdir.display()),
                postgres: None,
            },
            Backend::Postgres { admin_url } => {
                let name = format!("ordo_test_{}", random_hex());
                postgres_execute(admin_url, format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
                TestDatabase {
                    url: with_database_name(admin_url, &name),
                    postgres: Some((admin_url.clone(), name)),
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread with a
        // runtime of its own, and give up quietly after a few seconds.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                tokio::time::timeout(
                    Duration::from_secs(10),
                    postgres_execute(&admin_url, statement),
                )
                .await
                .ok()
            })
        });
        let _ = dropper.join();
    }
}

/// 64 random bits in hex, from the standard library's randomly seeded hasher.
pub fn random_hex() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// Lines a child wrote on one stream, collected by a thread that keeps draining the pipe.
#[derive(Clone, Default)]
pub struct CapturedLines(Arc<Mutex<Vec<String>>>);

impl CapturedLines {
    fn drain_from(stream: impl Read + Send + 'static) -> CapturedLines {
        let lines = CapturedLines::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buffer = Vec::new();
            loop {
                buffer.clear();
                match reader.read_until(b'\n', &mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buffer).trim_end().to_owned();
                        sink.0.lock().unwrap().push(line);
                    }
                }
            }
        });
        lines
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A running (or exited) `ordo serve` process with its output captured.
pub struct ServerProcess {
    child: Child,
    stdout: CapturedLines,
    stderr: CapturedLines,
}

impl ServerProcess {
    /// Spawns `ordo serve` on `database_url`, every listener on a free port, JSON logs on stdout.
    pub fn spawn(database_url: &str, workdir: &Path) -> ServerProcess {
        ServerProcess::spawn_with_env(database_url, workdir, &[])
    }

    /// As [`ServerProcess::spawn`], with extra environment variables set last (they win).
    pub fn spawn_with_env(
        database_url: &str,
        workdir: &Path,
        extra_env: &[(String, String)],
    ) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ordo"));
        command
            .arg("serve")
            .current_dir(workdir)
            .env("ORDO_HTTP_ADDR", "127.0.0.1:0")
            .env("ORDO_ADMIN_ADDR", "127.0.0.1:0")
            .env("ORDO_GRPC_ADDR", "127.0.0.1:0")
            .env("ORDO_DATABASE_URL", database_url)
            .env("RUST_LOG", "info")
            .env("ORDO_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The embedded defaults, whatever the developer's shell has set.
        for variable in [
            "ORDO_REDIS_URL",
            "ORDO_BROKER_URL",
            "ORDO_API_KEYS",
            "ORDO_ADMIN_TOKEN",
            "ORDO_CONFIG",
            "ORDO_PROFILE",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            command.env_remove(variable);
        }
        command.envs(extra_env.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn().expect("spawn the ordo binary");
        let stdout = CapturedLines::drain_from(child.stdout.take().expect("piped stdout"));
        let stderr = CapturedLines::drain_from(child.stderr.take().expect("piped stderr"));
        ServerProcess {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits in i32")
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.snapshot()
    }

    /// Everything the process wrote so far, stdout then stderr, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.snapshot().join("\n"),
            self.stderr.snapshot().join("\n")
        )
    }

    /// Sends `signal` unless the process has already been reaped (its pid could be reused).
    pub fn signal(&mut self, signal: libc::c_int) {
        if self
            .child
            .try_wait()
            .expect("try_wait on the server")
            .is_some()
        {
            return;
        }
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's,
        // which has not been reaped, so it cannot have been reused.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on the server") {
                // Let the drain threads pick up the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the start-up line `"message":"ordo is ready"` and returns its HTTP and admin
    /// addresses; panics with the captured output if it does not come within `READY_TIMEOUT`
    /// or the process exits first.
    pub async fn wait_ready(&mut self) -> ReadyLine {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(ready) = self
                .stdout
                .snapshot()
                .iter()
                .find_map(|l| ReadyLine::parse(l))
            {
                return ready;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait on the server") {
                tokio::time::sleep(Duration::from_millis(50)).await;
                panic!(
                    "ordo exited ({status}) before it was ready\n{}",
                    self.output()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "ordo did not log \"ordo is ready\" within {READY_TIMEOUT:?}\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "=== ordo output (pid {}) ===\n{}",
                self.child.id(),
                self.output()
            );
        }
    }
}

/// The start-up line's addresses.
#[derive(Debug, Clone)]
pub struct ReadyLine {
    pub http_addr: String,
    pub grpc_addr: String,
    pub admin_addr: String,
}

impl ReadyLine {
    /// Parses a log line if it is the ready line. Keys are looked up at the top level as the
    /// contract says, and also under `fields` (tracing's default JSON layout) so that a layout
    /// slip fails one dedicated test (`ready_line_is_flat_json` in api.rs) instead of all.
    pub fn parse(line: &str) -> Option<ReadyLine> {
        let value: Value = serde_json::from_str(line).ok()?;
        let lookup = |key: &str| {
            value
                .get(key)
                .or_else(|| value.get("fields").and_then(|f| f.get(key)))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if lookup("message")? != "ordo is ready" {
            return None;
        }
        Some(ReadyLine {
            http_addr: lookup("http_addr")?,
            grpc_addr: lookup("grpc_addr")?,
            admin_addr: lookup("admin_addr")?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The test server
// ---------------------------------------------------------------------------------------------

/// A ready `ordo serve` on its own database, killed when dropped.
pub struct TestServer {
    // Field order is drop order: the process goes before its database and directory.
    process: ServerProcess,
    database: TestDatabase,
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
        self.get(&format!("/v1/orders/{id}"))
            .await
            .expect_status(200)
            .body
    }

    pub async fn cancel_order(&self, id: &str) -> Reply {
        self.post_json(&format!("/v1/orders/{id}/cancel"), &json!({}))
            .await
    }

    /// Polls the order until its status is `status`; panics with the server's output after
    /// `within`.
    pub async fn wait_for_order_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let order = self.get_order(id).await;
            if order["status"] == status {
                return order;
            }
            assert!(
                Instant::now() < deadline,
                "order {id} is still {} after {within:?}, expected {status}\n{}",
                order["status"],
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The order's timeline events.
    pub async fn timeline(&self, id: &str) -> Vec<Value> {
        self.get(&format!("/v1/orders/{id}/timeline"))
            .await
            .expect_status(200)
            .body["events"]
            .as_array()
            .expect("events array")
            .clone()
    }

    pub async fn stock(&self, sku: &str) -> Value {
        self.get(&format!("/v1/stock/{sku}"))
            .await
            .expect_status(200)
            .body
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
            let page = self.get(&path).await.expect_status(200).body;
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

// ---------------------------------------------------------------------------------------------
// Replies and assertions
// ---------------------------------------------------------------------------------------------

/// A response read to the end: status, headers, the body as text and as JSON (`Null` if the
/// body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("read the response body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            body,
        }
    }

    #[track_caller]
    pub fn expect_status(self, status: u16) -> Reply {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {} with body: {}",
            self.status, self.text
        );
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The response's `traceparent` as (trace id, span id); fails the test if it is missing or
    /// not of the W3C form `00-<32 hex>-<16 hex>-<2 hex>`.
    #[track_caller]
    pub fn traceparent(&self) -> (String, String) {
        let header = self.header("traceparent").unwrap_or_else(|| {
            panic!(
                "no traceparent header on HTTP {}: {}",
                self.status, self.text
            )
        });
        parse_traceparent(header)
            .unwrap_or_else(|| panic!("malformed traceparent response header {header:?}"))
    }

    pub fn trace_id(&self) -> String {
        self.traceparent().0
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    Reply::read(request.send().await.expect("send the request")).await
}

/// Splits a W3C traceparent into (trace id, span id) if well-formed.
pub fn parse_traceparent(header: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = header.split('-').collect();
    match parts.as_slice() {
        [version, trace, span, flags]
            if is_lower_hex(version, 2)
                && is_lower_hex(trace, 32)
                && is_lower_hex(span, 16)
                && is_lower_hex(flags, 2) =>
        {
            Some(((*trace).to_owned(), (*span).to_owned()))
        }
        _ => None,
    }
}

pub fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A trace or span id that is lower-case hex of the right length and not all zeros.
#[track_caller]
pub fn assert_hex_id(value: &Value, len: usize, what: &str) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    assert!(
        is_lower_hex(text, len),
        "{what} {text:?} is not {len} lower-case hex digits"
    );
    assert!(text.bytes().any(|b| b != b'0'), "{what} is all zeros");
}

/// Checks the shape of an RFC 3339 date-time (`2025-01-31T12:34:56.789Z` or with an offset).
#[track_caller]
pub fn assert_rfc3339(value: &Value, what: &str) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let mut ok = bytes.len() >= 20
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && matches!(bytes[10], b'T' | b't')
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19);
    if ok {
        let mut rest = &text[19..];
        if let Some(fraction) = rest.strip_prefix('.') {
            let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
            ok &= len > 0;
            rest = &fraction[len..];
        }
        ok &= matches!(rest, "Z" | "z")
            || (rest.len() == 6
                && matches!(rest.as_bytes()[0], b'+' | b'-')
                && rest.as_bytes()[3] == b':'
                && rest[1..3].bytes().all(|b| b.is_ascii_digit())
                && rest[4..6].bytes().all(|b| b.is_ascii_digit()));
    }
    assert!(ok, "{what} {text:?} is not an RFC 3339 date-time");
}

/// Asserts an error answer: the status, the `code`, and the full error body shape
/// `{"error":{"code","message","details":[{"field","description"}],"trace_id"}}` whose trace id
/// is the response's `traceparent` trace id. Returns the `error` object.
#[track_caller]
pub fn assert_error<'a>(reply: &'a Reply, status: u16, code: &str) -> &'a Value {
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (status, Some(code)),
        "expected HTTP {status} `{code}`, got HTTP {} with body: {}",
        reply.status,
        reply.text
    );
    assert_error_shape(reply)
}

/// The shape checks of [`assert_error`] for any error status.
#[track_caller]
pub fn assert_error_shape(reply: &Reply) -> &Value {
    let body = reply.body.as_object().unwrap_or_else(|| {
        panic!(
            "HTTP {} error body is not a JSON object: {:?}",
            reply.status, reply.text
        )
    });
    assert_eq!(
        body.len(),
        1,
        "error body has keys besides `error`: {}",
        reply.text
    );
    let error = &reply.body["error"];
    let shape = |ok: bool, what: &str| {
        assert!(
            ok,
            "error body: {what}; HTTP {}: {}",
            reply.status, reply.text
        );
    };
    shape(error.is_object(), "`error` is not an object");
    shape(
        error["code"].as_str().is_some_and(|c| !c.is_empty()),
        "no `code` string",
    );
    shape(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no `message` string",
    );
    let details = error["details"].as_array();
    shape(details.is_some(), "`details` is not an array");
    for detail in details.into_iter().flatten() {
        shape(
            detail["field"].is_string() && detail["description"].is_string(),
            "a detail lacks `field`/`description` strings",
        );
    }
    assert_hex_id(&error["trace_id"], 32, "error.trace_id");
    assert_eq!(
        error["trace_id"].as_str(),
        Some(reply.trace_id().as_str()),
        "error.trace_id differs from the traceparent response header"
    );
    error
}

// ---------------------------------------------------------------------------------------------
// Catalogue and request bodies
// ---------------------------------------------------------------------------------------------

/// The catalogue [`seed_catalog`] loads.
pub const TEA: &str = "TEA-001"; // 19.99 USD, 100 in BKK-1
pub const MUG: &str = "MUG-002"; // 12.50 USD, 100 in BER-1
pub const BOOK_EUR: &str = "BOOK-EUR"; // 9.00 EUR, 10 in BER-1
pub const BKK: &str = "BKK-1"; // TH
pub const BER: &str = "BER-1"; // DE
pub const TEA_PRICE: i64 = 1999;
pub const MUG_PRICE: i64 = 1250;
pub const SEEDED_ON_HAND: i64 = 100;

pub fn money(amount_minor: i64, currency: &str) -> Value {
    json!({ "amount_minor": amount_minor, "currency": currency })
}

pub async fn put_product(
    server: &TestServer,
    sku: &str,
    amount_minor: i64,
    currency: &str,
) -> Value {
    let body = json!({ "name": format!("Product {sku}"), "price": money(amount_minor, currency) });
    server
        .put_json(&format!("/v1/products/{sku}"), &body)
        .await
        .expect_status(200)
        .body
}

pub async fn put_warehouse(server: &TestServer, id: &str, country: &str) -> Value {
    server
        .put_json(
            &format!("/v1/warehouses/{id}"),
            &json!({ "country": country }),
        )
        .await
        .expect_status(200)
        .body
}

pub async fn put_stock(server: &TestServer, sku: &str, warehouse: &str, on_hand: i64) -> Value {
    server
        .put_json(
            &format!("/v1/stock/{sku}/{warehouse}"),
            &json!({ "on_hand": on_hand }),
        )
        .await
        .expect_status(200)
        .body
}

/// Loads the constants above: two USD products, one EUR product, two warehouses, stock.
pub async fn seed_catalog(server: &TestServer) {
    put_warehouse(server, BKK, "TH").await;
    put_warehouse(server, BER, "DE").await;
    put_product(server, TEA, TEA_PRICE, "USD").await;
    put_product(server, MUG, MUG_PRICE, "USD").await;
    put_product(server, BOOK_EUR, 900, "EUR").await;
    put_stock(server, TEA, BKK, SEEDED_ON_HAND).await;
    put_stock(server, MUG, BER, SEEDED_ON_HAND).await;
    put_stock(server, BOOK_EUR, BER, 10).await;
}

/// One product with `on_hand` units in one warehouse, for tests that need a SKU of their own.
pub async fn seed_single_sku(server: &TestServer, sku: &str, on_hand: i64) {
    put_warehouse(server, "WH-1", "TH").await;
    put_product(server, sku, 500, "USD").await;
    put_stock(server, sku, "WH-1", on_hand).await;
}

/// A valid USD order body for `customer_id` with the given (sku, quantity) items.
pub fn order_body(customer_id: &str, items: &[(&str, i64)]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(sku, quantity)| json!({ "sku": sku, "quantity": quantity }))
        .collect();
    json!({
        "customer_id": customer_id,
        "currency": "USD",
        "items": items,
        "shipping_address": {
            "name": "Somchai Jaidee",
            "line1": "99 Sukhumvit Road",
            "city": "Bangkok",
            "postal_code": "10110",
            "country": "TH"
        },
        "contact": { "email": "somchai@example.com", "phone": "+66812345678" }
    })
}

/// Percent-encodes everything but unreserved characters, for query strings and paths.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A small deterministic PRNG (xorshift64*), enough to mutate request bodies reproducibly.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// (rows, published rows, largest number of claims of any row) of the server's outbox, read
/// straight from its database.
pub async fn outbox_state(server: &TestServer) -> (i64, i64, i64) {
    let rows = sql_i64s(
        server,
        "SELECT COUNT(*), COUNT(published_at_ms), COALESCE(MAX(attempts), 0) FROM outbox",
    )
    .await;
    (rows[0][0], rows[0][1], rows[0][2])
}

/// Runs `statement` on the PostgreSQL server of a PostgreSQL test server, connected to its
/// maintenance database (for statements about the server's own database: `ALTER DATABASE`,
/// `pg_terminate_backend`); `{database}` in `statement` is replaced by that database's name.
pub async fn postgres_admin_execute(server: &TestServer, statement: &str) {
    let Some((admin_url, name)) = &server.database.postgres else {
        panic!("not a PostgreSQL test server");
    };
    postgres_execute(admin_url, statement.replace("{database}", name))
        .await
        .unwrap_or_else(|e| panic!("{statement} failed: {e}"));
}

/// Runs `statement` on the server's database, beside the server; returns the rows it changed.
pub async fn sql_execute(server: &TestServer, statement: &str) -> u64 {
    let db = ordo_storage::Database::connect(server.database_url(), 1)
        .await
        .expect("connect to the test database");
    let changed = db
        .execute_unchecked(statement)
        .await
        .expect("run the statement");
    db.close().await;
    changed
}

/// The rows of `query` on the server's database, every column an integer.
pub async fn sql_i64s(server: &TestServer, query: &str) -> Vec<Vec<i64>> {
    sql_rows(server, query).await
}

/// The rows of `query` on the server's database, every column text.
pub async fn sql_texts(server: &TestServer, query: &str) -> Vec<Vec<String>> {
    sql_rows(server, query).await
}

async fn sql_rows<T: ordo_storage::sql::Column>(server: &TestServer, query: &str) -> Vec<Vec<T>> {
    let db = ordo_storage::Database::connect(server.database_url(), 1)
        .await
        .expect("connect to the test database");
    let rows = db.query_unchecked(query).await.expect("run the query");
    db.close().await;
    rows
}

// ---------------------------------------------------------------------------------------------
// A Redis of a test's own
// ---------------------------------------------------------------------------------------------

/// A `redis-server` of one test's own, on a free port, that the test can freeze (`SIGSTOP`:
/// connections stay open, nothing answers), thaw, kill and restart on the same port, without
/// disturbing the machine's Redis that other tests use. Killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on its port (after [`RedisServer::kill`]), empty, and waits until it
    /// answers.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it answers `PING` now.
    fn answers(&self) -> bool {
        use std::io::Write;
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            let pid = i32::try_from(child.id()).expect("pid fits in i32");
            // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Stops it answering while its connections stay open (an unreachable Redis).
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Kills it (its data is gone).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.thaw();
        self.kill();
    }
}

/// `cache_requests_total{cache,result}` from the server's metrics (0 when absent).
pub async fn cache_requests(server: &TestServer, cache: &str, result: &str) -> u64 {
    let metrics = server.admin_get("/metrics").await.expect_status(200).text;
    let series = format!("cache_requests_total{{cache=\"{cache}\",result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.trim().parse().expect("a counter value"))
}

/// The program `name` if it runs (`NAME --version`), or `None` after a loud notice outside CI.
/// In CI (`CI` set) a missing tool fails the test, as a missing service does: scripts/test.sh
/// installs `debian_package`.
pub fn required_tool(name: &str, debian_package: &str) -> Option<String> {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if found {
        return Some(name.to_owned());
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{name} is missing in CI (Debian package `{debian_package}`; scripts/test.sh installs it)"
        );
    }
    eprintln!(
        "\n**********************************************************\n\
         SKIPPED: {name} not found (apt-get install {debian_package}, or run scripts/test.sh)\n\
         **********************************************************\n"
    );
    None
}

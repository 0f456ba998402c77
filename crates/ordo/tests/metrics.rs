//! Black-box tests of the metrics on the admin port (`/metrics`) and of the access log that
//! shares their labels: the token, the HTTP histogram and its bounded `route` label, errors,
//! business counters, runtime and process gauges, OpenMetrics exemplars naming our traces, and
//! `promtool check metrics` on the text format.

use ordo_testkit::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const TOKEN: &str = "metrics-token-7f3a";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

// ---------------------------------------------------------------------------------------------
// Scraping and reading samples
// ---------------------------------------------------------------------------------------------

/// `GET /metrics` on the admin port with an optional bearer token and `Accept` header.
async fn scrape_with(server: &TestServer, token: Option<&str>, accept: Option<&str>) -> Reply {
    let mut request = server
        .client()
        .get(format!("{}/metrics", server.admin_url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(accept) = accept {
        request = request.header(reqwest::header::ACCEPT, accept);
    }
    send(request).await
}

/// The Prometheus text exposition of a server started without a token.
async fn scrape(server: &TestServer) -> String {
    let reply = scrape_with(server, None, None).await.expect_status(200);
    assert_eq!(reply.header("content-type"), Some(PROMETHEUS_TEXT));
    reply.text
}

/// One sample line: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, wanted: &[(&str, &str)]) -> bool {
        wanted.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// Every sample of a text exposition (exemplars, if any, ignored).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("unparsable sample {line:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut key = String::new();
        loop {
            let (_, c) = chars.next()?;
            match c {
                '}' => {
                    let (i, _) = chars.next()?;
                    rest = &inner[i..];
                    break;
                }
                ',' => {}
                '=' => {
                    let (_, quote) = chars.next()?;
                    if quote != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        let (_, c) = chars.next()?;
                        match c {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The value of the one sample named `name` with (at least) the labels `wanted`.
#[track_caller]
fn value(text: &str, name: &str, wanted: &[(&str, &str)]) -> f64 {
    find_value(text, name, wanted)
        .unwrap_or_else(|| panic!("no sample {name} with {wanted:?} in:\n{text}"))
}

fn find_value(text: &str, name: &str, wanted: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<Sample> = samples(text)
        .into_iter()
        .filter(|s| s.name == name && s.has(wanted))
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} with {wanted:?} matches several samples: {matching:?}"
    );
    matching.first().map(|s| s.value)
}

/// The distinct label sets of the HTTP histogram (its `_count` series).
fn http_series(text: &str) -> Vec<Vec<(String, String)>> {
    let mut series: Vec<_> = samples(text)
        .into_iter()
        .filter(|s| s.name == "http_server_request_duration_seconds_count")
        .map(|s| s.labels)
        .collect();
    series.sort();
    series
}

/// A W3C traceparent with a fresh trace id, sampled.
fn sampled_traceparent() -> (String, String) {
    let trace_id = format!("{}{}", random_hex(), random_hex());
    let header = format!("00-{trace_id}-{}-01", random_hex());
    (trace_id, header)
}

/// Waits (briefly) for the server's stdout to contain an access log line of `trace_id`.
async fn access_line(server: &TestServer, trace_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = server.logs().iter().find_map(|line| {
            let value: Value = serde_json::from_str(line).ok()?;
            (value["target"] == "ordo::access" && value["trace_id"] == trace_id).then_some(value)
        });
        if let Some(line) = found {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no access log line with trace_id {trace_id}\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The token
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn metrics_need_the_admin_token_when_one_is_set() {
    let server =
        TestServer::start_with_env(Backend::sqlite(), &[("ORDO_ADMIN_TOKEN", TOKEN)]).await;

    let wrong_tokens = [
        None,
        Some("wrong"),
        Some(&TOKEN[..TOKEN.len() - 1]),
        Some("metrics-token-7f3b"),
    ];
    for token in wrong_tokens {
        let reply = scrape_with(&server, token, None).await;
        assert_eq!(
            (reply.status, reply.body["error"]["code"].as_str()),
            (401, Some("unauthenticated")),
            "token {token:?}: HTTP {} {}",
            reply.status,
            reply.text
        );
        assert!(reply.body["error"]["message"].is_string(), "{}", reply.text);
        assert!(
            !reply.text.contains("http_server_request_duration_seconds"),
            "a rejected scrape leaked metrics"
        );
    }
    // Another scheme with the right secret is not a bearer token.
    let basic = send(
        server
            .client()
            .get(format!("{}/metrics", server.admin_url()))
            .header("authorization", format!("Basic {TOKEN}")),
    )
    .await;
    assert_eq!(basic.status, 401);

    let reply = scrape_with(&server, Some(TOKEN), None)
        .await
        .expect_status(200);
    assert_eq!(reply.header("content-type"), Some(PROMETHEUS_TEXT));
    assert!(reply.text.contains("# TYPE panics_total counter"));

    // Health and readiness stay open for orchestrators.
    server.admin_get("/healthz").await.expect_status(200);
    server.admin_get("/readyz").await.expect_status(200);
}

/// Sends requests for `period`, eight at a time: one request costs the service so little CPU
/// that a single loop can leave a 1 s profile without a sample.
async fn keep_busy(server: &TestServer, period: Duration) {
    let until = std::time::Instant::now() + period;
    busy_while(server, || std::time::Instant::now() < until).await;
}

async fn busy_while(server: &TestServer, go_on: impl Fn() -> bool) {
    let loops = (0..8).map(|_| async {
        while go_on() {
            server.get("/v1/orders?limit=5").await;
        }
    });
    futures::future::join_all(loops).await;
}

/// The answer to a profile `request`, with the service kept busy until it arrives. Not for a
/// fixed time: on a machine short of CPU the request may reach the service late, and a profile
/// that samples after the load stopped is empty (seen: ten in a row).
async fn profile_while_busy(server: &TestServer, request: impl Future<Output = Reply>) -> Reply {
    let answered = std::sync::atomic::AtomicBool::new(false);
    let answer = async {
        let answer = request.await;
        answered.store(true, std::sync::atomic::Ordering::Release);
        answer
    };
    let busy = busy_while(server, || {
        !answered.load(std::sync::atomic::Ordering::Acquire)
    });
    tokio::join!(answer, busy).0
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_profiles_need_the_token_and_return_flame_graph_data() {
    let server =
        TestServer::start_with_env(Backend::sqlite(), &[("ORDO_ADMIN_TOKEN", TOKEN)]).await;
    let profile = |query: &str, token: Option<&str>| {
        let mut request = server.client().get(format!(
            "{}/debug/pprof/profile?{query}",
            server.admin_url()
        ));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        send(request)
    };
    assert_eq!(profile("seconds=1", None).await.status, 401);
    let bad = profile("seconds=0", Some(TOKEN)).await;
    assert_eq!(
        (bad.status, bad.body["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{}",
        bad.text
    );

    // Keep the process busy while it is sampled, so the profile has stacks to show. On a
    // machine busy with the rest of the suite a one-second profile may catch no sample of this
    // process: an empty profile is taken again (a few times), a malformed one fails at once.
    let mut collapsed = None;
    for _ in 0..10 {
        let answer =
            profile_while_busy(&server, profile("seconds=1&format=collapsed", Some(TOKEN)))
                .await
                .expect_status(200);
        if !answer.text.trim().is_empty() {
            collapsed = Some(answer);
            break;
        }
    }
    let collapsed = collapsed.expect("ten one-second profiles of a busy process were all empty");
    let line = collapsed.text.lines().next().unwrap_or_default();
    let count = line.rsplit(' ').next().unwrap_or_default();
    assert!(
        line.contains(';') && count.parse::<u64>().is_ok(),
        "collapsed stacks are `frame;frame count` lines: {line:?}"
    );

    let svg = profile_while_busy(&server, profile("seconds=1", Some(TOKEN)))
        .await
        .expect_status(200);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(
        svg.text.contains("<svg"),
        "{}",
        &svg.text[..svg.text.len().min(200)]
    );
}

/// Resident memory of a process, from `/proc/<pid>/status`, in bytes.
fn resident_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kb * 1024
}

/// Symbolizing a profile parses the binary's debug information: hundreds of MB that used to
/// stay resident for good after every profile (seen on the release build: +300 MB). What may
/// stay is pprof's own sample table, allocated at the first profile and reused by the next
/// ones: 4,096 buckets of four entries of 128 frames of 32 bytes, one allocation of 16.6 kB a
/// bucket, which jemalloc (ordo's allocator) serves from its 20 kB size class: 80 MB resident;
/// the rest is given back, and a second profile grows nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_cpu_profile_gives_its_memory_back() {
    let server = TestServer::start(Backend::sqlite()).await;
    // A profile of a busy process (one that caught no sample has nothing to symbolize, so it
    // proves nothing: it is taken again, a few times).
    let profile_with_samples = || async {
        for _ in 0..10 {
            let request = server.client().get(format!(
                "{}/debug/pprof/profile?seconds=1&format=collapsed",
                server.admin_url()
            ));
            let answer = profile_while_busy(&server, send(request)).await;
            if !answer.expect_status(200).text.trim().is_empty() {
                return;
            }
        }
        panic!("ten one-second profiles of a busy process were all empty");
    };
    // Warm the process (connections, caches, runtime threads) before the baseline.
    keep_busy(&server, Duration::from_millis(500)).await;
    let before = resident_bytes(server.pid());
    profile_with_samples().await;
    let after_first = resident_bytes(server.pid());
    profile_with_samples().await;
    let after_second = resident_bytes(server.pid());
    let mb = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    eprintln!(
        "resident: {:.1} MB before, {:.1} MB after one profile, {:.1} MB after two",
        mb(before),
        mb(after_first),
        mb(after_second)
    );
    const SAMPLE_TABLE: u64 = 4096 * 20 * 1024;
    const SLACK: u64 = 16 * 1024 * 1024;
    assert!(
        after_first < before + SAMPLE_TABLE + SLACK,
        "a profile left {:.1} MB resident (before: {:.1} MB)",
        mb(after_first.saturating_sub(before)),
        mb(before)
    );
    assert!(
        after_second < after_first + SLACK,
        "a second profile grew the process by {:.1} MB",
        mb(after_second.saturating_sub(after_first))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_open_without_a_token() {
    let server = TestServer::start(Backend::sqlite()).await;
    let text = scrape(&server).await;
    assert!(text.contains("# TYPE tokio_workers gauge"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// The HTTP histogram and errors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_measured_by_route_with_bounded_cardinality() {
    let server = TestServer::start(Backend::sqlite()).await;
    seed_catalog(&server).await;
    server.create_order(&order_body("c-1", &[(TEA, 1)])).await;
    server.get("/nowhere").await.expect_status(404);
    let invalid = server
        .post_raw_json("/v1/orders", b"{\"customer_id\": 12")
        .await;
    assert_error(&invalid, 400, "invalid_argument");

    let text = scrape(&server).await;
    let created = [
        ("method", "POST"),
        ("route", "/v1/orders"),
        ("status_code", "201"),
    ];
    assert_eq!(
        value(
            &text,
            "http_server_request_duration_seconds_bucket",
            &[created.as_slice(), &[("le", "+Inf")]].concat()
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "http_server_request_duration_seconds_count",
            &created
        ),
        1.0
    );
    assert!(value(&text, "http_server_request_duration_seconds_sum", &created) > 0.0);
    let rejected = [
        ("method", "POST"),
        ("route", "/v1/orders"),
        ("status_code", "400"),
    ];
    assert_eq!(
        value(
            &text,
            "http_server_request_duration_seconds_count",
            &rejected
        ),
        1.0
    );
    let unmatched = [
        ("method", "GET"),
        ("route", "unmatched"),
        ("status_code", "404"),
    ];
    assert_eq!(
        value(
            &text,
            "http_server_request_duration_seconds_count",
            &unmatched
        ),
        1.0
    );
    assert!(
        find_value(
            &text,
            "http_server_request_duration_seconds_bucket",
            &[unmatched.as_slice(), &[("le", "+Inf")]].concat()
        )
        .is_some()
    );
    // Templates, never concrete paths.
    assert!(
        !text.contains("/nowhere"),
        "a raw path became a label:\n{text}"
    );
    assert!(
        text.contains("route=\"/v1/stock/{sku}/{warehouse}\""),
        "{text}"
    );
    assert_eq!(
        value(&text, "errors_total", &[("error_kind", "invalid_argument")]),
        1.0
    );
    assert_eq!(
        value(&text, "errors_total", &[("error_kind", "not_found")]),
        1.0
    );

    // Fifty distinct unknown paths add observations, not series.
    let series_before = http_series(&text);
    for i in 0..50 {
        server
            .get(&format!("/unknown/{i}/{}", random_hex()))
            .await
            .expect_status(404);
    }
    let text = scrape(&server).await;
    assert_eq!(
        http_series(&text),
        series_before,
        "unknown paths created new series"
    );
    assert_eq!(
        value(
            &text,
            "http_server_request_duration_seconds_count",
            &unmatched
        ),
        51.0
    );
    assert!(!text.contains("/unknown/"), "a raw path became a label");
    assert_eq!(
        value(&text, "errors_total", &[("error_kind", "not_found")]),
        51.0
    );

    // A method outside the standard set shares one value too.
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    let reply = send(server.request(brew, "/v1/orders")).await;
    assert_error(&reply, 405, "method_not_allowed");
    let text = scrape(&server).await;
    assert_eq!(
        value(
            &text,
            "http_server_request_duration_seconds_count",
            &[
                ("method", "_OTHER"),
                ("route", "/v1/orders"),
                ("status_code", "405")
            ]
        ),
        1.0
    );
    assert!(!text.contains("BREW"));
}

// ---------------------------------------------------------------------------------------------
// Business counters
// ---------------------------------------------------------------------------------------------

async fn business_counters_follow_commits(backend: Backend) {
    let server = TestServer::start(backend).await;
    seed_catalog(&server).await;
    let text = scrape(&server).await;
    assert_eq!(value(&text, "orders_created_total", &[]), 0.0);
    assert_eq!(value(&text, "orders_cancelled_total", &[]), 0.0);

    let first = server.create_order(&order_body("c-1", &[(TEA, 1)])).await;
    server.create_order(&order_body("c-1", &[(MUG, 2)])).await;
    let keyed = order_body("c-2", &[(TEA, 1)]);
    server
        .post_order_with_key("key-1", &keyed)
        .await
        .expect_status(201);
    // A replay returns the first order and creates nothing.
    let replay = server.post_order_with_key("key-1", &keyed).await;
    assert!(
        replay.status == 200 || replay.status == 201,
        "replay: HTTP {} {}",
        replay.status,
        replay.text
    );
    // The same key with another body is a conflict; stock runs out; a quantity is invalid.
    let reused = server
        .post_order_with_key("key-1", &order_body("c-2", &[(MUG, 1)]))
        .await;
    assert_error(&reused, 409, "conflict");
    let too_many = server
        .post_order(&order_body("c-3", &[(TEA, SEEDED_ON_HAND * 10)]))
        .await;
    assert_error(&too_many, 409, "insufficient_stock");
    let zero = server.post_order(&order_body("c-3", &[(TEA, 0)])).await;
    assert_error(&zero, 400, "invalid_argument");

    let id = first["id"].as_str().expect("order id");
    server.cancel_order(id).await.expect_status(200);
    // Cancelling again changes nothing and counts nothing.
    server.cancel_order(id).await.expect_status(200);

    let text = scrape(&server).await;
    assert_eq!(value(&text, "orders_created_total", &[]), 3.0);
    assert_eq!(value(&text, "orders_cancelled_total", &[]), 1.0);
    for reason in ["conflict", "insufficient_stock", "invalid_argument"] {
        assert_eq!(
            value(&text, "orders_rejected_total", &[("reason", reason)]),
            1.0,
            "orders_rejected_total{{reason={reason:?}}}"
        );
    }
    assert_eq!(
        value(
            &text,
            "errors_total",
            &[("error_kind", "insufficient_stock")]
        ),
        1.0
    );
    let listed = server.list_all_orders("").await;
    assert_eq!(
        listed.len(),
        3,
        "orders_created_total equals the orders stored"
    );
}

backend_tests!(business_counters_follow_commits);

// ---------------------------------------------------------------------------------------------
// Runtime, process, panics
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn runtime_and_process_gauges_are_exposed() {
    let server = TestServer::start(Backend::sqlite()).await;
    // Let the sampler finish at least one interval.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let text = scrape(&server).await;

    assert_eq!(value(&text, "panics_total", &[]), 0.0);
    assert_eq!(value(&text, "log_lines_dropped_total", &[]), 0.0);
    // The readiness probes of start-up ran a query: database timings are recorded.
    assert!(
        value(
            &text,
            "db_client_operation_duration_seconds_count",
            &[("db_system", "sqlite"), ("operation", "SELECT 1")]
        ) >= 1.0,
        "{text}"
    );
    assert!(value(&text, "tokio_workers", &[]) >= 1.0, "{text}");
    assert!(value(&text, "tokio_alive_tasks", &[]) >= 1.0, "{text}");
    assert!(value(&text, "tokio_global_queue_depth", &[]) >= 0.0);
    let busy = value(&text, "tokio_busy_ratio", &[]);
    assert!((0.0..=1.0).contains(&busy), "tokio_busy_ratio {busy}");

    if cfg!(target_os = "linux") {
        let rss = value(&text, "process_resident_memory_bytes", &[]);
        assert!(rss > 1024.0 * 1024.0, "resident memory {rss}");
        assert!(value(&text, "process_cpu_seconds_total", &[]) >= 0.0);
        assert!(value(&text, "process_open_fds", &[]) >= 3.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value(&text, "process_start_time_seconds", &[]);
        assert!(
            (now - 120.0..=now + 5.0).contains(&started),
            "process_start_time_seconds {started} is not about now ({now})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// OpenMetrics and exemplars
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn openmetrics_exemplars_name_our_traces() {
    let server = TestServer::start(Backend::sqlite()).await;
    seed_catalog(&server).await;
    let (trace_id, traceparent) = sampled_traceparent();
    let reply = send(
        server
            .request(reqwest::Method::GET, &format!("/v1/products/{TEA}"))
            .header("traceparent", &traceparent),
    )
    .await
    .expect_status(200);
    assert_eq!(
        reply.trace_id(),
        trace_id,
        "our traceparent was not adopted"
    );

    let reply = scrape_with(&server, None, Some("application/openmetrics-text"))
        .await
        .expect_status(200);
    assert_eq!(reply.header("content-type"), Some(OPENMETRICS_TEXT));
    assert!(reply.text.ends_with("# EOF\n"), "no # EOF at the end");
    let exemplar = format!("# {{trace_id=\"{trace_id}\"}} ");
    let line = reply
        .text
        .lines()
        .find(|line| line.contains(&exemplar))
        .unwrap_or_else(|| panic!("no exemplar of trace {trace_id}:\n{}", reply.text));
    let sample = parse_sample(line).expect("an exemplar line is a sample");
    assert_eq!(sample.name, "http_server_request_duration_seconds_bucket");
    assert!(
        sample.has(&[
            ("method", "GET"),
            ("route", "/v1/products/{sku}"),
            ("status_code", "200")
        ]),
        "{line}"
    );
    let observed: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("exemplar value");
    let le: f64 = sample
        .label("le")
        .unwrap()
        .replace("+Inf", "inf")
        .parse()
        .unwrap();
    assert!(
        observed > 0.0 && observed <= le,
        "exemplar {observed} outside its bucket le={le}"
    );

    // An unsampled request leaves no exemplar: it would point at a trace nobody exported.
    let unsampled_trace = format!("{}{}", random_hex(), random_hex());
    send(
        server
            .request(reqwest::Method::GET, &format!("/v1/products/{MUG}"))
            .header(
                "traceparent",
                format!("00-{unsampled_trace}-{}-00", random_hex()),
            ),
    )
    .await
    .expect_status(200);
    let reply = scrape_with(&server, None, Some("application/openmetrics-text")).await;
    assert!(!reply.text.contains(&unsampled_trace));

    // The text format carries no exemplars.
    let text = scrape(&server).await;
    assert!(!text.contains("trace_id"), "exemplar in the text format");
    assert!(!text.contains("# EOF"));
}

// ---------------------------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn promtool_accepts_the_text_format() {
    let Some(promtool) = required_tool("promtool", "prometheus") else {
        return;
    };
    let server = TestServer::start(Backend::sqlite()).await;
    seed_catalog(&server).await;
    server.create_order(&order_body("c-1", &[(TEA, 1)])).await;
    assert_error(&server.get("/nowhere").await, 404, "not_found");
    assert_error(
        &server.post_order(&order_body("c-1", &[(TEA, 0)])).await,
        400,
        "invalid_argument",
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let text = scrape(&server).await;

    let output = run_with_stdin(&promtool, &["check", "metrics"], text.as_bytes());
    assert!(
        output.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- exposition ---\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // promtool also prints lint findings without failing on some versions: there must be none.
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(findings.trim().is_empty(), "promtool findings:\n{findings}");
}

fn run_with_stdin(program: &str, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait for promtool");
    let _ = writer.join();
    output
}

// ---------------------------------------------------------------------------------------------
// The access log
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn access_log_lines_share_labels_with_metrics() {
    let server = TestServer::start(Backend::sqlite()).await;
    seed_catalog(&server).await;

    let created = server
        .post_order(&order_body("c-1", &[(TEA, 1)]))
        .await
        .expect_status(201);
    let missing = server.get("/v1/orders/ord_doesnotexist").await;
    let unknown = server.get("/no/such/path").await.expect_status(404);
    let cases = [
        (&created, "POST", "/v1/orders", 201),
        (&missing, "GET", "/v1/orders/{id}", missing.status),
        (&unknown, "GET", "unmatched", 404),
    ];
    for (reply, method, route, status) in cases {
        let (trace_id, span_id) = reply.traceparent();
        let line = access_line(&server, &trace_id).await;
        assert_eq!(line["message"], "request", "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["method"], method, "{line}");
        assert_eq!(line["route"], route, "{line}");
        assert_eq!(line["status_code"], json!(status), "{line}");
        assert_eq!(
            line["span_id"], span_id,
            "the line is not in the server span: {line}"
        );
        let seconds = line["duration_seconds"]
            .as_f64()
            .unwrap_or_else(|| panic!("duration_seconds is not a number: {line}"));
        assert!(seconds > 0.0 && seconds < 30.0, "{line}");
        // Exactly one access line per request.
        let count = server
            .logs()
            .iter()
            .filter(|l| l.contains("\"ordo::access\"") && l.contains(&trace_id))
            .count();
        assert_eq!(count, 1, "access lines of trace {trace_id}");
    }

    // The same names and values label the metric.
    let text = scrape(&server).await;
    for (_, method, route, status) in cases {
        let status = status.to_string();
        assert!(
            find_value(
                &text,
                "http_server_request_duration_seconds_count",
                &[
                    ("method", method),
                    ("route", route),
                    ("status_code", status.as_str())
                ]
            )
            .is_some(),
            "no series for {method} {route} {status}"
        );
    }
}

//! The operations kit under `deploy/`, checked by the tools that will load it and against a
//! live ordo:
//!
//! - `promtool check rules` and `promtool test rules` pass over `deploy/prometheus/`;
//! - the generated files (`rules/slo.yml`, the Grafana dashboards) are what their generators
//!   write;
//! - every alert carries `summary`, `description` and a `runbook` link to a section of
//!   `docs/runbooks.md`, and has a unit test;
//! - every metric a rule or a dashboard names, and every label it selects on, is one that a
//!   running ordo exports after traffic through every kind of request;
//! - `docker-compose config` accepts `deploy/compose.yaml`, `promtool check config` its
//!   Prometheus configuration. The OpenTelemetry Collector configuration is checked by no tool
//!   here: no collector binary is packaged for Debian.
//!
//! A missing tool (promtool, python3, docker-compose) skips loudly outside CI and fails in CI,
//! as a missing service does: scripts/test.sh installs them.

use ordo_testkit::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Rule files whose metrics ordo does not export yet, with the reason. Their names are reported,
/// not failed on, until they are exported; then the test fails so that the entry goes and the
/// names are checked like all others.
const PENDING_RULE_FILES: &[(&str, &str)] = &[];

/// Families a single ordo on SQLite with no broker never exports, because prometheus-client
/// declares a labelled family only once it has a series: (sample name, the name registered in
/// crates/telemetry/src/metrics.rs, why). Each is accepted only while that registration exists,
/// and reported.
const NOT_OBSERVABLE_HERE: &[(&str, &str, &str)] = &[
    (
        "consumer_events_dead_lettered_total",
        "\"consumer_events_dead_lettered\"",
        "needs a broker and a message failing five deliveries",
    ),
    (
        "consumer_duplicate_events_total",
        "\"consumer_duplicate_events\"",
        "needs a broker redelivering a processed event",
    ),
    (
        "rpc_client_duration_seconds_bucket",
        "\"rpc_client_duration\"",
        "needs roles split over processes",
    ),
];

/// Labels Prometheus attaches to every scraped series (target labels), and `le` of buckets.
const SCRAPE_LABELS: &[&str] = &["job", "instance"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy(path: &str) -> PathBuf {
    repo_root().join("deploy").join(path)
}

/// The files of `dir` ending in `extension`, sorted.
fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.{extension} in {}", dir.display());
    files
}

fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {} failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    text
}

// ---------------------------------------------------------------------------------------------
// The tools
// ---------------------------------------------------------------------------------------------

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) = required_tool("promtool", "prometheus") else {
        return;
    };
    let dir = deploy("prometheus");
    let rules: Vec<String> = files(&dir.join("rules"), "yml")
        .iter()
        .map(|p| format!("rules/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    let checked = run(&promtool, &args, &dir);
    assert!(!checked.contains("WARNING"), "{checked}");
    // The compose stack's Prometheus configuration (its rule_files glob is the container's).
    run(&promtool, &["check", "config", "prometheus.yml"], &dir);

    let tests: Vec<String> = files(&dir.join("tests"), "yml")
        .iter()
        .map(|p| format!("tests/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    // Every rule file is loaded by some unit test.
    for rule in &rules {
        let loaded = tests.iter().any(|test| {
            std::fs::read_to_string(dir.join(test))
                .unwrap()
                .contains(&format!("../{rule}"))
        });
        assert!(
            loaded,
            "no unit test in deploy/prometheus/tests loads {rule}"
        );
    }
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    run(&promtool, &args, &dir);
}

#[test]
fn generated_rules_and_dashboards_are_up_to_date() {
    let Some(python) = required_tool("python3", "python3") else {
        return;
    };
    for generator in ["prometheus/generate.py", "grafana/generate.py"] {
        let script = deploy(generator);
        run(
            &python,
            &[script.to_str().unwrap(), "--check"],
            &repo_root(),
        );
    }
}

#[test]
fn docker_compose_accepts_the_stack() {
    let Some(compose) = required_tool("docker-compose", "docker-compose") else {
        return;
    };
    let file = deploy("compose.yaml");
    let config = run(
        &compose,
        &["-f", file.to_str().unwrap(), "config", "--quiet"],
        &repo_root(),
    );
    assert!(config.trim().is_empty(), "docker-compose config: {config}");
}

// ---------------------------------------------------------------------------------------------
// Alerts: annotations, runbooks, unit tests
// ---------------------------------------------------------------------------------------------

/// One alert of a rule file, from its block of lines.
#[derive(Debug)]
struct AlertRule {
    file: String,
    name: String,
    annotations: BTreeMap<String, String>,
}

/// The alerts of a rule file. The files are YAML written to one layout (`- alert: NAME`, then
/// `annotations:` with one `key: value` line each, `>-` values on the indented lines below), so
/// a reader of lines suffices and no YAML library is needed.
fn alert_rules(path: &Path) -> Vec<AlertRule> {
    let text = std::fs::read_to_string(path).unwrap();
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut alerts: Vec<AlertRule> = Vec::new();
    let mut in_annotations = None::<usize>;
    let mut last_key = None::<String>;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("- alert: ") {
            alerts.push(AlertRule {
                file: file.clone(),
                name: name.trim().to_owned(),
                annotations: BTreeMap::new(),
            });
            in_annotations = None;
            continue;
        }
        if trimmed.starts_with("- record:") {
            in_annotations = None;
            continue;
        }
        if trimmed == "annotations:" {
            in_annotations = Some(indent);
            continue;
        }
        let Some(base) = in_annotations else { continue };
        if trimmed.is_empty() {
            continue;
        }
        if indent <= base {
            in_annotations = None;
            continue;
        }
        let alert = alerts.last_mut().expect("annotations inside an alert");
        match trimmed
            .split_once(": ")
            .or_else(|| trimmed.strip_suffix(':').map(|k| (k, "")))
        {
            Some((key, value)) if indent == base + 2 => {
                let value = value.trim().trim_matches('\'').trim_matches('"');
                let value = if value == ">-" || value == "|" {
                    ""
                } else {
                    value
                };
                alert.annotations.insert(key.to_owned(), value.to_owned());
                last_key = Some(key.to_owned());
            }
            _ => {
                let key = last_key.clone().expect("a continuation after a key");
                let entry = alert.annotations.entry(key).or_default();
                if !entry.is_empty() {
                    entry.push(' ');
                }
                entry.push_str(trimmed);
            }
        }
    }
    alerts
}

fn all_alerts() -> Vec<AlertRule> {
    files(&deploy("prometheus/rules"), "yml")
        .iter()
        .flat_map(|path| alert_rules(path))
        .collect()
}

#[test]
fn every_alert_has_a_summary_a_description_a_runbook_section_and_a_unit_test() {
    let runbooks = std::fs::read_to_string(repo_root().join("docs/runbooks.md")).unwrap();
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(|heading| heading.trim().to_lowercase())
        .collect();
    let tests: String = files(&deploy("prometheus/tests"), "yml")
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    let alerts = all_alerts();
    assert!(alerts.len() >= 20, "only {} alerts found", alerts.len());
    for alert in &alerts {
        let what = format!("{} ({})", alert.name, alert.file);
        for key in ["summary", "description", "runbook"] {
            assert!(
                alert.annotations.get(key).is_some_and(|v| v.len() > 10),
                "{what}: no `{key}` annotation: {:?}",
                alert.annotations
            );
        }
        let runbook = &alert.annotations["runbook"];
        let anchor = runbook
            .strip_prefix("docs/runbooks.md#")
            .unwrap_or_else(|| panic!("{what}: runbook {runbook:?} is not docs/runbooks.md#…"));
        assert!(
            anchors.contains(anchor),
            "{what}: docs/runbooks.md has no section `## …` for #{anchor}"
        );
        // A test that fires it: the alert named with at least one expected alert.
        let fired = tests.split("alertname: ").skip(1).any(|case| {
            case.starts_with(&format!("{}\n", alert.name)) && case.contains("exp_labels:")
        });
        assert!(
            fired,
            "{what}: no unit test in deploy/prometheus/tests expects it to fire"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// PromQL: the metric and label names an expression refers to
// ---------------------------------------------------------------------------------------------

/// The names a PromQL expression refers to: metrics, with the labels its selectors match on.
#[derive(Debug, Default)]
struct Referenced {
    /// metric name -> label names in its `{...}` selectors.
    metrics: BTreeMap<String, BTreeSet<String>>,
}

const PROMQL_KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
    "Inf",
    "NaN",
];

/// Aggregation operators: their `by (...)` may come before the parenthesis.
const PROMQL_AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// A tokenizer good enough for the expressions of rules and dashboards: it skips strings,
/// numbers and durations, `[...]` ranges, Grafana `$variables`, label lists after
/// `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`, and identifiers followed by `(`
/// (functions and aggregations); every other identifier is a metric name, and the label names
/// of a `{...}` after it are its selector's labels. A bare `{...}` selector has no metric name
/// and is reported as such.
fn referenced_names(expr: &str, into: &mut Referenced) {
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut last_metric: Option<String> = None;
    let is_ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_ws = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let skip_string = |j: usize| {
        let quote = chars[j];
        let mut k = j + 1;
        while k < chars.len() && chars[k] != quote {
            if chars[k] == '\\' {
                k += 1;
            }
            k += 1;
        }
        k + 1
    };
    let skip_group = |j: usize, open: char, close: char| {
        let mut depth = 0;
        let mut k = j;
        while k < chars.len() {
            if chars[k] == open {
                depth += 1;
            } else if chars[k] == close {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            k += 1;
        }
        k
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i);
        } else if c == '$' {
            // A Grafana variable: $name or ${name}.
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                i = skip_group(i, '{', '}');
            } else {
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
            }
        } else if c == '[' {
            i = skip_group(i, '[', ']');
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers, durations (5m, 1h30m), exponents.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            let end = skip_group(i, '{', '}');
            let labels = selector_labels(&chars[i + 1..end.saturating_sub(1).max(i + 1)]);
            match last_metric.take() {
                Some(metric) => into.metrics.entry(metric).or_default().extend(labels),
                None => {
                    // `{__name__=~"..."}` or a bare selector: name it so that it fails.
                    into.metrics
                        .entry("{bare selector}".to_owned())
                        .or_default();
                }
            }
            i = end;
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_ws(i);
            let followed_by_paren = next < chars.len() && chars[next] == '(';
            last_metric = None;
            if PROMQL_KEYWORDS.contains(&word.as_str()) {
                if followed_by_paren
                    && matches!(
                        word.as_str(),
                        "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                    )
                {
                    i = skip_group(next, '(', ')');
                }
            } else if followed_by_paren || PROMQL_AGGREGATIONS.contains(&word.as_str()) {
                // A function or an aggregation.
            } else {
                into.metrics.entry(word.clone()).or_default();
                if next < chars.len() && chars[next] == '{' {
                    last_metric = Some(word);
                    i = next;
                }
            }
        } else {
            last_metric = None;
            i += 1;
        }
    }
}

/// The label names of the matchers inside a `{...}` selector.
fn selector_labels(inner: &[char]) -> Vec<String> {
    let mut labels = Vec::new();
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        if c == '"' || c == '\'' || c == '`' {
            let quote = c;
            i += 1;
            while i < inner.len() && inner[i] != quote {
                if inner[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < inner.len() && (inner[i].is_ascii_alphanumeric() || inner[i] == '_') {
                i += 1;
            }
            labels.push(inner[start..i].iter().collect());
        } else if c == '$' {
            // A Grafana variable as a value: skip it.
            i += 1;
            while i < inner.len() && (inner[i].is_ascii_alphanumeric() || inner[i] == '_') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    labels
}

/// The `expr:` values (single line or `|` / `>` block) and `record:` names of a rule file.
fn rule_expressions(path: &Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (mut exprs, mut records) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(name) = trimmed
            .strip_prefix("- record: ")
            .or_else(|| trimmed.strip_prefix("record: "))
        {
            records.push(name.trim().to_owned());
        }
        if let Some(value) = trimmed.strip_prefix("expr: ") {
            let value = value.trim();
            if value.starts_with('|') || value.starts_with('>') {
                let mut block = String::new();
                i += 1;
                while i < lines.len() {
                    let next = lines[i];
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    if !next.trim_start().starts_with('#') {
                        block.push_str(next);
                        block.push('\n');
                    }
                    i += 1;
                }
                exprs.push(block);
                continue;
            }
            exprs.push(value.trim_matches('\'').trim_matches('"').to_owned());
        }
        i += 1;
    }
    (exprs, records)
}

/// Every `expr` of the panels (and their nested rows) and templating queries of a dashboard.
fn dashboard_expressions(dashboard: &Value, into: &mut Vec<String>) {
    match dashboard {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => into.push(expr.clone()),
                    ("query", Value::String(query)) if query.contains("label_values(") => {
                        into.push(query.clone())
                    }
                    ("query", Value::Object(query)) => {
                        if let Some(Value::String(q)) = query.get("query") {
                            into.push(q.clone());
                        }
                    }
                    _ => dashboard_expressions(value, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_expressions(v, into)),
        _ => {}
    }
}

#[test]
fn the_tokenizer_finds_metrics_and_selector_labels_only() {
    let mut found = Referenced::default();
    referenced_names(
        r#"sum by (job, le) (rate(http_server_request_duration_seconds_bucket{route=~"/v1/.*", status_code!="404"}[$__rate_interval] offset 1d))
           / on(job) group_left() max by(job) (tokio_workers) > 0.5e3
           and avg_over_time(operation:ordo_requests:rate5m[1h:5m]) or vector(1) unless up{job="$job"}"#,
        &mut found,
    );
    let names: Vec<&str> = found.metrics.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "http_server_request_duration_seconds_bucket",
            "operation:ordo_requests:rate5m",
            "tokio_workers",
            "up"
        ]
    );
    let labels: Vec<&str> = found.metrics["http_server_request_duration_seconds_bucket"]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(labels, ["route", "status_code"]);
    assert_eq!(
        found.metrics["up"].iter().collect::<Vec<_>>(),
        [&"job".to_owned()]
    );
}

/// `label_values(metric, label)` → `metric{label}`, so the label is checked as a selector's.
fn rewrite_label_values(query: &str) -> String {
    let Some(start) = query.find("label_values(") else {
        return query.to_owned();
    };
    let inner = &query[start + "label_values(".len()..];
    let inner = inner.strip_suffix(')').unwrap_or(inner);
    match inner.rsplit_once(',') {
        Some((metric, label)) => format!("{}{{{}=\"\"}}", metric.trim(), label.trim()),
        None => inner.trim().to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Names that exist
// ---------------------------------------------------------------------------------------------

/// Sample name -> label names seen on its samples; families declared by `# TYPE` without a
/// sample are present with no labels (`declared_only` lists them).
struct Exported {
    samples: BTreeMap<String, BTreeSet<String>>,
    declared_only: BTreeSet<String>,
}

fn exported(text: &str) -> Exported {
    let mut samples: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut declared: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            declared.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("a sample line");
        let labels = samples.entry(line[..name_end].to_owned()).or_default();
        if line[name_end..].starts_with('{') {
            let close = line.rfind('}').expect("a closed label set");
            labels.extend(selector_labels(
                &line[name_end + 1..close].chars().collect::<Vec<_>>(),
            ));
        }
    }
    let mut declared_only = BTreeSet::new();
    for (family, kind) in declared {
        let names: Vec<String> = match kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{family}{suffix}"))
                .collect(),
            _ => vec![family],
        };
        for name in names {
            if !samples.contains_key(&name) {
                samples.insert(name.clone(), BTreeSet::new());
                declared_only.insert(name);
            }
        }
    }
    Exported {
        samples,
        declared_only,
    }
}

/// Drives one request of every kind through a fresh ordo: catalogue writes, create (keyed and
/// not), read (cached and not), list, timeline, stock, pay with the sandbox so that the whole
/// pipeline runs to `shipped`, cancel, a 404, a 400, a method not allowed, and gRPC calls.
async fn drive_every_kind_of_request(server: &TestServer) {
    seed_catalog(server).await;
    // A POS terminal's batch: one sale accepted beyond the free stock, one rejected.
    let sold_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let sale = |id: &str, sku: &str, quantity: i64| {
        json!({"client_sale_id": id, "sold_at": sold_at, "currency": "USD",
            "items": [{"sku": sku, "quantity": quantity}],
            "payment": {"method": "cash", "amount": {"amount_minor": 100, "currency": "USD"}}})
    };
    server
        .post_json(
            "/v1/pos/batches",
            &json!({"terminal_id": "ops-till", "warehouse": BKK, "batch_seq": 1,
                "sales": [sale("s-1", MUG, 1), sale("s-2", "NO-SUCH-SKU", 1)]}),
        )
        .await
        .expect_status(200);
    let paid = server.create_order(&order_body("ops-1", &[(TEA, 1)])).await;
    let paid_id = paid["id"].as_str().unwrap().to_owned();
    server
        .post_json(&format!("/v1/orders/{paid_id}/payments"), &json!({}))
        .await
        .expect_status(201);
    let cancelled = server
        .post_order_with_key("ops-key-1", &order_body("ops-2", &[(MUG, 1)]))
        .await
        .expect_status(201)
        .body;
    let cancelled_id = cancelled["id"].as_str().unwrap();
    server.cancel_order(cancelled_id).await.expect_status(200);
    for _ in 0..2 {
        server.get_order(cancelled_id).await;
    }
    server.list_all_orders("customer_id=ops-1").await;
    server.timeline(cancelled_id).await;
    server.stock(TEA).await;
    server
        .get(&format!("/v1/products/{TEA}"))
        .await
        .expect_status(200);
    assert_error(&server.get("/no/such/path").await, 404, "not_found");
    assert_error(
        &server.post_order(&order_body("ops-3", &[(TEA, 0)])).await,
        400,
        "invalid_argument",
    );
    server.get("/openapi.json").await.expect_status(200);
    server.admin_get("/readyz").await.expect_status(200);

    // gRPC: a read and a not-found, so that rpc_server_duration_seconds has series.
    use ordo_grpc_api::pb;
    use ordo_grpc_api::pb::catalog_service_client::CatalogServiceClient;
    use ordo_grpc_api::pb::orders_service_client::OrdersServiceClient;
    let channel = tonic::transport::Channel::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .expect("connect to the gRPC port");
    CatalogServiceClient::new(channel.clone())
        .get_stock(pb::GetStockRequest { sku: TEA.into() })
        .await
        .expect("GetStock");
    let missing = OrdersServiceClient::new(channel)
        .get_order(pb::GetOrderRequest {
            id: "ord_doesnotexist".into(),
        })
        .await
        .expect_err("GetOrder of a missing order");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    server
        .wait_for_order_status(&paid_id, "shipped", Duration::from_secs(20))
        .await;
    // Let the runtime sampler and the relay's backlog look run at least once more.
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

/// Makes ordo shed a request and refuse a connection, deterministically: four requests whose
/// bodies never come hold ORDO_MAX_IN_FLIGHT (4), so the next request is shed; then idle
/// connections fill ORDO_MAX_CONNECTIONS_PER_CLIENT (16), so the next one is refused.
async fn shed_a_request_and_refuse_a_connection(server: &TestServer) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr: std::net::SocketAddr = server
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    // From an address of their own: the test client's pooled connections (127.0.0.1) must not
    // count against this client's share of connections.
    let connect = || async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    };
    // Requests whose bodies never come stay in flight. Four should fill the cap; a request
    // that was still finishing when they arrived may have got one of them shed, so another
    // is held until a request is shed (at most twelve).
    let hold = || async {
        let mut stream = connect().await;
        stream
            .write_all(
                b"POST /v1/orders HTTP/1.1\r\nhost: ordo\r\ncontent-type: application/json\r\n\
                  content-length: 100\r\n\r\n{",
            )
            .await
            .unwrap();
        stream
    };
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(hold().await);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = server.get(&format!("/v1/products/{TEA}")).await;
        if reply.status == 503 {
            assert_error(&reply, 503, "unavailable");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && held.len() < 12,
            "no request was shed with {} held in flight: HTTP {}",
            held.len(),
            reply.status
        );
        held.push(hold().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut refused = false;
    for _ in 0..40 {
        let mut stream = connect().await;
        let mut first = [0u8; 12];
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut first)).await;
        if let Ok(Ok(n)) = read
            && first[..n].starts_with(b"HTTP/1.1 503")
        {
            refused = true;
            break;
        }
        held.push(stream);
    }
    assert!(refused, "no connection was refused beyond 16 open ones");
    drop(held);
}

// On both storage backends: each exports its own `db_system` and statements.
backend_tests!(rules_and_dashboards_name_only_metrics_and_labels_ordo_exports);

async fn rules_and_dashboards_name_only_metrics_and_labels_ordo_exports(backend: Backend) {
    // Low admission caps, so that the test can make ordo shed and refuse once: those families
    // exist only once they have counted something.
    let server = TestServer::start_with_env(
        backend,
        &[
            ("ORDO_MAX_IN_FLIGHT", "4"),
            ("ORDO_MAX_CONNECTIONS_PER_CLIENT", "16"),
        ],
    )
    .await;
    drive_every_kind_of_request(&server).await;
    shed_a_request_and_refuse_a_connection(&server).await;
    let text = server.admin_get("/metrics").await.expect_status(200).text;
    let exported = exported(&text);
    let telemetry_source =
        std::fs::read_to_string(repo_root().join("crates/telemetry/src/metrics.rs")).unwrap();

    // What the rules and dashboards name, by file.
    let mut recorded: BTreeSet<String> = BTreeSet::new();
    let mut by_file: Vec<(String, Referenced)> = Vec::new();
    for path in files(&deploy("prometheus/rules"), "yml") {
        let (exprs, records) = rule_expressions(&path);
        assert!(!exprs.is_empty(), "no expr in {}", path.display());
        recorded.extend(records);
        let mut found = Referenced::default();
        exprs.iter().for_each(|e| referenced_names(e, &mut found));
        by_file.push((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            found,
        ));
    }
    let dashboards = files(&deploy("grafana/dashboards"), "json");
    assert!(dashboards.len() >= 3, "expected the three dashboards");
    for path in dashboards {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut exprs = Vec::new();
        dashboard_expressions(&dashboard, &mut exprs);
        assert!(exprs.len() >= 5, "few queries in {}", path.display());
        let mut found = Referenced::default();
        exprs
            .iter()
            .for_each(|e| referenced_names(&rewrite_label_values(e), &mut found));
        by_file.push((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            found,
        ));
    }

    let mut problems = Vec::new();
    let mut unverified_labels = BTreeSet::new();
    for (file, found) in &by_file {
        let pending = PENDING_RULE_FILES.iter().find(|(f, _)| f == file);
        let mut missing = Vec::new();
        for (metric, labels) in &found.metrics {
            if recorded.contains(metric) {
                continue;
            }
            let Some(exported_labels) = exported.samples.get(metric) else {
                match NOT_OBSERVABLE_HERE
                    .iter()
                    .find(|(name, _, _)| name == metric)
                {
                    Some((_, registered, why)) if telemetry_source.contains(registered) => {
                        eprintln!("{file}: {metric} not observable in this test ({why})")
                    }
                    _ => missing.push(metric.clone()),
                }
                continue;
            };
            if exported.declared_only.contains(metric) {
                // Declared, never observed in this run: its labels cannot be seen.
                if !labels.is_empty() {
                    unverified_labels.insert(format!("{metric}{labels:?}"));
                }
                continue;
            }
            for label in labels {
                let known = exported_labels.contains(label)
                    || SCRAPE_LABELS.contains(&label.as_str())
                    || (label == "le" && metric.ends_with("_bucket"));
                if !known {
                    problems.push(format!(
                        "{file}: label `{label}` of {metric} is not exported (it has {exported_labels:?})"
                    ));
                }
            }
        }
        match (pending, missing.is_empty()) {
            (Some((_, why)), false) => eprintln!(
                "PENDING {file}: {missing:?} not exported yet ({why}); checked once they are"
            ),
            (Some(_), true) => problems.push(format!(
                "{file} is listed in PENDING_RULE_FILES but all its metrics are exported now: \
                 remove the entry"
            )),
            (None, _) => problems.extend(
                missing
                    .into_iter()
                    .map(|m| format!("{file}: metric `{m}` is not exported by ordo")),
            ),
        }
    }
    if !unverified_labels.is_empty() {
        eprintln!(
            "labels not verified (the family had no sample after this traffic): {unverified_labels:?}"
        );
    }
    assert!(
        problems.is_empty(),
        "{}\n--- exported ---\n{:?}",
        problems.join("\n"),
        exported.samples.keys().collect::<Vec<_>>()
    );
}

//! The OpenAPI document is the contract, checked against the running service by schemathesis
//! (<https://schemathesis.io>, version pinned in `tests/schemathesis/requirements.txt`): every
//! operation, every phase (the document's examples, boundary values of every constraint,
//! fuzzing with valid and invalid data, and stateful sequences that follow the document's links
//! from a created order: read it, pay it, cancel it), every check.
//!
//! The checks, all of them (`--checks all`), and what each means here:
//! - `not_a_server_error`: no input yields a 5xx.
//! - `status_code_conformance`, `content_type_conformance`, `response_headers_conformance`,
//!   `response_schema_conformance`: every answer is one the document lists, with its body
//!   schema (the error body for every error) and headers.
//! - `negative_data_rejection`: whatever breaks the request schemas (a length, a range, a
//!   pattern, `minItems`, an unknown field) is refused with a 4xx.
//! - `positive_data_acceptance`: whatever the schemas allow is not refused as malformed (a 404
//!   or 409 is the state's answer, not the schema's).
//! - `missing_required_header`, `unsupported_method`, `allow_header_conformance`: a missing
//!   required header is a 4xx; a method a path does not take is 405 with `Allow`.
//! - `ignored_auth`: API keys are enforced in this run, so a request without one must be 401.
//! - `use_after_free`, `ensure_resource_availability`: what a 201 created can be read.
//! - `object_level_authorization` needs several callers' credentials; ordo's keys carry no
//!   ownership, so schemathesis has nothing to compare and the check passes by itself.
//!
//! The hooks (`tests/schemathesis/ordo_hooks.py`) keep schemathesis's labels of its own cases
//! honest where it approximates Unicode property classes, and sign payment callbacks as the
//! sandbox provider does. The configuration (`tests/schemathesis/schemathesis.toml`, plus the
//! id of a seeded payment) makes generated orders name the seeded products, so the stateful
//! phase has orders to follow, and generated callbacks name a real payment.
//!
//! schemathesis is installed by scripts/test.sh (into `~/.cache/ordo/schemathesis-<version>`,
//! or `$ORDO_SCHEMATHESIS_VENV`). Missing, the test is skipped loudly outside CI and fails in CI.

use ordo_testkit::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The API key of the run: keys are enforced, so that `ignored_auth` has something to check.
const API_KEY: &str = "schemathesis-key";
/// The sandbox provider's signing secret, with which the hooks sign payment callbacks.
const CALLBACK_SECRET: &str = "schemathesis-callback-secret";
/// schemathesis's time budget: phases repeat until it is spent, so this bounds the run.
const MAX_TIME_SECS: u64 = 45;
/// Test cases per operation and phase (within the time budget).
const MAX_EXAMPLES: u32 = 40;
/// How long the process may take beyond its budget (start-up, the last requests, the report);
/// with the budget, well within nextest's 120 s for a test, so a stuck run says why.
const GRACE: Duration = Duration::from_secs(30);

fn schemathesis_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis")
}

/// The pinned version, from the requirements file scripts/test.sh installs.
fn pinned_version() -> String {
    let requirements = std::fs::read_to_string(schemathesis_dir().join("requirements.txt"))
        .expect("read tests/schemathesis/requirements.txt");
    requirements
        .lines()
        .find_map(|line| line.trim().strip_prefix("schemathesis=="))
        .expect("requirements.txt pins schemathesis==<version>")
        .trim()
        .to_owned()
}

/// The `schemathesis` of the virtualenv scripts/test.sh makes, if it is the pinned version.
fn find_schemathesis() -> Option<PathBuf> {
    let version = pinned_version();
    let venv = match std::env::var_os("ORDO_SCHEMATHESIS_VENV") {
        Some(venv) => PathBuf::from(venv),
        None => {
            let home = std::env::var_os("HOME").map(PathBuf::from)?;
            home.join(format!(".cache/ordo/schemathesis-{version}"))
        }
    };
    let program = venv.join("bin/schemathesis");
    let output = Command::new(&program).arg("--version").output().ok()?;
    let reported = String::from_utf8_lossy(&output.stdout);
    (output.status.success() && reported.contains(&version)).then_some(program)
}

fn required_schemathesis() -> Option<PathBuf> {
    if let Some(program) = find_schemathesis() {
        return Some(program);
    }
    let version = pinned_version();
    if std::env::var_os("CI").is_some() {
        panic!(
            "schemathesis {version} is missing in CI (scripts/test.sh installs it into \
             ~/.cache/ordo/schemathesis-{version})"
        );
    }
    eprintln!(
        "\n**********************************************************\n\
         SKIPPED: schemathesis {version} not found (run scripts/test.sh, which installs it\n\
         into ~/.cache/ordo/schemathesis-{version}, or set ORDO_SCHEMATHESIS_VENV)\n\
         **********************************************************\n"
    );
    None
}

async fn call_with_key(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> Reply {
    send(
        server
            .request(method, path)
            .header("x-api-key", API_KEY)
            .json(&body),
    )
    .await
}

async fn put_with_key(server: &TestServer, path: &str, body: serde_json::Value) {
    call_with_key(server, reqwest::Method::PUT, path, body)
        .await
        .expect_status(200);
}

/// The catalogue `tests/schemathesis/schemathesis.toml` names: two USD products with plenty of
/// stock in one warehouse.
async fn seed(server: &TestServer) {
    put_with_key(server, "/v1/warehouses/WH-1", json!({"country": "TH"})).await;
    for (sku, price) in [("TEA-1", 500), ("MUG-1", 900)] {
        put_with_key(
            server,
            &format!("/v1/products/{sku}"),
            json!({"name": sku, "price": money(price, "USD")}),
        )
        .await;
        put_with_key(
            server,
            &format!("/v1/stock/{sku}/WH-1"),
            json!({"on_hand": 1_000_000_000}),
        )
        .await;
    }
}

/// A payment of a real order, whose id generated callbacks name (besides ids of no payment), so
/// that signed callbacks reach the payment's logic: amounts that differ, replays, a payment
/// the sandbox approved already.
async fn seed_payment(server: &TestServer) -> String {
    let order = call_with_key(
        server,
        reqwest::Method::POST,
        "/v1/orders",
        order_body("schemathesis-seed", &[("TEA-1", 1)]),
    )
    .await
    .expect_status(201);
    let order_id = order.body["id"].as_str().expect("order id").to_owned();
    let payment = call_with_key(
        server,
        reqwest::Method::POST,
        &format!("/v1/orders/{order_id}/payments"),
        json!({}),
    )
    .await
    .expect_status(201);
    payment.body["id"].as_str().expect("payment id").to_owned()
}

/// The repository's configuration, plus the seeded payment's id as a dictionary for callbacks.
fn run_configuration(payment_id: &str) -> String {
    let base = std::fs::read_to_string(schemathesis_dir().join("schemathesis.toml"))
        .expect("read tests/schemathesis/schemathesis.toml");
    format!(
        "{base}\n[dictionaries.seeded-payment]\nvalues = [\"{payment_id}\"]\n\n\
         [[operations]]\ninclude-operation-id = \"payment_callback\"\n\n\
         [operations.parameters]\n\
         \"body.payment_id\" = {{ dictionary = \"seeded-payment\", probability = 0.8 }}\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_failure_in_any_operation() {
    let Some(schemathesis) = required_schemathesis() else {
        return;
    };
    let server = TestServer::start_with_env(
        Backend::sqlite(),
        &[
            ("ORDO_API_KEYS", API_KEY),
            // A 503 of adaptive shedding on a busy test machine is no finding of the run.
            ("ORDO_SHED_ADAPTIVE", "false"),
            ("ORDO_SANDBOX_SECRET", CALLBACK_SECRET),
        ],
    )
    .await;
    seed(&server).await;
    let payment_id = seed_payment(&server).await;

    // schemathesis writes its caches into the working directory: a temporary one.
    let workdir = tempfile::tempdir().expect("create a temporary directory");
    let config = workdir.path().join("schemathesis.toml");
    std::fs::write(&config, run_configuration(&payment_id)).expect("write the configuration");
    let dir = schemathesis_dir();
    let mut command = Command::new(&schemathesis);
    command
        .current_dir(workdir.path())
        .env("SCHEMATHESIS_HOOKS", "ordo_hooks")
        .env("PYTHONPATH", &dir)
        .env("ORDO_SCHEMATHESIS_CALLBACK_SECRET", CALLBACK_SECRET)
        .env_remove("SCHEMATHESIS_CONFIG")
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .arg("run")
        .arg(server.url("/openapi.json"))
        .args(["--checks", "all"])
        .args(["--header", &format!("x-api-key: {API_KEY}")])
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        .args(["--max-time", &MAX_TIME_SECS.to_string()])
        .args(["--request-timeout", "10"])
        .args(["--generation-database", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn schemathesis");
    let deadline = started + Duration::from_secs(MAX_TIME_SECS) + GRACE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for schemathesis") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let output = child
        .wait_with_output()
        .expect("read schemathesis's output");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let elapsed = started.elapsed();
    eprintln!("schemathesis ran {elapsed:.1?}:\n{report}");
    match status {
        None => panic!(
            "schemathesis did not finish within {:?}",
            deadline - started
        ),
        Some(status) => assert!(
            status.success(),
            "schemathesis found failures ({status}); the report is above. ordo's output:\n{}",
            server.output()
        ),
    }

    // The run reached the service's logic, not only its front door: orders were placed (the
    // stateful phase follows their links).
    let orders = send(
        server
            .request(reqwest::Method::GET, "/v1/orders?limit=100")
            .header("x-api-key", API_KEY),
    )
    .await
    .expect_status(200);
    let placed = orders.body["orders"].as_array().map_or(0, Vec::len);
    assert!(
        placed > 0,
        "schemathesis placed no order: the seeded SKUs of schemathesis.toml were not used\n{report}"
    );
}

//! `ordo loadgen` against the real binary: it seeds its catalogue, creates, pays and follows
//! orders to `shipped` on a started server and says so in its summary; against nothing it
//! fails with a non-zero exit.

use ordo_testkit::*;
use std::process::Output;
use std::time::Duration;

/// Runs `ordo loadgen ARGS` to completion (at most two minutes).
async fn loadgen(args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(ordo_testkit::ordo_binary());
    command.arg("loadgen").args(args).kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("ordo loadgen finished within two minutes")
        .expect("run ordo loadgen")
}

fn describe(output: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_pays_and_follows_orders_to_shipped() {
    let server = TestServer::start(Backend::sqlite()).await;
    let target = server.base_url();
    let output = loadgen(&[
        "--target",
        &target,
        "--orders",
        "20",
        "--concurrency",
        "4",
        "--pay",
        "--follow",
    ])
    .await;
    let report = describe(&output);
    assert!(output.status.success(), "{report}\n{}", server.output());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert!(lines.contains(&"shipped: 20"), "{report}");
    assert!(lines.contains(&"create     201: 20"), "{report}");
    assert!(lines.contains(&"pay        201: 20"), "{report}");
    let paid_to_terminal = lines
        .iter()
        .find(|l| l.starts_with("paid→terminal (server)"))
        .unwrap_or_else(|| panic!("no paid→terminal row\n{report}"));
    let count: u64 = paid_to_terminal
        .split_whitespace()
        .nth(2)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no sample count in {paid_to_terminal:?}"));
    assert_eq!(count, 20, "{report}");

    // The orders are real: 20 units reserved across the load generator's SKUs.
    let mut reserved = 0;
    for i in 0..20 {
        reserved += server.reserved(&format!("LOADGEN-{i}")).await;
    }
    assert_eq!(reserved, 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_fails_when_nothing_answers() {
    // A port that was free a moment ago: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let target = format!("http://127.0.0.1:{port}");
    let output = loadgen(&[
        "--target",
        &target,
        "--no-seed",
        "--orders",
        "3",
        "--concurrency",
        "2",
        "--request-timeout",
        "2s",
    ])
    .await;
    let report = describe(&output);
    assert!(!output.status.success(), "{report}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("create     transport error: 3"), "{report}");
    assert!(stdout.contains("create failed: 3"), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_sends_the_api_key_an_instance_requires() {
    let server =
        TestServer::start_with_env(Backend::sqlite(), &[("ORDO_API_KEYS", "loadgen-key")]).await;
    let target = server.base_url();
    let args = ["--target", &target, "--orders", "5", "--concurrency", "2"];
    let with_key = loadgen(&[&args[..], &["--api-key", "loadgen-key"]].concat()).await;
    let report = describe(&with_key);
    assert!(with_key.status.success(), "{report}");
    assert!(
        String::from_utf8_lossy(&with_key.stdout).contains("create     201: 5"),
        "{report}"
    );
    // Without the key the first request is refused, and the load generator says why.
    let without = loadgen(&args).await;
    let report = describe(&without);
    assert!(!without.status.success(), "{report}");
    assert!(report.contains("401"), "{report}");
    assert!(report.contains("unauthenticated"), "{report}");
}

/// `--pos` plays terminals: 2 terminals × 30 batches of 10 sales, with replays (every 10th
/// batch, which must get the same answer) and left-out batches (every 25th, which the next
/// answers must report missing); the load generator checks both and exits 0 only if they hold.
#[tokio::test(flavor = "multi_thread")]
async fn loadgen_plays_pos_terminals_with_replays_and_gaps() {
    let server = TestServer::start(Backend::sqlite()).await;
    let target = server.base_url();
    let output = loadgen(&[
        "--target",
        &target,
        "--pos",
        "--pos-sales",
        "10",
        "--orders",
        "60",
        "--concurrency",
        "2",
    ])
    .await;
    let report = describe(&output);
    assert!(output.status.success(), "{report}\n{}", server.output());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    // 60 batches, 2 left out (seq 25 of each terminal), 6 replayed (seq 10, 20, 30).
    assert!(lines.contains(&"pos batch recorded: 58"), "{report}");
    assert!(lines.contains(&"pos batch left out: 2"), "{report}");
    assert!(lines.contains(&"pos batch  200: 64"), "{report}");
    assert!(
        lines.contains(&"POS sales by outcome: {\"accepted\": 580}"),
        "{report}"
    );
    assert!(stdout.contains("sales/s"), "{report}");
}

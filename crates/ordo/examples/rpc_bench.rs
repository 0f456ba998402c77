//! REST against gRPC with one client program, so the two protocols are compared with the same
//! runtime, the same concurrency and the same requests: `--concurrency` workers call
//! `POST /v1/orders` / `OrdersService/CreateOrder` (one unit of a random `BENCH-n` SKU, as
//! `bench/create_order.lua`) or `GET /v1/orders/{id}` / `OrdersService/GetOrder` for
//! `--seconds`, then one line: protocol, operation, requests, errors, requests/s, p50, p99.
//!
//! The catalogue (`BENCH-0..99` in `bench-wh`) must exist (bench/rpc.sh seeds it).
//!
//! Usage: rpc_bench (rest|grpc) (create|get) REST_URL GRPC_URL SECONDS CONCURRENCY

use ordo_grpc_api::pb;
use ordo_grpc_api::pb::orders_service_client::OrdersServiceClient;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// HTTP/2 connections the gRPC workers share (round robin); REST uses a pool of HTTP/1.1
/// connections, one per worker.
const GRPC_CONNECTIONS: usize = 4;

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Rest,
    Grpc,
}

#[derive(Clone, Copy, PartialEq)]
enum Operation {
    Create,
    Get,
}

fn order_json(n: u64) -> serde_json::Value {
    serde_json::json!({
        "customer_id": format!("bench-{}", n % 1000),
        "currency": "USD",
        "items": [{"sku": format!("BENCH-{}", n % 100), "quantity": 1}],
        "shipping_address": {"name": "Bench Customer", "line1": "1 Bench Road",
            "city": "Bangkok", "postal_code": "10110", "country": "TH"},
        "contact": {"email": "bench@example.com"},
    })
}

fn order_message(n: u64) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        customer_id: format!("bench-{}", n % 1000),
        currency: "USD".into(),
        items: vec![pb::OrderItemInput {
            sku: format!("BENCH-{}", n % 100),
            quantity: 1,
        }],
        shipping_address: Some(pb::Address {
            name: "Bench Customer".into(),
            line1: "1 Bench Road".into(),
            city: "Bangkok".into(),
            postal_code: "10110".into(),
            country: "TH".into(),
        }),
        contact: Some(pb::Contact {
            email: "bench@example.com".into(),
            phone: None,
        }),
    }
}

/// One request; `true` when it succeeded.
async fn call(
    protocol: Protocol,
    operation: Operation,
    rest: &reqwest::Client,
    rest_url: &str,
    grpc: &mut OrdersServiceClient<Channel>,
    order_id: &str,
    n: u64,
) -> bool {
    match (protocol, operation) {
        (Protocol::Rest, Operation::Create) => rest
            .post(format!("{rest_url}/v1/orders"))
            .json(&order_json(n))
            .send()
            .await
            .is_ok_and(|r| r.status() == 201),
        (Protocol::Rest, Operation::Get) => match rest
            .get(format!("{rest_url}/v1/orders/{order_id}"))
            .send()
            .await
        {
            // Read the body, as a client would.
            Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
            Err(_) => false,
        },
        (Protocol::Grpc, Operation::Create) => grpc.create_order(order_message(n)).await.is_ok(),
        (Protocol::Grpc, Operation::Get) => grpc
            .get_order(pb::GetOrderRequest {
                id: order_id.to_owned(),
            })
            .await
            .is_ok(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [
        _,
        protocol,
        operation,
        rest_url,
        grpc_url,
        seconds,
        concurrency,
    ] = args.as_slice()
    else {
        return Err(
            "usage: rpc_bench (rest|grpc) (create|get) REST_URL GRPC_URL SECONDS CONCURRENCY"
                .into(),
        );
    };
    let protocol = match protocol.as_str() {
        "rest" => Protocol::Rest,
        "grpc" => Protocol::Grpc,
        other => return Err(format!("unknown protocol {other}").into()),
    };
    let operation = match operation.as_str() {
        "create" => Operation::Create,
        "get" => Operation::Get,
        other => return Err(format!("unknown operation {other}").into()),
    };
    let duration = Duration::from_secs(seconds.parse()?);
    let concurrency: usize = concurrency.parse()?;
    let rest = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()?;
    let mut channels = Vec::new();
    for _ in 0..GRPC_CONNECTIONS {
        channels.push(
            Channel::from_shared(grpc_url.clone())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    // The order every GET reads.
    let created: serde_json::Value = rest
        .post(format!("{rest_url}/v1/orders"))
        .json(&order_json(0))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let order_id: Arc<str> = created["id"].as_str().unwrap_or_default().into();

    let counter = Arc::new(AtomicU64::new(1));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let rest = rest.clone();
        let rest_url = rest_url.clone();
        let mut grpc = OrdersServiceClient::new(channels[worker % GRPC_CONNECTIONS].clone());
        let (counter, errors, order_id) = (counter.clone(), errors.clone(), order_id.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < duration {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let ok = call(
                    protocol, operation, &rest, &rest_url, &mut grpc, &order_id, n,
                )
                .await;
                latencies.push(sent.elapsed());
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "{:<5} {:<7} requests {:>7}  errors {:>5}  {:>9.1} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
        if protocol == Protocol::Rest {
            "REST"
        } else {
            "gRPC"
        },
        if operation == Operation::Create {
            "create"
        } else {
            "get"
        },
        latencies.len(),
        errors.load(Ordering::Relaxed),
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
    );
    Ok(())
}

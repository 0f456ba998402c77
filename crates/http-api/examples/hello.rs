//! The ceiling for reads in BENCHMARKS.md: a bare axum "hello" on the same HTTP stack (axum,
//! hyper, tokio multi-thread runtime, TCP_NODELAY) with nothing else: no span, no database.
//!
//! `cargo run --release --example hello -p ordo-http-api -- 127.0.0.1:18081`

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let app = Router::new().route("/hello", get(|| async { "hello" }));
    axum::serve(
        listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        app,
    )
    .await
}

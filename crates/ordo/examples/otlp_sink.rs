//! A local OTLP/gRPC sink for benchmarks: accepts every export, counts spans, keeps nothing.
//! It stands in for a collector so that BENCHMARKS.md measures ordo's own cost of exporting.
//!
//! `cargo run --release -p ordo --example otlp_sink -- 127.0.0.1:4317`
//!
//! Cheap on purpose: the benchmarks leave it unpinned, so whatever CPU it spends may be taken
//! from the core of the server measured. It counts spans without decoding them (each span is
//! skipped as an empty message: no string, no attribute is built), on one thread. Decoding every
//! span into `opentelemetry-proto`'s structs cost about a sixth of a core at 55k spans/s, which
//! showed up as "telemetry cost" of ordo.

use prost::Message;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic_prost::ProstCodec;

/// `ExportTraceServiceRequest`, as far as counting its spans needs.
#[derive(Clone, PartialEq, Message)]
struct ExportRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceSpans {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct ScopeSpans {
    #[prost(message, repeated, tag = "2")]
    spans: Vec<SkippedSpan>,
}

/// A span, every field of it skipped.
#[derive(Clone, PartialEq, Message)]
struct SkippedSpan {}

/// `ExportTraceServiceResponse` without a partial success: an empty message.
#[derive(Clone, PartialEq, Message)]
struct ExportResponse {}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

#[derive(Default, Clone)]
struct Sink {
    spans: Arc<AtomicU64>,
}

impl NamedService for Sink {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl UnaryService<ExportRequest> for Sink {
    type Response = ExportResponse;
    type Future = std::future::Ready<Result<tonic::Response<ExportResponse>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<ExportRequest>) -> Self::Future {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        std::future::ready(Ok(tonic::Response::new(ExportResponse {})))
    }
}

impl tonic::codegen::Service<http::Request<Body>> for Sink {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let sink = self.clone();
        Box::pin(async move {
            if request.uri().path() != EXPORT_PATH {
                return Ok(tonic::Status::unimplemented("only trace exports").into_http());
            }
            let mut grpc = Grpc::new(ProstCodec::<ExportResponse, ExportRequest>::default());
            Ok(grpc.unary(sink, request).await)
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4317".to_owned())
        .parse()?;
    let sink = Sink::default();
    let spans = Arc::clone(&sink.spans);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            eprintln!(
                "otlp_sink: {} spans received",
                spans.load(Ordering::Relaxed)
            );
        }
    });
    tonic::transport::Server::builder()
        .add_service(sink)
        .serve(addr)
        .await?;
    Ok(())
}

//! The gRPC server: the `ordo.v1` services, health, reflection v1 and v1alpha, gRPC-Web and
//! CORS, under the edge ([`crate::layer`]), on one listener. Health follows readiness (every face of
//! the [`Api`] can serve: its database answers, or a peer of its role is up) every second, and turns NOT_SERVING as soon as shutdown begins, so balancers stop
//! sending before the server stops accepting.

use crate::layer::Grpc;
use crate::pb;
use crate::pb::catalog_service_server::CatalogServiceServer;
use crate::pb::customers_service_server::CustomersServiceServer;
use crate::pb::orders_service_server::OrdersServiceServer;
use crate::pb::payments_service_server::PaymentsServiceServer;
use crate::pb::pos_service_server::PosServiceServer;
use crate::services::GrpcApi;
use http::{HeaderName, HeaderValue, Method};
use ordo_service::ports::Api;
use prost::Message;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How often health re-checks readiness.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The server's settings, from the configuration.
#[derive(Debug, Clone)]
pub struct GrpcServerConfig {
    /// API keys, admission and the request timeout (a shorter `grpc-timeout` wins), shared
    /// with the HTTP edge.
    pub edge: ordo_edge::Edge,
    /// The largest message accepted.
    pub max_message_bytes: usize,
    /// Origins browsers may call gRPC-Web from (`*`: any); empty: same origin only.
    pub cors_allowed_origins: Vec<String>,
}

/// The names of the services this server has, as health reports them ("" is the server).
fn health_names() -> [&'static str; 6] {
    [
        "",
        "ordo.v1.CatalogService",
        "ordo.v1.CustomersService",
        "ordo.v1.OrdersService",
        "ordo.v1.PaymentsService",
        "ordo.v1.PosService",
    ]
}

/// Every `package.Service/Method` served: the metric label values.
fn served_methods() -> Vec<String> {
    let mut methods = vec![
        "grpc.health.v1.Health/Check".to_owned(),
        "grpc.health.v1.Health/Watch".to_owned(),
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo".to_owned(),
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo".to_owned(),
    ];
    if let Ok(set) = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET) {
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!(
                        "{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    methods
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let header = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header("content-type"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
            header("authorization"),
            header("x-api-key"),
            header("idempotency-key"),
            header("traceparent"),
            header("tracestate"),
            header("baggage"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
            header("ordo-error-code"),
            header("idempotent-replayed"),
            header("traceparent"),
            header("retry-after"),
        ])
        .max_age(Duration::from_secs(600))
}

/// Serves gRPC (HTTP/2) and gRPC-Web (HTTP/1.1 and HTTP/2) on `listener` until `shutdown`
/// completes, then finishes the calls in flight.
pub async fn serve(
    listener: TcpListener,
    api: Api,
    config: GrpcServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| tracing::error!(error = %e, "reflection v1 cannot start"))
        .ok();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| tracing::error!(error = %e, "reflection v1alpha cannot start"))
        .ok();

    let ready = api.clone();
    let api = GrpcApi::new(api);
    let limit = config.max_message_bytes;
    let mut routes = tonic::service::Routes::new(health_service)
        .add_service(CatalogServiceServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(OrdersServiceServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(PosServiceServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(CustomersServiceServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(PaymentsServiceServer::new(api).max_decoding_message_size(limit));
    if let Some(reflection) = reflection_v1 {
        routes = routes.add_service(reflection);
    }
    if let Some(reflection) = reflection_v1alpha {
        routes = routes.add_service(reflection);
    }

    // Health follows readiness until shutdown begins, then says NOT_SERVING. Every name is
    // known before the first call (NOT_SERVING until the first check), never NOT_FOUND.
    for name in health_names() {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let stopping = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn({
        let stopping = stopping.clone();
        let health = health.clone();
        async move {
            loop {
                let status = match ready.ready().await {
                    Ok(()) => ServingStatus::Serving,
                    Err(_) => ServingStatus::NotServing,
                };
                for name in health_names() {
                    health.set_service_status(name, status).await;
                }
                tokio::select! {
                    () = stopping.cancelled() => break,
                    () = tokio::time::sleep(HEALTH_INTERVAL) => {}
                }
            }
            for name in health_names() {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        }
    });
    let signal = {
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            stopping.cancel();
        }
    };

    let methods = served_methods();
    let result = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(cors(&config.cors_allowed_origins))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(ordo_edge::EdgeLayer::new(
            config.edge,
            Grpc::new(methods.iter().map(String::as_str)),
        ))
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            // Small unary answers: without TCP_NODELAY each waits for the peer's delayed ACK.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            signal,
        )
        .await;
    stopping.cancel();
    let _ = watcher.await;
    result
}

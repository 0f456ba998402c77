//! Where the APIs listen and how long they wait: the listening addresses, the largest body,
//! the request timeout, the drain at shutdown and the browser origins of gRPC-Web.

use crate::syntax;
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    /// The REST API (`ORDO_HTTP_ADDR`); port 0 picks a free one.
    #[serde(deserialize_with = "syntax::socket_addr")]
    pub http_addr: SocketAddr,
    /// The gRPC and gRPC-Web API (`ORDO_GRPC_ADDR`).
    #[serde(deserialize_with = "syntax::socket_addr")]
    pub grpc_addr: SocketAddr,
    /// Health, readiness, metrics, profiles (`ORDO_ADMIN_ADDR`).
    #[serde(deserialize_with = "syntax::socket_addr")]
    pub admin_addr: SocketAddr,
    /// The largest request body the API reads (`ORDO_MAX_BODY_BYTES`).
    #[serde(deserialize_with = "syntax::saturating")]
    pub max_body_bytes: usize,
    /// How long one API request may take before it is answered `deadline_exceeded`
    /// (`ORDO_REQUEST_TIMEOUT_MS`).
    #[serde(rename = "request_timeout_ms", deserialize_with = "syntax::millis")]
    pub request_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight requests before it gives up
    /// (`ORDO_SHUTDOWN_DRAIN_SECS`).
    #[serde(rename = "shutdown_drain_secs", deserialize_with = "syntax::secs")]
    pub shutdown_drain: Duration,
    /// Origins browsers may call the gRPC-Web API from (`ORDO_CORS_ALLOWED_ORIGINS`,
    /// comma-separated; `*`: any); empty: same origin only.
    #[serde(deserialize_with = "syntax::comma_list")]
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        ServerSettings {
            http_addr: local(8080),
            grpc_addr: local(50051),
            admin_addr: local(9090),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            shutdown_drain: Duration::from_secs(10),
            cors_allowed_origins: Vec::new(),
        }
    }
}

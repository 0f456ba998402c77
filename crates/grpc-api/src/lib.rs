//! ordo's gRPC API, package `ordo.v1` (`proto/ordo/v1/ordo.proto`): the catalogue, orders and
//! payments services over the faces of [`ordo_service::ports::Api`] (the one service layer, local
//! or another role's), so REST and gRPC share semantics,
//! validation and the error model; the standard health service (following readiness), server
//! reflection (v1 and v1alpha) and gRPC-Web (HTTP/1.1, with CORS) on the same port.
//!
//! Layout:
//! - `pb`: the generated messages, servers and clients, and the encoded descriptor set.
//! - `convert`: messages ↔ the API shapes of `ordo_service::api`.
//! - `services`: the three services, each method one call to a face of the `Api`.
//! - [`error`]: `ordo_domain::Error` → `tonic::Status` (code, ErrorInfo, BadRequest).
//! - [`layer`]: gRPC as the edge (`ordo_edge`) sees it: methods, `grpc-timeout`, statuses, and
//!   the call's end at its trailers.
//! - `server`: composing all of it on a listener, with graceful shutdown.
//! - [`client`]: calling another role: balanced, health-checked, traced, deadline-bound, retried
//!   when idempotent; the remote faces of `ordo_service::ports`.

pub mod pb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("ordo.v1");

    /// The encoded `FileDescriptorSet` of `ordo.v1`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/ordo_v1_descriptor.bin"));
}

pub mod client;
mod convert;
pub mod error;
pub mod layer;
mod server;
mod services;

pub use server::{GrpcServerConfig, serve};
pub use services::GrpcApi;

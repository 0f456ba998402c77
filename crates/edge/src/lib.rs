//! ordo's edge: what every call goes through at the door, whichever transport brought it — the
//! SERVER span (a child of a valid incoming `traceparent`), API keys, admission (load shedding
//! and the caller's rate limit, refused with `Retry-After`), the deadline, the `traceparent`
//! answered, and the call's telemetry: the duration histogram with the trace as exemplar,
//! `errors_total` by error kind and one access log line.
//!
//! REST (`ordo-http-api`) and gRPC (`ordo-grpc-api`) each implement [`Transport`] — how to read
//! a request head, how to answer an error, when an answer is known — and serve under one
//! [`EdgeLayer`] built from one [`Edge`], so the order of the steps and their rules cannot
//! drift apart between them.
//!
//! Layout:
//! - [`auth`]: API keys (`x-api-key` or `authorization: Bearer`), compared in constant time.
//! - [`admit`]: the decision at the door — exemptions, authenticate, then admit — giving the
//!   admission ticket or a typed [`Refusal`].
//! - [`deadline`]: a call's time budget (the request timeout, or the caller's shorter deadline)
//!   and running the call within it.
//! - [`call`]: the server span of each transport, and the end of a call: its status on the
//!   span, the histogram, `errors_total`, the access log line.
//! - [`layer`]: the tower layer composing them, and the [`Transport`] trait.
//!
//! Not here: what a transport writes on the wire — the error body and the 405 of axum, gRPC
//! statuses, and the body wrapper that ends a streamed gRPC call at its trailers.
//!
//! Invariant: a call's end is recorded at most once ([`Call::finish`]), and an admitted call
//! holds its admission ticket until its answer is known.

pub mod admit;
pub mod auth;
pub mod call;
pub mod deadline;
pub mod layer;

pub use admit::{Edge, Exempt, Exemptions, Refusal};
pub use call::{Call, Labels, Outcome};
pub use layer::{EdgeLayer, EdgeService, Opened, Transport};

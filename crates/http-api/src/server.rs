//! The HTTP server loop of the API port: hyper's connection builder driven by our own accept
//! loop, so that a flood of connections cannot starve the service.
//!
//! - **Header-read timeout** ([`ConnectionLimits::header_read_timeout`]): a client must send a
//!   request's headers within it, on a new connection and between requests of a kept-alive one
//!   (hyper times the wait for the next request's head the same way), so slow-header and idle
//!   sockets are closed instead of held for ever.
//! - **A cap on open connections**, in total and per client address: beyond it a connection is
//!   answered `503 unavailable` (`Retry-After: 1`, the error body) and closed at once, never
//!   left waiting in an unbounded accept queue. The total keeps file descriptors in reserve for
//!   the database, the broker and the admin port (served on a listener of its own), so
//!   `/healthz` and `/readyz` answer while the API is saturated.
//! - Each request carries `ConnectInfo<SocketAddr>` (the client address, for per-address rate
//!   limits).
//! - Shutdown: stop accepting, let each connection finish the request in flight, close idle
//!   ones, and return when all are gone.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the accept loop enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open API connections at most.
    pub max_connections: usize,
    /// Open API connections of one client address at most.
    pub max_connections_per_client: usize,
    /// How long a request's headers may take to arrive (also how long a kept-alive connection
    /// may idle).
    pub header_read_timeout: Duration,
}

/// File descriptors kept out of the API's reach: database pool, broker, Redis, admin port,
/// log files, the connections being refused.
const RESERVED_DESCRIPTORS: u64 = 256;

impl ConnectionLimits {
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

    /// Limits sized for a process allowed `open_files` descriptors: every descriptor but a
    /// reserve for the API, a quarter of those for one client address.
    pub fn for_open_files(open_files: u64) -> ConnectionLimits {
        let usable = open_files.saturating_sub(RESERVED_DESCRIPTORS).max(64);
        let max_connections = usize::try_from(usable).unwrap_or(usize::MAX);
        ConnectionLimits {
            max_connections,
            max_connections_per_client: (max_connections / 4).max(16),
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// The open connections, in total and per client address.
struct OpenConnections {
    limits: ConnectionLimits,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A connection's place among the open ones, given back when it closes.
struct Slot {
    open: Arc<OpenConnections>,
    client: IpAddr,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Total,
    PerClient,
}

impl OpenConnections {
    fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Slot, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_client) = &mut *counts;
        if *total >= self.limits.max_connections {
            return Err(Refusal::Total);
        }
        let of_client = per_client.entry(client).or_insert(0);
        if *of_client >= self.limits.max_connections_per_client {
            return Err(Refusal::PerClient);
        }
        *of_client += 1;
        *total += 1;
        Ok(Slot {
            open: Arc::clone(self),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.open.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_client) = &mut *counts;
        *total -= 1;
        if let Some(count) = per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then drains.
/// Accept errors are waited out, never returned (the result has the shape of the other
/// servers').
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_read_timeout))
        .keep_alive_timeout(limits.header_read_timeout);
    let open = Arc::new(OpenConnections {
        limits,
        counts: Mutex::new((0, HashMap::new())),
    });
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors (EMFILE) or a connection reset before it was
                    // accepted: wait a little instead of spinning on the error.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match open.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                ordo_telemetry::metrics::count_refused_connection(match refusal {
                    Refusal::Total => "max_connections",
                    Refusal::PerClient => "max_connections_per_client",
                });
                tokio::spawn(refuse(tcp));
                continue;
            }
        };
        // Small JSON responses: do not wait to coalesce them.
        let _ = tcp.set_nodelay(true);
        let header_read_timeout = limits.header_read_timeout;
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            tower::ServiceExt::oneshot(router.clone(), request)
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // hyper's header-read timeout starts with the first byte (before it, the builder
            // is still finding out the protocol): a connection that sends nothing is closed
            // after the same time.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(header_read_timeout, tcp.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                return;
            }
            let connection = builder
                .serve_connection(TokioIo::new(tcp), service)
                .into_owned();
            // A connection's errors (a reset, a header-read timeout) end only that connection.
            let _ = watcher.watch(connection).await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The answer to a connection over the cap: `503` with the error body, then close. What the
/// client already sent is read and dropped for a moment first: closing a socket with unread
/// input resets it, and the reset could destroy the answer before the client reads it.
async fn refuse(mut tcp: TcpStream) {
    const BODY: &str = r#"{"error":{"code":"unavailable","message":"too many open connections; retry later","details":[],"trace_id":null}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let answer = async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        while tcp.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), answer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(max: usize, per_client: usize) -> Arc<OpenConnections> {
        Arc::new(OpenConnections {
            limits: ConnectionLimits {
                max_connections: max,
                max_connections_per_client: per_client,
                header_read_timeout: Duration::from_secs(1),
            },
            counts: Mutex::new((0, HashMap::new())),
        })
    }

    #[test]
    fn connections_are_capped_in_total_and_per_client_and_slots_come_back() {
        let open = open(3, 2);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "127.0.0.2".parse().unwrap(),
            "127.0.0.3".parse().unwrap(),
            "127.0.0.4".parse().unwrap(),
        );
        let first = open.admit(a).unwrap();
        let _second = open.admit(a).unwrap();
        assert_eq!(open.admit(a).err(), Some(Refusal::PerClient));
        let _third = open.admit(b).unwrap();
        assert_eq!(open.admit(c).err(), Some(Refusal::Total));
        drop(first);
        assert!(open.admit(c).is_ok(), "a closed connection frees its slot");
    }

    #[test]
    fn limits_keep_descriptors_in_reserve() {
        let limits = ConnectionLimits::for_open_files(1024);
        assert_eq!(limits.max_connections, 768);
        assert_eq!(limits.max_connections_per_client, 192);
        let tiny = ConnectionLimits::for_open_files(100);
        assert_eq!(tiny.max_connections, 64);
    }
}

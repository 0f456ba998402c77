//! The etcd backend: a registration is a key under a lease that a background task keeps alive;
//! the members of a role are a listing of its prefix followed by a watch.
//!
//! Recovery is always "start again from etcd's state": a keep-alive that breaks grants a new
//! lease and puts the key again; a watch that breaks lists the prefix again and watches from
//! there. Both retry with backoff for as long as their owner lives, so a registration and a
//! members set converge after etcd comes back, whatever happened meanwhile.
//!
//! Invariant: every call to etcd is bounded by a timeout, and a stream that stays silent is
//! probed (progress request, keep-alive reply) and treated as broken when the probe goes
//! unanswered: no task waits forever on a dead connection.

use crate::{DiscoveryError, Instance, Members, check_segment, normalize_address};
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions, WatchResponse,
};
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

/// Opening the TCP/HTTP2 connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Any unary call (get, put, grant, revoke) and the opening of a stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Revoking the lease at deregistration: shutdown must not wait on an unreachable etcd.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings while a stream is open, to notice a connection that died silently. Not below
/// etcd's `--grpc-keepalive-min-time` (5 s), or etcd answers with GOAWAY "too many pings"; and
/// not while idle, which etcd's policy punishes the same way.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(10);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(5);
/// After this long without a watch message, ask etcd for progress; if that goes unanswered for
/// as long again, the watch is broken.
const WATCH_IDLE: Duration = Duration::from_secs(10);
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A connected etcd client and where this deployment's keys live.
#[derive(Clone)]
pub(crate) struct Etcd {
    /// Shared: a `Client` is several kilobytes, and every clone of it is one more copy.
    client: Arc<Client>,
    endpoints: String,
    namespace: String,
    ttl_seconds: i64,
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("namespace", &self.namespace)
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// Connects and proves that etcd answers: etcd-client dials lazily, so a successful
    /// `Client::connect` alone says nothing about the server.
    pub(crate) async fn connect(
        endpoints: Vec<String>,
        namespace: &str,
    ) -> Result<Etcd, DiscoveryError> {
        check_segment("namespace", namespace)?;
        let listed = endpoints.join(",");
        let unreachable =
            |why: String| DiscoveryError(format!("cannot reach etcd at {listed}: {why}"));
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(HTTP2_PING_INTERVAL, HTTP2_PING_TIMEOUT)
            .with_keep_alive_while_idle(false)
            // Without a leader etcd cannot serve a consistent answer: fail (and retry) rather
            // than wait on a partitioned member.
            .with_require_leader(true);
        let client =
            match timeout(CONNECT_TIMEOUT, Client::connect(&endpoints, Some(options))).await {
                Ok(Ok(client)) => client,
                Ok(Err(error)) => return Err(unreachable(error.to_string())),
                Err(_) => {
                    return Err(unreachable(format!(
                        "no connection within {CONNECT_TIMEOUT:?}"
                    )));
                }
            };
        let mut kv = client.kv_client();
        let probe = kv.get(
            format!("/{namespace}/"),
            Some(GetOptions::new().with_prefix().with_count_only()),
        );
        match timeout(CONNECT_TIMEOUT, probe).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(unreachable(error.to_string())),
            Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        }
        tracing::info!(endpoints = %listed, namespace, "connected to etcd");
        Ok(Etcd {
            client: Arc::new(client),
            endpoints: listed,
            namespace: namespace.to_owned(),
            ttl_seconds: crate::ttl_seconds(crate::DEFAULT_TTL),
        })
    }

    pub(crate) fn with_ttl(self, ttl_seconds: i64) -> Etcd {
        Etcd {
            ttl_seconds,
            ..self
        }
    }

    fn role_prefix(&self, role: &str) -> String {
        format!("/{}/roles/{role}/", self.namespace)
    }

    pub(crate) async fn register(
        &self,
        role: &str,
        instance_id: &str,
        address: &str,
    ) -> Result<EtcdRegistration, DiscoveryError> {
        let key = format!("{}{instance_id}", self.role_prefix(role));
        let lease = Arc::new(AtomicI64::new(0));
        let granted_ttl =
            match grant_and_put(&self.client, &key, address, self.ttl_seconds, &lease).await {
                Ok(granted_ttl) => granted_ttl,
                Err(error) => {
                    // The key may have been put with the lease before the error: do not leave
                    // it listed for a whole TTL.
                    revoke(&self.client, lease.load(Ordering::SeqCst)).await;
                    return Err(error);
                }
            };
        tracing::info!(
            key,
            address,
            lease = lease.load(Ordering::SeqCst),
            ttl_seconds = granted_ttl,
            "registered in etcd"
        );
        let keeper = tokio::spawn(keep_registered(
            self.client.clone(),
            key.clone(),
            address.to_owned(),
            self.ttl_seconds,
            granted_ttl,
            lease.clone(),
        ));
        Ok(EtcdRegistration {
            client: self.client.clone(),
            key,
            lease,
            keeper,
        })
    }

    pub(crate) async fn members(&self, role: &str) -> Result<Members, DiscoveryError> {
        let prefix = self.role_prefix(role);
        let (set, revision) = list(&self.client, &prefix).await?;
        let (sender, receiver) = watch::channel(set);
        tokio::spawn(follow(self.client.clone(), prefix, revision, sender));
        Ok(receiver)
    }
}

/// A key in etcd and the task keeping its lease alive.
pub(crate) struct EtcdRegistration {
    client: Arc<Client>,
    key: String,
    /// The lease the key is (or is about to be) attached to; the keeper replaces it when it
    /// re-registers. Stored before the put that uses it, so revoking it always removes the key.
    lease: Arc<AtomicI64>,
    keeper: JoinHandle<()>,
}

impl fmt::Debug for EtcdRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistration")
            .field("key", &self.key)
            .field("lease", &self.lease.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl EtcdRegistration {
    pub(crate) async fn deregister(mut self) {
        let removed = timeout(DEREGISTER_TIMEOUT, async {
            // Stop the keeper first, and wait until it has stopped, so that it cannot put the
            // key again under a fresh lease after the revoke.
            self.keeper.abort();
            let _ = (&mut self.keeper).await;
            let lease = self.lease.load(Ordering::SeqCst);
            let mut leases = self.client.lease_client();
            leases.revoke(lease).await.map(|_| lease)
        })
        .await;
        match removed {
            Ok(Ok(lease)) => tracing::info!(key = self.key, lease, "deregistered from etcd"),
            Ok(Err(error)) => tracing::warn!(
                key = self.key,
                %error,
                "deregistering from etcd failed; the key expires after its TTL"
            ),
            Err(_) => tracing::warn!(
                key = self.key,
                "etcd did not answer the deregistration within {DEREGISTER_TIMEOUT:?}; \
                 the key expires after its TTL"
            ),
        }
    }
}

impl Drop for EtcdRegistration {
    fn drop(&mut self) {
        // Like a crash: the lease is no longer kept alive and the key expires after the TTL.
        self.keeper.abort();
    }
}

/// Runs `call` with [`REQUEST_TIMEOUT`], naming `what` in the error.
async fn bounded<T>(
    what: &str,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, DiscoveryError> {
    bounded_by(REQUEST_TIMEOUT, what, call).await
}

async fn bounded_by<T>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, DiscoveryError> {
    match timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(DiscoveryError(format!("etcd {what}: {error}"))),
        Err(_) => Err(DiscoveryError(format!(
            "etcd {what}: no answer within {limit:?}"
        ))),
    }
}

/// Grants a lease of `ttl_seconds`, records it in `lease`, then puts `key` = `address` with it.
/// Returns the TTL etcd granted (it may raise a TTL below its minimum).
async fn grant_and_put(
    client: &Client,
    key: &str,
    address: &str,
    ttl_seconds: i64,
    lease: &AtomicI64,
) -> Result<i64, DiscoveryError> {
    let mut leases = client.lease_client();
    let granted = bounded("lease grant", leases.grant(ttl_seconds, None)).await?;
    lease.store(granted.id(), Ordering::SeqCst);
    let mut kv = client.kv_client();
    bounded(
        &format!("put {key}"),
        kv.put(
            key,
            address,
            Some(PutOptions::new().with_lease(granted.id())),
        ),
    )
    .await?;
    Ok(granted.ttl())
}

/// Best effort, bounded: used where the lease would expire on its own anyway.
async fn revoke(client: &Client, lease: i64) {
    if lease == 0 {
        return;
    }
    let mut leases = client.lease_client();
    let _ = timeout(DEREGISTER_TIMEOUT, leases.revoke(lease)).await;
}

/// The keeper of one registration: keeps its lease alive, and when that fails (stream broken,
/// lease expired or revoked behind our back) grants a new lease and puts the key again. Ends
/// only when aborted.
async fn keep_registered(
    client: Arc<Client>,
    key: String,
    address: String,
    ttl_seconds: i64,
    mut granted_ttl: i64,
    lease: Arc<AtomicI64>,
) {
    let mut backoff = Backoff::new();
    loop {
        let id = lease.load(Ordering::SeqCst);
        let (renewed, reason) = keep_alive(&client, id, granted_ttl).await;
        if renewed {
            backoff.reset();
        }
        tracing::warn!(key, lease = id, %reason, "etcd keep-alive stopped; registering again");
        loop {
            let delay = backoff.next_delay();
            sleep(delay).await;
            match grant_and_put(&client, &key, &address, ttl_seconds, &lease).await {
                Ok(ttl) => {
                    granted_ttl = ttl;
                    tracing::info!(
                        key,
                        lease = lease.load(Ordering::SeqCst),
                        "registered in etcd again"
                    );
                    break;
                }
                Err(error) => tracing::warn!(
                    key,
                    %error,
                    retry_in = ?backoff.peek(),
                    "registering in etcd again failed; retrying"
                ),
            }
        }
    }
}

/// Keeps `lease` alive with a refresh every TTL/3 until something fails; returns whether at
/// least one refresh succeeded, and why it stopped.
async fn keep_alive(client: &Client, lease: i64, granted_ttl: i64) -> (bool, String) {
    let ttl = Duration::from_secs(u64::try_from(granted_ttl).unwrap_or(1).max(1));
    let interval = ttl / 3;
    // A reply later than this leaves too little of the TTL to try again in.
    let reply_timeout = (ttl / 2).min(REQUEST_TIMEOUT);
    let mut leases = client.lease_client();
    // Opening the stream also refreshes the lease once, and fails if the lease is gone.
    let opened = bounded_by(reply_timeout, "lease keep-alive", leases.keep_alive(lease)).await;
    let (mut keeper, mut replies) = match opened {
        Ok(stream) => stream,
        Err(error) => return (false, error.0),
    };
    loop {
        sleep(interval).await;
        if let Err(error) = bounded("lease keep-alive", keeper.keep_alive()).await {
            return (true, error.0);
        }
        match timeout(reply_timeout, replies.message()).await {
            Ok(Ok(Some(reply))) if reply.ttl() > 0 => {}
            Ok(Ok(Some(_))) => return (true, "the lease expired or was revoked".to_owned()),
            Ok(Ok(None)) => return (true, "etcd closed the keep-alive stream".to_owned()),
            Ok(Err(error)) => return (true, error.to_string()),
            Err(_) => {
                return (
                    true,
                    format!("no keep-alive reply within {reply_timeout:?}"),
                );
            }
        }
    }
}

/// Lists the instances under `prefix`, and the revision the listing reflects.
async fn list(client: &Client, prefix: &str) -> Result<(BTreeSet<Instance>, i64), DiscoveryError> {
    let mut kv = client.kv_client();
    let response = bounded(
        &format!("list {prefix}"),
        kv.get(prefix, Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let revision = response
        .header()
        .map(|header| header.revision())
        .ok_or_else(|| DiscoveryError(format!("etcd list {prefix}: response without a header")))?;
    let set = response
        .kvs()
        .iter()
        .filter_map(|kv| instance(prefix, kv.key(), kv.value()))
        .collect();
    Ok((set, revision))
}

/// The instance a key under `prefix` describes; `None` (logged) for a key or value no
/// registration writes.
fn instance(prefix: &str, key: &[u8], value: &[u8]) -> Option<Instance> {
    let id = instance_id(prefix, key)?;
    match normalize_address(&String::from_utf8_lossy(value)) {
        Ok(address) => Some(Instance { id, address }),
        Err(error) => {
            tracing::warn!(prefix, id, %error, "etcd members: entry ignored");
            None
        }
    }
}

fn instance_id(prefix: &str, key: &[u8]) -> Option<String> {
    let key = String::from_utf8_lossy(key);
    let id = key.strip_prefix(prefix)?;
    (!id.is_empty()).then(|| id.to_owned())
}

/// The members task of one role: watches `prefix` from `revision` + 1, and whenever the watch
/// breaks lists again and watches from the new listing. Ends when every receiver is dropped.
async fn follow(
    client: Arc<Client>,
    prefix: String,
    mut revision: i64,
    sender: watch::Sender<BTreeSet<Instance>>,
) {
    let mut backoff = Backoff::new();
    loop {
        let reason = tokio::select! {
            _ = sender.closed() => return,
            reason = watch_from(&client, &prefix, revision, &sender, &mut backoff) => reason,
        };
        tracing::warn!(prefix, %reason, "etcd members watch broken; listing again");
        loop {
            let delay = backoff.next_delay();
            let listed = tokio::select! {
                _ = sender.closed() => return,
                listed = async {
                    sleep(delay).await;
                    list(&client, &prefix).await
                } => listed,
            };
            match listed {
                Ok((set, listed_revision)) => {
                    revision = listed_revision;
                    let count = set.len();
                    sender.send_if_modified(|current| {
                        let changed = *current != set;
                        *current = set;
                        changed
                    });
                    tracing::info!(
                        prefix,
                        members = count,
                        revision,
                        "etcd members listed again; watching"
                    );
                    break;
                }
                Err(error) => tracing::warn!(
                    prefix,
                    %error,
                    retry_in = ?backoff.peek(),
                    "etcd members listing failed; retrying"
                ),
            }
        }
    }
}

/// Follows one watch from `revision` + 1, applying its events to `sender`, until it breaks;
/// returns why.
async fn watch_from(
    client: &Client,
    prefix: &str,
    revision: i64,
    sender: &watch::Sender<BTreeSet<Instance>>,
    backoff: &mut Backoff,
) -> String {
    let mut watches = client.watch_client();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream = match bounded("watch", watches.watch(prefix, Some(options))).await {
        Ok(stream) => stream,
        Err(error) => return error.0,
    };
    let mut probing = false;
    loop {
        match timeout(WATCH_IDLE, stream.message()).await {
            Ok(Ok(Some(response))) => {
                probing = false;
                if response.created() {
                    backoff.reset();
                }
                if response.canceled() {
                    return format!(
                        "etcd canceled the watch: {:?} (compacted up to revision {})",
                        response.cancel_reason(),
                        response.compact_revision()
                    );
                }
                apply(prefix, &response, sender);
            }
            Ok(Ok(None)) => return "etcd closed the watch stream".to_owned(),
            Ok(Err(error)) => return error.to_string(),
            Err(_) if probing => {
                return format!("no answer to a progress request within {WATCH_IDLE:?}");
            }
            Err(_) => {
                if let Err(error) = bounded("watch progress", stream.request_progress()).await {
                    return error.0;
                }
                probing = true;
            }
        }
    }
}

fn apply(prefix: &str, response: &WatchResponse, sender: &watch::Sender<BTreeSet<Instance>>) {
    if response.events().is_empty() {
        return;
    }
    sender.send_if_modified(|set| {
        let before = set.clone();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Some(id) = instance_id(prefix, kv.key()) else {
                continue;
            };
            // An instance id names one instance: a put replaces its address.
            set.retain(|instance| instance.id != id);
            if event.event_type() == EventType::Put
                && let Some(instance) = instance(prefix, kv.key(), kv.value())
            {
                set.insert(instance);
            }
        }
        *set != before
    });
}

/// Exponential backoff between [`BACKOFF_FIRST`] and [`BACKOFF_MAX`], reset once things work.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    fn peek(&self) -> Duration {
        self.next
    }

    fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

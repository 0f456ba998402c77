//! How ordo's processes ("roles": edge, orders, inventory, payments, workers) find each other's
//! gRPC addresses.
//!
//! Layout:
//! - [`Discovery`]: chosen once at start-up by [`Discovery::from_url`]; processes
//!   [`register`](Discovery::register) the role they serve and read the [`Members`] of the roles
//!   they call. Both backends give the same shapes, so callers never ask which one is in use
//!   (except for logs: [`Discovery::kind`]).
//! - `fixed`: a static list from configuration; registering is a no-op and the members never
//!   change. The default, and all a single-machine deployment needs.
//! - `etcd` (cargo feature `etcd`, off by default because etcd-client's build needs `protoc`):
//!   each registration is a key under a lease that a background task keeps alive; members are a
//!   listing followed by a watch, re-listed whenever the watch breaks.
//! - `testing` (cargo feature `testing`): a real etcd process for tests.
//!
//! Key layout in etcd: `/<namespace>/roles/<role>/<instance id>`, whose value is the address
//! other processes dial (`http://host:port`), attached to the registering process's lease
//! (TTL 10 s unless [`Discovery::with_ttl`] says otherwise).
//!
//! Invariant: a registration's key disappears at deregistration or at most one TTL after the
//! process dies, because only the process itself keeps its lease alive; and a [`Members`]
//! channel converges on the keys etcd holds, also across etcd restarts. Not here: choosing
//! between members (load balancing), health checks (a live but sick process stays
//! registered), TLS or authentication towards etcd.

#[cfg(feature = "etcd")]
mod etcd;
mod fixed;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

/// One instance of a role: a stable id and the gRPC address other processes dial
/// (`http://host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Instance {
    pub id: String,
    pub address: String,
}

/// The instances of one role as currently known; a `tokio::sync::watch` channel so that readers
/// see the latest set without queueing every intermediate one.
///
/// `changed()` resolving with an error means "no more updates", not a failure: the last set stays
/// readable. An etcd-backed channel is updated until every receiver is dropped; a static one
/// never changes and closes when its [`Discovery`] (and every clone) is dropped.
pub type Members = tokio::sync::watch::Receiver<BTreeSet<Instance>>;

/// Why discovery could not do what was asked; the message names the value or the server at
/// fault, since it mostly ends up in a start-up error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryError(pub String);

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DiscoveryError {}

/// Where the members of each role come from: a static list or etcd.
///
/// A struct around a private enum rather than a public enum, so that the etcd variant (which
/// exists only with the `etcd` feature) is not part of the API and no caller's `match` depends on
/// the features this crate was built with. Cloning is cheap and shares the connection.
#[derive(Debug, Clone)]
pub struct Discovery {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Static(fixed::Fixed),
    #[cfg(feature = "etcd")]
    Etcd(etcd::Etcd),
}

/// The lease TTL of a registration unless [`Discovery::with_ttl`] says otherwise: how long a dead
/// process stays listed.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// The shortest TTL [`Discovery::with_ttl`] accepts (etcd counts TTLs in whole seconds).
pub const MIN_TTL: Duration = Duration::from_secs(1);

impl Discovery {
    /// A fixed list: role name → addresses (`http://127.0.0.1:50061` or `127.0.0.1:50061`;
    /// `http://` is added when there is no scheme). Instance ids of static members are their
    /// addresses. Blank addresses are skipped.
    pub fn fixed(members: HashMap<String, Vec<String>>) -> Discovery {
        Discovery {
            backend: Backend::Static(fixed::Fixed::new(members)),
        }
    }

    /// `etcd://host:port[,host:port...]`: connects (connect timeout 5 s, every request bounded
    /// by a timeout) and checks that etcd answers, or fails with an error naming the endpoints.
    /// Keys live under `/<namespace>/roles/<role>/<instance id>` with the address as value.
    pub async fn etcd(url: &str, namespace: &str) -> Result<Discovery, DiscoveryError> {
        #[cfg(feature = "etcd")]
        {
            let endpoints = parse_etcd_url(url)?;
            let etcd = etcd::Etcd::connect(endpoints, namespace).await?;
            Ok(Discovery {
                backend: Backend::Etcd(etcd),
            })
        }
        #[cfg(not(feature = "etcd"))]
        {
            let _ = (url, namespace);
            Err(DiscoveryError(
                "this build of ordo has no etcd support; build with --features etcd".to_owned(),
            ))
        }
    }

    /// Chooses from a URL: `None` or `"static"` → [`Discovery::fixed`] with `static_members`,
    /// `"etcd://..."` → [`Discovery::etcd`], anything else → an error naming the value.
    pub async fn from_url(
        url: Option<&str>,
        namespace: &str,
        static_members: HashMap<String, Vec<String>>,
    ) -> Result<Discovery, DiscoveryError> {
        match url.map(str::trim) {
            None | Some("static") => Ok(Discovery::fixed(static_members)),
            Some(url) if has_scheme(url, "etcd") => Discovery::etcd(url, namespace).await,
            Some(other) => Err(DiscoveryError(format!(
                "unsupported discovery URL {other:?}: expected \"static\" or \
                 \"etcd://host:port[,host:port...]\""
            ))),
        }
    }

    /// The lease TTL of the registrations made from now on (default [`DEFAULT_TTL`], raised to
    /// [`MIN_TTL`], rounded up to whole seconds). A shorter TTL drops a dead process sooner and
    /// costs more keep-alives (one every TTL/3). No effect on a static discovery.
    pub fn with_ttl(self, ttl: Duration) -> Discovery {
        let seconds = ttl_seconds(ttl);
        let backend = match self.backend {
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => Backend::Etcd(etcd.with_ttl(seconds)),
            // Nothing expires in a static list.
            other => {
                let _ = seconds;
                other
            }
        };
        Discovery { backend }
    }

    /// Announces that this process serves `role` at `address` under `instance_id`; keep the
    /// returned [`Registration`] for as long as the process serves.
    ///
    /// etcd: grants a lease, puts the key with it and keeps the lease alive from a background
    /// task (every TTL/3); if the keep-alive breaks or the lease is lost, the task grants a new
    /// lease and puts the key again, retrying with backoff. Static: nothing to announce.
    pub async fn register(
        &self,
        role: &str,
        instance_id: &str,
        address: &str,
    ) -> Result<Registration, DiscoveryError> {
        check_segment("role", role)?;
        check_segment("instance id", instance_id)?;
        let address = normalize_address(address)?;
        match &self.backend {
            Backend::Static(_) => {
                tracing::info!(
                    role,
                    instance_id,
                    address,
                    "registered (static discovery: nothing to announce)"
                );
                Ok(Registration {
                    inner: RegistrationInner::Static {
                        role: role.to_owned(),
                        instance_id: instance_id.to_owned(),
                    },
                })
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => Ok(Registration {
                inner: RegistrationInner::Etcd(etcd.register(role, instance_id, &address).await?),
            }),
        }
    }

    /// The live members of `role` (an empty set when none is known).
    ///
    /// Static: a channel whose value never changes. etcd: the prefix is listed once (the initial
    /// value), then a background task watches it from the listed revision + 1 and applies puts
    /// and deletes; when the watch breaks it lists and watches again (with backoff), so the set
    /// converges after an etcd restart. The task ends when every receiver is dropped.
    pub async fn members(&self, role: &str) -> Result<Members, DiscoveryError> {
        check_segment("role", role)?;
        match &self.backend {
            Backend::Static(fixed) => Ok(fixed.members(role)),
            #[cfg(feature = "etcd")]
            Backend::Etcd(etcd) => etcd.members(role).await,
        }
    }

    /// `"static"` or `"etcd"`, for logs.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Static(_) => "static",
            #[cfg(feature = "etcd")]
            Backend::Etcd(_) => "etcd",
        }
    }
}

/// Keeps a registration alive. [`deregister`](Registration::deregister) removes it at once (etcd:
/// revokes the lease, which deletes the key; bounded by a 2 s timeout). Dropping it without
/// deregistering stops the keep-alive, so the key expires after the TTL: what a crash does.
#[must_use = "dropping a Registration stops its keep-alive: the registration expires after the TTL"]
#[derive(Debug)]
pub struct Registration {
    inner: RegistrationInner,
}

#[derive(Debug)]
enum RegistrationInner {
    Static {
        role: String,
        instance_id: String,
    },
    #[cfg(feature = "etcd")]
    Etcd(etcd::EtcdRegistration),
}

impl Registration {
    /// Removes the registration now, so that callers stop dialing this process before it goes
    /// away. Never fails: if etcd cannot be told in time, the key expires after the TTL anyway
    /// (logged as a warning).
    pub async fn deregister(self) {
        match self.inner {
            RegistrationInner::Static { role, instance_id } => {
                tracing::info!(role, instance_id, "deregistered (static discovery)");
            }
            #[cfg(feature = "etcd")]
            RegistrationInner::Etcd(registration) => registration.deregister().await,
        }
    }
}

/// The gRPC address as other processes dial it: `http://` is added when there is no scheme.
fn normalize_address(address: &str) -> Result<String, DiscoveryError> {
    let address = address.trim();
    if address.is_empty() {
        return Err(DiscoveryError("empty address".to_owned()));
    }
    if address.chars().any(char::is_whitespace) {
        return Err(DiscoveryError(format!(
            "address {address:?} contains whitespace"
        )));
    }
    if address.contains("://") {
        Ok(address.to_owned())
    } else {
        Ok(format!("http://{address}"))
    }
}

/// A role, instance id or namespace becomes one segment of an etcd key: it must not be empty nor
/// contain `/` (which would let `orders` see the members of `orders/x`) or blanks.
fn check_segment(what: &str, value: &str) -> Result<(), DiscoveryError> {
    if value.is_empty() {
        return Err(DiscoveryError(format!("empty {what}")));
    }
    if value.contains('/') || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DiscoveryError(format!(
            "{what} {value:?} must not contain '/', blanks or control characters"
        )));
    }
    Ok(())
}

/// Whether `url` starts with `<scheme>://`, the scheme compared without regard to case.
fn has_scheme(url: &str, scheme: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(found, _)| found.eq_ignore_ascii_case(scheme))
}

/// `etcd://host:port[,host:port...]` → the endpoints etcd-client dials (`http://host:port`).
/// Rejects anything else (no path, credentials or query; every port explicit) so that a typo
/// fails at start-up instead of dialing somewhere unexpected.
#[cfg(any(feature = "etcd", test))]
fn parse_etcd_url(url: &str) -> Result<Vec<String>, DiscoveryError> {
    let bad = |why: &str| DiscoveryError(format!("invalid etcd URL {url:?}: {why}"));
    let rest = match url.trim().split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("etcd") => rest,
        _ => return Err(bad("expected etcd://host:port[,host:port...]")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '@', '?', '#']) {
        return Err(bad(
            "only host:port pairs are allowed (no path, credentials or query)",
        ));
    }
    let mut endpoints = Vec::new();
    for endpoint in rest.split(',').map(str::trim) {
        let Some((host, port)) = endpoint.rsplit_once(':') else {
            return Err(bad(&format!("endpoint {endpoint:?} has no port")));
        };
        let host_ok = if let Some(inner) = host.strip_prefix('[') {
            // An IPv6 literal: [::1]:2379.
            inner
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        };
        if !host_ok {
            return Err(bad(&format!("endpoint {endpoint:?} has no valid host")));
        }
        match port.parse::<u16>() {
            Ok(port) if port > 0 => endpoints.push(format!("http://{host}:{port}")),
            _ => return Err(bad(&format!("endpoint {endpoint:?} has no valid port"))),
        }
    }
    Ok(endpoints)
}

/// etcd counts TTLs in whole seconds: round up, and never below [`MIN_TTL`].
fn ttl_seconds(ttl: Duration) -> i64 {
    let ttl = ttl.max(MIN_TTL);
    let seconds = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(role, addresses)| {
                (
                    (*role).to_owned(),
                    addresses.iter().map(|a| (*a).to_owned()).collect(),
                )
            })
            .collect()
    }

    fn instance(address: &str) -> Instance {
        Instance {
            id: address.to_owned(),
            address: address.to_owned(),
        }
    }

    #[tokio::test]
    async fn static_members_are_the_configured_addresses_with_a_scheme_and_their_address_as_id() {
        let discovery = Discovery::fixed(members(&[
            (
                "orders",
                &[
                    "127.0.0.1:50061",
                    "http://127.0.0.1:50062",
                    "  ",
                    "https://o:1",
                ],
            ),
            ("inventory", &["http://127.0.0.1:50071"]),
        ]));
        let orders = discovery.members("orders").await.unwrap();
        let expected: BTreeSet<Instance> = [
            instance("http://127.0.0.1:50061"),
            instance("http://127.0.0.1:50062"),
            instance("https://o:1"),
        ]
        .into();
        assert_eq!(*orders.borrow(), expected);
        assert_eq!(discovery.kind(), "static");
    }

    #[tokio::test]
    async fn a_static_role_nobody_configured_has_no_members() {
        let discovery = Discovery::fixed(HashMap::new());
        assert!(
            discovery
                .members("payments")
                .await
                .unwrap()
                .borrow()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn static_members_never_change_while_the_discovery_lives() {
        let discovery = Discovery::fixed(members(&[("orders", &["127.0.0.1:1"])]));
        let mut orders = discovery.members("orders").await.unwrap();
        let mut unknown = discovery.members("edge").await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(100), async {
            tokio::select! {
                _ = orders.changed() => {}
                _ = unknown.changed() => {}
            }
        })
        .await;
        assert!(
            waited.is_err(),
            "a static members channel changed or closed"
        );
        drop(discovery);
        assert!(orders.changed().await.is_err(), "closes with the discovery");
        assert_eq!(orders.borrow().len(), 1, "the last set stays readable");
    }

    #[tokio::test]
    async fn a_static_registration_is_accepted_and_deregistered_without_effect() {
        let discovery = Discovery::fixed(members(&[("orders", &["127.0.0.1:1"])]));
        let registration = discovery
            .register("orders", "orders-1", "127.0.0.1:2")
            .await
            .unwrap();
        registration.deregister().await;
        assert_eq!(discovery.members("orders").await.unwrap().borrow().len(), 1);
    }

    #[tokio::test]
    async fn malformed_roles_ids_and_addresses_are_rejected_not_registered() {
        let discovery = Discovery::fixed(HashMap::new());
        for (role, id, address) in [
            ("", "i", "127.0.0.1:1"),
            ("orders/x", "i", "127.0.0.1:1"),
            ("or ders", "i", "127.0.0.1:1"),
            ("orders", "", "127.0.0.1:1"),
            ("orders", "a/b", "127.0.0.1:1"),
            ("orders", "i", ""),
            ("orders", "i", "http://a b"),
        ] {
            let result = discovery.register(role, id, address).await;
            assert!(result.is_err(), "{role:?} {id:?} {address:?} was accepted");
        }
        assert!(discovery.members("a/b").await.is_err());
        assert!(discovery.members("").await.is_err());
    }

    #[tokio::test]
    async fn from_url_picks_static_for_none_and_static_and_names_any_other_value() {
        for url in [None, Some("static"), Some(" static ")] {
            let discovery = Discovery::from_url(url, "ordo", HashMap::new())
                .await
                .unwrap();
            assert_eq!(discovery.kind(), "static");
        }
        for url in ["bogus://x", "", "Static", "consul://127.0.0.1:8500"] {
            let error = Discovery::from_url(Some(url), "ordo", HashMap::new())
                .await
                .unwrap_err();
            assert!(error.0.contains(&format!("{url:?}")), "{error}");
        }
    }

    #[cfg(not(feature = "etcd"))]
    #[tokio::test]
    async fn without_the_etcd_feature_an_etcd_url_says_how_to_get_one() {
        let error = Discovery::from_url(Some("etcd://127.0.0.1:2379"), "ordo", HashMap::new())
            .await
            .unwrap_err();
        assert_eq!(
            error.0,
            "this build of ordo has no etcd support; build with --features etcd"
        );
    }

    #[test]
    fn etcd_urls_list_their_endpoints_as_http() {
        assert_eq!(
            parse_etcd_url("etcd://127.0.0.1:2379").unwrap(),
            ["http://127.0.0.1:2379"]
        );
        assert_eq!(
            parse_etcd_url("ETCD://etcd-1:2379, etcd-2.local:2380,[::1]:2381/").unwrap(),
            [
                "http://etcd-1:2379",
                "http://etcd-2.local:2380",
                "http://[::1]:2381"
            ]
        );
    }

    #[test]
    fn malformed_etcd_urls_are_errors_naming_the_url() {
        for url in [
            "etcd://",
            "etcd:/127.0.0.1:2379",
            "http://127.0.0.1:2379",
            "etcd://127.0.0.1",
            "etcd://127.0.0.1:",
            "etcd://127.0.0.1:0",
            "etcd://127.0.0.1:99999",
            "etcd://127.0.0.1:x",
            "etcd://:2379",
            "etcd://a:1,",
            "etcd://a:1,,b:2",
            "etcd://user:pw@a:1",
            "etcd://a:1/path",
            "etcd://a:1?x=y",
            "etcd://[::1:2379",
            "etcd://[zz]:2379",
            "etcd://é:1",
            "étcd://a:1",
        ] {
            let error = parse_etcd_url(url).unwrap_err();
            assert!(error.0.contains(&format!("{url:?}")), "{url}: {error}");
        }
    }

    #[test]
    fn ttls_are_whole_seconds_and_at_least_one() {
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(2)), 2);
        assert_eq!(ttl_seconds(DEFAULT_TTL), 10);
        assert_eq!(ttl_seconds(Duration::MAX), i64::MAX);
    }
}

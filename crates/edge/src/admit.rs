//! The decision at the door, before a call does any work: authenticate (unless the route or
//! method is keyless), then admit (unless it is unlimited) — the cap of calls in progress, the
//! adaptive shedder and the caller's rate limit, all decided by `ordo_admission`. The caller of
//! a rate limit is the API key presented when keys are enforced, else the client's address.
//!
//! Which names are exempt is the transport's to say (a route template, a gRPC path): HTTP
//! payment callbacks are keyless (they are signed) and unlimited; gRPC health is keyless and
//! unlimited, gRPC payment callbacks unlimited only.

use crate::auth::ApiKeys;
use ordo_admission::{Admission, Caller, Rejection, Ticket};
use ordo_domain::{Error, ErrorKind};
use std::net::IpAddr;
use std::time::Duration;

/// What the edge enforces, shared by the HTTP and gRPC layers of one process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Edge {
    /// `ORDO_API_KEYS`; empty: open.
    pub api_keys: ApiKeys,
    /// Load shedding and rate limits.
    pub admission: Admission,
    /// The longest a call may take (a caller may ask for less: [`crate::deadline::budget`]).
    pub request_timeout: Duration,
}

/// What one route or method is exempt from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exempt {
    /// Served without an API key.
    pub keyless: bool,
    /// Never shed nor rate-limited: a refusal would cost more than the call (a probe, a payment
    /// provider's callback, which would be retried later at best).
    pub unlimited: bool,
}

/// A transport's exempt names: HTTP route templates or gRPC paths.
#[derive(Debug, Clone, Copy)]
pub struct Exemptions {
    pub keyless: &'static [&'static str],
    pub unlimited: &'static [&'static str],
}

impl Exemptions {
    /// The exemptions of `name`; `None` (no route matched) is exempt from nothing.
    pub fn of(&self, name: Option<&str>) -> Exempt {
        name.map_or(Exempt::default(), |name| Exempt {
            keyless: self.keyless.contains(&name),
            unlimited: self.unlimited.contains(&name),
        })
    }
}

/// Why a call was turned away at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Keys are enforced and the call presents none of them.
    Unauthenticated,
    /// Shed, or over the caller's rate limit.
    Rejected(Rejection),
}

impl Refusal {
    /// The error of the one error model: its kind decides the HTTP status and the gRPC code.
    pub fn error(&self) -> Error {
        match self {
            Refusal::Unauthenticated => Error::new(
                ErrorKind::Unauthenticated,
                "a valid API key is required (x-api-key or authorization: Bearer)",
            ),
            Refusal::Rejected(rejection) => rejection.error(),
        }
    }

    /// `Retry-After` in seconds; `None` for a refusal that waiting does not cure.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::Unauthenticated => None,
            Refusal::Rejected(rejection) => Some(rejection.retry_after_secs()),
        }
    }
}

impl Edge {
    /// Lets a call with these `headers` in, or says why not. `peer` gives the client's address,
    /// asked only when the call is limited and presents no key. The ticket (`None` for an
    /// unlimited call) must be held until the answer is known, then finished.
    pub async fn admit(
        &self,
        headers: &http::HeaderMap,
        peer: impl FnOnce() -> Option<IpAddr>,
        exempt: Exempt,
    ) -> Result<Option<Ticket>, Refusal> {
        if !exempt.keyless && !self.api_keys.admits(headers) {
            return Err(Refusal::Unauthenticated);
        }
        if exempt.unlimited {
            return Ok(None);
        }
        let caller = match self.api_keys.caller_key(headers) {
            Some(key) => Caller::ApiKey(key),
            None => peer().map_or(Caller::Unknown, Caller::Address),
        };
        match self.admission.admit(caller).await {
            Ok(ticket) => Ok(Some(ticket)),
            Err(rejection) => Err(Refusal::Rejected(rejection)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};
    use ordo_admission::{AdmissionSettings, RateLimit, Reason};
    use ordo_config::Secret;
    use std::net::Ipv4Addr;

    const NOTHING: Exempt = Exempt {
        keyless: false,
        unlimited: false,
    };

    fn configured(keys: &[&str], rate_limit: Option<RateLimit>, max_in_flight: usize) -> Edge {
        let keys: Vec<Secret> = keys.iter().map(|k| Secret::new(*k)).collect();
        Edge {
            api_keys: ApiKeys::new(&keys),
            admission: Admission::new(
                AdmissionSettings {
                    rate_limit,
                    max_in_flight,
                    adaptive_cpu_threshold_permille: None,
                },
                None,
            ),
            request_timeout: Duration::from_secs(1),
        }
    }

    /// One call per second, none saved up.
    const ONE: Option<RateLimit> = Some(RateLimit {
        per_second: 1,
        burst: 1,
    });

    fn key(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static(value));
        headers
    }

    fn address(last: u8) -> impl FnOnce() -> Option<IpAddr> {
        move || Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
    }

    fn reason(refused: Result<Option<Ticket>, Refusal>) -> Option<Reason> {
        match refused {
            Err(Refusal::Rejected(rejection)) => Some(rejection.reason),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_call_without_a_valid_key_is_refused_before_admission_sees_it() {
        let edge = configured(&["k-one"], ONE, usize::MAX);
        let peer_asked = std::cell::Cell::new(false);
        let refused = edge
            .admit(
                &key("k-wrong"),
                || {
                    peer_asked.set(true);
                    None
                },
                NOTHING,
            )
            .await;
        assert_eq!(refused.unwrap_err(), Refusal::Unauthenticated);
        assert!(!peer_asked.get());
        assert_eq!(edge.admission.in_flight(), 0);
        // The refused call spent nothing of the budget its key would have had.
        let ticket = edge.admit(&key("k-one"), || None, NOTHING).await;
        assert!(ticket.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_keyless_name_passes_without_a_key_yet_is_limited_by_address() {
        let edge = configured(&["k-one"], ONE, usize::MAX);
        let keyless = Exempt {
            keyless: true,
            unlimited: false,
        };
        let first = edge.admit(&HeaderMap::new(), address(1), keyless).await;
        assert!(first.unwrap().is_some());
        let second = edge.admit(&HeaderMap::new(), address(1), keyless).await;
        assert_eq!(reason(second), Some(Reason::RateLimited));
        let other = edge.admit(&HeaderMap::new(), address(2), keyless).await;
        assert!(other.is_ok(), "another address has its own budget");
    }

    #[tokio::test]
    async fn an_unlimited_name_is_neither_counted_nor_refused_when_the_cap_is_reached() {
        let edge = configured(&[], ONE, 1);
        let held = edge.admit(&HeaderMap::new(), address(1), NOTHING).await;
        let held = held.unwrap().expect("a limited call holds a ticket");
        assert_eq!(edge.admission.in_flight(), 1);
        let shed = edge.admit(&HeaderMap::new(), address(2), NOTHING).await;
        assert_eq!(reason(shed), Some(Reason::MaxInFlight));
        let unlimited = Exempt {
            keyless: false,
            unlimited: true,
        };
        for _ in 0..3 {
            let passed = edge.admit(&HeaderMap::new(), address(1), unlimited).await;
            assert!(passed.unwrap().is_none(), "no ticket, no count");
        }
        assert_eq!(edge.admission.in_flight(), 1);
        held.finish(true);
        assert_eq!(edge.admission.in_flight(), 0);
    }

    #[tokio::test]
    async fn with_keys_each_key_has_a_budget_and_the_address_does_not_matter() {
        let edge = configured(&["k-one", "k-two"], ONE, usize::MAX);
        assert!(edge.admit(&key("k-one"), address(1), NOTHING).await.is_ok());
        let again = edge.admit(&key("k-one"), address(2), NOTHING).await;
        assert_eq!(reason(again), Some(Reason::RateLimited));
        assert!(edge.admit(&key("k-two"), address(1), NOTHING).await.is_ok());
    }

    #[tokio::test]
    async fn without_keys_or_address_every_caller_shares_one_budget() {
        let edge = configured(&[], ONE, usize::MAX);
        assert!(edge.admit(&key("any"), || None, NOTHING).await.is_ok());
        let second = edge.admit(&key("other"), || None, NOTHING).await;
        assert_eq!(reason(second), Some(Reason::RateLimited));
    }

    #[tokio::test]
    async fn refusals_carry_their_error_kind_and_when_to_come_back() {
        assert_eq!(
            Refusal::Unauthenticated.error().kind,
            ErrorKind::Unauthenticated
        );
        assert_eq!(Refusal::Unauthenticated.retry_after_secs(), None);
        // Over the rate limit, then over the cap of calls in progress.
        for (rate_limit, max_in_flight, kind) in [
            (ONE, usize::MAX, ErrorKind::RateLimited),
            (None, 1, ErrorKind::Unavailable),
        ] {
            let edge = configured(&[], rate_limit, max_in_flight);
            let _first = edge.admit(&HeaderMap::new(), address(1), NOTHING).await;
            let refused = edge.admit(&HeaderMap::new(), address(1), NOTHING).await;
            let refused = refused.unwrap_err();
            assert_eq!(
                (refused.error().kind, refused.retry_after_secs()),
                (kind, Some(1))
            );
        }
    }

    #[test]
    fn exemptions_are_by_exact_name_and_an_unmatched_route_has_none() {
        let exemptions = Exemptions {
            keyless: &["/open", "/callback"],
            unlimited: &["/callback"],
        };
        assert_eq!(
            exemptions.of(Some("/callback")),
            Exempt {
                keyless: true,
                unlimited: true
            }
        );
        assert_eq!(
            exemptions.of(Some("/open")),
            Exempt {
                keyless: true,
                unlimited: false
            }
        );
        assert_eq!(exemptions.of(Some("/open/")), NOTHING);
        assert_eq!(exemptions.of(Some("/v1/orders")), NOTHING);
        assert_eq!(exemptions.of(None), NOTHING);
    }
}

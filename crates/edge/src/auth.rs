//! API-key authentication, one rule for every transport: with `ORDO_API_KEYS` set, a caller
//! presents one of the keys as `x-api-key: <key>` or `authorization: Bearer <key>` (HTTP
//! headers and gRPC metadata alike); without keys the API is open (the dev profile).
//!
//! Keys are compared in constant time, each against every configured key, so neither a key's
//! content nor which key matched shows in the time an answer takes.

use ordo_config::{ExposeSecret, Secret};
use subtle::ConstantTimeEq;

/// The configured keys; empty: open. Each is a [`Secret`], so `Debug` shows how many there are,
/// never what they are.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys(std::sync::Arc<[Secret]>);

impl ApiKeys {
    /// The keys of `keys`, trimmed; blank ones are left out.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a Secret>) -> Self {
        ApiKeys(
            keys.into_iter()
                .map(|k| k.expose_secret().trim())
                .filter(|k| !k.is_empty())
                .map(Secret::new)
                .collect(),
        )
    }

    /// Whether keys are required at all.
    pub fn enforced(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether a request with these headers may pass.
    pub fn admits(&self, headers: &http::HeaderMap) -> bool {
        if !self.enforced() {
            return true;
        }
        let Some(presented) = presented(headers) else {
            return false;
        };
        // Every key is compared, match or not.
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |any, key| {
                any | key.expose_secret().as_bytes().ct_eq(presented)
            })
            .into()
    }

    /// The key a request presents when keys are enforced: after [`ApiKeys::admits`], the key
    /// it was admitted with (rate limits are per key). `None` when the API is open.
    pub fn caller_key<'h>(&self, headers: &'h http::HeaderMap) -> Option<&'h [u8]> {
        self.enforced().then(|| presented(headers)).flatten()
    }
}

/// The key in `x-api-key`, else in `authorization: Bearer`.
fn presented(headers: &http::HeaderMap) -> Option<&[u8]> {
    headers
        .get("x-api-key")
        .map(http::HeaderValue::as_bytes)
        .or_else(|| {
            let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
            value
                .get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
                .map(|_| value[7..].trim_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn configured(keys: &[&str]) -> ApiKeys {
        let secrets: Vec<Secret> = keys.iter().map(|k| Secret::new(*k)).collect();
        ApiKeys::new(&secrets)
    }

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn without_keys_everything_passes() {
        assert!(configured(&[]).admits(&HeaderMap::new()));
        assert!(configured(&["", " "]).admits(&HeaderMap::new()));
    }

    #[test]
    fn a_configured_key_passes_in_either_header() {
        let keys = configured(&["k-one", "k-two"]);
        assert!(keys.admits(&headers("x-api-key", "k-two")));
        assert!(keys.admits(&headers("authorization", "Bearer k-one")));
        assert!(keys.admits(&headers("authorization", "bearer k-one")));
    }

    #[test]
    fn a_missing_wrong_or_partial_key_is_refused() {
        let keys = configured(&["k-one"]);
        assert!(!keys.admits(&HeaderMap::new()));
        assert!(!keys.admits(&headers("x-api-key", "k-on")));
        assert!(!keys.admits(&headers("x-api-key", "k-one2")));
        assert!(!keys.admits(&headers("authorization", "Basic k-one")));
        assert!(!keys.admits(&headers("authorization", "Bearer")));
    }

    #[test]
    fn the_caller_key_is_the_presented_one_and_none_when_open() {
        let keys = configured(&["k-one"]);
        assert_eq!(
            keys.caller_key(&headers("authorization", "Bearer k-one")),
            Some(&b"k-one"[..])
        );
        assert_eq!(
            ApiKeys::default().caller_key(&headers("x-api-key", "k-one")),
            None
        );
    }

    #[test]
    fn debug_never_prints_a_key() {
        assert_eq!(format!("{:?}", configured(&["k-s3cret"])), "ApiKeys([***])");
    }
}

//! The one signature scheme of ordo's integration contract, for payment callbacks in and carrier
//! webhooks out: the header
//!
//! ```text
//! Ordo-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
//! ```
//!
//! A receiver rejects a malformed header, a timestamp more than [`TOLERANCE_SECS`] away from its
//! own clock (either direction: replays and clocks far ahead), and a MAC that does not match.
//! Several `v1=` entries may be sent while a secret is being rotated; one match is enough.
//! MACs are compared in constant time. Pure: the caller supplies the clock.
//!
//! Invariant: no error message names the secret or the expected MAC; it says why, never what.

use crate::error::{Error, ErrorKind, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The HTTP header carrying the signature.
pub const HEADER: &str = "Ordo-Signature";

/// How far (seconds) a signature's timestamp may be from the receiver's clock.
pub const TOLERANCE_SECS: i64 = 300;

/// The most `v1=` entries a header may carry (rotation needs two; more is abuse).
const MAX_SIGNATURES: usize = 8;

/// Length in hex digits of an HMAC-SHA256.
const MAC_HEX_LEN: usize = 64;

/// The MAC state after `"<t>."` and the body, ready to finalise or verify.
fn mac_of(secret: &[u8], unix_seconds: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value signing `body` at `unix_seconds` with `secret`.
pub fn sign(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let tag = mac_of(secret, unix_seconds, body).finalize().into_bytes();
    format!("t={unix_seconds},v1={}", hex::encode(tag))
}

fn unauthenticated(reason: &str) -> Error {
    Error::new(
        ErrorKind::Unauthenticated,
        format!("the {HEADER} header is not valid: {reason}"),
    )
}

/// The parts of a well-formed header.
struct Parsed {
    timestamp: i64,
    macs: Vec<Vec<u8>>,
}

fn parse(header_value: &str) -> Result<Parsed> {
    let mut timestamp = None;
    let mut macs = Vec::new();
    for part in header_value.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(unauthenticated("expected t=<unix seconds>,v1=<hex>"));
        };
        match key {
            "t" => {
                let digits = !value.is_empty()
                    && value.len() <= 18
                    && value.bytes().all(|b| b.is_ascii_digit());
                let parsed = digits.then(|| value.parse::<i64>().ok()).flatten();
                match (parsed, timestamp) {
                    (Some(t), None) => timestamp = Some(t),
                    (None, _) => return Err(unauthenticated("t is not a Unix time in seconds")),
                    (Some(_), Some(_)) => return Err(unauthenticated("t appears more than once")),
                }
            }
            "v1" => {
                if value.len() != MAC_HEX_LEN {
                    return Err(unauthenticated("v1 is not 64 hex digits"));
                }
                let mac =
                    hex::decode(value).map_err(|_| unauthenticated("v1 is not 64 hex digits"))?;
                macs.push(mac);
                if macs.len() > MAX_SIGNATURES {
                    return Err(unauthenticated("too many v1 entries"));
                }
            }
            // Other schemes (a future v2) are skipped, as a receiver of a newer sender must.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| unauthenticated("no t= timestamp"))?;
    if macs.is_empty() {
        return Err(unauthenticated("no v1= signature"));
    }
    Ok(Parsed { timestamp, macs })
}

/// Checks that `header_value` signs `body` with `secret`, at a time within
/// [`TOLERANCE_SECS`] of `now_unix_seconds`. Every failure is `unauthenticated`.
pub fn verify(secret: &[u8], header_value: &str, body: &[u8], now_unix_seconds: i64) -> Result<()> {
    let Parsed { timestamp, macs } = parse(header_value)?;
    let within_window = now_unix_seconds
        .checked_sub(timestamp)
        .is_some_and(|skew| skew.unsigned_abs() <= TOLERANCE_SECS as u64);
    if !within_window {
        return Err(unauthenticated(&format!(
            "the timestamp is more than {TOLERANCE_SECS} s away from the receiver's clock"
        )));
    }
    let expected = mac_of(secret, timestamp, body);
    // Constant-time comparison for each candidate.
    if macs
        .iter()
        .any(|candidate| expected.clone().verify_slice(candidate).is_ok())
    {
        Ok(())
    } else {
        Err(unauthenticated("the signature does not match"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"whsec_test_secret";
    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"event_id":"evt_1"}"#;

    fn reason(result: Result<()>) -> String {
        let error = result.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Unauthenticated);
        assert!(!error.message.contains("whsec"), "{}", error.message);
        error.message
    }

    #[test]
    fn a_signature_is_t_and_a_hex_hmac() {
        let header = sign(SECRET, NOW, BODY);
        let (t, v1) = header.split_once(',').unwrap();
        assert_eq!(t, format!("t={NOW}"));
        let hex = v1.strip_prefix("v1=").unwrap();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(verify(SECRET, &header, BODY, NOW), Ok(()));
    }

    #[test]
    fn a_known_vector_matches() {
        // HMAC-SHA256("key", "1.x"), computed independently.
        let header = sign(b"key", 1, b"x");
        let mac = <HmacSha256 as Mac>::new_from_slice(b"key")
            .unwrap()
            .chain_update(b"1.x")
            .finalize()
            .into_bytes();
        assert_eq!(header, format!("t=1,v1={}", hex::encode(mac)));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let good_mac = sign(SECRET, NOW, BODY)
            .split_once(",v1=")
            .unwrap()
            .1
            .to_owned();
        for bad in [
            String::new(),
            "garbage".to_owned(),
            format!("v1={good_mac}"),
            format!("t={NOW}"),
            format!("t=,v1={good_mac}"),
            format!("t=-5,v1={good_mac}"),
            format!("t=12a,v1={good_mac}"),
            format!("t={NOW},t={NOW},v1={good_mac}"),
            format!("t={NOW},v1=abc"),
            format!("t={NOW},v1={}", "zz".repeat(32)),
            format!("t={NOW},v1={good_mac},v1"),
            format!("t={NOW},{}", vec![format!("v1={good_mac}"); 9].join(",")),
            format!("t=99999999999999999999,v1={good_mac}"),
        ] {
            let message = reason(verify(SECRET, &bad, BODY, NOW));
            assert!(message.contains(HEADER), "{bad:?}: {message}");
        }
    }

    #[test]
    fn a_timestamp_outside_the_window_is_refused_in_both_directions() {
        for t in [NOW - TOLERANCE_SECS - 1, NOW + TOLERANCE_SECS + 1, 0] {
            let message = reason(verify(SECRET, &sign(SECRET, t, BODY), BODY, NOW));
            assert!(message.contains("300 s"), "{message}");
        }
        for t in [NOW - TOLERANCE_SECS, NOW + TOLERANCE_SECS] {
            assert_eq!(verify(SECRET, &sign(SECRET, t, BODY), BODY, NOW), Ok(()));
        }
    }

    #[test]
    fn a_wrong_mac_is_refused() {
        let header = sign(SECRET, NOW, BODY);
        let message = reason(verify(b"another secret", &header, BODY, NOW));
        assert!(message.contains("does not match"), "{message}");
        reason(verify(SECRET, &header, b"{\"event_id\":\"evt_2\"}", NOW));
        // The same MAC under another timestamp: the timestamp is signed too.
        let mac = header.split_once(",v1=").unwrap().1;
        reason(verify(
            SECRET,
            &format!("t={},v1={mac}", NOW + 1),
            BODY,
            NOW,
        ));
    }

    #[test]
    fn any_of_several_v1_entries_may_match_during_rotation() {
        let old = sign(b"old secret", NOW, BODY);
        let new = sign(SECRET, NOW, BODY);
        let old_mac = old.split_once(",v1=").unwrap().1;
        let new_mac = new.split_once(",v1=").unwrap().1;
        let both = format!("t={NOW},v1={old_mac},v1={new_mac}");
        assert_eq!(verify(SECRET, &both, BODY, NOW), Ok(()));
        assert_eq!(verify(b"old secret", &both, BODY, NOW), Ok(()));
        reason(verify(b"third", &both, BODY, NOW));
        // Unknown schemes are skipped, spaces after commas tolerated.
        let spaced = format!("t={NOW}, v0=whatever, v1={new_mac}");
        assert_eq!(verify(SECRET, &spaced, BODY, NOW), Ok(()));
    }

    proptest! {
        #[test]
        fn signing_then_verifying_round_trips(
            secret in proptest::collection::vec(any::<u8>(), 0..80),
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            t in 0i64..4_000_000_000,
            skew in -TOLERANCE_SECS..=TOLERANCE_SECS,
        ) {
            let header = sign(&secret, t, &body);
            prop_assert_eq!(verify(&secret, &header, &body, t + skew), Ok(()));
        }

        #[test]
        fn a_changed_body_never_verifies(
            body in proptest::collection::vec(any::<u8>(), 1..512),
            flip in any::<proptest::sample::Index>(),
        ) {
            let header = sign(SECRET, NOW, &body);
            let mut changed = body.clone();
            let i = flip.index(changed.len());
            changed[i] ^= 0x01;
            prop_assert!(verify(SECRET, &header, &changed, NOW).is_err());
        }
    }
}

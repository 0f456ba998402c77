//! The `Ordo-Signature` header (`ordo_domain::signature`): any header, body, secret and clock
//! never panic; a header that verifies carries the MAC of its timestamp and the body and lies
//! within the tolerance; what `sign` writes verifies within the tolerance and not beyond.
//!
//! Input: `<header>\n<secret>\n<now, decimal>\n<body...>` (missing lines are empty; a `now`
//! that is not a number is 1800000000).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordo_domain::ErrorKind;
use ordo_domain::signature::{TOLERANCE_SECS, sign, verify};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(4, |&b| b == b'\n');
    let Ok(header) = std::str::from_utf8(lines.next().unwrap_or_default()) else {
        return;
    };
    let secret = lines.next().unwrap_or_default();
    let now = std::str::from_utf8(lines.next().unwrap_or_default())
        .ok()
        .and_then(|n| n.trim().parse::<i64>().ok())
        .unwrap_or(1_800_000_000);
    let body = lines.next().unwrap_or_default();

    match verify(secret, header, body, now) {
        Ok(()) => {
            let parts: Vec<&str> = header.split(',').map(str::trim).collect();
            let t: i64 = parts
                .iter()
                .find_map(|p| p.strip_prefix("t="))
                .expect("a verified header has t=")
                .parse()
                .expect("a verified t= is a number");
            assert!(
                now.checked_sub(t)
                    .is_some_and(|skew| skew.unsigned_abs() <= TOLERANCE_SECS as u64),
                "verified outside the tolerance: t={t} now={now}"
            );
            let expected = sign(secret, t, body);
            let (_, mac) = expected.split_once(",v1=").expect("sign writes v1=");
            assert!(
                parts
                    .iter()
                    .filter_map(|p| p.strip_prefix("v1="))
                    .any(|candidate| candidate.eq_ignore_ascii_case(mac)),
                "verified without the right MAC: {header:?}"
            );
        }
        Err(error) => {
            assert_eq!(error.kind, ErrorKind::Unauthenticated, "{error:?}");
            assert!(error.message.contains("Ordo-Signature"), "{error:?}");
        }
    }

    // Round trip at a realistic time (0 ..= 2^32 s, the year 2106): what `sign` writes
    // verifies within the tolerance, on either side, and not beyond it.
    let t = now.rem_euclid(1 << 32);
    let signed = sign(secret, t, body);
    for skew in [0, TOLERANCE_SECS, -TOLERANCE_SECS] {
        assert_eq!(
            verify(secret, &signed, body, t + skew),
            Ok(()),
            "t={t} skew={skew}"
        );
    }
    for skew in [TOLERANCE_SECS + 1, -TOLERANCE_SECS - 1] {
        assert!(
            verify(secret, &signed, body, t + skew).is_err(),
            "t={t} skew={skew}"
        );
    }
    // The fuzzed header beside a valid signature: whatever it holds, nothing panics.
    let _ = verify(secret, &format!("{signed},{header}"), body, t);
    let _ = verify(secret, &format!("{header},{signed}"), body, t);
});

//! `POST /v1/payments/callbacks/{provider}`: the raw body (the edge's `RawBody` extractor),
//! signed as a provider signs it, through `PaymentCallbackInput::verify_and_parse` (the
//! handler's first steps). Invariants: nothing panics; a correctly signed body is never
//! refused for its signature, and an unsigned or stale one always is; refusals are the client's
//! fault; an accepted callback has a well-formed event id, payment id and amount.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordo_domain::ErrorKind;
use ordo_domain::signature::sign;
use ordo_http_api::extract::RawBody;
use ordo_service::api::PaymentCallbackInput;

const SECRET: &[u8] = b"whsec_fuzz";
const NOW: i64 = 1_800_000_000;

fuzz_target!(|body: &[u8]| {
    let Some(Ok(RawBody(raw))) = ordo_fuzz::extract::<RawBody>(Some("application/json"), body)
    else {
        panic!("any body within the limit is taken raw");
    };
    assert_eq!(&raw[..], body);

    let header = sign(SECRET, NOW, &raw);
    match PaymentCallbackInput::verify_and_parse(SECRET, Some(&header), &raw, NOW) {
        Ok(callback) => {
            assert!((1..=255).contains(&callback.event_id.len()));
            assert!(callback.event_id.bytes().all(|b| b.is_ascii_graphic()));
            assert_eq!(callback.payment_id.as_str().len(), 36);
            assert!((0..=1_000_000_000_000_000).contains(&callback.amount.amount_minor()));
        }
        Err(error) => {
            assert_ne!(error.kind, ErrorKind::Unauthenticated, "{error:?}");
            ordo_fuzz::assert_client_fault(&error);
        }
    }
    for (header, now) in [(None, NOW), (Some(header.as_str()), NOW + 301)] {
        let refused = PaymentCallbackInput::verify_and_parse(SECRET, header, &raw, now)
            .expect_err("unsigned or stale");
        assert_eq!(refused.kind, ErrorKind::Unauthenticated);
    }
});

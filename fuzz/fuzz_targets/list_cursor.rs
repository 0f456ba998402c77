//! Listing cursors: `GET /v1/orders?customer_id=&status=&limit=&cursor=` through the HTTP
//! edge's query extractor and `ListOrdersQuery::parse` (which the REST and gRPC listings
//! share), and the cursor parser itself (`OrderId::parse_generated`). Invariants: nothing
//! panics; refusals are the client's fault; an accepted cursor decodes to the 128-bit id it
//! encodes and re-encodes to itself, and every id we issue as a cursor is accepted.
//!
//! Input: the query string of a listing request (`limit=2&cursor=ord_...`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordo_domain::ids::OrderId;
use ordo_http_api::extract::Query;
use ordo_service::api::ListOrdersQuery;

/// A cursor accepted by the parser re-encodes to itself.
fn assert_round_trips(cursor: &str) {
    if OrderId::parse_generated(cursor).is_ok() {
        let hex = cursor
            .strip_prefix("ord_")
            .expect("an accepted cursor starts ord_");
        let value = u128::from_str_radix(hex, 16).expect("an accepted cursor is hex");
        assert_eq!(OrderId::from_u128(value).as_str(), cursor);
    }
}

fuzz_target!(|data: &[u8]| {
    // Every id we issue is a cursor we take back.
    let mut bytes = [0u8; 16];
    for (i, b) in data.iter().enumerate() {
        bytes[i % 16] ^= b.rotate_left(i as u32 / 16);
    }
    let issued = OrderId::from_u128(u128::from_le_bytes(bytes));
    assert_eq!(
        OrderId::parse_generated(issued.as_str()).as_ref(),
        Ok(&issued)
    );

    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    assert_round_trips(query);

    // The whole request as the edge takes it: the query extractor, then the service's checks.
    let Ok(uri) = format!("/v1/orders?{query}").parse::<http::Uri>() else {
        return;
    };
    let request = http::Request::builder()
        .uri(uri)
        .body(axum::body::Body::empty())
        .unwrap();
    let (mut parts, _) = request.into_parts();
    let extracted = futures::executor::block_on(
        <Query<ListOrdersQuery> as axum::extract::FromRequestParts<()>>::from_request_parts(
            &mut parts,
            &(),
        ),
    );
    let query = match extracted {
        Ok(Query(query)) => query,
        Err(rejection) => {
            ordo_fuzz::assert_client_fault(&rejection.0);
            return;
        }
    };
    if let Some(cursor) = &query.cursor {
        assert_round_trips(cursor);
    }
    match query.parse() {
        Ok((filter, limit)) => {
            assert!((1..=100).contains(&limit));
            assert_eq!(filter.limit as usize, limit + 1);
            assert_eq!(filter.before_id, query.cursor);
            if let Some(customer_id) = &filter.customer_id {
                assert!(ordo_fuzz::is_clean_text(customer_id, 64), "{customer_id:?}");
            }
        }
        Err(error) => ordo_fuzz::assert_client_fault(&error),
    }
});

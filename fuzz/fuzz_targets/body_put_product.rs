//! `PUT /v1/products/{sku}`: the raw body through the HTTP edge's JSON extractor and
//! `ProductInput::parse`. Invariants: nothing panics; refusals are the client's fault; an
//! accepted product has a clean name of at most 200 characters and a price within range, and
//! parses to itself again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordo_http_api::extract::Json;
use ordo_service::api::{MoneyDto, ProductInput};

const SKUS: [&str; 4] = ["TEA-1", "ชา-001", "a/b", ""];

fuzz_target!(|body: &[u8]| {
    let Some(extracted) = ordo_fuzz::extract::<Json<ProductInput>>(Some("application/json"), body)
    else {
        return;
    };
    let Ok(Json(input)) = extracted else {
        return;
    };
    let sku = SKUS[body.len() % SKUS.len()];
    match input.parse(sku) {
        Ok(record) => {
            assert_eq!(record.sku, sku);
            assert!(
                ordo_fuzz::is_clean_text(&record.name, 200),
                "{:?}",
                record.name
            );
            assert!((0..=1_000_000_000_000_000).contains(&record.price_minor));
            let again = ProductInput {
                name: record.name.clone(),
                price: MoneyDto::from_parts(record.price_minor, &record.currency),
            };
            assert_eq!(again.parse(sku), Ok(record));
        }
        Err(error) => ordo_fuzz::assert_client_fault(&error),
    }
});

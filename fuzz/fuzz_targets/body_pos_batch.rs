//! `POST /v1/pos/batches`: the raw body through the HTTP edge's JSON extractor, the batch's
//! checks (`PosBatchInput::check`) and each sale's (`PosSaleInput::check`, against a catalogue
//! pricing every SKU of the batch), as `submit_pos_batch` runs them before it writes.
//! Invariants: nothing panics; refusals are the client's fault; an accepted sale lies within
//! the offline window, its order's total is what was paid and its price difference is paid
//! minus the catalogue total; the missing batch numbers listed are bounded and below this one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordo_domain::ids::Sku;
use ordo_domain::money::{Currency, Money};
use ordo_domain::pos::{MAX_CLOCK_AHEAD_MS, missing_batch_seqs};
use ordo_http_api::extract::Json;
use ordo_service::api::PosBatchInput;
use std::collections::HashMap;

const NOW_MS: i64 = 1_800_000_000_000;
const WINDOW_HOURS: u64 = 72;

fuzz_target!(|body: &[u8]| {
    let Some(Ok(Json(batch))) =
        ordo_fuzz::extract::<Json<PosBatchInput>>(Some("application/json"), body)
    else {
        return;
    };
    let terminal = match batch.check() {
        Ok((terminal, _warehouse)) => terminal,
        Err(error) => {
            ordo_fuzz::assert_client_fault(&error);
            return;
        }
    };
    assert!(batch.batch_seq >= 1 && batch.sales.len() <= 500);
    // Every SKU is in the catalogue, at one unit price (the batch number picks it, so that the
    // fuzzer reaches the largest amounts too), in the currency of each sale.
    let unit_price = batch.batch_seq % (Money::MAX_MINOR + 1);
    for sale in &batch.sales {
        let mut prices = HashMap::new();
        if let Ok(currency) = Currency::parse(&sale.currency) {
            for item in &sale.items {
                if let Ok(sku) = Sku::parse(&item.sku) {
                    prices.insert(sku, Money::new(unit_price, currency).unwrap());
                }
            }
        }
        match sale.check(&terminal, &prices, NOW_MS, WINDOW_HOURS) {
            Ok(checked) => {
                let window = WINDOW_HOURS as i64 * 3_600_000;
                assert!(checked.sold_at_ms <= NOW_MS + MAX_CLOCK_AHEAD_MS);
                assert!(checked.sold_at_ms >= NOW_MS - window);
                let paid = sale.payment.amount.amount_minor;
                assert_eq!(checked.order.total_minor, paid);
                let catalogue: i64 = checked.order.items.iter().map(|i| i.line_total_minor).sum();
                assert!((0..=Money::MAX_MINOR).contains(&catalogue));
                assert_eq!(checked.price_difference.amount_minor, paid - catalogue);
                assert!((1..=100).contains(&checked.order.items.len()));
                for item in &checked.order.items {
                    assert_eq!(item.unit_price_minor, unit_price);
                    assert_eq!(item.line_total_minor, unit_price * item.quantity);
                }
            }
            Err(error) => ordo_fuzz::assert_client_fault(&error),
        }
    }
    // The answer's list of batches never received, given the ones that were.
    let received: Vec<i64> = (1..batch.batch_seq)
        .step_by(2)
        .take(batch.sales.len())
        .collect();
    let missing = missing_batch_seqs(batch.batch_seq, &received, 1_000);
    assert!(missing.len() <= 1_000);
    assert!(missing.windows(2).all(|w| w[0] < w[1]));
    assert!(
        missing
            .iter()
            .all(|&m| (1..batch.batch_seq).contains(&m) && !received.contains(&m))
    );
});

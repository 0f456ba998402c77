//! `POST /v1/orders`: the raw body through the HTTP edge's JSON extractor and
//! `CreateOrderInput::parse` (what the handler and the gRPC service call). Invariants: nothing
//! panics; refusals are the client's fault; an accepted order keeps the limits of the contract
//! (1 to 100 lines, clean text within its length); parsing is idempotent (the accepted values
//! parse to themselves) and survives a JSON round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordo_domain::order::NewOrder;
use ordo_domain::personal::Personal;
use ordo_fuzz::is_clean_text;
use ordo_http_api::extract::Json;
use ordo_service::api::{AddressDto, ContactDto, CreateOrderInput, OrderItemInput};

fn input_of(order: &NewOrder) -> CreateOrderInput {
    let a = &order.shipping_address;
    CreateOrderInput {
        customer_id: order.customer_id.as_str().to_owned(),
        currency: order.currency.as_str().to_owned(),
        items: order
            .lines
            .iter()
            .map(|(sku, quantity)| OrderItemInput {
                sku: sku.as_str().to_owned(),
                quantity: i64::from(quantity.get()),
            })
            .collect(),
        shipping_address: AddressDto {
            name: a.name.clone(),
            line1: a.line1.clone(),
            city: a.city.clone(),
            postal_code: a.postal_code.clone(),
            country: a.country.clone(),
        },
        contact: ContactDto {
            email: order.contact.email.clone(),
            phone: order.contact.phone.clone(),
        },
    }
}

fn expose(value: &Personal<String>) -> &str {
    value.expose()
}

fuzz_target!(|body: &[u8]| {
    let Some(extracted) =
        ordo_fuzz::extract::<Json<CreateOrderInput>>(Some("application/json"), body)
    else {
        return;
    };
    let Ok(Json(input)) = extracted else {
        return;
    };
    let parsed = input.parse();
    match &parsed {
        Ok(order) => {
            assert!((1..=100).contains(&order.lines.len()));
            assert!(is_clean_text(order.customer_id.as_str(), 64));
            for (sku, quantity) in &order.lines {
                assert!(is_clean_text(sku.as_str(), 64), "{sku:?}");
                assert!((1..=10_000).contains(&quantity.get()));
            }
            let a = &order.shipping_address;
            assert!(is_clean_text(expose(&a.name), 100));
            assert!(is_clean_text(expose(&a.line1), 200));
            assert!(is_clean_text(expose(&a.city), 100));
            assert!(is_clean_text(expose(&a.postal_code), 20));
            assert!(a.country.len() == 2 && a.country.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(is_clean_text(expose(&order.contact.email), 254));
            assert!(expose(&order.contact.email).contains('@'));
            if let Some(phone) = &order.contact.phone {
                assert!(is_clean_text(expose(phone), 32));
            }
            assert_eq!(
                input_of(order).parse().as_ref(),
                Ok(order),
                "not idempotent"
            );
        }
        Err(error) => ordo_fuzz::assert_client_fault(error),
    }
    // What the edge accepted, encoded again, decodes and parses the same.
    let again = serde_json::to_vec(&input).expect("an input encodes");
    match ordo_fuzz::extract::<Json<CreateOrderInput>>(Some("application/json"), &again) {
        Some(Ok(Json(decoded))) => assert_eq!(decoded.parse(), parsed),
        other => panic!(
            "a re-encoded input does not decode: {:?}",
            other.map(|r| r.err())
        ),
    }
});

//! Messages of `ordo.v1` to and from the API shapes of `ordo_service::api`. Field for field:
//! the proto uses the JSON names, so a gRPC request means exactly what its JSON twin means and
//! the service layer validates both alike (a missing message is an empty one, which the domain
//! refuses with the same field violations as an empty JSON value).

use crate::pb;
use ordo_domain::personal::Personal;
use ordo_service::api;

/// A field's value carried over to its twin's field: the same value, or the twin message.
trait Carry<T> {
    fn carry(self) -> T;
}

/// Scalars carry over as they are.
macro_rules! same {
    ($($t:ty),*) => {$(
        impl Carry<$t> for $t {
            fn carry(self) -> $t {
                self
            }
        }
    )*};
}
same!(String, i64);

impl<A: Carry<B>, B> Carry<Vec<B>> for Vec<A> {
    fn carry(self) -> Vec<B> {
        self.into_iter().map(Carry::carry).collect()
    }
}

impl<A: Carry<B>, B> Carry<Option<B>> for Option<A> {
    fn carry(self) -> Option<B> {
        self.map(Carry::carry)
    }
}

/// Personal data travels in clear inside a request between ordo's own roles (TLS is the
/// deployment's), and is marked personal again on arrival.
macro_rules! carry_with {
    ($($from:ty => $to:ty: $convert:path),*) => {$(
        impl Carry<$to> for $from {
            fn carry(self) -> $to {
                $convert(self)
            }
        }
    )*};
}
carry_with!(
    String => Personal<String>: Personal::new,
    Personal<String> => String: Personal::into_exposed
);

/// Each message and its API shape, converted both ways field for field (`proto => api` names a
/// field the two call differently).
macro_rules! twins {
    ($( $pb:ident <=> $api:ident { $($f:ident),* $(; $($pf:ident => $af:ident),*)? } )*) => {$(
        impl From<pb::$pb> for api::$api {
            fn from(m: pb::$pb) -> Self {
                api::$api { $($f: m.$f.carry(),)* $($($af: m.$pf.carry(),)*)? }
            }
        }
        impl From<api::$api> for pb::$pb {
            fn from(v: api::$api) -> Self {
                pb::$pb { $($f: v.$f.carry(),)* $($($pf: v.$af.carry(),)*)? }
            }
        }
        impl Carry<api::$api> for pb::$pb {
            fn carry(self) -> api::$api {
                self.into()
            }
        }
        impl Carry<pb::$pb> for api::$api {
            fn carry(self) -> pb::$pb {
                self.into()
            }
        }
    )*};
}

twins! {
    Money <=> MoneyDto { amount_minor, currency }
    Money <=> MoneyDifferenceDto { amount_minor, currency }
    Product <=> ProductView { sku, name, price }
    Warehouse <=> WarehouseView { id, country }
    StockEntry <=> StockEntryView { sku, warehouse, on_hand, reserved, available }
    WarehouseStock <=> WarehouseStockView { warehouse, on_hand, reserved, available }
    Stock <=> StockView { sku, warehouses, available }
    OrderItemInput <=> OrderItemInput { sku, quantity }
    Address <=> AddressDto { name, line1, city, postal_code, country }
    Contact <=> ContactDto { email, phone }
    CreateOrderRequest <=> CreateOrderInput {
        customer_id, currency, items, shipping_address, contact
    }
    OrderItem <=> OrderItemView { sku, quantity, unit_price, line_total }
    Shipment <=> ShipmentView { id, warehouse, status, carrier, pickup_slot }
    Order <=> OrderView {
        id, customer_id, status, currency, items, total, shipping_address, contact, created_at,
        updated_at, trace_id, shipments
    }
    ListOrdersRequest <=> ListOrdersQuery { customer_id, status, limit, cursor }
    OrderPage <=> OrderPage { orders, next_cursor }
    TimelineEvent <=> TimelineEventView { at, detail, trace_id, span_id; r#type => kind }
    Timeline <=> TimelineView { events }
    Payment <=> PaymentView { id, order_id, provider, status, amount }
    PaymentList <=> PaymentList { payments }
    PaymentCallbackAck <=> PaymentCallbackAck { event_id, outcome }
    PosBatchRequest <=> PosBatchInput { terminal_id, warehouse, batch_seq, sales }
    PosSale <=> PosSaleInput { client_sale_id, sold_at, customer_id, currency, items, payment }
    PosPayment <=> PosPaymentInput { method, amount }
    PosBatchResult <=> PosBatchView { terminal_id, batch_seq, results, missing_batch_seqs }
    PosSaleResult <=> PosSaleResultView {
        client_sale_id, outcome, order_id, stock_deficit, price_difference, error
    }
    StockDeficit <=> StockDeficitView { sku, quantity }
    PosSaleError <=> PosSaleErrorView { code, message }
    Erasure <=> ErasureView { customer_id, orders_erased, orders_pending, erased_at }
}

/// Messages an API shape requires where proto3 can only make them optional: a message the
/// caller left out is an empty one (zero of no currency, an empty address), which the domain
/// refuses with the same field violations as an empty JSON value.
macro_rules! required {
    ($($pb:ident => $api:ident),*) => {$(
        impl Carry<api::$api> for Option<pb::$pb> {
            fn carry(self) -> api::$api {
                self.unwrap_or_default().into()
            }
        }
        impl Carry<Option<pb::$pb>> for api::$api {
            fn carry(self) -> Option<pb::$pb> {
                Some(self.into())
            }
        }
    )*};
}

required!(
    Money => MoneyDto,
    Address => AddressDto,
    Contact => ContactDto,
    PosPayment => PosPaymentInput
);

/// A money field the caller left out: zero of no currency, which the domain refuses.
pub(crate) fn money(m: Option<pb::Money>) -> api::MoneyDto {
    m.carry()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> api::OrderView {
        api::OrderView {
            id: "ord_1".into(),
            customer_id: "c".into(),
            status: "shipped".into(),
            currency: "USD".into(),
            items: vec![api::OrderItemView {
                sku: "TEA".into(),
                quantity: 2,
                unit_price: api::MoneyDto {
                    amount_minor: 100,
                    currency: "USD".into(),
                },
                line_total: api::MoneyDto {
                    amount_minor: 200,
                    currency: "USD".into(),
                },
            }],
            total: api::MoneyDto {
                amount_minor: 200,
                currency: "USD".into(),
            },
            shipping_address: Some(api::AddressDto {
                name: Personal::new("สมชาย".into()),
                line1: Personal::new("l".into()),
                city: Personal::new("c".into()),
                postal_code: Personal::new("1".into()),
                country: "TH".into(),
            }),
            contact: Some(api::ContactDto {
                email: Personal::new("a@b.c".into()),
                phone: None,
            }),
            created_at: "t1".into(),
            updated_at: "t2".into(),
            trace_id: "0af7".into(),
            shipments: vec![api::ShipmentView {
                id: "shp".into(),
                warehouse: "W".into(),
                status: "accepted".into(),
                carrier: Some("dhl".into()),
                pickup_slot: None,
            }],
        }
    }

    fn money_dto(amount_minor: i64) -> api::MoneyDto {
        api::MoneyDto {
            amount_minor,
            currency: "THB".into(),
        }
    }

    /// The same value after a trip through its message and back, compared as JSON.
    fn round_trip<A, P>(original: A)
    where
        A: serde::Serialize + Clone + From<P>,
        P: From<A>,
    {
        let back = A::from(P::from(original.clone()));
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&original).unwrap()
        );
    }

    #[test]
    fn stock_and_payments_survive_the_round_trip() {
        round_trip::<_, pb::Stock>(api::StockView {
            sku: "TEA".into(),
            warehouses: vec![api::WarehouseStockView {
                warehouse: "BKK".into(),
                on_hand: 5,
                reserved: 2,
                available: 3,
            }],
            available: 3,
        });
        round_trip::<_, pb::PaymentList>(api::PaymentList {
            payments: vec![api::PaymentView {
                id: "pay_1".into(),
                order_id: "ord_1".into(),
                provider: "sandbox".into(),
                status: "succeeded".into(),
                amount: money_dto(990),
            }],
        });
        round_trip::<_, pb::Timeline>(api::TimelineView {
            events: vec![api::TimelineEventView {
                at: "t".into(),
                kind: "paid".into(),
                detail: "d".into(),
                trace_id: "0af7".into(),
                span_id: "b7ad".into(),
            }],
        });
    }

    #[test]
    fn a_pos_batch_and_its_answer_survive_the_round_trip() {
        round_trip::<_, pb::PosBatchRequest>(api::PosBatchInput {
            terminal_id: "T1".into(),
            warehouse: "BKK".into(),
            batch_seq: 2,
            sales: vec![api::PosSaleInput {
                client_sale_id: "s1".into(),
                sold_at: "2026-12-01T10:00:00+07:00".into(),
                customer_id: None,
                currency: "THB".into(),
                items: vec![api::OrderItemInput {
                    sku: "TEA".into(),
                    quantity: 1,
                }],
                payment: api::PosPaymentInput {
                    method: "cash".into(),
                    amount: money_dto(100),
                },
            }],
        });
        round_trip::<_, pb::PosBatchResult>(api::PosBatchView {
            terminal_id: "T1".into(),
            batch_seq: 2,
            results: vec![api::PosSaleResultView {
                client_sale_id: "s1".into(),
                outcome: "accepted".into(),
                order_id: Some("ord_1".into()),
                stock_deficit: vec![api::StockDeficitView {
                    sku: "TEA".into(),
                    quantity: 1,
                }],
                price_difference: Some(api::MoneyDifferenceDto {
                    amount_minor: -5,
                    currency: "THB".into(),
                }),
                error: Some(api::PosSaleErrorView {
                    code: "invalid_argument".into(),
                    message: "m".into(),
                }),
            }],
            missing_batch_seqs: vec![1],
        });
    }

    /// proto3 cannot require a message: one left out arrives as the empty value, which the
    /// domain then refuses field by field, as it refuses an empty JSON value.
    #[test]
    fn a_message_left_out_is_an_empty_one() {
        let input = api::CreateOrderInput::from(pb::CreateOrderRequest::default());
        assert_eq!(input.shipping_address.country, "");
        assert_eq!(input.contact.email.into_exposed(), "");
        let sale = api::PosSaleInput::from(pb::PosSale::default());
        assert_eq!(
            (
                sale.payment.amount.amount_minor,
                sale.payment.amount.currency.as_str()
            ),
            (0, "")
        );
        assert_eq!(money(None).currency, "");
    }

    #[test]
    fn an_order_survives_the_round_trip_through_its_message() {
        let original = order();
        let back = api::OrderView::from(pb::Order::from(original.clone()));
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&original).unwrap()
        );
    }
}

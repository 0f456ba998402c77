//! Messages of `ordo.v1` to and from the API shapes of `ordo_service::api`. Field for field:
//! the proto uses the JSON names, so a gRPC request means exactly what its JSON twin means and
//! the service layer validates both alike (a missing message is an empty one, which the domain
//! refuses with the same field violations as an empty JSON value).

use crate::pb;
use ordo_domain::personal::Personal;
use ordo_service::api;

impl From<pb::Money> for api::MoneyDto {
    fn from(m: pb::Money) -> Self {
        api::MoneyDto {
            amount_minor: m.amount_minor,
            currency: m.currency,
        }
    }
}

impl From<pb::OrderItemInput> for api::OrderItemInput {
    fn from(i: pb::OrderItemInput) -> Self {
        api::OrderItemInput {
            sku: i.sku,
            quantity: i.quantity,
        }
    }
}

impl From<api::OrderItemInput> for pb::OrderItemInput {
    fn from(i: api::OrderItemInput) -> Self {
        pb::OrderItemInput {
            sku: i.sku,
            quantity: i.quantity,
        }
    }
}

impl From<api::MoneyDto> for pb::Money {
    fn from(m: api::MoneyDto) -> Self {
        pb::Money {
            amount_minor: m.amount_minor,
            currency: m.currency,
        }
    }
}

/// A money field the caller left out: zero of no currency, which the domain refuses.
pub(crate) fn money(m: Option<pb::Money>) -> api::MoneyDto {
    m.unwrap_or_default().into()
}

impl From<api::ProductView> for pb::Product {
    fn from(p: api::ProductView) -> Self {
        pb::Product {
            sku: p.sku,
            name: p.name,
            price: Some(p.price.into()),
        }
    }
}

impl From<api::WarehouseView> for pb::Warehouse {
    fn from(w: api::WarehouseView) -> Self {
        pb::Warehouse {
            id: w.id,
            country: w.country,
        }
    }
}

impl From<api::StockEntryView> for pb::StockEntry {
    fn from(s: api::StockEntryView) -> Self {
        pb::StockEntry {
            sku: s.sku,
            warehouse: s.warehouse,
            on_hand: s.on_hand,
            reserved: s.reserved,
            available: s.available,
        }
    }
}

impl From<api::StockView> for pb::Stock {
    fn from(s: api::StockView) -> Self {
        pb::Stock {
            sku: s.sku,
            warehouses: s
                .warehouses
                .into_iter()
                .map(|w| pb::WarehouseStock {
                    warehouse: w.warehouse,
                    on_hand: w.on_hand,
                    reserved: w.reserved,
                    available: w.available,
                })
                .collect(),
            available: s.available,
        }
    }
}

impl From<pb::Address> for api::AddressDto {
    fn from(a: pb::Address) -> Self {
        api::AddressDto {
            name: Personal::new(a.name),
            line1: Personal::new(a.line1),
            city: Personal::new(a.city),
            postal_code: Personal::new(a.postal_code),
            country: a.country,
        }
    }
}

impl From<api::AddressDto> for pb::Address {
    fn from(a: api::AddressDto) -> Self {
        pb::Address {
            name: a.name.into_exposed(),
            line1: a.line1.into_exposed(),
            city: a.city.into_exposed(),
            postal_code: a.postal_code.into_exposed(),
            country: a.country,
        }
    }
}

impl From<pb::Contact> for api::ContactDto {
    fn from(c: pb::Contact) -> Self {
        api::ContactDto {
            email: Personal::new(c.email),
            phone: c.phone.map(Personal::new),
        }
    }
}

impl From<api::ContactDto> for pb::Contact {
    fn from(c: api::ContactDto) -> Self {
        pb::Contact {
            email: c.email.into_exposed(),
            phone: c.phone.map(Personal::into_exposed),
        }
    }
}

impl From<pb::CreateOrderRequest> for api::CreateOrderInput {
    fn from(r: pb::CreateOrderRequest) -> Self {
        api::CreateOrderInput {
            customer_id: r.customer_id,
            currency: r.currency,
            items: r.items.into_iter().map(api::OrderItemInput::from).collect(),
            shipping_address: r.shipping_address.unwrap_or_default().into(),
            contact: r.contact.unwrap_or_default().into(),
        }
    }
}

impl From<api::OrderView> for pb::Order {
    fn from(o: api::OrderView) -> Self {
        pb::Order {
            id: o.id,
            customer_id: o.customer_id,
            status: o.status,
            currency: o.currency,
            items: o
                .items
                .into_iter()
                .map(|i| pb::OrderItem {
                    sku: i.sku,
                    quantity: i.quantity,
                    unit_price: Some(i.unit_price.into()),
                    line_total: Some(i.line_total.into()),
                })
                .collect(),
            total: Some(o.total.into()),
            shipping_address: o.shipping_address.map(Into::into),
            contact: o.contact.map(Into::into),
            created_at: o.created_at,
            updated_at: o.updated_at,
            trace_id: o.trace_id,
            shipments: o
                .shipments
                .into_iter()
                .map(|s| pb::Shipment {
                    id: s.id,
                    warehouse: s.warehouse,
                    status: s.status,
                    carrier: s.carrier,
                    pickup_slot: s.pickup_slot,
                })
                .collect(),
        }
    }
}

impl From<pb::ListOrdersRequest> for api::ListOrdersQuery {
    fn from(r: pb::ListOrdersRequest) -> Self {
        api::ListOrdersQuery {
            customer_id: r.customer_id,
            status: r.status,
            limit: r.limit,
            cursor: r.cursor,
        }
    }
}

impl From<api::OrderPage> for pb::OrderPage {
    fn from(p: api::OrderPage) -> Self {
        pb::OrderPage {
            orders: p.orders.into_iter().map(Into::into).collect(),
            next_cursor: p.next_cursor,
        }
    }
}

impl From<api::TimelineView> for pb::Timeline {
    fn from(t: api::TimelineView) -> Self {
        pb::Timeline {
            events: t
                .events
                .into_iter()
                .map(|e| pb::TimelineEvent {
                    at: e.at,
                    r#type: e.kind,
                    detail: e.detail,
                    trace_id: e.trace_id,
                    span_id: e.span_id,
                })
                .collect(),
        }
    }
}

impl From<api::PaymentView> for pb::Payment {
    fn from(p: api::PaymentView) -> Self {
        pb::Payment {
            id: p.id,
            order_id: p.order_id,
            provider: p.provider,
            status: p.status,
            amount: Some(p.amount.into()),
        }
    }
}

impl From<api::PaymentList> for pb::PaymentList {
    fn from(l: api::PaymentList) -> Self {
        pb::PaymentList {
            payments: l.payments.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<api::PaymentCallbackAck> for pb::PaymentCallbackAck {
    fn from(a: api::PaymentCallbackAck) -> Self {
        pb::PaymentCallbackAck {
            event_id: a.event_id,
            outcome: a.outcome,
        }
    }
}

// ---- the other way: answers of a remote role back to the API shapes, and API inputs to
// requests (the client side of a split deployment) ----

impl From<pb::Product> for api::ProductView {
    fn from(p: pb::Product) -> Self {
        api::ProductView {
            sku: p.sku,
            name: p.name,
            price: money(p.price),
        }
    }
}

impl From<pb::Warehouse> for api::WarehouseView {
    fn from(w: pb::Warehouse) -> Self {
        api::WarehouseView {
            id: w.id,
            country: w.country,
        }
    }
}

impl From<pb::StockEntry> for api::StockEntryView {
    fn from(s: pb::StockEntry) -> Self {
        api::StockEntryView {
            sku: s.sku,
            warehouse: s.warehouse,
            on_hand: s.on_hand,
            reserved: s.reserved,
            available: s.available,
        }
    }
}

impl From<pb::Stock> for api::StockView {
    fn from(s: pb::Stock) -> Self {
        api::StockView {
            sku: s.sku,
            warehouses: s
                .warehouses
                .into_iter()
                .map(|w| api::WarehouseStockView {
                    warehouse: w.warehouse,
                    on_hand: w.on_hand,
                    reserved: w.reserved,
                    available: w.available,
                })
                .collect(),
            available: s.available,
        }
    }
}

impl From<api::CreateOrderInput> for pb::CreateOrderRequest {
    fn from(i: api::CreateOrderInput) -> Self {
        pb::CreateOrderRequest {
            customer_id: i.customer_id,
            currency: i.currency,
            items: i.items.into_iter().map(pb::OrderItemInput::from).collect(),
            shipping_address: Some(i.shipping_address.into()),
            contact: Some(i.contact.into()),
        }
    }
}

impl From<pb::Order> for api::OrderView {
    fn from(o: pb::Order) -> Self {
        api::OrderView {
            id: o.id,
            customer_id: o.customer_id,
            status: o.status,
            currency: o.currency,
            items: o
                .items
                .into_iter()
                .map(|i| api::OrderItemView {
                    sku: i.sku,
                    quantity: i.quantity,
                    unit_price: money(i.unit_price),
                    line_total: money(i.line_total),
                })
                .collect(),
            total: money(o.total),
            shipping_address: o.shipping_address.map(Into::into),
            contact: o.contact.map(Into::into),
            created_at: o.created_at,
            updated_at: o.updated_at,
            trace_id: o.trace_id,
            shipments: o
                .shipments
                .into_iter()
                .map(|s| api::ShipmentView {
                    id: s.id,
                    warehouse: s.warehouse,
                    status: s.status,
                    carrier: s.carrier,
                    pickup_slot: s.pickup_slot,
                })
                .collect(),
        }
    }
}

impl From<api::ListOrdersQuery> for pb::ListOrdersRequest {
    fn from(q: api::ListOrdersQuery) -> Self {
        pb::ListOrdersRequest {
            customer_id: q.customer_id,
            status: q.status,
            limit: q.limit,
            cursor: q.cursor,
        }
    }
}

impl From<pb::OrderPage> for api::OrderPage {
    fn from(p: pb::OrderPage) -> Self {
        api::OrderPage {
            orders: p.orders.into_iter().map(Into::into).collect(),
            next_cursor: p.next_cursor,
        }
    }
}

impl From<pb::Timeline> for api::TimelineView {
    fn from(t: pb::Timeline) -> Self {
        api::TimelineView {
            events: t
                .events
                .into_iter()
                .map(|e| api::TimelineEventView {
                    at: e.at,
                    kind: e.r#type,
                    detail: e.detail,
                    trace_id: e.trace_id,
                    span_id: e.span_id,
                })
                .collect(),
        }
    }
}

impl From<pb::Payment> for api::PaymentView {
    fn from(p: pb::Payment) -> Self {
        api::PaymentView {
            id: p.id,
            order_id: p.order_id,
            provider: p.provider,
            status: p.status,
            amount: money(p.amount),
        }
    }
}

impl From<pb::PaymentList> for api::PaymentList {
    fn from(l: pb::PaymentList) -> Self {
        api::PaymentList {
            payments: l.payments.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<pb::PaymentCallbackAck> for api::PaymentCallbackAck {
    fn from(a: pb::PaymentCallbackAck) -> Self {
        api::PaymentCallbackAck {
            event_id: a.event_id,
            outcome: a.outcome,
        }
    }
}

// ---- POS terminals ----

impl From<pb::PosBatchRequest> for api::PosBatchInput {
    fn from(r: pb::PosBatchRequest) -> Self {
        api::PosBatchInput {
            terminal_id: r.terminal_id,
            warehouse: r.warehouse,
            batch_seq: r.batch_seq,
            sales: r
                .sales
                .into_iter()
                .map(|s| {
                    let payment = s.payment.unwrap_or_default();
                    api::PosSaleInput {
                        client_sale_id: s.client_sale_id,
                        sold_at: s.sold_at,
                        customer_id: s.customer_id,
                        currency: s.currency,
                        items: s.items.into_iter().map(api::OrderItemInput::from).collect(),
                        payment: api::PosPaymentInput {
                            method: payment.method,
                            amount: money(payment.amount),
                        },
                    }
                })
                .collect(),
        }
    }
}

impl From<api::PosBatchInput> for pb::PosBatchRequest {
    fn from(b: api::PosBatchInput) -> Self {
        pb::PosBatchRequest {
            terminal_id: b.terminal_id,
            warehouse: b.warehouse,
            batch_seq: b.batch_seq,
            sales: b
                .sales
                .into_iter()
                .map(|s| pb::PosSale {
                    client_sale_id: s.client_sale_id,
                    sold_at: s.sold_at,
                    customer_id: s.customer_id,
                    currency: s.currency,
                    items: s.items.into_iter().map(pb::OrderItemInput::from).collect(),
                    payment: Some(pb::PosPayment {
                        method: s.payment.method,
                        amount: Some(s.payment.amount.into()),
                    }),
                })
                .collect(),
        }
    }
}

impl From<api::PosBatchView> for pb::PosBatchResult {
    fn from(v: api::PosBatchView) -> Self {
        pb::PosBatchResult {
            terminal_id: v.terminal_id,
            batch_seq: v.batch_seq,
            results: v
                .results
                .into_iter()
                .map(|r| pb::PosSaleResult {
                    client_sale_id: r.client_sale_id,
                    outcome: r.outcome,
                    order_id: r.order_id,
                    stock_deficit: r
                        .stock_deficit
                        .into_iter()
                        .map(|d| pb::StockDeficit {
                            sku: d.sku,
                            quantity: d.quantity,
                        })
                        .collect(),
                    price_difference: r.price_difference.map(|m| pb::Money {
                        amount_minor: m.amount_minor,
                        currency: m.currency,
                    }),
                    error: r.error.map(|e| pb::PosSaleError {
                        code: e.code,
                        message: e.message,
                    }),
                })
                .collect(),
            missing_batch_seqs: v.missing_batch_seqs,
        }
    }
}

impl From<pb::PosBatchResult> for api::PosBatchView {
    fn from(r: pb::PosBatchResult) -> Self {
        api::PosBatchView {
            terminal_id: r.terminal_id,
            batch_seq: r.batch_seq,
            results: r
                .results
                .into_iter()
                .map(|r| api::PosSaleResultView {
                    client_sale_id: r.client_sale_id,
                    outcome: r.outcome,
                    order_id: r.order_id,
                    stock_deficit: r
                        .stock_deficit
                        .into_iter()
                        .map(|d| api::StockDeficitView {
                            sku: d.sku,
                            quantity: d.quantity,
                        })
                        .collect(),
                    price_difference: r.price_difference.map(|m| api::MoneyDifferenceDto {
                        amount_minor: m.amount_minor,
                        currency: m.currency,
                    }),
                    error: r.error.map(|e| api::PosSaleErrorView {
                        code: e.code,
                        message: e.message,
                    }),
                })
                .collect(),
            missing_batch_seqs: r.missing_batch_seqs,
        }
    }
}

// ---- customers ----

impl From<api::ErasureView> for pb::Erasure {
    fn from(v: api::ErasureView) -> Self {
        pb::Erasure {
            customer_id: v.customer_id,
            orders_erased: v.orders_erased,
            orders_pending: v.orders_pending,
            erased_at: v.erased_at,
        }
    }
}

impl From<pb::Erasure> for api::ErasureView {
    fn from(e: pb::Erasure) -> Self {
        api::ErasureView {
            customer_id: e.customer_id,
            orders_erased: e.orders_erased,
            orders_pending: e.orders_pending,
            erased_at: e.erased_at,
        }
    }
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

//! The orders face: creation (idempotent, reserving stock atomically), reads, listing,
//! cancellation and the timeline here; a POS terminal's offline sales in `pos`, the erasure of
//! a customer's personal data in `erasure` (both become or change orders, so the orders role
//! owns them).

mod erasure;
mod pos;

pub use pos::CheckedSale;

use crate::api::{
    AddressDto, ContactDto, CreateOrderInput, ErasureView, ListOrdersQuery, MoneyDto,
    OrderItemInput, OrderItemView, OrderPage, OrderView, PosBatchInput, PosBatchView, ShipmentView,
    TimelineEventView, TimelineView,
};
use crate::events::{self, OutboxPayload};
use crate::ports::{CatalogApi, OrdersApi};
use crate::{Shared, rfc3339, step_ids};
use async_trait::async_trait;
use ordo_domain::ids::{CustomerId, OrderId, Sku};
use ordo_domain::money::Currency;
use ordo_domain::money::Money;
use ordo_domain::order::{
    Contact, NewOrder, OrderEvent, OrderStatus, PricedLine, ShippingAddress, price_lines,
};
use ordo_domain::stock::{Allocation, Quantity, StockLevel, allocate};
use ordo_domain::timeline::TimelineKind;
use ordo_domain::{Error, Result};
use ordo_storage::now_ms;
use ordo_storage::placement::{OrderPlacement, Placement};
use ordo_storage::records::{OrderFilter, OrderItemRecord, OrderRecord};
use ordo_telemetry::metrics;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::field;

/// The outcome of a create: the order, and whether it is an earlier request's result replayed
/// for the same idempotency key.
pub struct Created {
    pub order: OrderView,
    pub replayed: bool,
}

/// The largest page `GET /v1/orders` returns (`limit`).
pub const MAX_PAGE: i64 = 100;
const DEFAULT_PAGE: i64 = 20;
/// The longest `Idempotency-Key`; its characters are visible ASCII
/// ([`ordo_domain::payment::VISIBLE_ASCII_PATTERN`]).
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;

impl CreateOrderInput {
    /// Validates every field into a [`NewOrder`]; the first violation is the error.
    pub fn parse(&self) -> Result<NewOrder> {
        let customer_id = CustomerId::parse(&self.customer_id)?;
        let currency = Currency::parse(&self.currency)?;
        let lines = parse_lines(&self.items)?;
        let a = &self.shipping_address;
        let shipping_address = ShippingAddress::parse(
            a.name.expose(),
            a.line1.expose(),
            a.city.expose(),
            a.postal_code.expose(),
            &a.country,
        )?;
        let contact = Contact::parse(
            self.contact.email.expose(),
            self.contact.phone.as_ref().map(|p| p.expose().as_str()),
        )?;
        NewOrder::new(customer_id, currency, lines, shipping_address, contact)
    }

    /// A digest of the request, to tell "the same request again" from "another request
    /// reusing the key".
    fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }
}

/// An idempotency key: 1 to 255 visible ASCII characters.
fn parse_idempotency_key(raw: &str) -> Result<&str> {
    let valid = !raw.is_empty()
        && raw.len() <= IDEMPOTENCY_KEY_MAX_CHARS
        && raw.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(raw)
    } else {
        Err(Error::invalid_field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ))
    }
}

impl ListOrdersQuery {
    /// Validates a listing query into the storage filter and the page size. The filter asks
    /// for one more order than the page holds: that one tells whether another page follows.
    /// The cursor must be an order id this service generated (a `next_cursor` it issued).
    pub fn parse(&self) -> Result<(OrderFilter, usize)> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::invalid_field(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        let filter = OrderFilter {
            customer_id: self
                .customer_id
                .as_deref()
                .map(CustomerId::parse)
                .transpose()?
                .map(CustomerId::into_string),
            status: self.status.as_deref().map(OrderStatus::parse).transpose()?,
            before_id: self
                .cursor
                .as_deref()
                .map(|c| {
                    OrderId::parse_generated(c)
                        .map_err(|_| Error::invalid_field("cursor", "is not a cursor of this API"))
                })
                .transpose()?
                .map(OrderId::into_string),
            limit: limit as u32 + 1,
        };
        Ok((filter, limit as usize))
    }
}

/// Why an order is cancelled: it decides the timeline detail and the event's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelCause {
    /// `POST /v1/orders/{id}/cancel`.
    Request,
    /// The payment-timeout job: unpaid for too long.
    PaymentTimeout,
}

impl CancelCause {
    fn reason(self) -> &'static str {
        match self {
            CancelCause::Request => "requested",
            CancelCause::PaymentTimeout => "payment_timed_out",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            CancelCause::Request => "cancelled by request; reserved stock released",
            CancelCause::PaymentTimeout => "payment timed out; reserved stock released",
        }
    }
}

/// The SKU and quantity of each line, checked; errors name the line (`items[i]`).
pub(crate) fn parse_lines(items: &[OrderItemInput]) -> Result<Vec<(Sku, Quantity)>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            Ok((
                Sku::parse(&item.sku).map_err(|e| e.in_field(&format!("items[{i}]")))?,
                Quantity::new(item.quantity).map_err(|e| e.in_field(&format!("items[{i}]")))?,
            ))
        })
        .collect()
}

/// The stored lines of an order priced by `price_lines`.
pub(crate) fn item_records(priced: &[PricedLine]) -> Vec<OrderItemRecord> {
    priced
        .iter()
        .map(|line| OrderItemRecord {
            sku: line.sku.as_str().to_owned(),
            quantity: i64::from(line.quantity.get()),
            unit_price_minor: line.unit_price.amount_minor(),
            line_total_minor: line.line_total.amount_minor(),
        })
        .collect()
}

pub(crate) fn new_order_id() -> OrderId {
    OrderId::from_u128(uuid::Uuid::now_v7().as_u128())
}

/// The orders face (the `orders` role). Cheap to clone.
#[derive(Clone)]
pub struct Orders {
    shared: Shared,
    /// How old (hours) a POS terminal's sale may be when its batch arrives.
    pos_offline_window_hours: u64,
    /// Where order prices come from when the `inventory` role runs in another process; `None`:
    /// this database, read inside the order's transaction.
    price_source: Option<Arc<dyn CatalogApi>>,
}

#[async_trait]
impl OrdersApi for Orders {
    /// Creates an order and reserves all its items, or nothing.
    ///
    /// With an idempotency key, a request repeating an earlier one returns that order and
    /// reserves nothing more; a different request with the same key is a `conflict`.
    #[tracing::instrument(name = "create_order", skip_all,
        fields(order.id = field::Empty, order.item_count = input.items.len() as i64))]
    async fn create_order(
        &self,
        idempotency_key: Option<&str>,
        input: CreateOrderInput,
    ) -> Result<Created> {
        let result = self.try_create_order(idempotency_key, input).await;
        if let Err(error) = &result {
            metrics::count_order_rejected(error.kind.code());
        }
        result
    }

    /// The hottest read, through the order cache (`storage::cache`): no span of its own
    /// (one would only wrap the database span below it, or nothing on a hit); the order id goes
    /// on the caller's span (the SERVER span of a read).
    async fn order(&self, id: &str) -> Result<OrderView> {
        Ok(self.order_derived(id).await?.0.clone())
    }

    /// [`OrdersApi::order`] as the JSON the REST API answers, encoded once per cached snapshot:
    /// a cached read costs a reference count, not an encoding.
    async fn order_json(&self, id: &str) -> Result<bytes::Bytes> {
        Ok(self.order_derived(id).await?.1.clone())
    }

    #[tracing::instrument(name = "list_orders", skip_all)]
    async fn orders(&self, query: ListOrdersQuery) -> Result<OrderPage> {
        let (filter, limit) = query.parse()?;
        let mut records = self.shared.db.orders(&filter).await?;
        let more = records.len() > limit;
        records.truncate(limit);
        let next_cursor = more.then(|| records.last().map(|r| r.id.clone())).flatten();
        Ok(OrderPage {
            orders: records.into_iter().map(view).collect::<Result<_>>()?,
            next_cursor,
        })
    }

    /// Cancels an unpaid order and releases its stock. Cancelling a cancelled order again
    /// changes nothing and succeeds; any other status is a `conflict`.
    #[tracing::instrument(name = "cancel_order", skip_all, fields(order.id = %id))]
    async fn cancel_order(&self, id: &str) -> Result<OrderView> {
        let id = OrderId::parse(id)?;
        let (record, _cancelled_now) = self.cancel_unpaid(&id, CancelCause::Request).await?;
        view(record)
    }

    #[tracing::instrument(name = "order_timeline", skip_all, fields(order.id = %id))]
    async fn timeline(&self, id: &str) -> Result<TimelineView> {
        let id = OrderId::parse(id)?;
        let events = self.shared.db.timeline(id.as_str()).await?;
        if events.is_empty() && self.shared.db.order(id.as_str()).await?.is_none() {
            return Err(Error::not_found(format!("order {id}")));
        }
        Ok(TimelineView {
            events: events
                .into_iter()
                .map(|e| TimelineEventView {
                    at: rfc3339(e.at_ms),
                    kind: e.kind.as_str().to_owned(),
                    detail: e.detail,
                    trace_id: e.trace_id,
                    span_id: e.span_id,
                })
                .collect(),
        })
    }

    /// A POS terminal's batch of offline sales (`pos.rs`).
    async fn submit_pos_batch(&self, input: PosBatchInput) -> Result<PosBatchView> {
        self.record_pos_batch(input).await
    }

    /// Erases a customer's personal data (`erasure.rs`).
    async fn erase_customer(&self, customer_id: &str) -> Result<ErasureView> {
        self.erase_personal_data(customer_id).await
    }

    async fn ready(&self) -> Result<()> {
        self.shared.ready().await
    }
}

impl Orders {
    pub(crate) fn new(shared: Shared, pos_offline_window_hours: u64) -> Orders {
        Orders {
            shared,
            pos_offline_window_hours,
            price_source: None,
        }
    }

    /// Prices orders with the products of `catalog` (the `inventory` role in another
    /// process), read before the order's transaction begins, so no write waits on a network
    /// call.
    pub(crate) fn with_price_source(self, catalog: Arc<dyn CatalogApi>) -> Orders {
        Orders {
            price_source: Some(catalog),
            ..self
        }
    }

    async fn try_create_order(
        &self,
        idempotency_key: Option<&str>,
        input: CreateOrderInput,
    ) -> Result<Created> {
        let new_order = input.parse()?;
        let key = idempotency_key.map(parse_idempotency_key).transpose()?;
        let digest = key.map(|_| input.digest());
        let order_id = new_order_id();
        let mut skus: Vec<&Sku> = new_order.lines.iter().map(|(sku, _)| sku).collect();
        skus.sort();
        skus.dedup();
        let remote_prices = match &self.price_source {
            Some(catalog) => Some(remote_prices(catalog.as_ref(), &skus).await?),
            None => None,
        };
        let idempotency = key.zip(digest.as_deref());

        // Optimistic: decide from a read, write only if the stock still fits (the write checks
        // it atomically); a concurrent reservation in between means reading again.
        for _ in 0..PLACEMENT_ATTEMPTS {
            let inputs = self.shared.db.order_inputs(&skus).await?;
            let prices = remote_prices.as_ref().unwrap_or(&inputs.prices);
            let placement = match decide(&new_order, &order_id, prices, &inputs.stock) {
                Ok(decision) => decision,
                // A refused order may still be a replay of an accepted one: the key decides.
                Err(error) => {
                    if let Some((key, digest)) = idempotency
                        && let Some((request_hash, earlier)) =
                            self.shared.db.idempotency_key(key).await?
                    {
                        return self.replay(digest, &request_hash, &earlier).await;
                    }
                    return Err(error);
                }
            };
            let (record, allocations, total, timeline_detail) = placement;
            let created = events::OrderCreated {
                order_id: record.id.clone(),
                customer_id: record.customer_id.clone(),
                total: events::Amount {
                    amount_minor: total.amount_minor(),
                    currency: record.currency.clone(),
                },
                reservations: allocations
                    .iter()
                    .map(|a| events::Reservation {
                        sku: a.sku.as_str().to_owned(),
                        warehouse: a.warehouse.as_str().to_owned(),
                        quantity: a.quantity,
                    })
                    .collect(),
            };
            let event = ordo_outbox::outbox_event(
                created.topic(),
                &record.id,
                &created,
                record.created_at_ms,
            )?;
            let placement = OrderPlacement {
                order: record,
                idempotency: idempotency.map(|(k, d)| (k.to_owned(), d.to_owned())),
                allocations,
                timeline_detail,
                event,
            };
            match self.shared.db.place_order(placement.clone()).await? {
                Placement::Placed => {
                    let record = placement.order;
                    tracing::Span::current().record("order.id", record.id.as_str());
                    self.shared.wakeup.wake();
                    metrics::count_order_created();
                    tracing::info!(order.id = %record.id, "order created");
                    return Ok(Created {
                        order: view(record)?,
                        replayed: false,
                    });
                }
                Placement::KeyTaken {
                    request_hash,
                    order_id,
                } => {
                    let digest = digest.as_deref().unwrap_or_default();
                    return self.replay(digest, &request_hash, &order_id).await;
                }
                Placement::StockChanged => continue,
            }
        }
        Err(Error::unavailable(
            "the stock of this order kept changing while it was placed; retry",
        ))
    }

    /// The answer to a request whose idempotency key an earlier request holds: that request's
    /// order if the two are the same request, `conflict` otherwise.
    async fn replay(&self, digest: &str, request_hash: &str, order_id: &str) -> Result<Created> {
        if request_hash != digest {
            return Err(Error::conflict(
                "the Idempotency-Key was already used with a different request",
            ));
        }
        tracing::Span::current().record("order.id", order_id);
        let order = self.order(order_id).await?;
        Ok(Created {
            order,
            replayed: true,
        })
    }

    /// The view of order `id` and its JSON, derived once per cached snapshot.
    async fn order_derived(&self, id: &str) -> Result<Arc<(OrderView, bytes::Bytes)>> {
        let id = OrderId::parse(id)?;
        tracing::Span::current().record("order.id", id.as_str());
        let Some(snapshot) = self.shared.db.order_snapshot(id.as_str()).await? else {
            return Err(Error::not_found(format!("order {id}")));
        };
        snapshot.derived(|snapshot| {
            let mut order = view(snapshot.order.clone())?;
            order.shipments = snapshot
                .shipments
                .iter()
                .map(|s| ShipmentView {
                    id: s.id.clone(),
                    warehouse: s.warehouse.clone(),
                    status: s.status.as_str().to_owned(),
                    carrier: s.carrier.clone(),
                    pickup_slot: s.pickup_slot_ms.map(rfc3339),
                })
                .collect();
            let json = serde_json::to_vec(&order)
                .map_err(|e| Error::internal(format!("cannot encode an order: {e}")))?;
            Ok(Arc::new((order, bytes::Bytes::from(json))))
        })
    }

    /// The one cancel transaction, shared by a customer's request and the payment-timeout job:
    /// the conditional status change, the stock release, the timeline entry and the event
    /// commit together. Returns the order and whether this call cancelled it (`false`: it was
    /// cancelled already, which is not an error); any status past payment is a `conflict`.
    pub(crate) async fn cancel_unpaid(
        &self,
        id: &OrderId,
        cause: CancelCause,
    ) -> Result<(OrderRecord, bool)> {
        let mut tx = self.shared.db.begin().await?;
        let Some(mut record) = tx.order_for_update(id.as_str()).await? else {
            return Err(Error::not_found(format!("order {id}")));
        };
        let status = record.status;
        if status == OrderStatus::Cancelled {
            return Ok((record, false));
        }
        let next = status.apply(OrderEvent::Cancel)?;
        let now = now_ms();
        if !tx.set_status(id.as_str(), status, next, now).await? {
            return Err(Error::conflict(format!("order {id} changed concurrently")));
        }
        tx.release_reservations(id.as_str(), now).await?;
        crate::timeline_at(
            &mut tx,
            id.as_str(),
            TimelineKind::OrderCancelled,
            cause.detail(),
            now,
        )
        .await?;
        let cancelled = events::OrderCancelled {
            order_id: id.as_str().to_owned(),
            reason: cause.reason().to_owned(),
        };
        events::append(&mut tx, &cancelled, now).await?;
        tx.commit().await?;
        self.shared.wakeup.wake();
        metrics::count_order_cancelled();
        tracing::info!(order.id = %id, cause = cause.reason(), "order cancelled");
        record.status = next;
        record.updated_at_ms = now;
        Ok((record, true))
    }
}

/// How often a creation reads and decides again when the stock changed under it.
const PLACEMENT_ATTEMPTS: usize = 8;

/// Prices and allocates `new_order` from a read: the order's row, its allocations, its total
/// and the detail of its `order_created` timeline entry.
fn decide(
    new_order: &NewOrder,
    order_id: &OrderId,
    prices: &HashMap<Sku, Money>,
    stock: &HashMap<Sku, Vec<StockLevel>>,
) -> Result<(OrderRecord, Vec<Allocation>, Money, String)> {
    let (priced, total) = price_lines(new_order.currency, &new_order.lines, |sku| {
        prices.get(sku).copied()
    })?;
    let allocations = allocate(
        &new_order.lines,
        stock,
        &new_order.shipping_address.country(),
    )?;
    let now = now_ms();
    let ids = step_ids();
    let record = OrderRecord {
        id: order_id.as_str().to_owned(),
        customer_id: new_order.customer_id.as_str().to_owned(),
        status: OrderStatus::PendingPayment,
        currency: new_order.currency.to_string(),
        total_minor: total.amount_minor(),
        shipping_address: to_json(&new_order.shipping_address)?,
        contact: to_json(&new_order.contact)?,
        created_at_ms: now,
        updated_at_ms: now,
        trace_id: ids.trace_id,
        span_id: ids.span_id,
        items: item_records(&priced),
    };
    let mut warehouses: Vec<_> = allocations.iter().map(|a| &a.warehouse).collect();
    warehouses.sort();
    warehouses.dedup();
    let detail = format!(
        "order created: {} line(s), {} reserved in {} warehouse(s), total {total}",
        priced.len(),
        allocations.iter().map(|a| a.quantity).sum::<i64>(),
        warehouses.len()
    );
    Ok((record, allocations, total, detail))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::internal(format!("cannot encode: {e}")))
}

pub(crate) fn view(record: OrderRecord) -> Result<OrderView> {
    // A POS sale stores `null` for both.
    let shipping_address: Option<AddressDto> = serde_json::from_str(&record.shipping_address)
        .map_err(|_| Error::internal("a stored shipping address is not valid"))?;
    let contact: Option<ContactDto> = serde_json::from_str(&record.contact)
        .map_err(|_| Error::internal("a stored contact is not valid"))?;
    let currency = record.currency;
    Ok(OrderView {
        items: record
            .items
            .into_iter()
            .map(|item| OrderItemView {
                unit_price: MoneyDto::from_parts(item.unit_price_minor, &currency),
                line_total: MoneyDto::from_parts(item.line_total_minor, &currency),
                sku: item.sku,
                quantity: item.quantity,
            })
            .collect(),
        total: MoneyDto::from_parts(record.total_minor, &currency),
        id: record.id,
        customer_id: record.customer_id,
        status: record.status.as_str().to_owned(),
        currency,
        shipping_address,
        contact,
        created_at: rfc3339(record.created_at_ms),
        updated_at: rfc3339(record.updated_at_ms),
        trace_id: record.trace_id,
        shipments: Vec::new(),
    })
}

/// The prices of `skus` from another process's catalogue, fetched concurrently. An unknown SKU
/// is left out, so pricing refuses it exactly as with a local catalogue.
async fn remote_prices(
    catalog: &dyn CatalogApi,
    skus: &[&Sku],
) -> Result<std::collections::HashMap<Sku, ordo_domain::money::Money>> {
    let lookups = skus.iter().map(|sku| async move {
        match catalog.product(sku.as_str()).await {
            Ok(product) => Ok(Some(((*sku).clone(), product.price.parse("price")?))),
            Err(error) if error.kind == ordo_domain::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    });
    let found = futures::future::try_join_all(lookups).await?;
    Ok(found.into_iter().flatten().collect())
}

-- The fulfillment pipeline: one shipment per (order, warehouse), its items, and refunds.
-- Times are Unix milliseconds (BIGINT), as everywhere.

CREATE TABLE shipments (
    id            TEXT PRIMARY KEY,
    order_id      TEXT NOT NULL REFERENCES orders (id),
    warehouse     TEXT NOT NULL REFERENCES warehouses (id),
    status        TEXT NOT NULL CHECK (status IN ('pending', 'scheduled', 'pushing', 'accepted',
                      'failed')),
    carrier       TEXT,
    pickup_slot_ms BIGINT,
    -- Pushes to the carrier so far (each claim of the shipment counts one).
    attempts      BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (order_id, warehouse)
);

CREATE TABLE shipment_items (
    shipment_id TEXT NOT NULL REFERENCES shipments (id),
    sku         TEXT NOT NULL,
    quantity    BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (shipment_id, sku)
);

-- Refunds (compensations): a payment may now be refunded (sandbox, at once) or have a refund
-- requested from its provider (webhook).
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt. Its child
-- payment_events is set aside first and rebuilt after, so that no foreign key is ever dangling
-- (dropping a parent that still has children fails with foreign keys on).
CREATE TABLE payment_events_saved AS SELECT * FROM payment_events;
DROP TABLE payment_events;
CREATE TABLE payments_new (
    id            TEXT PRIMARY KEY,
    order_id      TEXT NOT NULL REFERENCES orders (id),
    provider      TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed',
                      'refund_requested', 'refunded')),
    amount_minor  BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency      TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    trace_id      TEXT NOT NULL,
    span_id       TEXT NOT NULL
);
INSERT INTO payments_new SELECT id, order_id, provider, status, amount_minor, currency,
    created_at_ms, updated_at_ms, trace_id, span_id FROM payments;
DROP TABLE payments;
ALTER TABLE payments_new RENAME TO payments;
CREATE INDEX payments_by_order ON payments (order_id, id);
CREATE UNIQUE INDEX payments_one_pending_per_order ON payments (order_id) WHERE status = 'pending';
CREATE TABLE payment_events (
    provider       TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    payment_id     TEXT NOT NULL REFERENCES payments (id),
    status         TEXT NOT NULL CHECK (status IN ('succeeded', 'failed')),
    amount_minor   BIGINT NOT NULL,
    currency       TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (provider, event_id)
);
INSERT INTO payment_events SELECT provider, event_id, payment_id, status, amount_minor, currency,
    outcome, received_at_ms FROM payment_events_saved;
DROP TABLE payment_events_saved;

-- The risk velocity rule counts a customer's recent payments.
CREATE INDEX orders_by_customer_time ON orders (customer_id, updated_at_ms);

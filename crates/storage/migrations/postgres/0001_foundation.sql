-- Catalogue, stock, orders, reservations, timeline and idempotency keys.
-- Times are Unix milliseconds (BIGINT) so that SQLite and PostgreSQL share one row shape.

CREATE TABLE products (
    sku           TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    price_minor   BIGINT NOT NULL CHECK (price_minor >= 0),
    currency      TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE warehouses (
    id            TEXT PRIMARY KEY,
    country       TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Invariant enforced by the database itself: never more reserved than on hand.
CREATE TABLE stock (
    sku           TEXT NOT NULL REFERENCES products (sku),
    warehouse     TEXT NOT NULL REFERENCES warehouses (id),
    on_hand       BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved      BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (sku, warehouse)
);

CREATE TABLE orders (
    id               TEXT PRIMARY KEY,
    customer_id      TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending_payment', 'paid', 'risk_approved',
                         'split', 'scheduled', 'shipped', 'cancelled', 'rejected',
                         'fulfillment_failed')),
    currency         TEXT NOT NULL,
    total_minor      BIGINT NOT NULL CHECK (total_minor >= 0),
    shipping_address TEXT NOT NULL,
    contact          TEXT NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    updated_at_ms    BIGINT NOT NULL,
    trace_id         TEXT NOT NULL,
    span_id          TEXT NOT NULL
);
CREATE INDEX orders_by_customer ON orders (customer_id, id);
CREATE INDEX orders_by_status ON orders (status, id);

CREATE TABLE order_items (
    order_id         TEXT NOT NULL REFERENCES orders (id),
    line_no          BIGINT NOT NULL,
    sku              TEXT NOT NULL,
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_minor BIGINT NOT NULL,
    line_total_minor BIGINT NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE reservations (
    order_id       TEXT NOT NULL REFERENCES orders (id),
    sku            TEXT NOT NULL,
    warehouse      TEXT NOT NULL,
    quantity       BIGINT NOT NULL CHECK (quantity > 0),
    released_at_ms BIGINT,
    PRIMARY KEY (order_id, sku, warehouse),
    FOREIGN KEY (sku, warehouse) REFERENCES stock (sku, warehouse)
);

CREATE TABLE order_events (
    seq      BIGSERIAL PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id),
    at_ms    BIGINT NOT NULL,
    type     TEXT NOT NULL,
    detail   TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    span_id  TEXT NOT NULL
);
CREATE INDEX order_events_by_order ON order_events (order_id, seq);

-- Claimed before the order is written, in the same transaction, so that a concurrent request
-- with the same key waits for this one and then finds its result.
CREATE TABLE idempotency_keys (
    key           TEXT PRIMARY KEY,
    request_hash  TEXT NOT NULL,
    order_id      TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

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
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN ('pending',
    'succeeded', 'failed', 'refund_requested', 'refunded'));

-- The risk velocity rule counts a customer's recent payments.
CREATE INDEX orders_by_customer_time ON orders (customer_id, updated_at_ms);

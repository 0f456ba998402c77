-- Payment intents and the provider callbacks received for them.
-- Times are Unix milliseconds (BIGINT), as everywhere.

CREATE TABLE payments (
    id            TEXT PRIMARY KEY,
    order_id      TEXT NOT NULL REFERENCES orders (id),
    provider      TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    amount_minor  BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency      TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    trace_id      TEXT NOT NULL,
    span_id       TEXT NOT NULL
);
CREATE INDEX payments_by_order ON payments (order_id, id);
-- At most one intent per order awaits its provider.
CREATE UNIQUE INDEX payments_one_pending_per_order ON payments (order_id) WHERE status = 'pending';

-- One row per provider event: a replayed event id finds its row and changes nothing.
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

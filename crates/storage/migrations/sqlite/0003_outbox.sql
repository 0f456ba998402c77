-- The transactional outbox: every event is written in the same transaction as the state change
-- that caused it, with the trace context of the step that wrote it. A relay claims rows with a
-- lease, publishes them, and marks them published only after the transport acknowledged them.

CREATE TABLE outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    topic            TEXT NOT NULL,
    aggregate_id     TEXT NOT NULL,
    payload          TEXT NOT NULL,
    -- JSON object of W3C trace-context fields (traceparent, tracestate, baggage).
    trace_context    TEXT NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    -- A relay owns the row until this time; then another may claim it again.
    claimed_until_ms BIGINT,
    claim_token      TEXT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    published_at_ms  BIGINT,
    dead_at_ms       BIGINT
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE published_at_ms IS NULL AND dead_at_ms IS NULL;

-- What each consumer has done: written in the same transaction as the consumer's effect, so a
-- redelivered event finds its id here and changes nothing.
CREATE TABLE processed_events (
    consumer        TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    processed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

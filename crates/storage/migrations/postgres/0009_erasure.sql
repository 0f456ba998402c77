-- Erasure of a customer's personal data: the request is kept (orders still in fulfillment
-- are erased by themselves once terminal), and each order says when it was erased.
CREATE TABLE customer_erasures (
    customer_id     TEXT PRIMARY KEY,
    requested_at_ms BIGINT NOT NULL
);
ALTER TABLE orders ADD COLUMN personal_data_erased_at_ms BIGINT;

-- The saga watchdog asks, per order sitting in a stage, whether an event for it still waits
-- to be published: answered from the few unpublished rows, not a scan of every event.
CREATE INDEX outbox_unpublished_by_aggregate ON outbox (aggregate_id) WHERE published_at_ms IS NULL;

-- Erasure of a customer's personal data: the request is kept (orders still in fulfillment
-- are erased by themselves once terminal), and each order says when it was erased.
CREATE TABLE customer_erasures (
    customer_id     TEXT PRIMARY KEY,
    requested_at_ms BIGINT NOT NULL
);
ALTER TABLE orders ADD COLUMN personal_data_erased_at_ms BIGINT;

-- Housekeeping that runs all the time must not scan tables that only grow.
-- The relay counts dead letters after every round: an index of those rows alone.
CREATE INDEX outbox_dead ON outbox (seq) WHERE dead_at_ms IS NOT NULL;
-- The payment-timeout sweep looks for the oldest unpaid orders: an index of those alone, by age.
CREATE INDEX orders_unpaid_by_age ON orders (created_at_ms, id) WHERE status = 'pending_payment';

-- ordo_place_orders: places a batch of orders in one statement, so one round trip and one
-- commit serve every order of the batch. Each element of `batch` is an order that ordo priced
-- and allocated from a read of prices and stock:
--   {"key": text|null, "request_hash": text|null,
--    "order": {columns of orders}, "items": [{columns of order_items}],
--    "allocations": [{"sku", "warehouse", "quantity"}],
--    "timeline": {columns of order_events but seq}, "event": {columns of outbox it sets}}
-- No two elements carry the same idempotency key (ordo puts such orders in different batches).
--
-- One row per element, by position (0-based): `placed`; `key_taken` (the idempotency key
-- belongs to an earlier request: its hash and order id are returned, nothing is written); or
-- `stock_changed` (an allocation may no longer fit: nothing is written, ordo reads again).
--
-- Every stock row the batch touches is locked first, in (sku, warehouse) order, so batches of
-- several instances never deadlock and the check below cannot race anyone. The check counts,
-- for each order, what the orders before it in the batch ask of the same row, whether or not
-- they are placed: cautious (an order may be sent back to read again needlessly), never an
-- oversell. The writes are set-based: a handful of statements per batch, not per order.
CREATE FUNCTION ordo_place_orders(batch jsonb)
RETURNS TABLE (pos bigint, outcome text, existing_request_hash text, existing_order_id text)
LANGUAGE plpgsql AS $$
DECLARE
    claimed text[];
    taken bigint[];
    short bigint[];
    placed bigint[];
BEGIN
    PERFORM 1 FROM stock s
    WHERE (s.sku, s.warehouse) IN (
        SELECT a ->> 'sku', a ->> 'warehouse'
        FROM jsonb_array_elements(batch) b, jsonb_array_elements(b -> 'allocations') a)
    ORDER BY s.sku, s.warehouse
    FOR UPDATE;

    -- Idempotency keys: claimed now, or held by an earlier request (a concurrent claim of the
    -- same key waits here for the other transaction).
    WITH inserted AS (
        INSERT INTO idempotency_keys (key, request_hash, order_id, created_at_ms)
        SELECT p ->> 'key', p ->> 'request_hash', p -> 'order' ->> 'id',
               (p -> 'order' ->> 'created_at_ms')::bigint
        FROM jsonb_array_elements(batch) p
        WHERE p ->> 'key' IS NOT NULL
        ON CONFLICT (key) DO NOTHING
        RETURNING key)
    SELECT coalesce(array_agg(key), '{}') INTO claimed FROM inserted;
    SELECT coalesce(array_agg(b.i - 1), '{}') INTO taken
    FROM jsonb_array_elements(batch) WITH ORDINALITY b (p, i)
    WHERE b.p ->> 'key' IS NOT NULL AND NOT (b.p ->> 'key' = ANY (claimed));

    -- Stock: does each allocation fit, after those of the earlier orders of the batch?
    SELECT coalesce(array_agg(DISTINCT x.pos), '{}') INTO short
    FROM (
        SELECT b.i - 1 AS pos, s.on_hand, s.reserved,
               sum(a.quantity) OVER (PARTITION BY a.sku, a.warehouse ORDER BY b.i) AS asked
        FROM jsonb_array_elements(batch) WITH ORDINALITY b (p, i)
        CROSS JOIN jsonb_to_recordset(b.p -> 'allocations')
            AS a (sku text, warehouse text, quantity bigint)
        LEFT JOIN stock s ON s.sku = a.sku AND s.warehouse = a.warehouse
        WHERE NOT (b.i - 1 = ANY (taken))) x
    WHERE x.on_hand IS NULL OR x.reserved + x.asked > x.on_hand;
    DELETE FROM idempotency_keys k
    USING jsonb_array_elements(batch) WITH ORDINALITY b (p, i)
    WHERE b.i - 1 = ANY (short) AND k.key = b.p ->> 'key';

    SELECT coalesce(array_agg(b.i - 1 ORDER BY b.i), '{}') INTO placed
    FROM jsonb_array_elements(batch) WITH ORDINALITY b (p, i)
    WHERE NOT (b.i - 1 = ANY (taken)) AND NOT (b.i - 1 = ANY (short));

    UPDATE stock s SET reserved = s.reserved + t.quantity, updated_at_ms = t.at_ms
    FROM (
        SELECT a.sku, a.warehouse, sum(a.quantity) AS quantity,
               max((b.p -> 'order' ->> 'created_at_ms')::bigint) AS at_ms
        FROM jsonb_array_elements(batch) WITH ORDINALITY b (p, i)
        CROSS JOIN jsonb_to_recordset(b.p -> 'allocations')
            AS a (sku text, warehouse text, quantity bigint)
        WHERE b.i - 1 = ANY (placed)
        GROUP BY a.sku, a.warehouse) t
    WHERE s.sku = t.sku AND s.warehouse = t.warehouse;

    INSERT INTO orders
    SELECT o.*
    FROM jsonb_array_elements(batch) WITH ORDINALITY b (p, i)
    CROSS JOIN jsonb_populate_record(NULL::orders, b.p -> 'order') o
    WHERE b.i - 1 = ANY (placed);
    INSERT INTO order_items
    SELECT r.*
    FROM jsonb_array_elements(batch) WITH ORDINALITY b (p, i)
    CROSS JOIN jsonb_populate_recordset(NULL::order_items, b.p -> 'items') r
    WHERE b.i - 1 = ANY (placed);
    INSERT INTO reservations (order_id, sku, warehouse, quantity)
    SELECT b.p -> 'order' ->> 'id', a.sku, a.warehouse, a.quantity
    FROM jsonb_array_elements(batch) WITH ORDINALITY b (p, i)
    CROSS JOIN jsonb_to_recordset(b.p -> 'allocations')
        AS a (sku text, warehouse text, quantity bigint)
    WHERE b.i - 1 = ANY (placed);
    INSERT INTO order_events (order_id, at_ms, type, detail, trace_id, span_id)
    SELECT e.order_id, e.at_ms, e.type, e.detail, e.trace_id, e.span_id
    FROM jsonb_array_elements(batch) WITH ORDINALITY b (p, i)
    CROSS JOIN jsonb_populate_record(NULL::order_events, b.p -> 'timeline') e
    WHERE b.i - 1 = ANY (placed)
    ORDER BY b.i;
    -- In batch order: the relay publishes by seq.
    INSERT INTO outbox (event_id, topic, aggregate_id, payload, trace_context, created_at_ms)
    SELECT e.event_id, e.topic, e.aggregate_id, e.payload, e.trace_context, e.created_at_ms
    FROM jsonb_array_elements(batch) WITH ORDINALITY b (p, i)
    CROSS JOIN jsonb_populate_record(NULL::outbox, b.p -> 'event') e
    WHERE b.i - 1 = ANY (placed)
    ORDER BY b.i;

    RETURN QUERY
    SELECT b.i - 1,
           CASE WHEN b.i - 1 = ANY (taken) THEN 'key_taken'
                WHEN b.i - 1 = ANY (short) THEN 'stock_changed'
                ELSE 'placed' END,
           k.request_hash, k.order_id
    FROM jsonb_array_elements(batch) WITH ORDINALITY b (p, i)
    LEFT JOIN idempotency_keys k ON b.i - 1 = ANY (taken) AND k.key = b.p ->> 'key'
    ORDER BY b.i;
END
$$;

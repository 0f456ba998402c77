-- ordo_place_orders: places a batch of orders in one statement, so one round trip and one
-- commit serve every order of the batch. Each element of `batch` is an order that ordo priced
-- and allocated from a read of prices and stock:
--   {"key": text|null, "request_hash": text|null,
--    "order": {columns of orders}, "items": [{columns of order_items}],
--    "allocations": [{"sku", "warehouse", "quantity"}],
--    "timeline": {columns of order_events but seq}, "event": {columns of outbox it sets}}
-- One row per element, in order: `placed`; `key_taken` (the idempotency key belongs to an
-- earlier request: its hash and order id are returned, nothing is written); or `stock_changed`
-- (an allocation no longer fits what is on hand: nothing is written, ordo reads again).
--
-- Every stock row the batch touches is locked first, in (sku, warehouse) order, so batches of
-- several instances never deadlock; an order's availability check then cannot race anyone,
-- and one order's shortage never fails the others of its batch.
CREATE FUNCTION ordo_place_orders(batch jsonb)
RETURNS TABLE (outcome text, existing_request_hash text, existing_order_id text)
LANGUAGE plpgsql AS $$
DECLARE
    placement jsonb;
    claimed bigint;
    short boolean;
BEGIN
    PERFORM 1 FROM stock s
    WHERE (s.sku, s.warehouse) IN (
        SELECT a ->> 'sku', a ->> 'warehouse'
        FROM jsonb_array_elements(batch) b, jsonb_array_elements(b -> 'allocations') a)
    ORDER BY s.sku, s.warehouse
    FOR UPDATE;

    FOR placement IN SELECT value FROM jsonb_array_elements(batch) LOOP
        existing_request_hash := NULL;
        existing_order_id := NULL;
        claimed := 0;
        IF placement ->> 'key' IS NOT NULL THEN
            -- A concurrent claim of the same key waits here for the other transaction.
            INSERT INTO idempotency_keys (key, request_hash, order_id, created_at_ms)
            VALUES (placement ->> 'key', placement ->> 'request_hash',
                    placement -> 'order' ->> 'id',
                    (placement -> 'order' ->> 'created_at_ms')::bigint)
            ON CONFLICT (key) DO NOTHING;
            GET DIAGNOSTICS claimed = ROW_COUNT;
            IF claimed = 0 THEN
                SELECT k.request_hash, k.order_id INTO existing_request_hash, existing_order_id
                FROM idempotency_keys k WHERE k.key = placement ->> 'key';
                outcome := 'key_taken';
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;

        SELECT EXISTS (
            SELECT 1 FROM jsonb_to_recordset(placement -> 'allocations')
                AS a (sku text, warehouse text, quantity bigint)
            LEFT JOIN stock s ON s.sku = a.sku AND s.warehouse = a.warehouse
            WHERE s.sku IS NULL OR s.reserved + a.quantity > s.on_hand)
        INTO short;
        IF short THEN
            IF claimed = 1 THEN
                DELETE FROM idempotency_keys WHERE key = placement ->> 'key';
            END IF;
            outcome := 'stock_changed';
            RETURN NEXT;
            CONTINUE;
        END IF;

        INSERT INTO orders SELECT * FROM jsonb_populate_record(NULL::orders, placement -> 'order');
        INSERT INTO order_items
            SELECT * FROM jsonb_populate_recordset(NULL::order_items, placement -> 'items');
        UPDATE stock s SET reserved = s.reserved + a.quantity,
                           updated_at_ms = (placement -> 'order' ->> 'created_at_ms')::bigint
        FROM jsonb_to_recordset(placement -> 'allocations')
            AS a (sku text, warehouse text, quantity bigint)
        WHERE s.sku = a.sku AND s.warehouse = a.warehouse;
        INSERT INTO reservations (order_id, sku, warehouse, quantity)
            SELECT placement -> 'order' ->> 'id', a.sku, a.warehouse, a.quantity
            FROM jsonb_to_recordset(placement -> 'allocations')
                AS a (sku text, warehouse text, quantity bigint);
        INSERT INTO order_events (order_id, at_ms, type, detail, trace_id, span_id)
            SELECT e.order_id, e.at_ms, e.type, e.detail, e.trace_id, e.span_id
            FROM jsonb_populate_record(NULL::order_events, placement -> 'timeline') e;
        INSERT INTO outbox (event_id, topic, aggregate_id, payload, trace_context, created_at_ms)
            SELECT e.event_id, e.topic, e.aggregate_id, e.payload, e.trace_context,
                   e.created_at_ms
            FROM jsonb_populate_record(NULL::outbox, placement -> 'event') e;
        outcome := 'placed';
        RETURN NEXT;
    END LOOP;
END
$$;

-- pgbench script: what ordo sends PostgreSQL for order creation, as it sends it — the read of
-- prices and stock, then one call of ordo_place_orders (migration 0006) for a batch of N
-- single-item orders (pgbench -D batch=N; 1: an order per transaction). orders/s = tps x
-- batch: what PostgreSQL alone can place, the ceiling for ordo's creates.
\set sku random(0, 99)
SELECT p.sku, p.price_minor, p.currency, s.warehouse, w.country, s.on_hand, s.reserved
    FROM products p LEFT JOIN stock s ON s.sku = p.sku LEFT JOIN warehouses w ON w.id = s.warehouse
    WHERE p.sku IN ('BENCH-' || CAST(:sku AS int)) ORDER BY p.sku, s.warehouse;
SELECT count(*) FROM ordo_place_orders((
    SELECT jsonb_agg(jsonb_build_object(
        'key', NULL, 'request_hash', NULL,
        'order', jsonb_build_object('id', o.id, 'customer_id', 'bench-customer',
            'status', 'pending_payment', 'currency', 'USD', 'total_minor', 1999,
            'shipping_address', jsonb_build_object('name', 'Bench Customer', 'line1', '1 Bench Road',
                'city', 'Bangkok', 'postal_code', '10110', 'country', 'TH')::text,
            'contact', jsonb_build_object('email', 'bench@example.com', 'phone', NULL)::text,
            'created_at_ms', 1,
            'updated_at_ms', 1, 'trace_id', '4bf92f3577b34da6a3ce929d0e0e4736',
            'span_id', '00f067aa0ba902b7'),
        'items', jsonb_build_array(jsonb_build_object('order_id', o.id, 'line_no', 0,
            'sku', o.sku, 'quantity', 1, 'unit_price_minor', 1999, 'line_total_minor', 1999)),
        'allocations', jsonb_build_array(jsonb_build_object('sku', o.sku,
            'warehouse', 'bench-wh', 'quantity', 1)),
        'timeline', jsonb_build_object('order_id', o.id, 'at_ms', 1, 'type', 'order_created',
            'detail', 'order created: 1 line(s)', 'trace_id', '4bf92f3577b34da6a3ce929d0e0e4736',
            'span_id', '00f067aa0ba902b7'),
        'event', jsonb_build_object('event_id', 'evt_' || o.id, 'topic', 'order.created',
            'aggregate_id', o.id, 'payload', '{}', 'trace_context', '{}', 'created_at_ms', 1)))
    FROM (SELECT 'pgb_' || md5(random()::text || clock_timestamp()::text || g) AS id,
                 'BENCH-' || floor(random() * 100)::int AS sku
          FROM generate_series(1, CAST(:batch AS int)) g) o));

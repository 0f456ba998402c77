-- pgbench script: the statements ordo runs for one single-item order, in one transaction, as
-- sqlx sends them (prepared, one round trip each). What PostgreSQL alone can commit is the
-- ceiling for order creation on PostgreSQL.
\set sku random(0, 99)
\set customer random(1, 1000)
BEGIN;
SELECT 'pgb_' || md5(random()::text || clock_timestamp()::text) AS oid \gset
SELECT sku, price_minor, currency FROM products WHERE sku IN ('BENCH-' || :sku);
SELECT s.sku, s.warehouse, w.country, s.on_hand, s.reserved FROM stock s JOIN warehouses w ON w.id = s.warehouse WHERE s.sku IN ('BENCH-' || :sku) ORDER BY s.sku, s.warehouse FOR UPDATE OF s;
INSERT INTO orders (id, customer_id, status, currency, total_minor, shipping_address, contact, created_at_ms, updated_at_ms, trace_id, span_id) VALUES (:oid, 'bench-' || :customer, 'pending_payment', 'USD', 1999, json_build_object('name', 'Bench Customer', 'line1', '1 Bench Road', 'city', 'Bangkok', 'postal_code', '10110', 'country', 'TH')::text, json_build_object('email', 'bench@example.com', 'phone', NULL)::text, 1, 1, '4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7');
INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_minor, line_total_minor) VALUES (:oid, 0, 'BENCH-' || :sku, 1, 1999, 1999);
UPDATE stock SET reserved = reserved + 1, updated_at_ms = 1 WHERE sku = 'BENCH-' || :sku AND warehouse = 'bench-wh' AND reserved + 1 <= on_hand;
INSERT INTO reservations (order_id, sku, warehouse, quantity) VALUES (:oid, 'BENCH-' || :sku, 'bench-wh', 1);
INSERT INTO order_events (order_id, at_ms, type, detail, trace_id, span_id) VALUES (:oid, 1, 'order_created', 'order created: 1 line(s)', '4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7');
COMMIT;

-- POS terminals (offline sales synced in batches): a sale is an order in the new terminal
-- status 'completed'.
-- SQLite cannot change a CHECK constraint, and rebuilding `orders` would mean setting aside
-- every table that refers to it. Widening the list of allowed values changes no stored row,
-- so the table's definition is edited in place (SQLite's documented procedure for changes
-- that leave the content valid); the migration runner then bumps the schema version so every
-- connection reads the new definition.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
   SET sql = replace(sql, '''fulfillment_failed''))', '''fulfillment_failed'', ''completed''))')
 WHERE type = 'table' AND name = 'orders';
PRAGMA writable_schema = OFF;

-- Each batch a terminal sent, with the answer it got: a replay (same terminal and batch_seq)
-- gets that answer again, and the gaps in a terminal's sequence are found here.
CREATE TABLE pos_batches (
    terminal_id    TEXT NOT NULL,
    batch_seq      BIGINT NOT NULL CHECK (batch_seq >= 1),
    warehouse      TEXT NOT NULL,
    answer         TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (terminal_id, batch_seq)
);

-- Each sale accepted, once per terminal: the key that makes a sale sent twice a duplicate.
CREATE TABLE pos_sales (
    terminal_id    TEXT NOT NULL,
    client_sale_id TEXT NOT NULL,
    order_id       TEXT NOT NULL,
    batch_seq      BIGINT NOT NULL,
    sold_at_ms     BIGINT NOT NULL,
    PRIMARY KEY (terminal_id, client_sale_id)
);

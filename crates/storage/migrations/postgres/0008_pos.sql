-- POS terminals (offline sales synced in batches): a sale is an order in the new terminal
-- status 'completed'.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN ('pending_payment', 'paid',
    'risk_approved', 'split', 'scheduled', 'shipped', 'cancelled', 'rejected',
    'fulfillment_failed', 'completed'));

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

-- Each sale accepted, once per terminal: the key that makes a sale sent twice a duplicate,
-- even when two uploads of it race. (No foreign key to orders: the sale's row is claimed
-- first, its order written right after in the same transaction.)
CREATE TABLE pos_sales (
    terminal_id    TEXT NOT NULL,
    client_sale_id TEXT NOT NULL,
    order_id       TEXT NOT NULL,
    batch_seq      BIGINT NOT NULL,
    sold_at_ms     BIGINT NOT NULL,
    PRIMARY KEY (terminal_id, client_sale_id)
);

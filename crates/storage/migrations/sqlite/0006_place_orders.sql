-- Nothing to install: on SQLite, ordo places a batch of orders itself, statement by statement
-- on its one writer connection (no round trips to save). PostgreSQL's 0006 installs the
-- function that does the same in one round trip.
SELECT 1;

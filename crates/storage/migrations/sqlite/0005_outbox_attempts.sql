-- The trace context (JSON, like trace_context) of the relay's last failed attempt to publish
-- the row: the next attempt's PRODUCER span links to it, so a retry shows what it retries.
ALTER TABLE outbox ADD COLUMN last_attempt_context TEXT;

-- Dead letters of the in-process relay stay in the outbox: published (out of the queue)
-- with when and why they failed, for an operator to read and replay
-- (UPDATE outbox SET published_at = NULL, failed_at = NULL, error = NULL WHERE id = …).
ALTER TABLE outbox ADD COLUMN failed_at timestamptz;
ALTER TABLE outbox ADD COLUMN error text;

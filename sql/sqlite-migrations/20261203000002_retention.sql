-- Mirrors sql/migrations: the in-process relay's dead letters stay in the outbox.
ALTER TABLE outbox ADD COLUMN failed_at INTEGER;
ALTER TABLE outbox ADD COLUMN error TEXT;

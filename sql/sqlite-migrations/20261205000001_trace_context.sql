-- Mirrors sql/migrations: the writer's W3C traceparent with each event.
ALTER TABLE outbox ADD COLUMN trace_context TEXT;

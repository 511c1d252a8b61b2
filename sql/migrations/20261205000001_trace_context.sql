-- The W3C traceparent of the request that wrote each event, so the relay and the
-- consumers continue its trace; NULL when the writer was not traced.
ALTER TABLE outbox ADD COLUMN trace_context text;

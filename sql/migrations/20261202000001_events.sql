-- Effects of events and idempotent orders.

-- A notification made by an event carries a key unique to (event, recipient, what it
-- says), so an event delivered twice inserts nothing the second time. Seeded and older
-- rows have none (NULLs never collide in a unique index).
ALTER TABLE notifications ADD COLUMN event_key text;
CREATE UNIQUE INDEX notifications_event_key ON notifications (event_key);

-- POST /orders: the first request with a key creates the order; a replay with the same
-- fingerprint (of the validated body) returns it, another body is refused.
CREATE TABLE idempotency_keys (
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key         text        NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    fingerprint text        NOT NULL,
    order_id    bigint      REFERENCES orders (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

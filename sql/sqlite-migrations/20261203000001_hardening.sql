-- Mirrors sql/migrations: the unblock event kind (SQLite changes a CHECK by rebuilding
-- the table) and the index by (user, author) of the timeline.

CREATE TABLE outbox_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL CHECK (kind IN ('post.created', 'post.deleted', 'user.followed',
                                                  'user.unfollowed', 'user.blocked',
                                                  'user.unblocked', 'order.created')),
    payload      TEXT    NOT NULL CHECK (json_valid(payload)),
    created_at   INTEGER NOT NULL,
    published_at INTEGER
) STRICT;
INSERT INTO outbox_new (id, kind, payload, created_at, published_at)
    SELECT id, kind, payload, created_at, published_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE INDEX home_timeline_by_author ON home_timeline (user_id, author_id);

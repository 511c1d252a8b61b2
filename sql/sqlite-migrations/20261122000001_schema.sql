-- quiver schema for the embedded SQLite default. Same tables, columns and constraints as
-- sql/migrations (PostgreSQL); timestamps are integer microseconds since the Unix epoch
-- so they sort and compare exactly.

CREATE TABLE users (
    id           INTEGER PRIMARY KEY,
    handle       TEXT    NOT NULL UNIQUE CHECK (length(handle) BETWEEN 1 AND 30 AND handle NOT GLOB '*[^a-z0-9_]*'),
    display_name TEXT    NOT NULL CHECK (length(display_name) BETWEEN 1 AND 64),
    bio          TEXT    NOT NULL DEFAULT '' CHECK (length(bio) <= 500),
    avatar_url   TEXT    CHECK (length(avatar_url) <= 2048 AND (avatar_url LIKE 'http://%' OR avatar_url LIKE 'https://%')),
    verified     INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1)),
    creator      INTEGER NOT NULL DEFAULT 0 CHECK (creator IN (0, 1)),
    private      INTEGER NOT NULL DEFAULT 0 CHECK (private IN (0, 1)),
    created_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE follows (
    follower_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    followee_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (follower_id, followee_id),
    CHECK (follower_id <> followee_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX follows_by_followee ON follows (followee_id, follower_id);

CREATE TABLE blocks (
    blocker_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blocked_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX blocks_by_blocked ON blocks (blocked_id, blocker_id);

CREATE TABLE posts (
    id          INTEGER PRIMARY KEY,
    author_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL CHECK (kind IN ('post', 'wish')),
    body        TEXT    NOT NULL CHECK (length(body) <= 5000),
    price_cents INTEGER CHECK (price_cents > 0 AND price_cents <= 100000000000),
    currency    TEXT    CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    product_url TEXT    CHECK (length(product_url) <= 2048 AND (product_url LIKE 'http://%' OR product_url LIKE 'https://%')),
    created_at  INTEGER NOT NULL,
    CHECK (
        (kind = 'wish' AND price_cents IS NOT NULL AND currency IS NOT NULL AND product_url IS NOT NULL)
        OR (kind = 'post' AND price_cents IS NULL AND currency IS NULL AND product_url IS NULL)
    )
) STRICT;
CREATE INDEX posts_by_author ON posts (author_id, created_at DESC, id DESC);
CREATE INDEX posts_recent ON posts (created_at DESC, id DESC);

CREATE TABLE media (
    id         INTEGER PRIMARY KEY,
    post_id    INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    kind       TEXT    NOT NULL CHECK (kind IN ('image', 'video')),
    url        TEXT    NOT NULL CHECK (length(url) <= 2048 AND (url LIKE 'http://%' OR url LIKE 'https://%')),
    width      INTEGER NOT NULL CHECK (width BETWEEN 1 AND 16384),
    height     INTEGER NOT NULL CHECK (height BETWEEN 1 AND 16384),
    size_bytes INTEGER NOT NULL CHECK (size_bytes BETWEEN 0 AND 1073741824),
    position   INTEGER NOT NULL CHECK (position BETWEEN 0 AND 15),
    UNIQUE (post_id, position)
) STRICT;

CREATE TABLE post_tags (
    post_id INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    tag     TEXT    NOT NULL CHECK (length(tag) BETWEEN 1 AND 32 AND tag NOT GLOB '*[^a-z0-9_]*'),
    PRIMARY KEY (post_id, tag)
) STRICT, WITHOUT ROWID;

CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status      TEXT    NOT NULL CHECK (status IN ('pending', 'active', 'shipped', 'cancelled')),
    total_cents INTEGER NOT NULL CHECK (total_cents >= 0),
    currency    TEXT    NOT NULL CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX orders_active_by_customer ON orders (customer_id, created_at DESC, id DESC)
    WHERE status = 'active';
CREATE INDEX orders_by_customer ON orders (customer_id, created_at DESC, id DESC);

CREATE TABLE order_items (
    order_id         INTEGER NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    post_id          INTEGER NOT NULL REFERENCES posts (id),
    quantity         INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    unit_price_cents INTEGER NOT NULL CHECK (unit_price_cents > 0),
    currency         TEXT    NOT NULL CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    PRIMARY KEY (order_id, post_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX order_items_by_post ON order_items (post_id);

CREATE TABLE notifications (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT    NOT NULL CHECK (kind IN ('followed', 'wish_bought', 'order_confirmed')),
    actor_id   INTEGER REFERENCES users (id) ON DELETE SET NULL,
    post_id    INTEGER REFERENCES posts (id) ON DELETE SET NULL,
    order_id   INTEGER REFERENCES orders (id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    read_at    INTEGER
) STRICT;
CREATE INDEX notifications_by_user ON notifications (user_id, created_at DESC, id DESC);

CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL CHECK (kind IN ('post.created', 'post.deleted', 'user.followed',
                                                  'user.unfollowed', 'user.blocked', 'order.created')),
    payload      TEXT    NOT NULL CHECK (json_valid(payload)),
    created_at   INTEGER NOT NULL,
    published_at INTEGER
) STRICT;
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE home_timeline (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    post_id    INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    author_id  INTEGER NOT NULL,
    PRIMARY KEY (user_id, created_at, post_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX home_timeline_by_post ON home_timeline (post_id);

-- Unblock commits an event like every other graph write, so other replicas forget the
-- block they cached; unfollow and block delete a pair's timeline rows by index instead
-- of scanning the user's whole timeline.

ALTER TABLE outbox DROP CONSTRAINT outbox_kind_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_kind_check
    CHECK (kind IN ('post.created', 'post.deleted', 'user.followed', 'user.unfollowed',
                    'user.blocked', 'user.unblocked', 'order.created'));

CREATE INDEX home_timeline_by_author ON home_timeline (user_id, author_id);

-- Celebrity authors are not fanned out on write: their posts are merged into followers'
-- home feeds at read time. `celebrity_from` is the post whose fan-out found the author
-- past the threshold (that post was still fanned out, so its holders' heads learnt of
-- the change); NULL for everyone else. Once set it stays: every post is either in the
-- timelines or merged at read, never neither.
ALTER TABLE users ADD COLUMN celebrity_from bigint;
-- Few rows: a viewer's followed celebrities are probed by primary key from here.
CREATE INDEX users_celebrities ON users (id) WHERE celebrity_from IS NOT NULL;

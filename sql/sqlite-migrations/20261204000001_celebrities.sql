-- Mirrors sql/migrations: celebrity authors are merged at read time, not fanned out.
ALTER TABLE users ADD COLUMN celebrity_from INTEGER;
CREATE INDEX users_celebrities ON users (id) WHERE celebrity_from IS NOT NULL;

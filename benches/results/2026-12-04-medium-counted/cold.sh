#!/bin/bash
# The cold page by hand: quiver --no-cache under one wrk (16 viewers' tokens, 32
# connections) and pgbench on the same 8 statements, with the CPU of the server and of
# every PostgreSQL process over each phase. OLD and NEW are two builds to compare.
set -e
OLD=${OLD:-/var/tmp/quiver-ci-target/bench/quiver-mimalloc}
NEW=${NEW:-$OLD}
DB=postgres://postgres@127.0.0.1:5432/quiver_bench_e2e_medium
SECRET="bench secret: at least thirty-two bytes long"
VIEWERS=$(psql -h 127.0.0.1 -U postgres -d quiver_bench_e2e_medium -Atc "SELECT DISTINCT ON (slice) follower_id FROM (SELECT follower_id, n, ntile(16) OVER (ORDER BY n DESC, follower_id) AS slice FROM (SELECT follower_id, count(*) AS n FROM follows GROUP BY follower_id HAVING count(*) >= 10) c) s ORDER BY slice, n DESC, follower_id")
echo "tokens = {" > feed.lua
for v in $VIEWERS; do echo "\"$(QUIVER_JWT_SECRET="$SECRET" $OLD token --user $v --ttl 6h)\"," >> feed.lua; done
cat >> feed.lua <<'L'
}
reqs = {}
function init(args)
  for i, t in ipairs(tokens) do
    reqs[i] = wrk.format("GET", "/api/v1/feed?limit=20", {["Authorization"] = "Bearer " .. t, ["x-request-id"] = "1000001"})
  end
end
i = 0
request = function()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end
L
rm -f pg_*.sql
for v in $VIEWERS; do
  pairs=$(psql -h 127.0.0.1 -U postgres -d quiver_bench_e2e_medium -Atc "SELECT t.post_id || ',' || p.author_id FROM home_timeline t JOIN posts p ON p.id = t.post_id WHERE t.user_id = $v ORDER BY t.created_at DESC, t.post_id DESC LIMIT 20")
  posts=$(echo "$pairs" | cut -d, -f1 | paste -sd,); authors=$(echo "$pairs" | cut -d, -f2 | sort -un | paste -sd,)
  cat > pg_$v.sql <<S
SELECT ARRAY(SELECT followee_id FROM follows WHERE follower_id = $v), ARRAY(SELECT f.followee_id FROM follows f JOIN follows back ON back.follower_id = f.followee_id AND back.followee_id = $v WHERE f.follower_id = $v), ARRAY(SELECT blocked_id FROM blocks WHERE blocker_id = $v), ARRAY(SELECT blocker_id FROM blocks WHERE blocked_id = $v);
SELECT u.id FROM users u WHERE u.celebrity_from IS NOT NULL AND EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = $v AND f.followee_id = u.id) ORDER BY u.id;
SELECT post_id AS id, created_at FROM home_timeline WHERE user_id = $v AND (created_at, post_id) < ('9999-12-31'::timestamptz, 9223372036854775807) ORDER BY created_at DESC, post_id DESC LIMIT 101;
SELECT id, author_id, kind, body, price_cents, currency, product_url, created_at FROM posts WHERE id = ANY('{$posts}'::bigint[]);
SELECT id, post_id, kind, url, width, height, size_bytes, position FROM media WHERE post_id = ANY('{$posts}'::bigint[]) ORDER BY post_id, position;
SELECT post_id, tag FROM post_tags WHERE post_id = ANY('{$posts}'::bigint[]) ORDER BY post_id, tag;
SELECT id, handle, display_name, bio, avatar_url, created_at FROM users WHERE id = ANY('{$authors}'::bigint[]);
SELECT id, verified, creator, private FROM users WHERE id = ANY('{$authors}'::bigint[]);
S
done
# Every PostgreSQL process's CPU ticks, with its exited children's.
pgall() { local s=0; for p in $(pgrep -f postgres); do [ -r /proc/$p/stat ] && s=$((s + $(awk '{print $14+$15+$16+$17}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $s; }
run() {
  local bin=$1; shift
  DATABASE_URL=$DB REDIS_URL=redis://127.0.0.1:6379 QUIVER_JWT_SECRET="$SECRET" QUIVER_REDIS_NAMESPACE=cold-$$ RUST_LOG=warn \
    $bin serve --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19080 --rate-per-second 1000000 --rate-burst 1000000 --max-concurrency 4096 --no-cache "$@" > srv.log 2>&1 &
  local srv=$!; sleep 3
  wrk -t2 -c32 -d4s -s feed.lua http://127.0.0.1:18080 > /dev/null
  local s0 p0 s1 p1 n
  s0=$(awk '{print $14+$15}' /proc/$srv/stat); p0=$(pgall)
  wrk -t2 -c32 -d12s -s feed.lua http://127.0.0.1:18080 > cold.txt
  s1=$(awk '{print $14+$15}' /proc/$srv/stat); p1=$(pgall)
  n=$(grep "requests in" cold.txt | awk '{print $1}')
  echo "$(basename $bin) $*: $(grep Requests/sec cold.txt) server µs/page $(( (s1-s0)*10000/n )) pg µs/page $(( (p1-p0)*10000/n ))"
  kill -TERM $srv; wait $srv || true
}
for r in 1 2; do run $OLD; run $OLD --coalesce-window-us 1; run $NEW; done
p0=$(pgall)
pgbench -n -M prepared -j 2 -c 32 -T 15 $(for f in pg_*.sql; do echo -f $f; done) $DB > pgbench.txt 2>&1
p1=$(pgall)
n=$(grep "actually processed" pgbench.txt | awk '{print $NF}')
echo "pgbench: $(grep '^tps' pgbench.txt) pg µs/page $(( (p1-p0)*10000/n ))"

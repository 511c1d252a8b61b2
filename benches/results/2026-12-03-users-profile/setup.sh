#!/bin/bash
# Starts the release server on the bench data and writes the request lists for wrk.
set -e
BIN=${BIN:-/work/main/target/release/quiver}
DB=${DB:-postgres://postgres@127.0.0.1:5432/quiver_bench_e2e_medium}
export QUIVER_JWT_SECRET=bench-secret-of-at-least-32-bytes-long!!
cd /tmp/prof
viewers=$(psql "$DB" -Atc "SELECT DISTINCT ON (slice) follower_id FROM (
   SELECT follower_id, n, ntile(16) OVER (ORDER BY n DESC, follower_id) AS slice
   FROM (SELECT follower_id, count(*) AS n FROM follows GROUP BY follower_id HAVING count(*) >= 10) c) s
 ORDER BY slice, n DESC, follower_id")
: > feed.txt; : > profile.txt
for v in $viewers; do
  t=$($BIN token --user $v --ttl 6h)
  echo "$t /api/v1/feed?limit=20" >> feed.txt
  for u in $(seq $((v % 400 + 1)) 37 $((v % 400 + 500))); do echo "$t /api/v1/users/$u" >> profile.txt; done
done
wc -l feed.txt profile.txt

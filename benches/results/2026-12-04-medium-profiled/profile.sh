#!/bin/bash
# Profiles the warm home feed and the static body on the bench's medium database.
set -e
BIN=/var/tmp/quiver-ci-target/bench/quiver-mimalloc
DB=postgres://postgres@127.0.0.1:5432/quiver_bench_e2e_medium
SECRET="bench secret: at least thirty-two bytes long"
VIEWERS=$(psql -h 127.0.0.1 -U postgres -d quiver_bench_e2e_medium -Atc "SELECT DISTINCT ON (slice) follower_id FROM (SELECT follower_id, n, ntile(16) OVER (ORDER BY n DESC, follower_id) AS slice FROM (SELECT follower_id, count(*) AS n FROM follows GROUP BY follower_id HAVING count(*) >= 10) c) s ORDER BY slice, n DESC, follower_id")
echo "tokens = {" > feed.lua
for v in $VIEWERS; do
  t=$(QUIVER_JWT_SECRET="$SECRET" $BIN token --user $v --ttl 6h)
  echo "\"$t\"," >> feed.lua
done
cat >> feed.lua <<'L'
}
i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/api/v1/feed?limit=20", {["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1]})
end
L
DATABASE_URL=$DB REDIS_URL=redis://127.0.0.1:6379 QUIVER_JWT_SECRET="$SECRET" QUIVER_REDIS_NAMESPACE=prof-$$ RUST_LOG=warn \
  $BIN serve --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19080 --rate-per-second 1000000 --rate-burst 1000000 --max-concurrency 4096 &
SRV=$!
sleep 3
wrk -t2 -c32 -d10s -s feed.lua http://127.0.0.1:18080 > warmup.txt
cpu() { awk '{print $14+$15}' /proc/$SRV/stat; }
c0=$(cpu); wrk -t2 -c32 -d15s -s feed.lua http://127.0.0.1:18080 > feed.txt & W=$!
perf record -F 999 -g -p $SRV -o feed.data -- sleep 10 2>/dev/null
wait $W; c1=$(cpu)
echo "feed ticks $((c1-c0))"; grep Requests/sec feed.txt
c0=$(cpu); wrk -t2 -c32 -d15s "http://127.0.0.1:18080/bench/static?bytes=14391" > static.txt & W=$!
perf record -F 999 -g -p $SRV -o static.data -- sleep 10 2>/dev/null
wait $W; c1=$(cpu)
echo "static ticks $((c1-c0))"; grep Requests/sec static.txt
kill -TERM $SRV; wait $SRV || true

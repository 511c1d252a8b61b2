#!/bin/bash
# The warm first home page of 16 viewers, closed loop (wrk, 8 connections), in six
# 10-second windows of one server: req/s, P99, max and server CPU per request in each.
# Extra arguments go to `quiver serve` (say `--refresh-ahead 0`).
BIN=/var/tmp/quiver-ci-target/bench/quiver-mimalloc
DB=postgres://postgres@127.0.0.1:5432/quiver_bench_e2e_medium
SECRET="bench secret: at least thirty-two bytes long"
# Sixteen viewers' tokens, one per request in turn.
{ echo 'tokens = {'
  for u in 11 222 3333 4444 5555 6666 7777 8888 9999 10101 20202 30303 40404 50505 60606 70707; do
    echo "\"$($BIN token --user $u --jwt-secret "$SECRET" --ttl 1h)\","
  done
  echo '}'
  echo 'local i = 0'
  echo 'request = function()'
  echo '  i = i + 1'
  echo '  return wrk.format("GET", "/api/v1/feed?limit=20", { ["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1] })'
  echo 'end'
} > feed.lua
DATABASE_URL=$DB REDIS_URL=redis://127.0.0.1:6379 QUIVER_JWT_SECRET="$SECRET" QUIVER_REDIS_NAMESPACE=warm-$$ RUST_LOG=warn \
  $BIN serve --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19080 --rate-per-second 1000000 --rate-burst 1000000 --max-concurrency 4096 "$@" > srv.log 2>&1 &
srv=$!; sleep 2
for w in 1 2 3 4 5 6; do
  s0=$(awk '{print $14+$15}' /proc/$srv/stat)
  wrk -t2 -c8 -d10s --latency -s feed.lua http://127.0.0.1:18080 > w.txt
  s1=$(awk '{print $14+$15}' /proc/$srv/stat)
  n=$(grep "requests in" w.txt | awk '{print $1}')
  echo "window $w: $(grep Requests/sec w.txt | awk '{print $2}') req/s, P50 $(grep ' 50%' w.txt | awk '{print $2}'), P99 $(grep ' 99%' w.txt | awk '{print $2}'), max $(grep 'Latency' w.txt | awk '{print $4}'), µs/req $(( (s1-s0)*10000/n ))"
done
curl -s 127.0.0.1:19080/metrics | grep -E 'quiver_cache_lookups_total\{cache="page"|quiver_cache_lookups_total\{cache="item",outcome="stale"'
kill -TERM $srv; wait $srv

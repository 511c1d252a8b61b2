#!/bin/bash
# Counts the server threads' context switches per request: the warm home feed against the static body.
BIN=/var/tmp/quiver-ci-target/bench/quiver-mimalloc
DB=postgres://postgres@127.0.0.1:5432/quiver_bench_e2e_medium
SECRET="bench secret: at least thirty-two bytes long"
DATABASE_URL=$DB REDIS_URL=redis://127.0.0.1:6379 QUIVER_JWT_SECRET="$SECRET" QUIVER_REDIS_NAMESPACE=prof-$$ RUST_LOG=warn \
  $BIN serve --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19080 --rate-per-second 1000000 --rate-burst 1000000 --max-concurrency 4096 $EXTRA &
SRV=$!
sleep 3
sw() { cat /proc/$SRV/task/*/status | awk '/ctxt_switches/ {s+=$2} END {print s}'; }
cpu() { awk '{print $14+$15}' /proc/$SRV/stat; }
wrk -t2 -c32 -d8s -s feed.lua http://127.0.0.1:18080 > /dev/null
for round in 1 2; do
for what in feed static; do
  if [ $what = feed ]; then args="-s feed.lua http://127.0.0.1:18080"; else args="http://127.0.0.1:18080/bench/static?bytes=14391"; fi
  s0=$(sw); c0=$(cpu)
  out=$(wrk -t2 -c32 -d10s $args | awk '/^Requests\/sec/ {print $2}')
  s1=$(sw); c1=$(cpu)
  python3 -c "r=float('$out')*10; print('$what', 'rps', $out, 'cpu us/req %.1f' % (($c1-$c0)*1e4/r), 'switches/req %.2f' % (($s1-$s0)/r))"
done
done
kill -TERM $SRV; wait $SRV 2>/dev/null

#!/bin/bash
# Alternating A/B of two server binaries: the warm home feed and GET /users/{id}, server CPU per request.
DB=postgres://postgres@127.0.0.1:5432/quiver_bench_e2e_medium
SECRET="bench secret: at least thirty-two bytes long"
for round in 1 2 3; do
for BIN in "$@"; do
  DATABASE_URL=$DB REDIS_URL=redis://127.0.0.1:6379 QUIVER_JWT_SECRET="$SECRET" QUIVER_REDIS_NAMESPACE=ab-$$-$round RUST_LOG=warn \
    $BIN serve --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19080 --rate-per-second 1000000 --rate-burst 1000000 --max-concurrency 4096 &
  SRV=$!
  sleep 2
  cpu() { awk '{print $14+$15}' /proc/$SRV/stat; }
  for what in feed users; do
    wrk -t2 -c32 -d4s -s $what.lua http://127.0.0.1:18080 > /dev/null
    c0=$(cpu)
    out=$(wrk -t2 -c32 -d10s -s $what.lua http://127.0.0.1:18080 | awk '/^Requests\/sec/ {print $2}')
    c1=$(cpu)
    python3 -c "r=float('$out')*10; print('$round', '$(basename $BIN)', '$what', 'rps', $out, 'cpu us/req %.2f' % (($c1-$c0)*1e4/r))"
  done
  kill -TERM $SRV; wait $SRV 2>/dev/null
done
done

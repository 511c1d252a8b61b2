#!/bin/bash
# Starts the release server on the bench data (warm configuration), records its pid and port.
BIN=${BIN:-/work/main/target/release/quiver}
export QUIVER_JWT_SECRET=bench-secret-of-at-least-32-bytes-long!!
export DATABASE_URL=${DB:-postgres://postgres@127.0.0.1:5432/quiver_bench_e2e_medium}
export REDIS_URL=redis://127.0.0.1:6379 QUIVER_REDIS_NAMESPACE=prof-$$ RUST_LOG=warn,quiver=info
$BIN serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format json --slow-request-ms 60000 \
  --rate-per-second 1000000 --rate-burst 1000000 --max-concurrency 4096 --queue-timeout-ms 1000 "$@" \
  > /tmp/prof/server.out 2> /tmp/prof/server.err &
echo $! > /tmp/prof/server.pid
for i in $(seq 100); do grep -q "quiver is serving" /tmp/prof/server.err && break; sleep 0.2; done
grep "quiver is serving" /tmp/prof/server.err | python3 -c "import json,sys; l=json.loads(sys.stdin.read()); print(l['fields']['api'].split(':')[1])" > /tmp/prof/port
echo "pid $(cat /tmp/prof/server.pid) port $(cat /tmp/prof/port)"

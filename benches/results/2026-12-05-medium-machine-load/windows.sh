#!/bin/bash
# The warm feed as the bench sends it (16 viewers, their first 5 pages, one wrk process,
# 2 threads, 32 connections, `xtask/src/load.lua`) on one server: 3 s warm-up and a 10 s
# peak (closed loop), then N windows of 10 s open loop at RATE requests/s. Per window:
# P50/P99/P99.9 from when each request was due, server CPU per request, the cores of the
# machine busy with anything (/proc/stat), wrk's own CPU, pages built.
#   usage: windows.sh RATE N [quiver serve flags]
#   STATIC=BYTES: every request asks for /bench/static?bytes=BYTES instead
#   TIMELINE=1: also print, per 100 ms of each window, the slowest answer when over 2 ms
# Needs the bench's server and database (`cargo xtask bench --scale medium` leaves both).
RATE=$1; N=$2; shift 2
BIN=${BIN:-/var/tmp/quiver-ci-target/bench/quiver-mimalloc}
DB=${DB:-postgres://postgres@127.0.0.1:5432/quiver_bench_e2e_medium}
SECRET="bench secret: at least thirty-two bytes long"
ROOT=$(git rev-parse --show-toplevel)
W=$(mktemp -d)
# The script's records, with the time each answer came (ms) as their last field.
sed 's/path, ",", lap, "\\n")/path, ",", math.floor(now \/ 1000), "\\n")/' \
  "$ROOT/xtask/src/load.lua" > $W/load.lua
VIEWERS=$(psql -Atq "$DB" -c "SELECT DISTINCT ON (slice) follower_id FROM (
    SELECT follower_id, n, ntile(16) OVER (ORDER BY n DESC, follower_id) AS slice
    FROM (SELECT follower_id, count(*) AS n FROM follows GROUP BY follower_id
          HAVING count(*) >= 10) c) s ORDER BY slice, n DESC, follower_id")
DATABASE_URL=$DB REDIS_URL=redis://127.0.0.1:6379 QUIVER_JWT_SECRET="$SECRET" QUIVER_REDIS_NAMESPACE=windows-$$ RUST_LOG=warn \
  $BIN serve --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19080 --log-format json --slow-request-ms 60000 \
  --rate-per-second 1000000 --rate-burst 1000000 --max-concurrency 4096 --queue-timeout-ms 1000 "$@" > $W/srv.log 2>&1 &
srv=$!
trap 'kill -TERM $srv; wait $srv; rm -rf $W' EXIT
until curl -sf 127.0.0.1:19080/metrics >/dev/null; do sleep 0.2; done
T0=$(date +%s)
{ echo 'return { streams = {'
  for u in $VIEWERS; do
    tok=$($BIN token --user $u --jwt-secret "$SECRET" --ttl 1h)
    p="/api/v1/feed?limit=20"; paths="\"$p\""
    for i in 2 3 4 5; do
      next=$(curl -sf -H "Authorization: Bearer $tok" "http://127.0.0.1:18080$p" |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("next_page") or "")')
      p="/api/v1/feed?limit=20&cursor=$next"; paths="$paths, \"$p\""
    done
    [ -n "$STATIC" ] && paths="\"/bench/static?bytes=$STATIC\""
    echo "  { method = \"GET\", paths = { $paths }, headers = { [\"Authorization\"] = \"Bearer $tok\" }, body = nil },"
  done
  echo '}, schedule = {'
  for i in $(seq 0 959); do echo -n "$(( i % 16 + 1 )), "; done
  echo '} }'
} > $W/streams.lua
run() { # SECONDS RATE (0: closed loop)
  rm -f $W/rec-*.csv
  QUIVER_LOAD_STREAMS=$W/streams.lua QUIVER_LOAD_THREADS=2 QUIVER_LOAD_RATE=$2 QUIVER_LOAD_PAUSE_MS=0 \
  QUIVER_LOAD_OUT=$W/rec QUIVER_LOAD_RECORDS=1 /usr/bin/time -f "%U %S" -o $W/wrkcpu \
    wrk -t2 -c32 -d${1}s --timeout 10s -s $W/load.lua http://127.0.0.1:18080/ > $W/wrk.txt
}
metric() { curl -s 127.0.0.1:19080/metrics | grep -E "$1" | awk '{s+=$2} END {print s+0}'; }
server() { awk '{print $14+$15}' /proc/$srv/stat; }
machine() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
run 3 0; run 10 0
echo "closed-loop peak (recorded): $(cat $W/rec-[0-9]*.csv | wc -l | awk '{print $1/10}') req/s"
for w in $(seq 1 $N); do
  s0=$(server); m0=$(machine); b0=$(metric 'cache="page",outcome="miss"'); up=$(( $(date +%s) - T0 ))
  run 10 $RATE
  s1=$(server); m1=$(machine); b1=$(metric 'cache="page",outcome="miss"')
  python3 - "$W" "$up" $((s1-s0)) $((m1-m0)) $((b1-b0)) "$(cat $W/wrkcpu)" <<'PY'
import glob, os, sys, collections
w, up, ticks, busy, built, gen = sys.argv[1:]
rows = [l.split(',') for f in glob.glob(w + '/rec-[0-9]*.csv') for l in open(f) if l.strip()]
ok = [r for r in rows if r[0] != '0']
lat = sorted(int(r[1]) for r in ok)
n = len(lat); q = lambda p: lat[min(n - 1, int(p * n))] / 1000
g = sum(map(float, gen.split()))
print(f"uptime {up:>4} s: {n/10:7.0f} req/s, P50 {q(.5):.2f} P99 {q(.99):.2f} P99.9 {q(.999):.2f} ms; "
      f"server {int(ticks)*1e4/n:.1f} us/req, wrk {g*1e6/n:.1f} us/req, machine {int(busy)/1000:.2f} cores; "
      f"pages built {built}; unanswered or unmatched {len(rows)-len(ok)}")
if os.environ.get('TIMELINE'):
    b = collections.defaultdict(int)
    for r in ok:
        b[int(r[5]) // 100] = max(b[int(r[5]) // 100], int(r[1]))
    t0 = min(b)
    print('  slowest per 100 ms over 2 ms (s:ms):', ' '.join(f"{(k-t0)/10:.1f}:{v/1000:.0f}" for k, v in sorted(b.items()) if v > 2000))
PY
done

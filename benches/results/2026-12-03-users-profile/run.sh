#!/bin/bash
# Usage: run.sh NAME REQS_FILE SECONDS [perf]
# One wrk -t2 -c32 phase against the running server; prints req/s and server CPU µs/req.
name=$1; reqs=$2; secs=$3; perfit=$4
pid=$(cat /tmp/prof/server.pid); port=$(cat /tmp/prof/port)
cpu() { awk '{print $14+$15}' /proc/$pid/stat; }
REQS=$reqs wrk -t2 -c32 -d3s -s /tmp/prof/rot.lua http://127.0.0.1:$port/ > /dev/null
c0=$(cpu)
if [ -n "$perfit" ]; then (perf record -F 999 -g -p $pid -o /tmp/prof/$name.data -- sleep $((secs-2)) > /dev/null 2>&1 &) ; fi
out=$(REQS=$reqs wrk -t2 -c32 -d${secs}s -s /tmp/prof/rot.lua http://127.0.0.1:$port/)
c1=$(cpu)
reqs_done=$(echo "$out" | awk '/requests in/ {print $1}')
rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
tck=$(getconf CLK_TCK)
echo "$name rps=$rps cpu_us_per_req=$(python3 -c "print(round(($c1-$c0)/$tck*1e6/$reqs_done,1))") non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')"

-- The load side of `cargo xtask bench`, run by wrk (`load.rs` writes the streams to a Lua
-- file named by QUIVER_LOAD_STREAMS). Each wrk thread (one per core) sends every stream
-- over its connections: each request is the next slot of a weighted schedule of streams
-- (each stream its own headers, paths and body) and carries an `x-request-id`, which the
-- server echoes, so that each answer is logged with the stream it answered, to
-- `QUIVER_LOAD_OUT-<thread>.csv` as `stream,microseconds,status,body bytes,path,lap`
-- (stream 0: an answer without a known id; path: the stream's path, from 1; lap: how many
-- times this thread had gone through all of the stream's paths before, from 0).
--
-- Open loop (QUIVER_LOAD_RATE > 0): the thread's requests are due at a fixed interval (the
-- rate divided among the threads). A connection that is free claims the next due time and
-- waits for it; one that is busy claims none, so a late answer leaves later requests
-- waiting, and each latency is measured from when the request was due, not from when it
-- was sent (no coordinated omission). Closed loop: from when it was sent, and with
-- QUIVER_LOAD_PAUSE_MS > 0 each connection waits that long before each request (a client
-- reading a page before asking for the next).
--
-- Counted (QUIVER_LOAD_RECORDS=0, closed loop only): no record per answer. Without a
-- `response` function wrk neither collects headers nor copies bodies into Lua, and each
-- request is prebuilt whole, so the generator costs the least it can; `done` writes the
-- totals (`requests,bytes,answers with a status of 400 or more`) to
-- `QUIVER_LOAD_OUT-summary.csv` in either mode.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } quiver_timespec;
int clock_gettime(int clk_id, quiver_timespec *tp);
]]
local ts = ffi.new("quiver_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

-- Per stream and path: the request line, and the rest of the request (headers, body).
local lines, rests, cursor
local schedule, slot, out
local threads, seq = 1, 0
-- In flight, by request id: stream, sent, due, path, lap.
local in_stream, in_sent, in_due, in_path, in_lap = {}, {}, {}, {}, {}
-- Per stream: laps this thread has completed, and whether it has sent any request yet.
local laps, started = {}, {}
-- Open loop: the next due time nobody claimed, the interval, and the claimed ones not
-- sent yet (in order).
local next_due, interval
local claimed, claimed_head, claimed_tail = {}, 1, 0

local function paced_delay()
  local due = next_due
  next_due = next_due + interval
  claimed_tail = claimed_tail + 1
  claimed[claimed_tail] = due
  local wait = (due - now_us()) / 1000
  if wait < 1 then
    return 0
  end
  return math.floor(wait)
end

local wholes

local function counted_request()
  slot = slot % #schedule + 1
  local s = schedule[slot]
  local c = cursor[s] % #wholes[s] + 1
  cursor[s] = c
  return wholes[s][c]
end

function init(_)
  local config = dofile(os.getenv("QUIVER_LOAD_STREAMS"))
  local counted = os.getenv("QUIVER_LOAD_RECORDS") == "0"
  threads = tonumber(os.getenv("QUIVER_LOAD_THREADS"))
  local rate = tonumber(os.getenv("QUIVER_LOAD_RATE"))
  lines, rests, cursor = {}, {}, {}
  for s, stream in ipairs(config.streams) do
    local l, r = {}, {}
    for p, path in ipairs(stream.paths) do
      local headers = {}
      for k, v in pairs(stream.headers) do
        headers[k] = v
      end
      local raw = wrk.format(stream.method, path, headers, stream.body)
      local cut = raw:find("\r\n", 1, true)
      l[p] = raw:sub(1, cut + 1)
      r[p] = raw:sub(cut + 2)
    end
    lines[s], rests[s] = l, r
    cursor[s] = id % #l
  end
  schedule = config.schedule
  slot = (id * math.floor(#schedule / threads)) % #schedule
  if counted then
    -- The same requests, each with a fixed id of the usual length (the server echoes it).
    wholes = {}
    for s, l in ipairs(lines) do
      wholes[s] = {}
      for p, line in ipairs(l) do
        wholes[s][p] = line .. "x-request-id: " .. (1000000 + s * 1000 + p) .. "\r\n" .. rests[s][p]
      end
    end
    request = counted_request
    response = nil
    return
  end
  if rate > 0 then
    interval = threads * 1000000 / rate
    -- Threads start spread over one interval, not all at once.
    next_due = now_us() + interval * id / threads
    delay = paced_delay
  else
    local pause = tonumber(os.getenv("QUIVER_LOAD_PAUSE_MS") or "0")
    if pause > 0 then
      delay = function()
        return pause
      end
    end
  end
  out = io.open(os.getenv("QUIVER_LOAD_OUT") .. "-" .. id .. ".csv", "w")
  out:setvbuf("full", 65536)
end

function request()
  slot = slot % #schedule + 1
  local s = schedule[slot]
  local c = cursor[s] % #lines[s] + 1
  cursor[s] = c
  if c == 1 and started[s] then
    laps[s] = (laps[s] or 0) + 1
  end
  started[s] = true
  seq = seq + 1
  local rid = seq * threads + id
  local now = now_us()
  in_stream[rid], in_sent[rid], in_path[rid], in_lap[rid] = s, now, c, laps[s] or 0
  if interval then
    -- The earliest claimed due time: timers fire in due order, to the millisecond. A
    -- connection that reconnected mid-request sends again without a delay(): it takes
    -- the next due time itself, so the schedule stays whole.
    local due = claimed[claimed_head]
    if due then
      claimed[claimed_head] = nil
      claimed_head = claimed_head + 1
    else
      due = next_due
      next_due = next_due + interval
    end
    in_due[rid] = due
  end
  return lines[s][c] .. "x-request-id: " .. rid .. "\r\n" .. rests[s][c]
end

function response(status, headers, body)
  local now = now_us()
  local rid = tonumber(headers["x-request-id"])
  local s = rid and in_stream[rid]
  if not s then
    out:write(0, ",", 0, ",", status, ",", #body, ",0,0\n")
    return
  end
  local from = in_sent[rid]
  local due = in_due[rid]
  if due and due < from then
    from = due
  end
  local path, lap = in_path[rid], in_lap[rid]
  in_stream[rid], in_sent[rid], in_due[rid], in_path[rid], in_lap[rid] = nil, nil, nil, nil, nil
  out:write(s, ",", math.floor(now - from + 0.5), ",", status, ",", #body, ",", path, ",", lap, "\n")
end

function done(summary)
  local f = io.open(os.getenv("QUIVER_LOAD_OUT") .. "-summary.csv", "w")
  f:write(string.format("%.0f,%.0f,%.0f\n", summary.requests, summary.bytes, summary.errors.status))
  f:close()
end

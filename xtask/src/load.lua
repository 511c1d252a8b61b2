-- The load side of `cargo xtask bench`, run by wrk (`load.rs` writes the streams to a Lua
-- file named by QUIVER_LOAD_STREAMS). One wrk thread per connection, so that this
-- thread's globals are one connection's state: each request is the next slot of a
-- weighted schedule of streams (each stream its own headers, paths and body), and each
-- answer is logged with the stream it answered, to `QUIVER_LOAD_OUT-<thread>.csv`.
--
-- Open loop (QUIVER_LOAD_RATE > 0): the connection's requests are due at a fixed interval
-- (the rate divided among the connections), and each latency is measured from when the
-- request was due, not from when it was sent: a late answer delays the next request, and
-- that wait is counted (no coordinated omission). Closed loop: from when it was sent.

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

local requests, schedule, cursor, slot, out
local current, sent, sent_due, due, interval

local function paced_delay()
  local wait = (due - now_us()) / 1000
  if wait < 1 then
    return 0
  end
  return math.floor(wait)
end

function init(_)
  local config = dofile(os.getenv("QUIVER_LOAD_STREAMS"))
  local connections = tonumber(os.getenv("QUIVER_LOAD_CONNECTIONS"))
  local rate = tonumber(os.getenv("QUIVER_LOAD_RATE"))
  requests, cursor = {}, {}
  for s, stream in ipairs(config.streams) do
    local built = {}
    for p, path in ipairs(stream.paths) do
      local headers = {}
      for k, v in pairs(stream.headers) do
        headers[k] = v
      end
      built[p] = wrk.format(stream.method, path, headers, stream.body)
    end
    requests[s] = built
    cursor[s] = id % #built
  end
  schedule = config.schedule
  slot = (id * math.floor(#schedule / connections)) % #schedule
  if rate > 0 then
    interval = connections * 1000000 / rate
    -- Connections start spread over one interval, not all at once.
    due = now_us() + interval * id / connections
    delay = paced_delay
  end
  out = io.open(os.getenv("QUIVER_LOAD_OUT") .. "-" .. id .. ".csv", "w")
  out:setvbuf("full", 65536)
end

function request()
  slot = slot % #schedule + 1
  current = schedule[slot]
  local built = requests[current]
  local c = cursor[current] % #built + 1
  cursor[current] = c
  sent = now_us()
  if due then
    sent_due = due
    due = due + interval
  end
  return built[c]
end

function response(status, _, body)
  local from = sent
  if sent_due and sent_due < from then
    from = sent_due
  end
  out:write(current, ",", math.floor(now_us() - from + 0.5), ",", status, ",", #body, "\n")
end

-- Rotates through the requests listed in REQS (one "token path" pair per line).
local reqs = {}
local f = io.open(os.getenv("REQS"), "r")
for line in f:lines() do
  local tok, path = line:match("^(%S+)%s+(%S+)$")
  if tok == "-" then
    reqs[#reqs + 1] = wrk.format("GET", path)
  else
    reqs[#reqs + 1] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. tok })
  end
end
f:close()
local i = 0
function setup(thread) end
function init(args) i = math.random(#reqs) end
function request()
  i = i % #reqs + 1
  return reqs[i]
end

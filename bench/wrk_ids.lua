-- wrk script for bench/cluster_cpu.py: appends of ~300-byte messages to the
-- conversations listed one per line in the file IDS_FILE. Prints one JSON line
-- with the appends, errors and latency percentiles.
local ids = {}
for line in io.lines(os.getenv("IDS_FILE")) do table.insert(ids, line) end
local text = string.rep("x", 240)
local body = '{"message":{"role":"user","parts":[{"type":"text","text":"' .. text ..
             '"}],"metadata":{"source":"bench"}}}'
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  appends = 0
  errors = 0
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
  return wrk.format("POST", "/v1/conversations/" .. ids[math.random(1, #ids)] .. "/messages",
                    {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status == 201 then appends = appends + 1 else errors = errors + 1 end
end

function done(summary, latency, requests)
  local a, e = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("appends")
    e = e + t:get("errors")
  end
  io.write(string.format(
    '{"appends":%d,"errors":%d,"duration_s":%.3f,"p50_ms":%.3f,"p99_ms":%.3f}\n',
    a, e, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000))
end

-- wrk script for bench/http_bench.py: appends of ~300-byte messages spread
-- over CONVERSATIONS conversations, mixed with tail reads (APPEND_PCT % appends).
-- With IDS_FILE, the conversations are instead the ids listed one per line in
-- that file (bench/cluster_cpu.py). Counts appends and non-2xx replies per
-- thread and prints them as one JSON line.
local ids = nil
if os.getenv("IDS_FILE") then
  ids = {}
  for line in io.lines(os.getenv("IDS_FILE")) do table.insert(ids, line) end
end
local conversations = tonumber(os.getenv("CONVERSATIONS") or "1000")
local append_pct = tonumber(os.getenv("APPEND_PCT") or "80")
local prefix = os.getenv("CONV_PREFIX") or "bench"
local text = string.rep("x", 240)
local body = '{"message":{"role":"user","parts":[{"type":"text","text":"' .. text ..
             '"}],"metadata":{"source":"bench"}}}'
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  appends = 0
  reads = 0
  errors = 0
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
  local conversation
  if ids then
    conversation = ids[math.random(1, #ids)]
  else
    conversation = prefix .. "-" .. math.random(1, conversations)
  end
  if math.random(1, 100) <= append_pct then
    return wrk.format("POST", "/v1/conversations/" .. conversation .. "/messages",
                      {["Content-Type"] = "application/json"}, body)
  end
  return wrk.format("GET", "/v1/conversations/" .. conversation .. "/tail?limit=20")
end

function response(status, headers, body)
  if status >= 300 then
    errors = errors + 1
  elseif string.sub(body, 1, 6) == '{"seq"' then
    -- an append reply ({"seq": ...}; a tail reply starts {"messages": ...).
    -- Several requests are in flight per thread, so the reply itself, not
    -- the last request made, says what it answers.
    appends = appends + 1
  else
    reads = reads + 1
  end
end

function done(summary, latency, requests)
  local a, r, e = 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("appends")
    r = r + t:get("reads")
    e = e + t:get("errors")
  end
  io.write(string.format(
    '{"requests":%d,"duration_s":%.3f,"appends":%d,"reads":%d,"errors":%d,"socket_errors":%d,' ..
    '"p50_ms":%.3f,"p99_ms":%.3f,"p999_ms":%.3f}\n',
    summary.requests, summary.duration / 1e6, a, r, e,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end

-- wrk script used by bench/http.
-- With BENCH_FILES="/a/x /a/y ..." in the environment, each request takes the
-- next path of that list, round-robin (each thread starts at its own offset);
-- without it, wrk requests its URL as usual.
-- At the end it prints one machine-readable line, so bench/http does not need
-- to parse wrk's human-readable units:
--   BENCH requests=N bytes=N duration_us=N status=N connect=N read=N write=N
--         timeout=N p50_us=N p99_us=N
-- (status = non-2xx/3xx responses; latencies only of requests that finished
-- within wrk's --timeout.)

local files = {}
for p in string.gmatch(os.getenv("BENCH_FILES") or "", "%S+") do
  files[#files + 1] = p
end

local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end

if #files > 0 then
  local i
  function request()
    if not i then i = ((id or 0) * 17) % #files end
    i = i % #files + 1
    return wrk.format(nil, files[i])
  end
end

function done(s, latency, _)
  local e = s.errors
  io.write(string.format(
    "BENCH requests=%d bytes=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d\n",
    s.requests, s.bytes, s.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end

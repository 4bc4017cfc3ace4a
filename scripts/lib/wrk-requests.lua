-- Requests for wrk built by joining strings: for the wrk scripts that send a different request
-- each time (scripts/bench, bench-ab, profile-join, profile-orders, profile-status --buyers).
--
-- Why not wrk.format: it builds every request from a table of headers with string.format,
-- which LuaJIT runs in its interpreter. Against bare hyper on a 2-core VM that cost wrk 11.3 µs
-- of CPU a request, where a fixed prefix joined to the request's own part cost 6.6 µs and a
-- static request 4.2 µs (BENCHMARKS.md "load-generator"). wrk shares the two cores with the
-- servers it measures, so every microsecond it spends is taken from them.
--
-- Load it with dofile() at the top of a wrk script, then build the fixed parts in init(), when
-- wrk.path is set and wrk.init has put the Host header in wrk.headers.

-- The request line, the Host header as wrk.init sets it, and `headers` (a table of fixed
-- headers, may be nil), each line ending in CRLF. The caller appends the headers that change
-- from request to request, each ending in CRLF, then request_end's part.
function request_head(method, headers)
  local s = method .. " " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.headers["Host"] .. "\r\n"
  for name, value in pairs(headers or {}) do
    s = s .. name .. ": " .. value .. "\r\n"
  end
  return s
end

-- The end of a request: Content-Length, the blank line and `body`; only the blank line when
-- `body` is nil (as wrk.format sends a request without a body).
function request_end(body)
  if body then
    return "Content-Length: " .. #body .. "\r\n\r\n" .. body
  end
  return "\r\n"
end

-- wrk script of the http_tracer acceptance: requests cycle through /ok/ (200),
-- /missing/ (404) and /fail/ (500). The server's own counter, not wrk's, is
-- the oracle: wrk does not count requests still in flight when it stops.
local prefixes = { "/ok/w", "/missing/w", "/fail/w" }
local sent = 0

request = function()
  sent = sent + 1
  return wrk.format("GET", prefixes[(sent % 3) + 1] .. sent)
end

-- A login flood from many clients: POST /v1/login for user1..userN in turn on keep-alive
-- connections, each pausing DELAY_MS after every answer, so the connections whose login
-- waits in profile's queue do not slow the others down. Counts the answers by kind.
local counter = 0
local users = tonumber(os.getenv("USERS") or "100")
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  granted, busy, other = 0, 0, 0
end

function request()
  counter = counter + 1
  local id = "user" .. ((counter % users) + 1)
  local body = '{"id":"' .. id .. '","password":"pw-' .. id .. '"}'
  return wrk.format("POST", "/v1/login", { ["Content-Type"] = "application/json" }, body)
end

function delay()
  return delay_ms
end

function response(status, headers, body)
  if status == 200 then
    granted = granted + 1
  elseif status == 503 and headers["Retry-After"] then
    busy = busy + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local g, b, o = 0, 0, 0
  for _, thread in ipairs(threads) do
    g, b, o = g + thread:get("granted"), b + thread:get("busy"), o + thread:get("other")
  end
  io.write(string.format("answers: %d granted, %d busy with Retry-After, %d other\n", g, b, o))
end

-- POST /v1/login for user1..userN in turn, each on a new TLS connection
-- (Connection: close), as real clients log in once and leave.
local counter = 0
local users = tonumber(os.getenv("USERS") or "100")

request = function()
  counter = counter + 1
  local id = "user" .. ((counter % users) + 1)
  local body = '{"id":"' .. id .. '","password":"pw-' .. id .. '"}'
  return wrk.format("POST", "/v1/login",
    { ["Content-Type"] = "application/json", ["Connection"] = "close" }, body)
end

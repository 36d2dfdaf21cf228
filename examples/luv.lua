-- examples/luv.lua: async calls driven by a libuv loop (luv): uv_poll on every socket client:fds() reports, one uv_timer on its timeout.
--
--   sandbox/start 8960
--   CONTIGUITY_BASE_URL=http://127.0.0.1:8960 LUA_CPATH="build/5.4/?.so;;" lua5.4 examples/luv.lua
--
-- Run as a script it sends 10 codes and exits when the last callback has
-- run. Required (require "examples.luv", or copy the file into your app) it
-- returns { attach = attach }, the part to reuse:
--
--   local update = attach(uv, client, on_error)
--
-- starts watching `client` on luv's default loop and returns `update`. The
-- loop then calls client:poll(0) whenever a socket libcurl waits on is ready
-- or the timeout fds() reported has passed (a libcurl timer, the end of a
-- retry's backoff), and after every poll(0) it asks fds() again: polls are
-- added for new sockets, closed for sockets libcurl no longer wants, and the
-- timer re-armed. Nothing runs while nothing happens (no idle handle, no
-- polling interval), and once no call is pending nothing is left active, so
-- uv.run() returns by itself.
--
-- Call update() after starting calls from outside the callbacks this loop
-- runs (calls started inside a contiguity callback are picked up on their
-- own); update() is cheap and may be called at any time. on_error(err) gets
-- an error raised by a contiguity callback (default: printed on stderr),
-- because an error escaping a luv callback ends the process; the calls that
-- finished alongside still get their callbacks, on the next turn.
local function attach(uv, client, on_error)
  on_error = on_error or function(err)
    io.stderr:write("contiguity callback failed: ", tostring(err), "\n")
  end
  local polls = {}             -- fd -> uv_poll_t
  local timer = uv.new_timer() -- inactive while stopped: it never keeps the loop alive
  local update

  -- One turn: run libcurl and the finished calls' callbacks, then re-arm.
  local function turn()
    local ok, err = pcall(client.poll, client, 0)
    if not ok then on_error(err) end
    update(not ok)
  end

  -- again: a callback raised, so poll(0) must run once more right away for
  -- the calls that finished with it (fds() cannot show those).
  function update(again)
    local r, w, timeout = client:fds()
    if client:pending() == 0 then r, w, timeout = {}, {}, nil end
    local want = {}
    for _, fd in ipairs(r) do want[fd] = "r" end
    for _, fd in ipairs(w) do want[fd] = want[fd] and "rw" or "w" end
    for fd, h in pairs(polls) do
      if not want[fd] then
        polls[fd] = nil
        h:close()
      end
    end
    for fd, events in pairs(want) do
      local h = polls[fd]
      if not h then
        h = assert(uv.new_poll(fd))
        polls[fd] = h
      end
      -- restarted even when the events did not change: libcurl may have
      -- closed this fd and opened another socket with the same number
      -- inside poll(0), and only a restart registers the new socket
      h:start(events, turn)
    end
    timer:stop()
    if again then timeout = 0 end
    if timeout then
      uv.update_time() -- the timer counts from now, not from when this turn began
      timer:start(math.ceil(timeout * 1000), 0, turn)
    end
  end

  return update
end

-- The demo: 10 codes sent over one client, each callback printing its result.
local function main()
  local uv = require "luv"
  local contiguity = require "contiguity"
  local client = contiguity.new(os.getenv("CONTIGUITY_API_KEY") or "contiguity_sk_test_token",
    { base_url = os.getenv("CONTIGUITY_BASE_URL") or "http://127.0.0.1:8960" })
  local update = attach(uv, client)
  for i = 1, 10 do
    client.otp.new({ to = string.format("+1555%07d", i), language = "en", name = "Luv" }, function(res, err)
      print(i, res and res.otp_id or tostring(err))
    end)
  end
  update()
  uv.run()  -- returns once the last callback has run
  print("all done, pending: " .. client:pending())
  client:close()
end

-- main() only when this file is the script being run, not when it is required
if arg and arg[0] and debug.getinfo(1, "S").source == "@" .. arg[0] then main() end

return { attach = attach }

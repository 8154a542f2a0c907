#!lua name=onboarding_intake
-- Per-app intake forwarding (onboarding/intake.py; docs/security.md, per-app isolation).
-- Loaded at deploy time by the administrator (`onboarding-redis-acl apply` or
-- `load-functions`), FCALLed by the intake process's user only (`onboarding-intake`; the
-- listener, which parses the payloads, may not call it). Every command inside is checked
-- against the caller's ACL (Redis 7): this function cannot do anything its caller could
-- not do itself; it makes the forwarding of one app's entries atomic.
-- Bump LIBRARY_VERSION with every change of this file: a loader replaces an older library.
local LIBRARY_VERSION = 3

-- Fields the forwarder sets; an app's own fields of these names are dropped.
local RESERVED = {app = true, intake_id = true, intake_refused = true}

-- KEYS: the app's intake stream, the signups stream.
-- ARGV: the intake's consumer group, the app's name, how many entries at most, the largest
-- entry (bytes of all field names and values), the most fields an entry may have.
-- Reads the forwarder's own pending entries first (left by a call that failed half-way),
-- then new ones; for each, in order: XADD to signups with `app` and `intake_id` first, then
-- XACK on the intake. One call is atomic, so an entry is forwarded exactly once: a client
-- dying before or after the call leaves it pending or forwarded, never both. No JSON is
-- parsed here (the listener parses untrusted bytes, bounded); an entry too large or with
-- too many fields is forwarded as a stub (`intake_refused` and the first 1 KiB of its
-- payload, for the event id) that the listener refuses. A call that drains the intake (it read
-- fewer new entries than it could) empties it with XTRIM MAXLEN 0: every entry is forwarded
-- and acknowledged by then, and nothing can arrive within the call, so a signup stays in the
-- intake only until it is forwarded (no second copy of the application to keep or erase).
local function forward_intake(KEYS, ARGV)
  local group, app = ARGV[1], ARGV[2]
  local count, max_bytes, max_fields = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local forwarded, drained = 0, false
  for _, start in ipairs({'0', '>'}) do
    local left = count - forwarded
    if left <= 0 then break end
    local reply = redis.call('XREADGROUP', 'GROUP', group, 'forwarder', 'COUNT', left, 'STREAMS', KEYS[1], start)
    local entries = (reply and reply[1] and reply[1][2]) or {}
    for _, entry in ipairs(entries) do
      local id, fields = entry[1], entry[2]
      if fields then  -- false: trimmed while pending (the app's own MAXLEN); nothing to forward
        local size, payload = 0, ''
        for i = 1, #fields do size = size + #fields[i] end
        for i = 1, #fields, 2 do
          if fields[i] == 'payload' then payload = fields[i + 1] end
        end
        local args = {'app', app, 'intake_id', id}
        if size > max_bytes or #fields > 2 * max_fields then
          args[#args + 1] = 'intake_refused'
          args[#args + 1] = size .. ' bytes in ' .. (#fields / 2) .. ' fields (at most ' .. max_bytes .. ' bytes, '
                            .. max_fields .. ' fields)'
          args[#args + 1] = 'payload'
          args[#args + 1] = string.sub(payload, 1, 1024)
        else
          for i = 1, #fields, 2 do
            if not RESERVED[fields[i]] then
              args[#args + 1] = fields[i]
              args[#args + 1] = fields[i + 1]
            end
          end
        end
        redis.call('XADD', KEYS[2], '*', unpack(args))
        forwarded = forwarded + 1
      end
      redis.call('XACK', KEYS[1], group, id)
    end
    if start == '>' and #entries < left then drained = true end
  end
  if drained then redis.call('XTRIM', KEYS[1], 'MAXLEN', 0) end
  return forwarded
end

local function version()
  return LIBRARY_VERSION
end

redis.register_function('forward_intake', forward_intake)
redis.register_function{function_name = 'onboarding_intake_version', callback = version, flags = {'no-writes'}}

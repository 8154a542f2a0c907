#!lua name=onboarding
-- The onboarding service's Redis Functions (onboarding/functions.py loads them at deploy
-- time, as the administrator: `onboarding-redis-acl apply` or `load-functions`). No role
-- holds EVAL: components only FCALL these, and every command inside is still checked
-- against the caller's ACL. Each function is O(1) or O(N) in its few keys and arguments:
-- none can run long (docs/security.md, busy scripts).
-- Bump LIBRARY_VERSION with every change of this file: a loader replaces an older library.
local LIBRARY_VERSION = 4

-- KEYS: decisions stream, once-only marker, per-event decision key (and channel), review
-- case, review queue, review history, (optional) the decision records stream, and (optional,
-- then the records stream is given too) the app's decision feed `<decisions>:app:<app>`.
-- ARGV: payload, marker TTL, event id, decision TTL, decision, user id, published at,
-- review deadline (epoch), why, (optional) the decision record JSON ('' for none), and with
-- the feed its MAXLEN ~ bound and the app's name (onboarding/decision.py). The marker is set
-- only after XADD succeeded; a `review` opens its case (with the app, for the final decision's
-- feed) in the same step, the decision's record is appended in the same step (one record per
-- published decision, never one without the other), and so is the app's copy.
local function publish_decision(KEYS, ARGV)
  local existing = redis.call('GET', KEYS[2])
  if existing then
    return {0, existing}
  end
  if KEYS[8] and KEYS[8] ~= KEYS[1] .. ':app:' .. ARGV[12] then
    return redis.error_reply('ERR the app feed key is not <decisions>:app:<app>')
  end
  local id = redis.call('XADD', KEYS[1], '*', 'event_id', ARGV[3], 'payload', ARGV[1])
  redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[4])
  redis.call('PUBLISH', KEYS[3], ARGV[1])
  if ARGV[5] == 'review' and redis.call('EXISTS', KEYS[4]) == 0 then
    redis.call('HSET', KEYS[4], 'state', 'open', 'user_id', ARGV[6], 'opened_at', ARGV[7], 'deadline', ARGV[8],
               'decision', ARGV[1], 'version', 0, 'entry_id', id)
    if KEYS[8] then
      redis.call('HSET', KEYS[4], 'app', ARGV[12])
    end
    redis.call('ZADD', KEYS[5], ARGV[8], ARGV[3])
    redis.call('XADD', KEYS[6], '*', 'case_id', ARGV[3], 'action', 'opened', 'actor', 'onboarding', 'at', ARGV[7],
               'detail', ARGV[9], 'user_id', ARGV[6])
  end
  if KEYS[7] and ARGV[10] and ARGV[10] ~= '' then
    redis.call('XADD', KEYS[7], '*', 'event_id', ARGV[3], 'user_id', ARGV[6], 'decision_entry', id, 'record', ARGV[10])
  end
  if KEYS[8] then
    redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[11], '*', 'event_id', ARGV[3], 'payload', ARGV[1])
  end
  return {1, id}
end

-- KEYS: awaiting set, awaiting conf hash, the decision's marker. ARGV: event id, accept
-- time, conf JSON (onboarding/awaiting.py). Skipped when the decision is out.
local function record_accepted(KEYS, ARGV)
  if redis.call('EXISTS', KEYS[3]) == 1 then
    return 0
  end
  redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
  redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3])
  return 1
end

-- KEYS: the decision's once-only marker, the per-event decision key (and channel), the
-- event id's fingerprint, and (optional, for an app's signup) the app's refusals feed
-- `<decisions>:app:<app>:refusals`. ARGV: refusal JSON, TTL, whether an accepted signup's id
-- blocks the answer ('1'), and with the feed: its MAXLEN ~ bound, the app's name, the
-- decisions stream's name, the service's event id (onboarding/refusal.py). The feed gets the
-- refusal only when the key does, and only the feed of the app whose prefix the event id has.
local function answer_refusal(KEYS, ARGV)
  if KEYS[4] then
    local decisions, app = ARGV[6], ARGV[5]
    if KEYS[4] ~= decisions .. ':app:' .. app .. ':refusals'
        or KEYS[2] ~= decisions .. ':event:' .. ARGV[7]
        or string.sub(ARGV[7], 1, #app + 1) ~= app .. ':' then
      return redis.error_reply('ERR the refusals feed is not <decisions>:app:<app>:refusals of the event id\'s app')
    end
  end
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
  if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
  redis.call('PUBLISH', KEYS[2], ARGV[1])
  if KEYS[4] then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'event_id', ARGV[7], 'payload', ARGV[1])
  end
  return 1
end

-- KEYS: case, queue, history. ARGV: reviewer, now, case id (review/store.py).
local function review_claim(KEYS, ARGV)
  local state = redis.call('HGET', KEYS[1], 'state')
  if not state then return {'no_case'} end
  if state == 'decided' then return {'decided', redis.call('HGET', KEYS[1], 'decided_by')} end
  if state == 'claimed' then
    local holder = redis.call('HGET', KEYS[1], 'assignee')
    if holder == ARGV[1] then return {'ok'} end
    return {'claimed', holder}
  end
  redis.call('HSET', KEYS[1], 'state', 'claimed', 'assignee', ARGV[1], 'claimed_at', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  redis.call('XADD', KEYS[3], '*', 'case_id', ARGV[3], 'action', 'claimed', 'actor', ARGV[1], 'at', ARGV[2], 'detail', '')
  return {'ok'}
end

-- KEYS: case, queue, history. ARGV: reviewer, now, case id, force ('1' lets a lead release
-- someone else's claim).
local function review_release(KEYS, ARGV)
  local state = redis.call('HGET', KEYS[1], 'state')
  if not state then return {'no_case'} end
  if state == 'decided' then return {'decided', redis.call('HGET', KEYS[1], 'decided_by')} end
  if state == 'open' then return {'ok'} end
  local holder = redis.call('HGET', KEYS[1], 'assignee')
  if holder ~= ARGV[1] and ARGV[4] ~= '1' then return {'claimed', holder} end
  redis.call('HSET', KEYS[1], 'state', 'open', 'assignee', '', 'claimed_at', '')
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  local detail = ''
  if holder ~= ARGV[1] then detail = 'released the claim of ' .. holder end
  redis.call('XADD', KEYS[3], '*', 'case_id', ARGV[3], 'action', 'released', 'actor', ARGV[1], 'at', ARGV[2],
             'detail', detail)
  return {'ok'}
end

-- KEYS: case, queue, history, decisions stream, decision key, final marker, and (optional)
-- the case's app feed `<decisions>:app:<app>` (the app the publish step stored on the case).
-- ARGV: reviewer, now, case id, outcome, reason, final payload, decision TTL, marker TTL,
--       expected version, case TTL, and with the feed its MAXLEN ~ bound.
local function review_decide(KEYS, ARGV)
  local state = redis.call('HGET', KEYS[1], 'state')
  if not state then return {'no_case'} end
  if state == 'decided' then
    return {'decided', redis.call('HGET', KEYS[1], 'decided_by'), redis.call('HGET', KEYS[1], 'outcome'),
            redis.call('GET', KEYS[6]) or ''}
  end
  if state == 'claimed' and redis.call('HGET', KEYS[1], 'assignee') ~= ARGV[1] then
    return {'claimed', redis.call('HGET', KEYS[1], 'assignee')}
  end
  if redis.call('HGET', KEYS[1], 'version') ~= ARGV[9] then return {'stale'} end
  if redis.call('EXISTS', KEYS[6]) == 1 then return {'decided', '', '', redis.call('GET', KEYS[6])} end
  if KEYS[7] then
    local app = redis.call('HGET', KEYS[1], 'app')
    if not app or KEYS[7] ~= KEYS[4] .. ':app:' .. app then return {'app_feed', app or ''} end
  end
  if state == 'open' then
    redis.call('XADD', KEYS[3], '*', 'case_id', ARGV[3], 'action', 'claimed', 'actor', ARGV[1], 'at', ARGV[2],
               'detail', '')
  end
  redis.call('HSET', KEYS[1], 'state', 'decided', 'assignee', ARGV[1], 'decided_by', ARGV[1], 'outcome', ARGV[4],
             'reason', ARGV[5], 'decided_at', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'version', 1)
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('XADD', KEYS[3], '*', 'case_id', ARGV[3], 'action', 'decided', 'actor', ARGV[1], 'at', ARGV[2],
             'detail', ARGV[4] .. ': ' .. ARGV[5])
  local id = redis.call('XADD', KEYS[4], '*', 'event_id', ARGV[3], 'payload', ARGV[6])
  if KEYS[7] then
    redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[11], '*', 'event_id', ARGV[3], 'payload', ARGV[6])
  end
  redis.call('SET', KEYS[6], id, 'EX', ARGV[8])
  redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[7])
  redis.call('PUBLISH', KEYS[5], ARGV[6])
  redis.call('EXPIRE', KEYS[1], ARGV[10])
  return {'ok', id}
end

-- KEYS: dead-letter stream, signups stream. ARGV: the dead letter's id, then the original
-- entry's fields and values (listener/deadletters.py). Deletes the dead letter and
-- re-appends its fields atomically; one someone else already replayed (XDEL returns 0) is
-- not appended a second time.
local function replay_dead_letter(KEYS, ARGV)
  if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
    return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
  end
  return false
end

local function version()
  return LIBRARY_VERSION
end

redis.register_function('publish_decision', publish_decision)
redis.register_function('record_accepted', record_accepted)
redis.register_function('answer_refusal', answer_refusal)
redis.register_function('review_claim', review_claim)
redis.register_function('review_release', review_release)
redis.register_function('review_decide', review_decide)
redis.register_function('replay_dead_letter', replay_dead_letter)
redis.register_function{function_name = 'onboarding_version', callback = version, flags = {'no-writes'}}

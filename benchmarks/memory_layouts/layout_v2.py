"""Prototype Lua for the proposed layout ("v2"): diff bodies once in a per-model stream,
each object's index a string of 16-byte records, today's keys kept as the "legacy lane"
(read until they age out; still written for a diff whose score falls below the
stream's last id: a fixed, earlier score).

Keys of a model (cluster: same {hash tag} as today):
  <p>log:{label}        stream; entry id = sid(score); fields p=<holder pk>, m=<member>
                        (+ i=<signed decimal id> for the compact format, whose member
                        has no "id")
  <p>ix:{label}:<pk>    string; records of 16 bytes: the score's stream id in binary
                        (6 B ms, 2 B seq, big-endian), the 8 id bytes
  <p>{label}:<pk>       legacy object zset (full members), as today
  <p>feed:{label}       legacy feed zset (id+pk pointers), as today
  <p>horizon:{label}, <p>born:{label}:<pk>   unchanged

sid(score) = "<floor(score)>-<(score - floor) / ulp(floor)>": exact and order-keeping
for every double (ulp = 2^-12 ms for 2004-2039, so seq < 4096).

This is a prototype for measurement and a correctness check, not the package's code.
"""

from __future__ import annotations

COMMON = r"""
local function fmt(value) return string.format('%.17g', value) end
local function sid(score)
  local ms = math.floor(score)
  local _, e = math.frexp(ms)
  return string.format('%.0f-%.0f', ms, (score - ms) / 2 ^ (e - 53))
end
local function sid_score(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  local _, e = math.frexp(ms)
  return ms + seq * 2 ^ (e - 53)
end
-- A range bound ("(x", "x", "-inf") as (number, exclusive).
local function bound_of(text)
  local exclusive = string.sub(text, 1, 1) == '('
  local body = exclusive and string.sub(text, 2) or text
  if body == '-inf' then return -math.huge, exclusive end
  if body == '+inf' or body == 'inf' then return math.huge, exclusive end
  return tonumber(body), exclusive
end
-- Index records: 16 bytes: the score as its stream id in binary (6 bytes of whole ms,
-- 2 of seq, big-endian: byte order is score order), then the 8 id bytes. Plain Lua,
-- no struct library (fakeredis has none). Fits scores from 2^36 ms (1972) to 2^48 ms.
local function pack_score(score)
  local ms = math.floor(score)
  local _, e = math.frexp(ms)
  local seq = (score - ms) / 2 ^ (e - 53)
  local out = {}
  for k = 6, 1, -1 do out[k] = string.char(ms % 256) ms = math.floor(ms / 256) end
  out[7], out[8] = string.char(math.floor(seq / 256)), string.char(seq % 256)
  return table.concat(out)
end
local function unpack_score(text, at) -- the 8 bytes from position at
  local ms = 0
  for k = at, at + 5 do ms = ms * 256 + string.byte(text, k) end
  local seq = string.byte(text, at + 6) * 256 + string.byte(text, at + 7)
  local _, e = math.frexp(ms)
  return ms + seq * 2 ^ (e - 53)
end
local function packable(score) return score >= 2 ^ 36 and score < 2 ^ 48 end
local function rec_score(key, k) -- k: 0-based record number
  return unpack_score(redis.call('GETRANGE', key, 16 * k, 16 * k + 7), 1)
end
-- Number of the first record after the bound (score > x, or >= x when inclusive).
local function first_after(key, value, exclusive)
  local lo, hi = 0, redis.call('STRLEN', key) / 16
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local s = rec_score(key, mid)
    if s > value or (not exclusive and s == value) then hi = mid else lo = mid + 1 end
  end
  return lo
end
local function has_diffs(feed, log)
  return redis.call('ZCARD', feed) > 0 or redis.call('XLEN', log) > 0
end
"""

GUARD = r"""
local function guard_horizon(hkey, feed, log, now, age)
  local h = redis.call('HMGET', hkey, 'from', 'age')
  local from, known_age = tonumber(h[1]), tonumber(h[2])
  if not from then
    if has_diffs(feed, log) then from = now - tonumber(age) * 1000 else from = now - 0.002 end
    redis.call('HSET', hkey, 'from', fmt(from), 'age', age)
  elseif not known_age or known_age ~= tonumber(age) then
    if known_age and known_age < tonumber(age) then
      local dropped = now - known_age * 1000
      if dropped > from then from = dropped end
    end
    redis.call('HSET', hkey, 'from', fmt(from), 'age', age)
  end
  return from
end
"""

READ_GUARD = r"""
local function read_horizon(hkey, feed, log, now, age)
  local h = redis.call('HMGET', hkey, 'from', 'age')
  local from, known_age = tonumber(h[1]), tonumber(h[2])
  if not from then
    if has_diffs(feed, log) then return now - tonumber(age) * 1000 end
    from = now - 0.002
    redis.call('HSET', hkey, 'from', fmt(from))
    return from
  end
  if known_age and known_age < tonumber(age) then
    local dropped = now - known_age * 1000
    if dropped > from then from = dropped end
  end
  return from
end
"""

# KEYS per diff (6): legacy set, legacy feed, horizon, birth, index, log.
# ARGV: ttl ms, max_element_age s; per diff (6): member, entry (id hex .. pk), fixed or
# '', creates ('1', 'b:<id>' or ''), maybe stored ('1' or ''), signed decimal id for the
# compact format ('' for the default one).
WRITE_V2 = (
    COMMON
    + GUARD
    + r"""
local function step(value)
  local _, exponent = math.frexp(value)
  local spacing = 2 ^ (exponent - 53)
  if spacing > 0.001 then return spacing end
  return 0.001
end
local function id_bytes(hex)
  return (string.gsub(hex, '..', function(h) return string.char(tonumber(h, 16)) end))
end
local top = {}
-- Newest score of a key: 'z' sorted set, 's' stream (its last generated id, which
-- XADD must exceed even after trimming), 'x' index string.
local function newest(key, kind)
  local value = top[key]
  if value == nil then
    value = false
    if kind == 'z' then
      local found = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')[2]
      value = found and tonumber(found) or false
    elseif kind == 's' then
      if redis.call('EXISTS', key) == 1 then
        local info = redis.call('XINFO', 'STREAM', key)
        for j = 1, #info, 2 do
          if info[j] == 'last-generated-id' then value = sid_score(info[j + 1]) end
        end
      end
    else
      local n = redis.call('STRLEN', key)
      if n >= 16 then value = rec_score(key, n / 16 - 1) end
    end
    top[key] = value
  end
  return value
end
local function object_newest(set, ix)
  local a, b = newest(set, 'z'), newest(ix, 'x')
  if a and b then return math.max(a, b) end
  return a or b
end
local ROUNDS, LIMIT = 8, 128
-- First score at or after a fixed one that no lane holds (the index's scores are the
-- log's); nil when ROUNDS reads of LIMIT entries per key are not enough.
local function first_free(score, zkeys, log)
  for _ = 1, ROUNDS do
    local moved = false
    for _, key in ipairs(zkeys) do
      local run = redis.call(
        'ZRANGEBYSCORE', key, fmt(score), '+inf', 'WITHSCORES', 'LIMIT', 0, LIMIT)
      for j = 2, #run, 2 do
        if tonumber(run[j]) > score then break end
        score = score + step(score)
        moved = true
      end
    end
    local run = redis.call('XRANGE', log, sid(score), '+', 'COUNT', LIMIT)
    for _, item in ipairs(run) do
      if sid_score(item[1]) > score then break end
      score = score + step(score)
      moved = true
    end
    if not moved then return score end
  end
  return nil
end
local function by_clock(clock, list)
  local score = clock
  for _, last in ipairs(list) do
    if last and last >= score then score = last + step(last) end
  end
  return score
end
local ttl, age = ARGV[1], ARGV[2]
local now = redis.call('TIME')
local clock = tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000
local scores, touched, guarded, after_fixed = {}, {}, {}, {}
for i = 1, #KEYS / 6 do
  local k = 6 * (i - 1)
  local set, feed, hkey, bkey, ix, log =
    KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6]
  local a = 2 + 6 * (i - 1)
  local member, entry, fixed = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local creates, maybe, int_id = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  local horizon = guarded[hkey]
  if not horizon then
    horizon = guard_horizon(hkey, feed, log, clock, age)
    guarded[hkey] = horizon
  end
  -- Written already? The legacy lane by its feed entry (as today); the new lane by the
  -- id in the object's index, searched only for a diff that may have reached Redis.
  local existing = entry ~= '' and redis.call('ZSCORE', feed, entry)
  if not existing and maybe == '1' and entry ~= '' then
    local index = redis.call('GET', ix)
    if index then
      local needle, from = id_bytes(string.sub(entry, 1, 16)), 1
      while true do
        local at = string.find(index, needle, from, true)
        if not at then break end
        if (at - 1) % 16 == 8 then
          existing = fmt(unpack_score(index, at - 8))
          break
        end
        from = at + 1
      end
    end
  end
  if string.sub(creates, 1, 2) == 'b:' then
    local marker = '|' .. string.sub(creates, 3)
    local current = redis.call('GET', bkey)
    local last = object_newest(set, ix)
    if last and not (current and string.find(current, marker, 1, true)) then
      redis.call('SET', bkey, fmt(by_clock(clock, {last})) .. marker, 'PX', ttl)
    end
    scores[i] = fmt(clock)
  elseif existing then
    scores[i] = existing
  else
    local earlier = creates == '1' and object_newest(set, ix)
    local score = nil
    if fixed ~= '' and (tonumber(fixed) < horizon or tonumber(fixed) > clock + 60000) then
      after_fixed[fixed] = 'clock'
    end
    if fixed ~= '' and after_fixed[fixed] ~= 'clock' then
      local start = tonumber(fixed)
      local previous = after_fixed[fixed]
      if previous then start = previous + step(previous) end
      score = first_free(start, {set, feed}, log)
      if score and earlier and score <= earlier then score = nil end
      after_fixed[fixed] = score or 'clock'
    end
    if not score then
      score = by_clock(clock, {newest(set, 'z'), newest(feed, 'z'), newest(log, 's')})
      if fixed ~= '' then member = '{"t":' .. fixed .. ',' .. string.sub(member, 2) end
    end
    local text = fmt(score)
    local last_log = newest(log, 's')
    if packable(score) and (not last_log or score > last_log) then
      -- The new lane: appended to the model's log and the object's index.
      local pk = string.sub(entry, 17)
      if int_id == '' then
        redis.call('XADD', log, sid(score), 'p', pk, 'm', member)
      else
        redis.call('XADD', log, sid(score), 'p', pk, 'i', int_id, 'm', member)
      end
      redis.call('APPEND', ix, pack_score(score) .. id_bytes(string.sub(entry, 1, 16)))
      top[log], top[ix] = score, score
    else
      -- Below the log's last id (a fixed, earlier score): the legacy lane, with the id
      -- in the member (a compact member has none) for the feed's fetch by id.
      if int_id ~= '' then
        member = '{"id":"' .. string.sub(entry, 1, 16) .. '",' .. string.sub(member, 2)
      end
      redis.call('ZADD', set, text, member)
      redis.call('ZADD', feed, text, entry)
      for _, key in ipairs({set, feed}) do
        local last = top[key]
        if last ~= nil and (last == false or score > last) then top[key] = score end
      end
      if not touched[set] then touched[set] = true redis.call('PEXPIRE', set, ttl) end
      if not touched[feed] then touched[feed] = true redis.call('PEXPIRE', feed, ttl) end
    end
    if earlier then redis.call('SET', bkey, text, 'PX', ttl) end
    scores[i] = text
  end
  for _, key in ipairs({ix, log, bkey}) do
    if not touched[key] then
      touched[key] = true
      redis.call('PEXPIRE', key, ttl)
    end
  end
end
return scores
"""
)

# As diffs.feed's prelude, with the log in the horizon check.
READ_PRELUDE = (
    COMMON
    + READ_GUARD
    + r"""
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000
local function lower_bound(from)
  if ARGV[1] ~= '' then return ARGV[1] end
  local floor = now_ms - tonumber(ARGV[2]) * 1000
  if from > floor then floor = from end
  return fmt(floor)
end
"""
)

# One object's page. KEYS: legacy set, legacy feed, horizon, birth, index, log.
# ARGV: bound ('(<score>' or ''), max_element_age, limit, byte budget.
# Returns {sec, usec, from, birth or '', has_more, member, score, id, ...}: id is the
# log entry's i field (compact format) or ''.
OBJECT_PAGE_V2 = (
    READ_PRELUDE
    + r"""
local set, feed, hkey, bkey, ix, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local from = read_horizon(hkey, feed, log, now_ms, ARGV[2])
local low = lower_bound(from)
local birth = redis.call('GET', bkey)
birth = birth and tonumber(string.match(birth, '^[^|]+'))
if birth then
  local start = bound_of(low)
  if birth > start then low = fmt(birth) end
end
local function before_birth(member)
  if not birth then return false end
  local late = string.match(member, '^{"t":([^,]+),')
  return late ~= nil and tonumber(late) ~= nil and tonumber(late) < birth
end
local low_value, low_exclusive = bound_of(low)
-- The legacy lane, in growing batches.
local lz, lz_at, lz_offset, lz_done, lz_batch = {}, 1, 0, false, 4
local function legacy_head()
  if lz_at > #lz and not lz_done then
    lz = redis.call('ZRANGEBYSCORE', set, low, '(+inf', 'WITHSCORES', 'LIMIT', lz_offset, lz_batch)
    lz_at, lz_offset = 1, lz_offset + #lz / 2
    if #lz < 2 * lz_batch then lz_done = true end
    if lz_batch < 64 then lz_batch = lz_batch * 2 end
  end
  if lz_at > #lz then return nil end
  return tonumber(lz[lz_at + 1])
end
-- The new lane: index records from the first after the bound.
local n = redis.call('STRLEN', ix) / 16
local rec = first_after(ix, low_value, low_exclusive)
-- Records are read in blocks of 64 (one GETRANGE), scores decoded on use.
local block, block_start = '', rec
local function new_head()
  if rec >= n then return nil end
  if rec - block_start >= #block / 16 then
    block_start = rec
    block = redis.call('GETRANGE', ix, 16 * rec, 16 * (rec + 64) - 1)
  end
  local at = 16 * (rec - block_start)
  return unpack_score(block, at + 1)
end
local limit, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local result = {now[1], now[2], fmt(from), birth and fmt(birth) or '', 0}
local taken, bytes = 0, 0
while true do
  local a, b = legacy_head(), new_head()
  if not a and not b then return result end
  local member, score, id
  if b and (not a or b < a) then
    score = b
    rec = rec + 1
    local found = redis.call('XRANGE', log, sid(b), sid(b))[1]
    if found then
      local f = found[2]
      for j = 1, #f, 2 do
        if f[j] == 'm' then member = f[j + 1] elseif f[j] == 'i' then id = f[j + 1] end
      end
    end
  else
    member, score = lz[lz_at], a
    lz_at = lz_at + 2
  end
  if member then
    if taken >= limit or (taken > 0 and bytes + #member > budget) then
      result[5] = 1
      return result
    end
    if not before_birth(member) then
      result[#result + 1] = member
      result[#result + 1] = fmt(score)
      result[#result + 1] = id or ''
      taken, bytes = taken + 1, bytes + #member
    end
  end
end
"""
)

# A feed page, both lanes merged by score. KEYS: legacy feed, horizon, log.
# ARGV: bound, max_element_age, most entries (limit + 1), byte budget.
# Returns {sec, usec, from, cut by the budget (0/1), then per entry: score, pk, member ('' for a legacy pointer,
# fetched later), id (compact i field, or the legacy pointer's id hex)}.
FEED_PAGE_V2 = (
    READ_PRELUDE
    + r"""
local feed, hkey, log = KEYS[1], KEYS[2], KEYS[3]
local from = read_horizon(hkey, feed, log, now_ms, ARGV[2])
local low = lower_bound(from)
local want, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local value, exclusive = bound_of(low)
local start = (exclusive and '(' or '') .. sid(value)
local stream = redis.call('XRANGE', log, start, '+', 'COUNT', want)
local legacy = redis.call('ZRANGEBYSCORE', feed, low, '(+inf', 'WITHSCORES', 'LIMIT', 0, want)
local result = {now[1], now[2], fmt(from), 0}
local s, l, taken, bytes = 1, 1, 0, 0
while taken < want do
  local a = legacy[l] and tonumber(legacy[l + 1])
  local b = stream[s] and sid_score(stream[s][1])
  if not a and not b then break end
  if b and (not a or b < a) then
    local f, pk, member, id = stream[s][2], '', '', ''
    for j = 1, #f, 2 do
      if f[j] == 'p' then pk = f[j + 1] elseif f[j] == 'm' then member = f[j + 1]
      elseif f[j] == 'i' then id = f[j + 1] end
    end
    if taken > 0 and bytes + #member > budget then result[4] = 1 break end
    bytes = bytes + #member
    for _, v in ipairs({fmt(b), pk, member, id}) do result[#result + 1] = v end
    s = s + 1
  else
    local entry = legacy[l]
    for _, v in ipairs({fmt(a), string.sub(entry, 17), '', string.sub(entry, 1, 16)}) do
      result[#result + 1] = v
    end
    l = l + 2
  end
  taken = taken + 1
end
return result
"""
)

# Trims one object's index to the records scored at or above ARGV[1]. KEYS: index.
PRUNE_INDEX_V2 = (
    COMMON
    + r"""
local n = redis.call('STRLEN', KEYS[1]) / 16
if n == 0 then return 0 end
local keep = first_after(KEYS[1], tonumber(ARGV[1]), false)
if keep == 0 then return 0 end
if keep >= n then redis.call('DEL', KEYS[1]) return n end
redis.call('SET', KEYS[1], redis.call('GETRANGE', KEYS[1], 16 * keep, -1), 'KEEPTTL')
return keep
"""
)

# Trims the log below ARGV[1] (a score). KEYS: log.
PRUNE_LOG_V2 = (
    COMMON
    + r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', sid(tonumber(ARGV[1])))
"""
)

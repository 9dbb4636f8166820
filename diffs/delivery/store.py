"""Writing diffs to Redis: each to its object's sorted set and its model's feed.

All the diffs of one write of the queue go in as few script calls as their size allows:
a call holds at most ``CHUNK_SIZE`` diffs and about ``write_batch_bytes`` of members (a
larger diff goes alone), so one call never holds Redis for long. The script assigns scores inside
Redis: the server's clock in epoch milliseconds, raised when needed so that it is
strictly greater than every score already in the feed and in the object's set. Scripts
run one at a time, so the order of scores is the order in which diffs reached Redis,
whichever process sent them: a client reading "everything after my cursor" can never
miss a diff that was written later with a smaller score, and never see one twice.

Every write also sets both keys to expire ``max_element_age`` after it, brings the
model's horizon up to date (``diffs.horizon``) and, for the creation of an object whose
pk already has diffs (a deleted row's pk used again), records the object's birth
(``diffs.keys.KeyLayout.birth_key``) so that reads of the new row start there.

Writes are idempotent: a diff whose feed entry (diff id + pk) is already there is
left alone, so a write retried after a timeout, or recovered twice from the outbox,
is stored once.

A diff with a fixed timestamp (``_last_save_at``, or ``create(timestamp=...)``) is
written at that score instead, or at the first free score after it (scores are never
shared: a cursor at a shared score would skip the others). Finding it takes a bounded
number of steps, each at least the spacing of doubles at that magnitude; when no free
score is found within them, the diff is written by the clock like any other and keeps
its fixed time in ``"t"`` (``Diff.timestamp``). Such a diff can land behind a cursor a
client already holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from diffs.connection import cached_script
from diffs.delivery.record import OutgoingDiff
from diffs.horizon import GUARD_HORIZON_LUA
from diffs.layout import current_layout
from diffs.settings import get_settings

#: Most diffs one script call writes, whatever their size.
CHUNK_SIZE = 500

# ARGV[1]: how long (ms) a key lives after its last write; ARGV[2]: max_element_age
# (seconds), for the horizon. For diff i (1-based): KEYS[4i-3] its object's sorted set,
# KEYS[4i-2] the model feed, KEYS[4i-1] the model's horizon, KEYS[4i] the object's birth
# key; ARGV[4i-1] member, ARGV[4i] feed member, ARGV[4i+1] a fixed score or "",
# ARGV[4i+2] "1" when the diff records its own object's creation, or "b:<id>" for the
# birth of an object created without a diff (member and feed member then empty).
# A birth key holds a score, or "<score>|<id>" when written without a diff. The last
# ARGV is the channel on which the feed keys this call added to are published, once
# each, to wake readers waiting for the next diff (diffs.live).
# Returns each diff's score as text. Scores are formatted with %.17g: Lua's default
# number-to-string conversion keeps only 14 digits, which would round epoch
# milliseconds to whole milliseconds.
WRITE_SCRIPT = (
    GUARD_HORIZON_LUA
    + """
local function fmt(value)
  return string.format('%.17g', value)
end
-- The smallest step that moves a score: a microsecond, or the spacing of doubles at
-- that magnitude when it is coarser (far from 1970, 0.001 may round to nothing).
local function step(value)
  local _, exponent = math.frexp(value)
  local spacing = 2 ^ (exponent - 53)
  if spacing > 0.001 then return spacing end
  return 0.001
end
-- The highest score of each key, read once per call and then kept up to date here:
-- a write of a hundred diffs of one model reads its feed's top once, not a hundred
-- times (false: the key is empty).
local top = {}
local function newest(key)
  local value = top[key]
  if value == nil then
    local found = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')[2]
    value = found and tonumber(found) or false
    top[key] = value
  end
  return value
end
-- The first score at or after a fixed one that neither key holds, found in at most
-- ROUNDS range reads of LIMIT entries per key; nil when that is not enough.
local ROUNDS, LIMIT = 8, 128
local function first_free(score, keys)
  for _ = 1, ROUNDS do
    local moved = false
    for _, key in ipairs(keys) do
      local run = redis.call(
        'ZRANGEBYSCORE', key, fmt(score), '+inf', 'WITHSCORES', 'LIMIT', 0, LIMIT)
      for j = 2, #run, 2 do
        if tonumber(run[j]) > score then break end
        score = score + step(score)
        moved = true
      end
    end
    if not moved then return score end
  end
  return nil
end
local function by_clock(clock, keys)
  local score = clock
  for _, key in ipairs(keys) do
    local last = newest(key)
    if last and last >= score then
      score = last + step(last)
    end
  end
  return score
end
local ttl, age = ARGV[1], ARGV[2]
local now = redis.call('TIME')
local clock = tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000
local scores = {}
local touched = {}
local guarded = {}
-- Per call, the last score given to each fixed value ('clock' once none was found):
-- a thousand diffs sharing one fixed time take consecutive free scores instead of each
-- searching from the start.
local after_fixed = {}
local added = {}
for i = 1, #KEYS / 4 do
  local keys = {KEYS[4 * i - 3], KEYS[4 * i - 2]}
  local base = 4 * i - 2
  local member, entry = ARGV[base + 1], ARGV[base + 2]
  local fixed, creates = ARGV[base + 3], ARGV[base + 4]
  local horizon = guarded[KEYS[4 * i - 1]]
  if not horizon then
    horizon = guard_horizon(KEYS[4 * i - 1], keys[2], clock, age)
    guarded[KEYS[4 * i - 1]] = horizon
  end
  local existing = entry ~= '' and redis.call('ZSCORE', keys[2], entry)
  if string.sub(creates, 1, 2) == 'b:' then
    -- A creation without a diff: only the birth, above what the set holds, once.
    local marker = '|' .. string.sub(creates, 3)
    local current = redis.call('GET', KEYS[4 * i])
    local last = newest(keys[1])
    if last and not (current and string.find(current, marker, 1, true)) then
      local birth = by_clock(clock, {keys[1]})
      redis.call('SET', KEYS[4 * i], fmt(birth) .. marker, 'PX', ttl)
    end
    scores[i] = fmt(clock)
  elseif existing then
    scores[i] = existing
  else
    local earlier = creates == '1' and newest(keys[1])
    local score = nil
    -- Below the horizon, a diff's cursor would read as expired; more than a minute past
    -- the Redis clock (an application server's clock ahead), every later diff of the
    -- feed would sort behind it and its cursor read as "in the future": the clock
    -- takes either.
    if fixed ~= '' and (tonumber(fixed) < horizon or tonumber(fixed) > clock + 60000) then
      after_fixed[fixed] = 'clock'
    end
    if fixed ~= '' and after_fixed[fixed] ~= 'clock' then
      local start = tonumber(fixed)
      local previous = after_fixed[fixed]
      if previous then start = previous + step(previous) end
      score = first_free(start, keys)
      -- A new row on a pk with history must sort after that history (its birth).
      if score and earlier and score <= earlier then score = nil end
      after_fixed[fixed] = score or 'clock'
    end
    if not score then
      score = by_clock(clock, keys)
      if fixed ~= '' then
        member = '{"t":' .. fixed .. ',' .. string.sub(member, 2)
      end
    end
    local text = fmt(score)
    redis.call('ZADD', keys[1], text, member)
    redis.call('ZADD', keys[2], text, entry)
    added[keys[2]] = true
    if earlier then
      redis.call('SET', KEYS[4 * i], text, 'PX', ttl)
    end
    for _, key in ipairs(keys) do
      local last = top[key]
      if last ~= nil and (last == false or score > last) then
        top[key] = tonumber(text)
      end
    end
    scores[i] = text
  end
  -- Once per key and call, right after its first write: should a later command of
  -- this call fail, what was written already still expires. The object's birth key
  -- (when it has one) lives as long as its set: the earlier row's diffs stay hidden
  -- for as long as they are there.
  for _, key in ipairs({keys[1], keys[2], KEYS[4 * i]}) do
    if not touched[key] then
      touched[key] = true
      redis.call('PEXPIRE', key, ttl)
    end
  end
end
-- pcall: a Redis user whose ACL allows no channels still writes (readers that wait
-- then re-read every second instead of being woken, see diffs.live).
for feed in pairs(added) do redis.pcall('PUBLISH', ARGV[#ARGV], feed) end
return scores
"""
)


def _script(client: redis.Redis) -> Any:
    return cached_script(client, WRITE_SCRIPT)


def write_many(
    client: redis.Redis, diffs: Sequence[OutgoingDiff], *, keep_for: float | None = None
) -> list[float]:
    """Write ``diffs`` in order; return their scores (one round trip per chunk).

    Each key written expires ``keep_for`` seconds (default: ``max_element_age``) later.
    """
    ttl_ms = str(max(1, round((keep_for or get_settings().max_element_age) * 1000)))
    if not is_cluster(client):
        return _write_in_chunks(client, diffs, ttl_ms)
    # On Redis Cluster a script may only touch keys of one hash slot: one call per slot
    # (per model, see diffs.keys), each in the order the diffs were made.
    by_slot: dict[int, list[int]] = {}
    for index, diff in enumerate(diffs):
        by_slot.setdefault(key_slot(diff.key.encode()), []).append(index)
    scores = [0.0] * len(diffs)
    for indexes in by_slot.values():
        written = _write_in_chunks(client, [diffs[i] for i in indexes], ttl_ms)
        for index, score in zip(indexes, written, strict=True):
            scores[index] = score
    return scores


def write_one(client: redis.Redis, diff: OutgoingDiff) -> float:
    """Write one diff now, outside the queue; return the score it was given."""
    [score] = write_many(client, [diff])
    return score


def is_cluster(client: object) -> bool:
    """True for a Redis Cluster client."""
    return isinstance(client, RedisCluster)


def _write_in_chunks(
    client: redis.Redis, diffs: Sequence[OutgoingDiff], ttl_ms: str
) -> list[float]:
    scores: list[float] = []
    script = _script(client)
    age = repr(float(get_settings().max_element_age))
    channel = current_layout().changes_channel
    for chunk in chunks(diffs, get_settings().write_batch_bytes):
        keys: list[str] = []
        args: list[str] = [ttl_ms, age]
        for diff in chunk:
            keys += diff.script_keys()
            args += diff.script_args()
        args.append(channel)
        scores.extend(float(score) for score in script(keys=keys, args=args))
    return scores


def chunks(diffs: Sequence[OutgoingDiff], max_bytes: int) -> Iterator[Sequence[OutgoingDiff]]:
    """Cut ``diffs`` into runs of at most ``CHUNK_SIZE`` diffs and about ``max_bytes``
    (a run always holds at least one diff, so a larger diff goes alone)."""
    start, size = 0, 0
    for index, diff in enumerate(diffs):
        cost = diff.script_bytes
        full = index - start >= CHUNK_SIZE or size + cost > max_bytes
        if full and index > start:
            yield diffs[start:index]
            start, size = index, 0
        size += cost
    if start < len(diffs):
        yield diffs[start:]

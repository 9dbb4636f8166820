"""Writing diffs to Redis: each once, in its model's log, with a record in its object's
index (``diffs.lanes``; with ``storage: "sets"``, or for a fixed score below the log's
newest, to its object's sorted set and its model's feed instead).

All the diffs of one write of the queue go in as few script calls as their size allows:
a call holds at most ``CHUNK_SIZE`` diffs and about ``write_batch_bytes`` of members (a
larger diff goes alone), so one call never holds Redis for long. The script assigns scores inside
Redis: the server's clock in epoch milliseconds, raised when needed so that it is
strictly greater than every score already in the log, the feed and the object's set. Scripts
run one at a time, so the order of scores is the order in which diffs reached Redis,
whichever process sent them: a client reading "everything after my cursor" can never
miss a diff that was written later with a smaller score, and never see one twice.

Every write also sets the keys it wrote to expire ``max_element_age`` after it, brings the
model's horizon up to date (``diffs.horizon``) and, for the creation of an object whose
pk already has diffs (a deleted row's pk used again), records the object's birth
(``diffs.keys.KeyLayout.birth_key``) so that reads of the new row start there.

Writes are idempotent: a diff whose feed entry (diff id + pk) is already there, or,
when it may have reached Redis before (a write that timed out or failed part way, an
outbox row), whose id is in its object's index, is left alone: it is stored once.

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
from diffs.lanes import LANES_LUA
from diffs.layout import current_layout
from diffs.settings import get_settings

#: Most diffs one script call writes, whatever their size.
CHUNK_SIZE = 500

# ARGV[1]: how long (ms) a key lives after its last write; ARGV[2]: max_element_age
# (seconds), for the horizon; ARGV[3]: the storage ("log" or "sets", diffs.lanes).
# For diff i (1-based), KEYS[6i-5..6i]: its object's sorted set, the model feed, the
# model's horizon, the object's birth key, the object's index, the model's log;
# ARGV[5i-1..5i+3]: member, feed member (16 hex id characters, then the pk text), a
# fixed score or "", "1" when the diff records its own object's creation (or "b:<id>"
# for the birth of an object created without a diff: member and feed member then
# empty), and "1" when the diff may be in Redis already (a write of it timed out).
# A birth key holds a score, or "<score>|<id>" when written without a diff. The last
# ARGV is the channel on which the feed keys this call added to are published, once
# each, to wake readers waiting for the next diff (diffs.live).
# Returns each diff's score as text. Scores are formatted with %.17g: Lua's default
# number-to-string conversion keeps only 14 digits, which would round epoch
# milliseconds to whole milliseconds.
WRITE_SCRIPT = (
    LANES_LUA
    + GUARD_HORIZON_LUA
    + """
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
-- times (false: the key is empty). Kinds: 'z' a sorted set, 's' the log (its last
-- generated id, which a new entry must exceed even once trimmed), 'x' an index.
-- A stream's last generated id as a score: no new entry may be at or below it.
local function last_generated(key)
  local info = redis.call('XINFO', 'STREAM', key)
  for j = 1, #info, 2 do
    if info[j] == 'last-generated-id' then return sid_score(info[j + 1]) end
  end
  return false
end
local top = {}
-- Indexes whose length is not a whole number of records (written by something else):
-- nothing is appended to them, their object's diffs go to the set lane.
local misaligned = {}
local function newest(key, kind)
  local value = top[key]
  if value == nil then
    value = false
    if kind == 'z' then
      local found = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')[2]
      value = found and tonumber(found) or false
    elseif kind == 's' then
      -- Its last entry (an entry deleted at the end is caught when XADD refuses, below).
      local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
      if last then
        value = sid_score(last[1])
      elseif redis.call('EXISTS', key) == 1 then
        value = last_generated(key) -- trimmed empty: its last id still bars lower ones
      end
    else
      local whole
      value, whole = last_record(key)
      misaligned[key] = not whole
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
-- The first score at or after a fixed one that no lane holds (an index holds the
-- log's scores), found in at most ROUNDS range reads of LIMIT entries per key; nil
-- when that is not enough.
local ROUNDS, LIMIT = 8, 128
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
    if score >= 0 then
      local run = redis.call('XRANGE', log, sid(score), '+', 'COUNT', LIMIT)
      for _, item in ipairs(run) do
        if sid_score(item[1]) > score then break end
        score = score + step(score)
        moved = true
      end
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
-- Where a diff that may be in Redis already was written: its score, or nil. The set
-- lane knows by its feed entry; the log lane by the id in the object's index (read
-- only for such a diff: a write that timed out, or a row recovered from the outbox).
local replay = false
-- The diff id of a feed entry the log lane can take (16 hex digits, then the pk text),
-- or nil: any other entry is written to the set lane, and found in the feed.
local function log_id(entry)
  local id = string.sub(entry, 1, 16)
  if #entry > 16 and string.match(id, '^%x+$') then return id end
  return nil
end
local function stored_score(feed, ix, entry, maybe)
  local existing = redis.call('ZSCORE', feed, entry)
  if existing or (maybe ~= '1' and not replay) then return existing end
  local id = log_id(entry)
  local index = id and redis.call('GET', ix)
  local at = index and find_record(index, id)
  return at and fmt((unpack_score(index, at)))
end
local ttl, age, storage = ARGV[1], ARGV[2], ARGV[3]
-- Once per key and call, right after its first write: should a later command of this
-- call fail, what was written already still expires.
local touched = {}
local function expire_once(key)
  if not touched[key] then
    touched[key] = true
    redis.call('PEXPIRE', key, ttl)
  end
end
local now = redis.call('TIME')
local clock = tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000
local scores = {}
local guarded = {}
-- Per call, the last score given to each fixed value ('clock' once none was found):
-- a thousand diffs sharing one fixed time take consecutive free scores instead of each
-- searching from the start.
local after_fixed = {}
local added = {}
-- A call sent again: a client that lost the reply of this very call (redis-py sends a
-- command again when the connection fails while its reply is read) after Redis ran it.
-- Its last diff is then stored already (the object's newest record, give or take
-- REPLAY_TAIL - 1 diffs written to that object since, or in the feed), and every diff
-- of the call is looked for before it is written, as for a diff that may be in Redis.
local REPLAY_TAIL = 8
for i = math.floor(#KEYS / 6), 1, -1 do
  local entry = ARGV[3 + 5 * (i - 1) + 2]
  if entry ~= '' then
    local feed, ix = KEYS[6 * (i - 1) + 2], KEYS[6 * (i - 1) + 5]
    local id = log_id(entry)
    if redis.call('ZSCORE', feed, entry) then
      replay = true
    elseif id then
      local tail = redis.call('GETRANGE', ix, -16 * REPLAY_TAIL, -1)
      replay = #tail % 16 == 0 and find_record(tail, id) ~= nil
    end
    break
  end
end
for i = 1, #KEYS / 6 do
  local k = 6 * (i - 1)
  local set, feed, hkey, bkey, ix, log =
    KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6]
  local a = 3 + 5 * (i - 1)
  local member, entry, fixed = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local creates, maybe = ARGV[a + 4], ARGV[a + 5]
  local horizon = guarded[hkey]
  if not horizon then
    horizon = guard_horizon(hkey, feed, log, clock, age)
    guarded[hkey] = horizon
  end
  local existing = entry ~= '' and stored_score(feed, ix, entry, maybe)
  if string.sub(creates, 1, 2) == 'b:' then
    -- A creation without a diff: only the birth, above what the object has, once. With
    -- no history it hides nothing (score 0) but is still marked done: a call sent again
    -- must not put it above a diff of the same object that this call wrote after it.
    local marker = '|' .. string.sub(creates, 3)
    local current = redis.call('GET', bkey)
    if not (current and string.find(current, marker, 1, true)) then
      local last = object_newest(set, ix)
      local at = last and fmt(by_clock(clock, {last})) or '0'
      redis.call('SET', bkey, at .. marker, 'PX', ttl)
    end
    scores[i] = fmt(clock)
  elseif existing then
    scores[i] = existing
  else
    local earlier = creates == '1' and object_newest(set, ix)
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
      score = first_free(start, {set, feed}, log)
      -- A new row on a pk with history must sort after that history (its birth).
      if score and earlier and score <= earlier then score = nil end
      after_fixed[fixed] = score or 'clock'
    end
    if not score then
      score = by_clock(clock, {newest(set, 'z'), newest(feed, 'z'), newest(log, 's')})
      if fixed ~= '' then
        member = '{"t":' .. fixed .. ',' .. string.sub(member, 2)
      end
    end
    local text = fmt(score)
    local last_log = newest(log, 's')
    local logged = false
    -- The log lane: the body once in the model's log, a record in the object's index,
    -- when the record goes after every other (an index outliving its log must stay in
    -- order) in an index of whole records. Its index read first: a key of another type
    -- fails the diff before the log has it.
    local object_last = storage == 'log' and newest(ix, 'x')
    if storage == 'log' and packable(score) and (not last_log or score > last_log)
        and not misaligned[ix] and (not object_last or score > object_last)
        and log_id(entry) then
      -- The record "follows" when the log's last entry is the object's last diff.
      local follows = last_log and object_last == last_log
      local pk_text = string.sub(entry, 17)
      local added_id = redis.pcall('XADD', log, sid(score), 'p', pk_text, 'm', member)
      if type(added_id) == 'table' and added_id.err then
        -- Refused: at or below an id the log gave before (its last entries deleted with
        -- XDEL). The set lane takes it; later diffs score above that id. (Any other
        -- refusal, a key of another type, fails in XINFO as it would in XADD.)
        local barred = last_generated(log)
        if not barred then return redis.error_reply(added_id.err) end
        top[log] = barred
      else
        logged = true
        expire_once(log)
        local record = pack_score(score, follows) .. id_bytes(string.sub(entry, 1, 16))
        redis.call('APPEND', ix, record)
        expire_once(ix)
        top[log], top[ix] = score, score
      end
    end
    if not logged then
      -- The set lane: storage "sets", or a fixed score at or below the log's last id.
      redis.call('ZADD', set, text, member)
      redis.call('ZADD', feed, text, entry)
      expire_once(set)
      expire_once(feed)
      for _, key in ipairs({set, feed}) do
        local last = top[key]
        if last ~= nil and (last == false or score > last) then top[key] = score end
      end
    end
    added[feed] = true
    if earlier then
      redis.call('SET', bkey, text, 'PX', ttl)
    end
    scores[i] = text
  end
  -- The object's birth key (when it has one) lives as long as its diffs: the earlier
  -- row's diffs stay hidden for as long as they are there.
  expire_once(bkey)
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
    storage = get_settings().storage
    for chunk in chunks(diffs, get_settings().write_batch_bytes):
        keys: list[str] = []
        args: list[str] = [ttl_ms, age, storage]
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

"""Writing diffs to Redis: each to its object's sorted set and its model's feed.

All the diffs of a flush go in one script call (one round trip), chunked only for
very large batches. The script assigns scores inside Redis: the server's clock in
epoch milliseconds, bumped by a microsecond when needed so that it is strictly
greater than every score already in the feed and in the object's set. Scripts run
one at a time, so the order of scores is the order in which diffs reached Redis,
whichever process sent them: a client reading "everything after my cursor" can never
miss a diff that was written later with a smaller score, and never see one twice.

Every write also sets both keys to expire ``max_element_age`` after it: a key that
receives no new diff for that long holds only diffs past the window, so it disappears
by itself and ``prune_diffs`` has work only where objects are still changing.

Writes are idempotent: a diff whose feed entry (diff id + pk) is already there is
left alone, so a write retried after a timeout, or recovered twice from the outbox,
is stored once.

A diff with a fixed timestamp (``_last_save_at``, or ``create(timestamp=...)``) is
written at that score instead, as 0.1.16 did (moved up by a microsecond while another
diff holds it); such a diff can land behind a cursor a client already holds.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from redis.crc import key_slot

from diffs.settings import get_settings

#: Diffs per script call: bounds how long one call holds Redis.
CHUNK_SIZE = 500

# ARGV[1]: how long (ms) a key lives after its last write. For diff i (1-based):
# KEYS[2i-1] its object's sorted set, KEYS[2i] the model feed; ARGV[3i-1] member,
# ARGV[3i] feed member, ARGV[3i+1] a fixed score or "".
# Returns each diff's score as text. Scores are formatted with %.17g: Lua's default
# number-to-string conversion keeps only 14 digits, which would round epoch
# milliseconds to whole milliseconds.
WRITE_SCRIPT = """
local function taken(value, keys)
  local text = string.format('%.17g', value)
  for _, key in ipairs(keys) do
    if #redis.call('ZRANGEBYSCORE', key, text, text, 'LIMIT', 0, 1) > 0 then
      return true
    end
  end
  return false
end
-- The highest score of each key, read once per call and then kept up to date here:
-- a flush of a hundred diffs of one model reads its feed's top once, not a hundred
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
local ttl = ARGV[1]
local now = redis.call('TIME')
local clock = tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000
local scores = {}
local touched = {}
for i = 1, #KEYS / 2 do
  local keys = {KEYS[2 * i - 1], KEYS[2 * i]}
  local member, entry, fixed = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local existing = redis.call('ZSCORE', keys[2], entry)
  if existing then
    scores[i] = existing
  else
    local score
    if fixed ~= '' then
      -- A fixed score is kept, but never shared: a cursor at a shared score would
      -- skip the other diffs scored there.
      score = tonumber(fixed)
      while taken(score, keys) do
        score = score + 0.001
      end
    else
      score = clock
      for _, key in ipairs(keys) do
        local last = newest(key)
        if last and last >= score then
          score = last + 0.001
        end
      end
    end
    local text = string.format('%.17g', score)
    redis.call('ZADD', keys[1], text, member)
    redis.call('ZADD', keys[2], text, entry)
    for _, key in ipairs(keys) do
      local last = top[key]
      if last ~= nil and (last == false or score > last) then
        top[key] = tonumber(text)
      end
    end
    scores[i] = text
  end
  -- Once per key and call, right after its first write: should a later command of
  -- this call fail, what was written already still expires.
  for _, key in ipairs(keys) do
    if not touched[key] then
      touched[key] = true
      redis.call('PEXPIRE', key, ttl)
    end
  end
end
return scores
"""


@dataclass(frozen=True)
class Write:
    """One diff as the script takes it."""

    key: str
    feed: str
    member: str
    feed_member: str
    #: A fixed score (epoch ms), or None for "the next one, by the Redis clock".
    score: float | None = None


# One Script per client: it remembers the script's SHA and falls back to EVAL once
# per server. Weak keys, so replaced clients (settings changes) are not kept alive.
_scripts: weakref.WeakKeyDictionary[redis.Redis, redis.commands.core.Script] = (
    weakref.WeakKeyDictionary()
)


def _script(client: redis.Redis) -> redis.commands.core.Script:
    script = _scripts.get(client)
    if script is None:
        script = _scripts[client] = client.register_script(WRITE_SCRIPT)
    return script


def write_many(
    client: redis.Redis, writes: Sequence[Write], *, keep_for: float | None = None
) -> list[float]:
    """Write ``writes`` in order; return their scores (one round trip per chunk).

    Each key written expires ``keep_for`` seconds (default: ``max_element_age``) later.
    """
    ttl_ms = str(max(1, round((keep_for or get_settings().max_element_age) * 1000)))
    if not is_cluster(client):
        return _write_in_chunks(client, writes, ttl_ms)
    # On Redis Cluster a script may only touch keys of one hash slot: one call per slot
    # (per model, see diffs.keys), each in the order the diffs were made.
    by_slot: dict[int, list[int]] = {}
    for index, write in enumerate(writes):
        by_slot.setdefault(key_slot(write.key.encode()), []).append(index)
    scores = [0.0] * len(writes)
    for indexes in by_slot.values():
        written = _write_in_chunks(client, [writes[i] for i in indexes], ttl_ms)
        for index, score in zip(indexes, written, strict=True):
            scores[index] = score
    return scores


def is_cluster(client: object) -> bool:
    """True for a Redis Cluster client."""
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def _write_in_chunks(client: redis.Redis, writes: Sequence[Write], ttl_ms: str) -> list[float]:
    scores: list[float] = []
    script = _script(client)
    for start in range(0, len(writes), CHUNK_SIZE):
        chunk = writes[start : start + CHUNK_SIZE]
        keys: list[str] = []
        args: list[str] = [ttl_ms]
        for write in chunk:
            keys += (write.key, write.feed)
            fixed = "" if write.score is None else repr(float(write.score))
            args += (write.member, write.feed_member, fixed)
        scores.extend(float(score) for score in script(keys=keys, args=args))
    return scores


def add(
    client: redis.Redis,
    key: str,
    feed: str,
    member: str,
    feed_entry: str,
    score: float | None = None,
) -> float:
    """Add one diff to ``key`` and ``feed``; returns the score it was given."""
    [result] = write_many(client, [Write(key, feed, member, feed_entry, score)])
    return result

"""Writing one diff to Redis: its object's sorted set and its model's feed, atomically.

A Lua script assigns the score inside Redis: the server's clock in epoch
milliseconds, bumped by a microsecond when needed so that it is strictly greater than
every score already in the feed and in the object's set. Scripts run one at a time,
so the order of scores is the order in which diffs reached Redis, whichever process
sent them: a client reading "everything after my cursor" can never miss a diff that
was written later with a smaller score, and never see one twice.

A diff with a fixed timestamp (``_last_save_at``, or ``create(timestamp=...)``) is
written at that score instead, as 0.1.16 did (moved up by a microsecond while another
diff holds it); such a diff can land behind a cursor a client already holds.
"""

from __future__ import annotations

import weakref

import redis

# KEYS[1]: the object's sorted set; KEYS[2]: the model feed.
# ARGV[1]: member; ARGV[2]: feed member; ARGV[3]: a fixed score, or "".
# Scores are formatted with %.17g: Lua's default number-to-string conversion keeps only
# 14 digits, which would round epoch milliseconds to whole milliseconds.
WRITE_SCRIPT = """
local function taken(value)
  local text = string.format('%.17g', value)
  for _, key in ipairs(KEYS) do
    if #redis.call('ZRANGEBYSCORE', key, text, text, 'LIMIT', 0, 1) > 0 then
      return true
    end
  end
  return false
end
local score
if ARGV[3] ~= '' then
  -- A fixed score is kept, but never shared: a cursor at a shared score would skip
  -- the other diffs scored there.
  score = tonumber(ARGV[3])
  while taken(score) do
    score = score + 0.001
  end
else
  local now = redis.call('TIME')
  score = tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000
  for _, key in ipairs(KEYS) do
    local last = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')[2]
    if last and tonumber(last) >= score then
      score = tonumber(last) + 0.001
    end
  end
end
local text = string.format('%.17g', score)
redis.call('ZADD', KEYS[1], text, ARGV[1])
redis.call('ZADD', KEYS[2], text, ARGV[2])
return text
"""

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


def add(
    client: redis.Redis,
    key: str,
    feed: str,
    member: str,
    feed_entry: str,
    score: float | None = None,
) -> float:
    """Add one diff to ``key`` and ``feed``; returns the score it was given."""
    fixed = "" if score is None else repr(float(score))
    result = _script(client)(keys=[key, feed], args=[member, feed_entry, fixed])
    return float(result)

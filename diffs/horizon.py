"""The horizon: from when a model's diffs in Redis are known to be complete.

A cursor promises "every diff after me is still there". Three things break that
promise without any diff being read: Redis losing its data (a restart without
persistence, a failover to an empty replica), ``prune_diffs --max-age`` shorter than
``max_element_age``, and ``max_element_age`` raised after older diffs were already
dropped under the old window. Each model therefore has a small hash,
``<prefix>horizon:<label>`` (see ``diffs.keys``), with two fields:

* ``from``: epoch ms (Redis clock); diffs scored from then on are all there;
* ``age``: the ``max_element_age`` (seconds) of the last process that wrote.

A read with a cursor older than ``from`` raises ``CursorExpired``, as for a cursor
older than ``max_element_age``. The hash has no expiry. It is kept up to date inside
the scripts that write and read (Lua below, shared by ``diffs.delivery.store`` and
``diffs.feed``), so every process of every site agrees:

Readers respect the horizon and never move it (they drop no data, whatever their own
``max_element_age``), except to record a missing one when the feed is empty too.

* absent: created with ``from`` at the present when the model's feed and log are empty too
  (a new model, or Redis lost both), so after a data loss every older cursor is
  refused; when the feed holds diffs (a hash never written, as after an upgrade),
  ``from`` is the start of the window and nothing more is refused;
* a writer whose ``max_element_age`` is larger than ``age``: ``from`` moves up to
  ``now - age`` (what the old window may already have dropped);
* ``prune_diffs``: ``from`` moves up to the prune's cutoff (:func:`raise_to`).

What it assumes of Redis: a restart either keeps everything (AOF with ``fsync
always``) or loses the keys of a model together, as an empty restart or failover does.
"""

from __future__ import annotations

from typing import Any

from diffs.connection import cached_script

FROM_FIELD = "from"
AGE_FIELD = "age"

#: Lua: ``guard_horizon(horizon key, feed key, log key, now ms, max_element_age
#: seconds)``, for writers: brings the horizon up to date as described above and returns
#: its ``from`` (ms). Scores are written with %.17g (Lua's tostring keeps 14 digits
#: only). Needs ``has_diffs`` (``diffs.lanes.LANES_LUA``) before it.
GUARD_HORIZON_LUA = """
local function guard_horizon(hkey, feed, log, now, age)
  local h = redis.call('HMGET', hkey, 'from', 'age')
  local from, known_age = tonumber(h[1]), tonumber(h[2])
  if not from then
    -- Diffs in the feed: a hash that was never written (an upgrade), the window rules.
    -- None: Redis lost them, or the model is new; either way no diff is older than now,
    -- and only a watermark given out from now on (now - 0.001) is accepted.
    if has_diffs(feed, log) then
      from = now - tonumber(age) * 1000
    else
      from = now - 0.002
    end
    redis.call('HSET', hkey, 'from', string.format('%.17g', from), 'age', age)
  elseif not known_age or known_age ~= tonumber(age) then
    if known_age and known_age < tonumber(age) then
      local dropped = now - known_age * 1000
      if dropped > from then from = dropped end
    end
    redis.call('HSET', hkey, 'from', string.format('%.17g', from), 'age', age)
  end
  return from
end
"""

#: Lua: ``read_horizon(horizon key, feed key, log key, now ms, max_element_age
#: seconds)``, for readers: the ``from`` a reader must respect, changing nothing a
#: writer decides (a reader drops no data, whatever its own window). Only a hash missing
#: with the model's lanes empty (Redis lost the model's keys, or it is new) is recorded,
#: as a writer would. Needs ``has_diffs`` (``diffs.lanes.LANES_LUA``) before it.
READ_HORIZON_LUA = """
local function read_horizon(hkey, feed, log, now, age)
  local h = redis.call('HMGET', hkey, 'from', 'age')
  local from, known_age = tonumber(h[1]), tonumber(h[2])
  if not from then
    if has_diffs(feed, log) then return now - tonumber(age) * 1000 end
    from = now - 0.002
    redis.call('HSET', hkey, 'from', string.format('%.17g', from))
    return from
  end
  -- Writers with a smaller window than this reader's may have dropped what is older.
  if known_age and known_age < tonumber(age) then
    local dropped = now - known_age * 1000
    if dropped > from then from = dropped end
  end
  return from
end
"""

_RAISE_SCRIPT = """
local from = tonumber(redis.call('HGET', KEYS[1], 'from'))
if not from or from < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'from', ARGV[1])
  return 1
end
return 0
"""


def raise_to(client: Any, key: str | bytes, from_ms: float) -> bool:
    """Move the horizon ``key`` up to ``from_ms`` (never down); True if it moved.

    ``prune_diffs`` calls it with its cutoff for every model whose diffs it pruned.
    """
    script = cached_script(client, _RAISE_SCRIPT)
    return bool(script(keys=[key], args=[repr(float(from_ms))]))

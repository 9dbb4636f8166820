"""``DiffSortedSet``: a thin, typed wrapper over one object's Redis sorted set.

Every read returns ``Diff`` objects whose ``timestamp`` is the stored score. This is
the raw view: it shows whatever the set holds, including diffs older than
``max_element_age`` that ``prune_diffs`` has not removed yet (the manager's reads
leave those out). A member
that is not ours (not JSON, or missing keys) is skipped with a warning on the
``diffs`` logger instead of failing the read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, overload

import redis

from diffs import reads
from diffs.connection import cached_script
from diffs.diff import Diff, decode_members
from diffs.layout import current_layout

logger = logging.getLogger("diffs")

Score = float | str


def decode_entries(
    key: str,
    entries: Iterable[Any],
    model: str | None = None,
    pk: Any = None,
    *,
    eager: bool = False,
) -> list[Diff]:
    """Turn ``(member, score)`` pairs into diffs, skipping members that are not ours.

    ``model`` and ``pk`` name the key's own object (see ``Diff.from_member``). By
    default each diff decodes its member when first used (``Diff.decoded_on_use``);
    with ``eager`` every member is decoded now, and one that is not strict JSON is
    skipped with a warning too (pages, which must never break on one bad diff).
    """
    return decode_members(key, entries, model, pk, eager=eager)


# A raw rank read of an object's set, leaving out the diffs of an earlier row (scored
# before the object's birth, see diffs.keys). KEYS: the set, its birth key. ARGV[1]:
# "range", "revrange" or "card"; ARGV[2], ARGV[3]: start and stop ranks (Python-style
# negative ranks count from the end of what is visible).
_RANK_SCRIPT = """
local birth = redis.call('GET', KEYS[2])
birth = birth and string.match(birth, '^[^|]+')
local hidden = 0
if birth then hidden = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. birth) end
local total = redis.call('ZCARD', KEYS[1]) - hidden
if ARGV[1] == 'card' then return total end
local start, stop = tonumber(ARGV[2]), tonumber(ARGV[3])
if start < 0 then start = total + start end
if stop < 0 then stop = total + stop end
if start < 0 then start = 0 end
if stop >= total then stop = total - 1 end
if start > stop then return {} end
if ARGV[1] == 'range' then
  return redis.call('ZRANGE', KEYS[1], start + hidden, stop + hidden, 'WITHSCORES')
end
return redis.call('ZREVRANGE', KEYS[1], start, stop, 'WITHSCORES')
"""

# A raw score read, from the object's birth on at the earliest. KEYS: the set, its
# birth key. ARGV: low, high (Redis range bounds), offset, count ("" for all), and
# "rev" to read newest first.
_SCORE_SCRIPT = """
local low, high = ARGV[1], ARGV[2]
local birth = redis.call('GET', KEYS[2])
birth = birth and string.match(birth, '^[^|]+')
if birth then
  local bound = string.gsub(low, '^%(', '')
  local value = tonumber(bound)
  if bound == '-inf' then
    value = -math.huge
  elseif bound == '+inf' or bound == 'inf' then
    value = math.huge
  end
  if value == nil or tonumber(birth) > value then low = birth end
end
local command = {'ZRANGEBYSCORE', KEYS[1], low, high, 'WITHSCORES'}
if ARGV[5] == 'rev' then command = {'ZREVRANGEBYSCORE', KEYS[1], high, low, 'WITHSCORES'} end
if ARGV[4] ~= '' then
  command[#command + 1] = 'LIMIT'
  command[#command + 1] = ARGV[3]
  command[#command + 1] = ARGV[4]
end
return redis.call(unpack(command))
"""


def pairs(flat: list[Any]) -> list[tuple[Any, float]]:
    """``(member, score)`` pairs from a flat ``WITHSCORES`` reply."""
    return [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]


class DiffSortedSet:
    """The diffs of one object, oldest first. Indexing and slicing follow Python rules.

    This is the raw view: it shows what the set holds, including diffs older than
    ``max_element_age`` that ``prune_diffs`` has not removed yet (the manager's reads
    leave those out), but never the diffs of an earlier row with the same pk (see
    ``diffs.keys.KeyLayout.birth_key``). Reads are bounded by the ranks or scores asked for;
    iterating reads ``ITERATION_STEP`` diffs per round trip.
    """

    #: Diffs per round trip while iterating.
    ITERATION_STEP = 100

    def __init__(
        self,
        key: str,
        client: redis.Redis,
        model: str | None = None,
        pk: Any = None,
        birth_key: str | None = None,
    ) -> None:
        self.key = key
        self.client = client
        #: label and pk of the object the set belongs to, given to the diffs read.
        self.model = model
        self.pk = pk
        #: Where the score of the object's latest birth is kept (see diffs.keys).
        self.birth_key = birth_key or _birth_key_of(key)

    def __repr__(self) -> str:
        return f"<DiffSortedSet {self.key}>"

    def __iter__(self) -> Iterator[Diff]:
        return self._walk(self.zrange)

    def __reversed__(self) -> Iterator[Diff]:
        return self._walk(self.zrevrange)

    def _walk(self, read: Any) -> Iterator[Diff]:
        start = 0
        while True:
            window = read(start, start + self.ITERATION_STEP - 1)
            yield from window
            if len(window) < self.ITERATION_STEP:
                return
            start += self.ITERATION_STEP

    def __len__(self) -> int:
        return int(self._ranks("card", 0, 0))

    @overload
    def __getitem__(self, index: int) -> Diff: ...

    @overload
    def __getitem__(self, index: slice) -> list[Diff]: ...

    def __getitem__(self, index: int | slice) -> Diff | list[Diff]:
        if isinstance(index, slice):
            return self._slice(index)
        found = self.zrange(index, index)
        if not found:
            msg = f"{self.key} has no diff at index {index}"
            raise IndexError(msg)
        return found[0]

    def _slice(self, index: slice) -> list[Diff]:
        wanted = range(*index.indices(len(self)))
        if not wanted:
            return []
        low, high = min(wanted), max(wanted)
        window = self.zrange(low, high)
        return [window[i - low] for i in wanted if i - low < len(window)]

    @property
    def min_score(self) -> float | None:
        """The score (epoch ms) of the oldest diff, or None when there is none."""
        return self._edge_score(self._ranks("range", 0, 0))

    @property
    def max_score(self) -> float | None:
        """The score (epoch ms) of the newest diff, or None when there is none."""
        return self._edge_score(self._ranks("range", -1, -1))

    @staticmethod
    def _edge_score(flat: Any) -> float | None:
        return float(flat[1]) if flat else None

    def zrange(self, start: int, stop: int) -> list[Diff]:
        """Diffs by rank, oldest first; ``stop`` is inclusive, as in Redis."""
        return self._decode(pairs(self._ranks("range", start, stop)))

    def zrevrange(self, start: int, stop: int) -> list[Diff]:
        """Diffs by rank, newest first; ``stop`` is inclusive, as in Redis."""
        return self._decode(pairs(self._ranks("revrange", start, stop)))

    def zrangebyscore(
        self, min: Score, max: Score, start: int | None = None, num: int | None = None
    ) -> list[Diff]:
        """Diffs with ``min <= score <= max``, oldest first (``"(x"``/``"-inf"`` work)."""
        return self._decode(pairs(self._by_score(min, max, start, num, "")))

    def zrevrangebyscore(
        self, max: Score, min: Score, start: int | None = None, num: int | None = None
    ) -> list[Diff]:
        """Diffs with ``max >= score >= min``, newest first."""
        return self._decode(pairs(self._by_score(min, max, start, num, "rev")))

    def zadd(self, members: Mapping[str, float] | str, score: float | None = None) -> int:
        """Add raw ``{member: score}`` pairs, or one ``member`` with its ``score`` (0.1.16's
        form: ``zadd(*diff.typecast_for_storage())``); returns how many were new."""
        if isinstance(members, str):
            if score is None:
                msg = "zadd(member, score): give the score of a single member"
                raise TypeError(msg)
            members = {members: score}
        added = self.client.zadd(self.key, dict(members))
        return int(added or 0)

    def zscore(self, member: str) -> float | None:
        """The score of a raw member, or None."""
        score = self.client.zscore(self.key, member)
        return None if score is None else float(score)

    def _decode(self, entries: list[tuple[Any, float]]) -> list[Diff]:
        return decode_entries(self.key, entries, self.model, self.pk)

    def _ranks(self, op: str, start: int, stop: int) -> Any:
        script = cached_script(self.client, _RANK_SCRIPT)
        keys = [self.key, self.birth_key]
        return reads.read(lambda: script(keys=keys, args=[op, start, stop]), self.key)

    def _by_score(
        self, low: Score, high: Score, start: int | None, num: int | None, direction: str
    ) -> Any:
        script = cached_script(self.client, _SCORE_SCRIPT)
        args: list[str | int] = [str(low), str(high), start or 0, "" if num is None else num]
        args.append(direction)
        keys = [self.key, self.birth_key]
        return reads.read(lambda: script(keys=keys, args=args), self.key)


def _birth_key_of(key: str) -> str:
    layout = current_layout()
    return layout.birth_key_for(key) if key.startswith(layout.prefix) else f"{key}:born"

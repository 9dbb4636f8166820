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

from diffs.delivery import flush_before_read
from diffs.diff import Diff, looks_like_member

logger = logging.getLogger("diffs")

Score = float | str


def decode_entries(
    key: str, entries: Iterable[Any], model: str | None = None, pk: Any = None
) -> list[Diff]:
    """Turn ``(member, score)`` pairs into diffs, skipping members that are not ours.

    ``model`` and ``pk`` name the key's own object (see ``Diff.from_member``). Each
    diff decodes its member when first used (``Diff.decoded_on_use``).
    """
    diffs = []
    decoded_on_use = Diff.decoded_on_use
    for member, score in entries:
        if looks_like_member(member):
            diffs.append(decoded_on_use(member, score, model, pk))
        else:
            logger.warning(
                "Skipped a member of %s that django-diffs did not write: %.80r", key, member
            )
    return diffs


class DiffSortedSet:
    """The diffs of one object, oldest first. Indexing and slicing follow Python rules."""

    def __init__(
        self, key: str, client: redis.Redis, model: str | None = None, pk: Any = None
    ) -> None:
        self.key = key
        self.client = client
        #: label and pk of the object the set belongs to, given to the diffs read.
        self.model = model
        self.pk = pk

    def __repr__(self) -> str:
        return f"<DiffSortedSet {self.key}>"

    def __iter__(self) -> Iterator[Diff]:
        return iter(self.zrange(0, -1))

    def __reversed__(self) -> Iterator[Diff]:
        return iter(self.zrevrange(0, -1))

    def __len__(self) -> int:
        flush_before_read()
        return int(self.client.zcard(self.key))

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
        flush_before_read()
        return self._edge_score(self.client.zrange(self.key, 0, 0, withscores=True))

    @property
    def max_score(self) -> float | None:
        """The score (epoch ms) of the newest diff, or None when there is none."""
        flush_before_read()
        return self._edge_score(self.client.zrange(self.key, -1, -1, withscores=True))

    @staticmethod
    def _edge_score(entries: Any) -> float | None:
        return float(entries[0][1]) if entries else None

    def zrange(self, start: int, stop: int) -> list[Diff]:
        """Diffs by rank, oldest first; ``stop`` is inclusive, as in Redis."""
        flush_before_read()
        entries = self.client.zrange(self.key, start, stop, withscores=True)
        return decode_entries(self.key, entries, self.model, self.pk)

    def zrevrange(self, start: int, stop: int) -> list[Diff]:
        """Diffs by rank, newest first; ``stop`` is inclusive, as in Redis."""
        flush_before_read()
        entries = self.client.zrevrange(self.key, start, stop, withscores=True)
        return decode_entries(self.key, entries, self.model, self.pk)

    def zrangebyscore(
        self, min: Score, max: Score, start: int | None = None, num: int | None = None
    ) -> list[Diff]:
        """Diffs with ``min <= score <= max``, oldest first (``"(x"``/``"-inf"`` work)."""
        flush_before_read()
        entries = self.client.zrangebyscore(
            self.key, min, max, start=start, num=num, withscores=True
        )
        return decode_entries(self.key, entries, self.model, self.pk)

    def zrevrangebyscore(
        self, max: Score, min: Score, start: int | None = None, num: int | None = None
    ) -> list[Diff]:
        """Diffs with ``max >= score >= min``, newest first."""
        flush_before_read()
        entries = self.client.zrevrangebyscore(
            self.key, max, min, start=start, num=num, withscores=True
        )
        return decode_entries(self.key, entries, self.model, self.pk)

    def zadd(self, members: Mapping[str, float]) -> int:
        """Add raw ``{member: score}`` pairs; returns how many were new."""
        added = self.client.zadd(self.key, dict(members))
        return int(added or 0)

    def zscore(self, member: str) -> float | None:
        """The score of a raw member, or None."""
        score = self.client.zscore(self.key, member)
        return None if score is None else float(score)

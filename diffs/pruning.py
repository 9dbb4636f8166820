"""Removing diffs older than ``max_element_age``: the engine behind ``prune_diffs``.

Model feeds live under the same prefix and are pruned the same way; the report counts
objects' sets only, since each feed entry points at a diff counted there.

Keys are found with a prefix-matched ``SCAN`` (never ``KEYS``, never the whole
keyspace), in batches; each batch is one pipelined round trip of
``ZREMRANGEBYSCORE`` (or ``ZCOUNT`` for a dry run). Each command is atomic on its key,
so pruning is safe while the site keeps writing.

A model feed holds an entry for every diff of the model, so one ``ZREMRANGEBYSCORE``
on it can remove hundreds of thousands of entries and hold Redis for a fifth of a
second (measured: 500,000 entries, 170-190 ms in which no other client is served).
Feeds are trimmed in steps of ``FEED_STEP`` entries instead, one short script each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis

from diffs.keys import is_feed_key, prefix_pattern

SCAN_BATCH = 500
#: Most feed entries one trimming step removes (a few milliseconds of Redis time).
FEED_STEP = 5000

# Removes at most ARGV[2] of the oldest entries scored below ARGV[1] ("(cutoff");
# returns how many. Entries are ordered by score, so they are the first ranks.
_TRIM_FEED_SCRIPT = """
local n = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
local step = tonumber(ARGV[2])
if n > step then n = step end
if n > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1) end
return n
"""


@dataclass
class PruneReport:
    """What a prune did (or, for a dry run, would do)."""

    cutoff_ms: float
    keys_scanned: int = 0
    keys_pruned: int = 0
    diffs_removed: int = 0
    #: Pointers removed from (or counted in) model feeds; not counted as diffs.
    feed_entries_removed: int = 0
    #: ``(key, error message)`` for keys under the prefix that are not sorted sets.
    skipped: list[tuple[str, str]] = field(default_factory=list)


def prune(
    client: redis.Redis,
    prefix: str,
    cutoff_ms: float,
    *,
    dry_run: bool = False,
    on_key: Callable[[str, int], None] | None = None,
    batch_size: int = SCAN_BATCH,
) -> PruneReport:
    """Remove (or count, with ``dry_run``) members scored below ``cutoff_ms`` under ``prefix``."""
    report = PruneReport(cutoff_ms=cutoff_ms)
    feeds: list[bytes | str] = []
    for keys in _batches(client, prefix, batch_size):
        pipe = client.pipeline(transaction=False)
        for key in keys:
            if dry_run:
                pipe.zcount(key, "-inf", f"({cutoff_ms}")
            elif is_feed_key(prefix, _display(key)):
                feeds.append(key)
                pipe.zcount(key, "-inf", "-inf")  # a placeholder: trimmed in steps below
            else:
                pipe.zremrangebyscore(key, "-inf", f"({cutoff_ms}")
        for key, result in zip(keys, pipe.execute(raise_on_error=False), strict=True):
            name = _display(key)
            if is_feed_key(prefix, name):
                # Feeds hold pointers to diffs counted in their object's set already.
                report.feed_entries_removed += _count(result)
            else:
                _account(report, name, result, on_key)
    for feed in feeds:
        report.feed_entries_removed += _trim_feed(client, feed, cutoff_ms)
    return report


def _trim_feed(client: redis.Redis, feed: bytes | str, cutoff_ms: float) -> int:
    trim = client.register_script(_TRIM_FEED_SCRIPT)
    removed = 0
    while True:
        try:
            step = int(trim(keys=[feed], args=[f"({cutoff_ms}", FEED_STEP]))
        except redis.ResponseError:
            return removed  # not a sorted set: reported by nobody, as before
        removed += step
        if step < FEED_STEP:
            return removed


def _account(
    report: PruneReport,
    key: str,
    result: object,
    on_key: Callable[[str, int], None] | None,
) -> None:
    report.keys_scanned += 1
    if isinstance(result, redis.ResponseError):
        report.skipped.append((key, str(result)))
        return
    removed = int(result)  # type: ignore[call-overload]
    if removed:
        report.keys_pruned += 1
        report.diffs_removed += removed
    if on_key is not None:
        on_key(key, removed)


def _count(result: object) -> int:
    return 0 if isinstance(result, redis.ResponseError) else int(result)  # type: ignore[call-overload]


def _display(key: bytes | str) -> str:
    return key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else key


def _batches(client: redis.Redis, prefix: str, size: int) -> Iterator[list[bytes | str]]:
    # Keys stay as Redis returned them, so a key that is not valid UTF-8 is still
    # addressed exactly; they are decoded only for display.
    batch: list[bytes | str] = []
    for key in client.scan_iter(match=prefix_pattern(prefix), count=size):
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

"""Removing diffs older than ``max_element_age``: the engine behind ``prune_diffs``.

Model feeds live under the same prefix and are pruned the same way; the report counts
objects' sets only, since each feed entry points at a diff counted there.

Keys are found with a prefix-matched ``SCAN`` (never ``KEYS``, never the whole
keyspace), in batches; each batch is one pipelined round trip of
``ZREMRANGEBYSCORE`` (or ``ZCOUNT`` for a dry run). Each command is atomic on its key,
so pruning is safe while the site keeps writing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis

from diffs.keys import is_feed_key, prefix_pattern

SCAN_BATCH = 500


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
    for keys in _batches(client, prefix, batch_size):
        pipe = client.pipeline(transaction=False)
        for key in keys:
            if dry_run:
                pipe.zcount(key, "-inf", f"({cutoff_ms}")
            else:
                pipe.zremrangebyscore(key, "-inf", f"({cutoff_ms}")
        for key, result in zip(keys, pipe.execute(raise_on_error=False), strict=True):
            name = _display(key)
            if is_feed_key(prefix, name):
                # Feeds hold pointers to diffs counted in their object's set already.
                report.feed_entries_removed += _count(result)
            else:
                _account(report, name, result, on_key)
    return report


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

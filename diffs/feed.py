"""Reading diffs after a cursor: one object's, or a whole model's (the feed).

Every page costs two round trips whatever the number of objects: one ``MULTI`` that
reads the server clock and the page of the sorted set together, and, for the model
feed, one pipeline that fetches each listed diff from its object's set.

The cursor of a page is the score of its last diff or, when the page reaches the end,
a watermark just below the server time at which it was read: any diff written later
gets a higher score (see ``diffs.store``), so a client that keeps polling keeps a fresh
cursor even while nothing changes, and only a client away for longer than
``max_element_age`` gets ``CursorExpired``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from django.apps import apps

from diffs.clock import now_ms
from diffs.cursors import Since, check_fresh, encode_cursor, start_of
from diffs.diff import Diff, member_id
from diffs.keys import DIFF_ID_LENGTH, parse_feed_member, pk_value
from diffs.sortedset import decode_entries
from diffs.store import is_cluster

logger = logging.getLogger("diffs")

#: Most diffs one page may hold.
MAX_LIMIT = 1000

# One microsecond below the server's time: a diff written in that same microsecond
# still sorts after the watermark.
_WATERMARK_MARGIN_MS = 0.001


@dataclass(frozen=True)
class FeedPage:
    """A page of diffs, oldest first, with the cursor to pass back for the next one."""

    diffs: list[Diff]
    cursor: str | None
    has_more: bool


def floor_ms(max_element_age: float) -> float:
    """The oldest score still within the retention window."""
    return now_ms() - max_element_age * 1000


def read_after(
    client: redis.Redis, key: str, since: Since, max_element_age: float, limit: int | None
) -> tuple[list[tuple[Any, float]], float, float]:
    """Read the entries of ``key`` after ``since`` (at most ``limit``, if given).

    The server's clock is read in the same ``MULTI``: expiry is judged by the clock that
    scores come from. Returns ``(entries, start score, watermark)``.
    """
    start, exclusive = start_of(since, floor_ms(max_element_age))
    low = f"({start!r}" if exclusive else repr(start)
    if is_cluster(client):
        seconds, micros, entries = _read_on_cluster(client, key, low, limit)
    else:
        pipe = client.pipeline(transaction=True)
        pipe.time()
        if limit is None:
            pipe.zrangebyscore(key, low, "+inf", withscores=True)
        else:
            pipe.zrangebyscore(key, low, "+inf", start=0, num=limit, withscores=True)
        (seconds, micros), entries = pipe.execute()
    server_ms = int(seconds) * 1000 + int(micros) / 1000
    check_fresh(since, start, server_ms, max_element_age)
    return entries, start, server_ms - _WATERMARK_MARGIN_MS


# The clock and the range read together on the key's own node: a cluster has no MULTI
# across a keyless TIME and a key, and each node has its own clock.
_CLUSTER_READ_SCRIPT = """
local now = redis.call('TIME')
local range = {'ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES'}
if ARGV[2] ~= '' then
  range = {'ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, ARGV[2]}
end
local entries = redis.call(unpack(range))
return {now[1], now[2], entries}
"""


def _read_on_cluster(
    client: redis.Redis, key: str, low: str, limit: int | None
) -> tuple[Any, Any, list[tuple[Any, float]]]:
    script = client.register_script(_CLUSTER_READ_SCRIPT)
    seconds, micros, flat = script(keys=[key], args=[low, "" if limit is None else limit])
    entries = [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]
    return seconds, micros, entries


def read_page(
    client: redis.Redis, key: str, since: Since, limit: int, max_element_age: float
) -> tuple[list[tuple[Any, float]], float, bool, float]:
    """Read up to ``limit`` entries of ``key`` after ``since``.

    Returns ``(entries, start score, has_more, watermark)``.
    """
    check_limit(limit)
    entries, start, watermark = read_after(client, key, since, max_element_age, limit + 1)
    return entries[:limit], start, len(entries) > limit, watermark


def page_cursor(
    entries: Sequence[tuple[Any, float]], start: float, has_more: bool, watermark: float
) -> str:
    """The cursor after a page: its last entry, or the watermark at the end of the set."""
    last = entries[-1][1] if entries else start
    return encode_cursor(last if has_more else max(last, watermark, start))


def check_limit(limit: object) -> None:
    """Refuse a page size outside 1..MAX_LIMIT."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        msg = f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit!r}."
        raise ValueError(msg)


def object_page(
    client: redis.Redis,
    key: str,
    label: str,
    pk: Any,
    since: Since,
    limit: int,
    max_element_age: float,
) -> FeedPage:
    """One object's diffs after ``since``."""
    entries, start, has_more, watermark = read_page(client, key, since, limit, max_element_age)
    diffs = decode_entries(key, entries, label, pk)
    return FeedPage(diffs, page_cursor(entries, start, has_more, watermark), has_more)


def model_page(
    client: redis.Redis,
    key_base: str,
    feed: str,
    label: str,
    since: Since,
    limit: int,
    max_element_age: float,
) -> FeedPage:
    """A model's diffs (its feed) after ``since``; ``key_base`` starts its object keys."""
    entries, start, has_more, watermark = read_page(client, feed, since, limit, max_element_age)
    pointers = _pointers(feed, entries)
    pipe = client.pipeline(transaction=False)
    for _, pk_text, score in pointers:
        pipe.zrangebyscore(key_base + pk_text, score, score, withscores=True)
    found = pipe.execute() if pointers else []
    model = apps.get_model(label)
    diffs: list[Diff] = []
    for (diff_id, pk_text, _), candidates in zip(pointers, found, strict=True):
        key = key_base + pk_text
        pk = pk_value(model, pk_text)
        # A diff pruned (or its key deleted) since the feed was read is simply absent.
        ours = [entry for entry in candidates if member_id(entry[0]) == diff_id]
        diffs.extend(decode_entries(key, ours, label, pk))
    return FeedPage(diffs, page_cursor(entries, start, has_more, watermark), has_more)


def _pointers(feed: str, entries: list[Any]) -> list[tuple[str, str, float]]:
    """``(diff id, pk text, score)`` of each feed entry, skipping those not ours."""
    pointers = []
    for member, score in entries:
        try:
            diff_id, pk_text = parse_feed_member(member)
        except UnicodeDecodeError:
            diff_id, pk_text = "", ""
        if len(diff_id) < DIFF_ID_LENGTH or not pk_text:
            logger.warning(
                "Skipped an entry of %s that django-diffs did not write: %.80r", feed, member
            )
            continue
        pointers.append((diff_id, pk_text, score))
    return pointers

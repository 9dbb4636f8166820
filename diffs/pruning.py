"""Removing diffs older than ``max_element_age``: the engine behind ``prune_diffs``.

Model feeds live under the same prefix and are pruned the same way; the report counts
objects' sets only, since each feed entry points at a diff counted there.

Keys are found with a prefix-matched ``SCAN`` (never ``KEYS``, never the whole
keyspace), in batches; each batch is one pipelined round trip of
``ZREMRANGEBYSCORE`` (or ``ZCOUNT`` for a dry run). Each command is atomic on its key,
so pruning is safe while the site keeps writing.

Only keys django-diffs writes are touched. Several sites may share one Redis db, each
with its own prefix, and one prefix may be the start of another (``diffs:`` and
``diffs:siteb:``): a prefix-matched SCAN returns the other site's keys too. So a key is
pruned only when :meth:`diffs.keys.KeyLayout.parse` reads it as an object's set or a model
feed under our prefix, its label is a model installed in this project, and (for an
object's set) its pk text is one the model's pk field accepts. Anything else under the
prefix is left alone and only counted. Horizon hashes and birth strings are ours but
hold no diffs: they are left alone too.

Every model met has its horizon (``diffs.horizon``) moved up to the cutoff *before* any
of its diffs is removed, so a reader never follows a cursor into a gap the prune is
making: from that moment a cursor older than the cutoff gets ``CursorExpired``. That
is what makes ``--max-age`` shorter than ``max_element_age`` safe for readers.

A model feed holds an entry for every diff of the model, so one ``ZREMRANGEBYSCORE``
on it can remove hundreds of thousands of entries and hold Redis for a fifth of a
second (measured: 500,000 entries, 170-190 ms in which no other client is served).
Feeds are trimmed in steps of ``FEED_STEP`` entries instead, one short script each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import redis
from django.apps import apps
from django.db import models
from redis.cluster import RedisCluster

from diffs.availability import is_refusal
from diffs.connection import cached_script
from diffs.horizon import raise_to
from diffs.keys import HORIZON_MARKER, KIND_MARKERS, KeyLayout, KeyShape
from diffs.lanes import LANES_LUA

SCAN_BATCH = 500
#: Most feed entries one trimming step removes (a few milliseconds of Redis time).
FEED_STEP = 5000
#: The kinds of key (see :class:`diffs.keys.KeyShape`) that hold diffs and are pruned.
PRUNED_KINDS = frozenset({"object", "feed", "index", "log"})
#: Kinds pruned once per model after the scan (each holds a whole model's diffs).
_MODEL_WIDE = frozenset({"feed", "log"})

#: A key as Redis returned it: bytes, or str with ``decode_responses``.
RedisKey = bytes | str

# Removes at most ARGV[2] of the oldest entries scored below ARGV[1] ("(cutoff");
# returns how many. Entries are ordered by score, so they are the first ranks.
_TRIM_FEED_SCRIPT = """
local n = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
local step = tonumber(ARGV[2])
if n > step then n = step end
if n > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1) end
return n
"""


# An object's index (diffs.lanes) without its records scored below ARGV[1]: returns how
# many there are (ARGV[2] "dry") or were. KEYS: the index. The rest is rewritten at once
# (O(bytes of the index), a few kB), which also drops APPEND's spare room.
_TRIM_INDEX_SCRIPT = (
    LANES_LUA
    + """
local count = record_count(KEYS[1])
if count == 0 then return 0 end
local drop = first_after(KEYS[1], tonumber(ARGV[1]), false)
if ARGV[2] == 'dry' or drop == 0 then return drop end
if drop >= count then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], redis.call('GETRANGE', KEYS[1], 16 * drop, -1), 'KEEPTTL')
end
return drop
"""
)

# A model's log without its entries scored below ARGV[1]; returns how many went. KEYS:
# the log. A stream drops whole nodes (about a hundred entries each) at a time.
_TRIM_LOG_SCRIPT = (
    LANES_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', sid(tonumber(ARGV[1])))
-- Emptied, it goes, as an emptied sorted set does (its last id goes with it, as a
-- feed's top score did: a write then scores by the clock and the object's keys).
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
return removed
"""
)


@dataclass
class PruneReport:
    """What a prune did (or, for a dry run, would do)."""

    cutoff_ms: float
    keys_scanned: int = 0
    keys_pruned: int = 0
    diffs_removed: int = 0
    #: Pointers removed from (or counted in) model feeds, and entries removed from model
    #: logs (not counted on a dry run); not counted as diffs.
    feed_entries_removed: int = 0
    #: ``(key, error message)`` for keys of our shape that are not sorted sets.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: Keys under the prefix that are not django-diffs keys of this project (another
    #: site's whose prefix starts with ours, say): never touched.
    keys_left_alone: int = 0
    #: Horizon keys moved up to ``cutoff_ms`` (none on a dry run).
    horizons: set[str] = field(default_factory=set)


def installed_models() -> dict[str, type[models.Model]]:
    """Every concrete model installed in this project, by its key label
    (``app_label.model_name``): the only labels whose keys are ours to touch."""
    found = apps.get_models(include_auto_created=True)
    return {model._meta.label_lower: model for model in found if not model._meta.proxy}


def shape_of_ours(
    layout: KeyLayout, key: RedisKey, installed: Mapping[str, type[models.Model]]
) -> KeyShape | None:
    """The shape of ``key`` when it is a key django-diffs writes under the prefix of
    ``layout`` for a model in ``installed`` (see :func:`installed_models`), else None.

    When in doubt the answer is None: the key is left alone.
    """
    shape = layout.parse(key)
    if shape is None:
        return None
    model = installed.get(shape.label)
    if model is None:
        return None
    if shape.pk_text and not _pk_text_fits(model, shape.pk_text):
        return None
    return shape


def _pk_text_fits(model: type[models.Model], pk_text: str) -> bool:
    # Our keys hold pk text that went through the pk field's to_python. Text the field
    # refuses (``siteb.x:1`` for an integer pk) is another site's key whose prefix is
    # ours followed by something shaped like a model label.
    pk_field = model._meta.pk
    if pk_field is None:  # pragma: no cover - only abstract models lack a pk
        return False
    try:
        pk_field.to_python(pk_text)
    except Exception:  # a custom field may raise anything: cannot tell, so not ours
        return False
    return True


def prune(
    client: redis.Redis,
    layout: KeyLayout,
    cutoff_ms: float,
    *,
    dry_run: bool = False,
    on_key: Callable[[str, int], None] | None = None,
    batch_size: int = SCAN_BATCH,
) -> PruneReport:
    """Remove (or count, with ``dry_run``) members scored below ``cutoff_ms`` from the
    object sets and model feeds under the prefix of ``layout`` (plain or hash-tagged:
    keys written before a move to or from Redis Cluster are pruned too), and (unless
    ``dry_run``) raise the horizon of every model met to ``cutoff_ms``.

    Redis errors other than a key's wrong type propagate (``diffs.connection.REDIS_ERRORS``).
    """
    report = PruneReport(cutoff_ms=cutoff_ms)
    installed = installed_models()
    feeds: list[tuple[RedisKey, str]] = []
    for keys in _batches(client, layout, batch_size):
        ours = _keys_of_ours(layout, keys, installed, report)
        if not ours:
            continue
        if not dry_run:
            _raise_horizons(client, layout, ours, report)
        _prune_batch(client, ours, report, dry_run=dry_run, on_key=on_key, feeds=feeds)
    for feed, kind in feeds:
        report.feed_entries_removed += _trim_model_wide(client, feed, kind, cutoff_ms)
    return report


def _keys_of_ours(
    layout: KeyLayout,
    keys: list[RedisKey],
    installed: Mapping[str, type[models.Model]],
    report: PruneReport,
) -> list[tuple[RedisKey, KeyShape]]:
    """The keys of ``keys`` that hold our diffs, with their shapes; counts the others."""
    ours: list[tuple[RedisKey, KeyShape]] = []
    for key in keys:
        shape = shape_of_ours(layout, key, installed)
        if shape is None:
            report.keys_left_alone += 1
        elif shape.kind in PRUNED_KINDS:
            ours.append((key, shape))
    return ours


def _raise_horizons(
    client: redis.Redis,
    layout: KeyLayout,
    ours: list[tuple[RedisKey, KeyShape]],
    report: PruneReport,
) -> None:
    """Raise the horizon of each model of ``ours`` not raised yet by this prune."""
    for key, shape in ours:
        horizon = horizon_key_of(layout, key, shape)
        if horizon not in report.horizons:
            raise_to(client, horizon, report.cutoff_ms)
            report.horizons.add(horizon)


def horizon_key_of(layout: KeyLayout, key: RedisKey, shape: KeyShape) -> str:
    """The horizon key of the model of ``key`` (an object set or feed of ``shape``),
    in the key's own layout: ``{label}`` if the key has it so, else the plain label."""
    prefix = layout.prefix
    text = key.decode("utf-8") if isinstance(key, bytes) else key  # parse() decoded it
    after = text[len(prefix) :]
    after = after[len(KIND_MARKERS.get(shape.kind, "")) :]
    part = f"{{{shape.label}}}" if after.startswith("{") else shape.label
    return f"{prefix}{HORIZON_MARKER}{part}"


def _prune_batch(
    client: redis.Redis,
    ours: list[tuple[RedisKey, KeyShape]],
    report: PruneReport,
    *,
    dry_run: bool,
    on_key: Callable[[str, int], None] | None,
    feeds: list[tuple[RedisKey, str]],
) -> None:
    """One pipelined round trip for a batch; feeds and logs found are queued on
    ``feeds`` with their kind (trimmed in steps after the scan)."""
    cutoff = f"({report.cutoff_ms}"
    pipe = client.pipeline(transaction=False)
    queued = [(key, shape) for key, shape in ours if shape.kind != "index"]
    for key, shape in queued:
        if shape.kind == "log":
            pipe.xlen(key)  # learns its type; trimmed later
        elif dry_run:
            pipe.zcount(key, "-inf", cutoff)
        elif shape.kind == "feed":
            pipe.zcount(key, "-inf", "-inf")  # learns its type; trimmed in steps later
        else:
            pipe.zremrangebyscore(key, "-inf", cutoff)
    results = iter(pipe.execute(raise_on_error=False))
    indexes = [key for key, shape in ours if shape.kind == "index"]
    trimmed = iter(_trim_indexes(client, indexes, report.cutoff_ms, dry_run=dry_run))
    for key, shape in ours:  # both answer in the order of ours
        result = next(trimmed if shape.kind == "index" else results)
        if shape.kind not in _MODEL_WIDE:
            _account(report, printable_key(key), result, on_key)
        elif isinstance(result, redis.ResponseError):
            report.skipped.append((printable_key(key), str(result)))
        elif dry_run:
            # Feeds hold pointers to diffs counted in their object's set already.
            counted = int(str(result)) if shape.kind == "feed" else 0
            report.feed_entries_removed += counted
        else:
            feeds.append((key, shape.kind))


def _trim_indexes(
    client: redis.Redis | RedisCluster, keys: list[RedisKey], cutoff_ms: float, *, dry_run: bool
) -> list[object]:
    """Trim (or count, with ``dry_run``) the records of object indexes scored below
    ``cutoff_ms``: how many, or the error, per key. One pipelined round trip on one
    server; one call per key on a cluster (its pipelines take no scripts)."""
    if not keys:
        return []
    script = cached_script(client, _TRIM_INDEX_SCRIPT)
    args = [repr(float(cutoff_ms)), "dry" if dry_run else ""]
    results: list[object] = []
    if isinstance(client, RedisCluster):
        for key in keys:
            try:
                results.append(script(keys=[key], args=args))
            except redis.ResponseError as error:
                results.append(error)
        return results
    client.script_load(_TRIM_INDEX_SCRIPT)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.evalsha(script.sha, 1, key, *args)
    for key, result in zip(keys, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(result, redis.exceptions.NoScriptError):  # flushed meanwhile
            try:
                result = script(keys=[key], args=args)
            except redis.ResponseError as error:
                result = error
        results.append(result)
    return results


def _trim_model_wide(client: redis.Redis, key: RedisKey, kind: str, cutoff_ms: float) -> int:
    """Trim a model's feed or log; how many entries went."""
    if kind == "feed":
        return _trim_feed(client, key, cutoff_ms)
    trim_log = cached_script(client, _TRIM_LOG_SCRIPT)
    try:
        return int(trim_log(keys=[key], args=[repr(float(cutoff_ms))]))
    except redis.ResponseError as error:
        if not is_refusal(error):
            raise  # not a key replaced by another type (Redis too old for XTRIM MINID...)
        return 0  # replaced by another type since the batch looked at it


def _trim_feed(client: redis.Redis, feed: RedisKey, cutoff_ms: float) -> int:
    trim = cached_script(client, _TRIM_FEED_SCRIPT)
    removed = 0
    while True:
        try:
            step = int(trim(keys=[feed], args=[f"({cutoff_ms}", FEED_STEP]))
        except redis.ResponseError as error:
            if not is_refusal(error):
                raise
            return removed  # replaced by another type since the batch looked at it
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


def printable_key(key: RedisKey) -> str:
    """``key`` for a terminal or a log: undecodable bytes and control characters escaped (a pk
    is any text, and an escape sequence in it must not reach the operator's terminal)."""
    text = key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else key
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _batches(client: redis.Redis, layout: KeyLayout, size: int) -> Iterator[list[RedisKey]]:
    # Keys stay as Redis returned them, so a key that is not valid UTF-8 is still
    # addressed exactly; they are decoded only for display.
    batch: list[RedisKey] = []
    for key in client.scan_iter(match=layout.pattern(), count=size):
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

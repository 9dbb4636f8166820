"""Saying which diffs were lost, and only those.

A full retry buffer drops its oldest diffs. Those a write may have brought to Redis
before it failed (a timeout) are remembered and checked once Redis answers: only the
ones it does not have are reported lost. The others are reported lost at once, unless
their outbox row keeps them.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Sequence

from diffs.connection import REDIS_ERRORS, cached_script, get_connection
from diffs.delivery.record import OutgoingDiff
from diffs.keys import companion_keys
from diffs.lanes import LANES_LUA
from diffs.settings import get_settings

logger = logging.getLogger("diffs")

#: How many models/pks a log line names before it says "and N more".
NAMED_IN_LOGS = 10

#: Most dropped diffs remembered until Redis answers and says whether it has them.
UNCONFIRMED_LIMIT = 10_000

#: ``(feed key, feed member, label, object pk, index key)`` of dropped diffs whose fate
#: is unknown.
_Identity = tuple[str, str, str, str, str]

# Which diffs Redis has, in either lane (diffs.lanes): the feed's pointer, or the diff's
# id in its object's index. KEYS: per diff, its feed and its object's index (one model
# per call: one hash slot on Redis Cluster). ARGV: per diff, its feed member.
# Returns 1 or 0 per diff.
_STORED_SCRIPT = (
    LANES_LUA
    + """
local found = {}
for i = 1, #ARGV do
  local entry, ix = ARGV[i], KEYS[2 * i]
  local has = redis.call('ZSCORE', KEYS[2 * i - 1], entry) and 1 or 0
  local index = has == 0 and #entry >= 16 and redis.call('GET', ix)
  if index and find_record(index, string.sub(entry, 1, 16)) then has = 1 end
  found[i] = has
end
return found
"""
)


class _Unconfirmed:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.identities: collections.deque[_Identity] = collections.deque()


_unconfirmed = _Unconfirmed()


def name(diffs: Sequence[OutgoingDiff]) -> str:
    """The first few diffs by model and pk, for a log line."""
    named = ", ".join(f"{d.label} pk={d.object_pk}" for d in diffs[:NAMED_IN_LOGS])
    more = len(diffs) - NAMED_IN_LOGS
    return f"{named} and {more} more" if more > 0 else named


def note_dropped(dropped: list[OutgoingDiff]) -> None:
    """Report diffs dropped from a full retry buffer: lost now, or, for those a write may
    have brought to Redis (a timeout), lost only if Redis does not have them once it
    answers."""
    # Births are not diffs: nobody misses one (a lost birth leaves an earlier row's
    # diffs of a reused pk readable, until they expire).
    dropped = [diff for diff in dropped if not diff.is_birth_only]
    if not dropped:
        return
    if all(diff.outbox_row is not None for diff in dropped):
        logger.warning(
            "%d diff(s) no longer wait in memory (retry_buffer_size or queue_bytes "
            "reached): %s. They are still in the outbox table; manage.py flush_diffs "
            "writes them.",
            len(dropped),
            name(dropped),
        )
        return
    unsure = [diff for diff in dropped if diff.maybe_stored]
    with _unconfirmed.lock:
        room = max(0, UNCONFIRMED_LIMIT - len(_unconfirmed.identities))
        _unconfirmed.identities.extend(_identity(diff) for diff in unsure[:room])
    if unsure[:room]:
        logger.warning(
            "%d diff(s) no longer wait in memory (retry_buffer_size or queue_bytes "
            "reached): %s. A write of them timed out and may have reached Redis; once "
            "Redis answers, those it does not have are reported lost.",
            len(unsure[:room]),
            name(unsure[:room]),
        )
    checked = {id(diff) for diff in unsure[:room]}
    lost = [diff for diff in dropped if id(diff) not in checked]
    if lost:
        _log_lost(dropped_count=len(lost), names=name(lost))


def confirm_dropped() -> None:
    """Once Redis answers: report as lost only the dropped diffs it does not have."""
    with _unconfirmed.lock:
        unsure = list(_unconfirmed.identities)
        _unconfirmed.identities.clear()
    if not unsure:
        return
    try:
        found = _stored(unsure)
    except REDIS_ERRORS:
        found = [False] * len(unsure)  # cannot tell: count them lost rather than hide it
    missing = [entry for entry, has in zip(unsure, found, strict=True) if not has]
    if missing:
        named = ", ".join(f"{entry[2]} pk={entry[3]}" for entry in missing[:NAMED_IN_LOGS])
        more = len(missing) - NAMED_IN_LOGS
        named += f" and {more} more" if more > 0 else ""
        _log_lost(dropped_count=len(missing), names=named, confirmed=True)


def _stored(identities: list[_Identity]) -> list[bool]:
    """Whether Redis has each diff: one script call per model."""
    client = get_connection()
    script = cached_script(client, _STORED_SCRIPT)
    by_feed: dict[str, list[int]] = {}
    for position, identity in enumerate(identities):
        by_feed.setdefault(identity[0], []).append(position)
    found = [False] * len(identities)
    for positions in by_feed.values():
        keys: list[str] = []
        args: list[str] = []
        for position in positions:
            feed_key, feed_member, _, _, index_key = identities[position]
            keys += (feed_key, index_key)
            args.append(feed_member)
        for position, has in zip(positions, script(keys=keys, args=args), strict=True):
            found[position] = bool(int(has))
    return found


def forget() -> None:
    """Forget the dropped diffs still to check (the queue was cleared)."""
    with _unconfirmed.lock:
        _unconfirmed.identities.clear()


def _identity(diff: OutgoingDiff) -> _Identity:
    index_key = companion_keys(diff.key, diff.feed_key)[2]
    return diff.feed_key, diff.feed_member, diff.label, diff.object_pk, index_key


def _log_lost(*, dropped_count: int, names: str, confirmed: bool = False) -> None:
    conf = get_settings()
    when = (
        "Redis does not have them: they were dropped from memory while it was failing"
        if confirmed
        else "Redis is still failing"
    )
    logger.error(
        "Lost %d diff(s): %s, with more than retry_buffer_size (%d) diffs or queue_bytes "
        "(%d bytes) waiting: %s. Clients syncing these objects must reload them; set "
        "DIFFS_SETTINGS['durable'] = True to keep diffs across outages.",
        dropped_count,
        when,
        conf.retry_buffer_size,
        conf.queue_bytes,
        names,
    )


def _forget_parent_state() -> None:
    # In a forked child: the parent checks what it dropped.
    global _unconfirmed
    _unconfirmed = _Unconfirmed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_state)

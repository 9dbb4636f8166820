"""What Redis holds for an object, in whichever lane (``diffs.lanes``): for tests that
look at the stored members themselves, below the reading API."""

from __future__ import annotations

import math
from typing import Any

from diffs.layout import current_layout


def stream_id(score: float) -> str:
    """The log entry id of ``score`` (as ``sid`` in ``diffs.lanes``)."""
    ms = math.floor(score)
    exponent = math.frexp(ms)[1]
    return f"{ms}-{round((score - ms) / 2 ** (exponent - 53))}"


def record_scores(client: Any, index_key: str) -> list[float]:
    """The scores an object's index records, oldest first."""
    raw = client.get(index_key) or b""
    scores = []
    for at in range(0, len(raw) - 15, 16):
        ms = int.from_bytes(raw[at : at + 6], "big") & (2**47 - 1)  # less the "follows" bit
        seq = int.from_bytes(raw[at + 6 : at + 8], "big")
        scores.append(ms + seq * 2 ** (math.frexp(ms)[1] - 53))
    return scores


def stored(client: Any, key: str) -> list[tuple[bytes, float]]:
    """``(member, score)`` of every diff stored for the object whose set is ``key``,
    both lanes merged by score (births ignored: this is below every read)."""
    index_key, log_key = current_layout().lane_keys_for(key)
    found = [(_bytes(m), float(s)) for m, s in client.zrange(key, 0, -1, withscores=True)]
    for score in record_scores(client, index_key):
        entry_id = stream_id(score)
        for _, fields in client.xrange(log_key, entry_id, entry_id):
            found.append((_bytes(fields[b"m"] if b"m" in fields else fields["m"]), score))
    return sorted(found, key=lambda pair: pair[1])


def stored_members(client: Any, key: str) -> list[bytes]:
    """The members stored for the object whose set is ``key``, oldest first."""
    return [member for member, _ in stored(client, key)]


def stored_count(client: Any, key: str) -> int:
    """How many diffs are stored for the object whose set is ``key``."""
    return len(stored(client, key))


def feed_count(client: Any, feed_key: str) -> int:
    """How many diffs the model of ``feed_key`` has in its feed and its log."""
    prefix, _, part = feed_key.rpartition("feed:")
    return int(client.zcard(feed_key)) + int(client.xlen(f"{prefix}log:{part}"))


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()

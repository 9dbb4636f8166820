"""Cursors: where a client stopped reading, as an opaque string.

A cursor is the exact score of the last diff a client saw (or a watermark: a point
in time every later diff is certain to come after). Scores are assigned in Redis, in
write order, strictly increasing per model feed (see ``diffs.store``), so "every diff
scored above the cursor" is exactly "every diff the client has not seen yet".
"""

from __future__ import annotations

import math

from diffs.clock import FUTURE_TOLERANCE_MS
from diffs.exceptions import CursorExpired, InvalidCursor

Since = str | int | float | None


def encode_cursor(score: float) -> str:
    """Return the cursor for ``score`` (``repr`` round-trips a float exactly)."""
    return repr(float(score))


def decode_cursor(value: str | int | float) -> float:
    """Return the score a cursor (or a Unix-millisecond number) stands for.

    Raises:
        InvalidCursor: for anything that is not a cursor or a positive number.
    """
    if isinstance(value, bool):
        msg = f"{value!r} is not a cursor."
        raise InvalidCursor(msg)
    try:
        score = float(value)
    except (TypeError, ValueError):
        msg = f"{value!r} is not a cursor: pass back the cursor of a diff or page."
        raise InvalidCursor(msg) from None
    if not math.isfinite(score) or score < 0:
        msg = f"{value!r} is not a cursor: it must be a finite, non-negative number."
        raise InvalidCursor(msg)
    return score


def start_of(since: Since, floor_ms: float) -> tuple[float, bool]:
    """Return ``(score, exclusive)`` to read from: after ``since``, or from ``floor_ms``.

    Raises:
        InvalidCursor: when ``since`` is malformed.
    """
    if since is None:
        return floor_ms, False
    return decode_cursor(since), True


def check_fresh(since: Since, score: float, now_ms: float, max_element_age: float) -> None:
    """Refuse a cursor older than the retention window or ahead of the clock.

    ``now_ms`` is the Redis server's time, the clock every score comes from.

    Raises:
        CursorExpired: ``since`` is older than ``max_element_age``: diffs after it may be
            gone. The exception's ``restart_cursor`` stands for ``now_ms``.
        InvalidCursor: ``since`` lies in the future, so diffs written until then would
            be skipped.
    """
    if since is None:
        return
    if score < now_ms - max_element_age * 1000:
        msg = (
            f"The cursor {since!r} is older than DIFFS_SETTINGS['max_element_age']: "
            "diffs after it may have been pruned. Keep the exception's restart_cursor, "
            "fetch the objects again, then read diffs since restart_cursor."
        )
        raise CursorExpired(msg, encode_cursor(now_ms - 0.001))
    if score > now_ms + FUTURE_TOLERANCE_MS:
        msg = f"{since!r} is in the future: pass back a cursor django-diffs gave out."
        raise InvalidCursor(msg)

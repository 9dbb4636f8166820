"""Cursors: where a client stopped reading, as an opaque string.

A cursor is the exact score of the last diff a client saw (or a watermark: a point
in time every later diff is certain to come after). Scores are assigned in Redis, in
write order, strictly increasing per model feed (see ``diffs.store``), so "every diff
scored above the cursor" is exactly "every diff the client has not seen yet".
"""

from __future__ import annotations

import math

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


def checked_start(since: Since, floor_ms: float) -> tuple[float, bool]:
    """Return ``(score, exclusive)`` to read from, given ``since`` and the retention floor.

    Raises:
        CursorExpired: when ``since`` is older than the retention window, so diffs after
            it may already be gone.
        InvalidCursor: when ``since`` is malformed.
    """
    if since is None:
        return floor_ms, False
    score = decode_cursor(since)
    if score < floor_ms:
        msg = (
            f"The cursor {since!r} is older than DIFFS_SETTINGS['max_element_age']: "
            "diffs after it may have been pruned. Fetch the objects again and start over "
            "without a cursor."
        )
        raise CursorExpired(msg)
    return score, True

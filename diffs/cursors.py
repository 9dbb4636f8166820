"""Cursors: where a client stopped reading, as an opaque string.

A cursor is the exact score of the last diff a client saw (or a watermark: a point
in time every later diff is certain to come after). Scores are assigned in Redis, in
write order, strictly increasing per model feed (see ``diffs.delivery.store``), so "every diff
scored above the cursor" is exactly "every diff the client has not seen yet".
"""

from __future__ import annotations

import math
import re

from diffs.clock import FUTURE_TOLERANCE_MS
from diffs.exceptions import CursorExpired, InvalidCursor

Since = str | int | float | None


def encode_cursor(score: float) -> str:
    """Return the cursor for ``score`` (``repr`` round-trips a float exactly)."""
    return repr(float(score))


#: What a cursor looks like: ASCII digits, with at most one dot and digits after it.
_CURSOR = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?")

#: How much of a bad cursor an error message repeats.
_EXCERPT = 40


def excerpt(value: object) -> str:
    """A short, safe rendering of a value for an error message (the repr, cut)."""
    text = repr(value)
    return text if len(text) <= _EXCERPT else f"{text[: _EXCERPT - 1]}…"


def decode_cursor(value: str | int | float) -> float:
    """Return the score a cursor (or a Unix-millisecond number) stands for.

    A cursor given as text is ASCII digits with at most one dot (``"1795342808609.766"``);
    anything else (signs, exponents, spaces, ``inf``, other scripts' digits, ``_``) is
    refused, whatever ``float()`` would make of it.

    Raises:
        InvalidCursor: for anything that is not a cursor or a non-negative number.
    """
    if isinstance(value, bool):
        msg = f"{excerpt(value)} is not a cursor."
        raise InvalidCursor(msg)
    if isinstance(value, str):
        if not (value.isascii() and _CURSOR.fullmatch(value)):
            msg = (
                f"{excerpt(value)} is not a cursor: pass back the cursor of a diff or page "
                "(digits and one dot)."
            )
            raise InvalidCursor(msg)
        return float(value)
    try:
        score = float(value)
    except (TypeError, ValueError):  # not a str, int or float, whatever the annotation
        msg = f"{excerpt(value)} is not a cursor: pass back the cursor of a diff or page."
        raise InvalidCursor(msg) from None
    if not math.isfinite(score) or score < 0:
        msg = f"{excerpt(value)} is not a cursor: it must be a finite, non-negative number."
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


def check_fresh(
    since: Since, score: float, now_ms: float, max_element_age: float, horizon_ms: float = 0.0
) -> None:
    """Refuse a cursor older than the retention window or the horizon, or ahead of the clock.

    ``now_ms`` is the Redis server's time, the clock every score comes from;
    ``horizon_ms`` the time from which the model's diffs are known to be complete
    (``diffs.horizon``: after Redis lost its data, a shorter prune, a raised window).

    Raises:
        CursorExpired: ``since`` is older than ``max_element_age`` or the horizon: diffs
            after it may be gone. The exception's ``restart_cursor`` stands for ``now_ms``.
        InvalidCursor: ``since`` lies in the future, so diffs written until then would
            be skipped.
    """
    if since is None:
        return
    if score < now_ms - max_element_age * 1000:
        msg = (
            f"The cursor {excerpt(since)} is older than DIFFS_SETTINGS['max_element_age']: "
            "diffs after it may have been pruned. Keep the exception's restart_cursor, "
            "fetch the objects again, then read diffs since restart_cursor."
        )
        raise CursorExpired(msg, encode_cursor(now_ms - 0.001))
    if score < horizon_ms:
        msg = (
            f"Diffs after the cursor {excerpt(since)} may be missing: Redis lost data, or "
            "diffs were pruned sooner than max_element_age. Keep the exception's "
            "restart_cursor, fetch the objects again, then read diffs since restart_cursor."
        )
        raise CursorExpired(msg, encode_cursor(now_ms - 0.001))
    if score > now_ms + FUTURE_TOLERANCE_MS:
        msg = f"{excerpt(since)} is in the future: pass back a cursor django-diffs gave out."
        raise InvalidCursor(msg)

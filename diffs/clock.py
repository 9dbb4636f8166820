"""Timestamps: Unix epoch milliseconds, the score of every diff.

0.1.16 read a UTC time tuple as local time, so its scores were off by the UTC offset
whenever TIME_ZONE was not UTC. Here the clock is ``time.time_ns()``: true epoch
milliseconds whatever TIME_ZONE or USE_TZ say.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from typing import Any

from django.utils import timezone

# One microsecond, in milliseconds: the finest step a score keeps (a double holds
# about 16 significant digits, and 13 of them are taken by the milliseconds).
_STEP_MS = 0.001

_lock = threading.Lock()
_last_ms = 0.0


def now_ms() -> float:
    """Return the current epoch time in milliseconds, strictly increasing per process.

    Two diffs taken in the same microsecond would otherwise share a score, and Redis
    orders equal scores by member bytes, which would lose their order.
    """
    global _last_ms
    with _lock:
        current = round(time.time_ns() / 1_000_000, 3)
        if current <= _last_ms:
            current = round(_last_ms + _STEP_MS, 3)
        _last_ms = current
        return current


def datetime_to_ms(value: dt.datetime) -> float:
    """Return the epoch milliseconds of ``value``.

    A naive value is read in Django's default time zone, as Django reads naive
    datetimes everywhere else.
    """
    if timezone.is_naive(value):
        value = timezone.make_aware(value, timezone.get_default_timezone())
    return round(value.timestamp() * 1000, 3)


def precise_timestamp(value: dt.datetime | None = None) -> float:
    """Return epoch milliseconds for ``value``, or now (kept from 0.1.16's helpers)."""
    return now_ms() if value is None else datetime_to_ms(value)


#: How far ahead of now a fixed timestamp may be (beyond it, every later diff of the
#: feed would be pushed past it, into the future).
FUTURE_TOLERANCE_MS = 60_000.0


def check_fixed_score(score: float, what: str) -> float:
    """Refuse a fixed score that is not finite or lies in the future; returns it."""
    if not math.isfinite(score) or score > now_ms() + FUTURE_TOLERANCE_MS:
        msg = (
            f"{what} is {score!r}: a fixed timestamp must be a finite time in epoch "
            "milliseconds, not in the future."
        )
        raise ValueError(msg)
    return score


def redis_time_ms(client: Any) -> float:
    """The Redis server's clock in epoch milliseconds (the clock every score comes from)."""
    seconds, micros = client.time()
    return float(seconds) * 1000 + float(micros) / 1000

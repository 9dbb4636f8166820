"""Timestamps: Unix epoch milliseconds, the score of every diff.

0.1.16 read a UTC time tuple as local time, so its scores were off by the UTC offset
whenever TIME_ZONE was not UTC. Here the clock is ``time.time_ns()``: true epoch
milliseconds whatever TIME_ZONE or USE_TZ say.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

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

"""Clocks, and which one gives what.

* Every diff's score comes from the Redis server's clock: the write script reads
  ``TIME`` itself, so diffs written by any process sort in the order they reached
  Redis, and cursors never skip one. :func:`redis_time_ms` reads that clock from
  Python (``prune_diffs``' cutoff).
* :func:`now_ms` is this process's wall clock, in Unix epoch milliseconds whatever
  TIME_ZONE or USE_TZ say: when a change committed (a late diff's ``"t"``, an outbox
  row), and the check that refuses a fixed score before it reaches Redis. No ordering
  rests on it.
* ``time.monotonic()`` measures durations: the pause after Redis failed
  (:mod:`diffs.availability`), how long an exit waits, the deadlines of checks.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from django.utils import timezone


def now_ms() -> float:
    """Return the current Unix epoch time in milliseconds (to the microsecond)."""
    return round(time.time_ns() / 1_000_000, 3)


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


def fixed_score_problem(
    score: float, max_element_age: float, now: float | None = None
) -> str | None:
    """Why a fixed score (epoch ms) can never be read, or None when it can be.

    A score that is not finite, older than the retention window (every read would
    already leave it out) or more than ``FUTURE_TOLERANCE_MS`` ahead (every later diff
    of its feed would sort before it) is refused before it reaches Redis.
    """
    if not math.isfinite(score):
        return "it is not a finite number of epoch milliseconds"
    current = now_ms() if now is None else now
    if score < current - max_element_age * 1000:
        return (
            "it is older than DIFFS_SETTINGS['max_element_age'] "
            f"({max_element_age:g} s), so no read would ever return it"
        )
    if score > current + FUTURE_TOLERANCE_MS:
        return "it is more than a minute in the future"
    return None


def redis_time_ms(client: Any) -> float:
    """The Redis server's clock in epoch milliseconds (the clock every score comes from)."""
    seconds, micros = client.time()
    return float(seconds) * 1000 + float(micros) / 1000

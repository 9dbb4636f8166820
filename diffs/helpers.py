"""Helpers kept from 0.1.16 (``diffs.helpers.precise_timestamp``)."""

from __future__ import annotations

import datetime

from diffs import clock

__all__ = ["precise_timestamp"]


def precise_timestamp(dt: datetime.datetime | None = None) -> float:
    """Return the Unix epoch milliseconds of ``dt``, or of now (0.1.16's signature).

    Unlike 0.1.16, the result is true epoch milliseconds whatever ``TIME_ZONE`` says; a
    naive ``dt`` is read in Django's default time zone.
    """
    return clock.precise_timestamp(dt)

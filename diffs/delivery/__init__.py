"""Delivery: getting committed diffs into Redis, in commit order, even across an outage.

This module is the door; the rest of django-diffs reaches delivery only through it.
Capture hands over an :class:`OutgoingDiff` with :func:`schedule` (or a bulk write's
with :func:`schedule_many`); reads call :func:`write_before_read`; ``flush_diffs()`` is
the one flush. Inside, one module per job:

* ``record``: :class:`OutgoingDiff`, the one record of a diff on its way to Redis;
* ``on_commit``: scheduling on commit, the bulk-write pieces and their spill;
* ``queue``: the process-wide queue and its retry/log/raise policy;
* ``losses``: which dropped diffs are reported lost;
* ``background``: the write-behind thread;
* ``store``: the write script (scores, expiry, horizon, births);
* ``announce``: ``diffs.signals.diff_recorded``, sent once Redis has a diff;
* ``outbox``: durable mode's table;
* ``flush``: ``flush_diffs()``;
* ``exit_hooks``: writing what waits at exit, SIGTERM and the end of a child.
"""

from __future__ import annotations

from diffs.delivery.background import needs_write_before_read, write_before_read
from diffs.delivery.exit_hooks import at_exit, install_exit_hooks, write_waiting_diffs
from diffs.delivery.flush import FlushReport, flush_diffs
from diffs.delivery.on_commit import schedule, schedule_many
from diffs.delivery.outbox import outbox_model
from diffs.delivery.queue import clear, unwritten, waiting, write_one
from diffs.delivery.record import BIRTH_ONLY, OutgoingDiff

__all__ = [
    "BIRTH_ONLY",
    "FlushReport",
    "OutgoingDiff",
    "at_exit",
    "clear",
    "flush_diffs",
    "install_exit_hooks",
    "needs_write_before_read",
    "outbox_model",
    "schedule",
    "schedule_many",
    "unwritten",
    "waiting",
    "write_before_read",
    "write_one",
    "write_waiting_diffs",
]

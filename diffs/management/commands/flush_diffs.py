"""``manage.py flush_diffs``: write diffs still waiting for Redis (durable mode's outbox)."""

from __future__ import annotations

from typing import Any

import redis
from django.core.management.base import BaseCommand, CommandError

from diffs.delivery import flush_diffs
from diffs.exceptions import DiffsWriteError


class Command(BaseCommand):
    help = (
        "Write to Redis every diff still waiting: the outbox rows of durable mode and of "
        "large bulk writes (diffs of processes that stopped, or lost Redis, after their "
        "transaction committed). "
        "Exits non-zero while Redis cannot take them; safe to run from cron at any time."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = flush_diffs(include_outbox=True)
        except (redis.RedisError, DiffsWriteError) as error:
            msg = f"Redis did not take the waiting diffs ({type(error).__name__}: {error}). "
            msg += "They are kept; run flush_diffs again once Redis answers."
            raise CommandError(msg) from error
        if report.waiting:
            msg = f"{report.waiting} diff(s) still wait: Redis did not answer (see the log)."
            raise CommandError(msg)
        written = report.from_memory + report.from_outbox
        self.stdout.write(f"Wrote {written} waiting diff(s) to Redis.")
        if report.set_aside:
            self.stderr.write(
                f"{report.set_aside} outbox row(s) set aside: Redis can never take their "
                "diffs (see the ERRORs on the diffs logger, and the 'refused' column of "
                "the diffs_outbox table). They are no longer tried; delete them once read."
            )

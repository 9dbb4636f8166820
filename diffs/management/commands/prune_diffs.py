"""``manage.py prune_diffs``: remove diffs older than ``max_element_age``."""

from __future__ import annotations

import math
from typing import Any

import redis
from django.core.management.base import BaseCommand, CommandError, CommandParser

from diffs.checks import SHOWN_ERROR_CHARS, describe_server, redis_problem, shorten
from diffs.clock import redis_time_ms
from diffs.connection import REDIS_ERRORS, get_connection, underlying_error
from diffs.eviction import eviction_risk
from diffs.exceptions import RedisTooOld
from diffs.keys import KeyLayout
from diffs.pruning import PruneReport, prune
from diffs.settings import SETTING_NAME, DiffsSettings, get_settings


class Command(BaseCommand):
    help = (
        "Remove diffs older than DIFFS_SETTINGS['max_element_age'] from every sorted set "
        "django-diffs wrote under the prefix (prefix-matched SCAN; safe to run from cron "
        "while the site writes), and move each model's horizon up to that cutoff."
    )

    SUMMARY = "Removed {removed} diff(s) from {pruned} of {scanned} key(s) under {prefix!r}."
    DRY_SUMMARY = (
        "Would remove {removed} diff(s) from {pruned} of {scanned} key(s) under {prefix!r}."
    )
    KEY_LINE = "{removed} diff(s) removed from {key}"
    DRY_KEY_LINE = "{removed} diff(s) would be removed from {key}"
    SKIPPED = 'Skipped key "{key}": {error}'
    LEFT_ALONE = (
        "Left {count} key(s) under {prefix!r} alone: not django-diffs keys of this project "
        "(another site's prefix may start with this one; see check --deploy, diffs.W004)."
    )
    HORIZON_LINE = "Cursors older than the cutoff are now refused: horizon {key} raised."
    STOPPED = "prune_diffs stopped: {problem} What it removed before stays removed."
    REFUSED = (
        "Redis at {where} refused a command ({error}). Point {setting}['url'] at a primary, "
        "as a user allowed SCAN, sorted-set commands and scripts on the keys under {prefix!r}."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-age",
            type=float,
            metavar="SECONDS",
            help="Remove diffs older than this (default: DIFFS_SETTINGS['max_element_age']).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be removed without removing anything.",
        )

    def handle(self, *args: Any, max_age: float | None, dry_run: bool, **options: Any) -> None:
        conf = get_settings()
        age = conf.max_element_age if max_age is None else max_age
        if not math.isfinite(age) or age <= 0:
            msg = f"--max-age must be a positive, finite number of seconds, not {max_age}."
            raise CommandError(msg)
        verbosity = int(options.get("verbosity", 1))
        line = self.DRY_KEY_LINE if dry_run else self.KEY_LINE

        def on_key(key: str, removed: int) -> None:
            if verbosity >= 2 and (removed or verbosity >= 3):
                self.stdout.write(line.format(removed=removed, key=key))

        client: redis.Redis | None = None
        try:
            client = get_connection()  # a cluster client connects here
            # The cutoff comes from the Redis server's clock, which gave every score.
            cutoff = redis_time_ms(client) - age * 1000
            layout = KeyLayout.from_settings(conf)
            report = prune(client, layout, cutoff, dry_run=dry_run, on_key=on_key)
            risk = eviction_risk(client)
        except REDIS_ERRORS as error:
            # One line naming the server and the fix, not a traceback from deep in redis-py.
            problem = self._problem(error, conf, client)
            raise CommandError(self.STOPPED.format(problem=problem)) from None
        self._write_report(report, conf.prefix, dry_run, verbosity)
        if risk is not None:
            self.stderr.write(self.style.WARNING(risk))

    def _problem(self, error: Exception, conf: DiffsSettings, client: Any) -> str:
        """What went wrong with Redis and what to do, in one sentence or two."""
        where = describe_server(conf, client)
        if isinstance(error, RedisTooOld):
            return f"Redis at {where}: {error}"
        if isinstance(underlying_error(error), redis.ResponseError):
            return self.REFUSED.format(
                where=where,
                error=shorten(str(error), SHOWN_ERROR_CHARS),
                setting=SETTING_NAME,
                prefix=conf.prefix,
            )
        _, message, hint = redis_problem(error, where, conf.url)
        return shorten(f"{message} {hint}", 2 * SHOWN_ERROR_CHARS)

    def _write_report(
        self, report: PruneReport, prefix: str, dry_run: bool, verbosity: int
    ) -> None:
        for key, error in report.skipped:
            self.stderr.write(self.style.NOTICE(self.SKIPPED.format(key=key, error=error)))
        if verbosity >= 2:
            for horizon in sorted(report.horizons):
                self.stdout.write(self.HORIZON_LINE.format(key=horizon))
            if report.keys_left_alone:
                count = report.keys_left_alone
                self.stdout.write(self.LEFT_ALONE.format(count=count, prefix=prefix))
        summary = self.DRY_SUMMARY if dry_run else self.SUMMARY
        self.stdout.write(
            summary.format(
                removed=report.diffs_removed,
                pruned=report.keys_pruned,
                scanned=report.keys_scanned,
                prefix=prefix,
            )
        )

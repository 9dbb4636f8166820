"""``manage.py prune_diffs``: remove diffs older than ``max_element_age``."""

from __future__ import annotations

import math
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from diffs.clock import redis_time_ms
from diffs.connection import get_connection
from diffs.pruning import prune
from diffs.settings import get_settings


class Command(BaseCommand):
    help = (
        "Remove diffs older than DIFFS_SETTINGS['max_element_age'] from every sorted set "
        "under the prefix (prefix-matched SCAN; safe to run from cron while the site writes)."
    )

    SUMMARY = "Removed {removed} diff(s) from {pruned} of {scanned} key(s) under {prefix!r}."
    DRY_SUMMARY = (
        "Would remove {removed} diff(s) from {pruned} of {scanned} key(s) under {prefix!r}."
    )
    KEY_LINE = "{removed} diff(s) removed from {key}"
    DRY_KEY_LINE = "{removed} diff(s) would be removed from {key}"
    SKIPPED = 'Skipped key "{key}": {error}'

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

        client = get_connection()
        # The cutoff comes from the Redis server's clock, which gave every score.
        report = prune(
            client,
            conf.prefix,
            redis_time_ms(client) - age * 1000,
            dry_run=dry_run,
            on_key=on_key,
        )
        for key, error in report.skipped:
            self.stderr.write(self.style.NOTICE(self.SKIPPED.format(key=key, error=error)))
        summary = self.DRY_SUMMARY if dry_run else self.SUMMARY
        self.stdout.write(
            summary.format(
                removed=report.diffs_removed,
                pruned=report.keys_pruned,
                scanned=report.keys_scanned,
                prefix=conf.prefix,
            )
        )

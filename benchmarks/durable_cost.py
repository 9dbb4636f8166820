"""What a save costs in default and durable mode, next to an unregistered twin model.

Three shapes of write, each an update of three fields of a six-field model with a full
``save()``:

* autocommit: one save, no transaction open;
* one save per ``atomic()`` block;
* 100 saves (of 100 rows) in one ``atomic()`` block, timed per block.

Each is timed for the unregistered twin, the registered model in default mode and in
durable mode (outbox row in the transaction, deleted after the Redis write). Every
round times every variant, in a shuffled order, so drift on the machine hits them all;
the figures are medians over the rounds. Run from the repository root:

    .venv/bin/python benchmarks/durable_cost.py --redis redis://127.0.0.1:6379/14

PostgreSQL at 127.0.0.1 (user ``postgres``); the database ``diffs_bench`` is created
if missing and its bench tables recreated. The Redis db is flushed (db 0 refused).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from setup_django import configure, describe_machine

VARIANTS = ("twin", "default", "durable")
ROWS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--pg-name", default="diffs_bench")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--saves", type=int, default=300, help="saves per variant per round")
    args = parser.parse_args()
    configure(args.redis, args.pg_name)

    from bench_app.models import Author, PlainArticle, TrackedArticle
    from django.conf import settings
    from django.db import transaction

    import diffs
    from diffs.models import OutboxEntry
    from diffs.settings import clear_settings_cache

    author = Author.objects.create(name="a")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    def make(model: Any) -> list[Any]:
        return [
            model.objects.create(
                title=f"t{i}", body="body " * 20, rank=i, published_at=now, author=author
            )
            for i in range(ROWS)
        ]

    rows = {"twin": make(PlainArticle), "default": make(TrackedArticle)}
    rows["durable"] = rows["default"]
    base_settings = dict(settings.DIFFS_SETTINGS)
    counter = iter(range(10**9))

    def use(variant: str) -> None:
        settings.DIFFS_SETTINGS = {**base_settings, "durable": variant == "durable"}
        clear_settings_cache()

    def touch(obj: Any) -> None:
        n = next(counter)
        obj.title, obj.rank, obj.is_public = f"title {n}", n, not obj.is_public
        obj.save()

    def autocommit(variant: str, saves: int) -> float:
        obj = rows[variant][0]
        start = time.perf_counter()
        for _ in range(saves):
            touch(obj)
        return (time.perf_counter() - start) / saves

    def atomic_each(variant: str, saves: int) -> float:
        obj = rows[variant][0]
        start = time.perf_counter()
        for _ in range(saves):
            with transaction.atomic():
                touch(obj)
        return (time.perf_counter() - start) / saves

    def hundred_in_one(variant: str, saves: int) -> float:
        blocks = max(1, saves // ROWS)
        start = time.perf_counter()
        for _ in range(blocks):
            with transaction.atomic():
                for obj in rows[variant]:
                    touch(obj)
        return (time.perf_counter() - start) / blocks

    shapes: dict[str, Callable[[str, int], float]] = {
        "update in autocommit (per save)": autocommit,
        "update in its own atomic() (per save)": atomic_each,
        "100 updates in one atomic() (per block)": hundred_in_one,
    }
    results: dict[str, dict[str, list[float]]] = {s: {v: [] for v in VARIANTS} for s in shapes}
    for shape, run in shapes.items():
        for variant in VARIANTS:  # warm up caches, connections, scripts
            use(variant)
            run(variant, 20)
        for _ in range(args.rounds):
            order = list(VARIANTS)
            random.shuffle(order)
            for variant in order:
                use(variant)
                results[shape][variant].append(run(variant, args.saves))

    # Sanity: the measured paths really wrote diffs, and durable mode left no rows.
    client = diffs.get_connection()
    assert client.zcard(f"diffs:{TrackedArticle._meta.label_lower}:{rows['default'][0].pk}")
    assert OutboxEntry.objects.count() == 0, "outbox rows left behind"
    assert diffs.delivery.waiting() == 0

    print(describe_machine())
    print(f"{args.rounds} rounds, medians; {args.saves} saves per variant per round")
    header = f"{'':44}{'twin':>10}{'default':>10}{'durable':>10}{'def/twin':>10}"
    print(header + f"{'dur/twin':>10}{'dur/def':>10}")
    for shape, by_variant in results.items():
        med = {v: statistics.median(times) * 1e6 for v, times in by_variant.items()}
        print(
            f"{shape:44}{med['twin']:>8.0f}us{med['default']:>8.0f}us{med['durable']:>8.0f}us"
            f"{med['default'] / med['twin']:>9.2f}x{med['durable'] / med['twin']:>9.2f}x"
            f"{med['durable'] / med['default']:>9.2f}x"
        )
    client.flushdb()


if __name__ == "__main__":
    main()

"""What context, old values, masking and many-to-many recording cost, side by side.

Every variant is an update of three fields of a six-field model with a full ``save()``
in autocommit (the many-to-many variant: ``tags.add()`` of one tag), timed per save,
next to the unregistered twin in the same run:

* ``twin``: the unregistered model;
* ``plain``: the registered model, no context;
* ``context``: the same inside ``diffs.context(user=7, reason="import")``;
* ``old_values``: a model registered with ``old_values=True``;
* ``masked``: a model registered with ``mask=["body"]`` (the body changes);
* ``m2m twin`` / ``m2m``: ``tags.add()`` on an unregistered and a registered model.

It also reports the bytes of each variant's member (what a diff costs in Redis beyond
the keys). Every round times every variant, in a shuffled order; figures are medians.
Run from the repository root:

    .venv/bin/python benchmarks/features_cost.py --redis redis://127.0.0.1:6379/11

PostgreSQL at 127.0.0.1 (user ``postgres``); the database ``diffs_bench_features`` is
created if missing and its bench tables recreated. The Redis db is flushed (db 0
refused).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--pg-name", default="diffs_bench_features")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--saves", type=int, default=200, help="saves per variant per round")
    args = parser.parse_args()
    configure(args.redis, args.pg_name)

    from bench_app.models import (
        Author,
        MaskedArticle,
        OldValuesArticle,
        PlainArticle,
        PlainTagged,
        TaggedArticle,
        TrackedArticle,
    )

    import diffs

    author = Author.objects.create(name="a")
    tags = [Author.objects.create(name=f"tag{n}") for n in range(args.saves + 1)]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    def article(model: Any) -> Any:
        return model.objects.create(
            title="t", body="body " * 20, rank=0, published_at=now, author=author
        )

    def updates(model: Any, *, context: bool = False) -> Callable[[], float]:
        obj = article(model)

        def run() -> float:
            start = time.perf_counter()
            for n in range(args.saves):
                obj.title, obj.body, obj.rank = f"t{n}", f"body {n} " * 20, n
                if context:
                    with diffs.context(user=7, reason="import"):
                        obj.save()
                else:
                    obj.save()
            return (time.perf_counter() - start) / args.saves

        return run

    def adds(model: Any) -> Callable[[], float]:
        def run() -> float:
            obj = model.objects.create(title="t")
            start = time.perf_counter()
            for tag in tags[: args.saves]:
                obj.tags.add(tag)
            return (time.perf_counter() - start) / args.saves

        return run

    variants = {
        "twin": updates(PlainArticle),
        "plain": updates(TrackedArticle),
        "context": updates(TrackedArticle, context=True),
        "old_values": updates(OldValuesArticle),
        "masked": updates(MaskedArticle),
        "m2m twin": adds(PlainTagged),
        "m2m": adds(TaggedArticle),
    }
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        order = list(variants)
        random.shuffle(order)
        for name in order:
            timings[name].append(variants[name]())
    median = {name: statistics.median(values) for name, values in timings.items()}

    print(describe_machine())
    print(f"medians of {args.rounds} rounds of {args.saves} saves, in a new order every round")
    for name in ("plain", "context", "old_values", "masked"):
        ratio = median[name] / median["twin"]
        print(
            f"{name:<11} {median[name] * 1e6:7.0f} us per save, twin {median['twin'] * 1e6:5.0f}"
            f" us: {ratio:.2f}x (plain: {median['plain'] / median['twin']:.2f}x)"
        )
    print(
        f"m2m add     {median['m2m'] * 1e6:7.0f} us per add, twin "
        f"{median['m2m twin'] * 1e6:5.0f} us: {median['m2m'] / median['m2m twin']:.2f}x"
    )
    print("bytes per member (an update of three fields):")
    for name, model, context in (
        ("plain", TrackedArticle, False),
        ("context", TrackedArticle, True),
        ("old_values", OldValuesArticle, False),
        ("masked", MaskedArticle, False),
    ):
        obj = article(model)
        obj.title, obj.body, obj.rank = "x" * 10, "y " * 50, 5
        if context:
            with diffs.context(user=7, reason="import"):
                obj.save()
        else:
            obj.save()
        member = diffs.get_connection().zrange(model.diffs.get_key(obj.pk), -1, -1)[0]
        print(f"  {name:<11} {len(member)} bytes")
    tagged = TaggedArticle.objects.create(title="t")
    tagged.tags.add(*tags[:3])
    member = diffs.get_connection().zrange(TaggedArticle.diffs.get_key(tagged.pk), -1, -1)[0]
    print(f"  m2m (3 tags) {len(member)} bytes")
    diffs.get_connection().flushdb()


if __name__ == "__main__":
    main()

"""What diffs with fixed scores (``_last_save_at``) cost Redis, side by side in one run.

10,000 saves in one ``atomic()``, three ways: scores by the Redis clock (no
``_last_save_at``), 10,000 distinct fixed scores, and one fixed score shared by all
(what a ``QuerySet.update()`` of rows whose ``_last_save_at`` is one value gives). The
figures are the Redis server's own time in the write scripts (``INFO commandstats``),
the longest single script call (``SLOWLOG``) and the wall time of the commit. The
shared score must cost about what distinct scores cost.

Server-wide statistics would count other clients' commands too, so the script starts a
redis-server of its own on a free port (and stops it) unless ``--redis`` names one::

    .venv/bin/python benchmarks/fixed_scores.py
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from setup_django import configure, describe_machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="a Redis URL (default: a redis-server of its own)")
    parser.add_argument("--pg-name", default="diffs_bench_fixed")
    parser.add_argument("--saves", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.redis or stack.enter_context(own_redis_server())
        run(url, args)


def run(url: str, args: argparse.Namespace) -> None:
    configure(url, args.pg_name)
    rows = make_rows(args.saves)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        order = list(VARIANTS)
        random.shuffle(order)
        for name in order:
            results[name].append(measure(rows, VARIANTS[name]))
    report(results, args.saves)


@contextlib.contextmanager
def own_redis_server() -> Iterator[str]:
    """A redis-server on a free port for this run only; yields its URL (db 1)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="diffs-bench-") as workdir:
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", workdir]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/1"
        finally:
            process.terminate()
            process.wait(timeout=10)


def make_rows(count: int) -> list[Any]:
    import datetime as dt

    from bench_app.models import Author, TrackedArticle
    from django.utils import timezone

    author = Author.objects.create(name="a")
    now = timezone.now()
    TrackedArticle.objects.bulk_create(
        TrackedArticle(
            title=f"t{n}",
            body="b",
            published_at=now - dt.timedelta(days=1),
            author=author,
        )
        for n in range(count)
    )
    return list(TrackedArticle.objects.order_by("pk"))


def clock_scores(count: int) -> list[float | None]:
    return [None] * count


def distinct_scores(count: int) -> list[float | None]:
    start = time.time() * 1000 - 30_000
    return [start + n * 2.0 for n in range(count)]


def one_shared_score(count: int) -> list[float | None]:
    return [time.time() * 1000 - 30_000] * count


VARIANTS = {
    "clock (no _last_save_at)": clock_scores,
    "distinct fixed scores": distinct_scores,
    "one shared fixed score": one_shared_score,
}


def measure(rows: list[Any], scores_for: Any) -> dict[str, float]:
    from django.db import transaction

    import diffs
    from diffs.layout import current_layout

    client = diffs.get_connection()
    client.flushdb()
    # A model with a long history: fixed scores in the past are placed at their own
    # score (a new model's horizon would send them to the clock, which costs nothing).
    client.hset(current_layout().horizon_key(type(rows[0])), mapping={"from": -1e300})
    client.slowlog_reset()
    client.config_set("slowlog-log-slower-than", 0)
    before = script_usec(client)
    scores = scores_for(len(rows))
    with transaction.atomic():
        for row, score in zip(rows, scores, strict=True):
            row._last_save_at = score
            row.rank += 1
            row.save(update_fields=["rank"])
        started = time.perf_counter()
    commit = time.perf_counter() - started
    used = script_usec(client) - before
    longest = max((entry["duration"] for entry in client.slowlog_get(128)), default=0)
    client.config_set("slowlog-log-slower-than", 10_000)
    stored = client.zcard(current_layout().feed_key(type(rows[0])))
    assert stored == len(rows), f"{stored} of {len(rows)} diffs stored"
    return {"redis_ms": used / 1000, "longest_ms": longest / 1000, "commit_ms": commit * 1000}


def script_usec(client: Any) -> float:
    stats = client.info("commandstats")
    return sum(stats.get(name, {}).get("usec", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))


def report(results: dict[str, list[dict[str, float]]], saves: int) -> None:
    print(describe_machine())
    print(f"{saves} saves in one atomic(), medians of {len(next(iter(results.values())))} rounds")
    base = statistics.median(r["redis_ms"] for r in results["distinct fixed scores"])
    print(
        f"{'variant':<28}{'Redis time':>12}{'longest call':>14}{'commit':>10}{'vs distinct':>13}"
    )
    for name, runs in results.items():
        redis_ms = statistics.median(r["redis_ms"] for r in runs)
        longest = statistics.median(r["longest_ms"] for r in runs)
        commit = statistics.median(r["commit_ms"] for r in runs)
        print(
            f"{name:<28}{redis_ms:>10.1f}ms{longest:>12.1f}ms{commit:>8.0f}ms"
            f"{redis_ms / base:>12.2f}x"
        )


if __name__ == "__main__":
    main()

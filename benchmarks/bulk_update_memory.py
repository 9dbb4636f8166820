"""What a queryset ``update()`` of many rows costs: a registered model next to its twin.

For each database (SQLite, and PostgreSQL with ``--postgres``) and each model (the
unregistered ``PlainArticle`` and the registered ``TrackedArticle``, same fields), a
fresh child process creates the table, inserts the rows without recording diffs, and
runs ``Model.objects.update(...)`` over all of them, diffs written to Redis included
(they go at commit, inside the timed call). Measured, each in a child of its own:

* wall time and RSS growth (peak resident memory during the call, minus before it;
  Linux's ``/proc/self/clear_refs`` resets the peak);
* the tracemalloc peak of the call (Python allocations only; tracemalloc slows code
  down, so this run is not timed).

Run from the repository root (a real Redis; its db is flushed, db 0 is refused)::

    .venv/bin/python benchmarks/bulk_update_memory.py --redis redis://127.0.0.1:6379/12
    .venv/bin/python benchmarks/bulk_update_memory.py --rows 20000 --postgres --durable

PostgreSQL: 127.0.0.1, user ``postgres``, database ``--pg-name`` (created if missing,
its bench tables recreated). SQLite: a file in a temporary directory.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

MODELS = {"twin": "PlainArticle", "registered": "TrackedArticle"}
MIB = 1024 * 1024


def main() -> None:
    args = _parser().parse_args()
    if args.child:
        print(json.dumps(_child(args)))
        return
    databases = ["sqlite", "postgres"] if args.postgres else ["sqlite"]
    mode = "durable" if args.durable else "default"
    budget = f", spill after {args.spill_after_bytes:,} bytes" if args.spill_after_bytes else ""
    print(f"update() of {args.rows:,} rows, diffs {mode} mode{budget}, Redis {args.redis}")
    header = (
        f"{'database':<9} {'model':<11} {'wall s':>8} {'ratio':>6} "
        f"{'tracemalloc peak':>17} {'RSS growth':>11} {'diffs':>9}"
    )
    print(header)
    print("-" * len(header))
    for database in databases:
        wall = {}
        for kind in MODELS:
            timed = _run_child(args, database, kind, "time")
            traced = (
                {"peak": float("nan")}
                if args.no_tracemalloc
                else _run_child(args, database, kind, "tracemalloc")
            )
            wall[kind] = timed["seconds"]
            if kind == "registered" and timed["diffs"] != args.rows:
                print(f"warning: {timed['diffs']:,} diffs in Redis, not {args.rows:,}")
            ratio = timed["seconds"] / wall["twin"]
            print(
                f"{database:<9} {kind:<11} {timed['seconds']:>8.2f} {ratio:>5.1f}x "
                f"{traced['peak'] / MIB:>13.1f} MiB {timed['rss'] / MIB:>7.1f} MiB "
                f"{timed['diffs']:>9,}"
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows updated (100,000)")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    parser.add_argument("--pg-name", default="diffs_bench_bulk")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--durable", action="store_true", help="DIFFS_SETTINGS durable")
    parser.add_argument(
        "--spill-after-bytes",
        type=int,
        help="diffs one transaction keeps in memory before the outbox (the writer's default)",
    )
    parser.add_argument(
        "--no-tracemalloc", action="store_true", help="skip the (slow) tracemalloc runs"
    )
    # Internal: what one child process measures.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--sqlite-path", help=argparse.SUPPRESS)
    return parser


def _run_child(args: argparse.Namespace, database: str, kind: str, measure: str) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable,
            __file__,
            "--child",
            f"--rows={args.rows}",
            f"--redis={args.redis}",
            f"--pg-name={args.pg_name}",
            f"--pg-host={args.pg_host}",
            f"--database={database}",
            f"--model={kind}",
            f"--measure={measure}",
            f"--sqlite-path={folder}/bench.sqlite3",
            *(["--durable"] if args.durable else []),
            *([f"--spill-after-bytes={args.spill_after_bytes}"] if args.spill_after_bytes else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{database} {kind} {measure} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(args: argparse.Namespace) -> dict[str, Any]:
    _configure(args)
    from bench_app import models as bench_models

    if args.spill_after_bytes:
        from django.conf import settings

        from diffs.settings import clear_settings_cache

        settings.DIFFS_SETTINGS = {
            **settings.DIFFS_SETTINGS,
            "spill_after_bytes": args.spill_after_bytes,
        }
        clear_settings_cache()
    from django.db.models import F

    model = getattr(bench_models, MODELS[args.model])
    _fill(model, args.rows)
    gc.collect()
    if args.measure == "tracemalloc":
        tracemalloc.start()
        model.objects.update(rank=F("rank") + 1, is_public=True)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {"peak": peak}
    before = _reset_peak_rss()
    start = time.perf_counter()
    model.objects.update(rank=F("rank") + 1, is_public=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss": _peak_rss() - before, "diffs": _diffs_in_redis(model)}


def _configure(args: argparse.Namespace) -> None:
    import django
    from django.conf import settings

    if args.database == "postgres":
        from setup_django import ensure_database

        ensure_database(args.pg_name, args.pg_host, "postgres")
        database = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": args.pg_name,
            "USER": "postgres",
            "HOST": args.pg_host,
        }
    else:
        database = {"ENGINE": "django.db.backends.sqlite3", "NAME": args.sqlite_path}
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "diffs", "bench_app"],
        DATABASES={"default": database},
        # A generous timeout: on a shared server another client's script can hold
        # Redis for a while, and a timed-out write would leave diffs out of the count.
        DIFFS_SETTINGS={"url": args.redis, "durable": args.durable, "socket_timeout": 30.0},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        LOGGING_CONFIG=None,
    )
    django.setup()
    from bench_app.models import Author, PlainArticle, TrackedArticle
    from django.core.management import call_command
    from django.db import connection

    import diffs

    client = diffs.get_connection()
    if client.connection_pool.connection_kwargs.get("db", 0) == 0:
        sys.exit("Refusing to use Redis db 0: pass --redis redis://host:port/<another db>.")
    client.flushdb()
    call_command("migrate", "diffs", verbosity=0)
    from diffs.models import OutboxEntry

    OutboxEntry.objects.all().delete()  # rows an interrupted run left
    with connection.schema_editor() as editor:
        for model in (TrackedArticle, PlainArticle, Author):
            editor.execute(f"DROP TABLE IF EXISTS {model._meta.db_table}")
        for model in (Author, PlainArticle, TrackedArticle):
            editor.create_model(model)


def _fill(model: Any, rows: int) -> None:
    """Insert ``rows`` rows through a plain QuerySet: no diff is recorded for them."""
    import datetime as dt

    from bench_app.models import Author
    from django.db.models import QuerySet

    author = QuerySet(Author).create(name="author")
    when = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    for start in range(0, rows, 5000):
        batch = [
            model(
                title=f"title {n}",
                body=f"a body of some length for row {n} " * 3,
                rank=n,
                published_at=when,
                author=author,
            )
            for n in range(start, min(start + 5000, rows))
        ]
        QuerySet(model).bulk_create(batch)


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS counter (Linux); return the current RSS in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        sys.exit("Needs Linux's /proc/self/clear_refs to measure RSS growth.")
    return _status("VmRSS")


def _peak_rss() -> int:
    return _status("VmHWM")


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert found is not None, field
    return int(found.group(1)) * 1024


def _diffs_in_redis(model: Any) -> int:
    import diffs
    from diffs.layout import current_layout

    if not diffs.is_registered(model):
        return 0
    return int(diffs.get_connection().zcard(current_layout().feed_key(model)))


if __name__ == "__main__":
    main()

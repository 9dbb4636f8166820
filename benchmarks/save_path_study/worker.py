"""One side of the lockstep A/B: a tree's diffs on its own PG database and Redis prefix.

Reads "variant count" lines on stdin, runs them, answers ns per save on stdout."""

from __future__ import annotations

import datetime as dt
import gc
import sys
import time

root, tag = sys.argv[1], sys.argv[2]
sys.path[:0] = [root, root + "/benchmarks"]
import django
import setup_django  # noqa: F401 (puts the tree first on sys.path)
from django.conf import settings

pg_name = f"diffs_ab_{tag}"
setup_django.ensure_database(pg_name, "127.0.0.1", "postgres")
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "diffs", "bench_app"],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": pg_name,
            "USER": "postgres",
            "HOST": "127.0.0.1",
        }
    },
    DIFFS_SETTINGS={"url": "redis://127.0.0.1:6379/11", "prefix": f"diffsab{tag}:"},
    USE_TZ=True,
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    LOGGING_CONFIG=None,
)
django.setup()
import diffs

assert diffs.__file__.startswith(root), diffs.__file__
from bench_app.models import Author, PlainArticle, TrackedArticle
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings

call_command("migrate", "diffs", verbosity=0)
with connection.schema_editor() as editor:
    for model in (TrackedArticle, PlainArticle, Author):
        editor.execute(f"DROP TABLE IF EXISTS {model._meta.db_table} CASCADE")
    for model in (Author, PlainArticle, TrackedArticle):
        editor.create_model(model)
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
author = Author.objects.create(name="a")
rows = {}
for name, model in (("plain", PlainArticle), ("tracked", TrackedArticle)):
    model.objects.bulk_create(
        model(title=f"t{i}", body="body " * 20, rank=i, published_at=NOW, author=author)
        for i in range(100)
    )
    rows[name] = list(model.objects.order_by("pk"))
client = diffs.get_connection()


def cleanup():
    for key in client.scan_iter(match=f"diffsab{tag}:*", count=1000):
        client.delete(key)


cleanup()
behind = override_settings(DIFFS_SETTINGS={**settings.DIFFS_SETTINGS, "write_behind": True})
counter = iter(range(10**9))


def touch(obj):
    n = next(counter)
    obj.title, obj.rank, obj.is_public = f"title {n}", n, not obj.is_public
    obj.save()


def run(variant, count):
    c0, m0 = time.process_time_ns(), time.thread_time_ns()
    w = _run(variant, count)
    per = count * (100 if variant.startswith("b") else 1)
    return f"{w} {(time.process_time_ns() - c0) / per} {(time.thread_time_ns() - m0) / per}"


def _run(variant, count):
    fig, kind = variant.split(":")
    gc.collect()
    if fig == "a":
        obj = rows["plain" if kind == "plain" else "tracked"][0]
        if kind == "wb":
            behind.enable()
        try:
            t = time.perf_counter_ns()
            for _ in range(count):
                touch(obj)
            if kind == "wb":
                diffs.flush_diffs()
            return (time.perf_counter_ns() - t) / count
        finally:
            if kind == "wb":
                behind.disable()
    objs = rows[kind]
    t = time.perf_counter_ns()
    for _ in range(count):
        with transaction.atomic():
            for obj in objs:
                touch(obj)
    return (time.perf_counter_ns() - t) / count  # per block


import redis.utils

print("hiredis" if redis.utils.HIREDIS_AVAILABLE else "no hiredis", file=sys.stderr)
print("ready", flush=True)
for line in sys.stdin:
    parts = line.split()
    if not parts or parts[0] == "quit":
        break
    print(run(parts[0], int(parts[1])), flush=True)
cleanup()

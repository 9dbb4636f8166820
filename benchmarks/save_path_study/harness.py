"""Shared set-up for the save-path profiling: Django on PostgreSQL + real Redis db 11."""

from __future__ import annotations

import datetime as dt
import os
import sys

ROOT = os.environ.get("DIFFS_ROOT", "/work/wt-save")
sys.path[:0] = [ROOT, ROOT + "/benchmarks"]
from setup_django import configure

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def setup(pg="diffs_bench_savepath"):
    configure("redis://127.0.0.1:6379/11", pg)
    from bench_app.models import Author, PlainArticle, TrackedArticle

    import diffs

    author = Author.objects.create(name="a")
    rows = {}
    for name, model in (("plain", PlainArticle), ("tracked", TrackedArticle)):
        model.objects.bulk_create(
            model(title=f"t{i}", body="body " * 20, rank=i, published_at=NOW, author=author)
            for i in range(100)
        )
        rows[name] = list(model.objects.order_by("pk"))
    diffs.get_connection().flushdb()
    return rows


counter = iter(range(10**9))


def touch(obj):
    n = next(counter)
    obj.title, obj.rank, obj.is_public = f"title {n}", n, not obj.is_public
    obj.save()

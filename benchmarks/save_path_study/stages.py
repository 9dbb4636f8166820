"""Stage-by-stage timing of the save path (inclusive perf_counter_ns per stage).

usage: stages.py a|b|aw [saves]
"""

from __future__ import annotations

import collections
import functools
import gc
import statistics
import sys
import time

sys.path.insert(0, "/tmp/savepath")
import harness

rows = harness.setup()
import redis
from bench_app.models import TrackedArticle
from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.test import override_settings

import diffs
from diffs import delivery, payload, recording, tracking
from diffs.delivery import announce, background, on_commit, queue, store

case = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
client = diffs.get_connection()

acc = collections.defaultdict(int)
cnt = collections.defaultdict(int)
tls = __import__("threading").local()


def timed(name, fn):
    pc = time.perf_counter_ns

    @functools.wraps(fn)
    def wrapper(*a, **k):
        t = pc()
        try:
            return fn(*a, **k)
        finally:
            acc[name] += pc() - t
            cnt[name] += 1

    return wrapper


def patch(obj, attr, name=None):
    setattr(obj, attr, timed(name or attr, getattr(obj, attr)))


def run_plain_and_tracked(variant, n):
    if case.startswith("a"):
        obj = rows[variant][0]
        t = time.perf_counter_ns()
        for _ in range(n):
            harness.touch(obj)
        if case == "aw":
            diffs.flush_diffs()
        return (time.perf_counter_ns() - t) / n
    t = time.perf_counter_ns()
    for _ in range(n // 100):
        with transaction.atomic():
            for obj in rows[variant]:
                harness.touch(obj)
    return (time.perf_counter_ns() - t) / n


ctx = None
if case == "aw":
    ctx = override_settings(DIFFS_SETTINGS={**settings.DIFFS_SETTINGS, "write_behind": True})
    ctx.enable()

# warm-up, then uninstrumented totals (alternating, 5 rounds)
run_plain_and_tracked("plain", 300)
run_plain_and_tracked("tracked", 300)
tot = {"plain": [], "tracked": []}
for _ in range(5):
    for v in ("plain", "tracked"):
        gc.collect()
        tot[v].append(run_plain_and_tracked(v, N))


def cmdstats():
    info = client.info("commandstats")
    e = info.get("cmdstat_evalsha", {})
    return e.get("calls", 0), e.get("usec", 0)


# instrument
uid = TrackedArticle._meta.label_lower
pre_save.disconnect(sender=TrackedArticle, dispatch_uid=f"diffs.pre_save.{uid}")
post_save.disconnect(sender=TrackedArticle, dispatch_uid=f"diffs.resnapshot.{uid}")
post_save.disconnect(sender=TrackedArticle, dispatch_uid=f"diffs.post_save.{uid}")
pre_save.connect(
    timed("R on_pre_save", recording.on_pre_save),
    sender=TrackedArticle,
    weak=False,
    dispatch_uid=f"diffs.pre_save.{uid}",
)
post_save.connect(
    timed("R on_post_save", recording.on_post_save),
    sender=TrackedArticle,
    weak=False,
    dispatch_uid=f"diffs.post_save.{uid}",
)
post_save.connect(
    timed("R _resnapshot", tracking._resnapshot),
    sender=TrackedArticle,
    weak=False,
    dispatch_uid=f"diffs.resnapshot.{uid}",
)
for sig, nm in ((pre_save, "S pre_save.send"), (post_save, "S post_save.send")):
    orig = sig.send
    sig.send = (
        lambda orig, nm: (
            lambda sender, **kw: timed(nm if sender is TrackedArticle else nm + "(plain)", orig)(
                sender, **kw
            )
        )
    )(orig, nm)
for a in (
    "settle",
    "changed_fields",
    "database_assigned_pk",
    "provisional_copy",
    "remember",
    "mark_saved",
    "creation_fields",
):
    patch(tracking, a, "T " + a)
patch(recording, "record", "P record")
patch(recording, "build_diff", "P build_diff")
patch(recording, "current_layout", "P current_layout")
patch(delivery, "schedule", "D schedule")
for a in (
    "_data_for",
    "_encode",
    "build_member",
    "new_diff_id",
    "_keys_of",
    "current_context_json",
    "_target_for",
    "normalize_pk",
    "options_of",
    "_send_diff_refuses",
    "_fixed_timestamp",
    "_too_large",
    "feed_member",
    "model_label",
):
    patch(payload, a, "B " + a)
patch(queue, "enqueue", "D enqueue")
patch(background, "write_soon", "D write_soon")
patch(on_commit, "_keep_write_last", "D _keep_write_last")
patch(queue, "write_queued", "Q write_queued")
patch(queue, "write_batch", "Q write_batch")
patch(store, "write_many", "W write_many")
patch(announce, "announce", "Q announce")
patch(store, "_write_in_chunks", "W _write_in_chunks")
import diffs.connection as dconn

if hasattr(dconn, "HeldScript"):
    patch(dconn.HeldScript, "__call__", "X HeldScript.__call__")
    patch(dconn, "_send_and_read", "X conn send+read")
import redis.commands.core as rcc

patch(rcc.Script, "__call__", "X Script.__call__")
patch(redis.ConnectionPool, "get_connection", "X pool.get_connection")
patch(redis.ConnectionPool, "release", "X pool.release")
patch(redis.connection.AbstractConnection, "send_command", "X send_command")
patch(redis.connection.AbstractConnection, "read_response", "X read_response")
from django.db import connections

WRAPPER = type(connections["default"])
patch(WRAPPER, "on_commit", "D connection.on_commit")
patch(WRAPPER, "run_and_clear_commit_hooks", "C run_and_clear_commit_hooks")

c0, u0 = cmdstats()
acc.clear()
cnt.clear()
gc.collect()
inst = run_plain_and_tracked("tracked", N)
c1, u1 = cmdstats()
if ctx:
    ctx.disable()

p, t = statistics.median(tot["plain"]) / 1000, statistics.median(tot["tracked"]) / 1000
print(
    f"case {case}: uninstrumented medians of 5 rounds x {N} saves: plain {p:.1f} us, tracked {t:.1f} us, extra {t - p:.1f} us ({t / p:.2f}x)"
)
print(
    f"   rounds plain: {[round(x / 1000) for x in tot['plain']]} tracked: {[round(x / 1000) for x in tot['tracked']]}"
)
print(f"instrumented tracked: {inst / 1000:.1f} us per save")
calls = c1 - c0
print(
    f"redis server: {calls} EVALSHA calls, {(u1 - u0) / max(calls, 1):.1f} us each on the server, {(u1 - u0) / N:.1f} us per save"
)
for name in sorted(acc):
    print(f"  {name:34} {acc[name] / N / 1000:8.2f} us/save  ({cnt[name] / N:.2f} calls/save)")

"""Cumulative ablation of the save path: each level adds one stage back.

usage: ablate.py a|b|aw [saves] [rounds]
Per level: median wall us/save and median process CPU us/save over rounds (levels
alternate in a fresh random order every round).
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
import time

sys.path.insert(0, "/tmp/savepath")
import harness

rows = harness.setup()
from bench_app.models import TrackedArticle
from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.test import override_settings

import diffs
from diffs import delivery, recording, tracking
from diffs.delivery import store

case = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 9
uid = TrackedArticle._meta.label_lower
orig = {
    "record": recording.record,
    "schedule": delivery.schedule,
    "write_many": store.write_many,
    "_script": store._script,
}


class FakeScript:
    def __call__(self, keys, args):
        return ["1"] * (len(keys) // 4)


FAKE = FakeScript()


class Pinger:
    def __call__(self, keys, args):
        diffs.get_connection().ping()
        return ["1"] * (len(keys) // 4)


PINGER = Pinger()


def set_level(level):
    recording.record = orig["record"]
    delivery.schedule = orig["schedule"]
    store.write_many = orig["write_many"]
    store._script = orig["_script"]
    on = level >= 1
    if on:
        pre_save.connect(
            recording.on_pre_save, sender=TrackedArticle, dispatch_uid=f"diffs.pre_save.{uid}"
        )
        post_save.connect(
            tracking._resnapshot, sender=TrackedArticle, dispatch_uid=f"diffs.resnapshot.{uid}"
        )
        post_save.connect(
            recording.on_post_save, sender=TrackedArticle, dispatch_uid=f"diffs.post_save.{uid}"
        )
    else:
        pre_save.disconnect(sender=TrackedArticle, dispatch_uid=f"diffs.pre_save.{uid}")
        post_save.disconnect(sender=TrackedArticle, dispatch_uid=f"diffs.resnapshot.{uid}")
        post_save.disconnect(sender=TrackedArticle, dispatch_uid=f"diffs.post_save.{uid}")
    if level == 1:
        recording.record = lambda *a, **k: None
    elif level == 2:
        delivery.schedule = lambda diff, using: None
    elif level == 3:
        store.write_many = lambda client, diffs, keep_for=None: [1.0] * len(diffs)
    elif level == 4:
        store._script = lambda client: FAKE
    elif level == 45:
        store._script = lambda client: PINGER


LEVELS = {
    "plain": None,
    "L0 tracked, no receivers": 0,
    "L1 +tracking (pre_save, resnapshot)": 1,
    "L2 +build_diff": 2,
    "L3 +schedule/queue, no store": 3,
    "L4 +store (keys, args), no Redis": 4,
    "L4p +one PING instead of the script": 45,
    "L5 full (Redis)": 5,
}

behind = case == "aw"
if behind:
    ctx = override_settings(DIFFS_SETTINGS={**settings.DIFFS_SETTINGS, "write_behind": True})
    ctx.enable()


def run(name, n):
    level = LEVELS[name]
    variant = "plain" if level is None else "tracked"
    set_level(5 if level is None else level)
    gc.collect()
    w0, c0, t0 = time.perf_counter_ns(), time.process_time_ns(), time.thread_time_ns()
    if case in ("a", "aw"):
        obj = rows[variant][0]
        for _ in range(n):
            harness.touch(obj)
        if behind:
            diffs.flush_diffs()
    else:
        for _ in range(n // 100):
            with transaction.atomic():
                for obj in rows[variant]:
                    harness.touch(obj)
    w, c, t = time.perf_counter_ns() - w0, time.process_time_ns() - c0, time.thread_time_ns() - t0
    return w / n / 1000, c / n / 1000, t / n / 1000


for name in LEVELS:
    run(name, 200)
res = {name: [] for name in LEVELS}
for _ in range(ROUNDS):
    order = list(LEVELS)
    random.shuffle(order)
    for name in order:
        res[name].append(run(name, N))
set_level(5)
print(
    f"case {case}: {ROUNDS} rounds x {N} saves; median us per save (wall | CPU process | CPU main thread), wall spread = quartiles"
)
base = statistics.median(r[0] for r in res["plain"])
prev = None
for name in LEVELS:
    w = statistics.median(r[0] for r in res[name])
    c = statistics.median(r[1] for r in res[name])
    t = statistics.median(r[2] for r in res[name])
    ws = sorted(r[0] for r in res[name])
    lo, hi = ws[len(ws) // 4], ws[(3 * len(ws)) // 4]
    delta = "" if prev is None else f"  step wall {w - prev[0]:+7.1f}  CPU {c - prev[1]:+6.1f}"
    print(
        f"  {name:38} wall {w:7.1f} ({lo:.0f}-{hi:.0f})  cpu {c:6.1f}  main {t:6.1f}  ratio {w / base:.2f}{delta}"
    )
    prev = (w, c)

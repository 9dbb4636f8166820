"""Pure-Python stages of one save, timed in a loop without I/O (median of 7 x N calls)."""

from __future__ import annotations

import gc
import statistics
import sys
import time

sys.path.insert(0, "/tmp/savepath")
import harness

rows = harness.setup()
from bench_app.models import TrackedArticle
from django.db import transaction

from diffs import delivery, payload, recording, tracking
from diffs.delivery import store
from diffs.layout import current_layout

obj = rows["tracked"][0]
N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000


class FakeScript:
    def __call__(self, keys, args):
        return ["1"] * (len(keys) // 4)


FAKE = FakeScript()
n = iter(range(10**9))


def change():
    k = next(n)
    obj.title, obj.rank, obj.is_public = f"title {k}", k, not obj.is_public


def pre_post():
    recording.on_pre_save(TrackedArticle, obj, update_fields=None, using="default")
    obj.__dict__.pop("_diffs_changes", None)
    tracking._resnapshot(TrackedArticle, obj)


CH = {"title": "x", "rank": 1, "is_public": True}


def build():
    payload.build_diff(obj, CH, layout=current_layout(), created=False, max_bytes=1_000_000)


DIFF = payload.build_diff(obj, CH, layout=current_layout(), created=False, max_bytes=1_000_000)


def post_no_schedule():
    obj.__dict__["_diffs_changes"] = CH
    recording.on_post_save(TrackedArticle, obj, created=False, using="default")


def deliver():
    delivery.schedule(
        payload.build_diff(obj, CH, layout=current_layout(), created=False, max_bytes=10**6),
        "default",
    )


def encode():
    payload._encode(
        obj,
        [
            {
                "model": "bench_app.trackedarticle",
                "pk": 1,
                "fields": {"title": "title 123", "rank": 123, "is_public": False},
            }
        ],
    )


def data():
    payload._data_for(obj, CH, created=False, mask=frozenset())


def outgoing_keys_args():
    DIFF.script_keys()
    DIFF.script_args()
    DIFF.script_bytes


tests = {
    "tracking: on_pre_save + _resnapshot": (pre_post, change),
    "payload: build_diff": (build, None),
    "  _data_for": (data, None),
    "  _encode": (encode, None),
    "recording: on_post_save (schedule stubbed)": (post_no_schedule, None),
    "delivery: build_diff + schedule, fake script": (deliver, None),
    "  script_keys/args/bytes": (outgoing_keys_args, None),
}
orig_schedule = delivery.schedule


def timeit(fn, prep):
    ts = []
    for _ in range(7):
        gc.collect()
        total = 0
        for _ in range(N // 10):
            if prep:
                prep()
            t = time.perf_counter_ns()
            fn()
            fn()
            fn()
            fn()
            fn()
            fn()
            fn()
            fn()
            fn()
            fn()
            total += time.perf_counter_ns() - t
        ts.append(total / N / 1000)
    return statistics.median(ts), min(ts)


only = sys.argv[2:]
for name, (fn, prep) in tests.items():
    if only and not any(o in name for o in only):
        continue
    if name.startswith("recording"):
        delivery.schedule = lambda d, u: None
    elif name.startswith("delivery"):
        store._script = lambda client: FAKE
    med, lo = timeit(fn, prep)
    delivery.schedule = orig_schedule
    print(f"{name:48} {med:7.2f} us (min {lo:.2f})")

# Per save of a 100-save atomic block, no database or Redis I/O: the receivers by hand,
# the commit's callbacks, and the write with a fake script.
objs = rows["tracked"]


def block():
    with transaction.atomic():
        for o in objs:
            k = next(n)
            o.title, o.rank, o.is_public = f"title {k}", k, not o.is_public
            recording.on_pre_save(TrackedArticle, o, update_fields=None, using="default")
            tracking._resnapshot(TrackedArticle, o)
            recording.on_post_save(TrackedArticle, o, created=False, using="default")


def one():
    o = obj
    k = next(n)
    o.title, o.rank, o.is_public = f"title {k}", k, not o.is_public
    recording.on_pre_save(TrackedArticle, o, update_fields=None, using="default")
    tracking._resnapshot(TrackedArticle, o)
    recording.on_post_save(TrackedArticle, o, created=False, using="default")


store._script = lambda client: FAKE
if not only or "whole" in only:
    for label, fn, per in (
        ("whole save, autocommit (receivers by hand)", one, 1),
        ("whole save, in a 100-save block", block, 100),
    ):
        ts = []
        for _ in range(7):
            gc.collect()
            t = time.perf_counter_ns()
            for _ in range(max(1, 3000 // per)):
                fn()
            ts.append((time.perf_counter_ns() - t) / (max(1, 3000 // per) * per) / 1000)
        print(f"{label:48} {statistics.median(ts):7.2f} us (min {min(ts):.2f})")

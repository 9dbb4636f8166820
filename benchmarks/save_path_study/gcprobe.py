"""GC collections and their time per save (gc.callbacks), plain vs registered."""

from __future__ import annotations

import gc
import sys
import time

sys.path.insert(0, "/tmp/savepath")
import harness

rows = harness.setup()
from django.db import transaction

stats = {"n": [0, 0, 0], "t": [0, 0, 0]}
start = {}


def cb(phase, info):
    if phase == "start":
        start["t"] = time.perf_counter_ns()
    else:
        g = info["generation"]
        stats["n"][g] += 1
        stats["t"][g] += time.perf_counter_ns() - start["t"]


gc.callbacks.append(cb)
print("objects tracked by gc:", len(gc.get_objects()), "thresholds", gc.get_threshold())


def run(case, variant, n):
    for k in stats:
        stats[k] = [0, 0, 0]
    gc.collect()
    stats["n"] = [0, 0, 0]
    stats["t"] = [0, 0, 0]
    t = time.perf_counter_ns()
    if case == "a":
        o = rows[variant][0]
        for _ in range(n):
            harness.touch(o)
    else:
        for _ in range(n // 100):
            with transaction.atomic():
                for o in rows[variant]:
                    harness.touch(o)
    total = (time.perf_counter_ns() - t) / n / 1000
    print(
        f"{case} {variant:8} {total:7.1f} us/save; collections per 1000 saves gen0/1/2: "
        f"{[round(x * 1000 / n, 1) for x in stats['n']]}; gc time per save: {sum(stats['t']) / n / 1000:.1f} us "
        f"(gen2 {stats['t'][2] / n / 1000:.1f})"
    )


for case in ("a", "b"):
    for v in ("plain", "tracked", "plain", "tracked"):
        run(case, v, 3000)

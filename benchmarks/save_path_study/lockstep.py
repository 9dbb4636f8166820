"""Lockstep A/B: two workers (trees), one runs at a time, segments in a new random order
every round. usage: lockstep.py ROUNDS [name=root ...]  (env EXTRA_PYTHONPATH for both)"""

from __future__ import annotations

import collections
import os
import random
import statistics
import subprocess
import sys
import time

rounds = int(sys.argv[1])
trees = dict(a.split("=", 1) for a in sys.argv[2:]) or {
    "base": "/tmp/save_base",
    "new": "/work/wt-save",
}
SEG = {"a:plain": 100, "a:tracked": 100, "a:wb": 100, "b:plain": 1, "b:tracked": 1}
env = dict(
    os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=os.environ.get("EXTRA_PYTHONPATH", "")
)
workers = {}
cpu = collections.defaultdict(list)
for i, (name, spec) in enumerate(trees.items()):
    root, _, pp = spec.partition("@")
    wenv = dict(env, PYTHONPATH=pp)
    p = subprocess.Popen(
        [sys.executable, "/tmp/savepath/worker.py", root, f"{name}{i}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=wenv,
        cwd="/tmp",
    )
    assert p.stdout.readline().strip() == "ready"
    workers[name] = p


def ask(name, variant, count):
    p = workers[name]
    p.stdin.write(f"{variant} {count}\n")
    p.stdin.flush()
    w, c, m = map(float, p.stdout.readline().split())
    cpu[(name, variant)].append((c, m))
    return w


for name in workers:  # warm-up
    for v, c in SEG.items():
        ask(name, v, c)
res = collections.defaultdict(list)
cpu = collections.defaultdict(list)
t0 = time.time()
for r in range(rounds):
    jobs = [(n, v) for n in workers for v in SEG]
    random.shuffle(jobs)
    for n, v in jobs:
        res[(n, v)].append(ask(n, v, SEG[v]))
for p in workers.values():
    p.stdin.write("quit\n")
    p.stdin.flush()
    p.wait()
import json

json.dump(
    {f"{n}|{v}": xs for (n, v), xs in res.items()},
    open(os.environ.get("LOCKSTEP_OUT", "/tmp/savepath/lockstep_raw.json"), "w"),
)
json.dump(
    {f"{n}|{v}": xs for (n, v), xs in cpu.items()},
    open(os.environ.get("LOCKSTEP_OUT", "/tmp/savepath/lockstep_raw.json") + ".cpu", "w"),
)
print("CPU per save, us (median): process | main thread | other threads")
for (n, v), xs in sorted(cpu.items()):
    c = statistics.median(x[0] for x in xs) / 1000
    m = statistics.median(x[1] for x in xs) / 1000
    print(f"  {v:10} {n:12} {c:7.1f} | {m:7.1f} | {c - m:6.1f}")


def q(xs):
    xs = sorted(xs)
    k = len(xs)
    return xs[k // 4], statistics.median(xs), xs[(3 * k) // 4]


print(
    f"lockstep: {rounds} rounds in {time.time() - t0:.0f} s; segments: a = 100 saves, b = one block of 100 saves; per save in us (quartiles)"
)
for fig, reg in (("a", "a:tracked"), ("a", "a:wb"), ("b", "b:tracked")):
    plain = f"{fig}:plain"
    for n in workers:
        P = [x / 1000 / (100 if fig == "b" else 1) for x in res[(n, plain)]]
        T = [x / 1000 / (100 if fig == "b" else 1) for x in res[(n, reg)]]
        extra = [t - p for t, p in zip(T, P)]
        ratio = [t / p for t, p in zip(T, P)]
        pq, tq, eq, rq = q(P), q(T), q(extra), q(ratio)
        print(
            f"{reg:10} {n:6} twin {pq[1]:6.1f} ({pq[0]:.0f}-{pq[2]:.0f})  registered {tq[1]:6.1f} ({tq[0]:.0f}-{tq[2]:.0f})  "
            f"extra {eq[1]:6.1f} ({eq[0]:.0f}-{eq[2]:.0f})  ratio {statistics.median(T) / statistics.median(P):.2f}x (per-round ratios {rq[0]:.2f}-{rq[2]:.2f})"
        )

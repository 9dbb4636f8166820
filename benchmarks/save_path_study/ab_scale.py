"""Alternate benchmarks/scale.py --only a,b between trees; per run ratios, then medians.

usage: ab_scale.py ROUNDS [name=root ...] [-- extra scale.py args]
Each tree's scale.py is its own copy (base's is the same file as the worktree's)."""

from __future__ import annotations

import collections
import os
import re
import statistics
import subprocess
import sys
import time

argv = sys.argv[1:]
extra = []
if "--" in argv:
    i = argv.index("--")
    extra = argv[i + 1 :]
    argv = argv[:i]
rounds = int(argv[0])
trees = dict(a.split("=", 1) for a in argv[1:]) or {
    "base": "/tmp/save_base",
    "new": "/work/wt-save",
}
pat = re.compile(
    r"^(a\. update|   the same with write_behind|b\. 100 updates).*?(plain|zrange) ([\d.]+) (us|ms), (\w+) ([\d.]+) (us|ms): ([\d.]+)x"
)
rows = collections.defaultdict(lambda: collections.defaultdict(list))
names = list(trees)
for r in range(rounds):
    order = names if r % 2 == 0 else names[::-1]
    for name in order:
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)
        env["PYTHONPATH"] = env.get("EXTRA_PYTHONPATH", "")
        t = time.time()
        out = subprocess.run(
            [
                sys.executable,
                f"{trees[name]}/benchmarks/scale.py",
                "--only",
                "a,b",
                "--redis",
                "redis://127.0.0.1:6379/11",
                *extra,
            ],
            env=env,
            capture_output=True,
            text=True,
            cwd=trees[name],
        )
        got = []
        for line in out.stdout.splitlines():
            m = pat.match(line)
            if m:
                fig = {
                    "a. update": "a",
                    "   the same with write_behind": "a_wb",
                    "b. 100 updates": "b",
                }[m.group(1)]
                rows[fig][name].append((float(m.group(3)), float(m.group(6)), float(m.group(8))))
                got.append(f"{fig} {m.group(3)}/{m.group(6)} {m.group(8)}x")
        if not got:
            print(out.stdout[-2000:], out.stderr[-3000:])
        print(f"round {r + 1} {name:6} ({time.time() - t:.0f}s): " + "; ".join(got), flush=True)
print()
for fig in ("a", "a_wb", "b"):
    for name in names:
        v = rows[fig][name]
        if not v:
            continue
        ratios = sorted(x[2] for x in v)
        print(
            f"{fig:5} {name:6} ratio median {statistics.median(ratios):.2f}x (runs {', '.join(f'{x:.2f}' for x in ratios)}); "
            f"twin median {statistics.median(x[0] for x in v):.1f}, registered median {statistics.median(x[1] for x in v):.1f}; extra median {statistics.median(x[1] - x[0] for x in v):.1f}"
        )

"""Alternate micro.py between the base tree and the worktree; medians per line."""

from __future__ import annotations

import collections
import os
import re
import statistics
import subprocess
import sys

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
trees = {"base": "/tmp/save_base", "new": "/work/wt-save"}
res = collections.defaultdict(lambda: collections.defaultdict(list))
for r in range(rounds):
    for name, root in list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]:
        env = dict(os.environ, DIFFS_ROOT=root, PYTHONDONTWRITEBYTECODE="1")
        out = subprocess.run(
            [sys.executable, "/tmp/savepath/micro.py", "10000"],
            env=env,
            capture_output=True,
            text=True,
        ).stdout
        for line in out.splitlines():
            m = re.match(r"(.*?)\s+([\d.]+) us \(min", line)
            if m:
                res[m.group(1).rstrip()][name].append(float(m.group(2)))
for label, by in res.items():
    b, n = statistics.median(by["base"]), statistics.median(by["new"])
    print(
        f"{label:48} base {b:6.2f}  new {n:6.2f}  {n - b:+6.2f} us  (base {min(by['base']):.2f}-{max(by['base']):.2f}, new {min(by['new']):.2f}-{max(by['new']):.2f})"
    )

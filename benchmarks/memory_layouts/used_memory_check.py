"""Cross-check of MEMORY USAGE sums with INFO used_memory deltas (which also count the
expires dict and the db dict tables). used_memory is server-wide: other clients' work
adds noise, so each figure is the median of 5 write/flush rounds.

    PYTHONPATH=/work/main python used_memory_check.py --url redis://127.0.0.1:6379/12
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import layout_v2 as v2
import redis
from bench_v2 import run
from check_v2 import load_today
from measure_layouts import diffs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.url)
    assert client.connection_pool.connection_kwargs.get("db", 0) != 0
    write_today, _ = load_today()
    cases = [
        ("today", client.register_script(write_today), "today", "default"),
        ("v2 default", client.register_script(v2.WRITE_V2), "v2", "default"),
        ("v2 compact", client.register_script(v2.WRITE_V2), "v2", "body"),
    ]
    data = diffs(1000, 10)
    for name, script, layout, fmt in cases:
        deltas, usages = [], []
        for _ in range(5):
            client.flushdb()
            before = client.info("memory")["used_memory"]
            usage, _ = run(client, script, data, layout, fmt)
            deltas.append(client.info("memory")["used_memory"] - before)
            usages.append(sum(usage.values()))
        print(
            f"{name:12s} MEMORY USAGE {statistics.median(usages) / len(data):6.1f} B/diff, "
            f"used_memory delta {statistics.median(deltas) / len(data):6.1f} B/diff "
            f"(min {min(deltas) / len(data):.1f}, max {max(deltas) / len(data):.1f})"
        )
    client.flushdb()


if __name__ == "__main__":
    main()

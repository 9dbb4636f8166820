"""Memory and save-path cost of the v2 prototype, written through its own script.

The benchmark's 10,000 diffs (three-field updates of auth.group rows) go through
today's WRITE_SCRIPT and through WRITE_V2 (default and compact members) in calls of 500
diffs (store.CHUNK_SIZE); then MEMORY USAGE (SAMPLES 0) of every key, and the wall time
of each script call (localhost, so mostly Redis time; the machine is shared: rough).

    PYTHONPATH=/work/main python bench_v2.py --url redis://127.0.0.1:6379/12
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import layout_v2 as v2
import redis
from check_v2 import AGE, FEED, HORIZON, LOG, TTL, keys, load_today, signed
from measure_layouts import diffs, member

CHUNK = 500


def run(client, script, data, layout, fmt, maybe=""):
    client.flushdb()
    times = []
    for start in range(0, len(data), CHUNK):
        ks, args = [], [TTL, repr(AGE)]
        for d in data[start : start + CHUNK]:
            k = keys(d["pk"])
            entry = d["hex"] + str(d["pk"])
            if layout == "today":
                ks += [k["set"], FEED, HORIZON, k["birth"]]
                args += [member("default", d), entry, "", ""]
            else:
                ks += [k["set"], FEED, HORIZON, k["birth"], k["ix"], LOG]
                compact = fmt == "body"
                args += [member(fmt, d), entry, "", "", maybe, signed(d["hex"]) if compact else ""]
        began = time.perf_counter()
        script(keys=ks, args=args)
        times.append((time.perf_counter() - began) * 1e6 / CHUNK)
    usage = defaultdict(int)
    found = list(client.scan_iter(match="diffs:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in found:
        pipe.memory_usage(key, samples=0)
    for key, used in zip(found, pipe.execute(), strict=True):
        usage[key.decode().split(":")[1].split("{")[0] or "set"] += used
    return usage, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    client = redis.Redis.from_url(args.url)
    assert client.connection_pool.connection_kwargs.get("db", 0) != 0
    write_today, _ = load_today()
    today = client.register_script(write_today)
    new = client.register_script(v2.WRITE_V2)
    cases = [
        ("today's script", today, "today", "default", ""),
        ("v2, default member", new, "v2", "default", ""),
        ("v2, default, maybe stored", new, "v2", "default", "1"),
        ("v2, compact member", new, "v2", "body", ""),
    ]
    for shape in ("1000x10", "10000x1", "50x200"):
        objects, per = (int(x) for x in shape.split("x"))
        data = diffs(objects, per)
        print(f"\n{shape}: {len(data)} diffs")
        for name, script, layout, fmt, maybe in cases:
            if maybe and shape != "50x200" and shape != "1000x10":
                continue
            runs = [run(client, script, data, layout, fmt, maybe) for _ in range(args.repeat)]
            usage = runs[-1][0]
            per_kind = "  ".join(f"{k}={v / len(data):.1f}" for k, v in sorted(usage.items()))
            total = sum(usage.values()) / len(data)
            micro = statistics.median(t for _, t in runs)
            print(f"  {name:28s} {total:6.1f} B/diff ({per_kind})  {micro:5.1f} us/diff")
    client.flushdb()


if __name__ == "__main__":
    main()

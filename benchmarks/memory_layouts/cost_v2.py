"""Save-path cost: Redis commands run per diff by today's WRITE_SCRIPT and by WRITE_V2
(counted by wrapping redis.call), and script time per diff (TIME read inside the
script at start and end; minimum over interleaved repetitions, as the machine is shared).

    PYTHONPATH=/work/main python cost_v2.py --url redis://127.0.0.1:6379/12
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import layout_v2 as v2
import redis
from check_v2 import AGE, FEED, HORIZON, LOG, TTL, keys, load_today, signed
from measure_layouts import diffs, member

CHUNK = 500

WRAP = """
local __counts, __t0 = {}, redis.call('TIME')
local function __rc(name, ...)
  __counts[name] = (__counts[name] or 0) + 1
  return redis.call(name, ...)
end
"""


def instrument(source: str) -> str:
    body = source.replace("redis.call(", "__rc(")
    body = body.replace("return scores\n", "")
    return (
        WRAP
        + body
        + """
local __t1 = redis.call('TIME')
local out = {tostring((__t1[1] - __t0[1]) * 1000000 + (__t1[2] - __t0[2]))}
for name, n in pairs(__counts) do out[#out + 1] = name .. '=' .. n end
return out
"""
    )


def call(client, script, data, layout, fmt, maybe):
    """Write ``data`` in chunks; return (microseconds per diff, Counter of commands)."""
    client.flushdb()
    micros, counts = 0, Counter()
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
                args += [
                    member(fmt, d),
                    entry,
                    "",
                    "",
                    maybe,
                    signed(d["hex"]) if fmt == "body" else "",
                ]
        raw = script(keys=ks, args=args)
        micros += int(raw[0])
        for item in raw[1:]:
            name, n = item.decode().split("=")
            counts[name] += int(n)
    return micros / len(data), counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    client = redis.Redis.from_url(args.url)
    assert client.connection_pool.connection_kwargs.get("db", 0) != 0
    write_today, _ = load_today()
    today = client.register_script(instrument(write_today))
    new = client.register_script(instrument(v2.WRITE_V2))
    cases = [
        ("today's script", today, "today", "default", ""),
        ("v2 default", new, "v2", "default", ""),
        ("v2 default, maybe stored", new, "v2", "default", "1"),
        ("v2 compact", new, "v2", "body", ""),
    ]
    for shape in ("1000x10", "50x200"):
        objects, per = (int(x) for x in shape.split("x"))
        data = diffs(objects, per)
        best = {}
        for _ in range(args.repeat):
            for name, script, layout, fmt, maybe in cases:
                micros, counts = call(client, script, data, layout, fmt, maybe)
                best[name] = (min(micros, best.get(name, (1e9,))[0]), counts)
        print(f"\n{shape}, calls of {CHUNK} diffs")
        for name, (micros, counts) in best.items():
            total = sum(counts.values()) / len(data)
            detail = " ".join(f"{k}={v / len(data):.2f}" for k, v in sorted(counts.items()))
            print(f"  {name:26s} {micros:5.1f} us/diff  {total:4.2f} cmds/diff  {detail}")
    client.flushdb()


if __name__ == "__main__":
    main()

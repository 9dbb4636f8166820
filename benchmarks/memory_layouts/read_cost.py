"""Read-path cost, today's scripts vs v2: the whole feed of 10,000 diffs in pages of 100
(page script + fetch script, as diffs.feed does), and every object's diffs in pages
of 100, wall time per diff read (localhost; minimum of interleaved repetitions).

    PYTHONPATH=/work/main python read_cost.py --url redis://127.0.0.1:6379/12
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import layout_v2 as v2
import redis
from check_v2 import AGE, FEED, HORIZON, LOG, TTL, keys, load_today
from measure_layouts import diffs, member

LIMIT, BUDGET = 100, 1 << 20


def write(client, script, data, layout):
    client.flushdb()
    for start in range(0, len(data), 500):
        ks, args = [], [TTL, repr(AGE)]
        for d in data[start : start + 500]:
            k = keys(d["pk"])
            entry = d["hex"] + str(d["pk"])
            if layout == "today":
                ks += [k["set"], FEED, HORIZON, k["birth"]]
                args += [member("default", d), entry, "", ""]
            else:
                ks += [k["set"], FEED, HORIZON, k["birth"], k["ix"], LOG]
                args += [member("default", d), entry, "", "", "", ""]
        script(keys=ks, args=args)


def feed_today(s, cursor):
    bound = "" if cursor is None else f"({cursor!r}"
    raw = s["page"](keys=[FEED, HORIZON], args=[bound, repr(AGE), LIMIT + 1])
    flat = raw[3:]
    listed = [(flat[i].decode(), float(flat[i + 1])) for i in range(0, len(flat), 2)]
    more = len(listed) > LIMIT
    listed = listed[:LIMIT]
    sets, args = {}, [BUDGET]
    for member_, score in listed:
        idx = sets.setdefault(member_[16:], len(sets) + 1)
        args += [idx, repr(score), member_[:16]]
    ks = [keys(pk)["set"] for pk in sets] + [keys(pk)["birth"] for pk in sets]
    got = s["fetch"](keys=ks, args=args)[1 + len(sets) :] if listed else []
    return len(got), (listed[-1][1] if more else None)


def feed_v2(s, cursor):
    bound = "" if cursor is None else f"({cursor!r}"
    raw = s["page"](keys=[FEED, HORIZON, LOG], args=[bound, repr(AGE), LIMIT + 1, BUDGET])
    rows = [raw[i : i + 4] for i in range(4, len(raw), 4)]
    more = len(rows) > LIMIT
    rows = rows[:LIMIT]
    pks = list(dict.fromkeys(r[1].decode() for r in rows))
    ks = [keys(pk)["set"] for pk in pks] + [keys(pk)["birth"] for pk in pks]
    if rows:
        s["fetch"](keys=ks, args=[BUDGET])  # births only: no legacy pointer here
    return len(rows), (float(rows[-1][0]) if more else None)


def object_today(s, pk):
    k = keys(pk)
    raw = s["obj"](keys=[k["set"], FEED, HORIZON, k["birth"]], args=["", repr(AGE), LIMIT, BUDGET])
    return (len(raw) - 5) // 2


def object_v2(s, pk):
    k = keys(pk)
    raw = s["obj"](
        keys=[k["set"], FEED, HORIZON, k["birth"], k["ix"], LOG],
        args=["", repr(AGE), LIMIT, BUDGET],
    )
    return (len(raw) - 5) // 3


def timed(fn):
    began = time.perf_counter()
    n = fn()
    return (time.perf_counter() - began) * 1e6 / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    client = redis.Redis.from_url(args.url)
    assert client.connection_pool.connection_kwargs.get("db", 0) != 0
    write_today, fetch = load_today()
    from diffs.feed import _FEED_PAGE_SCRIPT, _OBJECT_PAGE_SCRIPT

    reg = client.register_script
    layouts = {
        "today": (
            {
                "page": reg(_FEED_PAGE_SCRIPT),
                "fetch": reg(fetch),
                "obj": reg(_OBJECT_PAGE_SCRIPT),
                "write": reg(write_today),
            },
            feed_today,
            object_today,
        ),
        "v2": (
            {
                "page": reg(v2.FEED_PAGE_V2),
                "fetch": reg(fetch),
                "obj": reg(v2.OBJECT_PAGE_V2),
                "write": reg(v2.WRITE_V2),
            },
            feed_v2,
            object_v2,
        ),
    }
    for shape in ("1000x10", "50x200"):
        objects, per = (int(x) for x in shape.split("x"))
        data = diffs(objects, per)
        best = {}
        for _ in range(args.repeat):
            for name, (s, feed, obj) in layouts.items():
                write(client, s["write"], data, name)

                def whole_feed(s=s, feed=feed):
                    n, cursor = feed(s, None)
                    while cursor is not None:
                        got, cursor = feed(s, cursor)
                        n += got
                    assert n == len(data), n
                    return n

                def every_object(s=s, obj=obj):
                    n = sum(obj(s, pk) for pk in range(1, objects + 1))
                    assert n == min(per, LIMIT) * objects, n
                    return n

                for what, fn in (("feed", whole_feed), ("objects", every_object)):
                    key = (name, what)
                    best[key] = min(best.get(key, 1e9), timed(fn))
        print(f"\n{shape}: us per diff read (pages of {LIMIT})")
        for (name, what), micros in sorted(best.items(), key=lambda x: (x[0][1], x[0][0])):
            print(f"  {what:8s} {name:6s} {micros:6.2f}")
    client.flushdb()


if __name__ == "__main__":
    main()

from __future__ import annotations

import statistics
import time

import redis

r = redis.Redis.from_url("redis://127.0.0.1:6379/11")
conn = r.connection_pool.get_connection()
member = '{"id":"db7613ca1b00d8c8","created":false,"data":[{"model":"bench_app.trackedarticle","pk":1,"fields":{"title":"article 1 v9","rank":9,"is_public":false}}]}'


def args8(n):
    out = ["EVALSHA", "a" * 40, str(4 * n)]
    keys = []
    argv = ["3600000", "3600.0"]
    for i in range(n):
        keys += [
            f"diffs:bench_app.trackedarticle:{i}",
            "diffs:feed:bench_app.trackedarticle",
            "diffs:horizon:bench_app.trackedarticle",
            f"diffs:birth:bench_app.trackedarticle:{i}",
        ]
        argv += [member, f"db7613ca1b00d8c8{i}", "", ""]
    return out + keys + argv


def args5(n):
    out = ["EVALSHA", "a" * 40, str(2 * n + 2)]
    keys = []
    argv = ["3600000", "3600.0"]
    for i in range(n):
        keys += [
            f"diffs:bench_app.trackedarticle:{i}",
            f"diffs:birth:bench_app.trackedarticle:{i}",
        ]
        argv += [member, f"db7613ca1b00d8c8{i}", "1||"]
    return (
        out
        + keys
        + ["diffs:feed:bench_app.trackedarticle", "diffs:horizon:bench_app.trackedarticle"]
        + argv
    )


for n in (1, 100):
    for name, f in (("8 per diff", args8), ("5 per diff", args5)):
        a = f(n)
        ts = []
        for _ in range(7):
            t = time.perf_counter_ns()
            for _ in range(2000 // n + 10):
                conn.pack_command(*a)
            ts.append((time.perf_counter_ns() - t) / (2000 // n + 10) / 1000)
        print(
            f"n={n:3} {name}: pack {statistics.median(ts):8.1f} us per call, {statistics.median(ts) / n:6.2f} us per diff ({len(a)} args)"
        )

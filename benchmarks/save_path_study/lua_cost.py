"""Server time (INFO commandstats) of the write script and of variants, one diff per call."""

from __future__ import annotations

import statistics
import sys

sys.path[:0] = ["/work/wt-save"]
import redis

from diffs.delivery.store import WRITE_SCRIPT

r = redis.Redis.from_url("redis://127.0.0.1:6379/11")
PFX = "diffsbench_lua:"


def usec(fn, n=2000):
    # Deltas of INFO commandstats (no CONFIG RESETSTAT: the server may be shared).
    def now():
        e = r.info("commandstats").get("cmdstat_evalsha", {})
        return e.get("calls", 0), e.get("usec", 0)

    c0, u0 = now()
    for _ in range(n):
        fn()
    c1, u1 = now()
    return (u1 - u0) / max(1, c1 - c0)


member = '{"id":"%016x","created":false,"data":[{"model":"bench_app.trackedarticle","pk":1,"fields":{"title":"article 1 v9","rank":9,"is_public":false}}]}'
import random


def args_for(pk):
    i = random.getrandbits(64)
    keys = [
        f"{PFX}bench_app.trackedarticle:{pk}",
        f"{PFX}feed:bench_app.trackedarticle",
        f"{PFX}horizon:bench_app.trackedarticle",
        f"{PFX}birth:bench_app.trackedarticle:{pk}",
    ]
    argv = ["3600000", "3600.0", member % i, f"{i:016x}{pk}", "", ""]
    return keys, argv


scripts = {
    "write script": WRITE_SCRIPT,
    "empty script, same args": "return {'1'}",
    "TIME + HMGET + ZSCORE": "local t = redis.call('TIME'); redis.call('HMGET', KEYS[3], 'from', 'age'); redis.call('ZSCORE', KEYS[2], ARGV[4]); return {'1'}",
    "2 ZADD + 3 PEXPIRE": "redis.call('ZADD', KEYS[1], 1, ARGV[3]); redis.call('ZADD', KEYS[2], 1, ARGV[4]); redis.call('PEXPIRE', KEYS[1], 3600000); redis.call('PEXPIRE', KEYS[2], 3600000); redis.call('PEXPIRE', KEYS[4], 3600000); return {'1'}",
    "2 ZREVRANGE": "redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES'); redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES'); return {'1'}",
}
for k in r.scan_iter(PFX + "*"):
    r.delete(k)
for name, src in scripts.items():
    s = r.register_script(src)
    for size in (1, 3000):
        # size: diffs already in the object's set (scale.py's figure a writes thousands to one object)
        pk = size
        res = []
        for _ in range(3):
            res.append(usec(lambda: s(*args_for(pk)), 1500))
        print(
            f"{name:28} object set ~{size:5}: {statistics.median(res):6.1f} us per call on the server"
        )
for k in r.scan_iter(PFX + "*"):
    r.delete(k)

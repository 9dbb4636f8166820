"""Redis time of one exact lookup inside Lua: XRANGE id id on a 10k-entry stream of bodies
(an object page of v2 does one per diff) vs ZRANGEBYSCORE s s on a 10k skiplist (what
today's feed fetch does per pointer). db 12.
"""

from __future__ import annotations

import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import redis
from measure_layouts import diffs, member, stream_id_ulp

c = redis.Redis(db=12)
c.flushdb()
data = diffs(1000, 10)
p = c.pipeline(transaction=False)
for d in data:
    p.xadd("m:log", {"p": d["pk"], "m": member("default", d)}, id=stream_id_ulp(d["score"]))
    p.zadd("m:z", {member("default", d): d["score"]})
p.execute()
ids = [stream_id_ulp(d["score"]) for d in data][::7]
scores = [repr(d["score"]) for d in data][::7]
lua = """
local t0 = redis.call('TIME')
for i = 1, #ARGV do redis.call(KEYS[2] == 'x' and 'XRANGE' or 'ZRANGEBYSCORE', KEYS[1], ARGV[i], ARGV[i]) end
local t1 = redis.call('TIME')
return (t1[1] - t0[1]) * 1000000 + (t1[2] - t0[2])
"""
s = c.register_script(lua)
for _ in range(3):
    print(
        "XRANGE id id: %.2f us" % (s(keys=["m:log", "x"], args=ids) / len(ids)),
        " ZRANGEBYSCORE s s on a 10k skiplist: %.2f us"
        % (s(keys=["m:z", "z"], args=scores) / len(scores)),
    )
c.flushdb()

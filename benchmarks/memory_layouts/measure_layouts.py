"""Redis memory per diff for candidate key layouts (MEMORY USAGE ... SAMPLES 0).

Writes the same 10,000 diffs (three-field updates of auth.group rows, the diffs of
benchmarks/memory_per_diff.py) in each layout straight to Redis (no Lua: the layout is
what is measured, not the write path), sums MEMORY USAGE of every key by kind, and
prints bytes per diff. Shapes: 1,000 objects x 10 diffs (the benchmark's), 10,000 x 1
and 50 x 200 (past zset-max-listpack-entries 128).

    python measure_layouts.py --url redis://127.0.0.1:6379/12 [--shape 1000x10]

The db is FLUSHDB'd before each layout and at the end: give a db of your own.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import struct
import sys
from collections import defaultdict

import redis

LABEL = "{auth.group}"


# --- scores and stream ids ------------------------------------------------------------


def scores(count: int, seed: int = 7) -> list[float]:
    """Scores as the write script gives them: TIME in ms with microseconds, made of
    seconds*1000 + usec/1000 in doubles (as Lua computes it), strictly increasing."""
    rng = random.Random(seed)
    usec_total = 1_760_000_000 * 1_000_000
    out: list[float] = []
    for _ in range(count):
        usec_total += rng.randint(30, 900)
        sec, usec = divmod(usec_total, 1_000_000)
        out.append(sec * 1000.0 + usec / 1000.0)
    return out


def stream_id_ulp(score: float) -> str:
    """Exact, order-keeping score -> stream id: <whole ms>-<fraction in ulps of that ms>
    (ulp = 2^-12 for scores in [2^40, 2^41) ms, i.e. 2004-2039: seq < 4096)."""
    ms = math.floor(score)
    ulp = 2.0 ** (math.frexp(ms)[1] - 53)
    seq = (score - ms) / ulp
    assert seq == int(seq) and ms + int(seq) * ulp == score
    return f"{ms}-{int(seq)}"


def stream_id_2p32(score: float) -> str:
    """Exact score -> stream id for scores >= 2^20 ms: <whole ms>-<fraction * 2^32>."""
    ms = math.floor(score)
    seq = (score - ms) * 2.0**32
    assert seq == int(seq) and ms + int(seq) / 2.0**32 == score
    return f"{ms}-{int(seq)}"


# --- members --------------------------------------------------------------------------


def fields_json(pk: int, n: int) -> str:
    fields = {"name": f"group {pk} v{n}", "rank": n, "active": n % 2 == 0}
    return json.dumps(fields, separators=(",", ":"))


def member(fmt: str, d: dict) -> str:
    """default: today's member; short: id + fields only (model, pk, created dropped, short
    keys); body: fields only (the id kept beside it, as an integer field)."""
    if fmt == "default":
        return (
            f'{{"id":"{d["hex"]}","created":false,"data":[{{"model":"auth.group",'
            f'"pk":{d["pk"]},"fields":{d["fields"]}}}]}}'
        )
    if fmt == "short":
        return f'{{"i":"{d["hex"]}","f":{d["fields"]}}}'
    if fmt == "body":
        return f'{{"f":{d["fields"]}}}'
    raise ValueError(fmt)


def diffs(objects: int, per: int) -> list[dict]:
    """The diffs in write order: version n of every object, then version n + 1."""
    rng = random.Random(11)
    out = []
    all_scores = scores(objects * per)
    for n in range(per):
        for pk in range(1, objects + 1):
            idint = rng.getrandbits(63) or 1
            out.append(
                {
                    "pk": pk,
                    "n": n,
                    "int": str(idint),  # canonical decimal: listpack stores it as an integer
                    "hex": f"{idint:016x}",
                    "score": all_scores[len(out)],
                    "fields": fields_json(pk, n),
                }
            )
    return out


# --- layouts: each writes one diff with a pipeline ----------------------------------


def obj(p: str, kind: str, pk: int) -> str:
    return f"{p}{kind}:{LABEL}:{pk}"


def feed(p: str, kind: str) -> str:
    return f"{p}{kind}:{LABEL}"


def today(fmt):
    def write(pipe, p, d):
        pipe.zadd(obj(p, "o", d["pk"]), {member(fmt, d): d["score"]})
        pipe.zadd(feed(p, "feed"), {d["hex"] + str(d["pk"]): d["score"]})

    return write


def feed_stream(fmt, idfield):
    """(b) object sets unchanged; the feed a stream of pointers (pk, and the id)."""

    def write(pipe, p, d):
        pipe.zadd(obj(p, "o", d["pk"]), {member(fmt, d): d["score"]})
        values = {"p": d["pk"]}
        if idfield:
            values["i"] = d[idfield]
        pipe.xadd(feed(p, "log"), values, id=stream_id_ulp(d["score"]))

    return write


def bodies_in_stream(fmt, index_id="hex", mapping=stream_id_ulp):
    """(c) bodies once, in the model's stream (pk, body [, id]); the object's set is an
    index of ids (<=64 bytes: listpack up to 128 entries)."""

    def write(pipe, p, d):
        pipe.zadd(obj(p, "ix", d["pk"]), {d[index_id]: d["score"]})
        values = {"p": d["pk"]}
        if fmt == "body":
            values["i"] = d["int"]
        values["m"] = member(fmt, d)
        pipe.xadd(feed(p, "log"), values, id=mapping(d["score"]))

    return write


def packed_index(fmt):
    """(e3) as (c), the object's index a string of 16-byte records (double score, id)."""

    def write(pipe, p, d):
        pipe.append(obj(p, "px", d["pk"]), struct.pack(">dQ", d["score"], int(d["int"])))
        values = {"p": d["pk"]}
        if fmt == "body":
            values["i"] = d["int"]
        values["m"] = member(fmt, d)
        pipe.xadd(feed(p, "log"), values, id=stream_id_ulp(d["score"]))

    return write


def object_streams(fmt):
    """(e1) a stream per object holding its bodies; the feed a stream of pks."""

    def write(pipe, p, d):
        values = {"i": d["int"], "m": member(fmt, d)} if fmt == "body" else {"m": member(fmt, d)}
        pipe.xadd(obj(p, "os", d["pk"]), values, id=stream_id_ulp(d["score"]))
        pipe.xadd(feed(p, "log"), {"p": d["pk"]}, id=stream_id_ulp(d["score"]))

    return write


def split_members(fmt):
    """(e2) the object's set keeps members <= 64 bytes by cutting the member in pieces
    (id + piece number + 47 bytes), all at the diff's score; the feed a stream of pks."""

    def write(pipe, p, d):
        text = member(fmt, d)
        pieces = {}
        for k in range(0, len(text), 47):
            pieces[f"{d['hex']}{k // 47}{text[k : k + 47]}"] = d["score"]
        pipe.zadd(obj(p, "sp", d["pk"]), pieces)
        pipe.xadd(feed(p, "log"), {"p": d["pk"]}, id=stream_id_ulp(d["score"]))

    return write


def object_hash(fmt):
    """(e4) bodies in a hash per object (id -> body), an index zset (id, score), the feed
    a stream of (pk, id)."""

    def write(pipe, p, d):
        pipe.hset(obj(p, "h", d["pk"]), d["int"], member(fmt, d))
        pipe.zadd(obj(p, "ix", d["pk"]), {d["int"]: d["score"]})
        pipe.xadd(feed(p, "log"), {"p": d["pk"], "i": d["int"]}, id=stream_id_ulp(d["score"]))

    return write


def bodies_in_model_hash(fmt):
    """(c, hash) bodies once, in a hash per model (id -> body); the object's set an index
    of ids; the feed a stream of (pk, id)."""

    def write(pipe, p, d):
        pipe.hset(feed(p, "bodies"), d["int"], member(fmt, d))
        pipe.zadd(obj(p, "ix", d["pk"]), {d["int"]: d["score"]})
        pipe.xadd(feed(p, "log"), {"p": d["pk"], "i": d["int"]}, id=stream_id_ulp(d["score"]))

    return write


LAYOUTS = {
    "a today": today("default"),
    "a+d today, short member": today("short"),
    "b feed stream (pk,hex id)": feed_stream("default", "hex"),
    "b feed stream (pk,int id)": feed_stream("default", "int"),
    "b feed stream (pk only)": feed_stream("default", None),
    "b+d feed stream, short member": feed_stream("short", "int"),
    "c bodies in stream, hex index": bodies_in_stream("default", "hex"),
    "c ... seq = fraction*2^32": bodies_in_stream("default", "hex", stream_id_2p32),
    "c bodies in stream, int index": bodies_in_stream("default", "int"),
    "c+d short member, hex index": bodies_in_stream("short", "hex"),
    "c+d body+int id, int index": bodies_in_stream("body", "int"),
    "c bodies in model hash, int index": bodies_in_model_hash("default"),
    "c+d model hash, body, int index": bodies_in_model_hash("body"),
    "e1 stream per object": object_streams("default"),
    "e1+d stream per object, body": object_streams("body"),
    "e2 split members <=64": split_members("default"),
    "e2+d split, short member": split_members("short"),
    "e3 packed index (default)": packed_index("default"),
    "e3+d packed index, body": packed_index("body"),
    "e4 hash per object (default)": object_hash("default"),
    "e4+d hash per object, body": object_hash("body"),
}


def measure(client: redis.Redis, write, data: list[dict]) -> tuple[dict, dict]:
    client.flushdb()
    pipe = client.pipeline(transaction=False)
    for i, d in enumerate(data, 1):
        write(pipe, "m:", d)
        if i % 500 == 0:
            pipe.execute()
    pipe.execute()
    by_kind: dict[str, int] = defaultdict(int)
    encodings: dict[str, str] = {}
    keys = list(client.scan_iter(match="m:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    for key, usage in zip(keys, pipe.execute(), strict=True):
        kind = key.decode().split(":")[1]
        by_kind[kind] += usage
        if kind not in encodings:
            encodings[kind] = client.object("encoding", key).decode()
    return by_kind, encodings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--shape", action="append", help="OBJECTSxDIFFS, e.g. 1000x10")
    parser.add_argument("--only", help="layouts whose name contains this")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.url)
    if client.connection_pool.connection_kwargs.get("db", 0) == 0:
        sys.exit("refusing db 0")
    shapes = args.shape or ["1000x10", "10000x1", "50x200"]
    print(f"redis-server {client.info('server')['redis_version']}")
    sample = diffs(1000, 10)[-1]
    for fmt in ("default", "short", "body"):
        print(f"member {fmt}: {len(member(fmt, sample))} B  {member(fmt, sample)}")
    for shape in shapes:
        objects, per = (int(x) for x in shape.split("x"))
        data = diffs(objects, per)
        total = len(data)
        print(f"\n{shape}: {total} diffs, {objects} objects x {per}")
        for name, write in LAYOUTS.items():
            if args.only and args.only not in name:
                continue
            by_kind, enc = measure(client, write, data)
            parts = "  ".join(f"{k}={v / total:.1f}({enc[k]})" for k, v in sorted(by_kind.items()))
            print(f"  {name:34s} {sum(by_kind.values()) / total:7.1f} B/diff   {parts}")
    client.flushdb()


if __name__ == "__main__":
    main()

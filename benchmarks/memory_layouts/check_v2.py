"""Correctness check of the v2 prototype (layout_v2.py) against today's write script.

1. Phase 1 writes diffs with today's WRITE_SCRIPT (diffs.delivery.store), the
   "old layout": cursors handed out then must still resume after the switch.
2. Phase 2 writes with WRITE_V2: default and compact members mixed, fixed scores in the
   past (they land in the legacy lane) and just ahead (new lane), re-creations (births),
   births without a diff, and retries of diffs already written (both lanes).
3. Every feed page and object page, from many cursors (old-layout scores, new-layout
   scores, watermarks between scores, none), read page by page with small limits and
   byte budgets, must give exactly the diffs scored after the cursor: no gap, no repeat.
4. Prune at a cutoff in the middle: what is left is exactly what scores >= cutoff.

    PYTHONPATH=/work/main python check_v2.py --url redis://127.0.0.1:6379/12
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import layout_v2 as v2
import redis

P = "diffs:"
LABEL = "{auth.group}"
FEED, HORIZON, LOG = f"{P}feed:{LABEL}", f"{P}horizon:{LABEL}", f"{P}log:{LABEL}"
AGE = 86400.0
TTL = str(int(AGE * 1000))


def keys(pk):
    return {
        "set": f"{P}{LABEL}:{pk}",
        "birth": f"{P}born:{LABEL}:{pk}",
        "ix": f"{P}ix:{LABEL}:{pk}",
    }


def load_today():
    import django
    from django.conf import settings

    settings.configure(INSTALLED_APPS=["diffs"], DIFFS_SETTINGS={}, USE_TZ=True)
    django.setup()
    from diffs.delivery.store import WRITE_SCRIPT
    from diffs.feed import _FETCH_SCRIPT

    return WRITE_SCRIPT, _FETCH_SCRIPT


def record_score(raw: bytes) -> float:
    """The score of an index record's first 8 bytes (6 B ms, 2 B seq)."""
    ms, seq = int.from_bytes(raw[:6], "big"), int.from_bytes(raw[6:8], "big")
    return ms + seq * 2.0 ** (math.frexp(ms)[1] - 53)


def signed(hex_id: str) -> str:
    return str(int.from_bytes(bytes.fromhex(hex_id), "big", signed=True))


def hex_of(int_text: str) -> str:
    return f"{int(int_text) & (2**64 - 1):016x}"


class World:
    def __init__(self, client, write_today, fetch_today):
        self.c = client
        self.today = client.register_script(write_today)
        self.fetch = client.register_script(fetch_today)
        self.write2 = client.register_script(v2.WRITE_V2)
        self.obj_page = client.register_script(v2.OBJECT_PAGE_V2)
        self.feed_page = client.register_script(v2.FEED_PAGE_V2)
        self.prune_ix = client.register_script(v2.PRUNE_INDEX_V2)
        self.prune_log = client.register_script(v2.PRUNE_LOG_V2)
        self.rng = random.Random(5)
        self.truth = {}  # id -> (score, pk)
        self.births = {}  # pk -> birth score
        self.n = 0

    def new_diff(self, pk, created=False, compact=False):
        self.n += 1
        hex_id = f"{self.rng.getrandbits(64):016x}"
        fields = json.dumps({"name": f"group {pk} v{self.n}", "rank": self.n % 10})
        if compact:
            head = '{"n":1,' if created else "{"
            member = f'{head}"f":{fields}}}'
        else:
            member = (
                f'{{"id":"{hex_id}","created":{"true" if created else "false"},"data":'
                f'[{{"model":"auth.group","pk":{pk},"fields":{fields}}}]}}'
            )
        return {"pk": pk, "id": hex_id, "member": member, "compact": compact, "created": created}

    def write_today(self, diffs):
        ks, args = [], [TTL, repr(AGE)]
        for d in diffs:
            k = keys(d["pk"])
            ks += [k["set"], FEED, HORIZON, k["birth"]]
            args += [d["member"], d["id"] + str(d["pk"]), "", "1" if d["created"] else ""]
        return self._record(diffs, self.today(keys=ks, args=args))

    def write_v2(self, diffs):
        ks, args = [], [TTL, repr(AGE)]
        for d in diffs:
            k = keys(d["pk"])
            ks += [k["set"], FEED, HORIZON, k["birth"], k["ix"], LOG]
            creates = d.get("creates", "1" if d["created"] else "")
            fixed = "" if d.get("fixed") is None else repr(d["fixed"])
            args += [
                d["member"],
                d["id"] + str(d["pk"]),
                fixed,
                creates,
                "1" if d.get("maybe") else "",
                signed(d["id"]) if d["compact"] else "",
            ]
        return self._record(diffs, self.write2(keys=ks, args=args))

    def _record(self, diffs, scores):
        out = []
        for d, s in zip(diffs, scores, strict=True):
            s = float(s)
            if d.get("creates", "").startswith("b:"):
                birth = self.c.get(keys(d["pk"])["birth"])
                if birth:
                    self.births[d["pk"]] = float(birth.decode().partition("|")[0])
                continue
            if d["id"] in self.truth:
                assert self.truth[d["id"]][0] == s, ("retry moved", d, s)
            self.truth[d["id"]] = (s, d["pk"])
            if d["created"] and self.c.get(keys(d["pk"])["birth"]):
                self.births[d["pk"]] = float(self.c.get(keys(d["pk"])["birth"]).decode())
            out.append(s)
        return out

    # -- reads ---------------------------------------------------------------------

    def read_feed(self, cursor, limit=7, budget=500):
        got = []
        while True:
            bound = "" if cursor is None else f"({cursor!r}"
            raw = self.feed_page(
                keys=[FEED, HORIZON, LOG], args=[bound, repr(AGE), limit + 1, budget]
            )
            cut = int(raw[3])
            rows = [raw[i : i + 4] for i in range(4, len(raw), 4)]
            more = cut or len(rows) > limit
            rows = rows[:limit]
            # Legacy pointers' bodies and every pk's birth: today's fetch script.
            pks = list(dict.fromkeys(r[1].decode() for r in rows))
            index = {pk: i + 1 for i, pk in enumerate(pks)}
            args = [10**9]
            for score, pk, member, id_ in rows:
                if member == b"":
                    args += [index[pk.decode()], score.decode(), id_.decode()]
            if rows:
                ks = [keys(pk)["set"] for pk in pks] + [keys(pk)["birth"] for pk in pks]
                fetched = self.fetch(keys=ks, args=args)[1 + len(pks) :]
            else:
                fetched = []
            bodies = iter(fetched)
            taken, size = 0, 0
            for score, pk, member, id_ in rows:
                body = member if member != b"" else next(bodies)
                if taken and size + len(body) > budget:
                    more = True
                    break
                taken, size = taken + 1, size + len(body)
                cursor = float(score)
                if body:
                    got.append((self._id(body, id_), float(score)))
            if not more:
                return got

    def read_object(self, pk, cursor, limit=3, budget=400):
        got = []
        k = keys(pk)
        while True:
            bound = "" if cursor is None else f"({cursor!r}"
            raw = self.obj_page(
                keys=[k["set"], FEED, HORIZON, k["birth"], k["ix"], LOG],
                args=[bound, repr(AGE), limit, budget],
            )
            rows = [raw[i : i + 3] for i in range(5, len(raw), 3)]
            for member, score, id_ in rows:
                got.append((self._id(member, id_), float(score)))
            if not int(raw[4]):
                return got
            cursor = float(rows[-1][1])

    @staticmethod
    def _id(member, id_):
        if id_ and len(id_) != 16:
            return hex_of(id_.decode())
        if id_:
            return id_.decode()
        return json.loads(member)["id"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--fake", action="store_true", help="run on fakeredis instead")
    args = parser.parse_args()
    if args.fake:
        import fakeredis

        c = fakeredis.FakeRedis()
    else:
        c = redis.Redis.from_url(args.url)
        assert c.connection_pool.connection_kwargs.get("db", 0) != 0
    c.flushdb()
    w = World(c, *load_today())
    rng = random.Random(9)
    pks = range(1, 201)

    # Phase 1: today's layout.
    for version in range(6):
        batch = [w.new_diff(pk, created=version == 0) for pk in pks]
        for i in range(0, len(batch), 100):
            w.write_today(batch[i : i + 100])
    phase1 = sorted(s for s, _ in w.truth.values())
    print(f"phase 1 (today's script): {len(phase1)} diffs, feed {c.zcard(FEED)}")

    # Phase 2: v2, with the awkward cases mixed in.
    written2 = []
    for version in range(6):
        batch = []
        for pk in pks:
            d = w.new_diff(pk, compact=pk % 2 == 1)
            roll = rng.random()
            if roll < 0.03:
                d["fixed"] = rng.choice(phase1)  # taken: first_free moves it on
            elif roll < 0.05:
                d["fixed"] = rng.choice(phase1) + 0.0004
            elif roll < 0.06:
                d["fixed"] = max(s for s, _ in w.truth.values()) + 3.0  # ahead
            batch.append(d)
        if version == 3:
            for pk in (5, 6, 7):  # re-created rows: reads of them start at the birth
                batch.append(w.new_diff(pk, created=True, compact=pk % 2 == 1))
            for pk in (8, 9):  # a creation without a diff
                batch.append(
                    {
                        "pk": pk,
                        "id": "",
                        "member": "",
                        "compact": False,
                        "created": False,
                        "creates": f"b:{rng.getrandbits(64):016x}9",
                    }
                )
        for i in range(0, len(batch), 100):
            w.write_v2(batch[i : i + 100])
        written2 += [d for d in batch if d["id"]]
    retries = rng.sample(written2, 40)
    for d in retries:
        d["maybe"] = True
    w.write_v2(retries)
    old = [
        dict(id=i, pk=pk, member="{}", compact=False, created=False)
        for i, (s, pk) in list(w.truth.items())[:10]
    ]
    w.write_v2(old)  # phase-1 diffs sent again: found in the legacy feed
    total = len(w.truth)
    stored = c.xlen(LOG) + c.zcard(FEED)
    legacy2 = c.zcard(FEED) - len(phase1)
    print(
        f"phase 2 (v2 script): {total - len(phase1)} diffs ({legacy2} in the legacy lane); "
        f"log {c.xlen(LOG)}, feed {c.zcard(FEED)}; births {sorted(w.births)}"
    )
    assert stored == total, (stored, total)

    ordered = sorted((s, i) for i, (s, _) in w.truth.items())
    assert len({s for s, _ in ordered}) == len(ordered), "shared score"
    cursors = [None] + [s for s, _ in ordered[::23]] + [s + 0.0001 for s, _ in ordered[5::97]]
    for cursor in cursors:
        want = [(i, s) for s, i in ordered if cursor is None or s > cursor]
        got = w.read_feed(cursor)
        assert got == want, (cursor, len(got), len(want))
    print(f"feed: {len(cursors)} cursors read to the end, no gap, no repeat")

    checked = 0
    for pk in list(range(1, 12)) + rng.sample(list(pks), 15):
        mine = sorted((s, i) for i, (s, p) in w.truth.items() if p == pk)
        birth = w.births.get(pk)
        for cursor in [None] + [s for s, _ in mine]:
            want = [
                (i, s)
                for s, i in mine
                if (cursor is None or s > cursor) and (birth is None or s >= birth)
            ]
            got = w.read_object(pk, cursor)
            assert got == want, (pk, cursor, got, want)
            checked += 1
    print(f"objects: {checked} reads, births respected, no gap, no repeat")

    cutoff = ordered[len(ordered) // 2][0]
    c.hset(HORIZON, "from", repr(cutoff))  # what prune does first (horizon.raise_to)
    for pk in pks:
        k = keys(pk)
        w.prune_ix(keys=[k["ix"]], args=[repr(cutoff)])
        c.zremrangebyscore(k["set"], "-inf", f"({cutoff!r}")
    w.prune_log(keys=[LOG], args=[repr(cutoff)])
    c.zremrangebyscore(FEED, "-inf", f"({cutoff!r}")
    left = [(i, s) for s, i in ordered if s >= cutoff]
    assert w.read_feed(None) == left
    assert c.xlen(LOG) + c.zcard(FEED) == len(left)
    for pk in pks:
        data = c.get(keys(pk)["ix"]) or b""
        scores = [record_score(data[j : j + 8]) for j in range(0, len(data), 16)]
        assert all(s >= cutoff for s in scores) and scores == sorted(scores)
    print(f"prune at the median: {len(left)} diffs left, all >= cutoff, reads intact")
    c.flushdb()


if __name__ == "__main__":
    main()

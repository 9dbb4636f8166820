"""What django-diffs costs at scale, each figure next to its baseline from the same run.

a. an update (three fields, full ``save()``) in autocommit: registered vs twin model;
b. 100 updates of 100 rows in one ``atomic()`` block: registered vs twin model;
c. iterating 10,000 instances of a queryset: registered vs twin model;
d. ``Model.diffs.get_by_object_id(pk)`` of an object with 1,000 diffs (written in a
   row: one run in the log) vs a raw ``ZRANGE key 0 -1 WITHSCORES`` of a sorted set
   holding the same diffs (written with ``storage: "sets"``), with the same client;
   beside them, not targets: the read of that sorted set, and of 1,000 diffs
   interleaved in the log with another object's;
e. ``manage.py prune_diffs`` over 1,000,000 diffs in 100,000 keys (five of each key's
   ten diffs older than ``max_element_age``) and the model feed vs a bare SCAN +
   pipelined ZREMRANGEBYSCORE, while a thread with its own connection PINGs Redis and
   keeps the longest round trip; the data is reloaded before each variant;
f. Redis memory per diff of a typical three-field update (object indexes, model log).

Every round runs every variant of a figure, in a shuffled order, so drift on the
machine hits them all; figures are medians over the rounds. Run from the repository
root:

    .venv/bin/python benchmarks/scale.py --redis redis://127.0.0.1:6379/11

PostgreSQL at 127.0.0.1 (user ``postgres``); the database ``diffs_bench_scale`` is
created if missing and its bench tables recreated. The Redis db is flushed before,
between figures and after (db 0 refused). ``--only a,d`` runs a subset and
``--prune-keys 10000`` scales figure e down for a quick run. ``--profile DIR`` runs
the measured variant of figures a-d once more under pyinstrument (``pip install
pyinstrument``) and writes ``DIR/figure_<x>.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import io
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from setup_django import configure, describe_machine

FIGURES = "abcdef"
# Issue 16's save-path targets: a (default delivery) 1.40, a with write_behind 1.25.
TARGETS = {"a": 1.40, "a_behind": 1.25, "b": 1.10, "c": 1.10, "d": 1.5, "e": 1.5}
PING_TARGET_MS = 20.0
BYTES_TARGET = 150.0
ROWS_B = 100
ROWS_C = 10_000
DIFFS_D = 1_000
CALLS_D = 20
PASSES_C = 2
DIFFS_PER_KEY = 10
OLD_PER_KEY = 5
MAX_AGE_MS = 3600 * 1000  # the default max_element_age
PIPELINE_CHUNK = 1_000
FEED_CHUNK = 10_000
OBJECTS_F = 1_000
UPDATES_F = 10
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def timed(func: Callable[[], object]) -> float:
    """Seconds ``func`` takes, after a garbage collection outside the timing."""
    gc.collect()
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def shuffled_rounds(rounds: int, variants: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run every variant once per round, in a fresh random order; return the medians."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        order = list(variants)
        random.shuffle(order)
        for name in order:
            results[name].append(variants[name]())
    return {name: statistics.median(times) for name, times in results.items()}


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "OVER"


def report(
    label: str, medians: dict[str, float], names: tuple[str, str], unit: str, target: float
) -> None:
    """One line: baseline, measured, their ratio and the target next to it."""
    base, measured = medians[names[0]], medians[names[1]]
    ratio = measured / base
    scale, digits = {"us": (1e6, 0), "ms": (1e3, 2)}[unit]
    print(
        f"{label:44} {names[0]} {base * scale:.{digits}f} {unit}, {names[1]} "
        f"{measured * scale:.{digits}f} {unit}: {ratio:.2f}x "
        f"(target <= {target:.2f}x, {verdict(ratio, target)})",
        flush=True,
    )


def text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def server_ms(client: redis.Redis) -> float:
    """The Redis server's clock in epoch milliseconds (the clock prune_diffs uses)."""
    seconds, micros = client.time()
    return seconds * 1000 + micros / 1000


@contextlib.contextmanager
def no_redis_write() -> Iterator[None]:
    """Within the block, the package's Redis write does nothing and returns scores.

    Everything else of a save runs as usual (tracking, building, scheduling, the queue,
    diff_recorded): what is left is the floor of capture alone, whatever Redis costs.
    """
    from diffs.delivery import store

    def write_many(client: Any, diffs: Any, *, keep_for: float | None = None) -> list[float]:
        return [time.time() * 1000.0] * len(diffs)

    real = store.write_many
    store.write_many = write_many
    try:
        yield
    finally:
        store.write_many = real


def report_floor(label: str, medians: dict[str, float], names: tuple[str, str], unit: str) -> None:
    """One line without a target: a variant next to the baseline, as a ratio."""
    base, measured = medians[names[0]], medians[names[1]]
    scale, digits = {"us": (1e6, 0), "ms": (1e3, 2)}[unit]
    print(
        f"{label:44} {names[0]} {base * scale:.{digits}f} {unit}, {names[1]} "
        f"{measured * scale:.{digits}f} {unit}: {measured / base:.2f}x",
        flush=True,
    )


class PingProbe:
    """A thread with its own connection that PINGs in a loop and keeps the longest trip."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.client.ping()
        self.stop = threading.Event()
        self.longest = 0.0
        self.pings = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            self.client.ping()
            self.longest = max(self.longest, time.perf_counter() - start)
            self.pings += 1

    def __enter__(self) -> PingProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.client.close()


class Bench:
    """The configured run: models, the package's client and what the figures share."""

    def __init__(self, args: argparse.Namespace) -> None:
        from bench_app.models import Author, PlainArticle, TrackedArticle
        from django.core.management import call_command
        from django.db import connection, transaction

        import diffs

        self.args = args
        self.author_model = Author
        self.plain = PlainArticle
        self.tracked = TrackedArticle
        self.call_command = call_command
        self.connection = connection
        self.atomic = transaction.atomic
        self.client = diffs.get_connection()
        self.counter = iter(range(10**9))

    def profile(self, figure: str, run: Callable[[], object]) -> None:
        """With ``--profile DIR``: run ``run`` once more under pyinstrument, report to DIR."""
        if not self.args.profile:
            return
        from pyinstrument import Profiler  # only --profile needs it

        profiler = Profiler(interval=0.0002)
        profiler.start()
        run()
        profiler.stop()
        path = Path(self.args.profile) / f"figure_{figure}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(profiler.output_text(unicode=False, color=False), encoding="utf-8")
        print(f"   profile of the measured variant: {path}", flush=True)

    def fresh(self) -> Any:
        """Empty the bench tables and the Redis db; return a new author."""
        models = (self.tracked, self.plain, self.author_model)
        tables = ", ".join(model._meta.db_table for model in models)
        with self.connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        self.client.flushdb()
        return self.author_model.objects.create(name="a")

    def make(self, model: Any, count: int) -> list[Any]:
        """``count`` fresh rows of ``model`` (an empty Redis db after), in pk order."""
        author = self.author_model.objects.first()
        model.objects.bulk_create(
            model(title=f"t{i}", body="body " * 20, rank=i, published_at=NOW, author=author)
            for i in range(count)
        )
        self.client.flushdb()  # whatever creating wrote: figures measure updates
        return list(model.objects.order_by("pk"))

    def touch(self, obj: Any) -> None:
        """The measured update: three fields changed, full save()."""
        n = next(self.counter)
        obj.title, obj.rank, obj.is_public = f"title {n}", n, not obj.is_public
        obj.save()

    def diffs_of(self, objects: list[Any]) -> int:
        """How many diffs the objects hold (16-byte index records, and sorted sets)."""
        from diffs.layout import current_layout

        pipe = self.client.pipeline(transaction=False)
        for obj in objects:
            key = self.tracked.diffs.get_key(obj.pk)
            pipe.strlen(current_layout().lane_keys_for(key)[0])
            pipe.zcard(key)
        found = pipe.execute()
        return sum(found[0::2]) // 16 + sum(found[1::2])

    def figure_a(self) -> None:
        from django.conf import settings
        from django.test import override_settings

        import diffs

        self.fresh()
        rows = {"plain": self.make(self.plain, 1), "tracked": self.make(self.tracked, 1)}
        saves = self.args.saves
        behind = {**settings.DIFFS_SETTINGS, "write_behind": True}

        def autocommit(variant: str, count: int = saves) -> float:
            obj = rows[variant][0]

            def run() -> None:
                for _ in range(count):
                    self.touch(obj)

            return timed(run) / count

        def autocommit_behind(count: int = saves) -> float:
            obj = rows["tracked"][0]

            def run() -> None:
                for _ in range(count):
                    self.touch(obj)
                diffs.flush_diffs()  # timed until Redis holds every diff

            with override_settings(DIFFS_SETTINGS=behind):
                return timed(run) / count

        def autocommit_no_redis(count: int = saves) -> float:
            with no_redis_write():
                return autocommit("tracked", count)

        def plain_then_ping(count: int = saves) -> float:
            obj = rows["plain"][0]

            def run() -> None:
                for _ in range(count):
                    self.touch(obj)
                    self.client.ping()

            return timed(run) / count

        variants = {
            "plain": lambda count=saves: autocommit("plain", count),
            "tracked": lambda count=saves: autocommit("tracked", count),
            "write_behind": autocommit_behind,
            "no_redis": autocommit_no_redis,
            "plain+ping": plain_then_ping,
        }
        warmup = 20
        for variant in variants.values():
            variant(warmup)
        medians = shuffled_rounds(self.args.rounds, variants)
        expected = 2 * (warmup + self.args.rounds * saves)
        assert self.diffs_of(rows["tracked"]) == expected, "one diff per save expected"
        label = "a. update in autocommit (per save)"
        report(label, medians, ("plain", "tracked"), "us", TARGETS["a"])
        label = "   the same with write_behind: True"
        report(label, medians, ("plain", "write_behind"), "us", TARGETS["a_behind"])
        label = "   floor: the Redis write a no-op"
        report_floor(label, medians, ("plain", "no_redis"), "us")
        label = "   a plain save and one PING"
        report_floor(label, medians, ("plain", "plain+ping"), "us")
        self.profile("a", lambda: autocommit("tracked"))

    def figure_b(self) -> None:
        self.fresh()
        rows = {
            "plain": self.make(self.plain, ROWS_B),
            "tracked": self.make(self.tracked, ROWS_B),
        }
        blocks = self.args.blocks

        def hundred_in_one(variant: str, count: int = blocks) -> float:
            def run() -> None:
                for _ in range(count):
                    with self.atomic():
                        for obj in rows[variant]:
                            self.touch(obj)

            return timed(run) / count

        def hundred_no_redis(count: int = blocks) -> float:
            with no_redis_write():
                return hundred_in_one("tracked", count)

        variants = {v: (lambda v=v: hundred_in_one(v)) for v in rows}
        variants["no_redis"] = hundred_no_redis
        hundred_in_one("plain", 1)
        hundred_in_one("tracked", 1)
        hundred_no_redis(1)
        medians = shuffled_rounds(self.args.rounds, variants)
        expected = (1 + self.args.rounds * blocks) * ROWS_B
        assert self.diffs_of(rows["tracked"]) == expected, "one diff per save expected"
        label = f"b. {ROWS_B} updates in one atomic() (per block)"
        report(label, medians, ("plain", "tracked"), "ms", TARGETS["b"])
        report_floor("   floor: the Redis write a no-op", medians, ("plain", "no_redis"), "ms")
        self.profile("b", lambda: hundred_in_one("tracked"))

    def figure_c(self) -> None:
        self.fresh()
        models = {"plain": self.plain, "tracked": self.tracked}
        for model in models.values():
            model.objects.bulk_create(
                model(title=f"t{i}", body="body " * 20, rank=i, published_at=NOW, author_id=1)
                for i in range(ROWS_C)
            )
        self.client.flushdb()

        def iterate(variant: str) -> float:
            model = models[variant]

            def run() -> None:
                for _ in range(PASSES_C):
                    for _obj in model.objects.all():
                        pass

            return timed(run) / PASSES_C

        iterate("plain")
        iterate("tracked")
        medians = shuffled_rounds(self.args.rounds, {v: (lambda v=v: iterate(v)) for v in models})
        assert self.plain.objects.count() == self.tracked.objects.count() == ROWS_C
        assert self.client.dbsize() == 0, "iterating wrote to Redis"
        label = f"c. iterate {ROWS_C:,} instances (per pass)"
        report(label, medians, ("plain", "tracked"), "ms", TARGETS["c"])
        self.profile("c", lambda: iterate("tracked"))

    def figure_d(self) -> None:
        from django.conf import settings
        from django.test import override_settings

        self.fresh()
        obj, in_sets, mixed, other = self.make(self.tracked, 4)
        for _ in range(DIFFS_D):
            self.touch(obj)
        # Another object's history interleaved with a fourth's: no two of its diffs
        # follow one another in the log, each body is read by its id.
        for _ in range(DIFFS_D):
            self.touch(mixed)
            self.touch(other)
        # The same history written as earlier versions did (storage "sets"): its sorted
        # set is the raw baseline, and its read the earlier layout's, side by side.
        with override_settings(DIFFS_SETTINGS={**settings.DIFFS_SETTINGS, "storage": "sets"}):
            for _ in range(DIFFS_D):
                self.touch(in_sets)
        key = self.tracked.diffs.get_key(in_sets.pk)
        client = self.client
        assert client.zcard(key) == DIFFS_D
        assert client.zcard(self.tracked.diffs.get_key(obj.pk)) == 0  # in the log

        def raw() -> float:
            def run() -> None:
                for _ in range(CALLS_D):
                    assert len(client.zrange(key, 0, -1, withscores=True)) == DIFFS_D

            return timed(run) / CALLS_D

        def api() -> float:
            def run() -> None:
                for _ in range(CALLS_D):
                    assert len(self.tracked.diffs.get_by_object_id(obj.pk)) == DIFFS_D

            return timed(run) / CALLS_D

        def api_interleaved() -> float:
            def run() -> None:
                for _ in range(CALLS_D):
                    assert len(self.tracked.diffs.get_by_object_id(mixed.pk)) == DIFFS_D

            return timed(run) / CALLS_D

        def api_sets() -> float:
            def run() -> None:
                for _ in range(CALLS_D):
                    assert len(self.tracked.diffs.get_by_object_id(in_sets.pk)) == DIFFS_D

            return timed(run) / CALLS_D

        def api_all_used() -> float:
            def run() -> None:
                for _ in range(CALLS_D):
                    read = self.tracked.diffs.get_by_object_id(obj.pk)
                    assert sum(1 for diff in read if diff.data) == DIFFS_D

            return timed(run) / CALLS_D

        variants = {
            "zrange": raw,
            "get_by_object_id": api,
            "every .data read": api_all_used,
            "sets layout": api_sets,
            "interleaved": api_interleaved,
        }
        for variant in variants.values():
            variant()
        medians = shuffled_rounds(self.args.rounds, variants)
        label = f"d. read {DIFFS_D:,} diffs of one object (per call)"
        report(label, medians, ("zrange", "get_by_object_id"), "ms", TARGETS["d"])
        label = "   (not a target) the same, using every diff"
        report(label, medians, ("zrange", "every .data read"), "ms", TARGETS["d"])
        label = "   (not a target) get_by_object_id of the sets layout (earlier versions)"
        report(label, medians, ("zrange", "sets layout"), "ms", TARGETS["d"])
        label = "   (not a target) get_by_object_id, diffs interleaved with another's"
        report(label, medians, ("zrange", "interleaved"), "ms", TARGETS["d"])
        self.profile("d", api)

    def figure_e(self) -> None:
        self.fresh()
        Prune(self).run()
        self.client.flushdb()

    def figure_f(self) -> None:
        self.fresh()
        objects = self.make(self.tracked, OBJECTS_F)  # then flushed: updates only
        for n in range(UPDATES_F):
            for block in chunks(objects, 100):
                with self.atomic():
                    for obj in block:
                        obj.title, obj.rank = f"article {obj.pk} v{n}", n
                        obj.is_public = not obj.is_public
                        obj.save()
        count = self.diffs_of(objects)
        assert count == OBJECTS_F * UPDATES_F, f"{count} diffs for {OBJECTS_F * UPDATES_F} saves"
        from diffs.layout import current_layout

        object_keys = {self.tracked.diffs.get_key(obj.pk) for obj in objects}
        object_keys |= {current_layout().lane_keys_for(key)[0] for key in object_keys}
        sets = other = 0
        others: list[str] = []
        for key in map(text, self.client.scan_iter(count=1000)):
            if key in object_keys:
                sets += self.client.memory_usage(key, samples=0) or 0
                continue
            kind = text(self.client.type(key))
            try:
                usage = self.client.memory_usage(key, samples=0) or 0
            except redis.ResponseError as error:
                others.append(f"{key} ({kind}): MEMORY USAGE failed: {error}")
                continue
            other += usage
            others.append(f"{key} ({kind}): {usage / count:.1f} bytes per diff")
        newest = self.client.xrevrange(f"diffs:log:{self.tracked._meta.label_lower}", count=1)
        sample = text(newest[0][1][b"m"])
        total = (sets + other) / count
        print(
            f"f. memory per diff, {count:,} three-field updates of {OBJECTS_F:,} objects "
            "(MEMORY USAGE SAMPLES 0)"
        )
        print(f"   member: {len(sample.encode())} bytes, e.g. {sample}")
        print(f"   per-object indexes (and sets): {sets / count:.1f} bytes per diff")
        for line in others:
            print(f"   {line}")
        print(
            f"   total: {total:.1f} bytes per diff "
            f"(target <= {BYTES_TARGET:.0f}, {verdict(total, BYTES_TARGET)})",
            flush=True,
        )
        self.client.flushdb()


class Prune:
    """Figure e: ``prune_diffs`` vs a bare SCAN + pipelined ZREMRANGEBYSCORE."""

    PREFIX = "diffs:"

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.url = bench.args.redis
        self.raw = redis.Redis.from_url(self.url)  # no django-diffs code on this side
        self.keys = bench.args.prune_keys
        self.total = self.keys * DIFFS_PER_KEY
        label = bench.tracked._meta.label_lower
        self.feed = f"{self.PREFIX}feed:{label}"
        self.horizon = f"{self.PREFIX}horizon:{label}"
        self.load_seconds: list[float] = []
        self.pings: dict[str, list[float]] = {"bare": [], "prune_diffs": []}
        self.runs: dict[str, list[float]] = {"bare": [], "prune_diffs": []}
        self.said = ""

        # Members are built once; every load writes these same members, fresh scores.
        start = time.perf_counter()
        self.object_keys: list[str] = []
        self.members: list[list[str]] = []
        self.feed_members: list[list[str]] = []
        for pk in range(1, self.keys + 1):
            self.object_keys.append(bench.tracked.diffs.get_key(pk))
            ids = [f"{random.getrandbits(64):016x}" for _ in range(DIFFS_PER_KEY)]
            self.members.append(
                [
                    f'{{"id":"{diff_id}","created":false,"data":[{{"model":"{label}",'
                    f'"pk":{pk},"fields":{{"title":"article {pk} v{n}","rank":{n},'
                    f'"is_public":{"true" if n % 2 else "false"}}}}}]}}'
                    for n, diff_id in enumerate(ids)
                ]
            )
            self.feed_members.append([f"{diff_id}{pk}" for diff_id in ids])
        self.build_seconds = time.perf_counter() - start

    def load(self) -> float:
        """Flush the db and write the data; return the cutoff prune will use (ms)."""
        raw = self.raw
        raw.flushdb()
        now = server_ms(raw)
        # Old diffs 2 h back, recent ones a minute back; a microsecond apart each.
        bases = (now - 2 * MAX_AGE_MS, now - 60_000 - self.total / 1000)
        pipe = raw.pipeline(transaction=False)
        feed_args: list[Any] = []
        index = 0
        for key, members, feed_members in zip(
            self.object_keys, self.members, self.feed_members, strict=True
        ):
            args: list[Any] = []
            for n in range(DIFFS_PER_KEY):
                score = round(bases[n >= OLD_PER_KEY] + index / 1000, 3)
                index += 1
                args += (score, members[n])
                feed_args += (score, feed_members[n])
            pipe.execute_command("ZADD", key, *args)
            if len(feed_args) >= 2 * FEED_CHUNK:
                pipe.execute_command("ZADD", self.feed, *feed_args)
                feed_args = []
            if len(pipe) >= PIPELINE_CHUNK:
                pipe.execute()
        if feed_args:
            pipe.execute_command("ZADD", self.feed, *feed_args)
        pipe.execute()
        assert raw.dbsize() == self.keys + 1
        assert raw.zcard(self.feed) == self.total
        return now - MAX_AGE_MS

    def check_pruned(self, cutoff: float) -> None:
        """Every old diff gone, every recent one kept, in every set and in the feed."""
        raw = self.raw
        kept = DIFFS_PER_KEY - OLD_PER_KEY
        # The object keys and the feed (prune_diffs also keeps the model's horizon hash;
        # the bare loop does not).
        found = raw.dbsize() - raw.exists(self.horizon)
        assert found == self.keys + 1, f"keys disappeared or appeared: {found}"
        feed_size = raw.zcard(self.feed)
        assert feed_size == self.keys * kept, f"the feed holds {feed_size} entries"
        assert raw.zcount(self.feed, "-inf", f"({cutoff}") == 0, "old feed entries left"
        for batch in chunks(self.object_keys, 10 * PIPELINE_CHUNK):
            pipe = raw.pipeline(transaction=False)
            for key in batch:
                pipe.zcard(key)
                pipe.zcount(key, "-inf", f"({cutoff}")
            replies = pipe.execute()
            assert all(size == kept for size in replies[0::2]), "recent diffs lost"
            assert not any(replies[1::2]), "old diffs left"

    def bare(self) -> None:
        raw = self.raw
        cutoff = server_ms(raw) - MAX_AGE_MS
        cursor = 0
        while True:
            cursor, found = raw.scan(cursor, match=f"{self.PREFIX}*", count=1000)
            if found:
                pipe = raw.pipeline(transaction=False)
                for key in found:
                    pipe.zremrangebyscore(key, "-inf", f"({cutoff}")
                pipe.execute()
            if cursor == 0:
                break

    def command(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        self.bench.call_command("prune_diffs", stdout=out, stderr=err)
        self.said = " ".join(part for part in (out.getvalue(), err.getvalue()) if part).strip()

    def variant(self, name: str, func: Callable[[], None]) -> float:
        start = time.perf_counter()
        cutoff = self.load()
        self.load_seconds.append(time.perf_counter() - start)
        # Collect before the probe starts: a full collection holds the GIL, and the
        # probe thread would count that wait as Redis latency.
        gc.collect()
        with PingProbe(self.url) as probe:
            start = time.perf_counter()
            func()
            seconds = time.perf_counter() - start
        self.pings[name].append(probe.longest)
        self.runs[name].append(seconds)
        self.check_pruned(cutoff)
        return seconds

    def run(self) -> None:
        with PingProbe(self.url) as idle:
            time.sleep(1.0)
        medians = shuffled_rounds(
            self.bench.args.prune_rounds,
            {
                "bare": lambda: self.variant("bare", self.bare),
                "prune_diffs": lambda: self.variant("prune_diffs", self.command),
            },
        )
        ratio = medians["prune_diffs"] / medians["bare"]
        worst = max(self.pings["prune_diffs"]) * 1000
        print(
            f"e. prune {self.total:,} diffs in {self.keys:,} keys + the feed, "
            f"{OLD_PER_KEY} of each key's {DIFFS_PER_KEY} older than max_element_age"
        )
        print(
            f"   (members built once in {self.build_seconds:.1f} s; each load "
            f"{statistics.median(self.load_seconds):.1f} s; idle max PING "
            f"{idle.longest * 1000:.2f} ms over {idle.pings} PINGs)"
        )
        for name in ("bare", "prune_diffs"):
            runs = ", ".join(f"{s:.2f}" for s in self.runs[name])
            pings = ", ".join(f"{p * 1000:.1f}" for p in self.pings[name])
            print(f"   {name:12} {medians[name]:6.2f} s (runs: {runs} s; max PING: {pings} ms)")
        print(f"   prune_diffs said: {self.said}")
        print(
            f"   ratio {ratio:.2f}x (target <= {TARGETS['e']:.2f}x, "
            f"{verdict(ratio, TARGETS['e'])}); max PING during prune_diffs {worst:.1f} ms "
            f"(target <= {PING_TARGET_MS:.0f} ms, {verdict(worst, PING_TARGET_MS)})",
            flush=True,
        )
        self.raw.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--pg-name", default="diffs_bench_scale")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of figures a-d")
    parser.add_argument("--prune-rounds", type=int, default=3, help="rounds of figure e")
    parser.add_argument("--prune-keys", type=int, default=100_000, help="keys in figure e")
    parser.add_argument("--only", default=",".join(FIGURES), help="e.g. a,b,d")
    parser.add_argument("--saves", type=int, default=300, help="saves per variant per round (a)")
    parser.add_argument("--blocks", type=int, default=5, help="blocks per variant per round (b)")
    parser.add_argument("--profile", default="", help="directory for pyinstrument profiles")
    args = parser.parse_args()
    only = [part.strip() for part in args.only.split(",") if part.strip()]
    if not set(only) <= set(FIGURES):
        parser.error(f"--only takes letters among {', '.join(FIGURES)}")
    configure(args.redis, args.pg_name)
    bench = Bench(args)
    print(describe_machine())
    print(
        f"medians of {args.rounds} rounds (figure e: {args.prune_rounds}), "
        "variants in a new random order every round",
        flush=True,
    )
    start = time.perf_counter()
    for figure in FIGURES:
        if figure in only:
            getattr(bench, f"figure_{figure}")()
    bench.client.flushdb()
    print(f"run took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

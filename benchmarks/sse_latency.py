"""Commit-to-event latency of the event stream under uvicorn, and memory per client.

One uvicorn process serves the test project (``tests/support/asgi_app.py``) against
PostgreSQL and a real Redis. A client process opens N event streams
(``/questions/diffs/stream/``, the feed of a model anyone may read) and notes when
each event arrives; this process creates questions one at a time, noting the time just
before each ``create()`` (which commits, then writes the diff to Redis on commit). The
latency of an event at a client is its arrival minus that time: the commit, the write
to Redis, the wake-up, the read, the visibility check and the network, all included.
Both processes read ``time.perf_counter()`` (CLOCK_MONOTONIC, one clock for the host).

Run from the repository root:

    .venv/bin/python benchmarks/sse_latency.py --redis redis://127.0.0.1:6379/11

Prints p50/p99/max per client count (default 1 and 200) and the server's resident
memory per connected client (RSS with N clients minus RSS with one, over N - 1), for
two servers side by side: Python's collector as it comes, and ``gc.freeze()`` called
once the application is loaded (``--gc both``, the default; ``default`` or ``frozen``
for one). Writes start once every stream has sent what the feed held and the server
is idle. A stream that ends early is counted, with the last bytes it received. The
Redis db is flushed before and after (db 0 refused); the PostgreSQL database
``diffs_bench_sse`` is created if missing. The server keeps database connections
(``CONN_MAX_AGE=60``), as a production server would.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

PG_NAME = "diffs_bench_sse"
#: How long after the last write the clients keep listening: an event later than this
#: counts as missing.
DRAIN_SECONDS = 5.0
# Inside the event's JSON, closing quote included: a marker cut by a read is not taken.
MARKER = re.compile(rb'"bench-(\d+)-(\d+)"')


def server_environment(redis_url: str, frozen: bool = False) -> dict[str, str]:
    return {
        **os.environ,
        "DIFFS_ASGI_GC_FREEZE": "1" if frozen else "",
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.support.asgi_settings",
        "DIFFS_TEST_REDIS_URL": redis_url,
        "DIFFS_TEST_DATABASE": "postgres",
        "DIFFS_TEST_PG_NAME": PG_NAME,
        "DIFFS_ASGI_CONN_MAX_AGE": "60",
        "DIFFS_ASGI_MAX_WAIT": "3600",
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_idle(pid: int, timeout: float = 60.0) -> None:
    """Until ``pid`` used under 2% of a CPU over half a second, then one more second:
    the streams have sent what the feed held (the earlier runs' diffs) and wait."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before < 0.01:
            break
    time.sleep(1.0)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    msg = f"no VmRSS in /proc/{pid}/status"
    raise RuntimeError(msg)


# --- The client process -------------------------------------------------------------


async def _one_client(
    port: int, arrivals: dict[tuple[int, int], list[float]], ready, ended: list[bytes]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /questions/diffs/stream/ HTTP/1.1\r\nHost: bench\r\n"
        b"Accept: text/event-stream\r\n\r\n"
    )
    await writer.drain()
    buffer = b""
    tail = b""
    opened = False
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            ended.append(tail)
            return
        now = time.perf_counter()
        tail = (tail + chunk)[-300:]
        buffer += chunk
        if not opened and b"retry:" in buffer:
            opened = True
            ready()
        consumed = 0
        for match in MARKER.finditer(buffer):
            key = (int(match.group(1)), int(match.group(2)))
            arrivals.setdefault(key, []).append(now)
            consumed = match.end()
        # Keep what follows the last marker taken: it may hold the start of the next.
        buffer = buffer[consumed:][-64:]


def client_process(port: int, count: int, connected, results) -> None:
    async def main() -> None:
        arrivals: dict[tuple[int, int], list[float]] = {}
        opened = 0

        def ready() -> None:
            nonlocal opened
            opened += 1
            if opened == count:
                connected.set()

        ended: list[bytes] = []
        tasks = [
            asyncio.ensure_future(_one_client(port, arrivals, ready, ended)) for _ in range(count)
        ]
        while not results.poll():
            await asyncio.sleep(0.05)
        results.recv()
        results.send((arrivals, ended))
        for task in tasks:
            task.cancel()

    asyncio.run(main())


# --- This process: the server, the writes, the figures -------------------------------


def start_server(redis_url: str, port: int, frozen: bool) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "tests.support.asgi_app:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(command, cwd=ROOT, env=server_environment(redis_url, frozen))


def wait_for_server(port: int) -> None:
    import http.client

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/questions/diffs/")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    sys.exit("uvicorn did not start")


def measure(port: int, server_pid: int, clients: int, writes: int, run: int) -> dict:
    from tests.testapp.models import Question

    connected = multiprocessing.Event()
    here, there = multiprocessing.Pipe()
    process = multiprocessing.Process(
        target=client_process, args=(port, clients, connected, there)
    )
    process.start()
    if not connected.wait(60):
        process.kill()
        sys.exit(f"{clients} clients did not connect within 60 s")
    wait_until_idle(server_pid)
    started_at: dict[tuple[int, int], float] = {}
    for index in range(writes):
        time.sleep(random.uniform(0.05, 0.1))
        started_at[(run, index)] = time.perf_counter()
        Question.objects.create(question_text=f"bench-{run}-{index}")
    time.sleep(DRAIN_SECONDS)
    rss = rss_kib(server_pid)
    here.send("done")
    arrivals, ended = here.recv()
    process.join(10)
    if process.is_alive():
        process.kill()
    latencies = []
    missing = 0
    for key, start in started_at.items():
        got = arrivals.get(key, [])
        missing += clients - len(got)
        latencies += [(arrival - start) * 1000 for arrival in got]
    latencies.sort()
    return {
        "clients": clients,
        "events": len(latencies),
        "missing": missing,
        "p50": statistics.median(latencies),
        "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)],
        "max": latencies[-1],
        "rss_kib": rss,
        "ended": ended,
    }


def serve_and_measure(args: argparse.Namespace, frozen: bool) -> list[dict]:
    import diffs
    from tests.support.redis_server import free_port

    diffs.get_connection().flushdb()
    port = free_port()
    server = start_server(args.redis, port, frozen)
    try:
        wait_for_server(port)
        return [
            measure(port, server.pid, clients, args.writes, run)
            for run, clients in enumerate(int(n) for n in args.clients.split(","))
        ]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        diffs.get_connection().flushdb()


def report(title: str, results: list[dict]) -> None:
    print(title)
    print("clients  events  missing  ended  p50 ms  p99 ms  max ms  server RSS")
    for row in results:
        print(
            f"{row['clients']:>7}  {row['events']:>6}  {row['missing']:>7}  {len(row['ended']):>5}"
            f"  {row['p50']:>6.1f}  {row['p99']:>6.1f}  {row['max']:>6.1f}"
            f"  {row['rss_kib'] / 1024:.1f} MiB"
        )
        if row["ended"]:
            print(f"  a stream ended early; its last bytes: {row['ended'][0][-160:]!r}")
    if len(results) >= 2:
        low, high = results[0], results[-1]
        per_client = (high["rss_kib"] - low["rss_kib"]) / max(1, high["clients"] - low["clients"])
        print(f"memory per connected client: {per_client:.1f} KiB (RSS difference)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--clients", default="1,200")
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--gc", choices=["both", "default", "frozen"], default="both")
    args = parser.parse_args()
    if args.redis.rstrip("/").endswith("/0") or not re.search(r"/\d+$", args.redis):
        sys.exit("Pass a Redis URL ending in /<a db other than 0>: it is flushed.")

    from setup_django import describe_machine, ensure_database

    ensure_database(PG_NAME, "127.0.0.1", "postgres")
    os.environ.update(server_environment(args.redis))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)
    modes = {"both": [False, True], "default": [False], "frozen": [True]}[args.gc]
    measured = [(frozen, serve_and_measure(args, frozen)) for frozen in modes]

    print(describe_machine())
    print(f"uvicorn, one process; {args.writes} creates per client count, 50-100 ms apart")
    for frozen, results in measured:
        collector = "gc.freeze() after start-up" if frozen else "Python's collector as it comes"
        report(f"-- {collector}", results)


if __name__ == "__main__":
    main()

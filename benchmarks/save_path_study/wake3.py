from __future__ import annotations

import random
import socket
import statistics
import time

import psycopg
import redis

pg = psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True)
r = redis.Redis.from_url("redis://127.0.0.1:6379/11", socket_timeout=5)
conn = r.connection_pool.get_connection()
s_block = socket.create_connection(("127.0.0.1", 6379))
s_block.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s_to = socket.create_connection(("127.0.0.1", 6379))
s_to.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s_to.settimeout(5)


def raw(s):
    s.sendall(b"PING\r\n")
    s.recv(100)


def rconn():
    conn.send_command("PING")
    conn.read_response()


single = redis.Redis(connection_pool=r.connection_pool, single_connection_client=True)
pool = r.connection_pool


def pooled():
    c = pool.get_connection()
    c.send_command("PING")
    c.read_response()
    pool.release(c)


from redis.backoff import NoBackoff
from redis.retry import Retry

r2 = redis.Redis.from_url(
    "redis://127.0.0.1:6379/11",
    socket_timeout=5,
    retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
)
variants = {
    "pool get/release + send/read": pooled,
    "single-connection client ping": single.ping,
    "client with diffs' Retry ping": r2.ping,
    "pg only": lambda: None,
    "raw socket blocking": lambda: raw(s_block),
    "raw socket timeout": lambda: raw(s_to),
    "redis-py conn send/read": rconn,
    "redis-py client.ping()": r.ping,
    "pg twice": lambda: pg.execute("SELECT 1").fetchall(),
}


def run(v, n=300):
    f = variants[v]
    t = time.perf_counter_ns()
    for _ in range(n):
        pg.execute("SELECT 1").fetchall()
        f()
    return (time.perf_counter_ns() - t) / n / 1000


res = {v: [] for v in variants}
for v in variants:
    run(v, 100)
for _ in range(30):
    order = list(variants)
    random.shuffle(order)
    for v in order:
        res[v].append(run(v))
base = statistics.median(res["pg only"])
for v in variants:
    m = statistics.median(res[v])
    print(f"{v:26} {m:7.1f} us per iteration, +{m - base:6.1f} over pg only")

"""The one place a Redis client is built: lazily, once per process, from the settings.

Nothing connects at import or registration time. The cached client is dropped when
``DIFFS_SETTINGS`` changes (see ``diffs.settings``) and can be dropped by hand with
:func:`reset_connection`. In ``test_mode`` every client is backed by one shared
``fakeredis.FakeServer``, so writes, reads and ``prune_diffs`` see the same data.
"""

from __future__ import annotations

import importlib
import threading
import weakref
from typing import TYPE_CHECKING, Any, cast

import redis
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from diffs import availability
from diffs.deadline import DeadlineCluster
from diffs.server_version import checked
from diffs.settings import SETTING_NAME, DiffsSettings, get_settings, plain_url

if TYPE_CHECKING:
    import fakeredis

#: What a call to Redis raises when Redis cannot serve it. A cluster client reports an
#: unreachable cluster (at connect time, and for every command during an outage) as a
#: RedisClusterException, which is not a RedisError: "Redis Cluster cannot be connected",
#: caused by the node's ConnectionError, TimeoutError or AuthenticationError.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)


def underlying_error(error: BaseException) -> BaseException:
    """The node's Redis error behind a cluster client's RedisClusterException, else ``error``."""
    cause = error.__cause__
    if isinstance(error, RedisClusterException) and isinstance(cause, redis.RedisError):
        return cause
    return error


def may_have_reached_redis(error: Exception) -> bool:
    """False when ``error`` says a call never left this process (no connection could be
    made); True when Redis may have run it before the failure (a timeout)."""
    cause = underlying_error(error)
    if isinstance(cause, redis.ConnectionError) and "connecting" in str(cause):
        return False
    return not (isinstance(error, REDIS_ERRORS) and "cannot be connected" in str(error))


def describe_redis_error(error: Exception) -> str:
    """``error``, met while writing, in words that name what to check."""
    # On a cluster, the node's error (a ConnectionError, say) names the problem and the
    # cluster client's message says the whole cluster is out of reach.
    cause = underlying_error(error)
    if isinstance(cause, redis.AuthenticationError):
        return (
            f"Redis refused the credentials in {SETTING_NAME}: check the user name and "
            "password in ['url'] or ['redis']"
        )
    if isinstance(error, REDIS_ERRORS):
        advice = connection_advice(error, get_settings().url or "")
        return f"{type(cause).__name__}: {error}" + (f" {advice}" if advice else "")
    return (
        f"{type(error).__name__}: {error}; the Redis client failed before reaching Redis, "
        f"check {SETTING_NAME}['redis'] and ['url']"
    )


# redis-py reports TLS problems as plain connection errors ("certificate verify failed",
# or a reset connection when a redis:// client meets a TLS-only port).
_CERTIFICATE_TROUBLE = (
    "CERTIFICATE_VERIFY_FAILED",
    "certificate verify failed",
    "Hostname mismatch",
)
_DROPPED = ("Connection reset by peer", "Connection closed by server")


def connection_advice(error: BaseException, url: str) -> str | None:
    """A sentence on how to fix ``error`` met while connecting to ``url`` (naming the
    setting that fixes it), or None."""
    text = str(error)
    if any(marker in text for marker in _CERTIFICATE_TROUBLE):
        return (
            "Redis answered with a TLS certificate this client does not trust: give the "
            f"CA that signed it as {SETTING_NAME}['redis']['ssl_ca_certs'], and connect "
            "by a host name the certificate names."
        )
    if url.startswith("redis://") and any(marker in text for marker in _DROPPED):
        return (
            "The server closed the connection at once: if it only accepts TLS, use a "
            f"rediss:// URL in {SETTING_NAME}['url']."
        )
    return None


_lock = threading.Lock()

# One script object per client and script source: it keeps the script's SHA and loads
# it once per server. Weak keys, and scripts hold their client weakly, so replaced
# clients are not kept alive.
_scripts: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def cached_script(client: Any, source: str) -> Any:
    """The script ``source`` on ``client``, made once (``diffs.server_version``: a
    server older than django-diffs needs says so)."""
    by_source = _scripts.setdefault(client, {})
    script = by_source.get(source)
    if script is None:
        script = by_source[source] = checked(client, source)
    return script


_client: redis.Redis | None = None
_fake_server: fakeredis.FakeServer | None = None


def get_connection() -> redis.Redis:
    """Return the process-wide Redis client described by ``DIFFS_SETTINGS``."""
    global _client
    client = _client
    if client is not None:
        return client
    with _lock:
        if _client is None:
            _client = build_client(get_settings())
        return _client


def reset_connection() -> None:
    """Drop the cached client; the next :func:`get_connection` builds a new one.

    The old client's connections are closed, but code still holding it can go on using
    it (it reconnects), on a cluster as on one server.
    """
    global _client
    with _lock:
        old, _client = _client, None
    availability.reset()  # a new client may reach another server: try it at once
    if old is not None:
        _disconnect(old)


@receiver(setting_changed, dispatch_uid="diffs.connection.setting_changed")
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # override_settings(DIFFS_SETTINGS=...) may point at another server: drop the client
    # built from the old settings (diffs.settings forgets its cached copy the same way).
    if setting == SETTING_NAME:
        reset_connection()


def _disconnect(client: Any) -> None:
    if not isinstance(client, RedisCluster):
        client.close()  # disconnects its pool; the client reconnects on its next command
        return
    # RedisCluster.close() forgets its default node, after which most commands fail
    # with an AttributeError; closing each node's pool leaves the client usable.
    nodes: list[Any] = cast(Any, client).get_nodes()  # redis-py leaves it untyped
    for node in nodes:
        if node.redis_connection is not None:
            node.redis_connection.connection_pool.disconnect()


def build_client(conf: DiffsSettings) -> redis.Redis:
    """Build a new client for ``conf`` (uncached; most code wants :func:`get_connection`)."""
    if conf.test_mode:
        return _build_fake_client(conf)
    if conf.cluster:
        return _build_cluster_client(conf)
    if "connection_pool" in conf.user_redis:
        return redis.Redis(**conf.redis)  # the pool carries every connection option
    options = {**_failure_options(conf), **conf.user_redis}
    if conf.url:
        # The URL wins (diffs.W001 says so): host, port and db come from it, the rest
        # from 'redis'. from_url overrides host, port and db itself, but passes a
        # unix_socket_path on to a TCP connection class, which refuses it on every call.
        for key in ("host", "port", "db", "unix_socket_path"):
            options.pop(key, None)
        client = redis.Redis.from_url(conf.url, **options)
    else:
        client = redis.Redis(**{**conf.redis, **options})
    return cast(redis.Redis, waiting_for_connections(client, redis, conf.socket_timeout))


#: Past this many connections the pool stays redis-py's own (see waiting_for_connections).
_MAX_BLOCKING_SLOTS = 10_000


def waiting_for_connections(client: Any, package: Any, timeout: float | None) -> Any:
    """``client`` (``redis.Redis`` or ``redis.asyncio.Redis``, from ``package``) with a
    pool that waits up to ``timeout`` for a free connection when all are in use.

    redis-py's default pool refuses at once (``MaxConnectionsError``, 100 connections
    in redis-py 6 and later): a burst of threads or tasks, two hundred event streams
    opening together say, would fail reads and saves that a moment's wait serves.
    """
    pool = client.connection_pool
    if pool.max_connections > _MAX_BLOCKING_SLOTS:
        return client  # a blocking pool sets a slot aside per connection up front
    blocking = package.BlockingConnectionPool(
        max_connections=pool.max_connections,
        timeout=timeout,
        connection_class=pool.connection_class,
        **pool.connection_kwargs,
    )
    waiting = package.Redis(connection_pool=blocking)
    waiting.auto_close_connection_pool = True  # close() disconnects the pool, as before
    return waiting


def _build_cluster_client(conf: DiffsSettings) -> redis.Redis:
    # redis-py's cluster client finds every node from the one given. It takes the same
    # connection options as redis.Redis, except db (a cluster has only db 0).
    options: dict[str, Any] = {**_failure_options(conf), **conf.user_redis}
    options.pop("db", None)
    if "retry" not in conf.user_redis:
        # The cluster client retries timeouts too, after asking the other nodes for the
        # topology: a call against a hung node would take twice socket_timeout or more.
        options["retry"] = _no_retry()
    if conf.url:
        client = cast(DeadlineCluster, DeadlineCluster.from_url(plain_url(conf.url), **options))
    else:
        # host and port: the user's, else the defaults (in conf.redis, not in options)
        address: dict[str, Any] = {k: conf.redis[k] for k in ("host", "port") if k in conf.redis}
        client = DeadlineCluster(**(options | address))
    # Even its topology refresh after a failure stays within socket_timeout.
    client.deadline = options.get("socket_timeout")
    return cast(redis.Redis, client)  # the commands used are the same


def _failure_options(conf: DiffsSettings) -> dict[str, Any]:
    # A hung Redis must not hang the request that saves: every call gives up after
    # socket_timeout, in all. redis-py's default retries (three, with growing pauses,
    # on timeouts too) would multiply that; only a connection that fails at once (a
    # pooled connection Redis closed when it restarted) is retried, once, without a
    # pause. A timeout is not retried. Writes are idempotent, so a retried write is
    # never stored twice.
    return {
        "socket_timeout": conf.socket_timeout,
        "socket_connect_timeout": conf.socket_timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    }


def _no_retry() -> Any:
    return Retry(NoBackoff(), 0)


def get_fake_server() -> fakeredis.FakeServer:
    """Return the process-wide fake server behind every test-mode client."""
    global _fake_server
    fakeredis = _import_fakeredis()
    if _fake_server is None:
        _fake_server = fakeredis.FakeServer()
    return _fake_server


#: diffs.E009 and diffs.E029 (system checks), and the same errors at first use.
FAKEREDIS_MISSING = "DIFFS_SETTINGS['test_mode'] is True but fakeredis is not installed."
FAKEREDIS_HINT = "Install it with: pip install 'django-diffs[test]'"
LUPA_MISSING = (
    "DIFFS_SETTINGS['test_mode'] is True and fakeredis is installed, but lupa is not: "
    "fakeredis runs the Lua scripts django-diffs writes and reads with through lupa, so "
    "without it every write and read fails (\"unknown command 'evalsha'\")."
)
LUPA_HINT = "Install it with: pip install 'django-diffs[test]' (or: pip install lupa)"


def lupa_installed() -> bool:
    """Whether lupa, which fakeredis needs to run Lua scripts, can be imported."""
    try:
        importlib.import_module("lupa")
    except ImportError:
        return False
    return True


def _build_fake_client(conf: DiffsSettings) -> redis.Redis:
    fakeredis = _import_fakeredis()
    if not lupa_installed():
        # fakeredis imports without lupa, and then answers every script call with an
        # error: refuse test mode here, as the diffs.E029 check does.
        msg = f"{LUPA_MISSING} {LUPA_HINT}"
        raise ImproperlyConfigured(msg)
    options: dict[str, Any] = {
        key: conf.redis[key] for key in ("db", "decode_responses") if key in conf.redis
    }
    client: redis.Redis = fakeredis.FakeRedis(server=get_fake_server(), **options)
    return client


def _import_fakeredis() -> Any:
    try:
        # Imported here: fakeredis is optional (the test extra), needed in test mode only.
        import fakeredis
    except ImportError:
        msg = f"{FAKEREDIS_MISSING} {FAKEREDIS_HINT}"
        raise ImproperlyConfigured(msg) from None
    return fakeredis

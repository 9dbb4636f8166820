"""``DIFFS_SETTINGS``: defaults, validation and a lazily built, cached view.

Settings are read on first use and cached; the cache is dropped whenever Django
announces a settings change (``override_settings``, pytest-django's ``settings``
fixture), so nothing here is frozen at import time. Validation lives here once and
serves both the system checks (``diffs.checks``) and runtime, which raises
``ImproperlyConfigured`` with the same message when the checks were skipped.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from types import MappingProxyType
from typing import Any, NoReturn
from urllib.parse import urlsplit

import redis
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.connection import parse_url

SETTING_NAME = "DIFFS_SETTINGS"

#: A key's check: its problems with ``value`` (none when it is fine).
Check = Callable[[str, Any], list["Problem"]]

#: What to do with diffs Redis did not take (see ``diffs.delivery.queue``).
ON_REDIS_ERROR_CHOICES = ("retry", "log", "raise")

#: How a diff gets to Redis (see the README's Settings): the ``delivery`` key.
DELIVERY_MODES = ("on_commit", "write_behind", "durable", "immediate")

#: The keys that said the same before ``delivery``, and what each mode sets them to.
DELIVERY_ALIASES = ("use_transactions", "durable", "write_behind")

#: Where new diffs are written (``diffs.lanes``): the ``storage`` key.
STORAGE_CHOICES = ("log", "sets")

#: How a diff's member is written (``diffs.diff``): the ``member_format`` key.
MEMBER_FORMATS = ("full", "compact")

URL_SCHEMES = ("redis", "rediss", "unix")
#: URL schemes that name a Redis Cluster (any of its nodes).
CLUSTER_URL_SCHEMES = ("redis+cluster", "rediss+cluster")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with ``DIFFS_SETTINGS``; ``check_id`` is ``diffs.E00N``/``W00N``."""

    check_id: str
    msg: str
    hint: str
    is_error: bool = True


def _raw_settings() -> Any:
    # A falsy value (None, {}) means "all defaults", as in 0.1.16.
    return getattr(django_settings, SETTING_NAME, None) or {}


def find_problems(raw: Any) -> list[Problem]:
    """Return every problem with a raw ``DIFFS_SETTINGS`` value (empty when it is fine)."""
    if not isinstance(raw, Mapping):
        return [
            Problem(
                "diffs.E001",
                f"{SETTING_NAME} must be a dict, not {type(raw).__name__}.",
                f"Set {SETTING_NAME} = {{...}} with the keys {', '.join(sorted(DEFAULTS))}.",
            )
        ]
    problems = _unknown_key_problems(raw)
    for key, check in _CHECKS.items():
        if key in raw:
            problems.extend(check(key, raw[key]))
    problems.extend(_combination_problems(raw))
    return problems


def _did_you_mean(key: Any, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _unknown_key_problems(raw: Mapping[str, Any]) -> list[Problem]:
    return [
        Problem(
            "diffs.E002",
            f"{SETTING_NAME} has an unknown key {key!r}.{_did_you_mean(key, DEFAULTS)}",
            f"Remove it; the known keys are {', '.join(sorted(DEFAULTS))}.",
        )
        for key in raw
        if key not in DEFAULTS
    ]


def _check_redis(key: str, value: Any) -> list[Problem]:
    if isinstance(value, Mapping):
        return _unknown_redis_options(value)
    return [
        Problem(
            "diffs.E003",
            f"{SETTING_NAME}['redis'] must be a dict of redis.Redis() keyword arguments, "
            f"not {type(value).__name__}.",
            "Use e.g. {'host': 'localhost', 'port': 6379, 'db': 0}, or give a URL in "
            f"{SETTING_NAME}['url'] instead.",
        )
    ]


def _unknown_redis_options(value: Mapping[str, Any]) -> list[Problem]:
    known = _redis_client_options()
    return [
        Problem(
            "diffs.E010",
            f"{SETTING_NAME}['redis'] has {key!r}, which redis.Redis() does not accept."
            f"{_did_you_mean(key, known)}",
            "Use only keyword arguments of redis.Redis() (host, port, db, password, "
            "socket_timeout, ...).",
        )
        for key in value
        if key not in known
    ]


@functools.cache
def _redis_client_options() -> tuple[str, ...]:
    parameters = inspect.signature(redis.Redis.__init__).parameters
    return tuple(name for name in parameters if name != "self")


def _check_max_element_age(key: str, value: Any) -> list[Problem]:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and math.isfinite(value) and value > 0:
        return []
    return [
        Problem(
            "diffs.E004",
            f"{SETTING_NAME}['max_element_age'] must be a positive number of seconds, "
            f"not {value!r}.",
            "Set it to how long a diff should be kept, e.g. 3600 for one hour.",
        )
    ]


def _bool_check(check_id: str) -> Check:
    def check(key: str, value: Any) -> list[Problem]:
        if isinstance(value, bool):
            return []
        return [
            Problem(
                check_id,
                f"{SETTING_NAME}[{key!r}] must be True or False, not {value!r}.",
                f"Set {SETTING_NAME}[{key!r}] to a bool.",
            )
        ]

    return check


def _check_prefix(key: str, value: Any) -> list[Problem]:
    if isinstance(value, str) and value:
        return []
    return [
        Problem(
            "diffs.E007",
            f"{SETTING_NAME}['prefix'] must be a non-empty string, not {value!r}.",
            "Use a string that no other Redis user shares, e.g. 'diffs:'.",
        )
    ]


def _check_url(key: str, value: Any) -> list[Problem]:
    if value is None:
        return []
    if isinstance(value, str) and urlsplit(value).scheme in URL_SCHEMES + CLUSTER_URL_SCHEMES:
        return _unparsable_url(plain_url(value))
    return [
        Problem(
            "diffs.E008",
            f"{SETTING_NAME}['url'] must be a redis://, rediss://, unix:// or "
            f"redis+cluster:// URL, not {value!r}.",
            "Use e.g. 'redis://localhost:6379/0', 'rediss://user:pass@host:6380/0', "
            "'unix:///run/redis.sock?db=0' or 'redis+cluster://node1:6379', or remove "
            "'url' and use 'redis'.",
        )
    ]


def plain_url(url: str) -> str:
    """``url`` with a ``+cluster`` scheme turned into the scheme redis-py parses."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.removesuffix('+cluster')}{sep}{rest}"


def wants_cluster(raw: Mapping[str, Any]) -> bool:
    """True when raw settings ask for Redis Cluster, by ``cluster`` or by the URL."""
    url = raw.get("url")
    by_url = isinstance(url, str) and urlsplit(url).scheme in CLUSTER_URL_SCHEMES
    return raw.get("cluster") is True or by_url


def _unparsable_url(value: str) -> list[Problem]:
    try:
        parse_url(value)  # type: ignore[no-untyped-call]
    except ValueError as error:
        return [
            Problem(
                "diffs.E008",
                f"{SETTING_NAME}['url'] cannot be parsed: {error}.",
                "Fix the URL, e.g. 'redis://localhost:6379/0'.",
            )
        ]
    return []


def _check_on_redis_error(key: str, value: Any) -> list[Problem]:
    if value in ON_REDIS_ERROR_CHOICES:
        return []
    return [
        Problem(
            "diffs.E014",
            f"{SETTING_NAME}['on_redis_error'] must be one of "
            f"{', '.join(map(repr, ON_REDIS_ERROR_CHOICES))}, not {value!r}.",
            "Use 'retry' (keep undelivered diffs and write them later), 'log' (log and "
            "drop them) or 'raise' (make the save raise DiffsWriteError).",
        )
    ]


def _choice_check(check_id: str, choices: tuple[str, ...], hint: str) -> Check:
    """The check of a key whose value is one of ``choices``."""

    def check(key: str, value: Any) -> list[Problem]:
        if value in choices:
            return []
        listed = ", ".join(map(repr, choices))
        msg = f"{SETTING_NAME}[{key!r}] must be one of {listed}, not {value!r}."
        return [Problem(check_id, msg, hint)]

    return check


_check_delivery = _choice_check(
    "diffs.E030",
    DELIVERY_MODES,
    "Use 'on_commit' (the default: written when the transaction commits), "
    "'write_behind' (the same, from a background thread), 'durable' (through the "
    "diffs_outbox table) or 'immediate' (written in the save, even inside a "
    "transaction).",
)
_check_storage = _choice_check(
    "diffs.E036",
    STORAGE_CHOICES,
    "Use 'log' (the default: each diff stored once, in its model's log) or 'sets' "
    "(the layout of earlier versions, while some processes of the site still run "
    "one; both are read either way).",
)
_check_member_format = _choice_check(
    "diffs.E037",
    MEMBER_FORMATS,
    "Use 'full' (the default) or 'compact' (a diff of the default serializer stores "
    "only its fields; about a third less Redis memory). Every version that reads "
    "compact members must be deployed before a process writes them.",
)


def aliases_of(mode: str) -> dict[str, bool]:
    """What delivery ``mode`` sets ``use_transactions``, ``durable`` and
    ``write_behind`` to."""
    return {
        "use_transactions": mode != "immediate",
        "durable": mode == "durable",
        "write_behind": mode == "write_behind",
    }


def delivery_of(raw: Mapping[str, Any]) -> str:
    """The delivery mode ``raw`` asks for: its ``delivery`` key, else the one its alias
    keys (``use_transactions``, ``durable``, ``write_behind``) describe."""
    if "delivery" in raw:
        return str(raw["delivery"])
    if raw.get("durable") is True:
        return "durable"
    if raw.get("use_transactions") is False:
        return "immediate"  # with write_behind too: see diffs.W006
    if raw.get("write_behind") is True:
        return "write_behind"
    return "on_commit"


def _delivery_problems(raw: Mapping[str, Any]) -> list[Problem]:
    if "delivery" not in raw:
        if raw.get("use_transactions") is False and raw.get("write_behind") is True:
            return [
                Problem(
                    "diffs.W006",
                    f"{SETTING_NAME} sets 'use_transactions': False with 'write_behind': "
                    "True, which no 'delivery' mode names: diffs are queued in the save "
                    "(kept even if the transaction rolls back) and written by a background "
                    "thread.",
                    "It keeps working in 1.x. Choose 'delivery': 'write_behind' (written "
                    "after the commit) or 'immediate' (written in the save).",
                    is_error=False,
                )
            ]
        return []
    mode = raw["delivery"]
    if mode not in DELIVERY_MODES:
        return []  # E030 says so
    implied = aliases_of(mode)
    return [
        Problem(
            "diffs.E031",
            f"{SETTING_NAME} sets 'delivery': {mode!r} and {key!r}: {raw[key]!r}, which "
            f"says otherwise ({mode!r} means {key!r}: {implied[key]!r}).",
            f"Drop {key!r}: it is an older name for part of 'delivery'.",
        )
        for key in DELIVERY_ALIASES
        if key in raw and raw[key] != implied[key]
    ]


def _check_request_context(key: str, value: Any) -> list[Problem]:
    if value is None or (isinstance(value, str) and "." in value):
        return []
    return [
        Problem(
            "diffs.E032",
            f"{SETTING_NAME}['request_context'] must be the dotted path of a function "
            f'("myapp.diffs.request_values") or None, not {value!r}.',
            "Name a function that takes the request and returns a dict of context "
            "values for DiffsContextMiddleware.",
        )
    ]


def _check_socket_timeout(key: str, value: Any) -> list[Problem]:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is None or (number and math.isfinite(value) and value > 0):
        return []
    return [
        Problem(
            "diffs.E015",
            f"{SETTING_NAME}['socket_timeout'] must be a positive number of seconds or "
            f"None, not {value!r}.",
            "Set how long a Redis call may take before the save gives up on it, "
            "e.g. 1.0; None waits forever (a hung Redis then hangs your requests).",
        )
    ]


#: The largest ``max_wait`` accepted: a request held longer outlives most proxies' timeouts.
MAX_WAIT_LIMIT = 3600


def _check_max_wait(key: str, value: Any) -> list[Problem]:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and math.isfinite(value) and 0 < value <= MAX_WAIT_LIMIT:
        return []
    return [
        Problem(
            "diffs.E034",
            f"{SETTING_NAME}['max_wait'] must be a number of seconds above 0 and at most "
            f"{MAX_WAIT_LIMIT}, not {value!r}.",
            "Set how long a request may wait for the next diff (?wait= of the REST "
            "endpoint, one event stream), e.g. 30; keep it below your proxy's timeout.",
        )
    ]


def _positive_int_check(check_id: str, example: str) -> Check:
    def check(key: str, value: Any) -> list[Problem]:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return []
        return [
            Problem(
                check_id,
                f"{SETTING_NAME}[{key!r}] must be a positive whole number, not {value!r}.",
                f"Set it to e.g. {example}.",
            )
        ]

    return check


_CONNECTION_KEYS = ("host", "port", "db", "unix_socket_path")


def _combination_problems(raw: Mapping[str, Any]) -> list[Problem]:
    problems = _delivery_problems(raw)
    aliases_only = "delivery" not in raw  # else E031 reports a disagreeing alias
    if aliases_only and raw.get("durable") is True and raw.get("use_transactions") is False:
        problems.append(
            Problem(
                "diffs.E019",
                f"{SETTING_NAME} sets 'durable': True with 'use_transactions': False.",
                "The outbox row is written in the transaction of the change and moved to "
                "Redis after it commits; set 'use_transactions' back to True, or drop "
                "'durable'.",
            )
        )
    if raw.get("write_behind") is True or raw.get("delivery") == "write_behind":
        problems.extend(_write_behind_problems(raw))
    problems.extend(_queue_size_problems(raw))
    return problems + _overlap_problems(raw) + _cluster_problems(raw)


def _queue_size_problems(raw: Mapping[str, Any]) -> list[Problem]:
    queue = raw.get("queue_bytes", DEFAULTS["queue_bytes"])
    largest = raw.get("max_diff_bytes", DEFAULTS["max_diff_bytes"])
    numbers = all(isinstance(v, int) and not isinstance(v, bool) for v in (queue, largest))
    if not numbers or min(queue, largest) <= 0 or queue >= largest:
        return []
    return [
        Problem(
            "diffs.E027",
            f"{SETTING_NAME}['queue_bytes'] ({queue}) is smaller than 'max_diff_bytes' "
            f"({largest}): a diff of the largest size allowed could never wait for Redis.",
            "Raise 'queue_bytes' (64 MiB by default) or lower 'max_diff_bytes'.",
        )
    ]


def _write_behind_problems(raw: Mapping[str, Any]) -> list[Problem]:
    problems = []
    asked = "'delivery': 'write_behind'" if "delivery" in raw else "'write_behind': True"
    if raw.get("on_redis_error") == "raise":
        problems.append(
            Problem(
                "diffs.E023",
                f"{SETTING_NAME} sets {asked} with 'on_redis_error': 'raise'.",
                "With write_behind, save() returns before Redis is written, so there is "
                "no caller left to raise to: drop one of the two.",
            )
        )
    if raw.get("durable") is True and "delivery" not in raw:
        problems.append(
            Problem(
                "diffs.E023",
                f"{SETTING_NAME} sets 'write_behind': True with 'durable': True.",
                "Durable mode writes Redis in the saving thread and clears its outbox "
                "rows there; choose one of the two.",
            )
        )
    return problems


def _cluster_problems(raw: Mapping[str, Any]) -> list[Problem]:
    if not wants_cluster(raw):
        return []
    problems = []
    url = raw.get("url")
    redis_value = raw.get("redis") if isinstance(raw.get("redis"), Mapping) else {}
    db = redis_value.get("db", 0) if isinstance(redis_value, Mapping) else 0
    path = urlsplit(plain_url(url)).path.strip("/") if isinstance(url, str) else ""
    if (path and path != "0") or db not in (0, None):
        problems.append(
            Problem(
                "diffs.E021",
                f"{SETTING_NAME} asks for Redis Cluster with a database other than 0.",
                "Redis Cluster has only db 0: drop the db number from 'url' and 'redis', "
                "and give each site its own 'prefix' instead.",
            )
        )
    if isinstance(url, str) and urlsplit(url).scheme == "unix":
        problems.append(
            Problem(
                "diffs.E021",
                f"{SETTING_NAME} asks for Redis Cluster over a unix:// socket.",
                "Give the address of any cluster node: 'redis+cluster://host:port'.",
            )
        )
    return problems


def _overlap_problems(raw: Mapping[str, Any]) -> list[Problem]:
    redis_value = raw.get("redis")
    if not raw.get("url") or not isinstance(redis_value, Mapping):
        return []
    overlapping = sorted(k for k in _CONNECTION_KEYS if k in redis_value)
    if not overlapping:
        return []
    return [
        Problem(
            "diffs.W001",
            f"{SETTING_NAME} sets both 'url' and {', '.join(overlapping)} in 'redis'; "
            "the URL wins for those.",
            "Keep the server address in one place: drop them from 'redis' or drop 'url'.",
            is_error=False,
        )
    ]


def _option(default: Any, check: Check) -> Any:
    """A key of ``DIFFS_SETTINGS``: its default and its check, in one place."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"check": check})
    return field(default=default, metadata={"check": check})


@dataclass(frozen=True)
class DiffsSettings:
    """The merged, validated settings. Build it with :func:`get_settings`.

    Each key of ``DIFFS_SETTINGS`` is declared here once, with its default and its
    check (the check's id is the one the README lists); ``DEFAULTS``, the validation
    and :func:`build_settings` are derived from these fields.
    """

    # _option gives a dict default a default_factory, as field() would.
    redis: dict[str, Any] = _option({"host": "localhost", "port": 6379, "db": 0}, _check_redis)  # noqa: RUF009
    max_element_age: float = _option(3600, _check_max_element_age)
    #: How a diff gets to Redis: one of ``DELIVERY_MODES``. ``use_transactions``,
    #: ``durable`` and ``write_behind`` are its older names (``aliases_of``).
    delivery: str = _option("on_commit", _check_delivery)
    use_transactions: bool = _option(True, _bool_check("diffs.E005"))
    test_mode: bool = _option(False, _bool_check("diffs.E006"))
    prefix: str = _option("diffs:", _check_prefix)
    url: str | None = _option(None, _check_url)
    on_redis_error: str = _option("retry", _check_on_redis_error)
    socket_timeout: float | None = _option(1.0, _check_socket_timeout)
    retry_buffer_size: int = _option(10_000, _positive_int_check("diffs.E018", "10000"))
    durable: bool = _option(False, _bool_check("diffs.E016"))
    max_diff_bytes: int = _option(1_048_576, _positive_int_check("diffs.E017", "1048576 (1 MiB)"))
    #: True to use Redis Cluster (``cluster: True``, or a ``redis+cluster://`` URL).
    cluster: bool = _option(False, _bool_check("diffs.E020"))
    #: True to write to Redis from a background thread (see ``diffs.delivery.background``).
    write_behind: bool = _option(False, _bool_check("diffs.E022"))
    #: About how many bytes of diffs one write script call may carry.
    write_batch_bytes: int = _option(
        1_048_576, _positive_int_check("diffs.E024", "1048576 (1 MiB of diffs per Redis call)")
    )
    #: About how many bytes of diffs one page (feed, object page) may hold.
    page_bytes: int = _option(
        1_048_576, _positive_int_check("diffs.E025", "1048576 (1 MiB of diffs per page)")
    )
    #: Most bytes of diffs waiting in one process's memory for Redis.
    queue_bytes: int = _option(
        67_108_864,
        _positive_int_check("diffs.E026", "67108864 (64 MiB of diffs waiting in memory)"),
    )
    #: Bytes of bulk-write diffs a transaction keeps in memory; beyond, the outbox.
    spill_after_bytes: int = _option(
        8_388_608,
        _positive_int_check("diffs.E028", "8388608 (8 MiB of bulk-write diffs per transaction)"),
    )
    #: Dotted path of a function of the request that returns more context values for
    #: ``DiffsContextMiddleware`` (``diffs.middleware``), or None.
    request_context: str | None = _option(None, _check_request_context)
    #: The longest wait (seconds) a request may ask for: the REST endpoint's ``?wait=``
    #: and how long one event stream lasts before the client reconnects.
    max_wait: float = _option(30.0, _check_max_wait)
    #: Most threads of a process that may wait for a diff at once (sync long polls and
    #: event streams served by WSGI); past it, waits answer at once.
    max_waiting_threads: int = _option(4, _positive_int_check("diffs.E035", "4"))
    #: Where new diffs are written (``diffs.lanes``): ``"log"``, or ``"sets"`` as
    #: earlier versions did, while a rolling upgrade still runs some of them.
    storage: str = _option("log", _check_storage)
    #: ``"compact"`` stores a default-serializer diff as its fields alone
    #: (``diffs.diff.build_compact_member``); ``"full"`` as earlier versions do.
    member_format: str = _option("full", _check_member_format)
    #: Not a key: the ``redis`` dict exactly as the user gave it (no defaults merged in).
    user_redis: dict[str, Any] = field(default_factory=dict)


def _default_of(option: Field[Any]) -> Any:
    if option.default_factory is not MISSING:
        return option.default_factory()
    return option.default


_KEYS = [f for f in fields(DiffsSettings) if "check" in f.metadata]
#: Every key of ``DIFFS_SETTINGS`` and its default (never mutated).
DEFAULTS: Mapping[str, Any] = MappingProxyType({f.name: _default_of(f) for f in _KEYS})
_CHECKS: dict[str, Check] = {f.name: f.metadata["check"] for f in _KEYS}


def build_settings(raw: Any) -> DiffsSettings:
    """Merge ``raw`` over the defaults, raising ``ImproperlyConfigured`` on the first error."""
    errors = [p for p in find_problems(raw) if p.is_error]
    if errors:
        first = errors[0]
        msg = f"{first.msg} {first.hint} ({first.check_id})"
        raise ImproperlyConfigured(msg)
    # Fresh dicts, so neither DEFAULTS nor the user's dict is ever mutated by us. Not
    # deep copies: values such as a connection_pool hold locks and must be shared.
    user_redis = dict(raw.get("redis") or {})
    values = {key: raw.get(key, default) for key, default in DEFAULTS.items()}
    values["redis"] = {**DEFAULTS["redis"], **user_redis}
    values["cluster"] = wants_cluster(raw)
    values["delivery"] = delivery_of(raw)
    if "delivery" in raw:
        values.update(aliases_of(values["delivery"]))
    return DiffsSettings(user_redis=user_redis, **values)


_cache_lock = threading.Lock()
_cached: DiffsSettings | None = None


def get_settings() -> DiffsSettings:
    """Return the current settings, read from ``settings.DIFFS_SETTINGS`` on first use."""
    global _cached
    current = _cached
    if current is not None:
        return current
    with _cache_lock:
        if _cached is None:
            _cached = build_settings(_raw_settings())
        return _cached


def clear_settings_cache() -> None:
    """Forget the cached settings (and, through the signal below, the Redis client)."""
    global _cached
    with _cache_lock:
        _cached = None


@receiver(setting_changed, dispatch_uid="diffs.settings.setting_changed")
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # diffs.connection has a receiver of its own that drops the client built from the
    # old settings (this module imports no connection code).
    if setting == SETTING_NAME:
        clear_settings_cache()


_READ_ONLY = (
    "diffs.settings.diffs_settings is a read-only view of the effective DIFFS_SETTINGS "
    "since django-diffs 1.0: change settings with override_settings(DIFFS_SETTINGS={...}) "
    "(pytest-django: the settings fixture) instead of patching this dict."
)


class SettingsView(Mapping[str, Any]):
    """0.1.16's ``diffs_settings`` dict: the effective settings, read on every access.

    Every key of ``DEFAULTS`` maps to its value in :func:`get_settings` (``redis`` to a
    copy of the merged dict), so ``override_settings`` shows at once. Writes (item
    assignment, ``update()``, ``mock.patch.dict``) raise ``TypeError`` saying how to
    change a setting: they changed nothing.
    """

    def __getitem__(self, key: str) -> Any:
        if key not in DEFAULTS:
            raise KeyError(key)
        value = getattr(get_settings(), key)
        return dict(value) if isinstance(value, dict) else value

    def __iter__(self) -> Iterator[str]:
        return iter(DEFAULTS)

    def __len__(self) -> int:
        return len(DEFAULTS)

    def __repr__(self) -> str:
        return f"<read-only diffs_settings {dict(self)!r}>"

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(_READ_ONLY)

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _refuse


#: 0.1.16's module-level settings dict, now a read-only view (see :class:`SettingsView`).
diffs_settings = SettingsView()

#: Names 0.1.16 had here, and what replaced them.
_REMOVED = {
    "merge_settings": (
        "diffs.settings.get_settings() (the merged, validated settings) or "
        "diffs.settings.diffs_settings (the same as a read-only dict)"
    ),
}


def __getattr__(name: str) -> Any:
    if name == "USER_SETTINGS":
        # 0.1.16 read settings.DIFFS_SETTINGS once, at import; this reads it now.
        return getattr(django_settings, SETTING_NAME, None)
    if name in _REMOVED:
        msg = f"diffs.settings.{name} was removed in django-diffs 1.0; use {_REMOVED[name]}."
        raise AttributeError(msg)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)

"""System checks for ``DIFFS_SETTINGS`` and registered models (``diffs.E001``…).

Only the ``check --deploy`` ones touch the network (``diffs.E012``, ``diffs.E013`` and
``diffs.W004``), within ``socket_timeout``; ``diffs.W005`` is deploy-only too, without
the network. Every message names the key and every hint the fix.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import redis
from django.conf import ENVIRONMENT_VARIABLE, settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from redis.cluster import RedisCluster

from diffs.bulk import DiffsQuerySetMixin
from diffs.connection import (
    FAKEREDIS_HINT,
    FAKEREDIS_MISSING,
    LUPA_HINT,
    LUPA_MISSING,
    REDIS_ERRORS,
    build_client,
    connection_advice,
    lupa_installed,
    underlying_error,
)
from diffs.keys import KeyLayout
from diffs.managers import DiffModelDescriptor
from diffs.pruning import installed_models, printable_key, shape_of_ours
from diffs.registry import DESCRIPTOR_NAME, options_of, raw_attribute, registered_models
from diffs.settings import DEFAULTS, SETTING_NAME, _raw_settings, find_problems, get_settings

if TYPE_CHECKING:
    from diffs.pruning import RedisKey
    from diffs.settings import DiffsSettings

_OBJ = f"settings.{SETTING_NAME}"

#: How long a ``check --deploy`` call to Redis may take when ``socket_timeout`` is None
#: (no limit for saves): a check must end.
DEPLOY_CHECK_TIMEOUT = 5.0
#: About how many keys ``diffs.W004`` has Redis look at, over all its SCAN calls and
#: primaries, so the check costs the same on a db of ten keys or of a billion.
SAMPLE_KEYS = 300
#: SCAN's COUNT for ``diffs.W004``, per call (fewer per primary on a big cluster).
SAMPLE_SCAN_COUNT = 100
#: Longest key name a check message shows.
SHOWN_KEY_CHARS = 80
#: Longest Redis error text a message quotes (a cluster's can list every node).
SHOWN_ERROR_CHARS = 300


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report every problem in ``DIFFS_SETTINGS``."""
    raw = _raw_settings()
    messages: list[checks.CheckMessage] = []
    for problem in find_problems(raw):
        kind = checks.Error if problem.is_error else checks.Warning
        messages.append(kind(problem.msg, hint=problem.hint, obj=_OBJ, id=problem.check_id))
    if isinstance(raw, dict):
        messages.extend(_prefix_warnings(raw.get("prefix")))
    if isinstance(raw, dict) and raw.get("test_mode") is True:
        messages.extend(_test_mode_problems())
    return messages


def _test_mode_problems() -> list[checks.CheckMessage]:
    """``diffs.E009``: fakeredis is missing; else ``diffs.E029``: lupa, which fakeredis
    needs for scripts, is (the same fix installs both)."""
    if not _fakeredis_installed():
        return [checks.Error(FAKEREDIS_MISSING, hint=FAKEREDIS_HINT, obj=_OBJ, id="diffs.E009")]
    if not lupa_installed():
        return [checks.Error(LUPA_MISSING, hint=LUPA_HINT, obj=_OBJ, id="diffs.E029")]
    return []


def _prefix_warnings(prefix: object) -> list[checks.CheckMessage]:
    """``diffs.W003``: a prefix not ending with ``:`` is the start of other prefixes."""
    if not isinstance(prefix, str) or not prefix or prefix.endswith(":"):
        return []  # the default, or diffs.E007's business
    return [
        checks.Warning(
            f"{SETTING_NAME}['prefix'] is {prefix!r}, which does not end with ':', so it is "
            f"also the start of other prefixes ({prefix + '2:'!r}, say): another site's or "
            "app's keys may fall under it.",
            hint=(
                f"End it with ':', e.g. {SETTING_NAME}['prefix'] = {prefix + ':'!r}. Diffs "
                "written under the old prefix are no longer read; they expire within "
                "max_element_age."
            ),
            obj=_OBJ,
            id="diffs.W003",
        )
    ]


@checks.register(checks.Tags.compatibility, deploy=True)
def check_prefix_is_the_projects_own(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """With ``check --deploy``: ``diffs.W005`` while ``prefix`` is the default ``diffs:``.

    Keys are ``<prefix><app_label>.<model>:<pk>``, so two projects on one Redis db with
    an app of the same label would read, write and prune the same history. No network;
    test mode (an in-process fake server) shares nothing and is left alone.
    """
    try:
        conf = get_settings()
    except ImproperlyConfigured:  # reported by check_settings already
        return []
    if conf.test_mode or conf.prefix != DEFAULTS["prefix"]:
        return []
    suggested = f"{_project_name()}:diffs:"
    return [
        checks.Warning(
            f"{SETTING_NAME}['prefix'] is the default {conf.prefix!r}: another project "
            "using the same Redis db with an app of the same label would read, write and "
            f"prune the same history keys ({conf.prefix}<app_label>.<model>:<pk>).",
            hint=(
                f"Give this project a prefix of its own, ending with ':', e.g. "
                f"{SETTING_NAME} = {{..., 'prefix': {suggested!r}}}. Diffs written under "
                "the old prefix are no longer read; they expire within max_element_age. "
                "If no other project uses this Redis db, add 'diffs.W005' to "
                "SILENCED_SYSTEM_CHECKS."
            ),
            obj=_OBJ,
            id="diffs.W005",
        )
    ]


def _project_name() -> str:
    """The project's package, as the settings module names it (``mysite.settings``)."""
    # override_settings hides SETTINGS_MODULE; manage.py sets the variable.
    module = getattr(settings, "SETTINGS_MODULE", None) or os.environ.get(ENVIRONMENT_VARIABLE)
    return (module or "").split(".")[0] or "myproject"


@checks.register(checks.Tags.models)
def check_registered_models(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report registered models whose ``diffs`` attribute was replaced after registration."""
    messages: list[checks.CheckMessage] = []
    for model in registered_models():
        messages.extend(_bulk_writes_unrecorded(model))
        messages.extend(_field_option_problems(model))
        found = raw_attribute(model, DESCRIPTOR_NAME)
        if isinstance(found, DiffModelDescriptor):
            continue
        messages.append(
            checks.Error(
                f"{model._meta.label}.{DESCRIPTOR_NAME} is no longer django-diffs' manager "
                f"but a {type(found).__name__}, so {model.__name__}.diffs cannot read diffs.",
                hint=(
                    f"Something named '{DESCRIPTOR_NAME}' replaced it, often a ForeignKey's "
                    f"related_name='{DESCRIPTOR_NAME}' pointing at {model.__name__}: rename it."
                ),
                obj=model,
                id="diffs.E011",
            )
        )
    return messages


def _field_option_problems(model: Any) -> list[checks.CheckMessage]:
    """``diffs.E033`` for field names in ``fields``/``exclude``/``mask`` the model does
    not have; ``diffs.W007`` for ``mask`` on a model whose ``serialize_diff`` decides
    what is stored."""
    options = options_of(model)
    meta = model._meta
    known = {field.name for field in (*meta.concrete_fields, *meta.many_to_many)}
    unknown = sorted(options.named_fields() - known)
    messages: list[checks.CheckMessage] = []
    if unknown:
        messages.append(
            checks.Error(
                f"@diffs.register() of {model._meta.label} names field(s) the model does "
                f"not have: {', '.join(unknown)}.",
                hint=f"Its fields are: {', '.join(sorted(known))}.",
                obj=model,
                id="diffs.E033",
            )
        )
    if options.mask and callable(getattr(model, "serialize_diff", None)):
        messages.append(
            checks.Warning(
                f"{model._meta.label} masks {', '.join(sorted(options.mask))} but defines "
                "serialize_diff(), whose return value is stored as it is.",
                hint=(
                    "Masked fields reach serialize_diff()'s dirty_fields as '[masked]'; "
                    "make sure it never returns their values (self.<field>) either."
                ),
                obj=model,
                id="diffs.W007",
            )
        )
    return messages


def _bulk_writes_unrecorded(model: Any) -> list[checks.CheckMessage]:
    manager = model._meta.default_manager
    if manager is None or issubclass(manager._queryset_class, DiffsQuerySetMixin):
        return []
    name = manager._queryset_class.__name__
    return [
        checks.Warning(
            f"{model._meta.label}'s default manager uses {name}, so its update(), "
            "bulk_update() and bulk_create() record no diffs.",
            hint=f"Add diffs.DiffsQuerySetMixin first in {name}'s bases.",
            obj=model,
            id="diffs.W002",
        )
    ]


@checks.register(checks.Tags.database, deploy=True)
def check_redis_reachable(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """With ``check --deploy``: connect to Redis with the configured credentials
    (``diffs.E012``, ``diffs.E013``), then look for other sites' keys under the prefix
    (``diffs.W004``).

    On a cluster, every primary must answer. Each call to Redis gives up after
    ``socket_timeout`` (``DEPLOY_CHECK_TIMEOUT`` if that is None).
    """
    try:
        conf = _bounded(get_settings())
    except Exception:  # misconfiguration: reported by check_settings already
        return []
    if conf.test_mode:
        return []
    try:
        client = build_client(conf)  # a cluster client connects when it is built
    except REDIS_ERRORS as error:
        return _unreachable(error, describe_server(conf), conf.url)
    where = describe_server(conf, client)
    try:
        if conf.cluster:
            cast(Any, client).ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            client.ping()
    except REDIS_ERRORS as error:
        client.close()
        return _unreachable(error, where, conf.url)
    try:
        return _keys_of_other_sites(client, conf)
    finally:
        client.close()


def _bounded(conf: DiffsSettings) -> DiffsSettings:
    if conf.socket_timeout is not None:
        return conf
    return dataclasses.replace(conf, socket_timeout=DEPLOY_CHECK_TIMEOUT)


def describe_server(conf: DiffsSettings, client: Any = None) -> str:
    """Where the settings point, as messages name it: ``host:port db N``,
    ``unix:///path`` or ``cluster node host:port``. No network; ``client``, when given,
    is the one built from ``conf``."""
    if conf.test_mode:
        return "the test_mode fake server"
    if conf.cluster:
        return f"cluster node {_first_node(conf)}"
    if client is None:
        client = build_client(conf)  # connects lazily: nothing is sent
    return _describe_server(client)


def redis_problem(error: Exception, where: str, url: str | None) -> tuple[str, str, str]:
    """``(check id, message, hint)`` for a failure to reach or log in to Redis at
    ``where``: ``diffs.E012`` for refused credentials, else ``diffs.E013``."""
    text = shorten(str(error), SHOWN_ERROR_CHARS)
    if isinstance(underlying_error(error), redis.AuthenticationError):
        return (
            "diffs.E012",
            f"Redis at {where} refused the credentials in {SETTING_NAME} ({text}).",
            "Check the user name and password in DIFFS_SETTINGS['url'] "
            "(redis://user:password@host:port/db) or in ['redis'].",
        )
    return (
        "diffs.E013",
        f"Cannot reach Redis at {where} ({text}).",
        connection_advice(error, url or "")
        or f"Start Redis there, or point {SETTING_NAME}['url'] at your server.",
    )


def _unreachable(error: Exception, where: str, url: str | None) -> list[checks.CheckMessage]:
    """``diffs.E012`` for refused credentials, else ``diffs.E013``."""
    check_id, msg, hint = redis_problem(error, where, url)
    return [checks.Error(msg, hint=hint, obj=_OBJ, id=check_id)]


def _keys_of_other_sites(client: redis.Redis, conf: DiffsSettings) -> list[checks.CheckMessage]:
    """``diffs.W004`` when a sample of the keys under the prefix holds one that
    django-diffs did not write for this project: another site's prefix starts with ours."""
    deadline = time.monotonic() + (conf.socket_timeout or DEPLOY_CHECK_TIMEOUT)
    try:
        example = _first_foreign_key(client, KeyLayout.from_settings(conf), deadline)
    except REDIS_ERRORS:
        return []  # Redis stopped answering: E012/E013 say so on the next run
    if example is None:
        return []
    shown = shorten(printable_key(example), SHOWN_KEY_CHARS)  # escaped, not repr'd twice
    return [
        checks.Warning(
            f"Redis holds keys under the prefix {conf.prefix!r} that django-diffs did not "
            f"write for this project, e.g. '{shown}': another site's prefix seems to start "
            "with this one (prune_diffs leaves such keys alone, but scans them every run).",
            hint=(
                f"In {SETTING_NAME}['prefix'], give each site a prefix that is not the start "
                "of another's ('diffs:a:' and 'diffs:b:', not 'diffs:' and 'diffs:b:'). "
                "Keys of an app no longer installed expire within max_element_age."
            ),
            obj=_OBJ,
            id="diffs.W004",
        )
    ]


def _first_foreign_key(client: redis.Redis, layout: KeyLayout, deadline: float) -> RedisKey | None:
    installed = installed_models()
    for key in _sample_keys(client, layout.pattern(), layout.cluster, deadline):
        if shape_of_ours(layout, key, installed) is None:
            return key
    return None


def _sample_keys(
    client: redis.Redis, pattern: str, cluster: bool, deadline: float
) -> Iterator[RedisKey]:
    """Keys matching ``pattern`` from at most about ``SAMPLE_KEYS`` keys looked at: one
    SCAN walk per server (per primary on a cluster), cut short at ``deadline``."""
    scans = _node_scans(client, pattern, cluster)
    count = max(10, min(SAMPLE_SCAN_COUNT, SAMPLE_KEYS // len(scans)))
    calls_each = max(1, SAMPLE_KEYS // (count * len(scans)))
    for scan in scans:
        cursor = 0
        for _ in range(calls_each):
            if time.monotonic() > deadline:
                return
            cursor, keys = scan(cursor, count)
            yield from keys
            if cursor == 0:
                break


def _node_scans(
    client: redis.Redis, pattern: str, cluster: bool
) -> list[Callable[[int, int], tuple[int, list[RedisKey]]]]:
    """One SCAN function (cursor, count) -> (next cursor, keys) per server to walk."""
    if not cluster:
        return [functools.partial(_scan_one, client, pattern)]
    nodes: list[Any] = cast(Any, client).get_primaries()  # redis-py leaves it untyped
    return [functools.partial(_scan_node, client, node, pattern) for node in nodes]


def _scan_one(
    client: redis.Redis, pattern: str, cursor: int, count: int
) -> tuple[int, list[RedisKey]]:
    found = client.scan(cursor, match=pattern, count=count)
    return int(found[0]), list(found[1])


def _scan_node(
    client: redis.Redis, node: Any, pattern: str, cursor: int, count: int
) -> tuple[int, list[RedisKey]]:
    # A cluster client's SCAN answers {node name: cursor}, keys for the nodes targeted.
    cursors, keys = cast(Any, client).scan(
        cursor=cursor, match=pattern, count=count, target_nodes=node
    )
    return int(cursors[node.name]), list(keys)


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters (an ellipsis marks the cut)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _first_node(conf: Any) -> str:
    """``host:port`` of the cluster node the settings name (a cluster client has no pool)."""
    if conf.url:
        parts = urlsplit(conf.url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
    return f"{conf.redis.get('host', 'localhost')}:{conf.redis.get('port', 6379)}"


def _describe_server(client: Any) -> str:
    options = client.connection_pool.connection_kwargs
    if "path" in options:
        return f"unix://{options['path']}"
    return (
        f"{options.get('host', 'localhost')}:{options.get('port', 6379)} db {options.get('db', 0)}"
    )


def _fakeredis_installed() -> bool:
    return importlib.util.find_spec("fakeredis") is not None

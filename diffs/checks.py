"""System checks for ``DIFFS_SETTINGS`` and registered models (``diffs.E001``…).

Only the ``check --deploy`` ones touch the network (``diffs.E012``, ``diffs.E013``),
within ``socket_timeout``; every message names the key and every hint the fix.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from django.core import checks

from diffs.advice import connection_advice
from diffs.settings import SETTING_NAME, _raw_settings, find_problems

if TYPE_CHECKING:
    from diffs.settings import DiffsSettings

_OBJ = f"settings.{SETTING_NAME}"

#: How long a ``check --deploy`` call to Redis may take when ``socket_timeout`` is None
#: (no limit for saves): a check must end.
DEPLOY_CHECK_TIMEOUT = 5.0
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
    if isinstance(raw, dict) and raw.get("test_mode") is True and not _fakeredis_installed():
        messages.append(
            checks.Error(
                f"{SETTING_NAME}['test_mode'] is True but fakeredis is not installed.",
                hint="Install it with: pip install 'django-diffs[test]'",
                obj=_OBJ,
                id="diffs.E009",
            )
        )
    return messages


@checks.register(checks.Tags.models)
def check_registered_models(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report registered models whose ``diffs`` attribute was replaced after registration."""
    from diffs.managers import DiffModelDescriptor
    from diffs.registry import DESCRIPTOR_NAME, raw_attribute, registered_models

    messages: list[checks.CheckMessage] = []
    for model in registered_models():
        messages.extend(_bulk_writes_unrecorded(model))
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


def _bulk_writes_unrecorded(model: Any) -> list[checks.CheckMessage]:
    from diffs.bulk import DiffsQuerySetMixin

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
    (``diffs.E012``, ``diffs.E013``).

    On a cluster, every primary must answer. Each call to Redis gives up after
    ``socket_timeout`` (``DEPLOY_CHECK_TIMEOUT`` if that is None).
    """
    from redis.cluster import RedisCluster

    from diffs.connection import REDIS_ERRORS, build_client
    from diffs.settings import get_settings

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
    client.close()
    return []


def _bounded(conf: DiffsSettings) -> DiffsSettings:
    if conf.socket_timeout is not None:
        return conf
    return dataclasses.replace(conf, socket_timeout=DEPLOY_CHECK_TIMEOUT)


def describe_server(conf: DiffsSettings, client: Any = None) -> str:
    """Where the settings point, as messages name it: ``host:port db N``,
    ``unix:///path`` or ``cluster node host:port``. No network; ``client``, when given,
    is the one built from ``conf``."""
    if conf.cluster:
        return f"cluster node {_first_node(conf)}"
    if client is None:
        from diffs.connection import build_client

        client = build_client(conf)  # connects lazily: nothing is sent
    return _describe_server(client)


def redis_problem(error: Exception, where: str, url: str | None) -> tuple[str, str, str]:
    """``(check id, message, hint)`` for a failure to reach or log in to Redis at
    ``where``: ``diffs.E012`` for refused credentials, else ``diffs.E013``."""
    import redis

    from diffs.connection import underlying_error

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

"""Expected Redis key names, as README "Redis layout" documents them, in every test mode.

Written out here rather than taken from ``diffs.keys``, so tests of the layout check the
package against the documentation: ``diffs:testapp.question:1`` and
``diffs:feed:testapp.question`` on one Redis server, ``diffs:{testapp.question}:1`` and
``diffs:feed:{testapp.question}`` (the model as a hash tag) on Redis Cluster. Which one
follows the current ``DIFFS_SETTINGS``, so a test that points the settings at a
standalone server of its own gets the plain names.
"""

from __future__ import annotations

from diffs.settings import get_settings


def model_part(label: str) -> str:
    """``label``, wrapped in braces (a hash tag) when the settings name a cluster."""
    return f"{{{label}}}" if get_settings().cluster else label


def object_key(label: str, pk: object, prefix: str = "diffs:") -> str:
    """The key of an object's sorted set, e.g. ``object_key("testapp.question", 1)``."""
    return f"{prefix}{model_part(label)}:{pk}"


def feed_key(label: str, prefix: str = "diffs:") -> str:
    """The key of a model's feed, e.g. ``feed_key("testapp.question")``."""
    return f"{prefix}feed:{model_part(label)}"


def horizon_key(label: str, prefix: str = "diffs:") -> str:
    """The key of a model's horizon hash, e.g. ``horizon_key("testapp.question")``."""
    return f"{prefix}horizon:{model_part(label)}"


def birth_key(label: str, pk: object, prefix: str = "diffs:") -> str:
    """The key of an object's birth, e.g. ``birth_key("testapp.question", 1)``."""
    return f"{prefix}born:{model_part(label)}:{pk}"


def index_key(label: str, pk: object, prefix: str = "diffs:") -> str:
    """The key of an object's index of its diffs in the log, e.g.
    ``index_key("testapp.question", 1)``."""
    return f"{prefix}ix:{model_part(label)}:{pk}"


def log_key(label: str, prefix: str = "diffs:") -> str:
    """The key of a model's log (a stream), e.g. ``log_key("testapp.question")``."""
    return f"{prefix}log:{model_part(label)}"

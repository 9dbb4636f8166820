"""Whether the Redis server may evict django-diffs' keys to make room.

Every key django-diffs writes has a time to live, so under ``maxmemory`` any eviction
policy but ``noeviction`` may pick them (``volatile-*`` policies included). An evicted
log takes every diff of its model with it, and the objects' indexes then point at
nothing: reads by cursor skip those diffs without a word. ``manage.py prune_diffs``
(run from cron, already talking to Redis) asks the server and says so.
"""

from __future__ import annotations

from typing import Any

#: The one policy under which Redis never evicts a key (writes fail with OOM instead).
SAFE_POLICY = "noeviction"


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def eviction_settings(reply: object) -> list[tuple[int, str]]:
    """``(maxmemory, maxmemory-policy)`` of each server in a ``CONFIG GET maxmemory*``
    reply (a cluster client's reply holds one dict per node)."""
    if not isinstance(reply, dict):
        return []
    found = {_text(key): _text(value) for key, value in reply.items()}
    if "maxmemory-policy" in found:
        limit = found.get("maxmemory", "0")
        return [(int(limit) if limit.isdecimal() else 0, found["maxmemory-policy"])]
    return [pair for value in reply.values() for pair in eviction_settings(value)]


def eviction_risk(client: Any) -> str | None:
    """A sentence on the risk when ``client``'s server may evict keys, else None (also
    when the server does not say: ``CONFIG`` is often denied on managed Redis)."""
    try:
        settings = eviction_settings(client.config_get("maxmemory*"))
    except Exception:  # only advice: whatever CONFIG GET does, nothing is said
        return None
    risky = sorted(
        {(limit, policy) for limit, policy in settings if limit and policy != SAFE_POLICY}
    )
    if not risky:
        return None
    limit, policy = risky[0]
    return (
        f"Redis may evict django-diffs' keys (maxmemory {limit} bytes, maxmemory-policy "
        f"{policy}): they all have a time to live, so any policy but {SAFE_POLICY} can "
        "pick them, and an evicted log loses every diff of its model. Set "
        f"maxmemory-policy {SAFE_POLICY} on the Redis that holds diffs (a full Redis then "
        "refuses writes, which wait in memory and are retried)."
    )

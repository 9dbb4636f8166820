"""The key layout of the settings in use.

``diffs.keys`` builds key names from a :class:`~diffs.keys.KeyLayout` and reads no
settings; this module is where a layout is made from ``DIFFS_SETTINGS``, so a caller
that wants the current one says so (``current_layout()``).
"""

from __future__ import annotations

from diffs.keys import KeyLayout
from diffs.settings import DiffsSettings, get_settings

# The settings object the layout was built from, and the layout. get_settings() hands
# out a new object whenever DIFFS_SETTINGS change, so an identity check is enough; one
# tuple is read and replaced at once, so threads see a matching pair.
_last: tuple[DiffsSettings, KeyLayout] | None = None


def current_layout() -> KeyLayout:
    """The key layout (prefix, Redis Cluster or not) of the settings in use."""
    global _last
    conf = get_settings()
    last = _last
    if last is None or last[0] is not conf:
        last = (conf, KeyLayout.from_settings(conf))
        _last = last
    return last[1]

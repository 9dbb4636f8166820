"""System checks for ``DIFFS_SETTINGS`` (``diffs.E001``…, ``diffs.W001``).

They never touch the network; every message names the key and every hint the fix.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from django.core import checks

from diffs.settings import SETTING_NAME, _raw_settings, find_problems

_OBJ = f"settings.{SETTING_NAME}"


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


def _fakeredis_installed() -> bool:
    return importlib.util.find_spec("fakeredis") is not None

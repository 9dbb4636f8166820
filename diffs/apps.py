"""The Django app config: registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig


class DiffsConfig(AppConfig):
    """``'diffs'`` in INSTALLED_APPS: gives ``prune_diffs`` and the ``diffs.*`` checks."""

    name = "diffs"
    verbose_name = "Diffs"

    def ready(self) -> None:
        # Models register themselves when their module is imported (the decorator
        # connects their signals on the spot), so ready() only has the checks to load.
        from diffs import checks  # noqa: F401

"""The Django app config: registers the system checks and the exit flush."""

from __future__ import annotations

from django.apps import AppConfig


class DiffsConfig(AppConfig):
    """``'diffs'`` in INSTALLED_APPS: gives ``prune_diffs`` and the ``diffs.*`` checks."""

    name = "diffs"
    verbose_name = "Diffs"

    def ready(self) -> None:
        # Models register themselves when their module is imported (the decorator
        # connects their signals on the spot), so ready() has the checks to load and
        # the exit hook to install: a process that stops normally writes the diffs
        # still waiting for Redis.
        import atexit

        from diffs import checks  # noqa: F401
        from diffs.delivery import flush_at_exit

        atexit.register(flush_at_exit)

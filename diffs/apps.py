"""The Django app config: registers the system checks and the exit hooks."""

from __future__ import annotations

import atexit

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured

from diffs.settings import get_settings


class DiffsConfig(AppConfig):
    """``'diffs'`` in INSTALLED_APPS: gives ``prune_diffs`` and the ``diffs.*`` checks."""

    name = "diffs"
    verbose_name = "Diffs"

    def ready(self) -> None:
        # Models register themselves when their module is imported (the decorator
        # connects their signals on the spot), so ready() has the checks to load and
        # the exit hooks to install: a process that stops normally writes the diffs
        # still waiting for Redis, and with write_behind so does one stopped by SIGTERM
        # or ending as a multiprocessing child (diffs.delivery.exit_hooks).
        # Imported here: importing diffs.checks registers the checks, which should
        # happen only in a project that installs the app, once its registry is ready.
        from diffs import checks  # noqa: F401
        from diffs.delivery import at_exit, install_exit_hooks

        atexit.register(at_exit)
        if _write_behind_configured():
            # Now, while django.setup() most likely runs in the main thread: the only
            # one that may install a signal handler.
            install_exit_hooks()


def __getattr__(name: str) -> type[DiffsConfig]:
    # 0.1.16 named its app config DiffLogConfig, and INSTALLED_APPS may still say
    # "diffs.apps.DiffLogConfig". A module attribute would be a second AppConfig class
    # in this module, and Django would then no longer pick DiffsConfig by itself.
    if name == "DiffLogConfig":
        return DiffsConfig
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def _write_behind_configured() -> bool:
    try:
        return get_settings().write_behind
    except ImproperlyConfigured:  # reported by the diffs.* checks; setup goes on
        return False

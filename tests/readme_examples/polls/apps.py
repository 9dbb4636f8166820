from __future__ import annotations

from django.apps import AppConfig


class PollsConfig(AppConfig):
    """The app the README's examples define their models in (``# polls/models.py``)."""

    name = "polls"
    default_auto_field = "django.db.models.BigAutoField"

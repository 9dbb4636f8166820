"""The polls app config."""

from __future__ import annotations

from django.apps import AppConfig


class PollsConfig(AppConfig):
    name = "polls"
    verbose_name = "Polls"

"""Test mode needs lupa as well as fakeredis: fakeredis imports without it, and then
answers every script call with "unknown command 'evalsha'" (a 0.1.16 project may have
fakeredis installed without it). ``diffs.E029`` says so, and so does the first use,
with the pip command that fixes it; ``diffs.E009`` (no fakeredis at all) comes first.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

import diffs
from diffs.checks import check_settings
from diffs.connection import build_client
from diffs.settings import build_settings

FIX = "pip install 'django-diffs[test]'"


@pytest.fixture
def without_lupa(monkeypatch):
    """Make ``import lupa`` fail, as when fakeredis was installed without its extra."""
    monkeypatch.setitem(sys.modules, "lupa", None)


def test_test_mode_without_lupa_is_e029(without_lupa):
    with override_settings(DIFFS_SETTINGS={"test_mode": True}):
        [error] = check_settings()
    assert error.id == "diffs.E029"
    assert "lupa is not" in error.msg and "unknown command 'evalsha'" in error.msg
    assert FIX in error.hint and "pip install lupa" in error.hint
    assert error.obj == "settings.DIFFS_SETTINGS"


def test_the_check_command_fails_on_e029(without_lupa):
    with (
        override_settings(DIFFS_SETTINGS={"test_mode": True}),
        pytest.raises(SystemCheckError, match=r"diffs\.E029"),
    ):
        call_command("check")


def test_first_use_without_lupa_raises_the_same_message(without_lupa):
    with override_settings(DIFFS_SETTINGS={"test_mode": True}):
        [error] = check_settings()
        with pytest.raises(ImproperlyConfigured) as raised:
            diffs.get_connection()
    assert str(raised.value) == f"{error.msg} {error.hint}"


def test_without_fakeredis_only_e009_is_reported(without_lupa, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with override_settings(DIFFS_SETTINGS={"test_mode": True}):
        messages = check_settings()
    assert [m.id for m in messages] == ["diffs.E009"]
    assert messages[0].hint == f"Install it with: {FIX}"


def test_a_real_redis_does_not_need_lupa(without_lupa):
    with override_settings(DIFFS_SETTINGS={"url": "redis://127.0.0.1:1/3"}):
        assert check_settings() == []
    build_client(build_settings({"url": "redis://127.0.0.1:1/3"})).close()  # no error


def test_test_mode_with_lupa_is_fine():
    with override_settings(DIFFS_SETTINGS={"test_mode": True}):
        assert check_settings() == []
        assert diffs.get_connection().eval("return 1", 0) == 1

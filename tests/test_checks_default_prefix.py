"""``manage.py check --deploy`` warns (``diffs.W005``) while ``prefix`` is the default
``diffs:``: two projects on one Redis db with an app of the same label would share
history keys. The check needs no network and does not run without ``--deploy``.
"""

from __future__ import annotations

import io

import pytest
from django.core import checks
from django.core.management import call_command
from django.test import override_settings

from diffs import connection
from diffs.checks import check_prefix_is_the_projects_own

NO_SERVER = "redis://127.0.0.1:1/3"  # nothing listens on port 1


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if the check builds a Redis client."""

    def refuse(conf):
        raise AssertionError("diffs.W005 must not reach Redis")

    monkeypatch.setattr(connection, "build_client", refuse)


@pytest.mark.parametrize("raw", [{"url": NO_SERVER}, {"url": NO_SERVER, "prefix": "diffs:"}])
def test_the_default_prefix_is_w005(raw, no_network):
    with override_settings(DIFFS_SETTINGS=raw):
        [warning] = check_prefix_is_the_projects_own()
    assert warning.id == "diffs.W005"
    assert warning.level == checks.WARNING
    assert "DIFFS_SETTINGS['prefix'] is the default 'diffs:'" in warning.msg
    assert "same Redis db" in warning.msg
    # The fix, with a prefix named after the project (tests.settings: "tests").
    assert "DIFFS_SETTINGS = {..., 'prefix': 'tests:diffs:'}" in warning.hint
    assert "SILENCED_SYSTEM_CHECKS" in warning.hint
    assert warning.obj == "settings.DIFFS_SETTINGS"


def test_the_suggested_prefix_falls_back_without_a_settings_module(monkeypatch, no_network):
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE")
    with override_settings(DIFFS_SETTINGS={"url": NO_SERVER}):
        [warning] = check_prefix_is_the_projects_own()
    assert "'prefix': 'myproject:diffs:'" in warning.hint


@pytest.mark.parametrize(
    "raw",
    [
        {"url": NO_SERVER, "prefix": "mysite:diffs:"},
        {"test_mode": True},  # an in-process fake server: nothing is shared
        {"max_element_age": 0},  # diffs.E004's business
        "not a dict",  # diffs.E001's
    ],
)
def test_no_w005_for_a_prefix_of_its_own_test_mode_or_broken_settings(raw, no_network):
    with override_settings(DIFFS_SETTINGS=raw):
        assert check_prefix_is_the_projects_own() == []


def test_w005_is_a_deploy_check_only():
    assert check_prefix_is_the_projects_own in checks.registry.registry.get_checks(True)
    assert check_prefix_is_the_projects_own not in checks.registry.registry.get_checks(False)


def run_check_command(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("check", *args, "--tag", "compatibility", stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def test_check_deploy_prints_w005_and_silencing_works(no_network):
    with override_settings(DIFFS_SETTINGS={"url": NO_SERVER}):
        assert "diffs.W005" not in run_check_command()
        output = run_check_command("--deploy")
        assert "diffs.W005" in output and "'prefix': 'tests:diffs:'" in output
        with override_settings(SILENCED_SYSTEM_CHECKS=["diffs.W005"]):
            assert "diffs.W005" not in run_check_command("--deploy")
    with override_settings(DIFFS_SETTINGS={"url": NO_SERVER, "prefix": "tests:diffs:"}):
        assert "diffs.W005" not in run_check_command("--deploy")

"""Which runs the coverage gate holds for: the whole suite, and no part of it.

The end-to-end runs (one file passes, a whole-suite run below 95% fails) are in
test_contributor_commands.py; they run this file as the "whole suite", so it stays small
and fast.
"""

from __future__ import annotations

import pytest

from tests.coverage_gate import PLUGIN_NAME, left_out, suite_files

PATTERNS = ["test_*.py", "*_test.py"]


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("", encoding="utf-8")
    return path


def test_the_suite_is_every_test_file_under_testpaths_at_any_depth(tmp_path):
    top = touch(tmp_path / "tests" / "test_top.py")
    nested = touch(tmp_path / "tests" / "app" / "test_nested.py")
    suffixed = touch(tmp_path / "tests" / "thing_test.py")
    touch(tmp_path / "tests" / "conftest.py")
    touch(tmp_path / "tests" / "helpers.py")
    touch(tmp_path / "other" / "test_outside.py")
    assert suite_files(tmp_path, ["tests"], PATTERNS) == {top, nested, suffixed}


def test_testpaths_entries_are_globs_and_may_name_a_file(tmp_path):
    first = touch(tmp_path / "tests" / "test_first.py")
    touch(tmp_path / "tests" / "test_second.py")
    unit = touch(tmp_path / "unit_a" / "test_u.py")
    assert suite_files(tmp_path, ["tests/test_first.py", "unit_*"], PATTERNS) == {first, unit}
    assert suite_files(tmp_path, ["missing"], PATTERNS) == set()


def test_a_file_neither_collected_nor_skipped_is_left_out(tmp_path):
    ran, skipped_file, under_skipped_dir, missing = (
        tmp_path / "test_ran.py",
        tmp_path / "test_skipped.py",
        tmp_path / "sub" / "test_in_skipped_dir.py",
        tmp_path / "test_missing.py",
    )
    expected = {ran, skipped_file, under_skipped_dir, missing}
    assert left_out(expected, {ran}, [skipped_file, tmp_path / "sub"]) == {missing}
    assert left_out(expected, expected, []) == set()


def test_a_run_of_the_whole_suite_keeps_the_gate(request):
    """With no file, node id or deselection on the command line, the gate must hold.

    This is what fails when a new test file yields no test (all of a module's tests
    removed, say): the plugin would take it for a partial run and lift the gate in CI.
    """
    config = request.config
    gate = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if config.args_source is not pytest.Config.ArgsSource.TESTPATHS or gate.deselected:
        pytest.skip("part of the suite was selected on the command line: no gate expected")
    not_collected = sorted(str(p.relative_to(config.rootpath)) for p in gate.missing)
    assert not_collected == [], "test files that gave no test (they lift the gate)"
    assert gate.lifted is None
    cov = config.pluginmanager.get_plugin("_cov")
    if cov is not None and not getattr(cov, "_disabled", False):
        assert cov.options.cov_fail_under == 95

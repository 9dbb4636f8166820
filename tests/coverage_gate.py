"""The coverage gate of setup.cfg (``--cov-fail-under``) holds for whole-suite runs only.

Coverage is measured on every run, but a contributor running one file
(``.venv/bin/pytest tests/test_prune.py``) exercises a fraction of ``diffs`` and would
fail the 95% gate although every test passed. This plugin lifts the gate when the run
is a part of the suite: some test file under ``testpaths`` was not collected (a file
or node id on the command line, ``--ignore``, ``--lf`` skipping files) or some test was
deselected (``-k``, ``-m``, ``--deselect``, ``--lf``, ``--sw``). ``.venv/bin/pytest``
with no arguments, what CI and the README run, collects everything and keeps the gate.

A test file skipped as a whole at collection (``pytest.importorskip`` at module level)
counts as collected: a configuration that skips a module must still meet the gate.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

#: Name under which tests/conftest.py registers the plugin.
PLUGIN_NAME = "diffs_coverage_gate"


def suite_files(rootpath: Path, testpaths: Sequence[str], patterns: Sequence[str]) -> set[Path]:
    """Every test file of the suite: files matching ``python_files`` under ``testpaths``.

    Entries of ``testpaths`` are globs relative to the rootdir, as pytest reads them; an
    entry may name a file.
    """
    found: set[Path] = set()
    for entry in testpaths:
        for match in rootpath.glob(entry):
            candidates = [match] if match.is_file() else match.rglob("*.py")
            found.update(path for path in candidates if _is_test_file(path, patterns))
    return found


def _is_test_file(path: Path, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)


def left_out(expected: Iterable[Path], collected: set[Path], skipped: Iterable[Path]) -> set[Path]:
    """The files of ``expected`` the run neither collected a test from nor skipped.

    ``skipped`` holds paths skipped at collection; a skipped directory covers the files
    under it.
    """
    skipped = list(skipped)
    return {
        path
        for path in expected
        if path not in collected and not any(p == path or p in path.parents for p in skipped)
    }


class CoverageGate:
    """Watches collection and lifts pytest-cov's fail-under when the run is partial."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.deselected = 0
        self.skipped: list[Path] = []
        self.missing: set[Path] = set()
        #: The fail-under value that was lifted, None while the gate holds.
        self.lifted: float | None = None

    def pytest_deselected(self, items: Sequence[pytest.Item]) -> None:
        self.deselected += len(items)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:
            self.skipped.append(self.config.rootpath / report.fspath)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Decide once everything is collected and deselected, before coverage is reported."""
        expected = suite_files(
            self.config.rootpath,
            self.config.getini("testpaths"),
            self.config.getini("python_files"),
        )
        collected = {item.path for item in session.items}
        self.missing = left_out(expected, collected, self.skipped)
        if self.missing or self.deselected:
            self.lifted = self._lift_fail_under()

    def _lift_fail_under(self) -> float | None:
        """Clear the threshold pytest-cov checks at session finish; returns the old value.

        pytest-cov keeps its options in the namespace of the early argument parse (not
        ``config.option``), and copies ``[coverage:report] fail_under`` into
        ``options.cov_fail_under`` when it starts, before any conftest hook runs; so that
        one attribute is the gate, whichever of the two sources set it. None disables
        the check and the "Required test coverage" line.
        """
        if self.config.getoption("no_cov", False):
            return None  # no coverage, no gate to lift
        cov = self.config.pluginmanager.get_plugin("_cov")
        options = getattr(cov, "options", None)
        threshold = getattr(options, "cov_fail_under", None)
        if not threshold:
            return None
        options.cov_fail_under = None
        return float(threshold)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Say why no coverage gate was applied, so a partial run is never mistaken for CI's.

        Last, so the line comes after pytest-cov's table, where the gate's verdict would be.
        """
        if self.lifted is None:
            return
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} test file(s) not collected")
        if self.deselected:
            parts.append(f"{self.deselected} test(s) deselected")
        terminalreporter.write_line(
            f"coverage gate of {self.lifted:g}% not applied: part of the suite ran "
            f"({', '.join(parts)}); run .venv/bin/pytest with no arguments for the gate",
            yellow=True,
        )

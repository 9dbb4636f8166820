"""The commands a contributor types work as the README says.

* One test file runs and passes on its own, although it covers a fraction of ``diffs``;
  the 95% coverage gate still fails a whole-suite run that misses it (the gate's rule
  is in tests/coverage_gate.py).
* The README's first two ``sh`` blocks (the demo, and the test suite) can be pasted one
  after the other, in either order, in one shell at the root of a clone: neither
  changes directory, each creates its venv, the demo's commands run from a clone's root
  with no server, and the test command is the one CI runs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.readme_examples.runner import blocks

ROOT = Path(__file__).resolve().parent.parent
#: The venv's pytest script, what ``.venv/bin/pytest`` is when the suite runs from .venv.
PYTEST = Path(sys.executable).with_name("pytest")
#: A small test file that stands for "the whole suite" in the gate's end-to-end run.
SMALL_SUITE = "tests/test_coverage_gate.py"
GATE = 95
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}
DIRECTORY_CHANGERS = {"cd", "pushd", "popd"}
VENV = ["python3", "-m", "venv", ".venv"]


# --- one test file -----------------------------------------------------------------


def run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``.venv/bin/pytest *args`` from the clone's root, as in a fresh shell.

    No DIFFS_TEST_* variable (fakeredis and SQLite, whatever configuration runs this
    suite), the coverage data and pytest's cache kept out of the checkout.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DIFFS_", "COV_", "COVERAGE_", "PYTEST_"))
        and k != "DJANGO_SETTINGS_MODULE"
    }
    env["COVERAGE_FILE"] = str(tmp_path / ".coverage")
    return subprocess.run(
        [str(PYTEST), "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def total_coverage(output: str) -> int:
    """The percentage on pytest-cov's TOTAL line."""
    match = re.search(r"^TOTAL\s.*?(\d+)%\s*$", output, re.MULTILINE)
    assert match, output
    return int(match[1])


def test_one_test_file_passes_although_it_covers_far_less_than_the_gate(tmp_path):
    result = run_pytest(tmp_path, "tests/test_prune.py")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert total_coverage(output) < GATE - 20
    assert f"coverage gate of {GATE}% not applied: part of the suite ran" in output
    assert "Required test coverage" not in output


def test_a_whole_suite_run_below_the_gate_fails_although_every_test_passed(tmp_path):
    # No argument, as CI and the README run it; testpaths narrowed to one small file
    # makes that file the whole suite, with its coverage far below the gate.
    result = run_pytest(tmp_path, "-o", f"testpaths={SMALL_SUITE}")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"FAIL Required test coverage of {GATE}% not reached" in output
    assert re.search(r"=+ \d+ passed(, \d+ skipped)? in ", output), output
    assert "not applied" not in output


def test_deselecting_tests_of_the_whole_suite_lifts_the_gate(tmp_path):
    selected = "test_the_suite_is_every_test_file_under_testpaths_at_any_depth"
    result = run_pytest(tmp_path, "-o", f"testpaths={SMALL_SUITE}", "-k", selected)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"=+ 1 passed, \d+ deselected in ", output), output
    assert "test(s) deselected); run .venv/bin/pytest with no arguments" in output


def test_setup_cfg_measures_coverage_and_gates_it_at_95():
    text = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    addopts = re.search(r"^addopts =\n((?:[ \t]+.*\n)+)", text, re.MULTILINE)
    assert addopts, "no addopts in [tool:pytest]"
    options = addopts[1].split()
    assert "--cov=diffs" in options
    assert f"--cov-fail-under={GATE}" in options


# --- the README's two commands -------------------------------------------------------


def readme_commands() -> tuple[str, str]:
    """The README's first two ``sh`` blocks: the demo, and the test suite."""
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    sh = [block.source for block in blocks(readme) if block.lang == "sh"]
    assert len(sh) >= 2, "the README should start with two sh blocks"
    return sh[0], sh[1]


def commands(script: str) -> list[tuple[int, list[str]]]:
    """Each simple command of a shell script, with its subshell depth (0: the shell's own).

    Enough shell for one-line command lists: ``&&``, ``||``, ``;``, ``|``, ``&`` and
    ``( ... )``; a line ending with a backslash continues on the next.
    """
    found: list[tuple[int, list[str]]] = []
    depth = 0
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        argv: list[str] = []
        for token in lexer:
            if token not in SEPARATORS:
                argv.append(token)
                continue
            if argv:
                found.append((depth, argv))
                argv = []
            depth += {"(": 1, ")": -1}.get(token, 0)
        if argv:
            found.append((depth, argv))
    return found


def directory_changes(script: str) -> list[list[str]]:
    """The commands that would change the pasting shell's own directory."""
    return [
        argv for depth, argv in commands(script) if depth == 0 and argv[0] in DIRECTORY_CHANGERS
    ]


def is_install(argv: list[str]) -> bool:
    return argv[:3] == VENV[:3] or Path(argv[0]).name == "pip"


def without_assignments_and_quiet(argv: list[str]) -> tuple[str, ...]:
    """A command as CI and the README may both write it: no VAR=value prefix, no -q."""
    while argv and re.match(r"^[A-Za-z_]\w*=", argv[0]):
        argv = argv[1:]
    return tuple(arg for arg in argv if arg not in ("-q", "--quiet"))


def ci_commands() -> set[tuple[str, ...]]:
    """Every command line of .ci/run (lines shlex cannot read, in heredocs, are skipped)."""
    found = set()
    for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines():
        try:
            parsed = commands(line)
        except ValueError:
            continue
        found.update(without_assignments_and_quiet(argv) for _, argv in parsed)
    return found


def test_the_shell_command_reader_finds_what_changes_directory():
    assert directory_changes("python3 -m venv .venv && cd example_project && ls") == [
        ["cd", "example_project"]
    ]
    assert directory_changes("(cd example_project && ../x) && pushd y") == [["pushd", "y"]]
    assert directory_changes("(cd a; b) && c 'cd' && echo cd") == []
    assert commands("A=1 b -q '.[dev]' \\\n  && c") == [
        (0, ["A=1", "b", "-q", ".[dev]"]),
        (0, ["c"]),
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["demo", "tests"])
def test_each_readme_command_starts_its_venv_and_stays_in_the_clones_root(which):
    script = readme_commands()[which]
    parsed = commands(script)
    assert parsed, script
    assert parsed[0] == (0, VENV), script
    assert directory_changes(script) == [], script


def clone_layout(tmp_path: Path) -> Path:
    """A directory laid out like a fresh clone, for the demo: example_project/ without
    its local database or bytecode (neither is in git)."""
    root = tmp_path / "clone"
    shutil.copytree(
        ROOT / "example_project",
        root / "example_project",
        ignore=shutil.ignore_patterns("db.sqlite3", "__pycache__", "*.pyc"),
    )
    return root


def test_the_demo_commands_run_from_a_clones_root_with_no_server(tmp_path):
    root = clone_layout(tmp_path)
    to_run = [argv for _, argv in commands(readme_commands()[0]) if not is_install(argv)]
    assert to_run, "the demo block runs nothing after installing"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DIFFS_REDIS_URL", "DIFFS_MAX_ELEMENT_AGE", "DJANGO_SETTINGS_MODULE")
    }
    output = ""
    for argv in to_run:
        assert argv[0] == ".venv/bin/python", f"the demo should run the venv's python: {argv}"
        result = subprocess.run(
            [sys.executable, *argv[1:]],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{shlex.join(argv)}\n{result.stdout}{result.stderr}"
        output = result.stdout
    assert "Redis: fakeredis" in output
    assert "created=True" in output
    assert "deleted=True" in output


def test_the_test_command_is_the_one_ci_runs():
    script = readme_commands()[1]
    readme = [without_assignments_and_quiet(argv) for _, argv in commands(script)]
    assert readme == [
        tuple(VENV),
        (".venv/bin/pip", "install", "-e", ".[dev]"),
        (".venv/bin/pytest",),
    ]
    missing = [argv for argv in readme if argv not in ci_commands()]
    assert missing == [], "README commands .ci/run does not run"

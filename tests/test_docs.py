"""The README's examples run as written and print what they show.

Each document's ``python`` and ``pycon`` blocks are executed in order, as one session,
by ``tests/readme_examples/runner.py`` in a process of its own: a new project with the
README's ``polls`` models, its Installation settings and fakeredis. Other kinds of block
(shell commands, program output) are checked where the commands run: the top two
commands in ``test_contributor_commands.py``, the example's walkthrough in
``test_example_project.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.readme_examples.runner import blocks

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.rst", ROOT / "example_project" / "README.rst"]
#: Every kind of block the documents may hold; a new kind needs a decision here (run it,
#: or check it elsewhere), so that no example is silently left unchecked.
KNOWN_KINDS = {"python", "pycon", "sh", "console", "json", "text"}


def run_examples(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIFFS_", "DJANGO_"))}
    return subprocess.run(
        [sys.executable, "-m", "tests.readme_examples.runner", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_runs_and_prints_what_it_shows(path):
    result = run_examples(path)
    assert result.returncode == 0, result.stdout + result.stderr
    code = [b for b in blocks(path.read_text(encoding="utf-8")) if b.lang in ("python", "pycon")]
    assert f"{len(code)} example(s) executed, 0 failed" in result.stdout


def test_a_wrong_output_fails_the_run(tmp_path):
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    shown = "'mysite:diffs:polls.question:1'"
    assert shown in readme
    broken = tmp_path / "README.rst"
    broken.write_text(readme.replace(shown, "'diffs:polls.question:1'"), encoding="utf-8")
    result = run_examples(broken)
    assert result.returncode == 1
    assert "1 failed" in result.stdout
    assert "Got:\n    'mysite:diffs:polls.question:1'" in result.stdout


def test_an_invalid_settings_example_fails_the_run(tmp_path):
    doc = tmp_path / "settings.rst"
    doc.write_text(
        ".. code-block:: python\n\n    DIFFS_SETTINGS = {'max_element_age': -1}\n",
        encoding="utf-8",
    )
    result = run_examples(doc)
    assert result.returncode == 1
    assert "diffs.E004" in result.stdout


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_block_is_of_a_kind_the_tests_know(path):
    kinds = {b.lang for b in blocks(path.read_text(encoding="utf-8"))}
    assert kinds <= KNOWN_KINDS, kinds - KNOWN_KINDS


def test_installation_does_not_install_0_1_16():
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    installation = readme.split("\nInstallation\n", 1)[1].split("\nQuick start\n", 1)[0]
    # A bare "pip install django-diffs" picks 0.1.16 (2017), which does not import.
    blocks_text = "\n".join(b.source for b in blocks(installation) if b.lang == "sh")
    assert "pip install" in blocks_text
    assert not re.search(r"pip install\s+['\"]?django-diffs(['\"\s]|$)", blocks_text)
    assert "pip install 'django-diffs>=1.0'" in installation
    assert "0.1.16" in installation


def test_installation_sets_a_prefix_of_the_projects_own():
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    installation = readme.split("\nInstallation\n", 1)[1].split("\nQuick start\n", 1)[0]
    assert re.search(r'DIFFS_SETTINGS = \{[^}]*"prefix": "mysite:diffs:"', installation)

"""What the wheel ships, and what its metadata says."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_diffs_and_py_typed_only(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("django_diffs-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert packages == {"diffs"}
    assert "diffs/py.typed" in names
    assert "diffs/management/commands/prune_diffs.py" in names
    assert "diffs/management/commands/flush_diffs.py" in names
    assert "diffs/migrations/0001_initial.py" in names
    for template in ("change_form", "change_list", "recent_changes"):
        assert f"diffs/templates/admin/diffs/{template}.html" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    for requirement in (
        "Requires-Dist: Django>=5.2",
        "Requires-Dist: django-dirtyfields>=1.9",
        "Requires-Dist: redis>=5.0",
        'fakeredis[lua]>=2.20; extra == "test"',
        'redis[hiredis]>=5.0; extra == "hiredis"',
    ):
        assert requirement in text
    assert "License" in text
    classified = set(re.findall(r"Classifier: Framework :: Django :: (\d+\.\d+)", text))
    assert classified == django_versions_tox_runs()


def django_versions_tox_runs() -> set[str]:
    """The Django versions tox runs the suite on (``dj52`` -> ``5.2``)."""
    envlist = (ROOT / "tox.ini").read_text(encoding="utf-8")
    versions = set()
    for group in re.findall(r"-dj\{?([\d,]+)\}?", envlist):
        versions.update(f"{code[0]}.{code[1:]}" for code in group.split(","))
    return versions


def test_rst_documents_render_without_warnings():
    import docutils.core

    for name in ("README.rst", "CHANGELOG.rst", "example_project/README.rst"):
        text = (ROOT / name).read_text(encoding="utf-8")
        docutils.core.publish_string(
            text, writer="null", settings_overrides={"halt_level": 2, "report_level": 2}
        )

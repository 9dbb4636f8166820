"""diffs.__all__ is the public face: it holds every top-level name the README uses, and
each of its names imports."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import diffs
from diffs.managers import DiffModelDescriptor

README = Path(__file__).resolve().parent.parent / "README.rst"

#: ``diffs.<name>`` not preceded by an identifier, a dot, a dash or a slash, so that
#: ``Question.diffs.since``, ``instance.diffs`` and ``django-diffs.git`` do not count.
_DOTTED = re.compile(r"(?<![\w./-])diffs\.([A-Za-z_]\w*)")
#: System check ids (``diffs.E001``, ``diffs.W005``) are no attributes.
_CHECK_ID = re.compile(r"[EW]\d{3}")
#: What ``from <module> import`` names: ``a, b`` on its line, or ``(a, b)`` over lines.
_IMPORTED = r"import (?:\(([\w\s,]+)\)|([\w ,]+))"
_FROM_DIFFS = re.compile(r"from diffs " + _IMPORTED)
_FROM_SUBMODULE = re.compile(r"from (diffs(?:\.\w+)+) " + _IMPORTED)

#: 0.1.16 names the README lists as removed: they raise an AttributeError naming the
#: replacement, so they are on purpose not in __all__.
REMOVED = {"klasses_to_connect"}


def submodules() -> set[str]:
    """Names of diffs' modules and packages (``diffs.contrib``, ``diffs.settings``, ...)."""
    return {module.name for module in pkgutil.iter_modules(diffs.__path__)}


def readme() -> str:
    return README.read_text(encoding="utf-8")


def names_in(*groups: str) -> list[str]:
    """The names of an import's groups (the unmatched group is empty)."""
    return [name.strip() for group in groups for name in group.split(",") if name.strip()]


def readme_top_level_names() -> set[str]:
    """The top-level attributes of ``diffs`` the README uses: ``diffs.X`` in code and
    prose, and ``from diffs import X``; submodules, check ids and removed names left out."""
    text = readme()
    used = {name for name in _DOTTED.findall(text) if not _CHECK_ID.fullmatch(name)}
    for groups in _FROM_DIFFS.findall(text):
        used.update(names_in(*groups))
    dunders = {name for name in used if name.startswith("__") and name.endswith("__")}
    return used - submodules() - REMOVED - (dunders - {"__version__"})


def test_the_readme_scan_finds_the_names_it_should():
    used = readme_top_level_names()
    # Names the README certainly uses: a scan that stopped finding them would check nothing.
    assert {"register", "DiffsQuerySet", "write_waiting_diffs", "DiffsWriteError"} <= used
    assert not used & {"contrib", "settings", "recording", "payload", "availability"}
    assert not used & {"object_since", "get_by_object_id", "create"}  # Model.diffs.<method>
    assert not any(_CHECK_ID.fullmatch(name) for name in used)


def test_every_top_level_name_the_readme_uses_is_in_all():
    missing = sorted(readme_top_level_names() - set(diffs.__all__))
    assert missing == [], f"README.rst uses diffs.<name> for names not in diffs.__all__: {missing}"


def test_every_top_level_name_the_readme_uses_exists():
    for name in sorted(readme_top_level_names()):
        assert hasattr(diffs, name), f"README.rst uses diffs.{name}, which does not exist"


@pytest.mark.parametrize("name", diffs.__all__)
def test_every_name_in_all_imports(name):
    namespace: dict[str, object] = {}
    exec(f"from diffs import {name}", namespace)  # the import statement users write
    assert namespace[name] is getattr(diffs, name)


def test_star_import_gives_exactly_all():
    namespace: dict[str, object] = {}
    exec("from diffs import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(diffs.__all__)


def test_all_has_no_duplicates_and_is_sorted():
    assert len(diffs.__all__) == len(set(diffs.__all__))
    assert diffs.__all__ == sorted(diffs.__all__)


def test_the_descriptor_for_type_checkers_is_public():
    # The README declares `diffs: ClassVar[DiffModelDescriptor[...]]` on models.
    assert "DiffModelDescriptor" in diffs.__all__
    assert diffs.DiffModelDescriptor is DiffModelDescriptor


def test_removed_names_say_what_replaced_them():
    for name in sorted(REMOVED):
        with pytest.raises(AttributeError, match="removed"):
            getattr(diffs, name)


def test_every_from_import_in_the_readme_imports():
    for module_name, *groups in _FROM_SUBMODULE.findall(readme()):
        module = importlib.import_module(module_name)
        for name in names_in(*groups):
            assert hasattr(module, name), f"README.rst: from {module_name} import {name}"

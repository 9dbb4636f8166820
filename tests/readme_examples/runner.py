"""Execute the code examples of a reStructuredText document, in order, as one session.

``python -m tests.readme_examples.runner README.rst`` runs every ``python`` and
``pycon`` code block of the document in one namespace, as a reader pasting them into
one shell would: ``python`` blocks are executed, ``pycon`` blocks are doctests whose
output must match what is shown (``...`` matches anything; whitespace is normalised).
Blocks that define models are executed as the ``polls.models`` module, and their tables
are created. A block that assigns ``DIFFS_SETTINGS`` is checked with django-diffs'
system checks: every settings example must be valid. An rst comment of the form
``.. executed before the next example: python`` holds setup a reader does not need to
see (it is not rendered). Prints a report; exits 1 when any example fails.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import re
import sys
import textwrap
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DIRECTIVE = re.compile(
    r"^(?P<indent> *)\.\. (?:code-block:: (?P<lang>[\w-]+)"
    r"|(?P<hidden>executed before the next example): python)\s*$"
)
EXECUTED = {"python", "pycon"}


@dataclass
class Block:
    lang: str
    line: int  # 1-based line of the first line of code
    source: str


def blocks(text: str) -> list[Block]:
    """The code blocks of an rst text, with the line each starts on."""
    lines = text.splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = DIRECTIVE.match(lines[i])
        i += 1
        if not match:
            continue
        indent = len(match["indent"])
        lang = "python" if match["hidden"] else match["lang"]
        body: list[str] = []
        start = i
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
            body.append(lines[i])
            i += 1
        while body and not body[0].strip():
            body.pop(0)
            start += 1
        found.append(Block(lang, start + 1, textwrap.dedent("\n".join(body)).strip("\n") + "\n"))
    return found


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _setup() -> None:
    sys.path.insert(0, str(HERE))
    import os

    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.readme_examples.settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.db.models.signals import class_prepared

    class_prepared.connect(_create_table)


def _create_table(sender: type[Any], **kwargs: Any) -> None:
    """A model an example defines gets its table at once, as ``migrate`` would give it."""
    # A many-to-many field's own through table is created with its model's.
    if sender._meta.app_label != "polls" or sender._meta.proxy or sender._meta.auto_created:
        return
    # Once the model is registered: its relations (a through table's foreign key to
    # it) are resolved only then.
    sender._meta.apps.lazy_model_operation(
        _create_now, (sender._meta.app_label, sender._meta.model_name)
    )


def _create_now(model: type[Any]) -> None:
    from django.db import connection

    if model._meta.db_table not in connection.introspection.table_names():
        with connection.schema_editor() as editor:
            editor.create_model(model)


def _check_settings(value: object) -> list[str]:
    """django-diffs' system-check errors and warnings for ``DIFFS_SETTINGS = value``."""
    from django.test import override_settings

    from diffs.checks import check_settings

    with override_settings(DIFFS_SETTINGS=value):
        return [f"{m.id}: {m.msg}" for m in check_settings()]


def _run_python(block: Block, namespace: dict[str, Any], name: str) -> str | None:
    before = namespace.get("DIFFS_SETTINGS")
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(block.source, f"{name}:{block.line}", "exec"), namespace)
    except Exception:
        return printed.getvalue() + traceback.format_exc()
    settings = namespace.get("DIFFS_SETTINGS")
    if settings is not before:
        problems = _check_settings(settings)
        if problems:
            return "DIFFS_SETTINGS fails the system checks:\n" + "\n".join(problems)
    return None


def _run_pycon(block: Block, namespace: dict[str, Any], name: str) -> str | None:
    test = doctest.DocTestParser().get_doctest(block.source, namespace, name, name, block.line - 1)
    out: list[str] = []
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    result = runner.run(test, out=out.append, clear_globs=False)
    namespace.update(test.globs)  # DocTest ran in a copy: keep what the session defined
    return "".join(out) if result.failed else None


def run(path: Path) -> int:
    """Run the examples of ``path``; returns the number that failed."""
    _setup()
    namespace: dict[str, Any] = {"__name__": "polls.models"}
    failed = 0
    executed = 0
    for block in blocks(path.read_text(encoding="utf-8")):
        if block.lang not in EXECUTED:
            continue
        executed += 1
        with warnings.catch_warnings():
            # A later example redefines a model an earlier one defined, as a reader
            # editing models.py would; Django warns about the reload.
            warnings.filterwarnings("ignore", "Model 'polls.", RuntimeWarning)
            run_block = _run_python if block.lang == "python" else _run_pycon
            problem = run_block(block, namespace, path.name)
        if problem:
            failed += 1
            print(f"--- {path.name}, line {block.line} ({block.lang}):\n{problem}")
    print(f"{path.name}: {executed} example(s) executed, {failed} failed")
    return failed


if __name__ == "__main__":
    sys.exit(1 if run(Path(sys.argv[1])) else 0)

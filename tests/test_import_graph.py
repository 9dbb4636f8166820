"""The modules of ``diffs/`` import each other without a cycle, at every level.

Imports inside functions count too (a cycle held open by a function-level import is
still a cycle); imports under ``if TYPE_CHECKING:`` do not, since they never run. An
import inside a function is allowed only with a reason written above it
(``# Imported here: ...``), e.g. an optional dependency or a Django model that cannot
be imported before the app registry is ready.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "diffs"
REASON = "Imported here:"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {
    module_name(path): path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts
}


def type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imported_modules(name: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The ``diffs`` modules an import statement loads (``from diffs import x`` loads
    ``diffs.x`` when x is a module, else ``diffs`` itself)."""
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
            parent = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parent, *([node.module] if node.module else [])])
        candidates = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
            for alias in node.names
        ]
    found = []
    for candidate in candidates:
        while candidate and candidate not in MODULES:
            candidate = candidate.rpartition(".")[0]
        if candidate and candidate != name:
            found.append(candidate)
    return found


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = type_checking_lines(tree)
        graph[name] = {
            target
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in skipped
            for target in imported_modules(name, node)
        }
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_modules_of_diffs_import_each_other_without_a_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_import_inside_a_function_says_why():
    unexplained = []
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                # The reason: a comment on the import's line or in the comment lines
                # (or other imports) right above it.
                above = lines[function.lineno : node.lineno]
                block = []
                for line in reversed(above):
                    stripped = line.strip()
                    if not stripped.startswith(("#", "from ", "import ")):
                        break
                    block.append(stripped)
                if not any(REASON in line for line in block):
                    unexplained.append(f"{name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not unexplained, "imports inside functions without '# Imported here: why':\n" + (
        "\n".join(unexplained)
    )


def test_settings_import_no_connection_code():
    assert import_graph()["diffs.settings"] <= {"diffs.exceptions"}


#: The modules that turn a change into a diff (the write path before delivery).
CAPTURE = {
    "diffs.recording",
    "diffs.bulk",
    "diffs.tracking",
    "diffs.snapshot",
    "diffs.expressions",
    "diffs.payload",
    "diffs.m2m",
    "diffs.context",
}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_delivery_is_reached_only_through_its_door():
    graph = import_graph()
    inside = [
        f"{name} imports {target}"
        for name, targets in graph.items()
        if not name.startswith("diffs.delivery")
        for target in targets
        if target.startswith("diffs.delivery.")
    ]
    assert not inside, "imports of delivery's internals:\n" + "\n".join(inside)


def test_delivery_never_imports_capture():
    graph = import_graph()
    delivery = [name for name in graph if name.split(".")[:2] == ["diffs", "delivery"]]
    assert len(delivery) > 5
    for name in delivery:
        assert not reachable(graph, name) & CAPTURE, f"{name} reaches capture"


def test_the_capture_list_names_modules_that_exist():
    assert set(MODULES) >= CAPTURE

"""Flows read like their diagrams: every module in flows/ is short, every flow a short list of named steps, and none
of them opens LanceDB or Lance (only tasks/store/ does, behind tasks/store/interface.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FLOWS = Path(__file__).resolve().parent.parent / "flows"
MODULES = sorted(FLOWS.rglob("*.py"))
MAX_MODULE_LINES = 250
MAX_FLOW_LINES = 40  # from the `def` line to the end of the body, docstring included


def module_id(path: Path) -> str:
    return str(path.relative_to(FLOWS.parent))


def is_flow(decorator: ast.expr) -> bool:
    """`@flow`, `@flow(...)`, `@prefect.flow` or `@prefect.flow(...)`."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Name) and target.id == "flow") or (
        isinstance(target, ast.Attribute) and target.attr == "flow"
    )


def flow_functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(map(is_flow, node.decorator_list))
    ]


def lancedb_uses(tree: ast.Module) -> list[str]:
    """`import lancedb`, `import lance`, `from lancedb... import`, `from lance... import` and `.to_lance(` calls."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in STORES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in STORES:
            found.append(f"line {node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Attribute) and node.attr == "to_lance":
            found.append(f"line {node.lineno}: .to_lance(")
    return found


STORES = {"lancedb", "lance"}


def test_the_shape_checks_see_what_they_look_for() -> None:
    tree = ast.parse(
        "import lancedb\nfrom lance.fragment import write_fragments\nimport prefect\n"
        "@prefect.flow(name='x')\ndef a():\n    t.to_lance()\n\n@flow\ndef b():\n    '''doc'''\n    return 1\n"
        "def c():\n    pass\n"
    )
    assert [(f.name, f.lineno, f.end_lineno) for f in flow_functions(tree)] == [("a", 5, 6), ("b", 9, 11)]
    assert lancedb_uses(tree) == [
        "line 1: import lancedb",
        "line 2: from lance.fragment import",
        "line 6: .to_lance(",
    ]


def test_there_are_flows_to_check() -> None:
    names = {f.name for path in MODULES for f in flow_functions(ast.parse(path.read_text()))}
    assert {"ingest", "evaluate", "promote", "pipeline", "monitor", "maintain", "remove_source", "golden"} <= names


@pytest.mark.parametrize("path", MODULES, ids=module_id)
def test_module_is_short(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module_id(path)} has {lines} lines (at most {MAX_MODULE_LINES})"


@pytest.mark.parametrize("path", MODULES, ids=module_id)
def test_each_flow_is_a_short_list_of_steps(path: Path) -> None:
    long = {
        f.name: f.end_lineno - f.lineno + 1
        for f in flow_functions(ast.parse(path.read_text()))
        if f.end_lineno is not None and f.end_lineno - f.lineno + 1 > MAX_FLOW_LINES
    }
    assert not long, f"{module_id(path)}: flows over {MAX_FLOW_LINES} lines: {long}"


@pytest.mark.parametrize("path", MODULES, ids=module_id)
def test_no_flow_module_opens_lancedb_or_lance(path: Path) -> None:
    found = lancedb_uses(ast.parse(path.read_text()))
    assert not found, f"{module_id(path)} goes around the storage seam (tasks/store/interface.py): {found}"

"""The import graph of the packages: no module imports, directly or through others, a module that imports it back.

Circles hide which stage owns what (two were broken in issue 25: evaluations.beir ↔ evaluations.golden and
tasks.store.lance_reads ↔ tasks.store.lancedb_store). The stage order itself is `lint-imports` (make lint)."""

from __future__ import annotations

import grimp
import pytest


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("tasks", "evaluations", "flows", cache_dir=None)


def circles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """One chain per direct import a → b that b leads back from (b … → a), each circle once."""
    found: dict[frozenset[str], tuple[str, ...]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported == importer or not imported.startswith(("tasks", "evaluations", "flows")):
                continue
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                found.setdefault(frozenset(back), (importer, *back))
    return sorted(found.values())


def test_no_module_imports_itself_round_a_circle(graph: grimp.ImportGraph) -> None:
    assert circles(graph) == []


def test_a_planted_circle_is_found(graph: grimp.ImportGraph) -> None:
    graph.add_import(importer="tasks.settings", imported="tasks.schemas")
    graph.add_import(importer="tasks.schemas", imported="tasks.settings")
    assert ("tasks.schemas", "tasks.settings", "tasks.schemas") in circles(graph) or (
        "tasks.settings",
        "tasks.schemas",
        "tasks.settings",
    ) in circles(graph)

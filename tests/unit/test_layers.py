"""The import graph: no cycles anywhere in the project, and the ground floor imports nothing of it.

The layer contract itself is import-linter's (``make lint``, ``[tool.importlinter]`` in
pyproject.toml); this checks what a layers contract cannot: cycles inside one package.
"""

from __future__ import annotations

import grimp

PACKAGES = (
    "igflow", "dev", "replay", "flows", "operators", "sinks", "sources", "api", "registry",
    "tenancy", "psi", "core",
)  # fmt: skip


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself
    (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle_and_only_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert sorted(_cycles(edges)) == [["a", "b", "c"], ["e"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_project_has_no_import_cycle() -> None:
    graph = _graph()
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert _cycles(edges) == []


def test_the_ground_floor_imports_nothing_of_the_project() -> None:
    graph = _graph()
    above = [p for p in PACKAGES if p != "core"]
    arrows = [
        (module, imported)
        for module in graph.modules
        if module.split(".")[0] == "core"
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.split(".")[0] in above
    ]
    assert arrows == []

"""The shape of the package, checked: no import cycles (lazy imports count, ``TYPE_CHECKING`` blocks do not),
the stages import only upstream stages (``lint-imports`` checks the same contract in CI), and the top of
``evalkit/`` stays small so a newcomer finds things by folder names."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

import evalkit

PKG = Path(evalkit.__file__).parent


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("evalkit", exclude_type_checking_imports=True)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    adj = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in adj:
        if root in index:
            continue
        work = [(root, iter(adj[root]))]
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
                    work.append((child, iter(adj[child])))
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
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_known_cycle():
    """The check could fail: a two-module cycle built in memory is found."""
    g = grimp.ImportGraph()
    for m in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        g.add_module(m)
    g.add_import(importer="pkg.a", imported="pkg.b")
    g.add_import(importer="pkg.b", imported="pkg.a")
    g.add_import(importer="pkg.c", imported="pkg.a")
    assert _cycles(g) == [["pkg.a", "pkg.b"]]


def test_no_import_cycles(graph):
    cycles = _cycles(graph)
    assert not cycles, "import cycles (lazy imports included):\n" + "\n".join(" ↔ ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("evalkit.store", "evalkit.scoring"),
        ("evalkit.store", "evalkit.engine"),
        ("evalkit.decide", "evalkit.report"),
        ("evalkit.engine", "evalkit.scoring"),
        ("evalkit.providers", "evalkit.engine"),
        ("evalkit.catalog", "evalkit.engine"),
    ],
)
def test_upstream_never_imports_downstream(graph, lower, higher):
    chain = graph.find_shortest_chain(importer=lower, imported=higher, as_packages=True)
    assert chain is None, f"{lower} reaches {higher}: {' -> '.join(chain or ())}"


def test_the_core_never_imports_the_cli(graph):
    for module in sorted(graph.modules):
        if module.split(".")[:2] in (["evalkit", "cli"], ["evalkit", "__main__"]):
            continue
        assert "evalkit.cli" not in graph.find_modules_directly_imported_by(module), module


def test_few_loose_modules_at_the_top():
    loose = sorted(p.name for p in PKG.glob("*.py"))
    assert len(loose) <= 12, loose

"""The layer contract: every import inside ``certify`` points down (or sideways within a layer).

Layers, lowest first; a module belongs to the first layer whose prefix matches it.  Imports
inside functions count too (a lazy import is still a dependency).  Besides the order, engines
never import each other (only the contract in ``engines.base``), and ``bab`` and ``fuzz``
(search machinery the engines use) never import ``engines``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "certify"

#: Lowest first.  A module's layer is the first entry with a matching prefix.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("certify", "certify.errors", "certify.budget", "certify.options"),
    ("certify.network", "certify.verdict", "certify.spec", "certify.proof"),
    ("certify.relax", "certify.problem"),
    ("certify.bounds", "certify.spec_matrix", "certify.io"),
    ("certify.numeric", "certify.encode", "certify.replay", "certify.instance", "certify.falsify",
     "certify.augment"),
    ("certify.linprog", "certify.lower"),
    ("certify.bab", "certify.fuzz"),
    ("certify.engines",),
    ("certify.portfolio",),
    ("certify.api", "certify.suite", "certify.train", "certify.report", "certify.proof.confirm"),
    ("certify.commands", "certify.cli"),
)


def layer_of(module: str) -> int:
    """The layer index of ``module`` (longest matching prefix wins)."""
    best, length = -1, -1
    for k, prefixes in enumerate(LAYERS):
        for p in prefixes:
            inside = module == p or (p != "certify" and module.startswith(p + "."))  # the root: itself only
            if inside and len(p) > length:
                best, length = k, len(p)
    if best < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """``(imported certify module, line)`` for every import in the file, nested ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("certify"):
                out.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("certify")]
    return out


def violations(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Every import of ``graph`` (module -> imports) that breaks the contract, as a message."""
    bad = []
    for module, targets in graph.items():
        for target, line in targets:
            if target == module:
                continue
            if layer_of(target) > layer_of(module):
                bad.append(f"{module}:{line} imports {target}, a higher layer")
            if module.startswith("certify.engines.") and target.startswith("certify.engines.") and \
                    target not in ("certify.engines.base", "certify.engines.registry") and \
                    module != "certify.engines.registry":
                bad.append(f"{module}:{line} imports another engine, {target}")
    return bad


def certify_graph() -> dict[str, list[tuple[str, int]]]:
    return {module_name(p): imports(p) for p in sorted(ROOT.rglob("*.py"))}


def test_every_import_points_down() -> None:
    assert violations(certify_graph()) == []


@pytest.mark.parametrize(("module", "target"), [
    ("certify.bounds", "certify.engines.bound"),  # core reaching up into an engine
    ("certify.bab.neuron_split", "certify.engines.fuzz"),  # search machinery using an engine
    ("certify.fuzz.batch", "certify.engines.base"),
    ("certify.engines.smt", "certify.engines.milp"),  # one engine using another
])
def test_a_planted_upward_import_is_caught(module: str, target: str) -> None:
    graph = certify_graph()
    graph[module] = [*graph[module], (target, 1)]
    assert violations(graph), f"{module} -> {target} was not reported"


def test_every_module_has_a_layer() -> None:
    for module in certify_graph():
        layer_of(module)

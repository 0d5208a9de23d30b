"""The layers of docs/architecture.md, checked on the source: no import cycles, no upward imports.

Every import counts, wherever it is written (module level, inside a function, under
``TYPE_CHECKING``): a lazy or type-only import still ties the two modules' designs together. The
graph is read with ``ast`` from the files, so nothing is imported to build it.

A new top-level module or package must be given a layer in :data:`LAYERS` (and in
docs/architecture.md) before this test passes.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "saerad"

# Lowest first. A module may import its own layer and the layers below it, never one above.
# The most specific prefix wins (saerad.eval.evaluate is an application, the rest of saerad.eval is not).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("saerad", "saerad.errors", "saerad.fileio", "saerad.devices", "saerad.llm")),
    ("inputs", ("saerad.imaging", "saerad.radtext")),
    ("datasets", ("saerad.datasets",)),
    ("encoders", ("saerad.encoders",)),
    ("sae", ("saerad.sae", "saerad.ood")),
    ("dictionary", ("saerad.features",)),
    ("bundle", ("saerad.bundle",)),
    ("report", ("saerad.report",)),
    ("localisation", ("saerad.heatmaps", "saerad.diffusion", "saerad.localize")),
    ("evaluation", ("saerad.eval",)),
    ("pipeline", ("saerad.pipeline",)),
    ("applications", ("saerad.build", "saerad.stages", "saerad.eval.evaluate", "saerad.atlas", "saerad.pacs")),
    ("service", ("saerad.service",)),
    ("cli", ("saerad.cli",)),
]
FACADES = ("saerad.pipeline", "saerad.build", "saerad.service", "saerad.cli")

# Cycles another change is removing. Each entry must still be a cycle: delete it here when it is gone.
KNOWN_CYCLES: list[frozenset[str]] = []

# Runtime dependencies used without an import: decoder plugins pydicom finds by itself, and the
# form parser FastAPI loads for multipart bodies.
IMPORTED_BY_OTHERS = {"pylibjpeg", "pylibjpeg-openjpeg", "python-multipart"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """saerad modules that ``name`` imports; ``from pkg import sub`` counts as importing ``pkg.sub``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer index)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + ".") and prefix != "saerad":
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index)
    return None if best is None else best[1]


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_lazy_and_type_only_imports():
    graph = _graph()
    assert "saerad.encoders.hf" in graph["saerad.encoders"]  # inside load_encoder()
    assert "saerad.pipeline" in graph["saerad.service.tasks"]  # under TYPE_CHECKING
    assert "saerad.radtext.phrases" in graph["saerad.radtext.labeler"]  # from saerad.radtext import phrases
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_no_import_cycles():
    cycles = _cycles(_graph())
    unexpected = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert not unexpected, f"import cycles: {unexpected}"
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in cycles]
    assert not gone, f"no longer cycles, remove them from KNOWN_CYCLES: {gone}"


def test_every_module_has_a_layer():
    missing = sorted(m for m in _modules() if _layer(m) is None)
    assert not missing, f"give these a layer in LAYERS and docs/architecture.md: {missing}"


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{m} ({LAYERS[_layer(m)][0]}) imports {dep} ({LAYERS[_layer(dep)][0]})"
        for m, deps in _graph().items()
        for dep in sorted(deps)
        if None not in (_layer(m), _layer(dep)) and _layer(dep) > _layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_nothing_below_the_facades_imports_them():
    lowest_facade = min(_layer(f) for f in FACADES)
    offenders = [
        f"{m} imports {dep}"
        for m, deps in _graph().items()
        if _layer(m) is not None and _layer(m) < lowest_facade
        for dep in deps
        if any(dep == f or dep.startswith(f + ".") for f in FACADES)
    ]
    assert not offenders, offenders


def test_every_runtime_dependency_is_imported():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    names = {_normalized(_distribution(requirement)) for requirement in declared}
    providers = importlib.metadata.packages_distributions()  # top-level import name -> distributions
    imported = {top for deps in _top_level_imports().values() for top in deps}
    used = {_normalized(dist) for top in imported for dist in providers.get(top, ())}
    unused = sorted(names - used - {_normalized(n) for n in IMPORTED_BY_OTHERS})
    assert not unused, f"declared in pyproject.toml but never imported by saerad: {unused}"


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()  # PEP 503


def _distribution(requirement: str) -> str:
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop)[0]
    return requirement.strip()


def _top_level_imports() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, path in _modules().items():
        tops: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                tops.add(node.module.split(".")[0])
        out[name] = tops
    return out

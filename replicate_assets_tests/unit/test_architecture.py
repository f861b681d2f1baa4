"""The layout keeps its promises (ARCHITECTURE.md): what each layer may import, no cycles, small modules."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "replicate_assets"
# Layers that never import Dagster, the CLI or the Dagster definitions.
LOWER = (
    "replicate_assets.replicate",
    "replicate_assets.db",
    "replicate_assets.pipeline",
    "replicate_assets.urls",
    "replicate_assets.chain",
    "replicate_assets.settings",
    "replicate_assets.similarity",
    "replicate_assets.api",
)
FORBIDDEN_BELOW = (
    "dagster",
    "replicate_assets.defs",
    "replicate_assets.cli",
    "replicate_assets.definitions",
    "replicate_assets.testing",
)


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Modules `path` imports (at module level only, outside TYPE_CHECKING, when top_level_only)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_lower_layers_never_import_dagster_the_cli_or_the_test_tools():
    offenders = []
    for name, path in modules().items():
        if name.startswith(LOWER):
            bad = [i for i in imports(path, top_level_only=False) if i.startswith(FORBIDDEN_BELOW)]
            offenders += [f"{name} imports {b}" for b in bad]
    assert offenders == []


def test_the_pipeline_never_imports_the_test_tools():
    found = modules()
    offenders = [
        f"{name} imports {i}"
        for name, path in found.items()
        if not name.startswith(("replicate_assets.testing", "replicate_assets.cli"))
        for i in imports(path, top_level_only=False)
        if i.startswith("replicate_assets.testing")
    ]
    assert offenders == []


def cycles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of a module graph (depth-first search)."""
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(trail[trail.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def test_the_cycle_finder_finds_cycles():
    assert cycles_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles_in({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = modules()
    graph = defaultdict(set)
    for name, path in found.items():
        for target in imports(path, top_level_only=True):
            while target and target not in found:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    assert len(graph) > 20  # the graph was read
    assert cycles_in(graph) == []


@pytest.mark.parametrize("limit_module, limit_class", [(400, 200)])
def test_no_module_over_400_lines_no_class_over_200(limit_module, limit_class):
    big = []
    for name, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > limit_module:
            big.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > limit_class:
                big.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert big == []

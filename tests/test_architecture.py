"""The package's shape: no import cycles (imports inside functions count), and every import points down the pipeline."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "xling"

# The pipeline's stages, lowest first; a module may import its own stage or a lower one. `api` is the public
# API (xling.Config, xling.train, ...) over all of them; the command line is a thin layer over it.
STAGES = ("base", "data", "model", "train", "analysis", "study", "report", "api", "cli")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("xling",) + path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of xling it imports, anywhere in its code (ast, so function-level imports count)."""
    modules = _modules()
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            # `from .x import f` lands in x; `from . import a, b` in a and b (not in the package itself)
            targets = {_deepest(name, modules) for name in names}
            graph[module] |= {t for t in targets if t and t not in (module, "xling")}
    return graph


def _deepest(name: str, modules) -> str:
    """The deepest module of xling that a dotted name lands in ("" for none)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def stage(module: str) -> str:
    if module == "xling.__main__":  # `python -m xling` is the command line
        return "cli"
    if module == "xling":  # the package re-exports the public API (lazily: `import xling` loads none of it)
        return "api"
    part = module.split(".")[1] if "." in module else "base"
    return part if part in STAGES else "base"


@pytest.mark.parametrize("module", ["xling", "xling.api", "xling.cli.app", "xling.study.workers", "xling.study.spec",
                                    "xling.config", "xling.train.rundir", "xling.study.state"])
def test_modules_that_must_start_without_torch(module):
    """The CLI starts fast (help, study list) and study workers set OpenMP up before torch loads."""
    code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "xling.train.evaluate" in graph["xling.api.runs"]  # imported inside a method
    assert "xling.train.distributed" in graph["xling.cli.run_commands"]  # imported inside a command function
    assert "xling.data.corpora" in graph["xling.data.mixture"]  # `from .corpora import ...`


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_point_down_the_pipeline():
    rank = {s: i for i, s in enumerate(STAGES)}
    upward = [f"{m} -> {d}" for m, deps in import_graph().items() for d in deps if rank[stage(d)] > rank[stage(m)]]
    assert not upward, "imports against the pipeline order " + " < ".join(STAGES) + ": " + "; ".join(upward)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_readable_in_one_sitting(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 500


@pytest.mark.parametrize("path", sorted((PACKAGE.parents[1] / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_import_what_they_use(path):
    """Benchmarks live outside the package and its tests: at least their imports must keep up with it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # runs nothing: they start under __main__

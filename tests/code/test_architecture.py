"""The package's shape (docs/architecture.md): the dependency direction, no import cycles, short functions.

The direction is import-linter's contracts in pyproject.toml, run as `lint-imports` on this checkout;
the cycles are found with grimp (the import graph import-linter builds on), module by module.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
import yaml

from catsdogs.core.paths import PROJECT_ROOT

SRC = PROJECT_ROOT / "src"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_FUNCTION_LINES = 60


def _lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the project's contracts, on the ``catsdogs`` package under ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(PROJECT_ROOT / "pyproject.toml"), "--no-cache"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contracts_are_kept():
    result = _lint_imports(SRC)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of src/catsdogs to break on purpose."""
    shutil.copytree(SRC / "catsdogs", tmp_path / "catsdogs", ignore=shutil.ignore_patterns("__pycache__", "static"))
    return tmp_path


def _append(path: Path, code: str) -> None:
    path.write_text(path.read_text() + "\n\n" + code + "\n")


@pytest.mark.parametrize(
    ("module", "code", "contract", "chain"),
    [
        # a lazy import counts: the serving image has no torch whenever it would run
        (
            "inference/predictor.py",
            "def _late():\n    import torch  # noqa\n",
            "Serving and inference run without torch, training or release code",
            "catsdogs.inference.predictor -> torch",
        ),
        (
            "serve/state.py",
            "def _late():\n    from catsdogs.release import validate  # noqa\n",
            "Serving and inference run without torch, training or release code",
            "catsdogs.serve.state -> catsdogs.release.validate",
        ),
        (
            "training/train.py",
            "def _late():\n    from catsdogs.release import evaluate  # noqa\n",
            "Stages import only the stages below them (siblings: neither way)",
            "catsdogs.training.train -> catsdogs.release.evaluate",
        ),
        (
            "release/calibrate.py",
            "def _late():\n    from catsdogs.release import evaluate  # noqa\n",
            "No import cycles between sibling modules or packages, at any depth",
            "No cycles are allowed in catsdogs.release.",
        ),
    ],
)
def test_a_broken_contract_fails_the_check(package_copy, module, code, contract, chain):
    _append(package_copy / "catsdogs" / module, code)
    result = _lint_imports(package_copy)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout
    assert chain in result.stdout


def _graph() -> grimp.ImportGraph:
    # No on-disk cache (.grimp_cache): a cached graph has been seen to miss a fresh edit.
    return grimp.build_graph("catsdogs", cache_dir=None)


def import_cycles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """Every set of modules under ``package`` that import each other in a circle (Tarjan's strongly
    connected components of the direct imports), each sorted; a module importing itself is one too."""
    members = {package} | graph.find_descendants(package)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def edges(module: str) -> list[str]:
        return sorted(graph.find_modules_directly_imported_by(module) & members)

    def visit(module: str) -> None:  # recursion depth is bounded by the package's ~70 modules
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in edges(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while (top := stack.pop()) != module:
                on_stack.discard(top)
                component.append(top)
            on_stack.discard(module)
            component.append(module)
            if len(component) > 1 or graph.direct_import_exists(importer=module, imported=module):
                cycles.append(sorted(component))

    for module in sorted(members):
        if module not in index:
            visit(module)
    return sorted(cycles)


def test_no_module_imports_itself_through_others():
    graph = _graph()
    assert import_cycles(graph, "catsdogs") == []


def test_no_cycles_between_sibling_packages_or_modules():
    """At every level (catsdogs.release <-> catsdogs.training, calibrate <-> evaluate): grimp would have
    to cut these imports to leave the siblings acyclic; none may be needed."""
    graph = _graph()
    packages = sorted(m for m in graph.modules if graph.find_children(m))
    assert "catsdogs.release" in packages and "catsdogs.serve.routes" in packages
    assert {p: graph.nominate_cycle_breakers(p) for p in packages} == {p: set() for p in packages}


def test_the_cycle_finder_finds_cycles():
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    graph.add_import(importer="pkg.d", imported="pkg.a")
    assert import_cycles(graph, "pkg") == [["pkg.a", "pkg.b", "pkg.c"]]
    graph.remove_import(importer="pkg.c", imported="pkg.a")
    assert import_cycles(graph, "pkg") == []


# The module each DVC stage's command runs (cli/ only wires options to it).
STAGE_MODULES = {
    "prepare": "catsdogs.data.prepare",
    "train": "catsdogs.training.train",
    "calibrate": "catsdogs.release.calibrate",
    "evaluate": "catsdogs.release.evaluate",
    "export": "catsdogs.release.export",
    "robustness": "catsdogs.release.robustness",
    "model_card": "catsdogs.release.card",
    "distill": "catsdogs.release.distill",
    "teacher": "catsdogs.release.teacher",
}


def test_each_dvc_stage_depends_on_the_stage_folders_its_code_imports():
    """dvc.yaml lists src/catsdogs/<stage> folders; they must be exactly those the stage's module reaches
    (a missing one would leave outputs stale after a code change, an extra one retrains for nothing).
    The root package only gives ``__version__``, read from the installed metadata, not from its code."""
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGE_MODULES)
    graph = _graph()
    for stage, module in STAGE_MODULES.items():
        reached = graph.find_upstream_modules(module) | {module}
        folders = {f"src/catsdogs/{m.split('.')[1]}" for m in reached if m.count(".") >= 1}
        code_deps = {d for d in stages[stage]["deps"] if str(d).startswith("src/")}
        assert code_deps == folders, stage


def test_bytecode_is_no_part_of_a_stage_folder():
    dvc = Path(sys.executable).with_name("dvc")
    pyc = "src/catsdogs/training/__pycache__/train.cpython-311.pyc"
    args = [str(dvc), "check-ignore", pyc, "src/catsdogs/training/train.py"]
    result = subprocess.run(args, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == [pyc], result.stdout + result.stderr


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function or method longer than ``limit`` lines (def to last line)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_src_is_over_60_lines():
    assert long_functions(SRC) == []


def test_the_length_check_counts_a_long_function(tmp_path):
    def body(n: int) -> str:
        return "".join(f"    x{i} = {i}\n" for i in range(n))

    fits, too_long = f"def fits():\n{body(59)}", f"async def too_long():\n{body(60)}"  # 60 and 61 lines
    (tmp_path / "long.py").write_text(f"{fits}\n{too_long}")
    assert long_functions(tmp_path) == ["long.py:62 too_long (61 lines)"]

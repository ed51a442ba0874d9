"""The package's shape (docs/architecture.md): stage subpackages over a ground floor, imports only downwards.

The layers, lowest first: the ground floor (the modules directly in ``t2t_vit/``), ``data``, ``model``,
``ascend``, ``runtime``, ``job``. A module imports its own layer and those below it, never one above, so
``data/`` never imports ``runtime/`` or ``job/`` and ``ascend/`` never imports ``runtime/`` or ``job/``.
The checks read the source (imports at a module's top or inside a function alike); each is also run on a
small package written here with the fault in it, so a check that cannot fail fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO_ROOT

LAYERS = ("ground", "data", "model", "ascend", "runtime", "job")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(root: Path) -> dict[str, set[str]]:
    """Dotted module -> the package modules it imports (``from t2t_vit.x import y`` counts ``t2t_vit.x.y`` when
    that is a module, else ``t2t_vit.x``)."""
    modules = {module_name(root, path): path for path in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == root.name:
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    found.add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.split(".")[0] == root.name}
        graph[name] = found - {name}
    return graph


def layer_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "ground"


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((name, target) for name, targets in graph.items() for target in targets
                  if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(name)))


def cycles(graph: dict[str, set[str]]) -> list[str]:
    def reaches(start, target, seen):
        return any(step == target or (step not in seen and reaches(step, target, seen | {step}))
                   for step in graph.get(start, ()))

    return sorted(name for name in graph if reaches(name, name, {name}))


def long_functions(root: Path) -> list[tuple[str, str, int]]:
    def length(function) -> int:  # to the last line any part of it starts on (end_lineno needs Python 3.8)
        return max(getattr(node, "lineno", function.lineno) for node in ast.walk(function)) - function.lineno + 1

    return [(str(path.relative_to(root)), node.name, length(node)) for path in sorted(root.rglob("*.py"))
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and length(node) > MAX_FUNCTION_LINES]


def long_modules(root: Path) -> list[tuple[str, int]]:
    sizes = [(str(path.relative_to(root)), len(path.read_text().splitlines())) for path in sorted(root.rglob("*.py"))]
    return [(name, lines) for name, lines in sizes if lines > MAX_MODULE_LINES]


@pytest.fixture
def faulty_package(tmp_path) -> Path:
    """A package of the same shape with one import against the layers, one circle and one long function."""
    root = tmp_path / "t2t_vit"
    for folder in ("data", "runtime", "job"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "files.py").write_text("from t2t_vit.data import bins\n")  # the ground floor reaching up
    (root / "data" / "bins.py").write_text("def read():\n    from t2t_vit.runtime.runner import run\n")
    (root / "runtime" / "runner.py").write_text("from t2t_vit.data import bins\n\ndef run():\n" + "    pass\n" * 61)
    (root / "job" / "steps.py").write_text("from t2t_vit.runtime import runner\nfrom t2t_vit import files\n")
    return root


def test_the_checks_find_the_faults_they_look_for(faulty_package):
    graph = package_imports(faulty_package)
    assert graph["t2t_vit.job.steps"] == {"t2t_vit.runtime.runner", "t2t_vit.files"}
    assert upward_imports(graph) == [("t2t_vit.data.bins", "t2t_vit.runtime.runner"),
                                     ("t2t_vit.files", "t2t_vit.data.bins")]
    assert cycles(graph) == ["t2t_vit.data.bins", "t2t_vit.runtime.runner"]
    assert long_functions(faulty_package) == [("runtime/runner.py", "run", 62)]


def test_the_package_has_its_stage_subpackages():
    folders = sorted(path.parent.name for path in (REPO_ROOT / "t2t_vit").glob("*/__init__.py"))
    assert folders == sorted(LAYERS[1:])
    graph = package_imports(REPO_ROOT / "t2t_vit")
    assert {layer_of(name) for name in graph} == set(LAYERS)
    assert "t2t_vit.runtime.runner" in graph["t2t_vit.runtime.multidevice"]  # the graph is really read


def test_imports_go_only_downwards():
    assert upward_imports(package_imports(REPO_ROOT / "t2t_vit")) == []


def test_the_package_has_no_import_cycle():
    assert cycles(package_imports(REPO_ROOT / "t2t_vit")) == []


def test_package_functions_and_modules_stay_short():
    """Steps, not sagas (STYLE.md): no function of the package over 60 lines, no module over about 500."""
    assert long_functions(REPO_ROOT / "t2t_vit") == []
    assert long_modules(REPO_ROOT / "t2t_vit") == []

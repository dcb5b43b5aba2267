"""The layout keeps its promises: small modules and classes, no import cycles (imports
under TYPE_CHECKING and inside functions count), an engine with no Qt or napari import,
selection settings built in few places, and no argparse in the engine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "napari_slip"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 350


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module of the package that ``name`` imports, wherever the import is."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for candidate in (target, *(f"{target}.{a.name}" for a in node.names)):
                if candidate in MODULES and candidate != name:
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES and a.name != name}
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_module_over_500_lines():
    big = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: k for n, k in big.items() if k > MAX_MODULE_LINES} == {}


def test_no_class_over_350_lines():
    big = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    big[f"{name}.{node.name}"] = lines
    assert big == {}


def test_sizes_are_measured_as_ruff_lays_the_code_out():
    """No format-skip comment in the package, its tests, benchmarks or scripts: the line
    counts above are of the code as ``ruff format`` lays it out (CI checks the format),
    never of statements packed onto one line."""
    root = SRC.parents[1]
    marker = "fmt: " + "skip", "fmt: " + "off"
    packed = {
        f"{path.relative_to(root)}:{i}"
        for folder in ("src", "tests", "benchmarks", "scripts")
        for path in sorted((root / folder).rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if any(m in line for m in marker)
    }
    assert packed == set()


def _private_names_defined(tree: ast.AST) -> set[str]:
    """The private names a module defines: functions, classes, assigned attributes and
    variables starting with one underscore."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def private_reaches() -> list[str]:
    """Accesses ``obj._name`` to a private name another module of the package defines
    and this one does not (``self``, ``cls`` and ``super()`` are the object's own;
    third-party private names are not the package's to count)."""
    trees = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}
    defined = {name: _private_names_defined(tree) for name, tree in trees.items()}
    ours = set().union(*defined.values())
    found = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or node.attr not in ours:
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "super":
                continue
            if node.attr not in defined[name]:
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_reaches_into_another_modules_private_names():
    """Features use the engine's public handles (``segmenter.texts``,
    ``concept.step``), never another module's private attributes."""
    assert private_reaches() == []


def test_the_private_reach_finder_finds_one(monkeypatch, tmp_path):
    fake = tmp_path / "_reach_fixture.py"
    fake.write_text("def f(workspace):\n    return workspace._model_sets\n")
    monkeypatch.setitem(MODULES, "napari_slip._reach_fixture", fake)
    assert private_reaches() == ["napari_slip._reach_fixture:2: workspace._model_sets"]


def test_no_import_cycles():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert _cycles(graph) == []


#: The package's layers, lowest first: a module imports (at the top, inside a function
#: or under TYPE_CHECKING) only from its own layer or lower ones. The longest prefix
#: decides a module's layer.
LAYERS = (
    (
        "napari_slip._version",
        "napari_slip._compat",
        "napari_slip.core.errors",
        "napari_slip.core.params_base",
        "napari_slip.core.proposal_kinds",
        "napari_slip.core.params",
        "napari_slip.core.params_training",
        "napari_slip.core.axes",
        "napari_slip.core.shape",
        "napari_slip.core.object_rows",
        "napari_slip.core.measure",
        "napari_slip.core.io",
        "napari_slip.core.runtime",
    ),
    ("napari_slip.core.models",),  # model files, builders, the hub, autotune's probes
    ("napari_slip.core.concepts",),  # what a concept is: classes, examples, files
    ("napari_slip.core.config",),  # one run's settings, checked whole
    ("napari_slip.core.pipeline",),  # the engine
    ("napari_slip.core.edits", "napari_slip.core.training", "napari_slip.core.export"),
    ("napari_slip.core",),  # batches, and the package's lazy exports
    ("napari_slip",),  # the command line, the napari plugin, testing tools
)


def layer_of(name: str, layers: tuple = LAYERS) -> int:
    best, length = len(layers), -1
    for i, prefixes in enumerate(layers):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > length:
                best, length = i, len(prefix)
    return best


def climbing_imports(layers: tuple = LAYERS) -> list[str]:
    """``module -> imported`` for every import of a higher layer's module."""
    out = []
    for name, path in MODULES.items():
        for target in sorted(_imports(name, path)):
            if layer_of(target, layers) > layer_of(name, layers):
                out.append(f"{name} -> {target}")
    return out


def _subpackage(name: str) -> str:
    """A module's package (a module of ``napari_slip.core`` itself is its own node)."""
    if name.startswith("napari_slip.core.") and name.count(".") >= 2:
        head = ".".join(name.split(".")[:3])
        if MODULES.get(head) is not None and MODULES[head].name == "__init__.py":
            return head
        return name
    return name


def test_no_import_climbs_a_layer():
    assert climbing_imports() == []


def test_the_layer_finder_finds_a_climb(monkeypatch, tmp_path):
    fake = tmp_path / "climb.py"
    fake.write_text("def f():\n    from .pipeline import run\n")
    monkeypatch.setitem(MODULES, "napari_slip.core.climb", fake)
    layers = ((*LAYERS[0], "napari_slip.core.climb"), *LAYERS[1:])
    assert climbing_imports(layers) == [
        "napari_slip.core.climb -> napari_slip.core.pipeline",
        "napari_slip.core.climb -> napari_slip.core.pipeline.run",
    ]


def test_no_import_loops_between_the_engines_packages():
    """models, runtime, concepts, pipeline, edits and training (and each module of
    ``core`` itself) import each other one way only, function-level imports included."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        if not name.startswith("napari_slip.core"):
            continue
        here = _subpackage(name)
        graph.setdefault(here, set())
        for target in _imports(name, path):
            there = _subpackage(target)
            if there != here and there.startswith("napari_slip.core"):
                graph[here].add(there)
                graph.setdefault(there, set())
    graph.pop("napari_slip.core", None)  # the lazy exports: above everything
    for node in graph.values():
        node.discard("napari_slip.core")
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("forbidden", ["qtpy", "napari", "magicgui", "PyQt6", "argparse"])
def test_the_engine_imports_no_gui_and_no_argparse(forbidden):
    offenders = []
    for name, path in MODULES.items():
        if not name.startswith("napari_slip.core"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n == forbidden or n.startswith(forbidden + ".") for n in names):
                offenders.append(name)
    assert offenders == []


def test_selection_settings_are_built_in_at_most_three_places():
    places = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = getattr(func, "id", getattr(func, "attr", None))
                args = [getattr(a, "id", None) for a in node.args]
                if (called == "SelectionParams" and (node.args or node.keywords)) or (
                    called == "from_args" and "SelectionParams" in args
                ):
                    places.append(name)
    assert len(places) <= 3, places

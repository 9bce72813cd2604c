"""The package's layers: no import circle among the modules of ``src/sifa`` and no import from a
lower layer to a higher one.

The modules are read with ``ast``, nothing is imported. Every import counts, wherever it is: at
the top, inside a function, under ``if TYPE_CHECKING:``. An import counts as a dependency on the
module it names (``from sifa.engine import resources`` on ``sifa.engine.resources``,
``from sifa.models import create_model`` on ``sifa.models``), not on the packages above it that
Python runs on the way.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# A module may import from its own layer or a lower one. A module's layer is that of its top
# package in sifa (sifa.engine.demo: sifa.engine's); the package itself and __main__ have their own.
LAYERS = {
    "sifa.files": 0,
    "sifa.ops": 1,
    "sifa.nn": 2,
    "sifa.data": 2,
    "sifa.models": 3,
    "sifa": 3,  # the package itself: sifa.create_model and friends, from models, nn and ops
    "sifa.engine": 4,
    "sifa.tools": 5,
    "sifa.deploy": 5,
    "sifa.benchmarks": 5,
    "sifa.serve": 6,
    "sifa.cli": 7,
    "sifa.__main__": 7,  # python -m sifa runs the CLI
}


# ---------------------------------------------------------------------------------------------
# Reading the imports


def module_files(src: Path) -> dict[str, Path]:
    """Every module of the ``sifa`` package under ``src``, by its dotted name."""
    modules = {}
    for path in sorted((src / "sifa").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def known_module(name: str, modules: set[str]) -> str | None:
    """``name`` if it is a module of ``modules``, else the closest package above it that is
    (an import of a name inside a module depends on that module); ``None`` outside them."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def from_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute name ``from BASE import ...`` refers to, relative forms resolved."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]  # each dot after the first: one up
    return ".".join([*package, node.module] if node.module else package)


def imported_modules(source: str, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``source`` (module ``module``) imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = from_base(node, module, is_package)
            # ``from package import submodule`` names the submodule; any other name, base itself.
            names = [f"{base}.{alias.name}" for alias in node.names]
            names = [name if name in modules else base for name in names]
        else:
            continue
        found.update(known_module(name, modules) for name in names)
    return found - {None, module}


def import_graph(src: Path) -> dict[str, set[str]]:
    """Each module of ``src/sifa`` -> the modules of it that it imports."""
    files = module_files(src)
    modules = set(files)
    return {
        module: imported_modules(
            path.read_text(encoding="utf-8"), module, path.name == "__init__.py", modules
        )
        for module, path in files.items()
    }


# ---------------------------------------------------------------------------------------------
# Circles and layers


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules that ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for following in graph.get(todo.pop(), ()):
            if following not in seen:
                seen.add(following)
                todo.append(following)
    return seen


def import_circles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The groups of modules that import each other, directly or through others (each group
    sorted; the strongly connected components with a cycle)."""
    reach = {module: reachable(graph, module) for module in graph}
    return sorted(
        {
            tuple(sorted(other for other in reach[module] if module in reach.get(other, ())))
            for module in graph
            if module in reach[module]
        }
    )


def shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str]:
    """The shortest chain of imports from ``start`` back to it: ``[start, ..., start]``."""
    came_from: dict[str, str | None] = {start: None}
    todo = deque([start])
    while todo:
        module = todo.popleft()
        for following in sorted(graph.get(module, ())):
            if following == start:
                chain = [module]
                while came_from[chain[-1]] is not None:
                    chain.append(came_from[chain[-1]])
                return [*reversed(chain), start]
            if following not in came_from:
                came_from[following] = module
                todo.append(following)
    return []


def layer_of(module: str) -> int | None:
    """The layer of ``module`` (:data:`LAYERS`); ``None`` if it has none."""
    if module in LAYERS:
        return LAYERS[module]
    return LAYERS.get(".".join(module.split(".")[:2]))


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module of a higher layer, as ``importer -> imported`` (modules without
    a layer left out: :func:`test_every_module_has_a_layer` names them)."""
    return [
        f"{module} -> {imported} (layer {layer_of(module)} imports layer {layer_of(imported)})"
        for module in sorted(graph)
        for imported in sorted(graph[module])
        if None not in (layer_of(module), layer_of(imported))
        and layer_of(imported) > layer_of(module)
    ]


def describe_circles(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{' <-> '.join(circle)}: {' -> '.join(shortest_cycle(graph, circle[0]))}"
        for circle in import_circles(graph)
    ]


# ---------------------------------------------------------------------------------------------
# The package


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(SRC)


def test_every_module_has_a_layer(graph):
    assert "sifa.engine.trainer" in graph  # the package was found
    assert [module for module in graph if layer_of(module) is None] == []


def test_no_import_circle(graph):
    circles = describe_circles(graph)
    assert not circles, "modules that import each other:\n" + "\n".join(circles)


def test_no_import_from_a_lower_layer_to_a_higher_one(graph):
    upward = upward_imports(graph)
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


# ---------------------------------------------------------------------------------------------
# The checks themselves

MODULES = {
    "sifa",
    "sifa.data",
    "sifa.data.presets",
    "sifa.data.transforms",
    "sifa.engine",
    "sifa.engine.predict",
    "sifa.tools",
    "sifa.tools.memory",
}


def test_every_form_of_import_is_read():
    source = """
from typing import TYPE_CHECKING

import numpy
from . import transforms
from .transforms import Compose
from ..engine import predict

if TYPE_CHECKING:
    from sifa.engine.predict import Predictor

def later():
    import sifa.tools.memory
    from sifa.tools import memory, not_a_module
"""
    expected = {"sifa.data.transforms", "sifa.engine.predict", "sifa.tools.memory", "sifa.tools"}
    assert imported_modules(source, "sifa.data.presets", False, MODULES) == expected
    # In a package's __init__, one dot is the package itself.
    in_init = "from . import presets\nfrom ..tools import x"
    expected = {"sifa.data.presets", "sifa.tools"}
    assert imported_modules(in_init, "sifa.data", True, MODULES) == expected


def test_circles_and_upward_imports_are_named():
    graph = {
        "sifa.data.transforms": {"sifa.data.rand_augment"},
        "sifa.data.rand_augment": {"sifa.data.transforms", "sifa.files"},
        "sifa.engine.a": {"sifa.engine.b"},
        "sifa.engine.b": {"sifa.engine.c", "sifa.tools.memory"},
        "sifa.engine.c": {"sifa.engine.a"},
        "sifa.files": set(),
        "sifa.tools.memory": set(),
    }
    assert describe_circles(graph) == [
        "sifa.data.rand_augment <-> sifa.data.transforms: "
        "sifa.data.rand_augment -> sifa.data.transforms -> sifa.data.rand_augment",
        "sifa.engine.a <-> sifa.engine.b <-> sifa.engine.c: "
        "sifa.engine.a -> sifa.engine.b -> sifa.engine.c -> sifa.engine.a",
    ]
    assert upward_imports(graph) == ["sifa.engine.b -> sifa.tools.memory (layer 4 imports layer 5)"]
    assert layer_of("sifa") == 3 and layer_of("sifa.models.complexity") == 3
    assert layer_of("sifa.__main__") == 7 and layer_of("sifa.nothing") is None

"""The folders are the architecture: each layer imports only from the layers below it.

Reads every module's imports with ``ast`` (those inside functions too: a lazy import is still a
dependency) and checks them against the layer order below, then that no modules import each
other in a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"qubus": ROOT / "shared" / "qubus", "qubus_services": ROOT / "services"}

#: Lowest first. A module belongs to the longest entry that prefixes its name; ``qubus.version``
#: and ``qubus.errors`` are the root that every layer uses; ``qubus`` itself (``qubus.connect``)
#: ``qubus.cirq`` and ``qubus.qiskit`` are the client's public faces, in its layer.
LAYERS = [
    "qubus",
    "qubus.errors",
    "qubus.bus",
    "qubus.circuits",
    "qubus.devices",
    "qubus.scheduling",
    "qubus.network",
    "qubus.client",
    "qubus_services",
    "qubus.dashboard",
    "qubus.cli",
]
ROOT_LAYER = {
    "qubus.version": 0,
    "qubus.errors": 0,
    "qubus": LAYERS.index("qubus.client"),
    "qubus.cirq": LAYERS.index("qubus.client"),
    "qubus.qiskit": LAYERS.index("qubus.client"),
}


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def layer_of(module: str) -> int:
    if module in ROOT_LAYER:
        return ROOT_LAYER[module]
    owners = [i for i, name in enumerate(LAYERS) if module == name or module.startswith(name + ".")]
    return max(owners, key=lambda i: len(LAYERS[i]))


def imports_of(module: str) -> set[str]:
    """The project's modules that ``module`` imports, wherever in the file it does."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return imports_in(path.read_text(), module, package)


def imports_in(source: str, module: str, package: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_has_a_layer() -> None:
    assert len(MODULES) > 60
    for module in MODULES:
        assert 0 <= layer_of(module) < len(LAYERS), module


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_come_from_the_same_layer_or_below(module: str) -> None:
    upward = {
        target: LAYERS[layer_of(target)]
        for target in GRAPH[module]
        if layer_of(target) > layer_of(module)
    }
    assert upward == {}, f"{module} ({LAYERS[layer_of(module)]}) imports from above: {upward}"


def test_no_import_cycles() -> None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module) :] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(GRAPH[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])


def test_the_reader_sees_every_form_of_import() -> None:
    source = """
import qubus.devices.compile
from qubus.cli import report
from . import codec
from ..circuits import simulate

def lazy():
    from qubus.network.links import Topology
"""
    assert imports_in(source, "qubus.bus.health", "qubus.bus") == {
        "qubus.devices.compile",
        "qubus.cli.report",
        "qubus.bus.codec",
        "qubus.circuits.simulate",
        "qubus.network.links",
    }
    assert layer_of("qubus.cli.report") > layer_of("qubus.bus.health")
    assert layer_of("qubus.network.splitplan") > layer_of("qubus.scheduling.scoring")

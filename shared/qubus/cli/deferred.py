"""Modules that the command line imports only when something first reads them.

``import cirq`` imports three plotting modules that no ``qubus`` command asks cirq to draw
with: ``matplotlib.pyplot`` (``cirq.linalg.decompositions``, ``cirq.vis``, ``cirq.experiments``),
``mpl_toolkits.mplot3d`` (``cirq.linalg.decompositions``) and ``mpl_toolkits.axes_grid1``
(``cirq.vis.heatmap``), which imports matplotlib's axes. Together about 0.5 s of the 2.1 s that
``qubus parse`` took (``python -X importtime``). ``main`` calls ``defer_imports`` before any
command runs; from then on each ``DEFERRED`` module is a stand-in in ``sys.modules`` until an
attribute of it is read (``plt.subplots``), which imports the real module. Code that draws
(``qubus.scheduling.frontier``, cirq's own plots) imports and uses them as usual.

``import nats`` imports ``aiohttp`` for a WebSocket transport that qubus does not use: 0.1 s
of every command that connects (``qubus status`` 0.48–0.52 s with it, 0.33–0.42 s without, on
the 2-core development machine at load 2.6–3.4). The dashboard, which serves with it, imports
and uses it as usual.

The standard library's ``importlib.util.LazyLoader`` does not serve here: on Python 3.11 an
``import`` statement reads the ``__spec__`` of a module found in ``sys.modules``, which makes a
lazily loaded module load at once, so cirq's ``import matplotlib.pyplot as plt`` would still
pay for it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

#: Modules that cirq imports at its import and reads only when it draws, and that nats-py
#: imports for a transport qubus does not use.
DEFERRED = ("matplotlib.pyplot", "mpl_toolkits.mplot3d", "mpl_toolkits.axes_grid1", "aiohttp")


class _Deferred(types.ModuleType):
    """Stands in ``sys.modules`` for a module not imported yet. The first read of an attribute
    it does not hold imports the real module and takes in its namespace, so references to the
    stand-in (``plt`` in cirq's modules) work as the module."""

    def __getattr__(self, attr: str) -> Any:
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        module = importlib.import_module(name)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


def defer(name: str) -> None:
    """Put a stand-in for module ``name`` in ``sys.modules`` unless it is imported already or
    not installed. A top-level parent package is not imported: ``import a.b as c`` and
    ``from a import b`` find ``a.b`` in ``sys.modules`` where ``a`` does not hold it yet."""
    if name in sys.modules:
        return
    parent = name.rpartition(".")[0]
    path = None
    if parent:
        parent_spec = importlib.util.find_spec(parent)  # imports nothing for a top-level parent
        if parent_spec is None:
            return
        path = parent_spec.submodule_search_locations
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None:
        return
    stand_in = _Deferred(name)
    stand_in.__spec__ = spec
    sys.modules[name] = stand_in


def defer_imports() -> None:
    """Defer every module of ``DEFERRED``."""
    for name in DEFERRED:
        defer(name)

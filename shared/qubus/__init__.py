"""qubus: schedule quantum circuits across a fleet of emulated, networked QPUs over NATS.

Three ways in from Python (``README.md``, "Python"):

- ``qubus.connect()``: the synchronous SDK (``qubus.client.sync``): ``submit`` returns a
  ``Job`` with ``result()``, ``status()`` and ``cancel()``.
- ``qubus.cirq.Sampler``: a ``cirq.Sampler`` that runs circuits on the stack.
- ``qubus.client.Client``: the asyncio client the other two are built on.

``import qubus`` alone imports nothing else: ``connect`` is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qubus.lazy import lazy_names
from qubus.version import __version__

if TYPE_CHECKING:
    from qubus.client.sync import connect

__all__ = ["__version__", "connect"]

__getattr__ = lazy_names(__name__, {"connect": "qubus.client.sync"})

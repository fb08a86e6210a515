"""The client SDK: submit circuits to a qubus stack and read their tasks back.

``Client`` (in ``qubus.client.aio``) is the asyncio client; ``qubus.client.sync`` (what
``qubus.connect()`` opens) runs it for synchronous code. ``SubmitRequest`` is what
``Client.submit`` takes and ``task_record`` turns a task's events into its result record.

The names below are loaded on first use (PEP 562), so that ``qubus.client.files`` (circuit
files as ``qubus parse`` reads them) does not import NATS and the asyncio client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qubus.lazy import lazy_names

if TYPE_CHECKING:
    from qubus.bus.messages import SubmitRequest
    from qubus.client.aio import Client, task_record

_HOMES = {
    "Client": "qubus.client.aio",
    "SubmitRequest": "qubus.bus.messages",
    "task_record": "qubus.client.aio",
}

__all__ = ["Client", "SubmitRequest", "task_record"]

__getattr__ = lazy_names(__name__, _HOMES)

"""The client SDK: submit circuits to a qubus stack and read their tasks back.

``Client`` (in ``qubus.client.aio``) is the asyncio client; ``qubus.client.sync`` (what
``qubus.connect()`` opens) runs it for synchronous code. ``SubmitRequest`` is what
``Client.submit`` takes and ``task_record`` turns a task's events into its result record.
"""

from qubus.bus.messages import SubmitRequest
from qubus.client.aio import Client, task_record

__all__ = ["Client", "SubmitRequest", "task_record"]

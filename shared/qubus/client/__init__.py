"""The client SDK: submit circuits to a qubus stack and read their tasks back.

``Client`` (in ``qubus.client.aio``) is the asyncio client. It imports the layers below it.
"""

from qubus.client.aio import Client

__all__ = ["Client"]

"""The embedded nats-server keeps its state: it starts again on the same store (whose log
already names an old port), and one that died is restarted on its port with its data."""

from __future__ import annotations

import asyncio
import os
import signal

import nats
import pytest

from qubus.bus.natsserver import NatsServer

pytestmark = [pytest.mark.system, pytest.mark.asyncio]


async def stored_messages(url: str) -> int:
    """Messages in stream KEPT of the server at ``url`` (fails within 20 s if none answers)."""

    async def read() -> int:
        nc = await nats.connect(url, max_reconnect_attempts=0, connect_timeout=2)
        try:
            return (await nc.jetstream().stream_info("KEPT")).state.messages
        finally:
            await nc.close()

    return await asyncio.wait_for(read(), 20)


async def store_three(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="KEPT", subjects=["kept.>"])
    for i in range(3):
        await js.publish("kept.x", str(i).encode())
    await nc.close()


async def test_a_server_starts_again_on_the_same_store(tmp_path):
    server = NatsServer(str(tmp_path))
    first = server.start()
    await store_three(first)
    server.stop()
    again = NatsServer(str(tmp_path))
    url = again.start()
    try:
        assert await stored_messages(url) == 3
    finally:
        again.stop()


async def test_a_killed_server_is_restarted_on_its_port_with_its_data(tmp_path):
    server = NatsServer(str(tmp_path))
    url = server.start()
    try:
        await store_three(url)
        assert not server.restart_if_dead()
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        assert server.restart_if_dead()
        assert server.url == url
        assert await stored_messages(url) == 3
    finally:
        server.stop()

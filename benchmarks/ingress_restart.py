"""A submission sent while ingestion restarts: how long until it is accepted, or what refused it.

Usage:
    python benchmarks/ingress_restart.py              # 3 restarts, about a minute
    python benchmarks/ingress_restart.py --restarts 5

Starts its own nats-server and stack (every service a process under a ``Supervisor``, fleet
ibm_nairobi), then, each time: SIGKILLs the ingestion process, waits until the supervisor has
seen it exit, checks with a bare request that nobody answers ``qubus.submit`` now, and times
``Client.submit`` of a Bell circuit from there (the supervisor restarts ingestion after 0.5,
1, 2, 5 s as its quick deaths add up). Prints one line per restart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import time
from pathlib import Path

import nats.errors

from qubus.bus import logs
from qubus.bus.connection import SUBMIT_SUBJECT
from qubus.bus.messages import SubmitRequest
from qubus.bus.natsserver import NatsServer
from qubus.cli.stack import Supervisor, stack_specs
from qubus.client.aio import Client
from qubus.errors import QubusError

DEV = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "qasm" / "dev"


async def main(restarts: int) -> None:
    logs.configure("bench", "bench", "error")  # not a line per retried submission
    server = NatsServer()
    url = server.start()
    log_dir = Path(tempfile.mkdtemp(prefix="qubus-ingress-"))
    stack = Supervisor(url, stack_specs(("ibm_nairobi",)), log_dir=log_dir, env={})
    request = SubmitRequest(circuit=(DEV / "qasmbench__bell_n4.qasm").read_text(), shots=10)
    try:
        await stack.start(timeout=180)
        client = await Client.connect(url)
        await client.submit(request)
        for n in range(1, restarts + 1):
            exits = stack.children["ingestion"].exits
            os.kill(stack.pid("ingestion"), signal.SIGKILL)
            for _ in range(1000):
                if stack.children["ingestion"].exits > exits:
                    break
                await asyncio.sleep(0.01)
            try:
                await client.bus.nc.request(SUBMIT_SUBJECT, b"", timeout=2)
                bare = "answered"
            except nats.errors.NoRespondersError:
                bare = "no responders"
            started = time.monotonic()
            try:
                await client.submit(request)
                outcome = "accepted"
            except QubusError as exc:
                outcome = exc.code
            print(
                f"restart {n}: a bare request: {bare}; Client.submit: {outcome} after "
                f"{time.monotonic() - started:.2f} s",
                flush=True,
            )
            await stack.wait_ready("ingestion", timeout=60)
        await client.close()
    finally:
        await stack.stop()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--restarts", type=int, default=3)
    asyncio.run(main(parser.parse_args().restarts))

"""nats-py's client against ``qubus.bus.natsclient``'s ``NatsClient`` and ``Pull``.

Every JetStream publish, key-value operation and direct get is a request. This starts a
private nats-server and, with each client in turn (alternating rounds, one connection each),
publishes ``--ops`` task events of a 4-qubit circuit's size with the headers a stage sends,
reads one of them back ``--ops`` times by direct get, then takes them all from a durable
consumer one pull at a time and acknowledges each (nats-py's ``fetch(1)`` and ``ack`` against
``Pull``'s ``next`` and ``ack_next``, which asks for the next message with the acknowledgement,
as the stages do), ``--concurrent`` at a time. It prints the client's CPU (user + system of
this process) and the wall time per operation, on the event loop the services run (uvloop).
First, 200 publishes one at a time, each after 20 ms with nothing to do (``publish, idle``,
its wall time the median): what a stage's round trip to the server costs on an idle stack.

    python benchmarks/natsrequests.py --ops 4000 --rounds 3 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import nats
import uvloop
from nats.aio.client import Client
from nats.js.api import ConsumerConfig

from qubus.bus.natsclient import NatsClient, Pull
from qubus.bus.natsserver import NatsServer
from qubus.cli.common import number_in

PAYLOAD = b"\x00" * 1500
"""About a ``checked`` event of a 4-qubit circuit in msgpack."""
IDLE_S = 0.02
"""The pause before each ``publish, idle``: about the time between two tasks' hops at idle."""


def headers(key: str) -> dict[str, str]:
    """The headers ``Bus.publish_event`` sends, with ``key`` as the de-duplication id."""
    return {
        "Qubus-Type": "task.checked.v1",
        "Nats-Msg-Id": key,
        "traceparent": f"00-{'a' * 32}-{'b' * 16}-01",
        "Qubus-Service": "bench",
        "Qubus-Instance": "requests",
        "Qubus-Started": f"{time.time():.6f}",
        "Content-Type": "application/msgpack",
    }


async def per_op(
    op: Callable[[int], Awaitable[None]], ops: int, concurrent: int
) -> tuple[float, float]:
    """Client CPU and wall microseconds per operation of ``op(i)`` for ``i`` below ``ops``,
    ``concurrent`` callers at a time."""

    async def caller(first: int) -> None:
        for i in range(first, ops, concurrent):
            await op(i)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(concurrent)))
    return (time.process_time() - cpu) / ops * 1e6, (time.perf_counter() - wall) / ops * 1e6


async def after_idle(op: Callable[[int], Awaitable[None]], ops: int) -> tuple[float, float]:
    """Client CPU (mean) and wall (median) microseconds of ``op(i)`` run alone after
    ``IDLE_S`` with nothing to do, ``ops`` times: a stage's lot on an idle stack."""
    cpu, walls = 0.0, []
    for i in range(ops):
        await asyncio.sleep(IDLE_S)
        started, clock = time.perf_counter(), time.process_time()
        await op(i)
        walls.append(time.perf_counter() - started)
        cpu += time.process_time() - clock
    return cpu / ops * 1e6, statistics.median(walls) * 1e6


async def measure(url: str, client: Client, tag: str, args: argparse.Namespace) -> dict:
    await client.connect(url)
    js = client.jetstream()
    subject = f"bench.{tag}"
    try:

        async def publish(i: int) -> None:
            key = f"{tag}.{i}.{time.perf_counter_ns()}"  # each call's own: two ops publish
            ack = await js.publish(f"{subject}.{i}", PAYLOAD, headers=headers(key))
            assert not ack.duplicate

        async def direct_get(_: int) -> None:
            reply = await client.request(
                "$JS.API.DIRECT.GET.BENCH", b'{"last_by_subj": "%s.0"}' % subject.encode()
            )
            assert reply.headers is not None and reply.headers["Nats-Subject"] == f"{subject}.0"

        await js.add_consumer(
            "BENCH", ConsumerConfig(durable_name=tag, filter_subject=f"{subject}.>")
        )
        if isinstance(client, NatsClient):
            pulls = [Pull(client, "BENCH", tag) for _ in range(args.concurrent)]
            for pull in pulls:
                await pull.start()

            async def pull_and_ack(i: int) -> None:
                pull = pulls[i % args.concurrent]
                await pull.ack_next(await pull.next(5), 5)
        else:
            subs = [
                await js.pull_subscribe_bind(durable=tag, stream="BENCH")
                for _ in range(args.concurrent)
            ]

            async def pull_and_ack(i: int) -> None:
                (msg,) = await subs[i % args.concurrent].fetch(1, timeout=5)
                await msg.ack()

        return {
            "publish, idle": await after_idle(publish, min(args.ops, 200)),
            "publish": await per_op(publish, args.ops, args.concurrent),
            "direct get": await per_op(direct_get, args.ops, args.concurrent),
            "pull + ack": await per_op(pull_and_ack, args.ops, args.concurrent),
        }
    finally:
        await client.close()


async def main(args: argparse.Namespace) -> dict:
    server = NatsServer()
    url = server.start()
    try:
        setup = await nats.connect(url)
        await setup.jetstream().add_stream(
            name="BENCH", subjects=["bench.>"], storage="file", allow_direct=True
        )
        await setup.close()
        runs: dict[str, list[dict]] = {"nats-py": [], "NatsClient": []}
        for round_ in range(args.rounds):
            for name, make in (("nats-py", Client), ("NatsClient", NatsClient)):
                runs[name].append(await measure(url, make(), f"{name}-{round_}", args))
    finally:
        server.stop()
    return {
        name: {
            op: {
                "cpu_us": statistics.median(r[op][0] for r in rounds),
                "wall_us": statistics.median(r[op][1] for r in rounds),
            }
            for op in ("publish, idle", "publish", "direct get", "pull + ack")
        }
        for name, rounds in runs.items()
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=number_in(int, 1, None), default=4000)
    parser.add_argument("--rounds", type=number_in(int, 1, None), default=3)
    parser.add_argument("--concurrent", type=number_in(int, 1, None), default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = uvloop.run(main(args))  # the services' event loop (qubus.bus.service)
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{args.ops} operations, {args.concurrent} at a time, median of {args.rounds} rounds")
    print(f"{'':12s} {'op':13s} {'client CPU µs/op':>17s} {'wall µs/op':>11s}")
    for name, ops in figures.items():
        for op, f in ops.items():
            print(f"{name:12s} {op:13s} {f['cpu_us']:17.1f} {f['wall_us']:11.1f}")


if __name__ == "__main__":
    cli()

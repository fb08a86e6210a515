"""End-to-end throughput and latency of small circuits through a running `qubus up`.

Usage:
    qubus up &                      # in another terminal
    python benchmarks/e2e.py --tasks 200 --in-flight 32

Prints tasks per second (submission of the first task to completion of the last) and the
p50/p99 of each task's latency (submit → its ``completed`` event stored), with --json for
scripts. Uses the stack `qubus up` recorded, or QUBUS_NATS_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from qubus.bus import logs
from qubus.bus.messages import SubmitRequest
from qubus.client.aio import Client

CIRCUIT = (Path(__file__).resolve().parent.parent / "examples" / "ghz.qasm").read_text()


async def one(client: Client, shots: int, gate: asyncio.Semaphore) -> tuple[float, str]:
    async with gate:
        started = time.time()
        reply = await client.submit(SubmitRequest(circuit=CIRCUIT, shots=shots))
        events = await client.wait(reply.task_id, timeout=600)
        return events[-1].published - started, events[-1].event.EVENT


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=32, help="tasks submitted at once")
    parser.add_argument("--shots", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logs.configure("bench", "bench", "warning")

    client = await Client.connect_configured()
    gate = asyncio.Semaphore(args.in_flight)
    await one(client, args.shots, gate)  # warm-up: first-use caches in every service
    started = time.perf_counter()
    results = await asyncio.gather(*(one(client, args.shots, gate) for _ in range(args.tasks)))
    elapsed = time.perf_counter() - started
    await client.close()

    latencies = sorted(latency for latency, _ in results)
    figures = {
        "tasks": args.tasks,
        "in_flight": args.in_flight,
        "shots": args.shots,
        "completed": sum(1 for _, end in results if end == "completed"),
        "elapsed_s": round(elapsed, 3),
        "tasks_per_s": round(args.tasks / elapsed, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000, 1),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>12}  {value}")


if __name__ == "__main__":
    asyncio.run(main())

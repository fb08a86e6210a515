"""A heavy task does not delay small ones: a small task's latency right behind heavy tasks,
without and with the heavy lane (``QUBUS_HEAVY_LANE``).

Usage:
    python benchmarks/lanes.py                      # 4 rounds, 2 heavy tasks each, ~4 minutes
    python benchmarks/lanes.py --rounds 6 --heavy 3 --json

For ``QUBUS_HEAVY_LANE=0`` (before: one sandbox worker runs every simulation in arrival order,
noise handles two tasks at once) and then ``=1`` (after: heavy circuits in a lane of their
own), one private stack each (a nats-server and every service; fleet ibm_nairobi and
quantinuum_h2_2), and per round: a small task alone (``qasmbench__bell_n4``, 1,000 shots,
pinned to ibm_nairobi), then ``--heavy`` heavy ones (``qasmbench__qft_n18``: 18 qubits, 801
operations; noiseless, 100 shots, pinned to quantinuum_h2_2 so that the QPU queues do not
mix) submitted at once, and the small task as soon as every heavy one is ``checked`` (handed
to the sandbox and the noise service, where their work runs: earlier, the small task would
overtake them in the parser). Every circuit gets an
angle of its own per round (no cache serves it). Prints, per setting, the small task's median
latency from submission to its ``scored`` event (the stages whose work runs in worker
processes and threads: parser, logic, sandbox, noise, fusion) and to ``completed``, alone and
behind the heavy tasks, the heavy tasks' median time to ``scored``, and how many tasks of
all did not end ``completed`` (their times would mean nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from qubus.bus import logs
from qubus.bus.messages import SubmitRequest, TaskChecked
from qubus.bus.natsserver import NatsServer
from qubus.cli.stack import Supervisor, stack_specs
from qubus.client.aio import Client

DEV = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "qasm" / "dev"
FLEET = ("ibm_nairobi", "quantinuum_h2_2")


def with_angle(text: str, register: str, angle: float) -> str:
    """The OpenQASM program with ``rz(angle)`` on its first qubit right after ``register``'s
    declaration: the same work, a circuit no cache has seen."""
    return text.replace(register, f"{register}\nrz({angle:.9f}) q[0];", 1)


async def latency(
    client: Client, request: SubmitRequest, checked: asyncio.Event | None = None
) -> dict[str, float]:
    """Seconds from submission to the task's ``scored`` and terminal events; ``checked`` is
    set once its ``checked`` event is stored."""
    started = time.time()
    reply = await client.submit(request, timeout=30)
    if checked is not None:
        for _ in range(30_000):  # 10 minutes at most
            if await client.bus.last_event(reply.task_id, TaskChecked) is not None:
                break
            await asyncio.sleep(0.02)
        checked.set()
    events = await client.wait(reply.task_id, timeout=900)
    scored = next((e.published for e in events if e.event.EVENT == "scored"), float("nan"))
    return {
        "scored": scored - started,
        "end": events[-1].published - started,
        "completed": float(events[-1].event.EVENT == "completed"),
    }


async def run(heavy_lane: bool, args: argparse.Namespace) -> dict[str, object]:
    small_text = (DEV / "qasmbench__bell_n4.qasm").read_text()
    heavy_text = (DEV / "qasmbench__qft_n18.qasm").read_text()
    server = NatsServer()
    url = server.start()
    env = {"QUBUS_HEAVY_LANE": "1" if heavy_lane else "0", "QUBUS_LOG_LEVEL": "warning"}
    log_dir = Path(tempfile.mkdtemp(prefix="qubus-lanes-"))
    supervisor = Supervisor(url, stack_specs(FLEET), log_dir=log_dir, env=env)
    alone, behind, heavies = [], [], []
    try:
        await supervisor.start(timeout=180)
        client = await Client.connect(url)

        def small(k: int) -> SubmitRequest:
            text = with_angle(small_text, "qreg q[4];", 1e-3 * (k + 1) + (0.5 if heavy_lane else 0))
            return SubmitRequest(circuit=text, shots=1000, node="ibm_nairobi")

        def heavy(k: int) -> SubmitRequest:
            angle = 1e-3 * (k + 1) + (0.5 if heavy_lane else 0)
            text = with_angle(heavy_text, "qreg q[18];", angle)
            return SubmitRequest(circuit=text, shots=100, node="quantinuum_h2_2", noiseless=True)

        await latency(client, small(10_000))  # warm-up: first-use caches of every service
        for r in range(args.rounds):
            alone.append(await latency(client, small(2 * r)))
            checked = [asyncio.Event() for _ in range(args.heavy)]
            pending = [
                asyncio.create_task(latency(client, heavy(r * args.heavy + h), checked[h]))
                for h in range(args.heavy)
            ]
            for event in checked:
                await event.wait()
            behind.append(await latency(client, small(2 * r + 1)))
            heavies += await asyncio.gather(*pending)
            print(
                f"  lane={'on' if heavy_lane else 'off'} round {r + 1}: small alone "
                f"{alone[-1]['scored']:.2f} s, behind {behind[-1]['scored']:.2f} s to scored",
                flush=True,
            )
        await client.close()
    finally:
        await supervisor.stop()
        server.stop()

    def median(rows: list[dict[str, float]], key: str) -> float:
        return round(statistics.median(row[key] for row in rows), 3)

    return {
        "heavy_lane": heavy_lane,
        "small_alone_to_scored_s": median(alone, "scored"),
        "small_behind_to_scored_s": median(behind, "scored"),
        "small_alone_to_end_s": median(alone, "end"),
        "small_behind_to_end_s": median(behind, "end"),
        "heavy_to_scored_s": median(heavies, "scored"),
        "not_completed": sum(1 for row in alone + behind + heavies if not row["completed"]),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--heavy", type=int, default=2, help="heavy tasks ahead of the small one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logs.configure("bench", "bench", "warning")
    results = [await run(False, args), await run(True, args)]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.heavy} heavy tasks (qft_n18) checked, then a small one (bell_n4)")
    print(
        "heavy lane | small alone→scored | behind→scored | alone→end | behind→end | "
        "heavy→scored | not completed"
    )
    for row in results:
        print(
            f"{'on' if row['heavy_lane'] else 'off':>10} | {row['small_alone_to_scored_s']:>18} | "
            f"{row['small_behind_to_scored_s']:>13} | {row['small_alone_to_end_s']:>9} | "
            f"{row['small_behind_to_end_s']:>10} | {row['heavy_to_scored_s']:>12} | "
            f"{row['not_completed']:>13}"
        )


if __name__ == "__main__":
    asyncio.run(main())

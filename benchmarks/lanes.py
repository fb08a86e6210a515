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
    client: Client,
    request: SubmitRequest,
    handed: asyncio.Event | None = None,
    *,
    front: bool = False,
) -> dict[str, float]:
    """Seconds from submission to the task's ``checked``, ``scored`` and terminal events;
    ``handed`` is set once the task is past the stages measured: accepted (``front``: it is
    in the parser's queue) or else ``checked`` (stored)."""
    started = time.time()
    reply = await client.submit(request, timeout=30)
    if handed is not None:
        if not front:
            for _ in range(30_000):  # 10 minutes at most
                if await client.bus.last_event(reply.task_id, TaskChecked) is not None:
                    break
                await asyncio.sleep(0.02)
        handed.set()
    events = await client.wait(reply.task_id, timeout=900)

    def at(name: str) -> float:
        return next((e.published for e in events if name == e.event.EVENT), float("nan"))

    return {
        "checked": at("checked") - started,
        "scored": at("scored") - started,
        "end": events[-1].published - started,
        "completed": float(events[-1].event.EVENT == "completed"),
    }


def long_circuit(operations: int, qubits: int = 6) -> str:
    """A legal OpenQASM 2 program of about ``operations`` operations on few ``qubits``: long
    to parse and check, cheap to simulate (``qubus.bus.workers.is_heavy`` calls it light)."""
    body = []
    for i in range(operations - qubits):
        a = i % qubits
        body.append(f"cx q[{a}],q[{(a + 1) % qubits}];" if i % 2 else f"rx({1e-3 * i:.3f}) q[{a}];")
    head = f'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[{qubits}];\ncreg c[{qubits}];\n'
    return head + "\n".join(body) + "\nmeasure q -> c;\n"


async def run(heavy_lane: bool, args: argparse.Namespace) -> dict[str, object]:
    small_text = (DEV / "qasmbench__bell_n4.qasm").read_text()
    if args.front:
        heavy_text, heavy_register = long_circuit(args.operations), "qreg q[6];"
    else:
        heavy_text, heavy_register = (DEV / "qasmbench__qft_n18.qasm").read_text(), "qreg q[18];"
    server = NatsServer()
    url = server.start()
    env = {"QUBUS_HEAVY_LANE": "1" if heavy_lane else "0", "QUBUS_LOG_LEVEL": "warning"}
    log_dir = Path(tempfile.mkdtemp(prefix="qubus-lanes-"))
    supervisor = Supervisor(url, stack_specs(FLEET), log_dir=log_dir, env=env)
    alone, behind, heavies = [], [], []
    measured = "checked" if args.front else "scored"
    try:
        await supervisor.start(timeout=180)
        client = await Client.connect(url)

        def small(k: int) -> SubmitRequest:
            text = with_angle(small_text, "qreg q[4];", 1e-3 * (k + 1) + (0.5 if heavy_lane else 0))
            return SubmitRequest(circuit=text, shots=1000, node="ibm_nairobi")

        def heavy(k: int) -> SubmitRequest:
            angle = 1e-3 * (k + 1) + (0.5 if heavy_lane else 0)
            text = with_angle(heavy_text, heavy_register, angle)
            return SubmitRequest(circuit=text, shots=100, node="quantinuum_h2_2", noiseless=True)

        await latency(client, small(10_000))  # warm-up: first-use caches of every service
        for r in range(args.rounds):
            alone.append(await latency(client, small(2 * r)))
            handed = [asyncio.Event() for _ in range(args.heavy)]
            pending = [
                asyncio.create_task(
                    latency(client, heavy(r * args.heavy + h), handed[h], front=args.front)
                )
                for h in range(args.heavy)
            ]
            for event in handed:
                await event.wait()
            behind.append(await latency(client, small(2 * r + 1)))
            heavies += await asyncio.gather(*pending)
            print(
                f"  lane={'on' if heavy_lane else 'off'} round {r + 1}: small alone "
                f"{alone[-1][measured]:.2f} s, behind {behind[-1][measured]:.2f} s to {measured}",
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
        "small_alone_s": median(alone, measured),
        "small_behind_s": median(behind, measured),
        "small_alone_to_end_s": median(alone, "end"),
        "small_behind_to_end_s": median(behind, "end"),
        "heavy_s": median(heavies, measured),
        "not_completed": sum(1 for row in alone + behind + heavies if not row["completed"]),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--heavy", type=int, default=2, help="heavy tasks ahead of the small one")
    parser.add_argument(
        "--front",
        action="store_true",
        help="heavy tasks long to parse and check (a legal --operations long circuit on 6 "
        "qubits), the small one submitted once they are accepted, latency to checked",
    )
    parser.add_argument("--operations", type=int, default=9000, help="with --front")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logs.configure("bench", "bench", "warning")
    results = [await run(False, args), await run(True, args)]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    if args.front:
        print(f"{args.heavy} heavy tasks ({args.operations} operations) accepted, then a small one")
    else:
        print(f"{args.heavy} heavy tasks (qft_n18) checked, then a small one (bell_n4)")
    to = "checked" if args.front else "scored"
    print(
        f"heavy lane | small alone→{to} | behind→{to} | alone→end | behind→end | "
        f"heavy→{to} | not completed"
    )
    for row in results:
        print(
            f"{'on' if row['heavy_lane'] else 'off':>10} | {row['small_alone_s']:>18} | "
            f"{row['small_behind_s']:>13} | {row['small_alone_to_end_s']:>9} | "
            f"{row['small_behind_to_end_s']:>10} | {row['heavy_s']:>12} | "
            f"{row['not_completed']:>13}"
        )


if __name__ == "__main__":
    asyncio.run(main())

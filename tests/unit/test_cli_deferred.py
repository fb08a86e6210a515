"""The command line's deferred imports (``qubus.cli.deferred``): ``qubus parse`` runs without
importing ``matplotlib.pyplot`` or the NATS client, and cirq still draws when asked to; the
NATS client runs without importing aiohttp, and the dashboard still serves with it.
Each check runs in a fresh interpreter, where nothing is imported yet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ghz.qasm"


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )


def test_parse_imports_cirq_without_pyplot_or_nats_and_prints_the_circuit() -> None:
    code = f"""
import contextlib, io, json, sys
from qubus.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    status = main(["parse", "--json", {str(EXAMPLE)!r}])
print(json.dumps({{
    "status": status,
    "features": json.loads(out.getvalue())["features"],
    "cirq": "cirq" in sys.modules,
    "pyplot": type(sys.modules["matplotlib.pyplot"]).__name__,
    "nats": "nats" in sys.modules,
}}))
"""
    report = json.loads(run_python(code).stdout)
    assert report["status"] == 0
    assert report["features"]["gate_counts"] == {"cnot": 3, "h": 1, "measure": 4}
    assert report["cirq"] is True
    assert report["pyplot"] == "_Deferred"
    assert report["nats"] is False


def test_deferred_modules_are_imported_when_used_and_cirq_draws_with_them() -> None:
    code = """
import sys
from qubus.cli.deferred import defer_imports
PLOTTING = ("matplotlib.pyplot", "mpl_toolkits.mplot3d", "mpl_toolkits.axes_grid1")
defer_imports()
import cirq
import matplotlib
print(*(type(sys.modules[name]).__name__ for name in PLOTTING))
matplotlib.use("Agg")
heatmap = cirq.Heatmap({(cirq.GridQubit(0, 0),): 0.5, (cirq.GridQubit(0, 1),): 0.7})
figure, axes = cirq.vis.heatmap.plt.subplots()
heatmap.plot(axes)  # mpl_toolkits.axes_grid1
kak = cirq.scatter_plot_normalized_kak_interaction_coefficients([cirq.unitary(cirq.CZ)])
print(*(type(sys.modules[name]).__name__ for name in PLOTTING), type(kak).__name__)
"""
    before, after = run_python(code).stdout.splitlines()
    assert before.split() == ["_Deferred"] * 3
    assert after.split() == ["module"] * 3 + ["Axes3D"]


def test_the_nats_client_leaves_aiohttp_unimported_until_the_dashboard_serves_with_it() -> None:
    code = """
import json, sys
from qubus.cli.deferred import defer_imports
defer_imports()
import nats, nats.js
from nats.aio import transport
loaded = "aiohttp.client" in sys.modules
from aiohttp import WSMsgType, web
print(json.dumps({
    "loaded_with_nats": loaded,
    "stand_in": type(transport.aiohttp).__name__,
    "module": type(sys.modules["aiohttp"]).__name__,
    "web": web.Application.__module__,
    "binary": int(WSMsgType.BINARY),
    "session": transport.aiohttp.ClientSession.__module__,
}))
"""
    report = json.loads(run_python(code).stdout)
    assert report == {
        "loaded_with_nats": False,
        "stand_in": "_Deferred",
        "module": "module",
        "web": "aiohttp.web_app",
        "binary": 2,
        "session": "aiohttp.client",
    }


def test_the_console_script_ends_parse_without_teardown_and_loses_no_output(
    tmp_path: Path,
) -> None:
    """``entry`` ends ``parse`` with ``os._exit``: an exit handler does not run, yet what the
    command printed arrives, with its exit status; other commands exit as usual."""
    bad = tmp_path / "bad.qasm"
    bad.write_text('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nfoo q[0];\n')
    code = """
import atexit, sys
atexit.register(print, "teardown")
from qubus.cli.main import entry
entry()
"""

    def console(*argv: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", code, *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    parsed = console("parse", str(EXAMPLE))
    assert parsed.returncode == 0
    assert parsed.stdout.startswith(f"{EXAMPLE} (qasm2)\n")
    assert "teardown" not in parsed.stdout
    rejected = console("parse", str(bad))
    assert rejected.returncode == 1
    assert rejected.stderr == f"{bad}:4:1: unknown gate 'foo' [qasm.unknown_gate]\n"
    completion = console("completion", "bash")
    assert completion.returncode == 0
    assert completion.stdout.rstrip().endswith("teardown")

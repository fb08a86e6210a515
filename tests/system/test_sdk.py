"""The Python entry points against a real stack: the synchronous SDK (``qubus.connect``), the
cirq Sampler (``qubus.cirq.Sampler``) and every example of README's "Python" section."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cirq
import numpy as np
import pytest
import sympy

import qubus
import qubus.cirq
from qubus.client.sync import Result, TaskError

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
GHZ = ROOT / "examples" / "ghz.qasm"


def readme_examples() -> list[str]:
    """The ``python`` blocks of README's "Python" section, in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_readme_has_the_three_entry_points() -> None:
    examples = readme_examples()
    assert len(examples) == 3
    assert "qubus.connect()" in examples[0]
    assert "qubus.cirq.Sampler" in examples[1]
    assert "Client.connect" in examples[2]


@pytest.mark.parametrize("index", range(3))
def test_each_readme_example_runs(nats_url: str, stack, index: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", readme_examples()[index]],
        cwd=ROOT,
        env={**os.environ, "QUBUS_NATS_URL": nats_url},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def session(nats_url: str, stack):
    with qubus.connect(nats_url) as q:
        yield q


def test_a_job_of_each_kind_of_circuit_returns_a_typed_result(session, dev_qasm) -> None:
    a, b = cirq.LineQubit.range(2)
    bell = cirq.Circuit(cirq.H(a), cirq.CNOT(a, b), cirq.measure(a, b, key="m"))
    jobs = [
        session.submit(GHZ, shots=300, noiseless=True),  # a Path
        session.submit(str(dev_qasm / "qasmbench__bell_n4.qasm"), shots=300),  # a path string
        session.submit(GHZ.read_text(), shots=300, noiseless=True),  # QASM text
        session.submit(bell, shots=300, noiseless=True),  # a cirq.Circuit
    ]
    results = [job.result(timeout=180) for job in jobs]  # submitted together, waited in turn

    assert all(isinstance(r, Result) and r.status == "done" for r in results)
    assert [r.shots for r in results] == [300] * 4
    assert set(results[0].counts) == {"0000", "1111"} == set(results[2].counts)
    assert set(results[3].counts) == {"00", "11"}
    assert results[0].source == str(GHZ) and results[3].source is None
    assert all(r.nodes and r.measured_fidelity is not None and r.trace for r in results)
    assert [job.status() for job in jobs] == ["done"] * 4
    assert jobs[0].cancel() is False  # already ended


def test_a_rejected_job_raises_with_the_task_error(session) -> None:
    job = session.submit(ROOT / "examples" / "broken.qasm")
    with pytest.raises(TaskError) as caught:
        job.result(timeout=120)
    assert caught.value.code == "qasm.undeclared" and caught.value.result.status == "rejected"
    assert job.status() == "rejected"


def test_bad_circuits_and_options_are_refused_before_submission(session, tmp_path) -> None:
    with pytest.raises(qubus.client.sync.QubusError, match="cannot read") as missing:
        session.submit(tmp_path / "missing.qasm")
    assert missing.value.code == "file.unreadable"
    with pytest.raises(qubus.client.sync.QubusError) as shots:
        session.submit(GHZ, shots=0)
    assert shots.value.code == "payload.invalid"
    for wildcard in ("*", "anon.*", "anon.>"):
        with pytest.raises(qubus.client.sync.QubusError) as task_id:
            session.job(wildcard).status()
        assert task_id.value.code == "task.invalid_id"


def test_sampler_sweeps_a_parameterised_circuit_over_a_linspace(nats_url, stack) -> None:
    a, b = cirq.LineQubit.range(2)
    theta = sympy.Symbol("theta")
    circuit = cirq.Circuit(
        cirq.ry(theta).on(a),
        cirq.CNOT(a, b),
        cirq.measure(a, key="first"),
        cirq.measure(b, key="b"),
    )
    sweep = cirq.Linspace(theta, 0, np.pi, 3)
    with qubus.cirq.Sampler(url=nats_url, noiseless=True) as sampler:
        results = sampler.run_sweep(circuit, sweep, repetitions=400)
        frame = sampler.sample(circuit, params=sweep, repetitions=10)

    assert [r.params["theta"] for r in results] == pytest.approx([0, np.pi / 2, np.pi])
    for result in results:
        assert isinstance(result, cirq.Result) and set(result.measurements) == {"first", "b"}
        assert result.measurements["first"].shape == (400, 1)
        assert (result.measurements["first"] == result.measurements["b"]).all()  # entangled
    ones = [int(r.measurements["first"].sum()) for r in results]
    assert ones[0] == 0 and ones[2] == 400 and 100 < ones[1] < 300
    assert set(frame.columns) == {"theta", "first", "b"} and len(frame) == 30

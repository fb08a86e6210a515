"""``qubus.qiskit.QubusBackend`` against a real stack: transpiled ``QuantumCircuit``s run as
tasks and come back as Qiskit counts."""

from __future__ import annotations

import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, transpile
from qiskit.circuit import Parameter
from qiskit.providers import JobStatus
from qiskit.providers.basic_provider import BasicSimulator

from qubus.errors import QubusError
from qubus.qiskit import QubusBackend

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def backend(nats_url: str, stack):
    with QubusBackend(url=nats_url) as qubus_backend:
        yield qubus_backend


def two_registers() -> QuantumCircuit:
    """A Bell pair into register ``a`` and a flipped qubit into ``b``, on gates the target lacks."""
    q, a, b = QuantumRegister(3, "q"), ClassicalRegister(2, "a"), ClassicalRegister(1, "b")
    circuit = QuantumCircuit(q, a, b, name="bell_and_one")
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.y(2)
    circuit.measure([0, 1], a)
    circuit.measure(2, b[0])
    return circuit


def test_a_transpiled_circuit_gives_qiskit_counts(backend) -> None:
    circuit = transpile(two_registers(), backend, optimization_level=1)
    assert set(circuit.count_ops()) <= {"rz", "sx", "x", "cx", "measure", "id"}
    job = backend.run(circuit, shots=400, noiseless=True)
    counts = job.result().get_counts()

    reference = BasicSimulator().run(two_registers(), shots=400).result().get_counts()
    assert set(counts) == set(reference) == {"1 00", "1 11"}  # b leftmost, bits reversed
    assert sum(counts.values()) == 400 and 100 < counts["1 11"] < 300
    assert job.status() == JobStatus.DONE and job.job_id() == job.jobs[0].task_id


def test_several_noisy_circuits_in_one_run(backend) -> None:
    ghz = QuantumCircuit(4, 4, name="ghz")
    ghz.h(0)
    for i in range(3):
        ghz.cx(i, i + 1)
    ghz.measure(range(4), range(4))
    partial = QuantumCircuit(2, 3, name="partial")  # a clbit never measured reads 0
    partial.x(1)
    partial.measure(1, 2)
    job = backend.run(transpile([ghz, partial], backend), shots=300)
    result = job.result(timeout=180)

    noisy = result.get_counts("ghz")
    assert sum(noisy.values()) == 300 and noisy.get("0000", 0) + noisy.get("1111", 0) > 200
    assert set(result.get_counts(1)) <= {"100", "000"} and result.get_counts(1).get("100") > 200


def test_unbound_parameters_are_refused_before_submission(backend) -> None:
    circuit = QuantumCircuit(1, 1)
    circuit.rx(Parameter("theta"), 0)
    circuit.measure(0, 0)
    with pytest.raises(QubusError) as caught:
        backend.run(circuit)
    assert caught.value.code == "qiskit.unbound" and "theta" in str(caught.value)

"""``qubus.qiskit.QubusBackend``: a Qiskit ``BackendV2`` whose circuits run on a qubus stack
(``pip install qubus[qiskit]``)::

    from qiskit import QuantumCircuit, transpile
    from qubus.qiskit import QubusBackend

    with QubusBackend() as backend:
        job = backend.run(transpile(circuit, backend), shots=1000)
        print(job.result().get_counts())

Each circuit is one task, sent as OpenQASM 2 (``qiskit.qasm2.dumps``; OpenQASM 3 when 2 cannot
express it). The backend's target is the gate set our OpenQASM parser reads natively (``rz``,
``sx``, ``x``, ``cx``, ``measure``, ``reset``) on every qubit pair, as wide as the widest online
QPU: the stack places, routes and compiles for the real device itself. Counts are keyed as
Qiskit keys them (the last classical bit leftmost, registers separated by spaces).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qiskit import QuantumCircuit, qasm2, qasm3
from qiskit.circuit import Parameter
from qiskit.circuit.library import CXGate, IGate, Measure, Reset, RZGate, SXGate, XGate
from qiskit.providers import BackendV2, JobStatus, JobV1, Options
from qiskit.result import Result
from qiskit.transpiler import Target

from qubus.circuits.simulate import ordered_keys
from qubus.client.sync import Job, Session, SessionHolder
from qubus.errors import QubusError

STATUS = {
    "pending": JobStatus.QUEUED,
    "queued": JobStatus.QUEUED,
    "running": JobStatus.RUNNING,
    "done": JobStatus.DONE,
    "rejected": JobStatus.ERROR,
    "failed": JobStatus.ERROR,
    "cancelled": JobStatus.CANCELLED,
}
"""Qiskit's job status for each qubus task status."""


class QubusBackend(SessionHolder, BackendV2):
    """The qubus stack as one Qiskit backend.

    Args:
        session: A ``qubus.connect()`` session to share (default: a new one, closed by
            ``close``).
        url: The stack's NATS server when no session is given (default: ``QUBUS_NATS_URL``,
            else the running ``qubus up``).
        nkey: The user's nkey seed file when no session is given.

    Raises:
        QubusError: ``stack.no_nodes``: no QPU node of the stack is online; and as
            ``qubus.connect``.
    """

    def __init__(
        self, session: Session | None = None, *, url: str | None = None, nkey: str | None = None
    ) -> None:
        super().__init__(name="qubus", description="circuits scheduled over a qubus fleet")
        self._hold(session, url, nkey)
        statuses = self._session._call(self._session._client.bus.node_statuses())
        if not statuses:
            self.close()
            raise QubusError("no QPU node of the stack is online", code="stack.no_nodes")
        self._target = gate_target(max(s.max_circuit_qubits for s in statuses.values()))

    @property
    def target(self) -> Target:
        return self._target

    @property
    def max_circuits(self) -> None:
        return None

    @classmethod
    def _default_options(cls) -> Options:
        """``shots`` and every ``Session.submit`` option (``noiseless``, ``node``,
        ``priority``, ``fidelity_floor``, ...; None: the stack's default)."""
        return Options(
            shots=1024, noiseless=False, node=None, priority=0, pilot=None, fidelity_floor=None
        )

    def run(self, run_input: QuantumCircuit | Sequence[QuantumCircuit], **options: Any) -> QubusJob:
        """Submit each circuit as one task; returns at once.

        Raises:
            QubusError: ``qiskit.unbound`` for a circuit with unbound parameters; or the
                submission's refusal (``payload.invalid``, ...).
        """
        circuits = [run_input] if isinstance(run_input, QuantumCircuit) else list(run_input)
        chosen = {**self.options.__dict__, **options}
        shots = int(chosen.pop("shots"))
        chosen = {k: v for k, v in chosen.items() if v is not None}
        jobs = [
            self._session.submit(qasm_of(circuit), shots=shots, **chosen) for circuit in circuits
        ]
        return QubusJob(self, jobs, circuits, shots)


class QubusJob(JobV1):
    """The tasks of one ``QubusBackend.run``; its id is the first task's."""

    def __init__(
        self, backend: QubusBackend, jobs: list[Job], circuits: list[QuantumCircuit], shots: int
    ) -> None:
        super().__init__(backend, jobs[0].task_id if jobs else "")
        self.jobs = jobs
        self._circuits = circuits
        self._shots = shots

    def submit(self) -> None:
        """The tasks were submitted by ``QubusBackend.run``."""

    def result(self, timeout: float | None = None) -> Result:
        """Every circuit's counts, once every task has ended.

        Raises:
            qubus.client.sync.TaskError: a task was rejected, failed or cancelled.
            TimeoutError: not every task ended within ``timeout`` seconds.
        """
        experiments = []
        for job, circuit in zip(self.jobs, self._circuits, strict=True):
            result = job.result(timeout)
            experiments.append(
                {
                    "shots": self._shots,
                    "success": True,
                    "data": {"counts": qiskit_counts(result.counts or {}, circuit)},
                    "header": {
                        "name": circuit.name,
                        "creg_sizes": [[r.name, r.size] for r in circuit.cregs],
                        "memory_slots": circuit.num_clbits,
                    },
                    "status": "DONE",
                }
            )
        return Result.from_dict(
            {
                "backend_name": "qubus",
                "backend_version": self.backend().backend_version,
                "job_id": self.job_id(),
                "success": True,
                "results": experiments,
            }
        )

    def status(self) -> JobStatus:
        """The least advanced task's status (ERROR or CANCELLED if any task ended so)."""
        statuses = [STATUS[job.status()] for job in self.jobs]
        for status in (JobStatus.ERROR, JobStatus.CANCELLED, JobStatus.QUEUED, JobStatus.RUNNING):
            if status in statuses:
                return status
        return JobStatus.DONE

    def cancel(self) -> bool:
        """Cancel every task not yet running; True if every task is now cancelled."""
        return all([job.cancel() for job in self.jobs])


def gate_target(num_qubits: int) -> Target:
    """Our parser's native gates, each on any qubits, on ``num_qubits`` qubits."""
    target = Target(num_qubits=num_qubits, description="qubus")
    theta = Parameter("theta")
    for gate in (RZGate(theta), SXGate(), XGate(), IGate(), CXGate(), Measure(), Reset()):
        target.add_instruction(gate)
    return target


def qasm_of(circuit: QuantumCircuit) -> str:
    """The circuit as OpenQASM 2, or 3 where 2 cannot express it.

    Raises:
        QubusError: ``qiskit.unbound``: the circuit has unbound parameters.
    """
    if circuit.parameters:
        names = sorted(p.name for p in circuit.parameters)
        raise QubusError(
            f"circuit {circuit.name} has unbound parameters {names}: assign_parameters first",
            code="qiskit.unbound",
        )
    try:
        return qasm2.dumps(circuit)
    except qasm2.QASM2ExportError:
        return qasm3.dumps(circuit)


def qiskit_counts(counts: Mapping[str, int], circuit: QuantumCircuit) -> dict[str, int]:
    """qubus counts (one character per measured bit ``<register>_<i>``, in natural order) as
    Qiskit's hexadecimal memory values (classical bit ``j`` of the circuit is bit ``j``; bits
    never measured read 0)."""
    keys = [key for key, _ in ordered_keys(dict.fromkeys(measured_bits(circuit), 1))]
    position = {
        f"{register.name}_{i}": circuit.find_bit(bit).index
        for register in circuit.cregs
        for i, bit in enumerate(register)
    }
    hexed: dict[str, int] = {}
    for bits, n in counts.items():
        value = sum(1 << position[key] for key, bit in zip(keys, bits, strict=True) if bit == "1")
        hexed[hex(value)] = hexed.get(hex(value), 0) + n
    return hexed


def measured_bits(circuit: QuantumCircuit) -> list[str]:
    """``<register>_<i>`` of every classical bit a measurement writes (our parser's keys)."""
    names = {}
    for register in circuit.cregs:
        for i, bit in enumerate(register):
            names[bit] = f"{register.name}_{i}"
    return sorted(
        {
            names[bit]
            for item in circuit.data
            if item.operation.name == "measure"
            for bit in item.clbits
        }
    )

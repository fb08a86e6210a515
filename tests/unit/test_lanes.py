"""Which circuits go to a stage's heavy lane, which worker pool a job of each weight gets, and
that a worker's large answer reaches a service on uvloop whole; which jobs run on the event loop
instead."""

from __future__ import annotations

import os
import resource

import cirq
import pytest
import uvloop

from qubus.bus.messages import TaskIngested, TaskOptions
from qubus.bus.workers import (
    HEAVY_OPERATIONS,
    HEAVY_WORK,
    INLINE_EMULATION_S,
    INLINE_MAX_BYTES,
    INLINE_WORK,
    Lanes,
    WorkerPool,
    is_heavy,
    is_long,
    is_quick,
    is_short,
    is_small,
    is_tiny,
)
from qubus.circuits import circuit_features, circuit_to_json, circuit_to_wire, load_circuit
from qubus.circuits.bounds import MAX_OPERATIONS
from qubus.circuits.qasm.count import expanded_operations
from qubus.errors import InvalidPayload
from qubus_services.parser.main import describe, weight


def ingested(text: str, fmt: str = "qasm2") -> TaskIngested:
    return TaskIngested(
        task_id="anon.t1", format=fmt, text=text, options=TaskOptions(shots=1), submitted_at=0
    )


@pytest.mark.parametrize(
    ("name", "heavy"),
    [
        ("qasmbench__qft_n18.qasm", True),
        ("qasmbench__qram_n20.qasm", True),
        ("qasmbench__bell_n4.qasm", False),
        ("qasmbench__ising_n10.qasm", False),
        ("qasmbench__qec9xz_n17.qasm", False),
    ],
)
def test_wide_and_long_circuits_are_heavy(dev_qasm, name, heavy):
    features = circuit_features(load_circuit((dev_qasm / name).read_text(), "qasm2"))
    assert is_heavy(features) is heavy


def test_a_sweep_counts_the_work_of_every_point(dev_qasm):
    features = circuit_features(
        load_circuit((dev_qasm / "qasmbench__qec9xz_n17.qasm").read_text(), "qasm2")
    )
    work = sum(features.gate_counts.values()) * 2**features.qubits
    assert not is_heavy(features)
    assert is_heavy(features, points=HEAVY_WORK // work + 1)


def test_a_circuit_operation_is_heavy_whatever_its_size(dev_qasm):
    features = circuit_features(
        load_circuit((dev_qasm / "qasmbench__bell_n4.qasm").read_text(), "qasm2")
    )
    counts = {**features.gate_counts, "op": 1}
    assert is_heavy(features.model_copy(update={"gate_counts": counts}))


def test_heavy_jobs_get_their_own_pool_only_with_a_heavy_lane():
    laned = Lanes(heavy_lane=True, memory_mb=512, stage="sandbox", job="simulation")
    single = Lanes(heavy_lane=False, memory_mb=512, stage="sandbox", job="simulation")
    assert laned.pool(True) is not laned.pool(False)
    assert single.pool(True) is single.pool(False)


def test_an_answer_larger_than_the_pipe_buffer_arrives_whole_on_uvloop():
    """A heavy circuit's distribution is megabytes: uvloop leaves the worker's pipe
    non-blocking, and reading it half-arrived failed the job (as a time-out) at once."""
    with open("/proc/self/statm") as statm:
        mapped_mb = int(statm.read().split()[0]) * resource.getpagesize() >> 20

    async def answer() -> bytes:
        pool = WorkerPool(memory_mb=mapped_mb + 1024, stage="sandbox", job="simulation")
        pool.start()
        try:
            return await pool.run(bytes, 8 * 1024 * 1024, timeout_s=60)
        finally:
            pool.close()

    assert len(uvloop.run(answer())) == 8 * 1024 * 1024


def test_a_long_circuit_is_heavy_to_parse_and_to_check(dev_qasm, long_qasm):
    """Light for the simulators (3,400 operations × 2^10), heavy for the parser and the
    logic checks."""
    text = (dev_qasm / "qasmbench__ising_n10.qasm").read_text()
    long_text = long_qasm
    features = circuit_features(load_circuit(long_text, "qasm2"))
    assert sum(features.gate_counts.values()) > HEAVY_OPERATIONS
    assert is_long(features) and not is_heavy(features)
    assert weight(ingested(long_text)) == (False, True, None)  # a thread, the lane; counted again
    assert not is_long(circuit_features(load_circuit(text, "qasm2")))
    assert weight(ingested(text)) == (False, False, 490)  # a thread, no lane


def test_a_short_circuit_is_parsed_inline_and_cirq_json_is_judged_by_its_text(dev_qasm):
    bell = load_circuit((dev_qasm / "qasmbench__bell_n4.qasm").read_text(), "qasm2")
    bell_text = (dev_qasm / "qasmbench__bell_n4.qasm").read_text()
    assert weight(ingested(bell_text)) == (True, False, expanded_operations(bell_text))
    assert weight(ingested(circuit_to_json(bell), "cirq-json")) == (True, False, None)
    # a CircuitOperation's repetitions hide its work: never inline, always in the lane
    repeated_op = cirq.Circuit(cirq.CircuitOperation(bell.freeze(), repetitions=1000))
    assert weight(ingested(circuit_to_json(repeated_op), "cirq-json")) == (False, True, None)


def test_the_parser_takes_the_count_its_lane_choice_made(dev_qasm):
    """``describe`` checks the count ``weight`` made instead of counting the text again."""
    event = ingested((dev_qasm / "qasmbench__bell_n4.qasm").read_text())
    counted = weight(event).operations
    assert counted is not None and describe(event, counted) == describe(event)
    with pytest.raises(InvalidPayload) as refused:  # the count given is the one checked
        describe(event, MAX_OPERATIONS + 1)
    assert refused.value.code == "circuit.too_large"


def test_a_tiny_circuit_is_simulated_on_the_event_loop_and_one_run_shot_by_shot_is_not(dev_qasm):
    def tiny(circuit: cirq.Circuit) -> bool:
        wire = circuit_to_wire(circuit)
        return is_tiny(wire, circuit_features(circuit, wire))

    bell = load_circuit((dev_qasm / "qasmbench__bell_n4.qasm").read_text(), "qasm2")
    assert tiny(bell)
    q = sorted(bell.all_qubits())
    assert not tiny(bell + cirq.ResetChannel()(q[0]))
    assert not tiny(bell + cirq.X(q[0]).with_classical_controls(*cirq.measurement_key_names(bell)))
    ising = load_circuit((dev_qasm / "qasmbench__ising_n10.qasm").read_text(), "qasm2")
    features = circuit_features(ising)
    assert sum(features.gate_counts.values()) * 2**features.qubits > INLINE_WORK
    assert not tiny(ising)


def test_a_small_circuit_is_short_and_has_no_circuit_operation_with_or_without_features():
    q0, q1 = cirq.LineQubit.range(2)
    bell = cirq.Circuit(cirq.H(q0), cirq.CNOT(q0, q1))
    boxed = cirq.Circuit(cirq.CircuitOperation(bell.freeze(), repetitions=10**6))
    for circuit, small in [(bell, True), (boxed, False)]:
        text = circuit_to_json(circuit)
        assert len(text) <= INLINE_MAX_BYTES
        assert is_small(text, circuit_features(circuit)) is small
        assert is_small(text) is small
    long = circuit_to_json(cirq.Circuit(cirq.X(cirq.LineQubit(0)) for _ in range(400)))
    assert len(long) > INLINE_MAX_BYTES and not is_small(long)


def test_the_compact_wire_form_is_short_up_to_a_length_of_its_own():
    q = cirq.LineQubit.range(2)
    for operations, short in [(40, True), (400, False)]:
        wire = circuit_to_wire(cirq.Circuit([cirq.H(q[0]), cirq.CNOT(*q)] * (operations // 2)))
        assert wire.startswith("[") and len(wire) < INLINE_MAX_BYTES
        assert is_short(wire) is short and is_small(wire) is short
        assert is_quick(wire, 0.0) is short


def test_only_a_quick_emulation_of_a_short_circuit_runs_inline():
    assert is_quick("x" * INLINE_MAX_BYTES, INLINE_EMULATION_S)
    assert not is_quick("x" * INLINE_MAX_BYTES, 2 * INLINE_EMULATION_S)
    assert not is_quick("x" * (INLINE_MAX_BYTES + 1), 0.0)


def test_an_inline_job_runs_in_the_service_and_starts_no_worker():
    pool = WorkerPool(memory_mb=512, stage="qpu", job="emulation")

    async def pids() -> tuple[int, int | None]:
        return await pool.run(os.getpid, timeout_s=5, inline=True), pool.worker_pid

    try:
        assert uvloop.run(pids()) == (os.getpid(), None)
    finally:
        pool.close()

"""A QPU node's run: its predicted fidelity is the one of the calibration and noise it ran with."""

from __future__ import annotations

import cirq
import pytest

from qubus.circuits import circuit_to_json
from qubus.circuits.simulate import ideal_distribution
from qubus.devices.compile import compile_for_device
from qubus.devices.fidelity import hellinger_fidelity
from qubus.devices.prediction import predict_fidelity
from qubus.devices.profiles import drift_devices
from qubus.errors import SimulationError
from qubus_services.qpu.main import emulation_pool, execute

SHOTS = 2000


@pytest.fixture(scope="module")
def ghz() -> cirq.Circuit:
    q = cirq.LineQubit.range(3)
    return cirq.Circuit(
        cirq.H(q[0]), cirq.CNOT(q[0], q[1]), cirq.CNOT(q[1], q[2]), cirq.measure(*q, key="c")
    )


def test_prediction_is_computed_on_the_calibration_the_task_ran_on(ghz: cirq.Circuit) -> None:
    ideal = ideal_distribution(ghz)
    january, june = (d for i, d in enumerate(drift_devices("ibm_perth")) if i in (0, 170))
    predictions = []
    for device in (january, june):
        counts, _, predicted = execute(device, circuit_to_json(ghz), SHOTS, 7, False, ideal)
        compiled = compile_for_device(ghz, device)
        assert predicted == predict_fidelity(compiled, device, ideal, shots=SHOTS)
        assert hellinger_fidelity(counts, ideal) == pytest.approx(predicted, abs=0.05)
        predictions.append(predicted)
    assert predictions[0] != predictions[1]


def test_without_the_ideal_distribution_nothing_is_predicted(ghz: cirq.Circuit) -> None:
    device = next(drift_devices("ibm_perth"))
    counts, modelled_s, predicted = execute(device, circuit_to_json(ghz), 100, 7, False, None)
    assert predicted is None and sum(counts.values()) == 100 and modelled_s > 1.0


def test_noiseless_run_predicts_the_fidelity_of_perfect_samples(ghz: cirq.Circuit) -> None:
    ideal = ideal_distribution(ghz)
    device = next(drift_devices("ibm_perth"))
    counts, _, predicted = execute(device, circuit_to_json(ghz), SHOTS, 7, True, ideal)
    assert set(counts) == {"000", "111"}
    # Finite sampling alone keeps the expected Hellinger fidelity just below 1.
    assert 0.999 < predicted < 1.0
    assert hellinger_fidelity(counts, ideal) == pytest.approx(predicted, abs=2e-3)


async def test_emulation_past_its_time_limit_fails_naming_the_qpu_stage() -> None:
    q = cirq.LineQubit.range(5)
    layer = [cirq.H.on_each(*q), cirq.CNOT(q[0], q[1]), cirq.CNOT(q[2], q[3])]
    deep = cirq.Circuit(layer * 200, cirq.measure(*q))  # about half a second of emulation
    device = next(iter(drift_devices("ibm_perth")))
    pool = emulation_pool(memory_mb=4096)
    pool.start()
    try:
        with pytest.raises(SimulationError) as caught:
            await pool.run(
                execute, device, circuit_to_json(deep), 4000, 1, False, None, timeout_s=0.05
            )
    finally:
        pool.close()
    assert caught.value.code == "qpu.timeout"
    assert caught.value.message == "emulation exceeded its time limit of 0.05 s"

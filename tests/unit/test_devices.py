"""Device profiles built from real calibration data, traps included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qubus.devices.profiles import DEFAULT_FLEET, Device, DeviceNotFound, data_dir, load_device

SHARED_CALIBRATION = Path(__file__).resolve().parents[3] / "shared" / "data" / "calibration"
PACKAGED = (
    "ibm_manila",
    "ibm_nairobi",
    "ibm_hanoi",
    "quantinuum_h1_1",
    "quantinuum_h2_2",
    "ionq_aria",
    "ionq_forte",
)


@pytest.mark.parametrize("node_id", PACKAGED)
def test_every_packaged_profile_loads_and_round_trips_as_json(node_id: str) -> None:
    device = load_device(node_id)
    wire = json.loads(json.dumps(device.model_dump(mode="json")))
    assert Device.model_validate(wire) == device
    assert device.id == node_id
    summary = device.summary()
    assert summary["usable_qubits"] == len(device.usable_qubits) > 0
    assert summary["median_2q_error"] is not None


def test_default_fleet_loads_from_package_data() -> None:
    assert {"ibm_nairobi"} <= set(DEFAULT_FLEET)
    assert all(load_device(node).max_circuit_qubits >= 5 for node in DEFAULT_FLEET)


def test_package_ships_no_large_calibration_files() -> None:
    sizes = {p.name: p.stat().st_size for p in data_dir().rglob("*") if p.is_file()}
    assert "MANIFEST.tsv" in sizes
    assert max(sizes.values()) < 100_000


@pytest.mark.parametrize(
    ("node_id", "qubits", "kind"),
    [
        ("quantinuum_h1_1", 20, "trapped-ion"),
        ("quantinuum_h2_2", 56, "trapped-ion"),
        ("ionq_aria", 25, "trapped-ion"),
        ("ionq_forte", 36, "trapped-ion"),
        ("ibm_hanoi", 27, "superconducting"),
    ],
)
def test_qubit_counts_follow_the_public_specs(node_id: str, qubits: int, kind: str) -> None:
    device = load_device(node_id)
    assert (device.n_qubits, device.kind) == (qubits, kind)
    assert device.all_to_all == (kind == "trapped-ion")


def test_quantinuum_profile_uses_the_newest_emulator_row() -> None:
    device = load_device("quantinuum_h2_2")
    assert device.calibrated_at.startswith("2024-12-06")
    assert device.edge(0, 55).error == pytest.approx(0.0014)
    assert (device.qubits[3].p01, device.qubits[3].p10) == (0.0009, 0.0018)


def test_t2_is_clamped_to_twice_t1() -> None:
    device = load_device("ibm_hanoi")
    assert all(q.t2_us <= 2 * q.t1_us for q in device.qubits)
    assert device.qubits[2].t2_us == pytest.approx(2 * device.qubits[2].t1_us)


def test_gates_with_error_one_are_not_usable_edges() -> None:
    device = load_device("ibm_hanoi")
    pairs = {(e.a, e.b) for e in device.edges}
    assert (19, 20) not in pairs and (5, 8) not in pairs
    assert all(e.error < 1 for e in device.edges)
    assert 20 not in device.coupling[19]
    assert device.max_circuit_qubits == 26  # qubit 20 hangs only on the broken pair


def test_qubit_without_t1_is_unusable_and_routed_around() -> None:
    device = load_device("ibm_kingston", calibration_dir=SHARED_CALIBRATION)
    assert device.qubits[146].t1_us is None
    assert not device.qubits[146].usable
    assert 146 not in device.coupling
    assert all(146 not in (e.a, e.b) for e in device.edges)


def test_uninformative_readout_makes_a_qubit_unusable() -> None:
    device = load_device("ibm_kingston", calibration_dir=SHARED_CALIBRATION)
    assert not device.qubits[96].usable  # P(read 1 | prep 0) = 0.98


def test_device_whose_two_qubit_gates_all_failed_fits_only_one_qubit() -> None:
    device = load_device("ibm_kyoto", calibration_dir=SHARED_CALIBRATION)
    assert device.edges == []
    assert device.max_circuit_qubits == 1
    assert device.summary()["median_2q_error"] is None


def test_revision_is_a_stable_content_hash() -> None:
    assert load_device("ibm_nairobi").revision == load_device("ibm_nairobi").revision
    assert load_device("ibm_nairobi").revision != load_device("ibm_manila").revision


def test_changed_copy_gets_fresh_views_and_a_new_revision() -> None:
    device = load_device("ibm_nairobi")
    assert device.edge(0, 1).error < 0.5  # fills the cached views
    worse = device.model_copy(
        update={"edges": [e.model_copy(update={"error": 0.5}) for e in device.edges]}
    )
    assert worse.edge(0, 1).error == 0.5
    assert worse.revision != device.revision
    assert device.model_copy().revision == device.revision


def test_unknown_node_is_an_expected_error() -> None:
    with pytest.raises(DeviceNotFound) as caught:
        load_device("ibm_nowhere")
    assert caught.value.code == "device.unknown"
    with pytest.raises(DeviceNotFound):
        load_device("rigetti_ankaa")

"""ibm_perth's drift series and its replay on a compressed clock."""

from __future__ import annotations

import json

import pytest

from qubus.devices.drift import DriftReplay
from qubus.devices.profiles import Device, data_dir, drift_devices, load_device


@pytest.fixture(scope="module")
def perth() -> list[Device]:
    return list(drift_devices("ibm_perth"))


def test_series_is_181_daily_calibrations_oldest_first(perth: list[Device]) -> None:
    dates = [device.calibrated_at for device in perth]
    assert len(perth) == 181
    assert dates == sorted(dates)
    assert dates[0].startswith("2023-01-01") and dates[-1].startswith("2023-06-30")
    assert perth[0].source == "conf_perth.json, snapshots-2023-01.tar.xz:2023-01-01T10:00:00.json"


def test_every_snapshot_has_its_own_revision(perth: list[Device]) -> None:
    assert len({device.revision for device in perth}) == len(perth)


def test_load_device_gives_the_first_snapshot(perth: list[Device]) -> None:
    assert load_device("ibm_perth") == perth[0]


def test_snapshots_use_only_pairs_of_the_backend_coupling_map(perth: list[Device]) -> None:
    conf = json.loads((data_dir() / "drift" / "ibm_perth" / "conf_perth.json").read_text())
    coupling = {(min(a, b), max(a, b)) for a, b in conf["coupling_map"]}
    assert {(e.a, e.b) for device in perth for e in device.edges} <= coupling


def test_real_drift_changes_figures_and_usable_hardware(perth: list[Device]) -> None:
    first, last = perth[0].summary(), perth[-1].summary()
    assert first["median_t1_us"] != last["median_t1_us"]
    assert len({len(device.edges) for device in perth}) > 1
    [worst] = [d for d in perth if d.calibrated_at.startswith("2023-04-10")]
    assert worst.edges == [] and worst.max_circuit_qubits == 1


def test_replay_moves_one_snapshot_per_period_and_wraps(perth: list[Device]) -> None:
    replay = DriftReplay(perth[:3], period_s=10.0, start=100.0)
    readings = [50.0, 100.0, 109.9, 110.0, 125.0, 130.0, 141.0]
    assert [replay.index_at(now) for now in readings] == [0, 0, 0, 1, 2, 0, 1]
    assert replay.device_at(112.0) is perth[1]
    revisions = [replay.device_at(100.0 + 10 * i).revision for i in range(4)]
    assert revisions[0] != revisions[1] != revisions[2] and revisions[3] == revisions[0]


def test_no_replay_when_drift_is_off_or_the_node_has_no_series() -> None:
    assert DriftReplay.for_node("ibm_perth", period_s=0.0, start=0.0) is None
    assert DriftReplay.for_node("ibm_nairobi", period_s=5.0, start=0.0) is None
    replay = DriftReplay.for_node("ibm_perth", period_s=5.0, start=0.0)
    assert replay is not None and len(replay.devices) == 181


@pytest.mark.parametrize(("devices", "period_s"), [([], 1.0), (["x"], 0.0)])
def test_replay_rejects_an_empty_series_or_a_non_positive_period(devices, period_s) -> None:
    with pytest.raises(ValueError):
        DriftReplay(devices, period_s=period_s, start=0.0)

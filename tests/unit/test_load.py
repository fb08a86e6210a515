"""The real IBM pending-jobs series and its replay as a node's background load."""

from __future__ import annotations

import hashlib
import lzma
from pathlib import Path

import pytest

from qubus.devices.load import BackgroundLoad, backend_for, load_series, series_path
from qubus.devices.profiles import DEFAULT_FLEET

SHARED_CSV = Path(__file__).resolve().parents[3] / "shared/data/load/ibm_pending_jobs_10min.csv"


@pytest.fixture(scope="module")
def series() -> dict[str, tuple[int, ...]]:
    return load_series()


def test_shipped_file_is_the_shared_csv_unmodified_and_listed_in_its_manifest() -> None:
    text = lzma.decompress(series_path().read_bytes())
    assert text == SHARED_CSV.read_bytes()
    manifest = (series_path().parent / "MANIFEST.tsv").read_text().splitlines()
    rows = {line.split("\t")[0]: line.split("\t") for line in manifest[1:]}
    packed = rows[series_path().name]
    assert packed[6] == hashlib.sha256(series_path().read_bytes()).hexdigest()
    assert int(packed[5]) == series_path().stat().st_size
    assert rows[f"{series_path().name}:ibm_pending_jobs_10min.csv"][6] == (
        hashlib.sha256(text).hexdigest()
    )
    assert (series_path().parent / "LICENSES" / "MIT_Qonductor-SC25_LICENSE.txt").is_file()


def test_series_has_twelve_backends_on_one_ten_minute_clock(series) -> None:
    assert len(series) == 12 and {"ibm_nairobi", "ibm_perth", "ibmq_kolkata"} <= set(series)
    # 2023-11-16 13:50 to 2023-11-26 20:50 UTC: 1,483 bins, 8 of them not polled.
    assert {len(jobs) for jobs in series.values()} == {1483}
    first = {backend: jobs[0] for backend, jobs in series.items()}
    assert first["ibm_algiers"] == 42 and first["ibm_perth"] == 1328 and first["ibm_nairobi"] == 5
    assert max(series["ibm_nairobi"]) == 4238  # 4237.8 pending jobs, rounded


def test_unpolled_stretch_holds_the_bin_before_it(series) -> None:
    # Bin 692 is 2023-11-21 09:10; 09:20 to 10:30 (693-700) were not polled; 701 is 10:40.
    for jobs in series.values():
        assert jobs[693:701] == (jobs[692],) * 8


def test_missing_bins_are_filled_from_any_file(tmp_path: Path) -> None:
    rows = [
        "time_bin_utc,backend,mean_pending_jobs,samples,operational",
        "2023-11-16T13:50:00+00:00,a,1.4,2,True",
        "2023-11-16T13:50:00+00:00,b,7.0,2,True",
        "2023-11-16T14:00:00+00:00,b,8.6,2,True",
        "2023-11-16T14:20:00+00:00,a,3.0,1,True",
        "2023-11-16T14:20:00+00:00,b,9.0,1,True",
    ]
    path = tmp_path / "load.csv.xz"
    path.write_bytes(lzma.compress("\n".join(rows).encode()))
    assert load_series(path) == {"a": (1, 1, 1, 3), "b": (7, 9, 9, 9)}


def test_a_backend_without_the_first_bin_is_refused(tmp_path: Path) -> None:
    rows = [
        "time_bin_utc,backend,mean_pending_jobs,samples,operational",
        "2023-11-16T13:50:00+00:00,a,1.0,2,True",
        "2023-11-16T14:00:00+00:00,b,8.0,2,True",
    ]
    path = tmp_path / "load.csv.xz"
    path.write_bytes(lzma.compress("\n".join(rows).encode()))
    with pytest.raises(ValueError, match="b has no value for the first bin"):
        load_series(path)


def test_a_node_replays_its_namesake_or_a_fixed_choice(series) -> None:
    assert backend_for("ibm_nairobi", series) == "ibm_nairobi"
    assert backend_for("ibm_perth", series) == "ibm_perth"
    mapping = {node: backend_for(node, series) for node in DEFAULT_FLEET}
    # Documented in docs/architecture.md; the choice is the SHA-256 of the node id.
    assert mapping == {
        "ibm_nairobi": "ibm_nairobi",
        "ibm_manila": "ibm_nairobi",
        "quantinuum_h1_1": "ibmq_kolkata",
        "ionq_aria": "ibm_cairo",
    }
    assert backend_for("ionq_aria", reversed(sorted(series))) == "ibm_cairo"
    with pytest.raises(ValueError):
        backend_for("ionq_aria", [])


def test_replay_moves_one_bin_per_period_and_wraps() -> None:
    load = BackgroundLoad("b", [3, 0, 7], period_s=10.0, start=100.0)
    readings = [50.0, 100.0, 109.9, 110.0, 125.0, 130.0, 141.0]
    assert [load.index_at(now) for now in readings] == [0, 0, 0, 1, 2, 0, 1]
    assert [load.jobs_at(now) for now in readings] == [3, 3, 3, 0, 7, 3, 0]


def test_a_task_starts_after_the_jobs_queued_when_it_arrived() -> None:
    load = BackgroundLoad("b", [3, 0, 7], period_s=10.0, start=100.0)
    # 3 jobs of 2 modelled seconds at time scale 0.5: 3 s after arrival.
    assert load.start_after(105.0, job_s=2.0, time_scale=0.5) == pytest.approx(108.0)
    assert load.start_after(115.0, job_s=2.0, time_scale=0.5) == 115.0
    assert load.start_after(121.0, job_s=1.0, time_scale=0.01) == pytest.approx(121.07)


def test_for_node_replays_the_mapped_backend_from_the_first_bin(series) -> None:
    load = BackgroundLoad.for_node("quantinuum_h1_1", period_s=6.0, start=0.0)
    assert load.backend == "ibmq_kolkata" and load.jobs == series["ibmq_kolkata"]
    assert load.jobs_at(0.0) == series["ibmq_kolkata"][0]
    assert load.jobs_at(6.0 * 1483) == series["ibmq_kolkata"][0]


def test_invalid_replays_are_refused() -> None:
    with pytest.raises(ValueError):
        BackgroundLoad("b", [], period_s=1.0, start=0.0)
    with pytest.raises(ValueError):
        BackgroundLoad("b", [1], period_s=0.0, start=0.0)

"""`qubus report`'s figures and page, computed from constructed stored events (no NATS)."""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
from pathlib import Path

import pytest

from qubus.bus.connection import StoredEvent
from qubus.bus.messages import (
    ErrorInfo,
    TaskAllocated,
    TaskCompleted,
    TaskEvent,
    TaskFailed,
    TaskIngested,
    TaskOptions,
    TaskRejected,
    TaskRunning,
)
from qubus.bus.progress import Progress
from qubus.cli.common import parse_since
from qubus.cli.report import (
    STAGE_ORDER,
    FidelityPoint,
    Interval,
    active_periods,
    build_figures,
    by_task,
    fidelity_points,
    load_bench,
    occupancy,
    queue_series,
    render_html,
    stage_latencies,
)
from qubus.errors import QubusError

OPTIONS = TaskOptions(shots=100, source="ghz.qasm")
SEQUENCE = itertools.count(1)
BENCH = {
    "seed": 3,
    "workload": "mixed-200",
    "policies": {
        "hyperscore": {
            "throughput": 4.0,
            "makespan": 50.0,
            "mean_jct": 2.5,
            "p95_jct": 7.0,
            "mean_fidelity": 0.86,
            "utilisation": 0.7,
            "decision_ms": 0.4,
            "objective": 0.8,
        },
        "round_robin": {"throughput": 3.0, "makespan": 66.0, "note": "baseline"},
    },
}


def stored(event: TaskEvent, service: str, started: float, published: float) -> StoredEvent:
    return StoredEvent(
        subject=event.subject(),
        event=event,
        service=service,
        instance=f"{service}-1",
        started=started,
        published=published,
        sequence=next(SEQUENCE),
        trace_id="ab" * 16,
    )


def submitted(task_id: str, at: float) -> StoredEvent:
    event = TaskIngested(task_id=task_id, format="qasm2", text="", options=OPTIONS, submitted_at=at)
    return stored(event, "ingestion", at, at + 0.001)


def allocated(task_id: str, node: str, at: float, predicted: float = 0.9) -> StoredEvent:
    event = TaskAllocated(
        task_id=task_id,
        node=node,
        policy="hyperscore",
        reason="best",
        ranking=[(node, 100.0)],
        predicted_fidelity=predicted,
        hyperscore=100.0,
        circuit="{}",
        options=OPTIONS,
        ideal={"00": 0.5, "11": 0.5},
    )
    return stored(event, "allocator", at - 0.002, at)


def running(task_id: str, node: str, at: float) -> StoredEvent:
    return stored(TaskRunning(task_id=task_id, node=node, queue_wait_s=0.0), "qpu", at, at + 0.001)


def completed(
    task_id: str, node: str, started: float, at: float, predicted: float, measured: float
) -> StoredEvent:
    event = TaskCompleted(
        task_id=task_id,
        node=node,
        counts={"00": 50, "11": 50},
        shots=100,
        seed=1,
        predicted_fidelity=predicted,
        measured_fidelity=measured,
        emulated_s=1.0,
        calibration_revision="r",
    )
    return stored(event, "qpu", started, at)


def ran(
    task_id: str,
    node: str,
    *,
    queued: float,
    start: float,
    end: float,
    predicted: float = 0.9,
    measured: float = 0.8,
) -> list[StoredEvent]:
    """A task that was allocated at ``queued``, taken by its node at ``start`` and completed
    at ``end``."""
    return [
        submitted(task_id, queued - 0.1),
        allocated(task_id, node, queued, predicted),
        running(task_id, node, start),
        completed(task_id, node, start, end, predicted, measured),
    ]


def failed_on_qpu(task_id: str, node: str, *, queued: float, start: float, end: float):
    failure = TaskFailed(
        task_id=task_id, stage="qpu", error=ErrorInfo(code="simulation.failed", message="x")
    )
    return [
        allocated(task_id, node, queued),
        running(task_id, node, start),
        stored(failure, "qpu", start, end),
    ]


def rejected(task_id: str, at: float) -> list[StoredEvent]:
    rejection = TaskRejected(
        task_id=task_id, stage="parser", error=ErrorInfo(code="qasm.syntax", message="bad")
    )
    return [submitted(task_id, at), stored(rejection, "parser", at + 0.001, at + 0.004)]


def fleet_events() -> list[StoredEvent]:
    """Two nodes: ``a`` runs t1 then t2 (queued together), ``b`` runs t3 which fails; t4 is
    still queued on ``a``; t5 was rejected by the parser."""
    return [
        *ran("u.t1", "a", queued=100.0, start=100.5, end=102.0, predicted=0.9, measured=0.8),
        *ran("u.t2", "a", queued=100.2, start=102.0, end=103.0, predicted=0.7, measured=0.75),
        *failed_on_qpu("u.t3", "b", queued=100.1, start=100.3, end=101.0),
        allocated("u.t4", "a", 102.5),
        *rejected("u.t5", 99.0),
    ]


def test_parse_since_reads_durations_back_from_now():
    assert parse_since("90s", now=1000.0) == 910.0
    assert parse_since("15m", now=1000.0) == 100.0
    assert parse_since("2h", now=10_000.0) == 2800.0
    assert parse_since("1.5d", now=200_000.0) == 200_000.0 - 129_600.0


def test_parse_since_reads_iso_times_as_utc_unless_they_have_an_offset():
    assert parse_since("1970-01-01T01:00:00", now=0.0) == 3600.0
    assert parse_since("1970-01-01T01:00:00+01:00", now=0.0) == 0.0


@pytest.mark.parametrize("text", ["yesterday", "15x", "-5m", ""])
def test_parse_since_rejects_anything_else_with_a_clear_code(text: str):
    with pytest.raises(QubusError) as caught:
        parse_since(text, now=0.0)
    assert caught.value.code == "report.since"
    assert "duration" in caught.value.message


def test_occupancy_runs_from_the_node_taking_the_task_to_its_end():
    runs = occupancy(by_task(fleet_events()))

    assert runs == {
        "a": [
            Interval("u.t1", "a", 100.5, 102.0, "done"),
            Interval("u.t2", "a", 102.0, 103.0, "done"),
        ],
        "b": [Interval("u.t3", "b", 100.3, 101.0, "failed")],
    }


def test_queue_series_counts_allocated_tasks_until_their_end_departures_first():
    queues = queue_series(by_task(fleet_events()))

    # t2 is allocated at 100.2 while t1 waits; t1 ends at 102.0, t4 arrives at 102.5 and
    # never ends, t2 ends at 103.0.
    assert queues["a"] == [(100.0, 1), (100.2, 2), (102.0, 1), (102.5, 2), (103.0, 1)]
    assert queues["b"] == [(100.1, 1), (101.0, 0)]


def test_queue_series_leaves_out_a_task_whose_allocation_was_not_read():
    [_, _allocation, *rest] = ran("u.t9", "a", queued=5.0, start=6.0, end=7.0)

    assert queue_series(by_task(rest)) == {}


def test_simultaneous_departure_and_arrival_never_show_a_spurious_peak():
    events = [
        *ran("u.t1", "a", queued=1.0, start=1.0, end=2.0),
        *ran("u.t2", "a", queued=2.0, start=2.0, end=3.0),
    ]
    assert max(n for _, n in queue_series(by_task(events))["a"]) == 1


def test_active_periods_cut_long_idle_gaps_and_keep_short_ones():
    events = [
        *ran("u.t1", "a", queued=10.0, start=10.5, end=12.0),
        *ran("u.t2", "b", queued=13.0, start=13.0, end=14.0),  # 1 s idle: same period
        *ran("u.t3", "a", queued=300.0, start=300.0, end=301.0),  # ~5 min idle: a new one
    ]
    tasks = by_task(events)

    assert active_periods(occupancy(tasks), queue_series(tasks), 301.0) == [
        (10.0, 14.0),
        (300.0, 301.0),
    ]


def test_active_periods_extend_a_queue_not_yet_empty_to_the_end_and_are_capped():
    starts = (0.0, 100.0, 150.0, 400.0, 800.0)  # idle gaps 99, 49, 249 and 399 s
    runs = {"a": [Interval(f"u.t{i}", "a", t, t + 1, "done") for i, t in enumerate(starts)]}
    queue = {"b": [(50.0, 1)]}  # allocated at 50 s, never ended

    # 49 s is under a tenth of the whole (80.1 s); then the shortest gap (99 s) is closed
    assert active_periods(runs, {}, 801.0, max_periods=3) == [
        (0.0, 151.0),
        (400.0, 401.0),
        (800.0, 801.0),
    ]
    assert active_periods(runs, queue, 801.0) == [(0.0, 801.0)]
    assert active_periods({}, {}, 801.0) == []


def test_fidelity_points_are_the_completed_tasks_in_order_of_completion():
    assert fidelity_points(by_task(fleet_events())) == [
        FidelityPoint("u.t1", "a", 0.9, 0.8),
        FidelityPoint("u.t2", "a", 0.7, 0.75),
    ]


def test_stage_latencies_are_handling_times_in_pipeline_order():
    latencies = stage_latencies(by_task(fleet_events()))

    assert list(latencies) == [s for s in STAGE_ORDER if s in latencies]
    assert list(latencies)[0] == "ingested" and list(latencies)[-2:] == ["rejected", "failed"]
    assert latencies["completed"] == pytest.approx([1500.0, 1000.0])
    assert latencies["allocated"] == pytest.approx([2.0] * 4)
    assert len(latencies["ingested"]) == 3


def test_summary_counts_tasks_by_status_and_node_with_mean_fidelities():
    figures = build_figures(fleet_events())
    summary = figures.summary

    assert summary["tasks"] == 5
    assert summary["by_status"] == {"done": 2, "failed": 1, "queued": 1, "rejected": 1}
    assert summary["mean_predicted_fidelity"] == pytest.approx(0.8)
    assert summary["mean_measured_fidelity"] == pytest.approx(0.775)
    a, b = summary["nodes"]["a"], summary["nodes"]["b"]
    assert (a["allocated"], a["done"], a["failed"]) == (3, 2, 0)
    assert (b["allocated"], b["done"], b["failed"]) == (1, 0, 1)
    assert a["busy_s"] == pytest.approx(2.5)
    assert a["utilisation"] == pytest.approx(2.5 / (103.0 - 99.001))  # t5's ingested .. t2's end
    assert b["mean_measured_fidelity"] is None


def test_figures_json_is_plain_json_with_absolute_times():
    figures = build_figures(fleet_events(), since=98.0)
    data = json.loads(json.dumps(figures.to_json()))

    assert data["origin"] == 99.001 and data["end"] == 103.0 and data["since"] == 98.0
    assert data["events"] == len(fleet_events())
    assert data["occupancy"]["b"] == [
        {"task_id": "u.t3", "node": "b", "start": 100.3, "end": 101.0, "status": "failed"}
    ]
    assert data["queue"]["b"] == [[100.1, 1], [101.0, 0]]
    assert data["periods"] == [[100.0, 103.0]]  # t4 still queued on a at the last event
    assert data["bench"] is None


def images(page: str) -> dict[str, list[bytes]]:
    """Per section id, its embedded PNG images, decoded."""
    found = {}
    for part in page.split('<section id="')[1:]:
        anchor, body = part.split('"', 1)
        found[anchor] = [
            base64.b64decode(data)
            for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', body)
        ]
    return found


def test_html_embeds_one_png_per_plot_and_references_nothing_outside():
    page = render_html(build_figures(fleet_events()))

    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page)
    pngs = images(page)
    assert list(pngs) == ["summary", "occupancy", "fidelity", "queue", "latency", "bench"]
    for section in ("occupancy", "fidelity", "queue", "latency"):
        [png] = pngs[section]
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert pngs["summary"] == [] and pngs["bench"] == []
    assert "qubus bench schedule --json" in page and "No policy comparison" in page


def test_html_of_no_events_says_there_is_no_data():
    page = render_html(build_figures([]))

    assert "no task events" in page
    assert page.count("<p>No data.</p>") == 4
    assert "<img" not in page


def test_bench_file_keeps_numeric_figures_and_is_plotted(tmp_path: Path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(BENCH))

    bench = load_bench(path)
    assert bench["policies"]["round_robin"] == {"throughput": 3.0, "makespan": 66.0}
    assert bench["policies"]["hyperscore"] == BENCH["policies"]["hyperscore"]
    assert (bench["seed"], bench["workload"]) == (3, "mixed-200")

    page = render_html(build_figures(fleet_events(), bench=bench))
    [png] = images(page)["bench"]
    assert png.startswith(b"\x89PNG")
    assert "<td>round_robin</td><td>3</td><td>66</td><td>–</td>" in page
    assert "workload mixed-200, seed 3" in page


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("not json", "is not JSON"),
        ('{"policies": []}', "no `policies` object"),
        ('{"policies": {}}', "no `policies` object"),
        ('{"policies": {"p": {"speed": 1}}}', "no policy reports any of throughput"),
    ],
)
def test_bad_bench_files_are_refused_with_what_is_wrong(
    tmp_path: Path, content: str, complaint: str
):
    path = tmp_path / "bench.json"
    path.write_text(content)
    with pytest.raises(QubusError) as caught:
        load_bench(path)
    assert caught.value.code == "report.bench"
    assert complaint in caught.value.message


def test_missing_bench_file_is_refused(tmp_path: Path):
    with pytest.raises(QubusError, match="cannot read") as caught:
        load_bench(tmp_path / "absent.json")
    assert caught.value.code == "report.bench"


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_is_drawn_in_place_on_a_terminal():
    stream = Terminal()
    with Progress(4, "reading", stream=stream, width=8, interval_s=0.0) as progress:
        progress.advance(1)
        progress.advance(3)

    assert stream.getvalue() == (
        "\rreading [........] 0/4\rreading [##......] 1/4\rreading [########] 4/4"
        "\rreading [########] 4/4\n"
    )


def test_progress_bar_stays_silent_when_not_on_a_terminal():
    stream = io.StringIO()
    with Progress(10, "reading", stream=stream) as progress:
        progress.advance(10)
    assert progress.line() == "reading [##############################] 10/10"
    assert stream.getvalue() == ""

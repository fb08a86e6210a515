"""What the dashboard folds from the bus: task rows, the flow from ``$SRV.STATS`` rounds, and
every process's series merged into one exposition."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from qubus.bus import metrics
from qubus.bus.messages import (
    ErrorInfo,
    TaskCompleted,
    TaskIngested,
    TaskOptions,
    TaskRejected,
)
from qubus.dashboard.scrape import StackCollector
from qubus.dashboard.state import FlowMeter, TaskBoard

TASK = "alice.0191f0a1b2c3d4e5f6a7b"
OTHER = "bob.0191f0a1b2c3d4e5f6a7c"


def ingested(task_id: str, source: str) -> TaskIngested:
    options = TaskOptions(shots=100, source=source)
    return TaskIngested(task_id=task_id, format="qasm2", text="", options=options, submitted_at=0)


def test_a_row_follows_its_task_to_its_end_and_only_changed_rows_are_pushed() -> None:
    board = TaskBoard()
    board.add(TASK, "ingested", 100.0, ingested(TASK, "ghz.qasm"))
    [row] = board.take_changed()
    assert (row["status"], row["source"], row["latency_ms"]) == ("pending", "ghz.qasm", None)
    assert board.take_changed() == []
    completed = TaskCompleted(task_id=TASK, node="ibm_nairobi", counts={"00": 60, "11": 40},
                              shots=100, seed=1, predicted_fidelity=0.9, measured_fidelity=0.85,
                              emulated_s=0.1, calibration_revision="r1")  # fmt: skip
    board.add(TASK, "parsed", 100.05, None)  # a body the rows never read
    assert board.take_changed()[0]["status"] == "pending"
    board.add(TASK, "completed", 100.25, completed)
    board.add(OTHER, "ingested", 101.0, ingested(OTHER, "broken.qasm"))
    rejected = TaskRejected(
        task_id=OTHER, stage="parser", error=ErrorInfo(code="qasm.syntax", message="bad")
    )
    board.add(OTHER, "rejected", 101.5, rejected)
    rows = {row["id"]: row for row in board.take_changed()}
    assert rows[TASK]["status"] == "done" and rows[TASK]["node"] == "ibm_nairobi"
    assert (rows[TASK]["predicted"], rows[TASK]["measured"]) == (0.9, 0.85)
    assert rows[TASK]["latency_ms"] == 250.0
    assert (rows[OTHER]["status"], rows[OTHER]["error"]) == ("rejected", "qasm.syntax (parser)")
    assert board.fidelity_series() == {"ibm_nairobi": [[100.25, 0.9, 0.85]]}


def test_the_board_forgets_its_oldest_tasks_beyond_its_size() -> None:
    board = TaskBoard(max_tasks=2)
    for i in range(3):
        task = f"alice.0191f0a1b2c3d4e5f6a7{i}"
        board.add(task, "ingested", float(i), ingested(task, f"{i}.qasm"))
    assert [row["source"] for row in board.all_rows()] == ["1.qasm", "2.qasm"]
    assert len(board.take_changed()) == 2


def stats(id_: str, service: str, handled: int, lag: int | None = None) -> dict:
    data = {"kind": "consumer"} if lag is None else {"kind": "consumer", "lag": lag}
    return {
        "id": id_,
        "metadata": {"service": service},
        "endpoints": [{"name": service, "num_requests": handled, "num_errors": 1, "data": data}],
        "metrics": "",
    }


def test_rates_are_growth_between_rounds_summed_over_replicas_and_lag_is_the_consumers() -> None:
    flow = FlowMeter()
    first = flow.update([stats("a", "noise", 10, lag=5), stats("b", "noise", 4, lag=5)], now=0.0)
    assert first["stages"][0]["rate"] == 0.0  # nothing to compare with yet
    second = flow.update(
        [stats("a", "noise", 30, lag=7), stats("b", "noise", 14, lag=7), stats("c", "noise", 99)],
        now=2.0,
    )
    [stage] = second["stages"]
    assert stage["rate"] == 15.0  # (20 + 10) / 2 s; c is new and adds nothing
    assert (stage["handled"], stage["errors"], stage["lag"]) == (143, 3, 7)
    assert second["services"] == [{"service": "noise", "replicas": 3, "ids": ["a", "b", "c"]}]
    assert flow.lag == {"noise": 7}


def test_every_processs_series_are_served_apart_with_the_stages_lag() -> None:
    metrics.observe_handled("unit-merge", "ok", 0.002)
    text = metrics.exposition()
    collector = StackCollector()
    collector.update(
        [
            {"id": "p1", "metadata": {"service": "parser"}, "metrics": text},
            {"id": "p2", "metadata": {"service": "parser"}, "metrics": text},
        ],
        {"parser": 12},
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    samples = [
        sample
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    ]
    handled = [
        s.labels["instance"]
        for s in samples
        if s.name == "qubus_tasks_handled_total" and s.labels.get("stage") == "unit-merge"
    ]
    assert sorted(handled) == ["p1", "p2"]
    lag = [(s.labels, s.value) for s in samples if s.name == "qubus_consumer_lag"]
    assert lag == [({"stage": "parser"}, 12.0)]
    replicas = [(s.labels, s.value) for s in samples if s.name == "qubus_service_replicas"]
    assert replicas == [({"service": "parser"}, 2.0)]

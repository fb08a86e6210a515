"""The user-facing task record and timeline, built from stored events (no NATS)."""

from __future__ import annotations

from qubus.bus.connection import StoredEvent
from qubus.bus.messages import (
    SandboxEvaluation,
    TaskAllocated,
    TaskCompleted,
    TaskIngested,
    TaskOptions,
    TaskRejected,
)
from qubus.client.aio import stage_rows, status_from_events, status_of, task_record

OPTIONS = TaskOptions(shots=100, source="ghz.qasm")


def stored(event, service: str, started: float, published: float) -> StoredEvent:
    return StoredEvent(
        subject=event.subject(),
        event=event,
        service=service,
        instance=f"{service}-1",
        started=started,
        published=published,
        sequence=1,
        trace_id="ab" * 16,
    )


def completed_trace() -> list[StoredEvent]:
    return [
        stored(
            TaskIngested(task_id="u.t", format="qasm2", text="", options=OPTIONS, submitted_at=0),
            "ingestion",
            10.0,
            10.001,
        ),
        stored(
            SandboxEvaluation(
                task_id="u.t",
                ideal={"00": 0.5, "11": 0.5},
                ideal_counts={"00": 52, "11": 48},
                truncated_mass=0.0,
                norm_error=0.0,
                simulator="qsim",
                elapsed_s=0.01,
            ),
            "sandbox",
            10.01,
            10.03,
        ),
        stored(
            TaskAllocated(
                task_id="u.t",
                node="ibm_nairobi",
                policy="hyperscore",
                reason="best",
                ranking=[("ibm_nairobi", 160.0)],
                predicted_fidelity=0.91,
                hyperscore=160.0,
                circuit="{}",
                options=OPTIONS,
                ideal={"00": 0.5, "11": 0.5},
            ),
            "allocator",
            10.04,
            10.05,
        ),
        stored(
            TaskCompleted(
                task_id="u.t",
                node="ibm_nairobi",
                counts={"00": 45, "11": 50, "01": 5},
                shots=100,
                seed=1,
                predicted_fidelity=0.91,
                measured_fidelity=0.95,
                emulated_s=1.0,
                calibration_revision="r",
            ),
            "qpu",
            10.1,
            10.35,
        ),
    ]


def test_completed_task_record_has_every_field_from_its_events():
    record = task_record("u.t", completed_trace())
    assert record["status"] == "done"
    assert record["nodes"] == ["ibm_nairobi"]
    assert record["counts"] == {"00": 45, "11": 50, "01": 5}
    assert record["ideal_counts"] == {"00": 52, "11": 48}
    assert record["predicted_fidelity"] == 0.91 and record["measured_fidelity"] == 0.95
    assert record["hyperscore"] == 160.0
    assert record["source"] == "ghz.qasm" and record["error"] is None
    assert [row["event"] for row in record["stages"]] == [
        "ingested",
        "eval.sandbox",
        "allocated",
        "completed",
    ]


def test_stage_rows_give_service_instance_and_duration():
    rows = stage_rows(completed_trace())
    assert rows[-1]["service"] == "qpu" and rows[-1]["instance"] == "qpu-1"
    assert rows[-1]["duration_ms"] == 250.0
    assert rows[0]["time"].startswith("1970-01-01T00:00:10")


def test_rejected_task_record_carries_the_error_position():
    trace = completed_trace()[:1] + [
        stored(
            TaskRejected(
                task_id="u.t",
                stage="parser",
                error={"code": "qasm.undeclared", "message": "no d", "line": 8, "column": 14},
            ),
            "parser",
            10.002,
            10.004,
        )
    ]
    record = task_record("u.t", trace)
    assert record["status"] == "rejected"
    assert record["error"] == {
        "code": "qasm.undeclared",
        "message": "no d",
        "line": 8,
        "column": 14,
    }
    assert record["counts"] is None and record["nodes"] == []


def test_status_of_an_unfinished_task_is_a_word_for_how_far_it_got():
    assert status_of(completed_trace()[:3]) == "queued"
    assert status_of(completed_trace()[:1]) == "pending"
    assert status_of([]) == "unknown"


def test_a_cancelled_task_stays_cancelled_whatever_ends_it_later():
    assert status_from_events(["ingested", "allocated", "cancelled", "completed"]) == "cancelled"
    assert status_from_events(["completed", "running", "allocated"]) == "done"
    assert status_from_events(["allocated", "running", "parsed"]) == "running"

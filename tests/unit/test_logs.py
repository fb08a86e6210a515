"""What `qubus logs` and `qubus ps` make of the lines and health replies services publish."""

from __future__ import annotations

import io
import json
import sys

import pytest

from qubus.bus import logs
from qubus.bus.health import Endpoint, service_id
from qubus.bus.logs import BusCopy
from qubus.cli.ops import format_log_line, instance_row


def test_a_log_copy_without_a_publisher_neither_queues_nor_counts():
    copy = BusCopy(maxsize=1)
    copy.offer('{"event": "x"}')
    copy.offer('{"event": "y"}')
    assert copy.published == 0 and copy.dropped == 0


def test_log_line_text_shows_time_source_level_event_and_fields():
    line = {
        "timestamp": "2026-11-26T19:36:58.581234Z",
        "service": "qpu",
        "node": "ibm_nairobi",
        "instance": "vm-1",
        "trace_id": "ab",
        "level": "info",
        "event": "stage.done",
        "task_id": "t1",
    }
    assert format_log_line(line).split() == [
        "19:36:58.581",
        "qpu[ibm_nairobi]",
        "INFO",
        "stage.done",
        "task_id=t1",
    ]


def test_instance_ids_are_single_subject_tokens():
    assert service_id("host.example.com-42") == "host_example_com-42"


async def test_ps_row_sums_endpoints_and_has_no_lag_without_a_consumer():
    submit = Endpoint("submit", "qubus.submit", "ingestion", "request")
    submit.record("ok", 1_000)
    submit.record("error", 3_000, RuntimeError("bug"))
    stats = {
        "name": "qubus-ingestion",
        "id": "vm-1",
        "version": "0.1.0",
        "metadata": {"service": "ingestion", "instance": "vm-1", "pid": "1"},
        "endpoints": [await submit.stats()],
    }
    row = instance_row(stats)
    assert (row["service"], row["node"], row["handled"], row["errored"]) == (
        "ingestion",
        None,
        2,
        1,
    )
    assert row["lag"] is None and row["redelivered"] == 0
    assert row["endpoints"][0]["average_processing_time"] == 2_000
    assert row["endpoints"][0]["last_error"] == "RuntimeError: bug"


async def test_ps_row_sums_the_redeliveries_of_its_stages():
    quota = Endpoint("quota", "qubus.task.*.*.completed", "quota", "consumer")
    quota.redelivered = 2
    submit = Endpoint("submit", "qubus.submit", "ingestion", "request")
    stats = {
        "name": "qubus-ingestion",
        "id": "vm-1",
        "version": "0.1.0",
        "endpoints": [await quota.stats(), await submit.stats()],
    }
    assert instance_row(stats)["redelivered"] == 2


def test_lines_go_to_the_stderr_of_the_moment_not_a_closed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure("parser", "vm-1")
    logs.get_logger().error("one")
    monkeypatch.setattr(sys, "stderr", second)
    first.close()  # as a test runner closes the capture it swapped in
    logs.get_logger().error("two")
    assert json.loads(second.getvalue())["event"] == "two"

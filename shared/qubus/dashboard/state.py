"""What the dashboard holds in memory, built from what it reads on the bus (no NATS here).

- ``TaskBoard``: one summary row per task (id, source, status, node, fidelities, latency),
  folded from the task events as they are stored, and per node the predicted and measured
  fidelity of its latest completed tasks; the rows changed since the last push.
- ``FlowMeter``: the flow of work from successive ``$SRV.STATS`` rounds: tasks per second per
  stage, consumer lag, errors and replicas per service.
- ``fleet_view``: the nodes and links of KV ``qubus_nodes`` as the fleet page shows them.

A task page's full trace is not kept here: the server reads it from the stream on request.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from qubus.bus.messages import (
    LinkStatus,
    NodeStatus,
    TaskAllocated,
    TaskCompleted,
    TaskEvent,
    TaskFailed,
    TaskIngested,
    TaskRejected,
    TaskRunning,
)
from qubus.client.aio import status_from_events

FINAL = ("done", "rejected", "failed", "cancelled")
READ_BODIES = ("ingested", "allocated", "running", "completed", "rejected", "failed")
"""Events whose bodies a row uses; of the others (the circuit-carrying ``parsed``, ``checked``,
evaluations and ``scored`` among them) only the name and time count, so they are not decoded."""
HISTORY = 120
"""Points kept per series (fidelity per node, rates per stage)."""


@dataclass
class TaskRow:
    """One line of the tasks table."""

    task_id: str
    source: str = ""
    events: list[str] = field(default_factory=list)
    node: str = ""
    predicted: float | None = None
    measured: float | None = None
    error: str = ""
    first: float = 0.0
    last: float = 0.0

    @property
    def status(self) -> str:
        return status_from_events(self.events)

    def to_json(self) -> dict[str, Any]:
        status = self.status
        return {
            "id": self.task_id,
            "source": self.source,
            "status": status,
            "node": self.node,
            "predicted": self.predicted,
            "measured": self.measured,
            "error": self.error,
            "submitted": self.first,
            "latency_ms": round((self.last - self.first) * 1000, 1) if status in FINAL else None,
        }


class TaskBoard:
    """Summary rows of the latest ``max_tasks`` tasks, folded from their stored events.

    Args:
        max_tasks: Rows kept; the oldest task is forgotten past it.
    """

    def __init__(self, max_tasks: int = 5000) -> None:
        self.max_tasks = max_tasks
        self.rows: OrderedDict[str, TaskRow] = OrderedDict()
        self.changed: set[str] = set()
        self.fidelity: dict[str, deque[tuple[float, float, float]]] = {}
        self.completed_by_node: dict[str, int] = {}

    def add(self, task_id: str, name: str, published: float, event: TaskEvent | None) -> None:
        """Fold one stored event of ``task_id`` into its row.

        Args:
            task_id: The task.
            name: The event's name (``EVENT``: its subject's token after the task id).
            published: When it was stored (Unix time).
            event: The decoded event, or None for one not in ``READ_BODIES`` (or undecodable).
        """
        row = self.rows.get(task_id)
        if row is None:
            row = self.rows[task_id] = TaskRow(task_id, first=published)
            while len(self.rows) > self.max_tasks:
                forgotten, _ = self.rows.popitem(last=False)
                self.changed.discard(forgotten)
        row.events.append(name)
        row.first = min(row.first, published)
        row.last = max(row.last, published)
        self.changed.add(task_id)
        if isinstance(event, TaskIngested):
            row.source = event.options.source or ""
        elif isinstance(event, TaskAllocated):
            row.node = "+".join(event.split.nodes) if event.split else event.node
            row.predicted = event.predicted_fidelity
        elif isinstance(event, TaskRunning):
            row.node = row.node or event.node
        elif isinstance(event, TaskCompleted):
            row.node = "+".join(event.nodes) if len(event.nodes) > 1 else event.node
            row.predicted = event.predicted_fidelity
            row.measured = event.measured_fidelity
            series = self.fidelity.setdefault(event.node, deque(maxlen=HISTORY))
            series.append((published, event.predicted_fidelity, event.measured_fidelity))
            self.completed_by_node[event.node] = self.completed_by_node.get(event.node, 0) + 1
        elif isinstance(event, TaskRejected | TaskFailed):
            row.error = f"{event.error.code} ({event.stage})"

    def take_changed(self) -> list[dict[str, Any]]:
        """The rows changed since the last call, as JSON."""
        changed = [self.rows[t].to_json() for t in self.changed if t in self.rows]
        self.changed.clear()
        return changed

    def all_rows(self) -> list[dict[str, Any]]:
        return [row.to_json() for row in self.rows.values()]

    def fidelity_series(self) -> dict[str, list[list[float]]]:
        """Per node, ``[time, predicted, measured]`` of its latest completed tasks."""
        return {node: [list(p) for p in points] for node, points in self.fidelity.items()}


@dataclass
class FlowMeter:
    """Rates, lag, errors and replicas from successive ``$SRV.STATS`` rounds.

    Per stage, the tasks per second are the growth of every instance's ``num_requests``
    between two rounds (an instance seen for the first time, or restarted, adds nothing).
    """

    previous: dict[tuple[str, str, str], int] = field(default_factory=dict)
    previous_at: float = 0.0
    rates: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)

    def update(self, replies: list[dict[str, Any]], now: float | None = None) -> dict[str, Any]:
        """Fold one round of STATS replies in; returns the flow page's figures."""
        now = time.time() if now is None else now
        counts: dict[tuple[str, str, str], int] = {}
        stages: dict[str, dict[str, Any]] = {}
        services: dict[str, dict[str, Any]] = {}
        for reply in replies:
            meta = reply.get("metadata", {})
            service = meta.get("service", reply.get("name", "?"))
            entry = services.setdefault(service, {"service": service, "replicas": 0, "ids": []})
            entry["replicas"] += 1
            entry["ids"].append(reply.get("id", ""))
            for endpoint in reply.get("endpoints", []):
                name = endpoint.get("name", "?")
                stage = stages.setdefault(
                    name,
                    {"stage": name, "service": service, "handled": 0, "errors": 0, "lag": None},
                )
                stage["handled"] += endpoint.get("num_requests", 0)
                stage["errors"] += endpoint.get("num_errors", 0)
                lag = endpoint.get("data", {}).get("lag")
                if lag is not None:  # a figure of the shared consumer: every replica reports it
                    stage["lag"] = max(stage["lag"] or 0, lag)
                counts[(service, reply.get("id", ""), name)] = endpoint.get("num_requests", 0)
        elapsed = now - self.previous_at
        for (service, id_, name), count in counts.items():
            before = self.previous.get((service, id_, name))
            grown = count - before if before is not None and count >= before else 0
            stages[name].setdefault("grown", 0)
            stages[name]["grown"] += grown
        for name, stage in stages.items():
            rate = stage.pop("grown", 0) / elapsed if self.previous and elapsed > 0 else 0.0
            stage["rate"] = round(rate, 2)
            self.rates.setdefault(name, deque(maxlen=HISTORY)).append((now, stage["rate"]))
            stage["history"] = [list(p) for p in self.rates[name]]
        self.lag = {name: s["lag"] for name, s in stages.items() if s["lag"] is not None}
        self.previous, self.previous_at = counts, now
        return {
            "at": now,
            "stages": sorted(stages.values(), key=lambda s: s["stage"]),
            "services": sorted(services.values(), key=lambda s: s["service"]),
        }


def fleet_view(
    nodes: dict[str, NodeStatus],
    links: list[LinkStatus],
    fidelity: dict[str, list[list[float]]],
    revisions: dict[str, list[str]],
    *,
    now: float,
    node_timeout_s: float,
) -> dict[str, Any]:
    """The fleet page's figures.

    Args:
        nodes: The latest status of every node (KV ``qubus_nodes``).
        links: Every link's status.
        fidelity: Per node, ``[time, predicted, measured]`` of its latest completed tasks.
        revisions: Per node, the calibration revisions seen so far, oldest first (drift).
        now: The current Unix time.
        node_timeout_s: A status older than this means the node is offline.
    """
    rows = []
    for node, status in sorted(nodes.items()):
        calibrated_at = status.device.get("calibrated_at")
        rows.append(
            {
                "node": node,
                "kind": status.kind,
                "qubits": status.n_qubits,
                "queue": status.queue_depth,
                "background": status.background_jobs,
                "busy": status.busy,
                "online": now - status.updated_at <= node_timeout_s,
                "status_age_s": round(now - status.updated_at, 1),
                "calibration": status.calibration_revision,
                "calibrated_at": calibrated_at,
                "recalibrations": max(0, len(revisions.get(node, [])) - 1),
                "mean_job_ms": round(status.mean_job_s * 1000, 2),
                "fidelity": fidelity.get(node, []),
            }
        )
    return {
        "nodes": rows,
        "links": [
            {
                "a": link.a,
                "b": link.b,
                "fidelity": link.expected_fidelity,
                "latency_ms": round(link.expected_latency_s * 1000, 3),
                "purify_below": link.purify_below,
                "reservations": link.reservations,
                "pairs_reserved": link.pairs_reserved,
                "pairs_served": link.pairs_served,
            }
            for link in links
        ],
    }

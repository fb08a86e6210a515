"""Prometheus metrics of one process (``prometheus-client``), every series named ``qubus_*``.

Each process keeps its own registry, ``REGISTRY``:

- ``qubus_tasks_handled_total{stage, outcome}``: messages a stage (or request endpoint) handled,
  by outcome (``ok``, ``rejected``, ``failed``, ``retry``, ``invalid``, ``error``; ``refused``
  for a request), counted where ``$SRV.STATS`` counts them (``Endpoint.record``);
- ``qubus_tasks_failed_total{stage, outcome}``: those of them that did not go on (every outcome
  but ``ok`` and ``retry``);
- ``qubus_stage_latency_seconds{stage}``: a histogram of the time a stage spent on a message;
- ``qubus_qpu_queue_length{node}``: a QPU node's queue (its own tasks plus background jobs),
  set by the node each time it publishes its status;
- ``qubus_fidelity_error{node}``: a histogram of predicted − measured fidelity of every
  completed task, observed by fusion's ``outcomes`` stage.

The registry is not served per process: it travels in each process's ``$SRV.STATS`` reply
(``exposition``, under ``metrics``), and ``qubus dashboard`` serves every process's series on
its ``/metrics``, with ``service`` and ``instance`` labels and the consumer lag it reads from
the same replies.
"""

from __future__ import annotations

import functools

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()
GOING_ON = frozenset({"ok", "retry"})
"""Outcomes after which the task goes on (not counted as failed)."""

TASKS_HANDLED = Counter(
    "qubus_tasks_handled",
    "Messages a stage handled, by outcome",
    ["stage", "outcome"],
    registry=REGISTRY,
)
TASKS_FAILED = Counter(
    "qubus_tasks_failed",
    "Messages after which a stage did not pass the task on (rejected, failed, invalid, error)",
    ["stage", "outcome"],
    registry=REGISTRY,
)
STAGE_LATENCY = Histogram(
    "qubus_stage_latency_seconds",
    "Time a stage spent handling one message",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
QPU_QUEUE = Gauge(
    "qubus_qpu_queue_length",
    "Tasks and background jobs queued on a QPU node",
    ["node"],
    registry=REGISTRY,
)
FIDELITY_ERROR = Histogram(
    "qubus_fidelity_error",
    "Predicted minus measured fidelity of completed tasks",
    ["node"],
    buckets=(-0.2, -0.1, -0.05, -0.02, -0.01, 0, 0.01, 0.02, 0.05, 0.1, 0.2),
    registry=REGISTRY,
)


def observe_handled(stage: str, outcome: str, seconds: float) -> None:
    """Count one message ``stage`` handled with ``outcome`` in ``seconds``."""
    handled, failed, latency = _series(stage, outcome)
    handled.inc()
    if failed is not None:
        failed.inc()
    latency.observe(seconds)


@functools.cache
def _series(stage: str, outcome: str) -> tuple[Counter, Counter | None, Histogram]:
    """The series ``observe_handled`` adds to for ``stage`` and ``outcome``, looked up once
    (``labels`` builds and checks its key on every call); stages and outcomes are few."""
    failed = None if outcome in GOING_ON else TASKS_FAILED.labels(stage, outcome)
    return TASKS_HANDLED.labels(stage, outcome), failed, STAGE_LATENCY.labels(stage)


def exposition() -> str:
    """This process's series in Prometheus's text format."""
    return generate_latest(REGISTRY).decode()

"""``qubus report``: figures computed from stored task events, and a self-contained HTML page.

Everything here works on ``StoredEvent`` lists already read from stream ``QUBUS_TASKS`` (the
CLI reads them); nothing talks to a server. The figures (``Figures``) are what ``--json``
prints and what the plots show:

- **occupancy**: per QPU node, each task's run interval, from the moment the node began
  handling it (the ``running`` event's ``Qubus-Started``) to its terminal event
  (``completed``, or ``failed``/``rejected``). Nodes are FIFO, one task at a time, so a
  node's intervals never overlap.
- **fidelity**: per completed task, the predicted (fusion's) and measured (Hellinger, vs ideal)
  fidelity.
- **queue**: per node, the tasks allocated to it and not yet ended, as a step series
  (``+1`` at ``allocated``, ``-1`` at the task's terminal event), the running task included,
  as the QPU counts its own queue depth.
- **periods**: the stretches of time in which some QPU was busy or had tasks queued; the time
  plots show only these, cutting out long idle gaps (``active_periods``).
- **latency_ms**: per stage (the event it publishes), how long the stage handled each task:
  ``stage_rows``' ``duration_ms``.
- **bench**: the policy comparison of ``qubus bench schedule --json``, when given.

Times are Unix seconds; the plots show them relative to the first event (``origin``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from qubus.bus.connection import StoredEvent, believed_events
from qubus.bus.messages import TYPES, TaskAllocated, TaskCompleted, TaskEvent, TaskRunning
from qubus.client.aio import stage_rows, status_of
from qubus.errors import QubusError

STAGE_ORDER = tuple(cls.EVENT for cls in TYPES.values() if issubclass(cls, TaskEvent))
"""Task events in pipeline order (the order ``qubus.bus.messages.TYPES`` lists them)."""

BENCH_METRICS = {
    "throughput": "higher is better",
    "makespan": "lower is better",
    "mean_jct": "lower is better",
    "p95_jct": "lower is better",
    "mean_fidelity": "higher is better",
    "utilisation": "higher is better",
    "decision_ms": "lower is better",
    "objective": "",
}
"""The per-policy figures of ``qubus bench schedule --json``, in the order they are shown."""

DPI = 110
LOG_FLOOR_MS = 0.01
"""Latencies are drawn on a log axis; shorter ones (a stage that only republishes) sit here."""
IDLE_GAP_S = 5.0
IDLE_GAP_SHARE = 0.1
MAX_PERIODS = 5
"""QPU activity separated by an idle gap of at least ``IDLE_GAP_S`` and ``IDLE_GAP_SHARE`` of
the whole is shown as separate periods (at most ``MAX_PERIODS``), the idle time cut out."""


@dataclass(frozen=True)
class Interval:
    """One task's stay on a QPU node: from the node taking it to its end event."""

    task_id: str
    node: str
    start: float
    end: float
    status: str


@dataclass(frozen=True)
class FidelityPoint:
    """A completed task's predicted and measured fidelity on the node that ran it."""

    task_id: str
    node: str
    predicted: float
    measured: float


@dataclass(frozen=True)
class Figures:
    """The numbers behind every section of the report (``--json`` prints them)."""

    events: int
    origin: float | None
    end: float | None
    since: float | None
    summary: dict[str, Any]
    occupancy: dict[str, list[Interval]]
    fidelity: list[FidelityPoint]
    queue: dict[str, list[tuple[float, int]]]
    periods: list[tuple[float, float]]
    latency_ms: dict[str, list[float]]
    bench: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The figures as JSON-compatible data."""
        data = asdict(self)
        data["queue"] = {node: [list(step) for step in steps] for node, steps in self.queue.items()}
        data["periods"] = [list(period) for period in self.periods]
        return data


# ------------------------------------------------------------------ options


def load_bench(path: Path) -> dict[str, Any]:
    """Read ``qubus bench schedule --json`` output: ``{seed, workload, policies: {NAME: {...}}}``.

    Only numeric figures are kept per policy; a metric a policy lacks is absent from it.

    Raises:
        QubusError: ``report.bench`` if the file cannot be read, has no ``policies`` object
            of objects, or no policy reports any of ``BENCH_METRICS``.
    """
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise QubusError(f"cannot read {path}: {exc.strerror}", code="report.bench") from exc
    except ValueError as exc:
        raise QubusError(f"{path} is not JSON: {exc}", code="report.bench") from exc
    policies = data.get("policies") if isinstance(data, dict) else None
    if (
        not isinstance(policies, dict)
        or not policies
        or not all(isinstance(figures, dict) for figures in policies.values())
    ):
        raise QubusError(
            f"{path} has no `policies` object of per-policy figures "
            "(expected the output of `qubus bench schedule --json`)",
            code="report.bench",
        )
    bench = {
        "seed": data.get("seed"),
        "workload": data.get("workload"),
        "policies": {
            str(name): {
                metric: float(value) for metric, value in figures.items() if _is_number(value)
            }
            for name, figures in policies.items()
        },
    }
    if not bench_metrics(bench):
        raise QubusError(
            f"{path}: no policy reports any of {', '.join(BENCH_METRICS)}", code="report.bench"
        )
    return bench


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ------------------------------------------------------------------ figures


def by_task(events: Iterable[StoredEvent]) -> dict[str, list[StoredEvent]]:
    """Events grouped by task, each task's in stream order and as believed
    (``believed_events``)."""
    tasks: dict[str, list[StoredEvent]] = defaultdict(list)
    for stored in sorted(events, key=lambda s: s.sequence):
        tasks[stored.event.task_id].append(stored)
    return {task_id: believed_events(task) for task_id, task in tasks.items()}


def _terminal(events: Sequence[StoredEvent]) -> StoredEvent | None:
    return next((s for s in events if s.event.TERMINAL), None)


def _first(events: Sequence[StoredEvent], cls: type[TaskEvent]) -> StoredEvent | None:
    return next((s for s in events if isinstance(s.event, cls)), None)


def occupancy(tasks: Mapping[str, Sequence[StoredEvent]]) -> dict[str, list[Interval]]:
    """Per node, the run intervals of its tasks, sorted by start.

    A task counts once both its ``running`` event and its terminal event (``completed``, or
    ``failed``/``rejected`` if the run did not complete) are among the events; tasks still
    running, or whose start is older than the events read, are left out.
    """
    nodes: dict[str, list[Interval]] = defaultdict(list)
    for task_id, events in tasks.items():
        running, end = _first(events, TaskRunning), _terminal(events)
        if running is None or end is None:
            continue
        start = running.started if running.started is not None else running.published
        node = running.event.node
        nodes[node].append(Interval(task_id, node, start, end.published, status_of(events)))
    return {node: sorted(runs, key=lambda r: r.start) for node, runs in sorted(nodes.items())}


def fidelity_points(tasks: Mapping[str, Sequence[StoredEvent]]) -> list[FidelityPoint]:
    """Predicted and measured fidelity of every completed task, in order of completion."""
    completed = [done for events in tasks.values() if (done := _first(events, TaskCompleted))]
    return [
        FidelityPoint(
            done.event.task_id,
            done.event.node,
            done.event.predicted_fidelity,
            done.event.measured_fidelity,
        )
        for done in sorted(completed, key=lambda done: done.published)
    ]


def queue_series(tasks: Mapping[str, Sequence[StoredEvent]]) -> dict[str, list[tuple[float, int]]]:
    """Per node, its queue length after each change: ``[(time, length), ...]``.

    A task joins its node's queue when allocated and leaves at its terminal event; a task
    whose allocation is not among the events is left out entirely (it would only leave).
    Changes at the same instant apply departures first.
    """
    changes: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for events in tasks.values():
        allocated = _first(events, TaskAllocated)
        if allocated is None:
            continue
        node = allocated.event.node
        changes[node].append((allocated.published, +1))
        end = _terminal(events)
        if end is not None:
            changes[node].append((end.published, -1))
    series = {}
    for node, steps in sorted(changes.items()):
        length, points = 0, []
        for moment, delta in sorted(steps):
            length += delta
            points.append((moment, length))
        series[node] = points
    return series


def active_periods(
    runs: Mapping[str, Sequence[Interval]],
    queue: Mapping[str, Sequence[tuple[float, int]]],
    end: float,
    *,
    max_periods: int = MAX_PERIODS,
) -> list[tuple[float, float]]:
    """The stretches of time in which some QPU had a task queued or running.

    Busy spans (runs, and the times a node's queue is not empty; a queue still not empty
    lasts until ``end``) are joined across idle gaps shorter than ``IDLE_GAP_S`` or
    ``IDLE_GAP_SHARE`` of the whole, then across the shortest gaps until at most
    ``max_periods`` remain. The time plots show only these, so bursts minutes apart stay
    readable.
    """
    spans = [(run.start, run.end) for node_runs in runs.values() for run in node_runs]
    for steps in queue.values():
        begun = None
        for moment, length in steps:
            if length > 0 and begun is None:
                begun = moment
            elif length == 0 and begun is not None:
                spans.append((begun, moment))
                begun = None
        if begun is not None:
            spans.append((begun, end))
    if not spans:
        return []
    spans.sort()
    bridge = max(IDLE_GAP_S, IDLE_GAP_SHARE * (max(e for _, e in spans) - spans[0][0]))
    periods = [list(spans[0])]
    for start, stop in spans[1:]:
        if start - periods[-1][1] < bridge:
            periods[-1][1] = max(periods[-1][1], stop)
        else:
            periods.append([start, stop])
    while len(periods) > max_periods:
        shortest = min(range(1, len(periods)), key=lambda i: periods[i][0] - periods[i - 1][1])
        periods[shortest - 1][1] = periods.pop(shortest)[1]
    return [(start, stop) for start, stop in periods]


def stage_latencies(tasks: Mapping[str, Sequence[StoredEvent]]) -> dict[str, list[float]]:
    """Per stage (the event it published), every task's handling time in ms, pipeline order."""
    latencies: dict[str, list[float]] = defaultdict(list)
    for events in tasks.values():
        for row in stage_rows(list(events)):
            latencies[row["event"]].append(row["duration_ms"])
    return {stage: latencies[stage] for stage in _stage_order(latencies)}


def _stage_order(stages: Iterable[str]) -> list[str]:
    known = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    return sorted(stages, key=lambda s: (known.get(s, len(known)), s))


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(
    tasks: Mapping[str, Sequence[StoredEvent]],
    runs: Mapping[str, Sequence[Interval]],
    points: Sequence[FidelityPoint],
    window_s: float,
) -> dict[str, Any]:
    """Tasks by status; per node the tasks allocated, its runs done and failed (ended
    without completing), its busy time and utilisation over the window, and mean fidelities;
    the overall mean fidelities."""
    allocated = Counter(
        s.event.node for events in tasks.values() if (s := _first(events, TaskAllocated))
    )
    nodes = {}
    for node in sorted(set(allocated) | set(runs)):
        node_runs = runs.get(node, [])
        node_points = [p for p in points if p.node == node]
        busy = sum(r.end - r.start for r in node_runs)
        nodes[node] = {
            "allocated": allocated[node],
            "done": sum(r.status == "done" for r in node_runs),
            "failed": sum(r.status != "done" for r in node_runs),
            "busy_s": busy,
            "utilisation": busy / window_s if window_s > 0 else None,
            "mean_predicted_fidelity": _mean([p.predicted for p in node_points]),
            "mean_measured_fidelity": _mean([p.measured for p in node_points]),
        }
    return {
        "tasks": len(tasks),
        "by_status": dict(Counter(status_of(list(events)) for events in tasks.values())),
        "nodes": nodes,
        "mean_predicted_fidelity": _mean([p.predicted for p in points]),
        "mean_measured_fidelity": _mean([p.measured for p in points]),
    }


def build_figures(
    events: Sequence[StoredEvent],
    *,
    since: float | None = None,
    bench: dict[str, Any] | None = None,
) -> Figures:
    """Every figure of the report from the task events read (in any order).

    Args:
        events: Stored task events, e.g. everything in ``QUBUS_TASKS`` since ``since``.
        since: The start of the window read, recorded for the page (None: everything).
        bench: ``load_bench``'s result, or None.
    """
    tasks = by_task(events)
    origin = min((s.published for s in events), default=None)
    end = max((s.published for s in events), default=None)
    runs = occupancy(tasks)
    points = fidelity_points(tasks)
    queue = queue_series(tasks)
    window = (end - origin) if origin is not None and end is not None else 0.0
    return Figures(
        events=len(events),
        origin=origin,
        end=end,
        since=since,
        summary=summarise(tasks, runs, points, window),
        occupancy=runs,
        fidelity=points,
        queue=queue,
        periods=active_periods(runs, queue, end or 0.0),
        latency_ms=stage_latencies(tasks),
        bench=bench,
    )


# ------------------------------------------------------------------ plots

BREAK_MARK = {
    "marker": [(-1, -1), (1, 1)],
    "markersize": 8,
    "linestyle": "none",
    "color": "black",
    "clip_on": False,
}
"""Where a time axis is cut: a slanted tick on the axis line."""


def node_colours(nodes: Iterable[str]) -> dict[str, str]:
    """One colour per node (sorted), the same in every plot."""
    palette = colormaps["tab10"]
    return {node: to_hex(palette(i % 10)) for i, node in enumerate(sorted(set(nodes)))}


def _utc(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _darker(colour: str, factor: float = 0.6) -> tuple[float, float, float]:
    red, green, blue = to_rgb(colour)
    return red * factor, green * factor, blue * factor


def _period_axes(fig: Figure, rows: int, figures: Figures) -> Any:
    """A grid of axes, one row per ``rows`` and one column per active period, each column's
    time axis limited to its period (seconds since the origin) and as wide as its length
    (at least a tenth of the whole), with break marks where idle time is cut out."""
    origin = figures.origin or 0.0
    periods = figures.periods
    total = sum(stop - start for start, stop in periods)
    widths = [max(stop - start, 0.1 * total, 1e-3) for start, stop in periods]
    axes = fig.subplots(
        rows, len(periods), sharex="col", sharey=True, squeeze=False, width_ratios=widths
    )
    fig.get_layout_engine().set(wspace=0.01)
    for column, (start, stop) in enumerate(periods):
        pad = max(0.02 * (stop - start), 0.05)
        axes[0, column].set_xlim(start - origin - pad, stop - origin + pad)
        share = widths[column] / sum(widths)
        for ax in axes[:, column]:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=max(2, round(8 * share))))
            ax.grid(axis="x", alpha=0.3)
            if column > 0:
                ax.spines["left"].set_visible(False)
                ax.tick_params(left=False)
                ax.plot([0, 0], [0, 1], transform=ax.transAxes, **BREAK_MARK)
            if column < len(periods) - 1:
                ax.spines["right"].set_visible(False)
                ax.plot([1, 1], [0, 1], transform=ax.transAxes, **BREAK_MARK)
    fig.supxlabel(f"seconds since {_utc(origin)}" + (", idle time cut" if len(periods) > 1 else ""))
    return axes


def plot_occupancy(figures: Figures, colours: Mapping[str, str]) -> Figure:
    """Gantt chart: one row per node, one bar per task run (not completed: hatched)."""
    nodes = list(figures.occupancy)
    fig = Figure(figsize=(10, 1.2 + 0.55 * len(nodes)), layout="constrained")
    axes = _period_axes(fig, 1, figures)[0]
    origin = figures.origin or 0.0
    for ax in axes:
        for row, node in enumerate(nodes):
            for completed in (True, False):
                ax.broken_barh(
                    [
                        (run.start - origin, run.end - run.start)
                        for run in figures.occupancy[node]
                        if (run.status == "done") == completed
                    ],
                    (row - 0.35, 0.7),
                    facecolors=colours[node],
                    edgecolors=_darker(colours[node]),
                    linewidth=0.5,
                    hatch=None if completed else "///",
                )
    labels = []
    for node in nodes:
        runs = len(figures.occupancy[node])
        share = figures.summary["nodes"][node]["utilisation"]
        busy = f", {share:.0%} busy" if share is not None else ""
        labels.append(f"{node}\n{runs} run{'s' if runs != 1 else ''}{busy}")
    axes[0].set_yticks(range(len(nodes)), labels)
    axes[0].set_ylim(len(nodes) - 0.5, -0.5)
    fig.suptitle("QPU occupancy: one bar per task, from running to completed (failed: hatched)")
    return fig


def plot_fidelity(figures: Figures, colours: Mapping[str, str]) -> Figure:
    """Scatter of measured against predicted fidelity, one colour per node, with y = x."""
    fig = Figure(figsize=(6.5, 6), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="y = x")
    for node in sorted({p.node for p in figures.fidelity}):
        points = [p for p in figures.fidelity if p.node == node]
        error = _mean([abs(p.measured - p.predicted) for p in points]) or 0.0
        ax.scatter(
            [p.predicted for p in points],
            [p.measured for p in points],
            color=colours[node],
            edgecolors="black",
            linewidths=0.4,
            s=36,
            label=f"{node} (n={len(points)}, mean |Δ| {error:.3f})",
        )
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("predicted fidelity (fusion)")
    ax.set_ylabel("measured fidelity (Hellinger, vs ideal)")
    ax.set_title("Predicted against measured fidelity")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    return fig


def plot_queue(figures: Figures, colours: Mapping[str, str]) -> Figure:
    """One panel per node: tasks allocated to it and not yet ended, over time."""
    nodes = list(figures.queue)
    fig = Figure(figsize=(10, 0.8 + 1.3 * len(nodes)), layout="constrained")
    axes = _period_axes(fig, len(nodes), figures)
    origin = figures.origin or 0.0
    first, last = figures.periods[0][0] - origin, figures.periods[-1][1] - origin
    top = max((n for steps in figures.queue.values() for _, n in steps), default=1)
    for row, node in enumerate(nodes):
        steps = figures.queue[node]
        xs = [first - 1.0] + [t - origin for t, _ in steps] + [last + 1.0]
        ys = [0] + [n for _, n in steps] + [steps[-1][1]]
        for ax in axes[row]:
            ax.fill_between(xs, ys, step="post", color=colours[node], alpha=0.35)
            ax.step(xs, ys, where="post", color=colours[node], linewidth=1.2)
            ax.grid(axis="y", alpha=0.3)
        axes[row, 0].set_ylabel(node, rotation=0, ha="right", va="center")
    axes[0, 0].set_ylim(0, top + 0.5)
    axes[0, 0].yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Queue length per node (allocated, not yet ended; running task included)")
    return fig


def plot_latency(figures: Figures) -> Figure:
    """Horizontal box plots of each stage's handling time (log scale), pipeline order."""
    stages = list(figures.latency_ms)
    fig = Figure(figsize=(10, 1.0 + 0.45 * len(stages)), layout="constrained")
    ax = fig.subplots()
    data = [[max(v, LOG_FLOOR_MS) for v in figures.latency_ms[s]] for s in stages]
    ax.boxplot(
        data,
        orientation="horizontal",
        tick_labels=[f"{s} (n={len(figures.latency_ms[s])})" for s in stages],
        showfliers=False,
        widths=0.6,
        medianprops={"color": "black"},
        patch_artist=True,
        boxprops={"facecolor": "#cfe3f3"},
    )
    for row, values in enumerate(data, start=1):
        jitter = [row + 0.25 * math.sin(i * 2.39996) for i in range(len(values))]
        ax.scatter(values, jitter, s=6, color="#1f4e79", alpha=0.6, zorder=3)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("stage handling time per task, ms (log scale)")
    ax.set_title("Stage latency: from the stage taking a task to publishing this event")
    ax.grid(axis="x", which="major", alpha=0.4)
    ax.grid(axis="x", which="minor", alpha=0.12)
    return fig


def bench_metrics(bench: Mapping[str, Any]) -> list[str]:
    """The known metrics (``BENCH_METRICS`` order) that at least one policy reports."""
    policies = bench["policies"].values()
    return [metric for metric in BENCH_METRICS if any(metric in figs for figs in policies)]


def plot_bench(bench: Mapping[str, Any]) -> Figure:
    """One bar chart per metric, one bar per policy."""
    policies = bench["policies"]
    names = list(policies)
    metrics = bench_metrics(bench)
    columns = min(4, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    fig = Figure(figsize=(3.2 * columns, 0.6 + 2.7 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    palette = colormaps["Set2"]
    for ax, metric in zip(axes, metrics, strict=False):
        values = [policies[name].get(metric, math.nan) for name in names]
        bars = ax.bar(range(len(names)), values, color=[palette(i % 8) for i in range(len(names))])
        ax.bar_label(bars, labels=[_figure(v) for v in values], fontsize="small")
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        direction = BENCH_METRICS[metric]
        ax.set_title(f"{metric}\n({direction})" if direction else metric, fontsize="medium")
        ax.margins(y=0.2)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(f"Scheduling policies: {bench_label(bench)}")
    return fig


def bench_label(bench: Mapping[str, Any], *, limit: int = 90) -> str:
    """``workload W, seed S``; a workload given as an object is shown as compact JSON, cut
    to ``limit`` characters."""
    workload = bench.get("workload")
    text = workload if isinstance(workload, str) else json.dumps(workload, separators=(",", ":"))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"workload {text}, seed {bench.get('seed')}"


def _figure(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3g}"


def png_data_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (no file, no external reference)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ------------------------------------------------------------------ HTML

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
section { margin-bottom: 2.5em; }
.note { color: #555; }
"""


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return _figure(value)
    return "–" if value is None else str(value)


def _section(anchor: str, title: str, note: str, body: str) -> str:
    return (
        f'<section id="{anchor}"><h2>{html.escape(title)}</h2>'
        f'<p class="note">{html.escape(note)}</p>{body}</section>'
    )


def _image(fig: Figure, alt: str) -> str:
    return f'<img src="{png_data_uri(fig)}" alt="{html.escape(alt)}">'


def _summary_html(figures: Figures) -> str:
    summary = figures.summary
    statuses = _table(["status", "tasks"], sorted(summary["by_status"].items()))
    nodes = _table(
        ["node", "allocated", "done", "failed", "busy s", "utilisation", "predicted", "measured"],
        [
            [
                node,
                row["allocated"],
                row["done"],
                row["failed"],
                row["busy_s"],
                None if row["utilisation"] is None else f"{row['utilisation']:.1%}",
                row["mean_predicted_fidelity"],
                row["mean_measured_fidelity"],
            ]
            for node, row in summary["nodes"].items()
        ],
    )
    means = (
        f"<p>{summary['tasks']} tasks, {figures.events} events. Mean fidelity over completed "
        f"tasks: predicted {_cell(summary['mean_predicted_fidelity'])}, measured "
        f"{_cell(summary['mean_measured_fidelity'])}.</p>"
    )
    return _section(
        "summary",
        "Summary",
        "Per node: tasks allocated to it, done and failed there; time spent running them "
        "and its share of the report's window; mean predicted and measured fidelity of its "
        "completed tasks.",
        means + statuses + nodes,
    )


def _bench_html(bench: Mapping[str, Any] | None) -> str:
    if bench is None:
        note = "No policy comparison given."
        body = (
            "<p>Run <code>qubus report --bench FILE.json</code> with the output of "
            "<code>qubus bench schedule --json</code> to compare scheduling policies here.</p>"
        )
    else:
        note = f"From qubus bench schedule --json: {bench_label(bench)}."
        metrics = bench_metrics(bench)
        rows = [[name, *(figs.get(m) for m in metrics)] for name, figs in bench["policies"].items()]
        body = _image(plot_bench(bench), "policy comparison") + _table(["policy", *metrics], rows)
    return _section("bench", "5. Policy comparison", note, body)


def render_html(figures: Figures) -> str:
    """The report as one HTML page: every plot an embedded PNG, no external reference."""
    colours = node_colours(
        [*figures.occupancy, *figures.queue, *(p.node for p in figures.fidelity)]
    )
    window = (
        f"from {_utc(figures.origin)} to {_utc(figures.end)}"
        if figures.origin is not None and figures.end is not None
        else "no task events"
    )
    since = f" (events since {_utc(figures.since)})" if figures.since is not None else ""
    plots = [
        (
            "occupancy",
            "1. QPU occupancy",
            "Per node, each task's run: from the node taking it (running) to completed or "
            "failed (hatched). Nodes run one task at a time, first in first out.",
            figures.occupancy,
            lambda: plot_occupancy(figures, colours),
        ),
        (
            "fidelity",
            "2. Predicted against measured fidelity",
            "One point per completed task; points under the dashed line did worse than predicted.",
            figures.fidelity,
            lambda: plot_fidelity(figures, colours),
        ),
        (
            "queue",
            "3. Queue length per node",
            "Tasks allocated to the node and not yet ended (the running one included), from "
            "the allocated and terminal events.",
            figures.queue,
            lambda: plot_queue(figures, colours),
        ),
        (
            "latency",
            "4. Stage latency",
            "Per stage, each task's handling time: from the stage taking the task to "
            "publishing the event (completed: the QPU's whole run). Boxes span the quartiles; "
            "whiskers 1.5 IQR; dots are tasks.",
            figures.latency_ms,
            lambda: plot_latency(figures),
        ),
    ]
    sections = [
        _section(anchor, title, note, _image(draw(), title) if data else "<p>No data.</p>")
        for anchor, title, note, data, draw in plots
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>qubus report</title><style>{STYLE}</style></head><body>"
        f"<h1>qubus report</h1><p>Task events {window}{html.escape(since)}.</p>"
        + _summary_html(figures)
        + "".join(sections)
        + _bench_html(figures.bench)
        + "</body></html>\n"
    )

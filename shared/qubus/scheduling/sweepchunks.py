"""A sweep's points cut into chunks, one per node, so that the nodes end together; and the
sweep's progress and end read from its chunks' reports.

The allocator places a sweep (``TaskOptions.sweep``) as its policy places any task, then
shares its points among the eligible nodes (``share_points``): each node ``i`` is free after
``queue_s`` and runs a point in ``point_s`` (wall seconds), so giving it
``(T - queue_s) / point_s`` points ends every node at the same time ``T`` (water-filling);
a node that would get fewer than ``MIN_CHUNK_POINTS`` is left out (the fixed cost of a chunk,
its job overhead and worker calls, is not worth it), and the shares are cut into contiguous
ranges of points (``chunk_ranges``). Each chunk is one allocation (``SweepChunk``); its node
reports ``SweepProgress`` after each batch of points, and the sweep has ended once every
chunk reports all its points done (``sweep_end``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qubus.bus.messages import SweepChunk, SweepProgress

MIN_CHUNK_POINTS = 10
"""Fewest points a node is given; a sweep of fewer than twice as many is never cut."""
MIN_POINT_S = 1e-6
"""A node's time per point is taken as at least this (a score without a run time)."""


@dataclass(frozen=True)
class NodeRate:
    """How soon a node can take a sweep's points and how fast it runs them.

    Attributes:
        node: The node id.
        queue_s: Wall seconds until the node is free.
        point_s: Wall seconds the node is held per point.
    """

    node: str
    queue_s: float
    point_s: float


def _finish_time(total: int, rates: Sequence[NodeRate]) -> float:
    """The time ``T`` at which ``rates`` end together when they share ``total`` points, each
    starting at its ``queue_s`` (only nodes free before ``T`` take part)."""
    active = sorted(rates, key=lambda r: r.queue_s)
    while True:
        speed = sum(1 / r.point_s for r in active)
        finish = (total + sum(r.queue_s / r.point_s for r in active)) / speed
        if active[-1].queue_s < finish or len(active) == 1:
            return finish
        active.pop()  # free only after the others would have ended


def share_points(
    total: int, rates: Sequence[NodeRate], *, min_points: int = MIN_CHUNK_POINTS
) -> list[tuple[str, int]]:
    """How many of ``total`` points each node runs so that all end together, in the order of
    ``rates``, leaving out nodes that would get fewer than ``min_points`` (the node with the
    smallest share first, until every share is large enough). At least one node keeps every
    point: the first of ``rates`` when ``total`` is too small to cut.

    Args:
        total: The sweep's points.
        rates: The eligible nodes; the first is the policy's choice.
        min_points: Fewest points a node is given.
    """
    if not rates:
        raise ValueError("a sweep needs at least one node")
    if total < 2 * min_points:
        return [(rates[0].node, total)]  # too small to cut: the policy's choice runs it all
    kept = [NodeRate(r.node, max(0.0, r.queue_s), max(r.point_s, MIN_POINT_S)) for r in rates]
    while True:
        finish = _finish_time(total, kept)
        exact = {r.node: max(0.0, (finish - r.queue_s) / r.point_s) for r in kept}
        smallest = min(kept, key=lambda r: exact[r.node])
        if exact[smallest.node] >= min_points or len(kept) == 1:
            break
        kept.remove(smallest)
    counts = {node: math.floor(value) for node, value in exact.items()}
    # The points lost to rounding go to the largest remainders (ties: the earlier node).
    order = sorted(kept, key=lambda r: counts[r.node] - exact[r.node])
    for r in order[: total - sum(counts.values())]:
        counts[r.node] += 1
    return [(r.node, counts[r.node]) for r in rates if counts.get(r.node)]


def chunk_ranges(shares: Sequence[tuple[str, int]]) -> list[tuple[str, SweepChunk]]:
    """Each share as a chunk of contiguous points, in order: the first node's points first."""
    chunks = []
    first = 0
    for index, (node, count) in enumerate(shares):
        chunk = SweepChunk(index=index, chunks=len(shares), first=first, stop=first + count)
        chunks.append((node, chunk))
        first += count
    return chunks


FIRST_BATCH_POINTS = 10
"""Points in a QPU node's first batch of a sweep's chunk, before their hold is known."""

BATCH_HOLD_S = 0.1
"""Wall time a later batch holds its node (modelled time × ``time_scale``). Between batches
the node publishes the chunk's progress and checks for cancellation, so a cancel takes effect
within about this; each batch also costs its round trips (those checks, the worker call, the
points' publications). The 200-point QAOA sweep on ibm_nairobi (``time_scale`` 0.01, its
modelled hold 0.55 s) took 0.95 s from allocation to its last point in batches of 10 points,
and 0.57-0.71 s in batches of 50."""

BATCH_POINTS_MAX = 50
"""Most points in one batch."""


def batch_points(hold_per_point_s: float) -> int:
    """Points in a QPU node's next batch of sweep points, each of which holds the node for
    ``hold_per_point_s`` of wall time: ``BATCH_HOLD_S`` of them, between 1 and
    ``BATCH_POINTS_MAX``."""
    if hold_per_point_s <= 0:
        return BATCH_POINTS_MAX
    return max(1, min(BATCH_POINTS_MAX, int(BATCH_HOLD_S / hold_per_point_s)))


def latest_reports(reports: Iterable[SweepProgress]) -> dict[int, SweepProgress]:
    """Each chunk's furthest report, by chunk index."""
    latest: dict[int, SweepProgress] = {}
    for report in reports:
        seen = latest.get(report.chunk)
        if seen is None or report.done > seen.done:
            latest[report.chunk] = report
    return latest


def sweep_progress(reports: Iterable[SweepProgress], points: int) -> tuple[int, int]:
    """The sweep's points ended so far (the sum of its chunks' furthest reports) and its
    points in all."""
    return sum(r.done for r in latest_reports(reports).values()), points


@dataclass(frozen=True)
class SweepEnd:
    """A sweep whose every chunk has reported all its points ended.

    Attributes:
        nodes: The chunks' nodes, in chunk order, each once.
        completed: Points that completed (the rest were cancelled one by one).
        measured_sum: The completed points' measured fidelities, summed.
        predicted_sum: The completed points' predicted fidelities (each its chunk's), summed.
        emulated_s: The chunks' modelled run times, summed.
    """

    nodes: list[str]
    completed: int
    measured_sum: float
    predicted_sum: float
    emulated_s: float


def sweep_end(reports: Iterable[SweepProgress]) -> SweepEnd | None:
    """The sweep's end once every one of its chunks reports all its points ended, else None
    (a chunk not reported yet, or not finished)."""
    latest = latest_reports(reports)
    if not latest:
        return None
    chunks = next(iter(latest.values())).chunks
    if len(latest) < chunks or any(r.done < r.points for r in latest.values()):
        return None
    ordered = [latest[index] for index in sorted(latest)]
    return SweepEnd(
        nodes=list(dict.fromkeys(r.node for r in ordered)),
        completed=sum(r.completed for r in ordered),
        measured_sum=sum(r.fidelity_sum for r in ordered),
        predicted_sum=sum(r.predicted_fidelity * r.completed for r in ordered),
        emulated_s=sum(r.emulated_s for r in ordered),
    )

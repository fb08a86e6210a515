"""A sweep's points cut into chunks per node, its progress and end read from its chunks'
reports (``qubus.scheduling.sweepchunks``), and its points' status, without NATS."""

from __future__ import annotations

import pytest

from qubus.bus.connection import StoredEvent
from qubus.bus.ids import sweep_point_id
from qubus.bus.messages import (
    NodeScore,
    SweepChunk,
    SweepProgress,
    TaskAllocated,
    TaskCancelled,
    TaskCompleted,
    TaskOptions,
    TaskReplace,
    TaskScored,
)
from qubus.client.aio import point_events, progress_of, stage_rows, status_of
from qubus.scheduling.allocation import Decision
from qubus.scheduling.sweepchunks import (
    BATCH_POINTS_MAX,
    NodeRate,
    batch_points,
    chunk_ranges,
    share_points,
    sweep_end,
    sweep_progress,
)
from qubus_services.allocator.main import on_node, sweep_allocations

SWEEP = "alice.0123456789abcdef01234"


def test_equal_nodes_share_the_points_equally_and_every_point_once() -> None:
    rates = [NodeRate(node, 0.0, 0.01) for node in ("a", "b", "c")]
    shares = share_points(200, rates)
    assert [node for node, _ in shares] == ["a", "b", "c"]
    assert sorted(n for _, n in shares) == [66, 67, 67] and sum(n for _, n in shares) == 200


def test_a_node_gets_points_in_proportion_to_its_speed_and_ends_with_the_others() -> None:
    shares = dict(share_points(300, [NodeRate("fast", 0.0, 0.01), NodeRate("slow", 0.0, 0.02)]))
    assert shares == {"fast": 200, "slow": 100}  # both end after 2 s


def test_a_busy_node_starts_later_and_so_takes_fewer_points() -> None:
    shares = dict(share_points(200, [NodeRate("idle", 0.0, 0.01), NodeRate("busy", 0.5, 0.01)]))
    # idle ends at T = 1.25 s with 125 points, busy starts at 0.5 s and runs 75
    assert shares == {"idle": 125, "busy": 75}


def test_a_node_too_slow_or_too_busy_for_its_share_to_be_worth_a_chunk_is_left_out() -> None:
    rates = [
        NodeRate("ibm", 0.0, 0.00275),  # ~0.55 s for 200 points
        NodeRate("ion_trap", 0.0, 0.05),  # would get ~10 points: fewer than the minimum
        NodeRate("queued", 5.0, 0.00275),  # free only after the others have ended
    ]
    assert share_points(200, rates, min_points=20) == [("ibm", 200)]
    assert share_points(200, rates, min_points=5) == [("ibm", 190), ("ion_trap", 10)]


def test_a_sweep_too_small_to_cut_stays_on_the_policys_node() -> None:
    rates = [NodeRate("chosen", 3.0, 0.05), NodeRate("other", 0.0, 0.001)]
    assert share_points(19, rates, min_points=10) == [("chosen", 19)]
    with pytest.raises(ValueError):
        share_points(19, [])


def test_chunks_are_contiguous_ranges_covering_every_point_once() -> None:
    chunks = chunk_ranges([("a", 67), ("b", 66), ("c", 67)])
    assert [(node, c.first, c.stop, c.index, c.chunks) for node, c in chunks] == [
        ("a", 0, 67, 0, 3),
        ("b", 67, 133, 1, 3),
        ("c", 133, 200, 2, 3),
    ]


def test_a_batch_of_points_holds_its_node_for_about_a_tenth_of_a_second() -> None:
    assert batch_points(0.0027) == 37  # 1,000 shots on ibm_nairobi at time scale 0.01
    assert batch_points(0.0135) == 7  # at time scale 0.05
    assert batch_points(2.7) == 1  # a point holding the node longer than a batch should
    assert batch_points(1e-6) == batch_points(0.0) == BATCH_POINTS_MAX


def report(chunk: int, done: int, *, points: int = 10, completed: int | None = None, **kw):
    completed = done if completed is None else completed
    return SweepProgress(
        task_id=SWEEP,
        node=kw.get("node", f"n{chunk}"),
        chunk=chunk,
        chunks=kw.get("chunks", 2),
        points=points,
        done=done,
        completed=completed,
        fidelity_sum=0.9 * completed,
        predicted_fidelity=kw.get("predicted", 0.8),
        emulated_s=0.1 * done,
    )


def test_a_sweeps_progress_sums_each_chunks_furthest_report() -> None:
    reports = [report(0, 5), report(1, 3), report(0, 10), report(0, 5)]  # a redelivered 5
    assert sweep_progress(reports, 20) == (13, 20)
    assert sweep_progress([], 20) == (0, 20)


def test_a_sweep_ends_once_every_chunk_has_ended_all_its_points() -> None:
    assert sweep_end([]) is None
    assert sweep_end([report(0, 10)]) is None  # chunk 1 has not reported
    assert sweep_end([report(0, 10), report(1, 9)]) is None
    end = sweep_end(
        [report(1, 10, completed=8, predicted=0.5), report(0, 10, predicted=0.8), report(1, 4)]
    )
    assert end is not None and end.nodes == ["n0", "n1"] and end.completed == 18
    assert end.measured_sum == pytest.approx(0.9 * 18)
    assert end.predicted_sum == pytest.approx(0.8 * 10 + 0.5 * 8)
    assert end.emulated_s == pytest.approx(2.0)
    one_node = sweep_end([report(0, 10, node="x"), report(1, 10, node="x")])
    assert one_node is not None and one_node.nodes == ["x"]


def scored(points: int, scores: list[NodeScore], **options) -> TaskScored:
    return TaskScored(
        task_id="alice.s1",
        circuit="{}",
        options=TaskOptions(shots=1000, sweep=[{"t": float(k)} for k in range(points)], **options),
        ideal={"0": 1.0},
        scores=scores,
    )


def score(
    node: str, run_s: float, *, fidelity: float = 0.9, eligible: bool = True, job_s: float = 0.0
) -> NodeScore:
    return NodeScore(
        node=node,
        eligible=eligible,
        predicted_fidelity=fidelity,
        expected_completion_s=run_s,
        expected_run_s=run_s,
        hyperscore=fidelity,
        calibration_revision=f"rev-{node}",
        job_s=job_s,
    )


def decision(node: str) -> Decision:
    return Decision(
        task_id="alice.s1",
        node=node,
        policy="hyperscore",
        reason="best",
        ranking=[(node, 0.9)],
        expected_completion_s=1.0,
        predicted_fidelity=0.9,
    )


def test_the_allocator_publishes_one_allocation_per_chunk_with_each_nodes_score() -> None:
    scores = [
        score("b", 100.0, fidelity=0.7),
        score("a", 100.0),
        score("off", 1.0, eligible=False),
    ]
    allocations = sweep_allocations(scored(200, scores), decision("a"), time_scale=0.01)
    assert [(a.node, a.chunk.first, a.chunk.stop) for a in allocations] == [
        ("a", 0, 100),
        ("b", 100, 200),
    ]
    assert [a.predicted_fidelity for a in allocations] == [0.9, 0.7]
    assert allocations[1].calibration_revision == "rev-b" and "b 100-199" in allocations[0].reason
    assert len({a.msg_id() for a in allocations}) == 2  # both stored


def test_each_chunk_pays_its_nodes_whole_job_overhead_so_the_nodes_still_end_together() -> None:
    """Both nodes run the 200 points' shots in 100 s, of which 40 s are b's fixed time per job
    (``job_s``): a chunk on b holds it 40 s plus 0.3 s a point, on a 0.5 s a point. Shared as
    if the 40 s were spread over the points, 100 each, b would end 20 s after a."""
    scores = [score("a", 100.0), score("b", 100.0, job_s=40.0)]
    allocations = sweep_allocations(scored(200, scores), decision("a"), time_scale=1.0)
    shares = {a.node: a.chunk.stop - a.chunk.first for a in allocations}
    assert shares == {"a": 125, "b": 75}
    assert shares["a"] * 0.5 == 40 + shares["b"] * 0.3 == 62.5  # a's end, b's end


def test_a_moved_chunk_takes_its_new_nodes_score_and_is_stored_beside_the_first() -> None:
    scores = [score("a", 100.0), score("b", 100.0, fidelity=0.7)]
    first, _ = sweep_allocations(scored(200, scores), decision("a"), time_scale=0.01)
    moved = on_node(first, scores[1], attempt=1, reason="moved")
    assert (moved.node, moved.chunk, moved.attempt) == ("b", first.chunk, 1)
    assert (moved.predicted_fidelity, moved.calibration_revision) == (0.7, "rev-b")
    assert moved.msg_id() == "alice.s1.allocated.c0.1" != first.msg_id()
    # two chunks on one node gone offline: one replace each
    replaces = [
        TaskReplace(task_id="alice.s1", node="a", attempt=0, reason="offline", chunk=k)
        for k in (0, 1)
    ]
    assert [r.msg_id() for r in replaces] == [
        "alice.s1.replace.a.c0.0",
        "alice.s1.replace.a.c1.0",
    ]


@pytest.mark.parametrize(
    ("options", "points"),
    [({"node": "a"}, 200), ({"prefer": "fidelity"}, 200), ({}, 19), ({"fidelity_floor": 0.8}, 200)],
)
def test_a_pinned_fidelity_first_small_or_floored_sweep_is_one_allocation(options, points) -> None:
    scores = [score("a", 100.0), score("b", 100.0, fidelity=0.7)]
    (allocated,) = sweep_allocations(scored(points, scores, **options), decision("a"), time_scale=1)
    assert allocated.node == "a" and allocated.chunk is None
    assert allocated.msg_id() == "alice.s1.allocated"


def test_a_chunk_names_its_points() -> None:
    with pytest.raises(ValueError):
        SweepChunk(index=0, chunks=0, first=0, stop=1)


def stored(event) -> StoredEvent:
    return StoredEvent(
        subject=event.subject(),
        event=event,
        service="qpu",
        instance="qpu-1",
        started=None,
        published=1.0,
        sequence=1,
        trace_id=None,
    )


def sweep_events(*tail) -> list[StoredEvent]:
    allocated = TaskAllocated(
        task_id=SWEEP,
        node="n0",
        policy="hyperscore",
        reason="best",
        ranking=[("n0", 0.9)],
        predicted_fidelity=0.9,
        hyperscore=0.9,
        circuit="{}",
        options=TaskOptions(shots=10, sweep=[{"t": float(k)} for k in range(20)]),
        ideal={"0": 1.0},
    )
    return [stored(allocated), *(stored(event) for event in tail)]


def point_completed(k: int) -> TaskCompleted:
    return TaskCompleted(
        task_id=sweep_point_id(SWEEP, k),
        node="n0",
        counts={"0": 10},
        shots=10,
        seed=1,
        predicted_fidelity=0.9,
        measured_fidelity=1.0,
        emulated_s=0.1,
        calibration_revision="r",
    )


def test_a_running_sweep_reports_its_points_and_its_points_read_running() -> None:
    shared = sweep_events(report(0, 10, points=20, chunks=1, node="n0"))
    assert status_of(shared) == "running"
    assert progress_of(shared) == {"points_done": 10, "points": 20}
    assert status_of(point_events(shared, [stored(point_completed(3))])) == "done"
    assert status_of(point_events(shared, [])) == "running"
    (row,) = [r for r in stage_rows(shared) if r["event"] == "points"]
    assert row["detail"] == "chunk 1/1 on n0: 10/20 points (10 completed)"


def test_a_cancelled_sweep_ends_its_points_not_run_cancelled_and_keeps_those_run() -> None:
    shared = sweep_events(TaskCancelled(task_id=SWEEP))
    assert status_of(point_events(shared, [stored(point_completed(3))])) == "done"
    assert status_of(point_events(shared, [])) == "cancelled"
    cancelled_point = [stored(TaskCancelled(task_id=sweep_point_id(SWEEP, 4)))]
    assert status_of(point_events(sweep_events(), cancelled_point)) == "cancelled"

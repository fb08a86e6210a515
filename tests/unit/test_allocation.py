"""Placement policies: constraints, batch objective, optimality against brute force."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from qubus.bus.messages import NodeScore, NodeStatus
from qubus.devices.profiles import load_device, status_of
from qubus.errors import CircuitRejected, QubusError
from qubus.scheduling.allocation import (
    FIDELITY_WEIGHT_S,
    POLICIES,
    PREFERENCES,
    Candidate,
    Decision,
    Problem,
    TaskRequest,
    build_problem,
    candidate_from_score,
    decide,
    get_policy,
    replacement_reason,
)
from qubus.scheduling.backlog import Ledger, with_backlogs


def candidate(node: str, **overrides: object) -> Candidate:
    values = {
        "node": node,
        "fits": True,
        "available": True,
        "queue_depth": 0,
        "expected_completion_s": 1.0,
        "run_s": 1.0,
        "predicted_fidelity": 0.9,
        "hyperscore": 150.0,
    }
    return Candidate(**(values | overrides))


def request(task_id: str, candidates: list[Candidate], **options: object) -> TaskRequest:
    return TaskRequest(task_id=task_id, candidates=candidates, **options)


def one(policy: str, candidates: list[Candidate], task_id: str = "t1") -> Decision:
    (outcome,) = decide(get_policy(policy), [request(task_id, candidates)])
    assert isinstance(outcome, Decision), outcome
    return outcome


def random_batch(n: int, m: int, seed: int, *, ineligible: float = 0.0) -> list[TaskRequest]:
    """``n`` tasks on ``m`` nodes with backlogs, run times, fidelities and scores drawn from
    ``seed``; each candidate is ineligible with chance ``ineligible``."""
    rng = np.random.default_rng(seed)
    ready = rng.uniform(0, 20, m)
    batch = []
    for i in range(n):
        candidates = []
        for j in range(m):
            run = float(rng.uniform(1, 15))
            candidates.append(
                candidate(
                    f"n{j}",
                    fits=bool(rng.random() >= ineligible),
                    expected_completion_s=float(ready[j]) + run,
                    run_s=run,
                    predicted_fidelity=float(rng.uniform(0.6, 0.99)),
                    hyperscore=float(rng.uniform(100, 150)),
                    time_rate=1 / 120,
                )
            )
        batch.append(request(f"b{seed}-{i}", candidates))
    return batch


def brute_force(problem: Problem) -> float:
    options = [problem.options(i) for i in range(problem.n)]
    return min(problem.objective(a) for a in itertools.product(*options))


def nodes_of(outcomes: list, problem: Problem) -> list[int]:
    return [problem.nodes.index(o.node) for o in outcomes]


# ---------------------------------------------------------------- one task


FLEET = [
    candidate("ibm_nairobi", hyperscore=140.0),
    candidate("quantinuum_h2_2", hyperscore=170.0),
    candidate("ionq_aria", hyperscore=160.0),
    candidate("ibm_manila", hyperscore=190.0, fits=False),
]


def test_hyperscore_picks_the_best_eligible_node() -> None:
    decision = one("hyperscore", FLEET)
    assert decision.node == "quantinuum_h2_2"
    assert decision.policy == "hyperscore"
    assert decision.ranking == [
        ("quantinuum_h2_2", 170.0),
        ("ionq_aria", 160.0),
        ("ibm_nairobi", 140.0),
    ]
    assert "170.00" in decision.reason and "next ionq_aria" in decision.reason


def test_hyperscore_skips_unavailable_nodes() -> None:
    fleet = [*FLEET[:1], FLEET[1].model_copy(update={"available": False}), *FLEET[2:]]
    assert one("hyperscore", fleet).node == "ionq_aria"


def test_hyperscore_tie_goes_to_earlier_finish_then_node_id() -> None:
    late = candidate("a", expected_completion_s=5.0)
    assert one("hyperscore", [late, candidate("b", expected_completion_s=2.0)]).node == "b"
    assert one("hyperscore", [candidate("b"), candidate("a")]).node == "a"


def test_round_robin_is_deterministic_per_task() -> None:
    assert one("round_robin", FLEET, "task-42") == one("round_robin", FLEET[::-1], "task-42")


def test_round_robin_ranking_is_a_rotation_of_eligible_nodes() -> None:
    decision = one("round_robin", FLEET, "task-7")
    order = ["ibm_nairobi", "ionq_aria", "quantinuum_h2_2"]
    start = order.index(decision.node)
    assert [node for node, _ in decision.ranking] == order[start:] + order[:start]


def test_round_robin_spreads_tasks_evenly_over_eligible_nodes() -> None:
    batch = [request(f"task-{i}", FLEET) for i in range(3_000)]
    counts = Counter(o.node for o in decide(get_policy("round_robin"), batch))
    assert set(counts) == {"ibm_nairobi", "ionq_aria", "quantinuum_h2_2"}
    assert all(900 < n < 1_100 for n in counts.values())


def test_greedy_fidelity_takes_the_highest_prediction() -> None:
    fleet = [candidate("a", predicted_fidelity=0.8), candidate("b", predicted_fidelity=0.95)]
    decision = one("greedy_fidelity", fleet)
    assert decision.node == "b" and "0.950" in decision.reason


def test_least_loaded_takes_the_node_that_frees_first_whatever_the_run_time() -> None:
    slow_but_free = candidate("ion", expected_completion_s=20.0, run_s=20.0)
    fast_but_busy = candidate("sc", expected_completion_s=3.0, run_s=1.0)
    assert one("least_loaded", [slow_but_free, fast_but_busy]).node == "ion"
    # hyperscore ranks by completion (through the score), not by when the node frees up
    scored = [
        slow_but_free.model_copy(update={"hyperscore": 100.0}),
        fast_but_busy.model_copy(update={"hyperscore": 140.0}),
    ]
    assert one("hyperscore", scored).node == "sc"


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_no_eligible_node_rejects_naming_each_reason(name: str) -> None:
    fleet = [
        candidate("a", fits=False),
        candidate("b", available=False),
        candidate("c", fits=False, available=False),
    ]
    (outcome,) = decide(get_policy(name), [request("t1", fleet)])
    assert isinstance(outcome, CircuitRejected)
    assert outcome.code == "alloc.no_fit"
    assert "a: the task does not fit" in outcome.message
    assert "b: unavailable" in outcome.message
    assert "c: the task does not fit and unavailable" in outcome.message


def test_no_candidates_rejects() -> None:
    (outcome,) = decide(get_policy("hyperscore"), [request("t1", [])])
    assert isinstance(outcome, CircuitRejected) and outcome.code == "alloc.no_fit"


def test_repeated_node_fails_that_task_only() -> None:
    batch = [request("t1", [candidate("a"), candidate("a")]), request("t2", [candidate("a")])]
    broken, placed = decide(get_policy("hyperscore"), batch)
    assert isinstance(broken, QubusError) and broken.code == "alloc.duplicate_node"
    assert isinstance(placed, Decision) and placed.node == "a"


def test_get_policy_by_name() -> None:
    assert set(POLICIES) == {
        "round_robin",
        "least_loaded",
        "greedy_fidelity",
        "hyperscore",
        "annealing",
        "milp",
        "qaoa",
    }
    for name in POLICIES:
        assert get_policy(name).name == name


def test_unknown_policy_lists_valid_names() -> None:
    with pytest.raises(QubusError) as info:
        get_policy("random")
    assert info.value.code == "policy.unknown"
    assert "hyperscore" in info.value.message and "milp" in info.value.message


def test_candidate_is_validated() -> None:
    with pytest.raises(ValueError, match="queue_depth"):
        candidate("a", queue_depth=-1)


# ---------------------------------------------------------------- constraints


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_respects_capacity_availability_and_floor(name: str) -> None:
    batch = random_batch(6, 4, seed=3, ineligible=0.4)
    batch[0] = batch[0].model_copy(update={"fidelity_floor": 0.8})
    batch[1] = batch[1].model_copy(
        update={"candidates": [c.model_copy(update={"fits": False}) for c in batch[1].candidates]}
    )
    outcomes = decide(get_policy(name), batch)
    assert len(outcomes) == len(batch)
    assert isinstance(outcomes[1], CircuitRejected)
    for req, outcome in zip(batch, outcomes, strict=True):
        allowed = {
            c.node
            for c in req.candidates
            if c.eligible and c.predicted_fidelity >= (req.fidelity_floor or 0)
        }
        if not allowed:
            assert isinstance(outcome, CircuitRejected)
            continue
        assert isinstance(outcome, Decision)
        assert outcome.task_id == req.task_id
        assert outcome.node in allowed
        assert outcome.ranking[0][0] == outcome.node
        assert {node for node, _ in outcome.ranking} == allowed


def test_fidelity_floor_excludes_nodes_and_rejects_when_none_is_left() -> None:
    fleet = [candidate("a", predicted_fidelity=0.7), candidate("b", predicted_fidelity=0.9)]
    decided, rejected = decide(
        get_policy("hyperscore"),
        [
            request("t1", fleet, fidelity_floor=0.8),
            request("t2", fleet, fidelity_floor=0.95),
        ],
    )
    assert decided.node == "b"
    assert isinstance(rejected, CircuitRejected)
    assert "a: predicted fidelity 0.700 is below the task's floor 0.95" in rejected.message


def test_deadline_restricts_to_nodes_that_can_make_it() -> None:
    fleet = [
        candidate("fast", expected_completion_s=4.0, run_s=1.0, hyperscore=100.0),
        candidate("slow", expected_completion_s=30.0, run_s=5.0, hyperscore=200.0),
    ]
    decision = one("hyperscore", fleet)
    assert decision.node == "slow" and decision.deadline_met is None
    (decision,) = decide(get_policy("hyperscore"), [request("t1", fleet, deadline_s=10.0)])
    assert decision.node == "fast" and decision.deadline_met is True
    assert "meets its deadline" in decision.reason


def test_a_deadline_no_node_can_meet_goes_where_the_task_finishes_earliest() -> None:
    fleet = [
        candidate("a", expected_completion_s=9.0, run_s=2.0, hyperscore=200.0),
        candidate("b", expected_completion_s=6.0, run_s=5.0, hyperscore=100.0),
    ]
    (decision,) = decide(get_policy("hyperscore"), [request("t1", fleet, deadline_s=3.0)])
    assert decision.node == "b"
    assert decision.deadline_met is False
    assert decision.ranking == [("b", 100.0)]
    assert "misses its deadline" in decision.reason
    assert "no node can meet it" in decision.reason


def test_batch_mates_ahead_on_the_node_count_against_a_deadline() -> None:
    only = [candidate("a", expected_completion_s=2.0, run_s=2.0)]
    short = request("short", [candidate("a", expected_completion_s=1.0, run_s=1.0)])
    outcomes = decide(get_policy("milp"), [request("t1", only, deadline_s=2.5), short])
    assert outcomes[0].expected_completion_s == pytest.approx(3.0)  # the shorter task runs first
    assert outcomes[0].deadline_met is False and outcomes[1].position == 0


def mixed_batch(seed: int) -> list[TaskRequest]:
    """A random batch with every constraint at work: floors, preferences, a node missing from
    some requests, a request naming a node twice and one with no node available."""
    batch = []
    for i, r in enumerate(random_batch(12, 5, seed=seed, ineligible=0.2)):
        candidates = r.candidates
        if i % 7 == 3:
            candidates = candidates[1:]
        if i == 5:
            candidates = [*candidates, candidates[0]]
        if i == 9:
            candidates = [c.model_copy(update={"available": False}) for c in candidates]
        options: dict[str, object] = {"candidates": candidates}
        if i % 3 == 0:
            options["fidelity_floor"] = 0.8
        if i % 5 == 2:
            options["prefer"] = ("fidelity", "time", "balanced")[i % 3]
        batch.append(r.model_copy(update=options))
    return batch


@pytest.mark.parametrize("seed", range(4))
def test_build_problem_reads_the_batch_as_its_candidates_say(seed: int) -> None:
    # The reference reads the batch candidate by candidate, as the constraints are worded.
    batch = mixed_batch(300 + seed)
    problem, rejected = build_problem(batch, lam=50.0)
    assert problem is not None
    expected_rejected, kept = {}, []
    for index, r in enumerate(batch):
        names = [c.node for c in r.candidates]
        usable = {
            c.node: c
            for c in r.candidates
            if c.eligible and (r.fidelity_floor is None or c.predicted_fidelity >= r.fidelity_floor)
        }
        if len(set(names)) != len(names):
            expected_rejected[index] = "alloc.duplicate_node"
        elif not usable:
            expected_rejected[index] = "alloc.no_fit"
        else:
            kept.append((r, usable))
    assert {i: e.code for i, e in rejected.items()} == expected_rejected
    assert len(expected_rejected) >= 2
    assert problem.tasks == tuple(r for r, _ in kept)
    nodes = sorted({node for _, usable in kept for node in usable})
    assert problem.nodes == tuple(nodes)
    for i, (r, usable) in enumerate(kept):
        scale = PREFERENCES[r.prefer or "balanced"]
        assert problem.task_lam[i] == 50.0 * scale
        for j, node in enumerate(nodes):
            c = usable.get(node)
            assert problem.allowed[i, j] == (c is not None)
            if c is None:
                continue
            assert (problem.run[i, j], problem.fidelity[i, j]) == (c.run_s, c.predicted_fidelity)
            assert problem.time_rate[i, j] == pytest.approx(c.time_rate / scale, rel=1e-12)
            shift = math.exp(c.time_rate * (1 - 1 / scale) * c.expected_completion_s)
            assert problem.hyperscore[i, j] == pytest.approx(c.hyperscore * shift, rel=1e-12)
    for j, node in enumerate(nodes):
        queued = [usable[node].queue_s for _, usable in kept if node in usable]
        assert problem.ready[j] == max(queued)


def test_build_problem_reads_a_batch_alike_whatever_batches_came_before() -> None:
    # The grid's layout is kept from batch to batch while the nodes named stay the same.
    batch = mixed_batch(310)
    flipped = [r.model_copy(update={"candidates": r.candidates[::-1]}) for r in batch]
    first, rejected = build_problem(batch)
    build_problem(mixed_batch(311))  # the same layout, other figures
    for again in (build_problem(flipped), build_problem(batch)):
        problem, again_rejected = again
        assert problem is not None and first is not None
        assert {i: e.code for i, e in again_rejected.items()} == {
            i: e.code for i, e in rejected.items()
        }
        assert [t.task_id for t in problem.tasks] == [t.task_id for t in first.tasks]
        assert problem.nodes == first.nodes
        for name in ("allowed", "run", "ready", "fidelity", "hyperscore", "time_rate", "late"):
            assert np.array_equal(getattr(problem, name), getattr(first, name)), name


def test_shortest_first_takes_each_tasks_shortest_allowed_run_ties_in_batch_order() -> None:
    runs = [(5.0, 1.0), (2.0, 9.0), (2.0, 3.0), (4.0, 6.0)]
    batch = [
        request(
            f"t{i}",
            [
                candidate("a", run_s=a, expected_completion_s=a),
                # t0's 1 s run on b is not allowed: its shortest is its 5 s on a
                candidate("b", run_s=b, expected_completion_s=b, fits=i != 0),
            ],
        )
        for i, (a, b) in enumerate(runs)
    ]
    problem, _ = build_problem(batch)
    assert problem is not None
    assert problem.allowed_rows == problem.allowed.tolist()
    # shortest: t0 5 (its 1 s on b is barred), t1 2, t2 2 (tie with t1: batch order), t3 4
    assert problem.shortest_first == [1, 2, 3, 0]
    for seed in range(5):
        problem, _ = build_problem(random_batch(30, 5, seed=seed, ineligible=0.3))
        assert problem is not None
        shortest = np.where(problem.allowed, problem.run, np.inf).min(axis=1)
        assert problem.shortest_first == np.argsort(shortest, kind="stable").tolist()


# Placements recorded on main at 20a983d, before the batch's arrays, hyperscore's greedy pass and
# annealing's steps were made faster (random_batch(n, m, seed, ineligible=...)).
PLACED_BEFORE = [
    ((8, 8, 900, 0.0), [3, 1, 3, 7, 0, 2, 5, 4], [6, 0, 7, 6, 3, 1, 0, 7]),
    ((8, 8, 901, 0.0), [2, 0, 7, 6, 3, 4, 1, 0], [0, 7, 3, 2, 7, 3, 5, 5]),
    ((8, 8, 902, 0.0), [3, 2, 4, 5, 6, 1, 0, 7], [5, 4, 6, 6, 4, 3, 0, 7]),
    ((8, 8, 903, 0.25), [3, 1, 4, 5, 3, 2, 1, 5], [6, 5, 0, 6, 5, 2, 1, 7]),
    ((8, 8, 904, 0.25), [6, 7, 0, 5, 5, 6, 2, 1], [6, 0, 7, 5, 5, 4, 3, 3]),
    (
        (20, 4, 905, 0.2),
        [1, 3, 0, 3, 0, 1, 2, 0, 0, 3, 3, 2, 3, 2, 2, 1, 3, 2, 1, 2],
        [1, 3, 0, 2, 2, 1, 1, 3, 0, 0, 3, 3, 2, 2, 2, 1, 3, 2, 1, 3],
    ),
    (
        (20, 4, 906, 0.2),
        [2, 1, 0, 3, 1, 0, 2, 2, 3, 1, 2, 1, 3, 1, 1, 0, 3, 2, 2, 1],
        [0, 1, 3, 1, 1, 0, 0, 2, 3, 1, 2, 1, 3, 3, 1, 1, 1, 2, 3, 1],
    ),
    (
        (20, 4, 907, 0.2),
        [0, 1, 3, 1, 2, 3, 3, 3, 1, 0, 2, 0, 3, 1, 0, 2, 1, 1, 2, 0],
        [0, 1, 3, 1, 2, 3, 0, 3, 3, 0, 2, 1, 3, 1, 3, 2, 1, 1, 2, 0],
    ),
]


@pytest.mark.parametrize(("batch", "hyperscore", "annealing"), PLACED_BEFORE)
def test_hyperscore_and_annealing_place_as_before_they_were_made_faster(
    batch: tuple[int, int, int, float], hyperscore: list[int], annealing: list[int]
) -> None:
    n, m, seed, ineligible = batch
    problem, _ = build_problem(random_batch(n, m, seed=seed, ineligible=ineligible))
    assert problem is not None
    assert get_policy("hyperscore").assign(problem) == hyperscore
    assert get_policy("annealing").assign(problem) == annealing


# ---------------------------------------------------------------- the batch objective


def test_objective_is_spt_completions_plus_weighted_infidelity() -> None:
    problem, _ = build_problem(random_batch(5, 3, seed=11))
    assert problem is not None
    rng = np.random.default_rng(0)
    for _ in range(20):
        assignment = [int(rng.choice(problem.options(i))) for i in range(problem.n)]
        # the QUBO form: unary terms plus min(run) for every pair on the same node
        pairs = sum(
            min(problem.run[i, assignment[i]], problem.run[k, assignment[k]])
            for i, k in itertools.combinations(range(problem.n), 2)
            if assignment[i] == assignment[k]
        )
        unary = sum(problem.unary[i, j] for i, j in enumerate(assignment))
        assert problem.objective(assignment) == pytest.approx(unary + pairs)


def test_completions_follow_shortest_first_on_each_node() -> None:
    batch = [
        request("long", [candidate("a", expected_completion_s=13.0, run_s=3.0)]),
        request("short", [candidate("a", expected_completion_s=11.0, run_s=1.0)]),
    ]
    long, short = decide(get_policy("hyperscore"), batch)
    assert (short.position, long.position) == (0, 1)
    assert short.expected_completion_s == pytest.approx(11.0)
    assert long.expected_completion_s == pytest.approx(14.0)
    expected_j = 11.0 + 14.0 + FIDELITY_WEIGHT_S * 2 * (1 - 0.9)
    assert f"J = {expected_j:.1f} s" in long.reason


@pytest.mark.parametrize("seed", range(6))
def test_milp_is_optimal_against_brute_force(seed: int) -> None:
    batch = random_batch(5, 3, seed=seed, ineligible=0.2 if seed % 2 else 0.0)
    problem, _ = build_problem(batch)
    assert problem is not None
    optimum = brute_force(problem)
    outcomes = decide(get_policy("milp"), batch)
    assert problem.objective(nodes_of(outcomes, problem)) == pytest.approx(optimum, rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_milp_is_no_worse_than_any_other_policy(seed: int) -> None:
    batch = random_batch(12, 5, seed=100 + seed)
    problem, _ = build_problem(batch)
    assert problem is not None
    best = problem.objective(nodes_of(decide(get_policy("milp"), batch), problem))
    for name in ("round_robin", "least_loaded", "greedy_fidelity", "hyperscore", "annealing"):
        assert problem.objective(nodes_of(decide(get_policy(name), batch), problem)) >= best - 1e-6


@pytest.mark.parametrize(("name", "tolerance"), [("annealing", 0.01), ("qaoa", 0.02)])
@pytest.mark.parametrize("seed", [21, 22])
def test_heuristic_optimisers_come_close_to_milp(name: str, tolerance: float, seed: int) -> None:
    batch = random_batch(8, 4, seed=seed)
    problem, _ = build_problem(batch)
    assert problem is not None
    optimum = problem.objective(nodes_of(decide(get_policy("milp"), batch), problem))
    found = problem.objective(nodes_of(decide(get_policy(name), batch), problem))
    assert optimum <= found <= optimum * (1 + tolerance)


@pytest.mark.parametrize("seed", range(3))
def test_placement_costs_built_at_once_match_adding_tasks_one_by_one(seed: int) -> None:
    from qubus.scheduling.allocation.search import _Placement

    problem, _ = build_problem(random_batch(30, 5, seed=60 + seed, ineligible=0.3))
    assert problem is not None
    rng = np.random.default_rng(seed)
    assignment = [int(rng.choice(problem.options(i))) for i in range(problem.n)]
    one_by_one = _Placement(problem)
    for i, j in enumerate(assignment):
        one_by_one.add(i, j)
    at_once = _Placement(problem, assignment)
    np.testing.assert_allclose(at_once.delay, one_by_one.delay)
    # every move's change of J, read from the placement, is the objective's
    before = problem.objective(assignment)
    costs = at_once.costs_all()
    for i in range(problem.n):
        for j in problem.options(i):
            moved = [*assignment[:i], int(j), *assignment[i + 1 :]]
            change = costs[i, j] - costs[i, assignment[i]]
            assert problem.objective(moved) - before == pytest.approx(change, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_hyperscore_moves_tasks_only_where_their_hyperscore_allows_until_j_stops_falling(
    seed: int,
) -> None:
    from qubus.scheduling.allocation.hyperscore import HyperscorePolicy

    problem, _ = build_problem(random_batch(20, 4, seed=70 + seed, ineligible=0.2))
    assert problem is not None
    greedy, placed_at, _ = HyperscorePolicy._greedy(problem)
    assignment = get_policy("hyperscore").assign(problem)
    found = problem.objective(assignment)
    assert found < problem.objective(greedy)
    for i, j in enumerate(assignment):
        assert j == greedy[i] or problem.hyperscore[i, j] >= placed_at[i]
        for other in problem.options(i):
            if problem.hyperscore[i, other] >= placed_at[i]:
                moved = [*assignment[:i], int(other), *assignment[i + 1 :]]
                assert problem.objective(moved) >= found - 1e-9


def dominated_batch(n: int, m: int, seed: int) -> list[TaskRequest]:
    """``random_batch`` with node ``n0`` scored above every other node for every task, its
    hyperscore hardly falling with time: the greedy pass sends every task there and no task's
    hyperscore allows it anywhere else (as on the scheduling benchmark's first 8 tasks)."""
    rng = np.random.default_rng(seed)
    return [
        r.model_copy(
            update={
                "candidates": [
                    c.model_copy(
                        update={"hyperscore": float(rng.uniform(190, 200)), "time_rate": 1e-6}
                    )
                    if c.node == "n0"
                    else c
                    for c in r.candidates
                ]
            }
        )
        for r in random_batch(n, m, seed)
    ]


def tied_batch(n: int, m: int, seed: int) -> list[TaskRequest]:
    """``dominated_batch`` with node ``n1`` scored exactly as ``n0`` for every task: each task
    has two nodes of the same highest hyperscore."""
    return [
        r.model_copy(
            update={
                "candidates": [
                    c.model_copy(update={"hyperscore": r.candidates[0].hyperscore})
                    if c.node == "n1"
                    else c
                    for c in r.candidates
                ]
            }
        )
        for r in dominated_batch(n, m, seed)
    ]


BATCHES = {"dominated": dominated_batch, "random": random_batch, "tied": tied_batch}


@pytest.mark.parametrize(
    ("kind", "n", "seed"),
    [
        ("dominated", 1, 4),
        ("dominated", 8, 1),
        ("dominated", 8, 2),
        ("dominated", 20, 3),
        ("random", 1, 5),
        ("random", 8, 100),
        ("random", 12, 101),
        ("random", 20, 102),
        ("tied", 1, 6),
        ("tied", 8, 7),
    ],
)
def test_hyperscore_skips_the_search_only_where_it_would_move_nothing(
    kind: str, n: int, seed: int
) -> None:
    # Without a node its hyperscore allows besides its own for any task, hyperscore returns
    # its greedy pass without a search; its placement is the search's all the same. Whether
    # that is so is worked out during the greedy pass; here, over the whole matrix.
    from qubus.scheduling.allocation.hyperscore import HyperscorePolicy
    from qubus.scheduling.allocation.search import descended

    problem, _ = build_problem(BATCHES[kind](n, 6, seed))
    assert problem is not None
    policy = HyperscorePolicy()
    greedy, placed, movable = policy._greedy(problem)
    placed_at = np.array(placed)
    elsewhere = (problem.allowed & (problem.hyperscore >= placed_at[:, None])).sum(axis=1) - 1
    assert movable == (elsewhere.max() > 0)
    assert movable == (kind == "tied" or (kind == "random" and n > 1))
    assert (policy._start(problem)[1] is None) == (not movable)
    searched = descended(problem, greedy, problem.hyperscore >= placed_at[:, None])
    assert policy.assign(problem) == searched.assignment()
    assert policy.placement(problem).assignment() == searched.assignment()
    np.testing.assert_array_equal(policy.placement(problem).delay, searched.delay)


@pytest.mark.parametrize("seed", range(4))
def test_annealing_is_never_worse_than_its_hyperscore_start(seed: int) -> None:
    problem, _ = build_problem(random_batch(40, 5, seed=80 + seed))
    assert problem is not None
    start = problem.objective(get_policy("hyperscore").assign(problem))
    assert problem.objective(get_policy("annealing").assign(problem)) <= start + 1e-9


def favoured_batch(n: int, m: int, seed: int) -> list[TaskRequest]:
    """``n`` tasks on ``m`` nodes, node ``n0`` with no backlog and fidelities of 0.95-0.99:
    with its runs short (0.1-0.3 s) every task is best there whatever its node-mates, with
    them long (up to 10 s) the batch spreads."""
    rng = np.random.default_rng(seed)
    ready = rng.uniform(0, 20, m)
    ready[0] = 0.0
    longest = float(rng.choice([0.3, 3.0, 10.0]))
    batch = []
    for i in range(n):
        candidates = [
            candidate(
                "n0",
                expected_completion_s=(run := float(rng.uniform(0.1, longest))),
                run_s=run,
                predicted_fidelity=float(rng.uniform(0.95, 0.99)),
            )
        ]
        for j in range(1, m):
            run = float(rng.uniform(1, 15))
            candidates.append(
                candidate(
                    f"n{j}",
                    fits=bool(rng.random() >= 0.2),
                    expected_completion_s=float(ready[j]) + run,
                    run_s=run,
                    predicted_fidelity=float(rng.uniform(0.6, 0.99)),
                )
            )
        batch.append(request(f"f{seed}-{i}", candidates))
    return batch


def test_the_alone_optimum_is_the_minimum_of_j_wherever_it_is_proven() -> None:
    from qubus.scheduling.allocation.annealing import alone_optimum
    from qubus.scheduling.decisionspeed import exact_optimum

    proven = unproven = cheapest_not_optimal = 0
    for seed in range(60):
        problem, _ = build_problem(favoured_batch(3 + seed % 6, 4, seed))
        assert problem is not None
        optimum = exact_optimum(problem)
        cheapest = problem.unary.argmin(axis=1).tolist()
        if problem.objective(cheapest) > optimum * (1 + 1e-9):
            cheapest_not_optimal += 1
        found = alone_optimum(problem)
        if found is None:
            unproven += 1
            continue
        proven += 1
        assert found == cheapest
        assert problem.objective(found) == pytest.approx(optimum, rel=1e-9)
        assert get_policy("annealing").assign(problem) == found
    # Both outcomes (44 and 16), and batches where each task on its cheapest node is not the
    # minimum (14, every one of them unproven).
    assert proven and unproven and cheapest_not_optimal
    problem, _ = build_problem(random_batch(5, 1, seed=3))
    assert problem is not None
    assert alone_optimum(problem) == [0] * 5


def test_annealing_says_when_its_start_was_the_proven_optimum() -> None:
    for batch, reason in [
        (favoured_batch(6, 4, seed=0), "no annealing needed"),
        (random_batch(6, 4, seed=0), "simulated annealing"),
    ]:
        outcomes = decide(get_policy("annealing"), batch)
        assert all(isinstance(o, Decision) and reason in o.reason for o in outcomes)


def test_hyperscore_says_when_it_moved_a_task_off_its_highest_hyperscore() -> None:
    batch = random_batch(12, 3, seed=0)
    problem, _ = build_problem(batch)
    assert problem is not None
    moved = [
        (i, o)
        for i, o in enumerate(decide(get_policy("hyperscore"), batch))
        if "moved from" in o.reason
    ]
    assert moved
    for i, outcome in moved:
        j = problem.nodes.index(outcome.node)
        assert f"(hyperscore {problem.hyperscore[i, j]:.2f}, no lower" in outcome.reason
        assert "the move lowers the batch objective" in outcome.reason


def test_qaoa_matches_brute_force_on_a_tiny_batch() -> None:
    batch = random_batch(3, 3, seed=5)
    problem, _ = build_problem(batch)
    assert problem is not None
    found = problem.objective(nodes_of(decide(get_policy("qaoa"), batch), problem))
    assert found == pytest.approx(brute_force(problem))


@pytest.mark.parametrize("name", ["annealing", "qaoa", "hyperscore", "milp"])
def test_decisions_are_deterministic(name: str) -> None:
    batch = random_batch(7, 3, seed=8)
    assert decide(get_policy(name), batch) == decide(get_policy(name), batch)


def test_batch_aware_policies_spread_identical_tasks() -> None:
    fleet = [candidate("a", time_rate=0.1), candidate("b", time_rate=0.1)]
    batch = [request(f"t{i}", fleet) for i in range(4)]
    for name in ("hyperscore", "least_loaded", "milp", "annealing"):
        assert Counter(o.node for o in decide(get_policy(name), batch)) == {"a": 2, "b": 2}, name


# ---------------------------------------------------------------- scores and re-placement


def test_candidate_from_score_recovers_run_time_and_time_rate() -> None:
    rate, completion, base = 0.5 / 60, 30.0, 120.0
    hyperscore = base * math.exp(-rate * completion)
    score = NodeScore(
        node="a",
        eligible=True,
        predicted_fidelity=0.9,
        expected_completion_s=completion,
        expected_run_s=6.0,
        queue_depth=2,
        hyperscore=hyperscore,
        terms={"qnc": 0.3, "time_penalty": base - hyperscore},
    )
    c = candidate_from_score(score)
    assert c.run_s == 6.0 and c.queue_s == pytest.approx(24.0)
    assert c.time_rate == pytest.approx(rate)
    assert c.eligible and c.hyperscore == hyperscore
    # without a recorded run time, the completion is shared among the queue and the task
    legacy = candidate_from_score(score.model_copy(update={"expected_run_s": 0.0}))
    assert legacy.run_s == pytest.approx(10.0)
    refused = candidate_from_score(NodeScore(node="b", eligible=False, reason="offline"))
    assert not refused.eligible and refused.reason == "offline"


def test_replacement_reason() -> None:
    assert replacement_reason(allocated=0.9, predicted=0.85, floor=None, max_drop=0.1) is None
    assert "fell from 0.900 to 0.700" in replacement_reason(
        allocated=0.9, predicted=0.7, floor=None, max_drop=0.1
    )
    assert "below the task's floor 0.88" in replacement_reason(
        allocated=0.9, predicted=0.85, floor=0.88, max_drop=0.1
    )


@pytest.mark.parametrize("seed", range(3))
def test_exact_optimum_by_assignment_matches_brute_force(seed: int) -> None:
    from qubus.scheduling.decisionspeed import exact_optimum

    problem, _ = build_problem(random_batch(5, 3, seed=40 + seed, ineligible=0.2))
    assert problem is not None
    assert exact_optimum(problem) == pytest.approx(brute_force(problem), rel=1e-9)


def test_preference_moves_a_task_along_the_trade_off_and_says_so() -> None:
    fleet = [
        candidate("fast", expected_completion_s=10.0, run_s=10.0, predicted_fidelity=0.80),
        candidate("good", expected_completion_s=60.0, run_s=60.0, predicted_fidelity=0.95),
    ]
    chosen = {}
    for prefer in ("time", "balanced", "fidelity"):
        (decision,) = decide(get_policy("milp"), [request("t1", fleet, prefer=prefer)])
        chosen[prefer] = decision.node
        assert f"prefers {prefer} (λ = {PREFERENCES[prefer] * 100:g} s)" in decision.reason
    # J per node: fast 10 + λ·0.20, good 60 + λ·0.05: time (λ 10) and balanced (λ 100)
    # take fast (12 < 60.5, 30 < 65), fidelity (λ 1,000) takes good (210 > 110).
    assert chosen == {"time": "fast", "balanced": "fast", "fidelity": "good"}
    (plain,) = decide(get_policy("milp"), [request("t1", fleet)])
    assert "prefers" not in plain.reason


def test_preference_slows_the_hyperscore_time_decay_alike() -> None:
    fleet = [
        candidate("a", expected_completion_s=50.0, run_s=5.0, hyperscore=40.0, time_rate=0.01),
    ]
    for prefer, scale in PREFERENCES.items():
        problem, _ = build_problem([request("t1", fleet, prefer=prefer)])
        assert problem is not None
        assert problem.time_rate[0, 0] == pytest.approx(0.01 / scale)
        assert problem.hyperscore[0, 0] == pytest.approx(40.0 * math.exp(0.5 - 0.5 / scale))


def node_status(node: str, *, depth: int, mean_job_s: float, at: float) -> NodeStatus:
    """A node's status as a QPU node writes it, written at ``at``."""
    written = status_of(
        load_device("ibm_nairobi"),
        queue_depth=depth,
        mean_job_s=mean_job_s,
        busy=False,
        instance="i",
    )
    return written.model_copy(update={"node": node, "updated_at": at})


def test_a_node_s_backlog_is_its_status_s_plus_the_runs_sent_after_it() -> None:
    ledger = Ledger()
    ledger.record("a", at=10.0, run_s=2.0)
    ledger.record("a", at=20.0, run_s=3.0)
    ledger.record("b", at=20.0, run_s=5.0)
    statuses = {
        "a": node_status("a", depth=2, mean_job_s=1.5, at=15.0),
        "b": node_status("b", depth=0, mean_job_s=1.0, at=25.0),
    }
    assert ledger.backlogs(statuses) == {"a": pytest.approx(2 * 1.5 + 3.0), "b": 0.0}
    # A later status counts the second run in its depth: the ledger adds nothing more.
    assert ledger.backlogs({"a": node_status("a", depth=1, mean_job_s=1.5, at=21.0)}) == {"a": 1.5}
    # Nor does it bring forgotten runs back when a status older than them is read again.
    assert ledger.backlogs({"a": node_status("a", depth=1, mean_job_s=1.5, at=5.0)}) == {"a": 1.5}


def test_a_candidate_s_completion_and_hyperscore_follow_its_node_s_backlog() -> None:
    timed = {"expected_completion_s": 3.0, "run_s": 2.0, "time_rate": 0.01}
    sent = request(
        "t1",
        [
            candidate("a", **timed),
            candidate("b", fits=False, **timed),
            candidate("c", **timed),
        ],
    )
    a, b, c = with_backlogs(sent, {"a": 5.0, "b": 5.0}).candidates
    assert a.expected_completion_s == pytest.approx(7.0)
    assert a.queue_s == pytest.approx(5.0)
    assert a.hyperscore == pytest.approx(150.0 * math.exp(-0.01 * (5.0 - 1.0)))
    assert b == sent.candidates[1]  # not eligible: left as fusion scored it
    assert c == sent.candidates[2]  # no backlog known


def test_runs_sent_since_the_last_status_turn_a_task_to_another_node() -> None:
    timed = {"expected_completion_s": 2.0, "run_s": 2.0, "time_rate": 0.01}
    better = candidate("a", predicted_fidelity=0.95, hyperscore=151.0, **timed)
    sent = request("t1", [better, candidate("b", **timed)])
    assert one("hyperscore", sent.candidates).node == "a"
    ledger = Ledger()
    for k in range(10):
        ledger.record("a", at=100.0 + k, run_s=2.0)
    statuses = {node: node_status(node, depth=0, mean_job_s=2.0, at=99.0) for node in "ab"}
    (after,) = decide(get_policy("hyperscore"), [with_backlogs(sent, ledger.backlogs(statuses))])
    assert isinstance(after, Decision) and after.node == "b"
    assert after.expected_completion_s == pytest.approx(2.0)

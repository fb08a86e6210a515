"""Link topologies from config, BBPSSW purification, end-to-end pairs and reservations."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from qubus.errors import QubusError
from qubus.network.links import (
    MAX_PURIFY_ROUNDS,
    LinkFigures,
    LinkPlan,
    Topology,
    deliver_epr,
    expected_pair,
    load_topology,
    purify_fidelity,
    reserve_pairs,
    swap_fidelity,
)

TOPOLOGIES = Path(__file__).parents[2] / "deploy" / "topologies"
NODES = [f"n{i}" for i in range(10)]
SLOW = {"attempt_rate_hz": 1e3, "success_prob": 0.05, "coherence_s": 0.5, "cutoff_s": 10.0}
LASTING = SLOW | {"coherence_s": 50.0}  # memory outlasting many purification rounds


def werner(f: float) -> float:
    return (4 * f - 1) / 3


def degrees(topology: Topology) -> dict[str, int]:
    return {node: len(others) for node, others in topology.neighbours().items()}


def invalid(source: object) -> str:
    with pytest.raises(QubusError) as info:
        load_topology(source)
    assert info.value.code == "topology.invalid"
    return info.value.message


# ---------------------------------------------------------------- swapping and purification


def test_swapping_along_a_chain_multiplies_every_werner_parameter() -> None:
    fidelities = [0.95, 0.9, 0.85, 0.8]
    chained = 1.0
    for f in fidelities:
        chained = swap_fidelity(chained, f)
    assert chained == pytest.approx((3 * math.prod(werner(f) for f in fidelities) + 1) / 4)
    assert swap_fidelity(swap_fidelity(0.9, 0.8), 0.7) == pytest.approx(
        swap_fidelity(0.9, swap_fidelity(0.8, 0.7))
    )


@pytest.mark.parametrize("f", [0.3, 0.5, 0.6, 0.75, 0.9, 0.99])
def test_purification_of_equal_pairs_is_the_bbpssw_recurrence(f: float) -> None:
    success = f**2 + 2 * f * (1 - f) / 3 + 5 * ((1 - f) / 3) ** 2
    purified, p = purify_fidelity(f, f)
    assert p == pytest.approx(success)
    assert purified == pytest.approx((f**2 + ((1 - f) / 3) ** 2) / success)


def test_purification_improves_pairs_above_one_half_only() -> None:
    for f in np.linspace(0.51, 0.99, 25):
        assert purify_fidelity(f, f)[0] > f
    assert purify_fidelity(0.5, 0.5)[0] == pytest.approx(0.5)
    for f in np.linspace(0.26, 0.49, 10):
        assert purify_fidelity(f, f)[0] < f
    assert purify_fidelity(1.0, 1.0) == pytest.approx((1.0, 1.0))


def test_purification_is_symmetric_in_its_inputs() -> None:
    assert purify_fidelity(0.9, 0.7) == pytest.approx(purify_fidelity(0.7, 0.9))


def test_raw_plan_is_the_exact_mean_of_sampled_pairs() -> None:
    topology = Topology.ring(["a", "b"], **SLOW, f0=0.9)
    plan = LinkPlan.of(topology.links[0])
    rng = np.random.default_rng(21)
    pairs = [deliver_epr(topology, "a", "b", rng=rng) for _ in range(20_000)]
    fidelities = np.array([pair.fidelity for pair in pairs])
    assert plan.rounds == 0 and plan.raw_pairs == 1.0
    assert abs(fidelities.mean() - plan.fidelity) < 4 * fidelities.std() / math.sqrt(len(pairs))


def test_a_floor_purifies_until_the_expected_fidelity_reaches_it() -> None:
    raw = LinkPlan.of(LinkFigures(**LASTING, f0=0.8))
    plan = LinkPlan.of(LinkFigures(**LASTING, f0=0.8, purify_below=0.95))
    assert raw.fidelity < 0.95 <= plan.fidelity
    assert plan.rounds >= 2
    assert plan.raw_pairs > 2**plan.rounds  # failed rounds cost pairs too
    assert plan.latency_s == pytest.approx(plan.raw_pairs * raw.latency_s)
    assert LinkPlan.of(LinkFigures(**LASTING, f0=0.97, purify_below=0.95)).rounds == 0


def test_pairs_at_or_below_one_half_are_never_purified() -> None:
    assert LinkPlan.of(LinkFigures(**SLOW, f0=0.5, purify_below=0.9)).rounds == 0


def test_purification_stops_when_memory_decay_eats_the_gain() -> None:
    link = LinkFigures(**SLOW, f0=0.8, purify_below=0.99)
    plan = LinkPlan.of(link)
    assert 0 < plan.rounds < MAX_PURIFY_ROUNDS
    assert plan.fidelity < 0.99
    assert plan.purified().fidelity <= plan.fidelity


def test_sampled_purified_pairs_match_the_plan() -> None:
    topology = Topology.ring(["a", "b"], **LASTING, f0=0.8, purify_below=0.9)
    plan = LinkPlan.of(topology.links[0])
    rng = np.random.default_rng(5)
    pairs = [deliver_epr(topology, "a", "b", rng=rng) for _ in range(5_000)]
    fidelity = np.mean([pair.fidelity for pair in pairs])
    assert plan.rounds >= 1
    assert fidelity > LinkPlan.raw(topology.links[0]).fidelity + 0.05
    assert fidelity == pytest.approx(plan.fidelity, abs=0.005)
    assert np.mean([pair.latency_s for pair in pairs]) == pytest.approx(plan.latency_s, rel=0.05)
    assert np.mean([pair.purified for pair in pairs]) == pytest.approx(plan.raw_pairs - 1, rel=0.05)


# ---------------------------------------------------------------- end-to-end pairs


@pytest.mark.parametrize(
    ("figures", "tolerance"),
    [({}, 0.002), (SLOW | {"f0": 0.9}, 0.002), (SLOW | {"f0": 0.8, "purify_below": 0.9}, 0.01)],
)
def test_expected_pair_matches_the_mean_of_sampled_pairs(figures: dict, tolerance: float) -> None:
    topology = Topology.ring(["a", "b", "c", "d", "e", "f"], **figures)
    rng = np.random.default_rng(3)
    pairs = [deliver_epr(topology, "a", "d", rng=rng, hold_s=0.01) for _ in range(4_000)]
    fidelity, latency_s = expected_pair(topology, "a", "d", hold_s=0.01)
    assert len(pairs[0].path) == 4
    assert np.mean([pair.fidelity for pair in pairs]) == pytest.approx(fidelity, abs=tolerance)
    assert np.mean([pair.latency_s for pair in pairs]) == pytest.approx(latency_s, rel=0.04)


def test_expected_pair_of_one_hop_is_its_plan_held() -> None:
    topology = Topology.ring(["a", "b", "c"], **SLOW, f0=0.9)
    plan = LinkPlan.of(topology.link("a", "b"))
    fidelity, latency_s = expected_pair(topology, "b", "a", hold_s=0.5)
    assert latency_s == pytest.approx(plan.latency_s)
    assert fidelity - 0.25 == pytest.approx((plan.fidelity - 0.25) / math.e)


def test_expected_pair_falls_with_every_hop() -> None:
    topology = Topology.line(NODES)
    fidelities = [expected_pair(topology, "n0", node)[0] for node in NODES[1:]]
    assert all(later < earlier for earlier, later in itertools.pairwise(fidelities))
    assert expected_pair(topology, "n3", "n3") == (1.0, 0.0)


def test_ideal_pairs_are_perfect_but_still_take_time() -> None:
    topology = Topology.ring(["a", "b", "c", "d"], f0=0.7, purify_below=0.9)
    pair = deliver_epr(topology, "a", "c", rng=np.random.default_rng(1), ideal=True, hold_s=1.0)
    assert pair.fidelity == 1.0
    assert pair.latency_s > 0 and pair.attempts >= 2
    assert pair.purified == 0


def test_reservation_delivers_pairs_one_after_another() -> None:
    topology = Topology.ring(["a", "b", "c", "d"], **SLOW, f0=0.8, purify_below=0.9)
    made = reserve_pairs(topology, "a", "c", 50, rng=np.random.default_rng(8))
    again = reserve_pairs(topology, "a", "c", 50, rng=np.random.default_rng(8))
    one = deliver_epr(topology, "a", "c", rng=np.random.default_rng(8))
    assert made == again
    assert made.path == ["a", "b", "c"] and len(made.fidelities) == 50
    assert made.fidelities[0] == one.fidelity
    assert made.latency_s > 50 * min(LinkPlan.of(spec).latency_s for spec in topology.links) / 4
    assert made.purified == sum(made.hop_purified) > 0 and len(made.hop_purified) == 2


def test_holding_reserved_pairs_decays_each_of_them() -> None:
    topology = Topology.line(["a", "b"], **SLOW)
    fresh = reserve_pairs(topology, "a", "b", 5, rng=np.random.default_rng(2))
    held = reserve_pairs(topology, "a", "b", 5, rng=np.random.default_rng(2), hold_s=0.5)
    for f, h in zip(fresh.fidelities, held.fidelities, strict=True):
        assert h - 0.25 == pytest.approx((f - 0.25) / math.e)


# ---------------------------------------------------------------- topologies


def test_line_is_a_chain() -> None:
    topology = Topology.line(NODES)
    assert len(topology.links) == len(NODES) - 1
    assert sorted(degrees(topology).values()) == [1, 1] + [2] * (len(NODES) - 2)
    assert topology.path("n0", "n9") == NODES


def test_star_links_the_centre_to_every_node() -> None:
    topology = Topology.star(NODES, center="n4")
    assert degrees(topology)["n4"] == len(NODES) - 1
    assert all(d == 1 for node, d in degrees(topology).items() if node != "n4")
    assert topology.path("n0", "n9") == ["n0", "n4", "n9"]
    assert degrees(Topology.star(NODES))["n0"] == len(NODES) - 1


def test_ring_with_chords_adds_exactly_that_many_chords_and_stays_connected() -> None:
    ring = Topology.ring(NODES)
    chorded = Topology.ring_chords(NODES, chords=4, seed=7)
    assert len(chorded.links) == len(ring.links) + 4
    assert {spec.key for spec in ring.links} < {spec.key for spec in chorded.links}
    for a, b in itertools.combinations(NODES, 2):
        assert chorded.path(a, b)[-1] == b
    longest = max(len(chorded.path(a, b)) for a, b in itertools.combinations(NODES, 2))
    assert longest < len(ring.path("n0", "n5"))


def test_ring_chords_are_fixed_by_the_seed() -> None:
    def chords(seed: int) -> set[tuple[str, str]]:
        return {spec.key for spec in Topology.ring_chords(NODES, chords=3, seed=seed).links}

    assert chords(7) == chords(7)
    assert len({frozenset(chords(seed)) for seed in range(10)}) > 1


def test_chord_probability_spans_ring_to_complete_graph() -> None:
    assert Topology.ring_chords(NODES, chord_prob=0.0).links == Topology.ring(NODES).links
    complete = Topology.ring_chords(NODES, chord_prob=1.0)
    assert len(complete.links) == len(NODES) * (len(NODES) - 1) // 2


def test_generated_links_share_the_figures_given() -> None:
    topology = load_topology({"kind": "star", "nodes": ["a", "b", "c"], "f0": 0.85})
    assert {spec.f0 for spec in topology.links} == {0.85}
    assert {spec.coherence_s for spec in topology.links} == {LinkFigures().coherence_s}
    assert topology.description == "star of 3 nodes"


def test_a_topology_floor_applies_to_links_without_their_own() -> None:
    topology = load_topology(
        {
            "purify_below": 0.9,
            "links": [{"a": "a", "b": "b"}, {"a": "b", "b": "c", "purify_below": 0.8}],
        }
    )
    assert topology.link("a", "b").purify_below == 0.9
    assert topology.link("b", "c").purify_below == 0.8


@pytest.mark.parametrize("name", ["ring_chords", "line", "star_mixed"])
def test_example_topologies_load_and_are_connected(name: str) -> None:
    topology = load_topology(TOPOLOGIES / f"{name}.json")
    assert topology.description
    for a, b in itertools.combinations(topology.nodes, 2):
        fidelity, latency_s = expected_pair(topology, a, b)
        assert 0.25 < fidelity < 1 and latency_s > 0


def test_example_ring_with_chords_has_its_chords() -> None:
    spec = json.loads((TOPOLOGIES / "ring_chords.json").read_text())
    topology = load_topology(spec)
    assert len(topology.links) == len(spec["nodes"]) + spec["chords"]


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"kind": "line", "nodes": ["a", "b"], "chords": 2}, "chords"),
        ({"kind": "ring_chords", "nodes": ["a", "b", "c", "d"]}, "chords"),
        ({"kind": "ring_chords", "nodes": ["a", "b", "c", "d"], "chords": 3}, "chords=3"),
        ({"kind": "star", "nodes": ["a", "b"], "center": "z"}, "center"),
        ({"kind": "mesh", "nodes": ["a", "b"]}, "kind"),
        ({"kind": "ring", "nodes": ["a", "b", "a"]}, "nodes"),
        ({"kind": "ring", "nodes": ["a", "b"], "f0": 1.5}, "f0"),
        ({"kind": "ring", "nodes": ["a", "b"], "purify_below": 0.4}, "purify_below"),
        ({"kind": "ring", "nodes": ["A b", "c"]}, "nodes"),
        ({"links": [{"a": "a", "b": "b"}, {"a": "b", "b": "c", "f0": 0.1}]}, "links.1.f0"),
        ({"links": [{"a": "a", "b": "b", "speed": 3}]}, "links.0.speed"),
    ],
)
def test_config_errors_name_the_bad_field(source: dict, field: str) -> None:
    assert field in invalid(source)


def test_a_topology_file_must_hold_an_object(tmp_path: Path) -> None:
    path = tmp_path / "topology.json"
    path.write_text("[1, 2]")
    assert "JSON object" in invalid(path)

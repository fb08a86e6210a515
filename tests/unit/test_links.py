"""Entanglement link physics and topology."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from qubus.errors import QubusError
from qubus.network.links import (
    LinkSpec,
    Topology,
    load_topology,
    sample_epr,
    swap_fidelity,
    werner_fidelity,
)

EXAMPLE = Path(__file__).parents[2] / "examples" / "topology.json"
FLEET = ["ibm_nairobi", "quantinuum_h2_2", "ionq_aria", "ibm_manila"]
FIGURES = {"attempt_rate_hz": 1e3, "success_prob": 0.05, "f0": 0.9, "coherence_s": 0.5}


def make_link(**overrides: object) -> LinkSpec:
    return LinkSpec(**{"a": "x", "b": "y", **FIGURES, "cutoff_s": 10.0, **overrides})


def test_werner_fidelity_is_f0_when_fresh() -> None:
    assert werner_fidelity(0.9, 0.0, 1.0) == pytest.approx(0.9)


def test_werner_fidelity_after_one_coherence_time() -> None:
    assert werner_fidelity(0.9, 2.0, 2.0) == pytest.approx(0.25 + 0.65 / math.e)


def test_werner_fidelity_tends_to_fully_mixed() -> None:
    assert werner_fidelity(1.0, 1e6, 1.0) == pytest.approx(0.25)


def test_werner_fidelity_rejects_negative_age() -> None:
    with pytest.raises(ValueError, match="age_s"):
        werner_fidelity(0.9, -1.0, 1.0)


def test_swapping_perfect_pairs_is_perfect() -> None:
    assert swap_fidelity(1.0, 1.0) == pytest.approx(1.0)


def test_swapping_fully_mixed_pairs_stays_fully_mixed() -> None:
    assert swap_fidelity(0.25, 0.25) == pytest.approx(0.25)


def test_swapping_multiplies_werner_parameters() -> None:
    w = (4 * 0.9 - 1) / 3
    assert swap_fidelity(0.9, 0.9) == pytest.approx((3 * w * w + 1) / 4)
    assert swap_fidelity(0.9, 1.0) == pytest.approx(0.9)


def test_link_endpoints_are_stored_sorted() -> None:
    assert make_link(a="zeta", b="alpha").key == ("alpha", "zeta")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("f0", 0.25),
        ("f0", 0.1),
        ("f0", 1.01),
        ("success_prob", 0.0),
        ("success_prob", 1.5),
        ("attempt_rate_hz", 0.0),
        ("coherence_s", -1.0),
        ("cutoff_s", 0.0),
        ("f0", math.nan),
    ],
)
def test_link_rejects_invalid_figures(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        make_link(**{field: value})


def test_link_rejects_a_self_loop() -> None:
    with pytest.raises(ValidationError, match="two distinct nodes"):
        make_link(a="x", b="x")


def test_link_rejects_a_cutoff_shorter_than_one_attempt() -> None:
    with pytest.raises(ValidationError, match="shorter than one attempt"):
        make_link(attempt_rate_hz=10.0, cutoff_s=0.05)


def test_mean_sampled_latency_matches_expectation() -> None:
    link = make_link()
    rng = np.random.default_rng(1234)
    n = 20_000
    latencies = np.array([sample_epr(link, rng=rng).latency_s for _ in range(n)])
    p, rate = link.success_prob, link.attempt_rate_hz
    standard_error = math.sqrt(1 - p) / p / rate / math.sqrt(n)
    assert link.expected_latency_s == pytest.approx(1 / (rate * p))
    assert abs(latencies.mean() - link.expected_latency_s) < 3 * standard_error


def test_sampled_pair_is_consistent() -> None:
    link = make_link()
    pair = sample_epr(link, rng=np.random.default_rng(7), now_s=100.0)
    assert pair.link == ("x", "y")
    assert pair.latency_s == pytest.approx(pair.attempts / link.attempt_rate_hz)
    assert pair.generated_at_s == pytest.approx(100.0 + pair.latency_s)
    assert pair.regenerations == 0
    age = pair.attempts / link.attempt_rate_hz
    assert pair.fidelity == pytest.approx(werner_fidelity(link.f0, age, link.coherence_s))


def test_same_seed_gives_same_pair() -> None:
    link = make_link()
    first = sample_epr(link, rng=np.random.default_rng(3))
    assert sample_epr(link, rng=np.random.default_rng(3)) == first


def test_holding_a_pair_decays_it() -> None:
    link = make_link()
    fresh = sample_epr(link, rng=np.random.default_rng(5))
    held = sample_epr(link, rng=np.random.default_rng(5), hold_s=link.coherence_s)
    assert held.attempts == fresh.attempts
    assert held.fidelity - 0.25 == pytest.approx((fresh.fidelity - 0.25) / math.e)


def test_cutoff_regenerates_and_bounds_the_age() -> None:
    link = make_link(attempt_rate_hz=100.0, success_prob=0.01, cutoff_s=0.1)  # 10 per round
    rng = np.random.default_rng(11)
    pairs = [sample_epr(link, rng=rng) for _ in range(2_000)]
    floor = werner_fidelity(link.f0, link.cutoff_s, link.coherence_s)
    assert all(pair.regenerations == (pair.attempts - 1) // 10 for pair in pairs)
    assert any(pair.regenerations > 0 for pair in pairs)
    assert min(pair.fidelity for pair in pairs) >= floor - 1e-12


def test_max_wait_raises_link_timeout() -> None:
    link = make_link(success_prob=1e-6)
    with pytest.raises(QubusError) as info:
        sample_epr(link, rng=np.random.default_rng(0), max_wait_s=0.001)
    assert info.value.code == "link.timeout"


def test_ring_links_each_node_to_its_neighbours() -> None:
    topology = Topology.ring(["a", "b", "c", "d"])
    assert [spec.key for spec in topology.links] == [("a", "b"), ("a", "d"), ("b", "c"), ("c", "d")]
    assert len(Topology.ring(["a", "b"]).links) == 1
    assert Topology.ring(["a"]).links == []


def test_ring_rejects_repeated_nodes() -> None:
    with pytest.raises(ValueError, match="distinct"):
        Topology.ring(["a", "b", "a"])


def test_link_lookup_ignores_order() -> None:
    topology = Topology.ring(["a", "b", "c"])
    assert topology.link("c", "a") == topology.link("a", "c")


def test_unknown_link_raises() -> None:
    topology = Topology.ring(["a", "b", "c", "d"])
    with pytest.raises(QubusError) as info:
        topology.link("a", "c")
    assert info.value.code == "link.unknown"


def test_path_is_shortest_by_hops() -> None:
    topology = Topology.ring(["a", "b", "c", "d", "e"])
    assert topology.path("a", "b") == ["a", "b"]
    assert topology.path("a", "d") == ["a", "e", "d"]
    assert topology.path("b", "b") == ["b"]


def test_path_breaks_ties_deterministically() -> None:
    assert Topology.ring(["a", "b", "c", "d"]).path("a", "c") == ["a", "b", "c"]


def test_path_between_disconnected_nodes_raises() -> None:
    topology = Topology(links=[make_link(a="a", b="b"), make_link(a="c", b="d")])
    for a, b in [("a", "c"), ("a", "zz")]:
        with pytest.raises(QubusError) as info:
            topology.path(a, b)
        assert info.value.code == "link.no_path"


def test_topology_rejects_duplicate_links() -> None:
    with pytest.raises(ValidationError, match="listed twice"):
        Topology(links=[make_link(a="a", b="b"), make_link(a="b", b="a")])


def test_example_topology_is_a_ring_of_the_default_fleet() -> None:
    topology = load_topology(EXAMPLE)
    assert topology.nodes == sorted(FLEET)
    assert topology.links == Topology.ring(FLEET).links


def test_load_topology_accepts_a_mapping() -> None:
    data = Topology.ring(["a", "b"]).model_dump()
    assert load_topology(data).link("a", "b").f0 == pytest.approx(0.94)


@pytest.mark.parametrize("source", [{"links": [{"a": "x"}]}, "/nonexistent/topology.json"])
def test_load_topology_reports_invalid_input(source: object) -> None:
    with pytest.raises(QubusError) as info:
        load_topology(source)
    assert info.value.code == "topology.invalid"

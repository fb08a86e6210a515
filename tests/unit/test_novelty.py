"""Tests of feature vectors, cosine similarity and novelty."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qubus.circuits import circuit_features, parse_qasm
from qubus.circuits import novelty as novelty_module
from qubus.circuits.novelty import (
    COMPONENTS,
    NoveltyIndex,
    cosine_similarity,
    feature_vector,
    novelty,
)

HEADER = 'OPENQASM 2.0; include "qelib1.inc";\n'
GHZ = HEADER + "qreg q[4]; creg c[4]; h q[0]; cx q[0],q[1]; cx q[1],q[2]; cx q[2],q[3];\n"
GHZ_MEASURED = GHZ + "measure q -> c;"
QFT3 = (
    HEADER + "qreg q[3]; creg c[3]; h q[0]; cu1(pi/2) q[1],q[0]; cu1(pi/4) q[2],q[0]; h q[1];"
    "cu1(pi/2) q[2],q[1]; h q[2]; swap q[0],q[2]; measure q -> c;"
)


def _vector(text: str) -> list[float]:
    return feature_vector(circuit_features(parse_qasm(text)))


def _named(text: str) -> dict[str, float]:
    return dict(zip(COMPONENTS, _vector(text), strict=True))


def test_vector_has_one_value_in_unit_interval_per_named_component():
    for text in (GHZ, GHZ_MEASURED, QFT3):
        vector = _vector(text)
        assert len(vector) == len(COMPONENTS) == len(set(COMPONENTS))
        assert all(0.0 <= x <= 1.0 for x in vector)


def test_components_of_a_ghz_chain():
    v = _named(GHZ_MEASURED)
    assert v["mix.hadamard"] == pytest.approx(1 / 4)
    assert v["mix.controlled_pauli"] == pytest.approx(3 / 4)
    assert sum(x for name, x in v.items() if name.startswith("mix.")) == pytest.approx(1.0)
    assert v["size.qubits"] == pytest.approx(4 / 12)
    assert v["density.two_qubit"] == pytest.approx(3 / 4)
    assert v["measure.share"] == 1.0 and v["measure.repeats"] == 0.0
    assert v["control.classical"] == 0.0
    assert v["graph.coverage"] == 1.0
    assert v["graph.density"] == pytest.approx(3 / 6)
    assert v["graph.max_degree"] == pytest.approx(2 / 3)
    assert v["graph.concentration"] == pytest.approx(1 / 3)
    assert v["graph.connectivity"] == 1.0
    assert v["graph.cycles"] == 0.0  # a chain has no cycle


def test_graph_components_see_idle_qubits_and_cycles():
    ring = HEADER + "qreg q[4]; cx q[0],q[1]; cx q[1],q[2]; cx q[2],q[0]; h q[3];"
    v = _named(ring)
    assert v["graph.connectivity"] == pytest.approx(1 / 2)  # the triangle, and q[3] alone
    assert v["graph.coverage"] == pytest.approx(3 / 4)
    assert v["graph.cycles"] == pytest.approx(1 / 3)


def test_mid_circuit_measurement_and_control_show_in_the_vector():
    text = HEADER + "qreg q[1]; creg c[1]; h q[0]; measure q[0] -> c[0];"
    text += "if(c==1) x q[0]; measure q[0] -> c[0];"
    v = _named(text)
    assert v["measure.repeats"] == pytest.approx(1 / 2)
    assert v["control.classical"] == 1.0


def test_same_structure_with_other_angles_has_the_same_vector():
    a = HEADER + "qreg q[2]; rz(0.1) q[0]; cx q[0],q[1];"
    b = HEADER + "qreg r[2]; rz(2.5) r[1]; cx r[1],r[0];"
    assert _vector(a) == _vector(b)


def test_cosine_similarity_edges():
    assert cosine_similarity([1.0, 0.0], [0.0, 2.0]) == 0.0
    assert cosine_similarity([1.0, 1.0], [3.0, 3.0]) == pytest.approx(1.0)
    assert cosine_similarity([0.0, 0.0], [0.0, 0.0]) == 1.0
    assert cosine_similarity([0.0, 0.0], [1.0, 0.0]) == 0.0
    with pytest.raises(ValueError):
        cosine_similarity([1.0], [1.0, 0.0])


def test_first_circuit_is_new_and_a_repeat_is_not():
    ghz = _vector(GHZ_MEASURED)
    assert novelty(ghz, []) == 1.0
    assert novelty(ghz, [ghz]) == 0.0
    partly = novelty(_vector(QFT3), [ghz])
    assert 0.0 < partly < 1.0
    assert partly == pytest.approx(1 - cosine_similarity(_vector(QFT3), ghz))


def test_novelty_is_against_the_closest_circuit_seen():
    ghz, qft = _vector(GHZ_MEASURED), _vector(QFT3)
    unmeasured = _vector(GHZ)
    assert novelty(unmeasured, [qft, ghz]) == novelty(unmeasured, [ghz])
    assert novelty(unmeasured, [ghz]) < novelty(unmeasured, [qft])


_VECTORS = st.lists(
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=len(COMPONENTS)
).map(lambda xs: xs[: len(COMPONENTS)])


@settings(max_examples=60, deadline=None)
@given(st.lists(_VECTORS, max_size=6), _VECTORS, st.integers(min_value=0, max_value=7))
def test_index_before_a_revision_equals_novelty_against_earlier_vectors(seen, query, before):
    index = NoveltyIndex()
    # Entries may reach a replica in any order; revisions fix their order.
    for revision, vector in reversed(list(enumerate(seen, start=1))):
        index.add(revision, f"k{revision}", vector, created=float(revision))
    expected = novelty(query, seen[: max(0, before - 1)])
    assert index.novelty(query, before=before) == pytest.approx(expected, abs=1e-9)
    assert 0.0 <= index.novelty(query) <= 1.0


def test_index_forgets_removed_entries():
    index = NoveltyIndex()
    ghz = _vector(GHZ_MEASURED)
    index.add(1, "ghz", ghz, created=1.0)
    assert index.novelty(ghz) == 0.0 and len(index) == 1
    index.remove("ghz")
    assert index.novelty(ghz) == 1.0 and len(index) == 0
    with pytest.raises(ValueError):
        index.add(2, "short", [1.0], created=2.0)


def test_vectors_are_finite_for_degenerate_circuits():
    for text in (HEADER + "qreg q[1];", HEADER + "qreg q[1]; creg c[1]; measure q -> c;"):
        assert all(math.isfinite(x) for x in _vector(text))


def test_an_entry_delivered_again_is_held_once() -> None:
    # A replaced KV watcher replays every current value.
    index = NoveltyIndex()
    a, b = [1.0] + [0.0] * (len(COMPONENTS) - 1), [0.0, 1.0] + [0.0] * (len(COMPONENTS) - 2)
    index.add(1, "a", a, created=1.0)
    index.add(2, "b", b, created=2.0)
    index.add(1, "a", a, created=1.0)
    assert len(index) == 2
    assert index.novelty(b, before=2) == pytest.approx(1.0)
    assert index.novelty(b) == pytest.approx(0.0)


def test_only_the_circuits_stored_within_the_window_of_the_last_one_before_count() -> None:
    rng = np.random.default_rng(3)
    vectors = [rng.random(len(COMPONENTS)).tolist() for _ in range(4)]
    index = NoveltyIndex(window_s=15.0)
    times = (0.0, 10.0, 20.0, 40.0)
    for revision, (vector, created) in enumerate(zip(vectors, times, strict=True), start=1):
        index.add(revision, f"k{revision}", vector, created)
    query = rng.random(len(COMPONENTS)).tolist()
    # before revision 4 the last entry was stored at 20: those from 5 on count
    assert index.novelty(query, before=4) == pytest.approx(novelty(query, vectors[1:3]))
    assert index.novelty(query) == pytest.approx(novelty(query, vectors[3:]))  # 40 - 15 = 25


def test_an_index_holds_and_compares_a_bounded_number_of_circuits(monkeypatch) -> None:
    monkeypatch.setattr(novelty_module, "REFERENCES", 4)
    monkeypatch.setattr(novelty_module, "PRUNE_SLACK", 3)
    rng = np.random.default_rng(4)
    vectors = [rng.random(len(COMPONENTS)).tolist() for _ in range(40)]
    index = NoveltyIndex()
    query = rng.random(len(COMPONENTS)).tolist()
    for revision, vector in enumerate(vectors, start=1):
        index.add(revision, f"k{revision}", vector, created=float(revision))
        assert len(index) <= 4 + 2 * 3
        # a query for any of the last PRUNE_SLACK entries still has its 4 before it
        for before in range(max(2, revision - 2), revision + 1):
            expected = novelty(query, vectors[max(0, before - 5) : before - 1])
            assert index.novelty(query, before=before) == pytest.approx(expected, abs=1e-12)
    assert len(index) < len(vectors)

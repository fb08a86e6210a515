"""Novelty: how unlike every circuit seen before a circuit is.

A circuit's ``feature_vector`` is a fixed-length vector of numbers in ``[0, 1]`` computed from
its ``Features`` (never from angles or names of qubits, so circuits of the same structure look
alike). Its novelty is ``1 - max cosine similarity`` with the vectors of the circuits seen
before it: ``1.0`` for the first circuit ever, ``0.0`` for a circuit whose vector was seen
already (in particular for the same circuit again). Every component is non-negative, so cosine
similarities, and with them novelties, lie in ``[0, 1]``.

The components, in order (``COMPONENTS`` holds the names):

* ``mix.*`` (12): the share of each gate family among the circuit's non-measurement
  operations (``GATE_FAMILIES``; names not listed count as ``mix.other``). They sum to 1, or
  are all 0 for a circuit without gates.
* ``size.qubits``, ``size.depth``, ``size.clbits``: ``n / (n + s)``, saturating at 1, with
  the half-way points ``s`` of ``SIZE_SCALES`` (8 qubits, 64 moments, 8 bits).
* ``density.fill``: operations / (qubits × depth), the share of qubit-moments that hold an
  operation (1 for a circuit without idle slots).
* ``density.two_qubit`` and ``density.multi_qubit``: the share of non-measurement operations
  acting on exactly two, and on three or more, qubits.
* ``measure.share``: the share of qubits that are measured.
* ``measure.repeats``: the share of measurements that measure a qubit measured before
  (0 when each qubit is measured at most once: mid-circuit measurement shows here).
* ``control.classical``: 1 if any operation is classically controlled, else 0.
* ``graph.coverage``: the share of qubits that take part in a multi-qubit operation.
* ``graph.density``: edges of the interaction graph / the ``n(n-1)/2`` possible pairs.
* ``graph.max_degree``: the largest number of partners of one qubit / ``(n - 1)``.
* ``graph.concentration``: the weight of the heaviest edge / the total weight (1 when all
  interaction is between one pair).
* ``graph.connectivity``: 1 / the number of connected components of the interaction graph
  over all qubits (1 for a connected circuit; idle qubits are components of their own).
* ``graph.cycles``: the cycle rank ``edges - nodes + components`` of the graph of
  interacting qubits, divided by its edges (0 for chains, stars and trees; towards 1 for
  dense graphs).

Changing a component changes ``VECTOR_VERSION``; vectors of another version are not compared.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import ClassVar

import numpy as np

from qubus.bus.messages import Features, Model

__all__ = [
    "COMPONENTS",
    "GATE_FAMILIES",
    "SIZE_SCALES",
    "VECTOR_VERSION",
    "FeatureRecord",
    "NoveltyIndex",
    "cosine_similarity",
    "feature_vector",
    "novelty",
]

VECTOR_VERSION = 1

#: Gate names (``qubus.circuits.gate_name``) of each ``mix.*`` component; others are ``other``.
GATE_FAMILIES: dict[str, frozenset[str]] = {
    "pauli": frozenset({"id", "x", "y", "z"}),
    "hadamard": frozenset({"h"}),
    "clifford_phase": frozenset({"s", "sdg", "sx", "sxdg"}),
    "t": frozenset({"t", "tdg"}),
    "rotation": frozenset({"rx", "ry", "rz", "p", "u3", "xpow", "ypow", "zpow", "phasedxpow"}),
    "controlled_pauli": frozenset({"cnot", "cz", "cy", "ch", "csx"}),
    "controlled_rotation": frozenset({"cp", "crx", "cry", "crz", "cu3", "cxpow", "cczpow"}),
    "ising": frozenset({"rxx", "ryy", "rzz", "iswap", "fsim"}),
    "swap": frozenset({"swap"}),
    "multi_controlled": frozenset({"ccx", "ccz", "cswap", "cccx", "ccccx", "cccsx"}),
    "reset": frozenset({"reset"}),
}
_FAMILY_OF = {name: family for family, names in GATE_FAMILIES.items() for name in names}

#: Half-way points of the saturating ``size.*`` components.
SIZE_SCALES = {"qubits": 8.0, "depth": 64.0, "clbits": 8.0}

COMPONENTS: tuple[str, ...] = (
    *(f"mix.{family}" for family in GATE_FAMILIES),
    "mix.other",
    "size.qubits",
    "size.depth",
    "size.clbits",
    "density.fill",
    "density.two_qubit",
    "density.multi_qubit",
    "measure.share",
    "measure.repeats",
    "control.classical",
    "graph.coverage",
    "graph.density",
    "graph.max_degree",
    "graph.concentration",
    "graph.connectivity",
    "graph.cycles",
)
"""The name of each component of a feature vector, in order (see the module docstring)."""


def _share(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


def _saturating(value: float, scale: float) -> float:
    return value / (value + scale)


def _components(qubits: int, edges: Iterable[tuple[str, str]]) -> tuple[int, int, int]:
    """``(components over all qubits, nodes that interact, components among those nodes)``."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in edges:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        parent[root(a)] = root(b)
    interacting = len({root(node) for node in parent})
    return interacting + qubits - len(parent), len(parent), interacting


def feature_vector(features: Features) -> list[float]:
    """The feature vector of a circuit (components: ``COMPONENTS``, module docstring).

    Args:
        features: The circuit's features, as computed by ``qubus.circuits.circuit_features``.

    Returns:
        ``len(COMPONENTS)`` numbers, each in ``[0, 1]``.
    """
    counts = features.gate_counts
    measurements = counts.get("measure", 0)
    operations = sum(counts.values()) - measurements
    mix = dict.fromkeys([*GATE_FAMILIES, "other"], 0)
    for name, n in counts.items():
        if name != "measure":
            mix[_FAMILY_OF.get(name, "other")] += n
    n = features.qubits
    edges = [(a, b) for a, b, _ in features.interaction_graph]
    weights = [weight for _, _, weight in features.interaction_graph]
    components, nodes, node_components = _components(n, edges)
    degree: dict[str, int] = {}
    for a, b in edges:
        degree[a] = degree.get(a, 0) + 1
        degree[b] = degree.get(b, 0) + 1
    vector = [
        *(_share(mix[family], operations) for family in mix),
        _saturating(n, SIZE_SCALES["qubits"]),
        _saturating(features.depth, SIZE_SCALES["depth"]),
        _saturating(features.clbits, SIZE_SCALES["clbits"]),
        min(1.0, _share(operations + measurements, n * features.depth)),
        _share(features.two_qubit_gates, operations),
        _share(features.multi_qubit_gates, operations),
        _share(len(features.measured_qubits), n),
        _share(measurements - len(features.measured_qubits), measurements),
        float(features.classical_control),
        _share(nodes, n),
        _share(len(edges), n * (n - 1) / 2),
        _share(max(degree.values(), default=0), n - 1),
        _share(max(weights, default=0), sum(weights)),
        _share(1, components),
        _share(len(edges) - nodes + node_components, len(edges)),
    ]
    return [float(x) for x in vector]


def _unit(vector: Sequence[float]) -> np.ndarray:
    """``vector`` scaled to length 1 (a zero vector stays zero)."""
    x = np.asarray(vector, dtype=float)
    norm = float(np.linalg.norm(x))
    return x / norm if norm else x


def _similarities(rows: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``unit`` with each row (all unit or zero vectors).

    A zero vector is similar (1.0) only to another zero vector, and to nothing else (0.0).
    """
    if unit.any():
        return np.clip(rows @ unit, -1.0, 1.0)
    return (~rows.any(axis=1)).astype(float)


def _novelty(similarities: np.ndarray) -> float:
    """``1 - max similarity`` in ``[0, 1]`` (1.0 when nothing was seen), rounded to 12
    decimals so that a vector equal to one seen gives exactly 0.0 despite rounding errors."""
    best = float(similarities.max()) if similarities.size else 0.0
    return round(min(1.0, max(0.0, 1.0 - best)), 12)


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    """The cosine of the angle between two vectors of the same length, in ``[-1, 1]``.

    A zero vector is similar (1.0) only to another zero vector, and to nothing else (0.0).

    Raises:
        ValueError: The vectors differ in length.
    """
    if len(a) != len(b):
        raise ValueError(f"vectors of different lengths: {len(a)} and {len(b)}")
    return float(_similarities(_unit(a)[np.newaxis, :], _unit(b))[0])


def novelty(vector: Sequence[float], seen: Iterable[Sequence[float]]) -> float:
    """``1 - max cosine similarity`` of ``vector`` with the vectors ``seen``, in ``[0, 1]``.

    Returns 1.0 when nothing was seen, exactly 0.0 when ``vector`` was seen.
    """
    rows = [_unit(other) for other in seen]
    if not rows:
        return 1.0
    return _novelty(_similarities(np.vstack(rows), _unit(vector)))


class FeatureRecord(Model):
    """A circuit's vector as stored in KV ``qubus_features`` under its fingerprint.

    Attributes:
        task_id: The task that first submitted the circuit.
        version: ``VECTOR_VERSION`` of ``vector``.
        vector: The circuit's feature vector.
    """

    TYPE: ClassVar[str] = "feature.record.v1"

    task_id: str
    version: int
    vector: list[float]


REFERENCES = 50_000
"""Most circuits a novelty is computed against: those stored last before it (50,000 vectors
are ~40 MB in a parser and 0.15 ms a query; the index would otherwise grow with every distinct
circuit the stack has seen)."""
PRUNE_SLACK = 5_000
"""Entries an index holds beyond ``REFERENCES`` (so that a circuit stored up to this many
entries before the newest still gets its full ``REFERENCES``), and how many it gathers before
dropping the oldest."""


class NoveltyIndex:
    """The vectors of circuits seen, each at its position in the store's order (a revision).

    Novelty is computed against the vectors stored *before* a given revision, so every
    process that holds the same entries gives a circuit the same novelty, whichever order
    the entries reached it in and whenever it asks. Of those, only the last ``REFERENCES``
    and those stored within ``window_s`` of the last of them count (the store keeps its entries
    that long: KV ``qubus_features``'s TTL), so what an index holds and a query costs stay
    bounded; it drops older entries as it goes.

    Args:
        window_s: How far back from the newest entry before a revision its novelty looks.
    """

    def __init__(self, window_s: float = float("inf")) -> None:
        self._window_s = window_s
        self._revisions: list[int] = []
        self._times: list[float] = []
        self._keys: list[str] = []
        self._held: set[str] = set()
        self._rows: list[np.ndarray] = []
        # The rows stacked (its first len(self) rows; spare capacity after them), or None
        # until the next query rebuilds it.
        self._matrix: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._revisions)

    def add(self, revision: int, key: str, vector: Sequence[float], created: float) -> None:
        """Hold ``vector`` of entry ``key``, stored at ``revision`` at time ``created`` (the
        store's, in seconds), and drop what no query for a newer entry needs any more.

        Raises:
            ValueError: ``vector`` does not have one value per ``COMPONENTS`` entry.
        """
        if len(vector) != len(COMPONENTS):
            raise ValueError(f"a feature vector has {len(COMPONENTS)} values, got {len(vector)}")
        if key in self._held:  # delivered again (a replaced watcher replays the bucket)
            self.remove(key)
        self._held.add(key)
        position = bisect_left(self._revisions, revision)
        row = _unit(vector)
        self._revisions.insert(position, revision)
        self._times.insert(position, created)
        self._keys.insert(position, key)
        self._rows.insert(position, row)
        if self._matrix is not None and position == len(self._rows) - 1:
            self._append(row)  # the usual case: entries arrive in store order
        else:
            self._matrix = None
        self._prune()

    def _prune(self) -> None:
        """Drop the oldest entries once ``PRUNE_SLACK`` of them are beyond every query for one
        of the last ``PRUNE_SLACK`` entries (``REFERENCES`` before it, within ``window_s``)."""
        oldest_query = len(self._rows) - PRUNE_SLACK
        if oldest_query <= 0:
            return
        since = self._times[oldest_query - 1] - self._window_s
        unused = max(oldest_query - REFERENCES, bisect_left(self._times, since, hi=oldest_query))
        if unused < PRUNE_SLACK:
            return
        self._held.difference_update(self._keys[:unused])
        for column in (self._revisions, self._times, self._keys, self._rows):
            del column[:unused]
        self._matrix = None

    def _append(self, row: np.ndarray) -> None:
        """Put the newest row at the end of the matrix, doubling its capacity when full."""
        assert self._matrix is not None
        count = len(self._rows)
        if count > self._matrix.shape[0]:
            grown = np.empty((2 * count, self._matrix.shape[1]))
            grown[: count - 1] = self._matrix[: count - 1]
            self._matrix = grown
        self._matrix[count - 1] = row

    def remove(self, key: str) -> None:
        """Forget entry ``key`` (deleted or purged from the store)."""
        self._held.discard(key)
        keep = [i for i, k in enumerate(self._keys) if k != key]
        self._revisions = [self._revisions[i] for i in keep]
        self._times = [self._times[i] for i in keep]
        self._keys = [self._keys[i] for i in keep]
        self._rows = [self._rows[i] for i in keep]
        self._matrix = None

    def novelty(self, vector: Sequence[float], *, before: int | None = None) -> float:
        """The novelty of ``vector`` against the entries stored before revision ``before``
        (all entries when ``None``): of those, the last ``REFERENCES``, and only those stored
        within ``window_s`` of the last of them; the same value as ``novelty(vector, those
        vectors)``."""
        count = len(self._rows) if before is None else bisect_left(self._revisions, before)
        if count == 0:
            return 1.0
        since = self._times[count - 1] - self._window_s
        start = max(count - REFERENCES, bisect_left(self._times, since, hi=count))
        if self._matrix is None:
            self._matrix = np.vstack(self._rows)
        return _novelty(_similarities(self._matrix[start:count], _unit(vector)))

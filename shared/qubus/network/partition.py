"""Partitioning a circuit's qubits across QPUs so that few two-qubit gates cross between them.

Model. A split circuit runs with every qubit on one QPU (part ``i`` on QPU ``i``). Under
telegate execution (:mod:`qubus.network.distributed`) a two-qubit gate whose qubits sit on different
QPUs consumes one EPR pair, an *ebit*, so a partition is judged by the number of such *remote*
gates. Telegate sends the value of a *control* qubit to the other QPU (a cat-entangler), so a
gate can be remote only if it is block-diagonal in one of its qubits (``diag(U0, U1)`` in that
qubit's basis: CZ^t, CX^t, CP, CRZ, rzz, any controlled one-qubit gate). :func:`split_form`
rewrites every other multi-qubit operation (SWAP, Toffoli, iSWAP...) with Cirq's decompositions
into such gates and one-qubit gates; measurements stay whole. The interaction graph weighs each
pair of qubits by the two-qubit gates between them; the ebits of a partition are the weight of
the edges it cuts.

Methods (``partition_circuit(..., method=)``):

* ``greedy``, the baseline: qubits are taken most-connected-to-the-placed first (ties: most
  connected overall, then name); each joins the part with room it is most connected to (ties:
  the lowest index), so parts fill one after the other along the interaction graph.
* ``kl``: Kernighan–Lin passes (Kernighan and Lin, Bell Syst. Tech. J. 49 (1970) 291), k-way
  with capacities, from the greedy partition and from ``KL_RESTARTS`` seeded random fills; the
  best result wins. A pass tentatively applies the best swap of two
  unlocked qubits of different parts or move of one into a part with room, even when it
  increases the cut, locks what moved, and at the end keeps the best prefix of its moves; passes
  repeat while they gain. A pass never ends worse than it starts, so the run from the greedy
  start, and hence ``kl``, is at most ``greedy`` on every circuit by construction.

Lower bound (:func:`ebit_lower_bound`): the integer program ``min Σ w_ab·y_ab`` over
assignments ``x_qi ∈ {0, 1}`` with ``Σ_i x_qi = 1``, ``Σ_q x_qi ≤ capacity_i`` and
``y_ab ≥ x_ai − x_bi`` for every part (``y_ab`` is 1 when ``a`` and ``b`` are apart), solved by
HiGHS (``scipy.optimize.milp``) within a time limit, with parts of equal capacity made
interchangeable by fixing the busiest qubit's part. When HiGHS finishes, the bound is the
optimum (``exact``); otherwise it is the largest of HiGHS's proven dual bound (rounded up),
the weight left outside the ``Σ_i C(capacity_i, 2)`` heaviest pairs (no more pairs fit inside
the parts), and, when no part can hold every qubit, the global minimum cut of the interaction
graph (Stoer–Wagner): at least two parts are then used, and any such partition cuts at least
that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cirq
import networkx as nx
import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from qubus.errors import QubusError

METHODS = ("kl", "greedy")

KL_RESTARTS = 4
"""Kernighan–Lin runs from random fills besides the one from the greedy partition."""

KL_SEED = 0
"""Seed of the random fills: the same circuit and capacities always give the same partition."""

BOUND_TIME_LIMIT_S = 2.0
"""Time HiGHS is given to prove the lower bound; circuits of up to about 20 qubits usually
finish well within it (the bound is then the optimum)."""

_BLOCK_ATOL = 1e-9


@dataclass(frozen=True)
class Partition:
    """Which QPU each qubit of a circuit runs on.

    Attributes:
        parts: The circuit's qubits of each part, sorted; part ``i`` runs on QPU ``i``. A part
            may be empty (its QPU is not used).
        ebits: Remote two-qubit gates of the circuit's split form (one EPR pair each under
            telegate).
        lower_bound: A proven lower bound on ``ebits`` for these capacities
            (:func:`ebit_lower_bound`).
        method: ``"kl"`` (Kernighan–Lin refined) or ``"greedy"`` (the baseline).
    """

    parts: tuple[tuple[cirq.Qid, ...], ...]
    ebits: int
    lower_bound: int
    method: str


@dataclass(frozen=True)
class EbitBound:
    """A proven lower bound on the ebits of any partition within given capacities.

    Attributes:
        value: The bound.
        exact: The integer program was solved to optimality: ``value`` is the fewest ebits
            any partition can have.
    """

    value: int
    exact: bool


Weights = dict[tuple[cirq.Qid, cirq.Qid], int]
"""Sorted qubit pair → number of two-qubit gates between them."""


def control_qubit(op: cirq.Operation) -> cirq.Qid | None:
    """The qubit a two-qubit operation is block-diagonal in (the first if both), or None.

    Such an operation acts as ``|0⟩⟨0| ⊗ U0 + |1⟩⟨1| ⊗ U1`` on that qubit and the other, which
    is what telegate needs: the gate then acts the same on any qubit holding a copy of the
    control's computational-basis value.
    """
    if len(op.qubits) != 2 or not cirq.has_unitary(op):
        return None
    u = cirq.unitary(op).reshape(2, 2, 2, 2)  # out_a, out_b, in_a, in_b
    if np.allclose(u[0, :, 1, :], 0, atol=_BLOCK_ATOL) and np.allclose(
        u[1, :, 0, :], 0, atol=_BLOCK_ATOL
    ):
        return op.qubits[0]
    if np.allclose(u[:, 0, :, 1], 0, atol=_BLOCK_ATOL) and np.allclose(
        u[:, 1, :, 0], 0, atol=_BLOCK_ATOL
    ):
        return op.qubits[1]
    return None


def _splittable(op: cirq.Operation) -> bool:
    inner = op.without_classical_controls()
    if len(inner.qubits) <= 1 or cirq.is_measurement(inner):
        return True
    return control_qubit(inner) is not None


def split_form(circuit: cirq.AbstractCircuit) -> cirq.Circuit:
    """The circuit as one-qubit operations, measurements and block-diagonal two-qubit gates.

    Other operations are decomposed by Cirq; classical controls carry over to every part of a
    decomposed operation, and global phases are dropped.

    Raises:
        QubusError: ``split.unsupported`` when an operation cannot be decomposed so.
    """
    ops: list[cirq.Operation] = []
    for op in circuit.all_operations():
        if not op.qubits:
            continue
        if _splittable(op):
            ops.append(op)
            continue
        conditions = op.classical_controls
        try:
            parts = cirq.decompose(op.without_classical_controls(), keep=_splittable)
        except (TypeError, ValueError) as exc:
            raise QubusError(
                f"cannot write {op!r} with controlled two-qubit gates", code="split.unsupported"
            ) from exc
        ops.extend(
            part.with_classical_controls(*conditions) if conditions else part
            for part in parts
            if part.qubits
        )
    return cirq.Circuit(ops)


def interaction_weights(circuit: cirq.AbstractCircuit) -> Weights:
    """Two-qubit gates per qubit pair of the circuit's :func:`split_form`."""
    weights: Weights = {}
    for op in split_form(circuit).all_operations():
        inner = op.without_classical_controls()
        if len(inner.qubits) == 2 and not cirq.is_measurement(inner):
            a, b = sorted(inner.qubits)
            weights[(a, b)] = weights.get((a, b), 0) + 1
    return weights


def ebits_of(circuit: cirq.AbstractCircuit, parts: Sequence[Iterable[cirq.Qid]]) -> int:
    """Remote two-qubit gates of the circuit's split form when its qubits sit in ``parts``."""
    return _cut(interaction_weights(circuit), _home(parts))


def partition_circuit(
    circuit: cirq.AbstractCircuit,
    capacities: Sequence[int],
    *,
    method: str = "kl",
    bound_time_s: float = BOUND_TIME_LIMIT_S,
) -> Partition:
    """Split a circuit's qubits into parts of at most ``capacities[i]`` qubits, few ebits apart.

    Args:
        circuit: The circuit; every qubit it touches is placed.
        capacities: Data qubits each QPU can take (``qubus.network.distributed.usable_qubits``).
        method: ``"kl"`` or ``"greedy"`` (module docstring).
        bound_time_s: Time limit of the lower bound's integer program.

    Returns:
        The partition, its ebits and a proven lower bound.

    Raises:
        QubusError: ``split.infeasible`` when the qubits outnumber the total capacity;
            ``split.unsupported`` (from :func:`split_form`).
        ValueError: An unknown method or a negative capacity.
    """
    if method not in METHODS:
        raise ValueError(f"unknown partition method {method!r}; expected one of {METHODS}")
    if any(c < 0 for c in capacities):
        raise ValueError(f"capacities must be ≥ 0, got {list(capacities)}")
    qubits = sorted(circuit.all_qubits())
    if len(qubits) > sum(capacities):
        raise QubusError(
            f"{len(qubits)} qubits do not fit QPUs of {', '.join(map(str, capacities))} "
            f"usable qubits ({sum(capacities)} in all)",
            code="split.infeasible",
        )
    weights = interaction_weights(circuit)
    home = _greedy(qubits, weights, capacities)
    if method == "kl":
        rng = np.random.default_rng(KL_SEED)
        starts = [home] + [_random_fill(qubits, capacities, rng) for _ in range(KL_RESTARTS)]
        refined = [_kernighan_lin(start, weights, capacities) for start in starts]
        home = min(refined, key=lambda h: _cut(weights, h))
    parts = tuple(tuple(q for q in qubits if home[q] == i) for i in range(len(capacities)))
    bound = _lower_bound(qubits, weights, capacities, bound_time_s)
    return Partition(parts=parts, ebits=_cut(weights, home), lower_bound=bound.value, method=method)


def ebit_lower_bound(
    circuit: cirq.AbstractCircuit,
    capacities: Sequence[int],
    *,
    time_limit_s: float = BOUND_TIME_LIMIT_S,
) -> EbitBound:
    """A proven lower bound on the ebits of any partition of the circuit within ``capacities``
    (module docstring), and whether it is the optimum."""
    qubits = sorted(circuit.all_qubits())
    return _lower_bound(qubits, interaction_weights(circuit), capacities, time_limit_s)


def _home(parts: Sequence[Iterable[cirq.Qid]]) -> dict[cirq.Qid, int]:
    return {q: i for i, part in enumerate(parts) for q in part}


def _cut(weights: Weights, home: dict[cirq.Qid, int]) -> int:
    return sum(w for (a, b), w in weights.items() if home[a] != home[b])


def _neighbours(weights: Weights) -> dict[cirq.Qid, dict[cirq.Qid, int]]:
    near: dict[cirq.Qid, dict[cirq.Qid, int]] = {}
    for (a, b), w in weights.items():
        near.setdefault(a, {})[b] = w
        near.setdefault(b, {})[a] = w
    return near


def _greedy(
    qubits: list[cirq.Qid], weights: Weights, capacities: Sequence[int]
) -> dict[cirq.Qid, int]:
    """The baseline: most-connected-to-the-placed qubit next, into its most-connected part."""
    near = _neighbours(weights)
    degree = {q: sum(near.get(q, {}).values()) for q in qubits}
    room = list(capacities)
    home: dict[cirq.Qid, int] = {}
    pending = list(qubits)
    while pending:
        qubit = max(
            pending,
            key=lambda q: (sum(w for o, w in near.get(q, {}).items() if o in home), degree[q]),
        )
        pending.remove(qubit)
        pull = [0] * len(room)
        for other, w in near.get(qubit, {}).items():
            if other in home:
                pull[home[other]] += w
        part = max((i for i in range(len(room)) if room[i] > 0), key=lambda i: (pull[i], -i))
        home[qubit] = part
        room[part] -= 1
    return home


def _random_fill(
    qubits: list[cirq.Qid], capacities: Sequence[int], rng: np.random.Generator
) -> dict[cirq.Qid, int]:
    """Qubits in random order into the parts in turn, each filled to its capacity."""
    slots = [i for i, capacity in enumerate(capacities) for _ in range(capacity)]
    order = rng.permutation(len(qubits))
    return {qubits[q]: slots[rank] for rank, q in enumerate(order)}


def _kernighan_lin(
    home: dict[cirq.Qid, int], weights: Weights, capacities: Sequence[int]
) -> dict[cirq.Qid, int]:
    """Kernighan–Lin passes from ``home`` while a pass reduces the cut."""
    home = dict(home)
    near = _neighbours(weights)
    while _kl_pass(home, near, capacities) > 0:
        pass
    return home


def _kl_pass(
    home: dict[cirq.Qid, int],
    near: dict[cirq.Qid, dict[cirq.Qid, int]],
    capacities: Sequence[int],
) -> int:
    """One pass, applied to ``home`` in place up to its best prefix; returns the gain kept."""
    k = len(capacities)
    pull = {q: [0] * k for q in home}  # pull[q][i]: weight between q and part i
    for q, others in near.items():
        for other, w in others.items():
            pull[q][home[other]] += w
    room = list(capacities)
    for part in home.values():
        room[part] -= 1

    def move(q: cirq.Qid, to: int) -> None:
        was = home[q]
        for other, w in near.get(q, {}).items():
            pull[other][was] -= w
            pull[other][to] += w
        room[was] += 1
        room[to] -= 1
        home[q] = to

    unlocked = set(home)
    moves: list[tuple[cirq.Qid, int]] = []  # (qubit, part it came from)
    total = best = kept = 0
    while unlocked:
        choice = _best_step(unlocked, home, near, pull, room)
        if choice is None:
            break
        gain, steps = choice
        for q, to in steps:
            moves.append((q, home[q]))
            move(q, to)
            unlocked.discard(q)
        total += gain
        if total > best:
            best, kept = total, len(moves)
    for q, back in reversed(moves[kept:]):
        move(q, back)
    return best


def _best_step(
    unlocked: set[cirq.Qid],
    home: dict[cirq.Qid, int],
    near: dict[cirq.Qid, dict[cirq.Qid, int]],
    pull: dict[cirq.Qid, list[int]],
    room: list[int],
) -> tuple[int, list[tuple[cirq.Qid, int]]] | None:
    """The best move or swap of unlocked qubits (highest cut reduction, possibly negative)."""
    best: tuple[int, list[tuple[cirq.Qid, int]]] | None = None
    ordered = sorted(unlocked)
    for index, q in enumerate(ordered):
        p = home[q]
        for t in range(len(room)):
            if t != p and room[t] > 0:
                gain = pull[q][t] - pull[q][p]
                if best is None or gain > best[0]:
                    best = (gain, [(q, t)])
        for r in ordered[index + 1 :]:
            t = home[r]
            if t == p:
                continue
            gain = pull[q][t] - pull[q][p] + pull[r][p] - pull[r][t] - 2 * near.get(q, {}).get(r, 0)
            if best is None or gain > best[0]:
                best = (gain, [(q, t), (r, p)])
    return best


def _lower_bound(
    qubits: list[cirq.Qid], weights: Weights, capacities: Sequence[int], time_limit_s: float
) -> EbitBound:
    if not weights:
        return EbitBound(0, True)
    bound, exact = _ilp_bound(qubits, weights, capacities, time_limit_s)
    if exact:
        return EbitBound(bound, True)
    # Parts of sizes c_i hold at most Σ C(c_i, 2) pairs: the rest of the weight is cut.
    inside = sum(min(c, len(qubits)) * (min(c, len(qubits)) - 1) // 2 for c in capacities)
    heaviest = sorted(weights.values(), reverse=True)
    bound = max(bound, sum(heaviest[inside:]))
    if max(capacities) < len(qubits):
        graph = nx.Graph()
        graph.add_nodes_from(qubits)
        graph.add_weighted_edges_from((a, b, w) for (a, b), w in weights.items())
        if nx.is_connected(graph):
            bound = max(bound, int(nx.stoer_wagner(graph)[0]))
    return EbitBound(bound, exact)


def _ilp_bound(
    qubits: list[cirq.Qid], weights: Weights, capacities: Sequence[int], time_limit_s: float
) -> tuple[int, bool]:
    """The integer program of the module docstring: (rounded-up bound, solved to optimality)."""
    n, k, edges = len(qubits), len(capacities), list(weights.items())
    index = {q: i for i, q in enumerate(qubits)}

    def x(q: int, part: int) -> int:
        return q * k + part

    n_vars = n * k + len(edges)
    cost = np.zeros(n_vars)
    cost[n * k :] = [w for _, w in edges]
    rows = lil_matrix((n + k + len(edges) * k, n_vars))
    lower, upper = [], []
    for q in range(n):  # each qubit in exactly one part
        for part in range(k):
            rows[q, x(q, part)] = 1
        lower.append(1)
        upper.append(1)
    for part in range(k):  # capacities
        for q in range(n):
            rows[n + part, x(q, part)] = 1
        lower.append(0)
        upper.append(capacities[part])
    row = n + k
    for e, ((a, b), _) in enumerate(edges):  # y_ab ≥ x_ai − x_bi
        for part in range(k):
            rows[row, n * k + e] = 1
            rows[row, x(index[a], part)] = -1
            rows[row, x(index[b], part)] = 1
            lower.append(0)
            upper.append(np.inf)
            row += 1
    high = np.ones(n_vars)
    busiest = max(
        range(n), key=lambda q: sum(w for (a, b), w in edges if index[a] == q or index[b] == q)
    )
    seen: set[int] = set()
    for part, capacity in enumerate(capacities):  # equal parts are interchangeable
        if capacity in seen:
            high[x(busiest, part)] = 0
        seen.add(capacity)
    result = milp(
        cost,
        integrality=np.r_[np.ones(n * k), np.zeros(len(edges))],
        bounds=Bounds(np.zeros(n_vars), high),
        constraints=LinearConstraint(rows.tocsr(), lower, upper),
        options={"time_limit": time_limit_s},
    )
    exact = result.status == 0
    if exact:
        return round(result.fun), True
    dual = result.mip_dual_bound
    if dual is None or not math.isfinite(dual):
        return 0, False
    return max(0, math.ceil(dual - 1e-6)), False

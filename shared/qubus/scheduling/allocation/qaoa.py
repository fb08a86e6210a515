"""The ``qaoa`` policy: the batch objective J as a QUBO, solved by QAOA simulated with qsim.

Sub-problems of a few tasks are sampled from optimised QAOA states (``_Qubo`` holds one), the
best sample of each kept, and the whole batch refined by ``local_search``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qubus.scheduling.allocation.annealing import AnnealingPolicy
from qubus.scheduling.allocation.interface import _Policy
from qubus.scheduling.allocation.problem import Problem
from qubus.scheduling.allocation.search import local_search

QAOA_MAX_QUBITS = 12
"""Largest QAOA sub-problem simulated with qsim (one qubit per task × candidate node)."""

QAOA_CANDIDATES = 3
"""Candidate nodes per task in a QAOA sub-problem: its cheapest ones given earlier placements."""

QAOA_MAX_BATCH = 64
"""Largest batch the qaoa policy decides itself; larger ones go to annealing."""

QAOA_SHOTS = 256
"""Samples drawn from each optimised QAOA state."""


@dataclass(frozen=True)
class _Qubo:
    """A QAOA sub-problem: one binary variable per (task, candidate node).

    Energy ``E(x) = Σ_v linear_v·x_v + Σ_{v<w} quad_vw·x_v·x_w + offset``, where the linear
    and quadratic parts hold J's terms and the one-hot penalty ``P·Σ_i (1 − Σ_{v∈i} x_v)²``.
    """

    variables: tuple[tuple[int, int], ...]
    linear: np.ndarray
    quad: np.ndarray
    offset: float
    cost: np.ndarray
    """J's part alone (no penalty) per variable, for decoding."""

    def energies(self) -> np.ndarray:
        """E of every basis state (qubit 0 is the most significant bit of the index)."""
        q = len(self.variables)
        bits = (np.arange(2**q)[:, None] >> np.arange(q - 1, -1, -1)) & 1
        return bits @ self.linear + np.einsum("sv,vw,sw->s", bits, self.quad, bits) + self.offset


class QaoaPolicy(_Policy):
    """J as a QUBO, sampled from QAOA states simulated with qsim, then refined by local search.

    See the package docstring: sub-problems of at most ``QAOA_MAX_QUBITS`` qubits, p = 1 and 2,
    COBYLA on the angles, ``QAOA_SHOTS`` samples of each optimised state decoded to the
    cheapest feasible assignment (a task with no or several of its qubits set takes its
    cheapest candidate among them, or among all if none), then ``local_search`` on the batch.
    Tasks with a single allowed node need no qubit. Batches above ``QAOA_MAX_BATCH`` go to
    ``AnnealingPolicy``.
    """

    name = "qaoa"
    LAYERS = (1, 2)

    def assign(self, problem: Problem) -> list[int]:
        if problem.n > QAOA_MAX_BATCH:
            return AnnealingPolicy().assign(problem)
        rng = np.random.default_rng(problem.seed)
        assignment: dict[int, int] = {}
        members: list[list[int]] = [[] for _ in problem.nodes]
        order = problem.shortest_first
        for i in order:
            if len(problem.options(i)) == 1:
                self._place(assignment, members, i, int(problem.options(i)[0]))
        pending = [i for i in order if i not in assignment]
        per_chunk = max(1, QAOA_MAX_QUBITS // QAOA_CANDIDATES)
        for start in range(0, len(pending), per_chunk):
            chunk = pending[start : start + per_chunk]
            qubo = self._qubo(problem, members, chunk)
            for i, j in self._solve(qubo, chunk, rng).items():
                self._place(assignment, members, i, j)
        return local_search(problem, [assignment[i] for i in range(problem.n)])

    @staticmethod
    def _place(assignment: dict[int, int], members: list[list[int]], i: int, j: int) -> None:
        assignment[i] = j
        members[j].append(i)

    @staticmethod
    def _qubo(problem: Problem, members: list[list[int]], chunk: list[int]) -> _Qubo:
        """The chunk's QUBO given the tasks already placed (``members``)."""
        variables = []
        for i in chunk:
            fixed = {
                j: problem.unary[i, j] + problem.delay(i, j, members[j]) for j in problem.options(i)
            }
            best = sorted(fixed, key=lambda j: (fixed[j], j))[:QAOA_CANDIDATES]
            variables += [(i, int(j)) for j in best]
        cost = np.array(
            [problem.unary[i, j] + problem.delay(i, j, members[j]) for i, j in variables]
        )
        q = len(variables)
        quad = np.zeros((q, q))
        for v, (i, j) in enumerate(variables):
            for w in range(v + 1, q):
                k, jj = variables[w]
                if k != i and jj == j:
                    quad[v, w] = min(problem.run[i, j], problem.run[k, j])
        penalty = float(cost.max() + quad.sum(axis=0).max() + quad.sum(axis=1).max()) + 1.0
        linear = cost - penalty
        for v, (i, _) in enumerate(variables):
            for w in range(v + 1, q):
                if variables[w][0] == i:
                    quad[v, w] = 2 * penalty
        return _Qubo(tuple(variables), linear, quad, penalty * len(chunk), cost)

    def _solve(self, qubo: _Qubo, chunk: list[int], rng: np.random.Generator) -> dict[int, int]:
        """The cheapest assignment sampled from the optimised QAOA states."""
        import qsimcirq
        from scipy.optimize import minimize

        energies = qubo.energies()
        scale = float(np.abs(energies - energies.mean()).max()) or 1.0
        normalised = (energies - energies.mean()) / scale
        q = len(qubo.variables)
        simulator = qsimcirq.QSimSimulator()
        best: dict[int, int] = {}
        best_cost = math.inf
        angles = np.array([0.5, 0.4])
        for p in self.LAYERS:

            def probabilities(x: np.ndarray, p: int = p) -> np.ndarray:
                circuit = self._circuit(qubo, scale, x[:p], x[p:])
                probs = np.abs(simulator.simulate(circuit).final_state_vector) ** 2
                return probs / probs.sum()

            start = (
                np.concatenate([np.full(p, angles[0]), np.full(p, angles[1])]) if p > 1 else angles
            )
            result = minimize(
                lambda x: float(probabilities(x) @ normalised),
                start,
                method="COBYLA",
                options={"maxiter": 20 * p + 5, "rhobeg": 0.3},
            )
            angles = np.array([result.x[0], result.x[p]])
            samples = rng.choice(2**q, size=QAOA_SHOTS, p=probabilities(result.x))
            for state in np.unique(samples):
                decoded, cost = self._decode(qubo, chunk, int(state))
                if cost < best_cost:
                    best, best_cost = decoded, cost
        return best

    @staticmethod
    def _circuit(qubo: _Qubo, scale: float, gammas: np.ndarray, betas: np.ndarray):
        """QAOA: |+⟩, then per layer e^(−iγH) (Z and ZZ rotations of the Ising form of E/scale)
        and the X mixer e^(−iβΣX)."""
        import cirq

        q = len(qubo.variables)
        qubits = cirq.LineQubit.range(q)
        # x = (1 − z)/2: a·x → −a/2·z, b·x_v·x_w → b/4·(z_v·z_w − z_v − z_w) + constants
        field = -qubo.linear / 2 - (qubo.quad.sum(axis=1) + qubo.quad.sum(axis=0)) / 4
        circuit = cirq.Circuit(cirq.H.on_each(*qubits))
        for gamma, beta in zip(gammas, betas, strict=True):
            circuit.append(
                cirq.rz(2 * gamma * field[v] / scale).on(qubits[v]) for v in range(q) if field[v]
            )
            circuit.append(
                cirq.ZZPowGate(exponent=2 * gamma * qubo.quad[v, w] / 4 / scale / math.pi).on(
                    qubits[v], qubits[w]
                )
                for v in range(q)
                for w in range(v + 1, q)
                if qubo.quad[v, w]
            )
            circuit.append(cirq.rx(2 * beta).on(qubit) for qubit in qubits)
        return circuit

    @staticmethod
    def _decode(qubo: _Qubo, chunk: list[int], state: int) -> tuple[dict[int, int], float]:
        """A basis state as a feasible assignment of the chunk, and its J part."""
        q = len(qubo.variables)
        chosen: dict[int, int] = {}
        for i in chunk:
            mine = [v for v, (t, _) in enumerate(qubo.variables) if t == i]
            on = [v for v in mine if state >> (q - 1 - v) & 1]
            pick = min(on or mine, key=lambda v: (qubo.cost[v], v))
            chosen[i] = pick
        picked = list(chosen.values())
        cost = float(qubo.cost[picked].sum() + qubo.quad[np.ix_(picked, picked)].sum())
        return {i: qubo.variables[v][1] for i, v in chosen.items()}, cost

    def describe(self, problem: Problem, assignment: Sequence[int], i: int) -> str:
        if problem.n > QAOA_MAX_BATCH:
            return f"batch of {problem.n} exceeds QAOA's {QAOA_MAX_BATCH}, so " + (
                AnnealingPolicy().describe(problem, assignment, i)
            )
        return (
            f"QAOA (qsim, p = 1..2) on sub-problems of ≤ {QAOA_MAX_QUBITS} qubits, "
            "best sample refined by local search"
        )

"""Entanglement links between QPU nodes: topology and Werner-state physics.

A link shares EPR pairs between two nodes. Every pair is modelled as a Werner state
``F·|Φ+⟩⟨Φ+| + (1−F)/3·(1 − |Φ+⟩⟨Φ+|)``, described by its fidelity ``F`` alone; ``F = 1/4`` is
the maximally mixed state, which carries no entanglement.

Generation model (``sample_epr``):

* The link makes heralded attempts back to back at ``attempt_rate_hz``; each succeeds
  independently with ``success_prob``, so the number of attempts until success is geometric
  and the latency is ``attempts / attempt_rate_hz`` (mean ``1 / (attempt_rate_hz·success_prob)``).
* A *round* starts by loading node ``a``'s memory with its half (the first-generated half) and
  retries the photonic part until a herald; the half waits in memory for the whole round and
  decays with time constant ``coherence_s``. Attempts are identical and memoryless, so a round
  is simply a run of consecutive attempts.
* Memory cutoff: a half older than ``cutoff_s`` is discarded, so a round that has not
  succeeded within ``cutoff_s`` is abandoned and a fresh one starts (counted in
  ``EprPair.regenerations``). The cutoff bounds the age of a delivered pair; it changes neither
  the attempt count nor the latency distribution.
* At the herald both halves are complete with fidelity ``werner_fidelity(f0, age)``, where age
  is the time since its round started; the requester then holds the pair ``hold_s`` longer
  before using it, which decays it further. After the herald the pair is the requester's, and
  the cutoff no longer applies.

Purification (``purify_fidelity``): a link with a floor ``purify_below`` whose pairs are
expected below it runs the BBPSSW recurrence on them, a fixed number of rounds planned from the
expected fidelity (``LinkPlan``): a round-k pair is made of two round-(k−1) pairs generated one
after the other on the link (the first decaying in memory meanwhile), and a failed round
discards both and starts again. Purification happens on each hop, before swapping.

End to end (``deliver_epr``): every hop of the shortest path makes its pair at once, in
parallel; a hop done early keeps its pair in memory until the slowest is done; ideal swaps at
the inner nodes then multiply the Werner parameters. ``reserve_pairs`` delivers pairs one after
another over one path. ``expected_pair`` predicts the mean fidelity and latency of one such pair
from the same model, without sampling.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qubus.bus.messages import NODE_ID
from qubus.devices.profiles import DEFAULT_FLEET
from qubus.errors import QubusError

MIXED_FIDELITY = 0.25
"""Fidelity of the maximally mixed two-qubit state: the limit of every decaying Werner pair."""

PURIFIABLE_FIDELITY = 0.5
"""BBPSSW improves a Werner pair only above this fidelity; 1/2 is its fixed point."""

MAX_PURIFY_ROUNDS = 8
"""Most BBPSSW rounds planned for one link (2⁸ = 256 raw pairs per purified pair, at least)."""


NodeId = Annotated[str, Field(pattern=NODE_ID.pattern)]
"""A node id as every message carries it (it ends up in KV keys)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class LinkFigures(_Frozen):
    """The physical figures of a link.

    The defaults are of the order of a trapped-ion network link (Stephenson et al., PRL 124,
    110501 (2020): about 1 MHz attempts, 2·10⁻⁴ success, 200 pairs/s, F ≈ 0.94), with a
    100 ms memory and a 50 ms cutoff; they are illustrative, not a device's.

    Attributes:
        attempt_rate_hz: Generation attempts per second.
        success_prob: Probability that one attempt is heralded as a success.
        f0: Werner fidelity of a fresh pair, in (0.25, 1].
        coherence_s: Memory coherence time T: the fidelity excess over 1/4 decays as exp(−t/T).
        cutoff_s: Halves older than this are discarded; at least one attempt period.
        purify_below: Purify the link's pairs when their expected fidelity is below this floor,
            in (1/2, 1); None: never.
    """

    attempt_rate_hz: float = Field(default=1.0e6, gt=0)
    success_prob: float = Field(default=2.0e-4, gt=0, le=1)
    f0: float = Field(default=0.94, gt=MIXED_FIDELITY, le=1)
    coherence_s: float = Field(default=0.1, gt=0)
    cutoff_s: float = Field(default=0.05, gt=0)
    purify_below: float | None = Field(default=None, gt=PURIFIABLE_FIDELITY, lt=1)

    @model_validator(mode="after")
    def _check_cutoff(self) -> Self:
        if self.attempts_per_round < 1:
            raise ValueError(
                f"cutoff_s={self.cutoff_s} is shorter than one attempt "
                f"(1/attempt_rate_hz = {1 / self.attempt_rate_hz} s): no pair could ever be made"
            )
        return self

    @property
    def expected_latency_s(self) -> float:
        """Mean time to generate one raw pair: ``1 / (attempt_rate_hz · success_prob)``."""
        return 1.0 / (self.attempt_rate_hz * self.success_prob)

    @property
    def attempts_per_round(self) -> int:
        """Attempts that fit within ``cutoff_s`` (a relative tolerance absorbs float error)."""
        return math.floor(self.cutoff_s * self.attempt_rate_hz * (1 + 1e-12))


class LinkSpec(LinkFigures):
    """One undirected entanglement link; its endpoints are stored in sorted order.

    Figures left out take the defaults of `LinkFigures`.

    Attributes:
        a: The endpoint whose node id sorts first.
        b: The other endpoint.
    """

    a: NodeId
    b: NodeId

    @model_validator(mode="before")
    @classmethod
    def _sort_endpoints(cls, data: Any) -> Any:
        if (
            isinstance(data, Mapping)
            and isinstance(data.get("a"), str)
            and isinstance(data.get("b"), str)
        ):
            a, b = sorted((data["a"], data["b"]))
            return {**data, "a": a, "b": b}
        return data

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if self.a == self.b:
            raise ValueError(f"a link needs two distinct nodes, got {self.a!r} twice")
        return self

    @property
    def key(self) -> tuple[str, str]:
        """The sorted endpoint pair identifying this link."""
        return (self.a, self.b)


class EprPair(_Frozen):
    """One delivered EPR pair.

    Attributes:
        link: The link's sorted endpoint pair.
        fidelity: Werner fidelity when the requester uses it (after ``hold_s``).
        latency_s: Time from the request to the herald, over every round.
        attempts: Generation attempts made, over every round.
        regenerations: Rounds abandoned at the memory cutoff before the successful one.
        generated_at_s: Time of the herald: ``now_s + latency_s``.
    """

    link: tuple[str, str]
    fidelity: float = Field(ge=MIXED_FIDELITY, le=1)
    latency_s: float = Field(gt=0)
    attempts: int = Field(ge=1)
    regenerations: int = Field(ge=0)
    generated_at_s: float


class Topology(_Frozen):
    """The links of a fleet: at most one per pair of nodes.

    A ``purify_below`` given beside ``links`` is the floor of every link that sets none.

    Attributes:
        links: Every link, each between two distinct nodes.
        description: Free text: where the numbers come from.
    """

    links: list[LinkSpec]
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _default_floor(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "purify_below" not in data:
            return data
        rest = {key: value for key, value in data.items() if key != "purify_below"}
        floor = data["purify_below"]
        links = []
        for link in data.get("links", []):
            if isinstance(link, LinkSpec):
                link = link.model_dump(exclude_unset=True)
            if isinstance(link, Mapping) and "purify_below" not in link:
                link = {**link, "purify_below": floor}
            links.append(link)
        return {**rest, "links": links}

    @field_validator("links")
    @classmethod
    def _unique(cls, links: list[LinkSpec]) -> list[LinkSpec]:
        seen: set[tuple[str, str]] = set()
        for spec in links:
            if spec.key in seen:
                raise ValueError(f"link {spec.a}–{spec.b} is listed twice")
            seen.add(spec.key)
        return links

    @classmethod
    def ring(cls, nodes: Iterable[str], **figures: Any) -> Topology:
        """Links each node to the next, and the last to the first, all with the same figures.

        Args:
            nodes: Node ids in ring order; two nodes give one link, one node none.
            **figures: Link figures (`LinkFigures`); those left out take its defaults.

        Raises:
            ValueError: a node id repeats or a figure is invalid.
        """
        return TopologySpec(kind="ring", nodes=list(nodes), **figures).build()

    @classmethod
    def line(cls, nodes: Iterable[str], **figures: Any) -> Topology:
        """Links each node to the next: a chain from the first node to the last.

        Args:
            nodes: Node ids in chain order.
            **figures: Link figures (`LinkFigures`); those left out take its defaults.

        Raises:
            ValueError: a node id repeats or a figure is invalid.
        """
        return TopologySpec(kind="line", nodes=list(nodes), **figures).build()

    @classmethod
    def star(cls, nodes: Iterable[str], *, center: str | None = None, **figures: Any) -> Topology:
        """Links one centre node to every other node.

        Args:
            nodes: Node ids.
            center: The hub; None: the first node.
            **figures: Link figures (`LinkFigures`); those left out take its defaults.

        Raises:
            ValueError: a node id repeats, the centre is not a node, or a figure is invalid.
        """
        return TopologySpec(kind="star", nodes=list(nodes), center=center, **figures).build()

    @classmethod
    def ring_chords(
        cls,
        nodes: Iterable[str],
        *,
        chords: int | None = None,
        chord_prob: float | None = None,
        seed: int = 0,
        **figures: Any,
    ) -> Topology:
        """A ring plus random chords between nodes that are not ring neighbours.

        Args:
            nodes: Node ids in ring order.
            chords: Add exactly this many chords, drawn uniformly without replacement.
            chord_prob: Or: add each possible chord independently with this probability.
            seed: The random source; the same seed and nodes give the same chords.
            **figures: Link figures (`LinkFigures`); those left out take its defaults.

        Raises:
            ValueError: not exactly one of ``chords`` and ``chord_prob``, more chords than
                node pairs that are not neighbours, a repeated node, or an invalid figure.
        """
        return TopologySpec(
            kind="ring_chords",
            nodes=list(nodes),
            chords=chords,
            chord_prob=chord_prob,
            seed=seed,
            **figures,
        ).build()

    @property
    def nodes(self) -> list[str]:
        """Every node that ends a link, sorted."""
        return sorted({n for spec in self.links for n in spec.key})

    def link(self, a: str, b: str) -> LinkSpec:
        """The direct link between ``a`` and ``b``, in either order.

        Raises:
            QubusError: ``link.unknown`` when no such link exists.
        """
        key = tuple(sorted((a, b)))
        for spec in self.links:
            if spec.key == key:
                return spec
        raise QubusError(f"no link between {a!r} and {b!r}", code="link.unknown")

    def neighbours(self) -> dict[str, list[str]]:
        """Every node's directly linked nodes, sorted."""
        result: dict[str, list[str]] = {n: [] for n in self.nodes}
        for spec in self.links:
            result[spec.a].append(spec.b)
            result[spec.b].append(spec.a)
        return {node: sorted(others) for node, others in result.items()}

    def path(self, a: str, b: str) -> list[str]:
        """A shortest chain of links from ``a`` to ``b`` by hop count, for entanglement swapping.

        Breadth-first search visiting neighbours in sorted order, so among equally short paths
        the result is deterministic.

        Returns:
            The nodes from ``a`` to ``b`` inclusive; ``[a]`` when ``a == b``.

        Raises:
            QubusError: ``link.no_path`` when a node ends no link or the two are not connected.
        """
        neighbours = self.neighbours()
        for node in (a, b):
            if node not in neighbours:
                raise QubusError(f"node {node!r} ends no link", code="link.no_path")
        previous: dict[str, str | None] = {a: None}
        queue = deque([a])
        while queue:
            node = queue.popleft()
            if node == b:
                hops = [b]
                while (step := previous[hops[-1]]) is not None:
                    hops.append(step)
                return hops[::-1]
            for nxt in neighbours[node]:
                if nxt not in previous:
                    previous[nxt] = node
                    queue.append(nxt)
        raise QubusError(f"no chain of links joins {a!r} and {b!r}", code="link.no_path")

    def hops(self, path: Sequence[str]) -> list[LinkSpec]:
        """The links along ``path``, in order."""
        return [self.link(x, y) for x, y in zip(path, path[1:], strict=False)]


TopologyKind = Literal["ring", "ring_chords", "line", "star"]


class TopologySpec(LinkFigures):
    """A generated topology: its shape, its nodes, and the figures every link shares.

    As JSON: ``{"kind": "ring_chords", "nodes": [...], "chords": 3, "seed": 7, "f0": 0.9}``.

    Attributes:
        kind: ``ring``, ``ring_chords`` (a ring plus random chords, as in the QNet-NO
            experiments), ``line`` or ``star``.
        nodes: Node ids, distinct, in ring or chain order.
        chords: ``ring_chords`` only: add exactly this many random chords.
        chord_prob: ``ring_chords`` only: or add each possible chord with this probability.
        seed: ``ring_chords`` only: the seed of the chords.
        center: ``star`` only: the hub (default: the first node).
        description: Free text; generated when empty.
    """

    kind: TopologyKind
    nodes: list[NodeId] = Field(min_length=1)
    chords: int | None = Field(default=None, ge=0)
    chord_prob: float | None = Field(default=None, ge=0, le=1)
    seed: int = 0
    center: str | None = None
    description: str = ""

    @field_validator("nodes")
    @classmethod
    def _distinct_nodes(cls, nodes: list[str]) -> list[str]:
        if len(set(nodes)) != len(nodes):
            raise ValueError(f"nodes must be distinct, got {nodes}")
        return nodes

    @model_validator(mode="after")
    def _check_kind_fields(self) -> Self:
        chorded = self.kind == "ring_chords"
        if not chorded and (self.chords is not None or self.chord_prob is not None):
            raise ValueError(f"chords and chord_prob need kind 'ring_chords', not {self.kind!r}")
        if chorded and (self.chords is None) == (self.chord_prob is None):
            raise ValueError("kind 'ring_chords' needs exactly one of chords and chord_prob")
        if chorded and self.chords is not None and self.chords > len(self._chord_candidates()):
            raise ValueError(
                f"chords={self.chords} exceeds the {len(self._chord_candidates())} node pairs "
                f"that are not ring neighbours among {len(self.nodes)} nodes"
            )
        if self.center is not None and self.kind != "star":
            raise ValueError(f"center applies to kind 'star', not {self.kind!r}")
        if self.center is not None and self.center not in self.nodes:
            raise ValueError(f"center {self.center!r} is not one of the nodes")
        return self

    def _ring_pairs(self) -> set[tuple[str, str]]:
        n = len(self.nodes)
        pairs = {tuple(sorted((self.nodes[i], self.nodes[(i + 1) % n]))) for i in range(n)}
        return {(a, b) for a, b in pairs if a != b}

    def _chord_candidates(self) -> list[tuple[str, str]]:
        ring = self._ring_pairs()
        return [pair for pair in combinations(sorted(self.nodes), 2) if pair not in ring]

    def _pairs(self) -> set[tuple[str, str]]:
        if self.kind == "line":
            return {tuple(sorted(pair)) for pair in zip(self.nodes, self.nodes[1:], strict=False)}
        if self.kind == "star":
            hub = self.center or self.nodes[0]
            return {tuple(sorted((hub, n))) for n in self.nodes if n != hub}
        pairs = self._ring_pairs()
        if self.kind == "ring_chords":
            candidates = self._chord_candidates()
            rng = np.random.default_rng(self.seed)
            if self.chords is not None:
                chosen = rng.choice(len(candidates), size=self.chords, replace=False)
            else:
                chosen = np.flatnonzero(rng.random(len(candidates)) < self.chord_prob)
            pairs |= {candidates[i] for i in chosen}
        return pairs

    def build(self) -> Topology:
        """The topology this spec describes, links sorted by their endpoints."""
        figures = LinkFigures.model_fields.keys()
        shared = {name: getattr(self, name) for name in figures}
        links = [LinkSpec(a=a, b=b, **shared) for a, b in sorted(self._pairs())]
        return Topology(links=links, description=self.description or self._describe())

    def _describe(self) -> str:
        shape = "ring" if self.kind == "ring_chords" else self.kind
        text = f"{shape} of {len(self.nodes)} nodes"
        if self.kind == "ring_chords":
            drawn = f"{self.chords}" if self.chords is not None else f"p={self.chord_prob}"
            text += f" with random chords ({drawn}, seed {self.seed})"
        return text


def fleet_topology(path: str) -> Topology:
    """The links of the fleet: the topology file at ``path`` (``QUBUS_TOPOLOGY``), or when
    empty a ring over the default fleet. The link service and the planners of split runs read
    the same one."""
    return load_topology(path) if path else Topology.ring(DEFAULT_FLEET)


def load_topology(source: str | Path | Mapping[str, Any]) -> Topology:
    """Reads a topology from a JSON file or from already-parsed data.

    Two shapes are accepted: an explicit list ``{"links": [{"a", "b", <figures>}, ...],
    "description": ...}``, or a generator spec with a ``kind`` (`TopologySpec`).
    ``deploy/topologies/`` holds examples of both.

    Args:
        source: A path to a JSON file, or its parsed mapping.

    Raises:
        QubusError: ``topology.invalid`` when the file cannot be read or does not validate;
            the message names every offending field (``links.2.f0: ...``).
    """
    try:
        data = source if isinstance(source, Mapping) else json.loads(Path(source).read_text())
        if not isinstance(data, Mapping):
            raise QubusError(
                f"invalid topology: expected a JSON object, got {type(data).__name__}",
                code="topology.invalid",
            )
        if "kind" in data:
            return TopologySpec.model_validate(data).build()
        return Topology.model_validate(data)
    except (OSError, json.JSONDecodeError) as exc:
        raise QubusError(f"invalid topology: {exc}", code="topology.invalid") from exc
    except ValidationError as exc:
        raise QubusError(
            f"invalid topology: {_field_errors(exc)}", code="topology.invalid"
        ) from exc


def _field_errors(exc: ValidationError) -> str:
    """Each validation error as ``field.path: message (got value)``, joined by ``; ``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        got = f" (got {value!r})" if isinstance(value, str | int | float) else ""
        parts.append(f"{where}: {message}{got}" if where else message)
    return "; ".join(parts)


def werner_fidelity(f0: float, age_s: float, coherence_s: float) -> float:
    """Fidelity of a Werner pair after ``age_s`` in memory: ``1/4 + (f0 − 1/4)·exp(−age/T)``.

    Args:
        f0: Fidelity when fresh.
        age_s: Time spent in memory, ≥ 0.
        coherence_s: Memory coherence time T, > 0.

    Raises:
        ValueError: ``age_s`` is negative or ``coherence_s`` not positive.
    """
    if age_s < 0 or coherence_s <= 0:
        raise ValueError(f"need age_s ≥ 0 and coherence_s > 0, got {age_s}, {coherence_s}")
    return MIXED_FIDELITY + (f0 - MIXED_FIDELITY) * math.exp(-age_s / coherence_s)


def swap_fidelity(f1: float, f2: float) -> float:
    """Fidelity of the pair made by swapping two Werner pairs (ideal Bell measurement).

    Werner parameters ``w = (4F − 1)/3`` multiply: ``F = (3·w1·w2 + 1)/4``.
    """
    w1, w2 = ((4 * f - 1) / 3 for f in (f1, f2))
    return (3 * w1 * w2 + 1) / 4


def purify_fidelity(f1: float, f2: float) -> tuple[float, float]:
    """One BBPSSW purification round on two Werner pairs: the kept pair's fidelity on success,
    and the probability of success.

    Bennett, Brassard, Popescu, Schumacher, Smolin and Wootters, PRL 76, 722 (1996); in the
    form of Dür and Briegel, Rep. Prog. Phys. 70, 1381 (2007), for inputs of fidelity F1, F2
    (the output is twirled back to a Werner state)::

        p  = F1·F2 + F1·(1−F2)/3 + (1−F1)·F2/3 + 5·(1−F1)·(1−F2)/9
        F' = (F1·F2 + (1−F1)·(1−F2)/9) / p

    With F1 = F2 = F this is the recurrence F' = (F² + ((1−F)/3)²)/p,
    p = F² + 2F(1−F)/3 + 5((1−F)/3)², which improves F exactly when F > 1/2.
    """
    g1, g2 = (1 - f1) / 3, (1 - f2) / 3
    success = f1 * f2 + f1 * g2 + g1 * f2 + 5 * g1 * g2
    return (f1 * f2 + g1 * g2) / success, success


@dataclass(frozen=True)
class LinkPlan:
    """What one purified pair of a link costs and is worth on average, from its figures alone.

    Attributes:
        rounds: BBPSSW rounds per pair (0: raw pairs).
        fidelity: Expected fidelity of a pair at its delivery (the herald of its last round).
        latency_s: Expected time to make one pair, failed rounds included.
        raw_pairs: Expected raw pairs generated per delivered pair (1 without purification).
        latency_var_s2: Variance of that time.
        decay: ``E[exp(−latency/T)]``: the mean memory decay over one pair's making.
    """

    rounds: int
    fidelity: float
    latency_s: float
    latency_var_s2: float
    raw_pairs: float
    decay: float

    @classmethod
    def raw(cls, link: LinkFigures) -> LinkPlan:
        """The link's raw pairs: exact expectations of the generation model (module docstring).

        With ``q = exp(−1/(rate·T))``, attempts ``N`` geometric and the successful round's
        attempts ``j`` geometric truncated at ``R`` = ``attempts_per_round``:
        ``E[q^j] = p·q·(1 − ((1−p)q)^R) / ((1 − (1−p)q)·(1 − (1−p)^R))`` and
        ``E[q^N] = p·q / (1 − (1−p)q)``.
        """
        p, q = link.success_prob, math.exp(-1 / (link.attempt_rate_hz * link.coherence_s))
        rounds_left = link.attempts_per_round
        x = (1 - p) * q
        age_decay = p * q * (1 - x**rounds_left) / ((1 - x) * (1 - (1 - p) ** rounds_left))
        return cls(
            rounds=0,
            fidelity=MIXED_FIDELITY + (link.f0 - MIXED_FIDELITY) * age_decay,
            latency_s=link.expected_latency_s,
            latency_var_s2=(1 - p) / (p * link.attempt_rate_hz) ** 2,
            raw_pairs=1.0,
            decay=p * q / (1 - x),
        )

    def purified(self) -> LinkPlan:
        """One more BBPSSW round: two of these pairs, the first decaying while the second is
        made, purified until a round succeeds (the success probability taken at the mean
        fidelities; the latency a geometric number of rounds, each two pairs' latencies)."""
        waited = MIXED_FIDELITY + (self.fidelity - MIXED_FIDELITY) * self.decay
        fidelity, success = purify_fidelity(waited, self.fidelity)
        both = self.decay**2
        return LinkPlan(
            rounds=self.rounds + 1,
            fidelity=fidelity,
            latency_s=2 * self.latency_s / success,
            latency_var_s2=(
                2 * self.latency_var_s2 / success
                + (1 - success) / success**2 * (2 * self.latency_s) ** 2
            ),
            raw_pairs=2 * self.raw_pairs / success,
            decay=success * both / (1 - (1 - success) * both),
        )

    @classmethod
    def of(cls, link: LinkFigures) -> LinkPlan:
        """The link's plan: purified round after round while its expected fidelity is below
        ``purify_below``, as long as a round improves it (never at F ≤ 1/2, nor when memory
        decay while the second pair is made costs more than purification gains), at most
        ``MAX_PURIFY_ROUNDS``."""
        plan = cls.raw(link)
        floor = link.purify_below
        while floor is not None and plan.fidelity < floor and plan.rounds < MAX_PURIFY_ROUNDS:
            better = plan.purified()
            if better.fidelity <= plan.fidelity:
                break
            plan = better
        return plan


@dataclass(frozen=True)
class _HopPair:
    fidelity: float
    latency_s: float
    attempts: int
    raw_pairs: int


def _raw_pair(link: LinkFigures, rng: np.random.Generator) -> _HopPair:
    attempts = int(rng.geometric(link.success_prob))
    last_round = (attempts - 1) % link.attempts_per_round
    age_s = (last_round + 1) / link.attempt_rate_hz
    fidelity = werner_fidelity(link.f0, age_s, link.coherence_s)
    return _HopPair(fidelity, attempts / link.attempt_rate_hz, attempts, 1)


def _hop_pair(link: LinkFigures, rounds: int, rng: np.random.Generator) -> _HopPair:
    """Samples one pair of ``link`` after ``rounds`` BBPSSW rounds (module docstring)."""
    if rounds == 0:
        return _raw_pair(link, rng)
    latency_s, attempts, raw_pairs = 0.0, 0, 0
    while True:
        first = _hop_pair(link, rounds - 1, rng)
        second = _hop_pair(link, rounds - 1, rng)
        latency_s += first.latency_s + second.latency_s
        attempts += first.attempts + second.attempts
        raw_pairs += first.raw_pairs + second.raw_pairs
        waited = werner_fidelity(first.fidelity, second.latency_s, link.coherence_s)
        fidelity, success = purify_fidelity(waited, second.fidelity)
        if rng.random() < success:
            return _HopPair(fidelity, latency_s, attempts, raw_pairs)


def sample_epr(
    link: LinkSpec,
    *,
    rng: np.random.Generator,
    now_s: float = 0.0,
    hold_s: float = 0.0,
    max_wait_s: float | None = None,
) -> EprPair:
    """Samples the generation of one raw EPR pair on ``link`` (model in the module docstring).

    Args:
        link: The link to use.
        rng: The random source; the same seed gives the same pair.
        now_s: Time of the request; ``generated_at_s`` is counted from it.
        hold_s: How long the requester keeps the pair after the herald before using it.
        max_wait_s: Give up when no pair is heralded within this time (None: wait forever).

    Raises:
        ValueError: ``hold_s`` is negative.
        QubusError: ``link.timeout`` when the latency would exceed ``max_wait_s``.
    """
    if hold_s < 0:
        raise ValueError(f"hold_s must be ≥ 0, got {hold_s}")
    pair = _raw_pair(link, rng)
    if max_wait_s is not None and pair.latency_s > max_wait_s:
        raise QubusError(
            f"link {link.a}–{link.b} heralded no pair within {max_wait_s} s "
            f"(expected latency {link.expected_latency_s:.3g} s)",
            code="link.timeout",
        )
    return EprPair(
        link=link.key,
        fidelity=werner_fidelity(pair.fidelity, hold_s, link.coherence_s),
        latency_s=pair.latency_s,
        attempts=pair.attempts,
        regenerations=(pair.attempts - 1) // link.attempts_per_round,
        generated_at_s=now_s + pair.latency_s,
    )


class _Delivery(_Frozen):
    """What delivering over a path took: ``path`` (the nodes from one end to the other),
    ``latency_s``, ``attempts`` (over every hop) and ``hop_purified`` (extra raw pairs
    purification consumed on each hop, in path order)."""

    path: list[str]
    latency_s: float
    attempts: int
    hop_purified: list[int]

    @property
    def purified(self) -> int:
        """Extra raw pairs purification consumed, over every hop."""
        return sum(self.hop_purified)


class EndToEndPair(_Delivery):
    """A pair shared by two nodes over a path of links, after swapping at every inner node:
    its Werner ``fidelity`` when the requester uses it (after its hold); ``latency_s`` is the
    time until the slowest hop's pair was ready."""

    fidelity: float


def deliver_epr(
    topology: Topology,
    a: str,
    b: str,
    *,
    rng: np.random.Generator,
    hold_s: float = 0.0,
    ideal: bool = False,
) -> EndToEndPair:
    """Samples an EPR pair between ``a`` and ``b`` over the shortest path of links.

    Every hop makes its pair (purified as its `LinkPlan` says) at once, in parallel; a hop
    ready early keeps its pair in memory (decaying) until the slowest hop is done, then ideal
    swaps join the pairs. The latency is the slowest hop's; ``hold_s`` is the requester's hold
    after delivery.

    Args:
        topology: The links.
        a: One end.
        b: The other end.
        rng: The random source.
        hold_s: How long the requester keeps the pair before using it.
        ideal: Perfect pairs: fidelity 1 and no purification; latency still sampled.

    Raises:
        QubusError: ``link.no_path`` when no chain of links joins ``a`` and ``b``.
    """
    path = topology.path(a, b)
    hops = topology.hops(path)
    pairs = [_hop_pair(spec, 0 if ideal else LinkPlan.of(spec).rounds, rng) for spec in hops]
    latency_s = max((pair.latency_s for pair in pairs), default=0.0)
    fidelity = 1.0
    for spec, pair in zip(hops, pairs, strict=True):
        waited = latency_s - pair.latency_s + hold_s
        fidelity = swap_fidelity(fidelity, werner_fidelity(pair.fidelity, waited, spec.coherence_s))
    return EndToEndPair(
        path=path,
        fidelity=1.0 if ideal else fidelity,
        latency_s=latency_s,
        attempts=sum(pair.attempts for pair in pairs),
        hop_purified=[pair.raw_pairs - 1 for pair in pairs],
    )


class Reservation(_Delivery):
    """Pairs delivered one after another between two nodes over one path, for one task:
    ``fidelities``, one per pair as used (after its hold); ``latency_s`` runs from the request
    until the last pair is delivered."""

    fidelities: list[float]


def reserve_pairs(
    topology: Topology,
    a: str,
    b: str,
    count: int,
    *,
    rng: np.random.Generator,
    hold_s: float = 0.0,
    ideal: bool = False,
) -> Reservation:
    """Samples ``count`` end-to-end pairs between ``a`` and ``b``, made one after another.

    Args:
        topology: The links.
        a: One end.
        b: The other end.
        count: Pairs wanted, ≥ 1.
        rng: The random source.
        hold_s: How long each pair is kept after its delivery before use.
        ideal: Perfect pairs (see `deliver_epr`).

    Raises:
        ValueError: ``count`` is below 1.
        QubusError: ``link.no_path`` when no chain of links joins ``a`` and ``b``.
    """
    if count < 1:
        raise ValueError(f"count must be ≥ 1, got {count}")
    pairs = [deliver_epr(topology, a, b, rng=rng, hold_s=hold_s, ideal=ideal) for _ in range(count)]
    return Reservation(
        path=pairs[0].path,
        fidelities=[pair.fidelity for pair in pairs],
        latency_s=sum(pair.latency_s for pair in pairs),
        attempts=sum(pair.attempts for pair in pairs),
        hop_purified=[sum(column) for column in zip(*(p.hop_purified for p in pairs), strict=True)],
    )


def expected_pair(
    topology: Topology, a: str, b: str, *, hold_s: float = 0.0
) -> tuple[float, float]:
    """Expected fidelity and latency (s) of one pair delivered between ``a`` and ``b``.

    The prediction counterpart of `deliver_epr`, without sampling. Each hop's latency is put
    on a common time grid: exactly (geometric attempts) for raw pairs, as a gamma law with
    its `LinkPlan`'s mean and variance for purified ones. With ``D_i(t)`` the expected
    Werner parameter at time ``t`` of hop ``i``'s pair (0 while not made yet), and
    ``c = Σ 1/T_i``, the swapped pair's Werner parameter is
    ``E[Π_i w_i·exp(−(M − L_i)/T_i)] = ∫ c·Π_i D_i(t) dt``, exact for independent hops whose
    latency ``L_i`` and herald fidelity are as modelled (``M`` = the slowest hop). Purified
    pairs take their plan's mean fidelity whatever their latency (mean field).

    Args:
        topology: The links.
        a: One end.
        b: The other end (``a`` itself gives a perfect pair at once).
        hold_s: How long the requester keeps the pair before using it.

    Raises:
        QubusError: ``link.no_path`` when no chain of links joins ``a`` and ``b``.
    """
    hops = topology.hops(topology.path(a, b))
    if not hops:
        return 1.0, 0.0
    plans = [LinkPlan.of(spec) for spec in hops]
    if len(hops) == 1:
        decayed = werner_fidelity(plans[0].fidelity, hold_s, hops[0].coherence_s)
        return decayed, plans[0].latency_s
    grid = _Grid(_GRID_SPAN * max(plan.latency_s for plan in plans))
    masses = [grid.masses(spec, plan) for spec, plan in zip(hops, plans, strict=True)]
    done = np.prod([np.cumsum(mass) for mass in masses], axis=0)
    latency_s = float(np.dot(grid.mid, np.diff(done, prepend=0.0)))
    werner = [
        grid.held_werner(mass * grid.herald_werner(spec, plan), spec.coherence_s)
        for spec, plan, mass in zip(hops, plans, masses, strict=True)
    ]
    step = math.exp(-grid.step * sum(1 / spec.coherence_s for spec in hops))
    product = np.prod(werner, axis=0)
    parameter = (1 - step) * float(product.sum()) + step * float(product[-1])
    parameter *= math.exp(-hold_s * sum(1 / spec.coherence_s for spec in hops))
    return (3 * parameter + 1) / 4, latency_s


_GRID_SPAN = 30.0
"""`expected_pair`'s time grid spans this many times the slowest hop's mean latency."""


class _Grid:
    """A time grid of ``points`` equal bins from 0 to ``span_s``; a latency in a bin is taken
    at its midpoint."""

    def __init__(self, span_s: float, points: int = 4096) -> None:
        self.edges = np.linspace(0.0, span_s, points + 1)
        self.mid = (self.edges[:-1] + self.edges[1:]) / 2
        self.step = span_s / points

    def masses(self, link: LinkFigures, plan: LinkPlan) -> np.ndarray:
        """The probability that the link's pair is ready within each bin."""
        if plan.rounds == 0:
            attempts = np.floor(self.edges * link.attempt_rate_hz * (1 + 1e-12))
            return np.diff(-np.power(1 - link.success_prob, attempts))
        shape = plan.latency_s**2 / plan.latency_var_s2
        scale = plan.latency_var_s2 / plan.latency_s
        log_density = (shape - 1) * np.log(self.mid) - self.mid / scale
        density = np.exp(log_density - log_density.max())
        return density / density.sum()

    def herald_werner(self, link: LinkFigures, plan: LinkPlan) -> np.ndarray | float:
        """The expected Werner parameter of the link's pair at its herald, per bin."""
        if plan.rounds > 0:
            return (4 * plan.fidelity - 1) / 3
        attempts = np.maximum(1, np.rint(self.mid * link.attempt_rate_hz))
        age_s = ((attempts - 1) % link.attempts_per_round + 1) / link.attempt_rate_hz
        return (4 * link.f0 - 1) / 3 * np.exp(-age_s / link.coherence_s)

    def held_werner(self, heralded: np.ndarray, coherence_s: float) -> np.ndarray:
        """``D(t)``: the mass heralded in each bin, decayed in memory until every later bin."""
        points = len(heralded)
        kernel = np.exp(-self.step * np.arange(points) / coherence_s)
        size = 2 * points
        held = np.fft.irfft(np.fft.rfft(heralded, size) * np.fft.rfft(kernel, size), size)
        return np.clip(held[:points], 0.0, None)

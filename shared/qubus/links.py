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
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qubus.errors import QubusError

MIXED_FIDELITY = 0.25
"""Fidelity of the maximally mixed two-qubit state: the limit of every decaying Werner pair."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class LinkSpec(_Frozen):
    """One undirected entanglement link; its endpoints are stored in sorted order.

    Attributes:
        a: The endpoint whose node id sorts first.
        b: The other endpoint.
        attempt_rate_hz: Generation attempts per second.
        success_prob: Probability that one attempt is heralded as a success.
        f0: Werner fidelity of a fresh pair, in (0.25, 1].
        coherence_s: Memory coherence time T: the fidelity excess over 1/4 decays as exp(−t/T).
        cutoff_s: Halves older than this are discarded; at least one attempt period.
    """

    a: str = Field(min_length=1)
    b: str = Field(min_length=1)
    attempt_rate_hz: float = Field(gt=0)
    success_prob: float = Field(gt=0, le=1)
    f0: float = Field(gt=MIXED_FIDELITY, le=1)
    coherence_s: float = Field(gt=0)
    cutoff_s: float = Field(gt=0)

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
    def _check(self) -> Self:
        if self.a == self.b:
            raise ValueError(f"a link needs two distinct nodes, got {self.a!r} twice")
        if self.attempts_per_round < 1:
            raise ValueError(
                f"cutoff_s={self.cutoff_s} is shorter than one attempt "
                f"(1/attempt_rate_hz = {1 / self.attempt_rate_hz} s): no pair could ever be made"
            )
        return self

    @property
    def key(self) -> tuple[str, str]:
        """The sorted endpoint pair identifying this link."""
        return (self.a, self.b)

    @property
    def expected_latency_s(self) -> float:
        """Mean time to generate one pair: ``1 / (attempt_rate_hz · success_prob)``."""
        return 1.0 / (self.attempt_rate_hz * self.success_prob)

    @property
    def attempts_per_round(self) -> int:
        """Attempts that fit within ``cutoff_s`` (a relative tolerance absorbs float error)."""
        return math.floor(self.cutoff_s * self.attempt_rate_hz * (1 + 1e-12))


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

    Attributes:
        links: Every link, each between two distinct nodes.
        description: Free text: where the numbers come from.
    """

    links: list[LinkSpec]
    description: str = ""

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
    def ring(
        cls,
        nodes: Iterable[str],
        *,
        attempt_rate_hz: float = 1.0e6,
        success_prob: float = 2.0e-4,
        f0: float = 0.94,
        coherence_s: float = 0.1,
        cutoff_s: float = 0.05,
    ) -> Topology:
        """Links each node to the next, and the last to the first, all with the same figures.

        The default figures are of the order of a trapped-ion network link (Stephenson et al.,
        PRL 124, 110501 (2020): about 1 MHz attempts, 2·10⁻⁴ success, 200 pairs/s, F ≈ 0.94),
        with a 100 ms memory and a 50 ms cutoff; they are illustrative, not a device's.

        Args:
            nodes: Node ids in ring order; two nodes give one link, one node none.
            attempt_rate_hz: See `LinkSpec`.
            success_prob: See `LinkSpec`.
            f0: See `LinkSpec`.
            coherence_s: See `LinkSpec`.
            cutoff_s: See `LinkSpec`.

        Raises:
            ValueError: a node id repeats or a figure is invalid.
        """
        order = list(nodes)
        if len(set(order)) != len(order):
            raise ValueError(f"ring nodes must be distinct, got {order}")
        pairs = {tuple(sorted((n, order[(i + 1) % len(order)]))) for i, n in enumerate(order)}
        figures = {
            "attempt_rate_hz": attempt_rate_hz,
            "success_prob": success_prob,
            "f0": f0,
            "coherence_s": coherence_s,
            "cutoff_s": cutoff_s,
        }
        links = [LinkSpec(a=a, b=b, **figures) for a, b in sorted(pairs) if a != b]
        return cls(links=links, description=f"ring of {len(order)} nodes")

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

    def path(self, a: str, b: str) -> list[str]:
        """A shortest chain of links from ``a`` to ``b`` by hop count, for entanglement swapping.

        Breadth-first search visiting neighbours in sorted order, so among equally short paths
        the result is deterministic.

        Returns:
            The nodes from ``a`` to ``b`` inclusive; ``[a]`` when ``a == b``.

        Raises:
            QubusError: ``link.no_path`` when a node ends no link or the two are not connected.
        """
        known = set(self.nodes)
        for node in (a, b):
            if node not in known:
                raise QubusError(f"node {node!r} ends no link", code="link.no_path")
        neighbours: dict[str, list[str]] = {n: [] for n in known}
        for spec in self.links:
            neighbours[spec.a].append(spec.b)
            neighbours[spec.b].append(spec.a)
        previous: dict[str, str | None] = {a: None}
        queue = deque([a])
        while queue:
            node = queue.popleft()
            if node == b:
                hops = [b]
                while (step := previous[hops[-1]]) is not None:
                    hops.append(step)
                return hops[::-1]
            for nxt in sorted(neighbours[node]):
                if nxt not in previous:
                    previous[nxt] = node
                    queue.append(nxt)
        raise QubusError(f"no chain of links joins {a!r} and {b!r}", code="link.no_path")


def load_topology(source: str | Path | Mapping[str, Any]) -> Topology:
    """Reads a topology from a JSON file or from already-parsed data.

    Args:
        source: A path to a JSON file ``{"links": [...], "description": ...}``, or that mapping.

    Raises:
        QubusError: ``topology.invalid`` when the file cannot be read or does not validate
            (the message names the offending fields).
    """
    try:
        data = source if isinstance(source, Mapping) else json.loads(Path(source).read_text())
        return Topology.model_validate(data)
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise QubusError(f"invalid topology: {exc}", code="topology.invalid") from exc


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


def sample_epr(
    link: LinkSpec,
    *,
    rng: np.random.Generator,
    now_s: float = 0.0,
    hold_s: float = 0.0,
    max_wait_s: float | None = None,
) -> EprPair:
    """Samples the generation of one EPR pair on ``link`` (model in the module docstring).

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
    attempts = int(rng.geometric(link.success_prob))
    latency_s = attempts / link.attempt_rate_hz
    if max_wait_s is not None and latency_s > max_wait_s:
        raise QubusError(
            f"link {link.a}–{link.b} heralded no pair within {max_wait_s} s "
            f"(expected latency {link.expected_latency_s:.3g} s)",
            code="link.timeout",
        )
    regenerations, last_round = divmod(attempts - 1, link.attempts_per_round)
    age_s = (last_round + 1) / link.attempt_rate_hz + hold_s
    return EprPair(
        link=link.key,
        fidelity=werner_fidelity(link.f0, age_s, link.coherence_s),
        latency_s=latency_s,
        attempts=attempts,
        regenerations=regenerations,
        generated_at_s=now_s + latency_s,
    )


class EndToEndPair(_Frozen):
    """A pair shared by two nodes over a path of links, after swapping at every inner node."""

    path: list[str]
    fidelity: float
    latency_s: float
    attempts: int


def deliver_epr(
    topology: Topology, a: str, b: str, *, rng: np.random.Generator, hold_s: float = 0.0
) -> EndToEndPair:
    """Samples an EPR pair between ``a`` and ``b`` over the shortest path of links.

    Every hop generates its pair at once, in parallel; a hop that heralds early keeps its pair
    in memory (decaying) until the slowest hop is done, then ideal swaps join the pairs. The
    latency is the slowest hop's; ``hold_s`` is the requester's hold after delivery.
    """
    path = topology.path(a, b)
    hops = [sample_epr(topology.link(x, y), rng=rng) for x, y in zip(path, path[1:], strict=False)]
    latency_s = max(pair.latency_s for pair in hops)
    fidelity = 1.0
    for (x, y), pair in zip(zip(path, path[1:], strict=False), hops, strict=True):
        spec = topology.link(x, y)
        waited = latency_s - pair.latency_s + hold_s
        fidelity = swap_fidelity(fidelity, werner_fidelity(pair.fidelity, waited, spec.coherence_s))
    return EndToEndPair(
        path=path, fidelity=fidelity, latency_s=latency_s, attempts=sum(p.attempts for p in hops)
    )

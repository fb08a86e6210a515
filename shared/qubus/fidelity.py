"""Fidelity arithmetic on distributions and counts: plain Python, no simulator imported."""

from __future__ import annotations

import math
from collections.abc import Mapping


def hellinger_fidelity(counts: Mapping[str, float], dist: Mapping[str, float]) -> float:
    """Hellinger fidelity ``(Σ √(p·q))²`` of counts (normalised) against a distribution."""
    total = sum(counts.values())
    if total <= 0:
        return 0.0
    overlap = sum(math.sqrt(n / total * dist.get(bits, 0.0)) for bits, n in counts.items())
    return overlap**2


def fidelity_with_ideal(fidelity: float, ideal: Mapping[str, float], measured_bits: int) -> float:
    """Hellinger fidelity expected if a fraction ``1 − fidelity`` of shots were uniform noise.

    ``H ≈ (Σ_i √(p_i·(F·p_i + (1−F)/2^m)))²`` with ``F = fidelity`` and ``m = measured_bits``.
    An empty ``ideal`` returns ``fidelity`` unchanged.
    """
    if not ideal:
        return fidelity
    uniform = (1 - fidelity) * 2.0**-measured_bits
    overlap = sum(math.sqrt(p * (fidelity * p + uniform)) for p in ideal.values())
    return min(1.0, overlap**2)

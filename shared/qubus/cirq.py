"""``qubus.cirq.Sampler``: a ``cirq.Sampler`` whose circuits run on a qubus stack.

``run``, ``run_sweep``, ``sample`` and ``run_batch`` (cirq's own, built on ``run_sweep``)
return ``cirq.Result`` objects keyed by the circuit's measurement keys. A parameterised
circuit's sweep is one submission (``Session.submit_sweep``): parsed, checked, compiled and
placed once, each point run as a task of the sweep. A circuit without parameters is one task
per resolver, all submitted before any is waited for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cirq
import numpy as np

from qubus.circuits.simulate import measurement_keys
from qubus.client.sync import Session, SessionHolder


class Sampler(SessionHolder, cirq.Sampler):
    """Runs circuits on the qubus stack.

    Args:
        session: A ``qubus.connect()`` session to share (default: a new one, closed by
            ``close``).
        url: The stack's NATS server when no session is given (default: ``QUBUS_NATS_URL``,
            else the running ``qubus up``).
        nkey: The user's nkey seed file when no session is given (``qubus.connect``).
        timeout: Seconds to wait for each point's result.
        **options: ``Session.submit`` options for every task (``node``, ``noiseless``,
            ``priority``, ``fidelity_floor``, ...).
    """

    def __init__(
        self,
        session: Session | None = None,
        *,
        url: str | None = None,
        nkey: str | None = None,
        timeout: float = 300.0,
        **options: Any,
    ) -> None:
        self._hold(session, url, nkey)
        self._timeout = timeout
        self._options = options

    def run_sweep(
        self, program: cirq.AbstractCircuit, params: cirq.Sweepable, repetitions: int = 1
    ) -> Sequence[cirq.Result]:
        """One ``cirq.Result`` per parameter resolver of ``params``, in their order.

        Raises:
            qubus.client.sync.TaskError: a point's task was rejected, failed or cancelled.
            TimeoutError: a point did not finish within the sampler's ``timeout``.
        """
        resolvers = list(cirq.to_resolvers(params))
        keys = measurement_keys(program)
        names = sorted(cirq.parameter_names(program))
        if names:
            sweep = self._session.submit_sweep(
                program,
                [{name: float(r.value_of(name)) for name in names} for r in resolvers],
                shots=repetitions,
                **self._options,
            )
            results = sweep.results(self._timeout)
        else:
            jobs = [
                self._session.submit(program, shots=repetitions, **self._options) for _ in resolvers
            ]
            results = [job.result(self._timeout) for job in jobs]
        return [
            cirq.ResultDict(params=resolver, measurements=measurements(result.counts or {}, keys))
            for result, resolver in zip(results, resolvers, strict=True)
        ]


def measurements(counts: dict[str, int], keys: list[tuple[str, int]]) -> dict[str, np.ndarray]:
    """Counts of bit strings as cirq's measurements: per key, a ``(shots, width)`` array of
    bits, rows grouped by outcome (bit strings concatenate the keys in ``keys`` order)."""
    rows = np.array(
        [[int(bit) for bit in bits] for bits, n in counts.items() for _ in range(n)],
        dtype=np.int8,
    ).reshape(-1, sum(width for _, width in keys))
    found = {}
    start = 0
    for key, width in keys:
        found[key] = rows[:, start : start + width]
        start += width
    return found

"""Calibration drift: replay a node's daily calibration snapshots on a compressed clock.

A QPU node with a drift series (``qubus.devices.profiles.DRIFT_NODES``: ``ibm_perth``, 181 daily IBM
snapshots from 2023-01-01 to 2023-06-30) and ``QUBUS_DRIFT_PERIOD_S`` > 0 moves to the next
snapshot every ``period_s`` seconds of wall-clock time, one real day per period, and starts
again from the first after the last. Each snapshot is a device profile with its own
``revision``; the qpu service publishes the current one to KV ``qubus_nodes``, and everything
keyed by revision (compilation caches, the noise service's predictions) follows.

The snapshots are real, traps included: some days lose qubits or CX pairs (on 2023-04-10
no CX pair of ibm_perth is usable), so the node's ``max_circuit_qubits`` drifts too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qubus.devices.profiles import DRIFT_NODES, Device, drift_devices


class DriftReplay:
    """The calibration a drifting node has at each moment.

    Args:
        devices: The node's profiles, oldest first (at least one).
        period_s: Wall-clock seconds each profile stays current (> 0).
        start: The clock reading (``time.monotonic()``) at which the first profile began.

    Raises:
        ValueError: If ``devices`` is empty or ``period_s`` is not positive.
    """

    def __init__(self, devices: Sequence[Device], *, period_s: float, start: float) -> None:
        if not devices:
            raise ValueError("a drift replay needs at least one calibration")
        if period_s <= 0:
            raise ValueError(f"drift period must be positive, got {period_s!r}")
        self.devices = tuple(devices)
        self.period_s = period_s
        self.start = start

    @classmethod
    def for_node(
        cls, node_id: str, *, period_s: float, start: float, calibration_dir: Path | None = None
    ) -> DriftReplay | None:
        """The replay of ``node_id``'s snapshots; None if drift is off (``period_s`` ≤ 0) or
        the node has no drift series."""
        if period_s <= 0 or node_id not in DRIFT_NODES:
            return None
        devices = list(drift_devices(node_id, calibration_dir=calibration_dir))
        return cls(devices, period_s=period_s, start=start)

    def index_at(self, now: float) -> int:
        """Index of the snapshot current at clock reading ``now`` (wrapping after the last)."""
        elapsed = max(0.0, now - self.start)
        return int(elapsed // self.period_s) % len(self.devices)

    def device_at(self, now: float) -> Device:
        """The profile current at clock reading ``now``."""
        return self.devices[self.index_at(now)]

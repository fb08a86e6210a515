"""Background load: replay a real IBM backend's queue of other users' jobs on a QPU node.

The series (``data/load/ibm_pending_jobs_10min.csv.xz``; origin and licence in
``data/load/MANIFEST.tsv``) is the mean number of pending jobs of 12 IBM backends per
10-minute bin, 2023-11-16 13:50 to 2023-11-26 20:50 UTC, from status polls about every 10 s.
One stretch, 2023-11-21 09:20 to 10:30, was not polled: each missing bin holds the value of
the bin before it, so the replay keeps the real clock.

A node replays the backend with its own name (``ibm_nairobi``, ``ibm_perth``); any other node
gets the backend ``backend_for`` picks from its id's SHA-256, the same on every start. Every
node starts at the first bin when its process starts, so nodes started together see the
backends' loads as they were at the same moments. The replay moves to the next bin every
``period_s`` wall-clock seconds and starts again after the last.

The model: the pending jobs at the moment a task reaches the node are ahead of it in one
first-in first-out queue, each holding the QPU for ``job_s`` modelled seconds (the qpu service
uses its own tasks' mean duration; the series gives queue lengths, not durations). So the task
starts no earlier than ``start_after``: its arrival plus those jobs' time, scaled to wall-clock
like every emulated duration. Jobs that arrive after it queue behind it.
"""

from __future__ import annotations

import csv
import hashlib
import lzma
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

BIN = timedelta(minutes=10)
"""The width of one bin of the series."""

SERIES_FILE = "ibm_pending_jobs_10min.csv.xz"


def series_path() -> Path:
    """The pending-jobs series shipped inside the package."""
    return Path(str(resources.files("qubus") / "data" / "load" / SERIES_FILE))


def load_series(path: Path | None = None) -> dict[str, tuple[int, ...]]:
    """Pending jobs per 10-minute bin of every backend in the series, oldest first.

    Args:
        path: An xz-compressed CSV with columns ``time_bin_utc`` (ISO 8601, on 10-minute
            boundaries), ``backend`` and ``mean_pending_jobs``; default ``series_path()``.

    Returns:
        For each backend, one count (the bin's mean, rounded to the nearest job) for every bin
        from the series' first to its last; a bin missing for a backend holds the value of the
        bin before it.

    Raises:
        ValueError: If the file has no rows, or a backend's first bin is missing.
    """
    path = path or series_path()
    values: dict[str, dict[datetime, int]] = {}
    with lzma.open(path, "rt", newline="") as rows:
        for row in csv.DictReader(rows):
            when = datetime.fromisoformat(row["time_bin_utc"])
            values.setdefault(row["backend"], {})[when] = round(float(row["mean_pending_jobs"]))
    if not values:
        raise ValueError(f"no pending-jobs rows in {path}")
    first = min(min(bins) for bins in values.values())
    last = max(max(bins) for bins in values.values())
    n_bins = (last - first) // BIN + 1
    series = {}
    for backend, bins in sorted(values.items()):
        if first not in bins:
            raise ValueError(f"{backend} has no value for the first bin, {first.isoformat()}")
        jobs: list[int] = []
        for i in range(n_bins):
            jobs.append(bins.get(first + i * BIN, jobs[-1] if jobs else 0))
        series[backend] = tuple(jobs)
    return series


def backend_for(node_id: str, backends: Iterable[str]) -> str:
    """The backend whose queue node ``node_id`` replays: its own name if the series has it,
    else one chosen by the SHA-256 of the node id among the backends sorted by name.

    Raises:
        ValueError: If ``backends`` is empty.
    """
    names = sorted(backends)
    if not names:
        raise ValueError("no backend to replay")
    if node_id in names:
        return node_id
    digest = int.from_bytes(hashlib.sha256(node_id.encode()).digest()[:8], "big")
    return names[digest % len(names)]


class BackgroundLoad:
    """Other users' jobs queued on a node at each moment, replayed from a backend's queue.

    Args:
        backend: The backend whose queue is replayed.
        jobs: Its pending jobs per bin, oldest first (at least one).
        period_s: Wall-clock seconds each bin stays current (> 0).
        start: The clock reading (``time.time()``) at which the first bin began.

    Raises:
        ValueError: If ``jobs`` is empty or ``period_s`` is not positive.
    """

    def __init__(self, backend: str, jobs: Sequence[int], *, period_s: float, start: float) -> None:
        if not jobs:
            raise ValueError("a background load needs at least one bin")
        if period_s <= 0:
            raise ValueError(f"load period must be positive, got {period_s!r}")
        self.backend = backend
        self.jobs = tuple(jobs)
        self.period_s = period_s
        self.start = start

    @classmethod
    def for_node(
        cls, node_id: str, *, period_s: float, start: float, path: Path | None = None
    ) -> BackgroundLoad:
        """The replay of the backend ``backend_for`` maps ``node_id`` to."""
        series = load_series(path)
        backend = backend_for(node_id, series)
        return cls(backend, series[backend], period_s=period_s, start=start)

    def index_at(self, now: float) -> int:
        """Index of the bin current at clock reading ``now`` (wrapping after the last)."""
        elapsed = max(0.0, now - self.start)
        return int(elapsed // self.period_s) % len(self.jobs)

    def jobs_at(self, now: float) -> int:
        """Other users' jobs queued on the node at clock reading ``now``."""
        return self.jobs[self.index_at(now)]

    def start_after(self, arrival: float, *, job_s: float, time_scale: float) -> float:
        """The earliest clock reading at which a task that reached the node at ``arrival`` may
        start: after the jobs queued then, each ``job_s`` modelled seconds, × ``time_scale``."""
        return arrival + self.jobs_at(arrival) * job_s * time_scale

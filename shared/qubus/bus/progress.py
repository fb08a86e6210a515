"""A textual progress bar for long CLI work, drawn on stderr only when it is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """A one-line bar ``LABEL [#####.....] DONE/TOTAL`` redrawn in place.

    Drawing is throttled (at most every ``interval_s``, and always at the end), so advancing
    once per message costs nothing noticeable. Nothing is drawn unless ``stream`` is a
    terminal, so redirected output and pipes stay clean.

    Args:
        total: The number of steps expected; the bar is full when ``done`` reaches it.
        label: What is being counted (``"reading events"``).
        stream: Where to draw (default stderr).
        width: Characters inside the brackets.
        interval_s: Least time between two redraws.
    """

    def __init__(
        self,
        total: int,
        label: str,
        *,
        stream: TextIO | None = None,
        width: int = 30,
        interval_s: float = 0.1,
    ) -> None:
        self.total = max(0, total)
        self.label = label
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.interval_s = interval_s
        self.enabled = self.stream.isatty()
        self._drawn_at = time.monotonic()
        self._draw()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self, steps: int = 1) -> None:
        """Count ``steps`` more done and redraw if the last redraw is old enough."""
        self.done += steps
        now = time.monotonic()
        if now - self._drawn_at >= self.interval_s:
            self._draw()
            self._drawn_at = now

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw()
            print(file=self.stream, flush=True)
            self.enabled = False

    def line(self) -> str:
        """The bar as text, e.g. ``reading events [###.......] 30/100``."""
        fraction = min(1.0, self.done / self.total) if self.total else 1.0
        filled = round(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.label} [{bar}] {self.done}/{self.total}"

    def _draw(self) -> None:
        if self.enabled:
            print(f"\r{self.line()}", end="", file=self.stream, flush=True)

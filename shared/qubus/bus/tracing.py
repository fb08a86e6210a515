"""W3C trace context (``traceparent``) on every hop, injected and extracted in one place."""

from __future__ import annotations

import random
import re
import secrets
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True)
class TraceContext:
    """A trace id shared by every hop of a task, and the span id of one hop."""

    trace_id: str
    span_id: str

    @classmethod
    def new(cls) -> TraceContext:
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    @classmethod
    def extract(cls, headers: dict[str, str] | None) -> TraceContext:
        """The context carried by ``headers``, or a fresh trace when it is absent or malformed."""
        match = _TRACEPARENT.match((headers or {}).get("traceparent", ""))
        if match is None or match.group(1) == "0" * 32:
            return cls.new()
        return cls(match.group(1), match.group(2))

    def child(self) -> TraceContext:
        """The context of the next hop: same trace, new span.

        A span id need only be unique within its trace, not secret: drawn from ``random``
        (reseeded in every forked process), not ``secrets`` (a system call each), as every
        event a stage publishes draws one. Never all zeros, which W3C reserves."""
        return TraceContext(self.trace_id, f"{random.getrandbits(64) or 1:016x}")

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"

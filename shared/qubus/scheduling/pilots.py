"""Pilots: named sets of QPU nodes with constraints, that tasks may target.

A ``PilotDescription`` (the Pilot-Quantum idea: a resource placeholder that tasks are submitted
to) names QPU nodes and optional constraints. It lives in KV ``qubus_pilots`` under its name
(``qubus pilot create|list|delete``). A task submitted with ``pilot=NAME`` may only be placed
on a node of the pilot that meets every constraint: fusion marks the other nodes ineligible
with the reason, as it does for a task pinned to one node; a task naming a pilot that does not
exist is rejected with ``pilot.unknown``.

Constraints (each optional):

- ``min_fidelity``: the node's calibrated predicted fidelity for the task (the score's QNC)
  is at least this;
- ``max_queue``: the node's queue depth is at most this;
- ``max_qubits``: the circuit uses at most this many qubits.
"""

from __future__ import annotations

import time
from typing import ClassVar

import nats.js.errors
from nats.js.kv import KeyValue
from pydantic import Field, field_validator

from qubus.bus import codec
from qubus.bus.connection import BUCKET_PILOTS, Bus
from qubus.bus.kvrecords import read_record
from qubus.bus.messages import NODE_ID, Model, Preference, TaskOptions
from qubus.errors import QubusError


class PilotDescription(Model):
    """A pilot: the value of its name in KV ``qubus_pilots``.

    Attributes:
        name: The pilot's name (as a node id: lower-case letters, digits, ``_`` and ``-``).
        nodes: Its QPU node ids, sorted, at least one.
        min_fidelity: Least calibrated predicted fidelity a node must offer the task.
        max_queue: Largest queue depth a node may have.
        max_qubits: Widest circuit the pilot takes.
        prefer: The fidelity–time preference of its tasks that set none (``TaskOptions.prefer``).
        created_at: When it was created (Unix time).
    """

    TYPE: ClassVar[str] = "pilot.description.v1"

    name: str = Field(pattern=NODE_ID.pattern)
    nodes: list[str] = Field(min_length=1)
    min_fidelity: float | None = Field(default=None, ge=0.0, le=1.0)
    max_queue: int | None = Field(default=None, ge=0)
    max_qubits: int | None = Field(default=None, ge=1)
    prefer: Preference | None = None
    created_at: float = Field(default_factory=time.time)

    @field_validator("nodes")
    @classmethod
    def _node_ids(cls, value: list[str]) -> list[str]:
        bad = [node for node in value if not NODE_ID.match(node)]
        if bad:
            raise ValueError(f"node ids {bad} must match {NODE_ID.pattern}")
        return sorted(set(value))

    def options_for(self, options: TaskOptions) -> TaskOptions:
        """A task's options within this pilot: its preference, or else the pilot's."""
        if options.prefer is not None or self.prefer is None:
            return options
        return options.model_copy(update={"prefer": self.prefer})

    def exclusion(self, node: str, *, qubits: int, queue_depth: int, fidelity: float) -> str:
        """Why the pilot excludes ``node`` for a task, or "" if it does not.

        Args:
            node: The node.
            qubits: The circuit's width.
            queue_depth: The node's queue depth.
            fidelity: The task's calibrated predicted fidelity there.
        """
        if node not in self.nodes:
            return f"not in pilot {self.name}"
        if self.max_qubits is not None and qubits > self.max_qubits:
            return f"pilot {self.name} takes at most {self.max_qubits} qubits, task has {qubits}"
        if self.max_queue is not None and queue_depth > self.max_queue:
            return f"queue depth {queue_depth} exceeds pilot {self.name}'s {self.max_queue}"
        if self.min_fidelity is not None and fidelity < self.min_fidelity:
            return (
                f"predicted fidelity {fidelity:.3f} is below pilot {self.name}'s "
                f"{self.min_fidelity:g}"
            )
        return ""


async def create_pilot(kv: KeyValue, pilot: PilotDescription) -> int:
    """Store a new pilot; returns its revision.

    Raises:
        QubusError: ``pilot.exists`` if a pilot of that name exists.
    """
    try:
        return await kv.create(pilot.name, codec.encode(pilot))
    except nats.js.errors.KeyWrongLastSequenceError:
        raise QubusError(f"pilot {pilot.name} exists", code="pilot.exists") from None


async def delete_pilot(kv: KeyValue, name: str) -> None:
    """Delete a pilot: tasks that name it afterwards are rejected (``pilot.unknown``), tasks
    already scored keep their placement.

    Raises:
        QubusError: ``pilot.unknown`` if no pilot of that name exists.
    """
    try:
        await kv.get(name)
    except nats.js.errors.KeyNotFoundError:
        raise QubusError(f"no pilot {name}", code="pilot.unknown") from None
    await kv.delete(name)


async def list_pilots(bus: Bus) -> list[PilotDescription]:
    """Every stored pilot, by name."""
    kv = await bus.kv(BUCKET_PILOTS)
    stored = [
        await read_record(kv, name, PilotDescription) for name in await bus.kv_keys(BUCKET_PILOTS)
    ]
    return [record for record, _ in filter(None, stored)]  # None: deleted

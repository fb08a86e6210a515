"""Public circuit API: load circuits from the wire formats and describe them.

The IR is ``cirq.Circuit``; between the stages it travels in a compact wire form, or as Cirq
JSON where it has none (``circuit_to_wire``). ``load_circuit`` accepts the three submission
formats, ``circuit_features`` summarises a circuit for the parser stage
(sizes, gate counts, interaction graph) and gives it a content-addressed ``fingerprint``.

The names below are loaded on first use (PEP 562): a process that only bounds-checks circuit
text (the ingestion service, with ``qubus.circuits.ingest``) never imports cirq: its module
imports at a peak resident size of 42 MB, against 213 MB with cirq.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qubus.lazy import lazy_names

if TYPE_CHECKING:
    from qubus.bus.messages import Features
    from qubus.circuits.ir import (
        FORMATS,
        circuit_features,
        circuit_from_json,
        circuit_from_wire,
        circuit_to_json,
        circuit_to_wire,
        gate_name,
        load_circuit,
    )
    from qubus.circuits.qasm import parse_qasm

_HOMES = {
    "Features": "qubus.bus.messages",
    "parse_qasm": "qubus.circuits.qasm.parser",
    **dict.fromkeys(
        (
            "FORMATS",
            "circuit_features",
            "circuit_from_json",
            "circuit_from_wire",
            "circuit_to_json",
            "circuit_to_wire",
            "gate_name",
            "load_circuit",
        ),
        "qubus.circuits.ir",
    ),
}

__all__ = [
    "FORMATS",
    "Features",
    "circuit_features",
    "circuit_from_json",
    "circuit_from_wire",
    "circuit_to_json",
    "circuit_to_wire",
    "gate_name",
    "load_circuit",
    "parse_qasm",
]

__getattr__ = lazy_names(__name__, _HOMES)

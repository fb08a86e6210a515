"""parser: ``ingested`` → ``parsed``. Source text to the cirq IR (as Cirq JSON) and features."""

from __future__ import annotations

import asyncio

from qubus.circuits import circuit_features, circuit_to_json, load_circuit
from qubus.consumer import Context, Stage
from qubus.messages import TaskIngested, TaskParsed
from qubus.service import Runtime


def parse(event: TaskIngested) -> TaskParsed:
    """Parse and describe the task's circuit (raises ``QasmError`` with line and column)."""
    circuit = load_circuit(event.text, event.format)
    return TaskParsed(
        task_id=event.task_id,
        circuit=circuit_to_json(circuit),
        features=circuit_features(circuit),
        options=event.options,
    )


async def handle(event: TaskIngested, ctx: Context) -> TaskParsed:
    return await asyncio.to_thread(parse, event)


async def setup(rt: Runtime) -> None:
    await rt.consume(Stage("parser", [TaskIngested], handle))

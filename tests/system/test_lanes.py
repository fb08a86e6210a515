"""A heavy circuit has a lane of its own: a light task that reaches the sandbox while an
18-qubit QFT is being simulated there is evaluated first, not after it."""

from __future__ import annotations

import asyncio

import pytest

from qubus.bus.messages import SandboxEvaluation, SubmitRequest, TaskChecked

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

STACK_FLEET = ("quantinuum_h2_2",)


async def test_a_light_task_behind_a_heavy_one_is_simulated_first(client, dev_qasm):
    heavy_text = (dev_qasm / "qasmbench__qft_n18.qasm").read_text()
    light_text = (dev_qasm / "qasmbench__bell_n4.qasm").read_text()
    heavy = await client.submit(SubmitRequest(circuit=heavy_text, shots=100, noiseless=True))
    for _ in range(3000):  # the heavy task has been handed to the sandbox
        if await client.bus.last_event(heavy.task_id, TaskChecked) is not None:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the heavy task was never checked")
    light = await client.submit(SubmitRequest(circuit=light_text, shots=100))

    ends = await asyncio.gather(*(client.wait(r.task_id, timeout=300) for r in (heavy, light)))
    assert [events[-1].event.EVENT for events in ends] == ["completed", "completed"]
    heavy_eval = await client.bus.last_stored(heavy.task_id, SandboxEvaluation)
    light_eval = await client.bus.last_stored(light.task_id, SandboxEvaluation)
    assert heavy_eval is not None and light_eval is not None
    assert light_eval[1] < heavy_eval[1]  # stream sequences: the light one was stored first

"""A heavy circuit has a lane of its own: a light task that reaches the sandbox while an
18-qubit QFT is being simulated there is evaluated first, not after it; one that reaches the
parser behind five circuits long to parse is parsed before them."""

from __future__ import annotations

import asyncio

import pytest

from qubus.bus.messages import SandboxEvaluation, SubmitRequest, TaskChecked, TaskParsed

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


async def test_a_light_task_behind_long_ones_is_parsed_first(client, dev_qasm, long_qasm):
    """Five legal circuits of 3,400 operations (seconds each to parse), then a Bell circuit:
    without the lane the parser's four places held long ones and the Bell circuit waited for
    one of them; with it the long ones are parsed one at a time beside the light one."""
    long = await asyncio.gather(  # at once: the first must not be parsed before the light one
        *(  # is even submitted, as on a quiet machine it was when they were sent one by one
            client.submit(SubmitRequest(circuit=long_qasm, shots=100, noiseless=True))
            for _ in range(5)
        )
    )
    light = await client.submit(
        SubmitRequest(circuit=(dev_qasm / "qasmbench__bell_n4.qasm").read_text(), shots=100)
    )
    parsed: dict[str, int] = {}
    for _ in range(6000):
        for reply in [*long, light]:
            stored = await client.bus.last_stored(reply.task_id, TaskParsed)
            if stored is not None:
                parsed[reply.task_id] = stored[1]
        if len(parsed) == len(long) + 1:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"only {len(parsed)} of {len(long) + 1} tasks were parsed")
    for reply in long:
        await client.cancel(reply.task_id)
    # Stream sequences: at most the long circuit already in the heavy slot when the light one
    # arrived is parsed before it (on a quiet machine the first may finish that soon).
    assert parsed[light.task_id] < sorted(parsed[r.task_id] for r in long)[1]

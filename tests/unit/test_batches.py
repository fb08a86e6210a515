"""Changes to one key written a batch at a time (``qubus.bus.batches``): which changes share a
write, and whose outcome each submitter gets."""

from __future__ import annotations

import asyncio

from qubus.bus.batches import Batches


class Refused(Exception):
    pass


class Store:
    """Writes that take a moment, as a round trip to the bus does; a change named ``refuse``
    is refused alone, a batch holding ``fail`` fails whole."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, list[str]]] = []

    async def apply(self, key: str, changes: list[str]) -> list[Exception | None]:
        await asyncio.sleep(0.01)
        if "fail" in changes:
            raise ConnectionError("the bus is gone")
        self.writes.append((key, changes))
        return [Refused(c) if c == "refuse" else None for c in changes]


async def test_changes_arriving_while_a_write_is_in_flight_share_the_next_one():
    store = Store()
    batches = Batches(store.apply)
    await asyncio.gather(*(batches.submit("a", f"c{k}") for k in range(10)))
    assert [changes for _, changes in store.writes] == [["c0"], [f"c{k}" for k in range(1, 10)]]


async def test_a_linger_gathers_a_key_and_keeps_keys_apart():
    store = Store()
    batches = Batches(store.apply)

    async def later(key: str, change: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await batches.submit(key, change, linger_s=0.05)

    await asyncio.gather(later("a", "a0", 0), later("b", "b0", 0), later("a", "a1", 0.02))
    assert sorted(store.writes) == [("a", ["a0", "a1"]), ("b", ["b0"])]


async def test_each_submitter_gets_its_own_outcome_and_a_failed_write_fails_its_batch():
    batches = Batches(Store().apply)
    outcomes = await asyncio.gather(
        batches.submit("a", "ok", linger_s=0.01),
        batches.submit("a", "refuse", linger_s=0.01),
        batches.submit("b", "fail"),
        return_exceptions=True,
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], Refused)
    assert isinstance(outcomes[2], ConnectionError)
    together = await asyncio.gather(
        batches.submit("c", "x", linger_s=0.01),
        batches.submit("c", "fail", linger_s=0.01),
        return_exceptions=True,
    )
    assert all(isinstance(outcome, ConnectionError) for outcome in together)


async def test_a_submitter_cancelled_while_its_batch_is_written_leaves_the_others_their_write():
    store = Store()
    batches = Batches(store.apply)
    first = asyncio.create_task(batches.submit("a", "first", linger_s=0.01))
    second = asyncio.create_task(batches.submit("a", "second", linger_s=0.02))
    await asyncio.sleep(0.015)  # the first holds the lock and writes both
    first.cancel()
    await asyncio.wait_for(second, timeout=1.0)
    assert store.writes == [("a", ["first", "second"])]

"""The CPU sampler counts the stacks a process spends its CPU in, and only those."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from qubus.bus.sampler import CpuSampler, by_service, collapsed, shares


def _spin(seconds: float) -> None:
    """Burn ``seconds`` of CPU."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _own_samples(counts, name: str) -> int:
    return sum(n for stack, n in counts.items() if f"unit/test_sampler.py:{name}" in stack)


def test_samples_where_the_cpu_goes_not_where_the_process_waits(tmp_path: Path) -> None:
    sampler = CpuSampler(tmp_path / "new" / "me.txt")  # its folder is made
    sampler.start()
    try:
        _spin(0.4)
        time.sleep(0.4)  # no CPU used: no sample
    finally:
        sampler.stop()
    counts = collapsed(tmp_path / "new" / "me.txt")
    spun = _own_samples(counts, "_spin")
    assert spun >= 20  # 0.4 s at one sample per kernel tick (4 ms at 250 Hz, 1 ms at 1000)
    assert spun >= 0.8 * sum(counts.values())
    stack = next(s for s in counts if s[-1] == "unit/test_sampler.py:_spin")
    assert (
        stack.index(
            "unit/test_sampler.py:test_samples_where_the_cpu_goes_not_where_the_process_waits"
        )
        < len(stack) - 1
    )


def test_signals_clear_and_write_and_stop_restores_the_handlers(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGUSR1)
    path = tmp_path / "me.txt"
    sampler = CpuSampler(path)
    sampler.start()
    try:
        _spin(0.2)
        os.kill(os.getpid(), signal.SIGUSR2)  # written now
        written = collapsed(path)
        os.kill(os.getpid(), signal.SIGUSR1)  # cleared
        _spin(0.1)
    finally:
        sampler.stop()
    assert _own_samples(written, "_spin") > 0
    assert sum(collapsed(path).values()) < sum(written.values())
    assert signal.getsignal(signal.SIGUSR1) is before
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


LOOP = ("multiprocessing/process.py:run", "bus/service.py:run_service", "asyncio/runners.py:run")


def test_a_sample_taken_while_the_counts_are_written_leaves_the_write_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SIGPROF`` runs ``_sample`` between any two bytecodes, ``write``'s loop included: its
    new stack must not break the loop (it did: "dictionary changed size during iteration",
    and the profile asked for was never written)."""
    sampler = CpuSampler(tmp_path / "me.txt")
    sampler.counts.update({"a;b": 1, "a;c": 2})
    real_open = open

    def open_and_sample(path, mode):  # a sample lands as the first line is written
        out = real_open(path, mode)
        write = out.writelines

        def sampled(lines):
            for n, line in enumerate(lines):
                if n == 0:
                    sampler._sample(signal.SIGPROF, sys._getframe())
                write([line])

        out.writelines = sampled
        return out

    monkeypatch.setattr("qubus.bus.sampler.open", open_and_sample, raising=False)
    sampler.write()
    assert collapsed(tmp_path / "me.txt") == Counter({("a", "b"): 1, ("a", "c"): 2})


def test_each_sample_is_of_the_innermost_kind_its_stack_shows() -> None:
    handler = (*LOOP, "bus/consumer.py:process", "noise/main.py:handle")
    counts = Counter(
        {
            (*handler, "devices/compile.py:compile_for_device", "cirq/circuit.py:__init__"): 5,
            (*handler, "bus/consumer.py:publish", "js/client.py:publish"): 2,
            (*handler, "structlog/_native.py:meth", "json/encoder.py:encode"): 1,
            (*LOOP, "bus/consumer.py:process", "bus/codec.py:decode", "pydantic/main.py:x"): 1,
            (*LOOP, "bus/consumer.py:_heartbeats"): 3,
            LOOP: 4,
            (*LOOP, "asyncio/streams.py:data_received"): 4,
        }
    )
    assert shares(counts) == {
        "own work": 0.25,
        "consumer": 0.15,
        "codec": 0.05,
        "nats client": 0.1,
        "logging": 0.05,
        "loop, threads": 0.4,
    }


def test_a_service_is_the_sum_of_its_processes(tmp_path: Path) -> None:
    own = ";".join((*LOOP, "qpu/main.py:handle"))
    nats = ";".join((*LOOP, "aio/client.py:_read_loop"))
    (tmp_path / "qpu-ibm_nairobi-11.txt").write_text(f"{own} 3\n{nats} 1\n")
    (tmp_path / "qpu-ionq_aria-12.txt").write_text(f"{own} 1\n{nats} 3\n")
    (tmp_path / "parser-13.txt").write_text(f"{nats} 2\n")
    found = by_service(list(tmp_path.glob("*.txt")))
    assert found["qpu"]["own work"] == found["qpu"]["nats client"] == 0.5
    assert found["parser"]["nats client"] == 1.0


def test_a_file_that_is_not_a_samplers_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("a;b 3\nhello world\n")
    with pytest.raises(ValueError, match="line 2 is not a stack"):
        collapsed(path)

"""The soak's capacity steps (``benchmarks/chaos.py``): when a step kept up, the latencies
of an open-loop window, and where a task's time went."""

from benchmarks.chaos import Ends, Good, hop_seconds, step_held, window_latencies
from qubus.bus.connection import StoredEvent
from qubus.bus.messages import TaskCompleted, TaskIngested, TaskOptions, TaskRunning

INF = float("inf")


def test_a_step_holds_when_its_tasks_end_as_fast_as_they_are_due() -> None:
    assert step_held(due=1200, ended=1190, growth=10, p99=0.7, previous_p99=0.2)


def test_a_step_fails_when_fewer_tasks_end_than_are_due() -> None:
    assert not step_held(due=1200, ended=1100, growth=10, p99=0.5, previous_p99=0.4)


def test_a_step_fails_when_its_backlog_grows() -> None:
    assert not step_held(due=1200, ended=1200, growth=100, p99=0.5, previous_p99=0.4)


def test_a_step_fails_when_its_p99_more_than_doubles_past_the_floor() -> None:
    assert step_held(due=1200, ended=1200, growth=0, p99=1.6, previous_p99=0.8)
    assert not step_held(due=1200, ended=1200, growth=0, p99=1.7, previous_p99=0.8)


def test_a_step_with_a_task_not_ended_in_its_p99_fails() -> None:
    assert not step_held(due=1200, ended=1200, growth=0, p99=INF, previous_p99=None)


def test_the_first_step_needs_no_previous_p99() -> None:
    assert step_held(due=900, ended=900, growth=0, p99=5.0, previous_p99=None)


def test_window_latencies_count_unended_and_unaccepted_tasks_as_infinite() -> None:
    good = Good(client=None, submitters=1)  # type: ignore[arg-type]
    good.due = [10.0, 11.0, 12.0, 13.0, 30.0]  # the last is outside the window
    good.submitted = {"a.1": 10.0, "a.2": 11.0, "a.3": 12.0, "a.5": 30.0}  # a.4 never accepted
    ends = Ends()
    ends.at = {"a.1": 10.5, "a.2": 25.0, "a.5": 31.0}  # a.2 ended after `now`, a.3 not at all
    took = window_latencies(good, ends, start=10.0, stop=20.0, now=20.0)
    assert sorted(took) == [0.5, INF, INF, INF]


def test_a_qpu_run_is_timed_from_running_though_its_completed_started_with_it() -> None:
    def at(event, started: float, published: float) -> StoredEvent:
        return StoredEvent(event.subject(), event, "s", "s-1", started, published, 1, None)

    node = "ibm_nairobi"
    run = {"counts": {"0": 1}, "shots": 1, "seed": 1, "emulated_s": 0, "calibration_revision": "r"}
    run |= {"predicted_fidelity": 1, "measured_fidelity": 1}
    events = [
        at(
            TaskIngested(
                task_id="u.t", format="qasm2", text="", options=TaskOptions(shots=1), submitted_at=0
            ),
            10.5,
            10.6,
        ),
        at(TaskRunning(task_id="u.t", node=node, queue_wait_s=0), 11.0, 12.0),
        at(TaskCompleted(task_id="u.t", node=node, **run), 11.0, 12.5),
    ]
    hops = hop_seconds(events, due=10.0)
    assert hops["ingested"][0] == 0.5 and round(hops["ingested"][1], 6) == 0.1
    assert hops["completed"] == (0.0, 0.5)
    assert "running" not in hops  # its input, the allocation, is not among the events

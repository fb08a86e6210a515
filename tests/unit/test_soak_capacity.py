"""The soak's capacity steps (``benchmarks/chaos.py``): when a step kept up, and the latencies
of an open-loop window."""

from benchmarks.chaos import Ends, Good, step_held, window_latencies

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

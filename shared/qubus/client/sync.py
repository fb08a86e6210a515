"""The synchronous SDK, in the style of ``concurrent.futures`` and Qiskit's jobs::

    import qubus

    with qubus.connect() as q:
        job = q.submit("examples/ghz.qasm", shots=1000)
        print(job.result().counts)

``connect`` runs the asyncio ``Client`` on an event loop in a background thread; ``submit``
returns a ``Job`` at once and starts waiting for its task there, so many jobs run at the same
time and ``Job.result`` only collects. A circuit is a ``cirq.Circuit``, OpenQASM 2/3 or Cirq
JSON text, or the path of a file holding one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from qubus.bus.ids import sweep_point_id
from qubus.client.aio import Client, status_of, task_record
from qubus.client.files import format_of, read_circuit_file
from qubus.errors import QubusError

if TYPE_CHECKING:
    from qubus.bus.messages import SubmitReply

T = TypeVar("T")

WAIT_S = 24 * 3600.0
"""How long a job's background wait lasts; ``Job.result(timeout)`` bounds what a caller waits."""


@dataclass(frozen=True)
class Result:
    """A task's outcome, typed (``qubus result --json`` prints the same fields).

    Attributes:
        task_id: The task.
        status: ``done``, or how it ended otherwise (``rejected``, ``failed``, ``cancelled``).
        counts: Bit string → shots (the bit order of ``qubus.circuits.simulate``: keys in
            natural order, the leftmost character the first bit of the first key); None
            unless done.
        shots: Shots run (0 unless done).
        nodes: The QPU nodes that ran it (several for a split run, the lead first).
        predicted_fidelity: The predicted Hellinger fidelity to the ideal distribution.
        measured_fidelity: The measured one.
        ideal_counts: The ideal distribution as counts over as many shots.
        hyperscore: The chosen node's score.
        ebits: EPR pairs a split run consumed.
        error: ``{code, message, line, column}`` of a rejected or failed task.
        source: Where the circuit came from (a file name), if known.
        trace: One row per stage: event, service, instance, time, duration_ms.
    """

    task_id: str
    status: str
    counts: dict[str, int] | None
    shots: int
    nodes: list[str]
    predicted_fidelity: float | None
    measured_fidelity: float | None
    ideal_counts: dict[str, int] | None
    hyperscore: float | None
    ebits: int
    error: dict[str, Any] | None
    source: str | None
    trace: list[dict[str, Any]] = field(repr=False)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Result:
        """From a ``qubus.client.aio.task_record``."""
        counts = record["counts"]
        fields = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        return cls(**fields, shots=sum(counts.values()) if counts else 0, trace=record["stages"])


class TaskError(QubusError):
    """A job's task ended without counts (rejected, failed or cancelled); ``result`` holds how,
    and ``code`` is the task error's code (``task.cancelled`` for a cancellation)."""

    def __init__(self, result: Result) -> None:
        error = result.error or {"code": f"task.{result.status}", "message": result.status}
        super().__init__(
            f"task {result.task_id} {result.status}: {error['message']}", code=error["code"]
        )
        self.result = result


class Job:
    """One submitted task, waited for in the background (a ``concurrent.futures`` job).

    Attributes:
        task_id: The task's id (``qubus status ID`` and the other commands take it).
        source: Where its circuit came from, if a file.
    """

    def __init__(self, session: Session, task_id: str, source: str | None) -> None:
        self.task_id = task_id
        self.source = source
        self._session = session
        self._future = session._start(session._client.wait(task_id, timeout=WAIT_S))

    def __repr__(self) -> str:
        return f"<qubus.Job {self.task_id} {self.source or ''}>".replace(" >", ">")

    def done(self) -> bool:
        """The task has ended (whichever way)."""
        return self._future.done()

    def status(self) -> str:
        """``pending``, ``queued``, ``running``, ``done``, ``rejected``, ``failed`` or
        ``cancelled`` (asks the stack unless the task has ended)."""
        if self._future.done():
            return status_of(self._future.result())
        return status_of(self._session._call(self._session._client.events(self.task_id)))

    def result(self, timeout: float | None = None) -> Result:
        """The task's result, once it has ended.

        Args:
            timeout: Seconds to wait at most (None: until the task ends).

        Raises:
            TimeoutError: it has not ended within ``timeout``; it keeps running.
            TaskError: it ended without counts (rejected, failed or cancelled).
        """
        try:
            events = self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"task {self.task_id} did not finish within {timeout:g} s") from None
        result = Result.from_record(task_record(self.task_id, events))
        if result.status != "done":
            raise TaskError(result)
        return result

    def cancel(self) -> bool:
        """Cancel the task, stopping it if it is running (``Client.cancel``).

        Returns:
            True if it is cancelled; False if it had already ended.
        """
        return self._session._call(self._session._client.cancel(self.task_id))


class Sweep:
    """A submitted sweep (``Session.submit_sweep``), its points waited for in the background.

    Attributes:
        task_id: The sweep's own task id (``qubus status`` and ``cancel`` take it).
        task_ids: Each point's task id, ``<task_id>-<k>``, in the order of the parameters.
        source: Where its circuit came from, if a file.
    """

    def __init__(self, session: Session, task_id: str, points: int, source: str | None) -> None:
        self.task_id = task_id
        self.task_ids = [sweep_point_id(task_id, k) for k in range(points)]
        self.source = source
        self._session = session
        self._future = session._start(session._client.wait_sweep(task_id, points, timeout=WAIT_S))

    def __repr__(self) -> str:
        return f"<qubus.Sweep {self.task_id} of {len(self.task_ids)} points>"

    def done(self) -> bool:
        """The sweep, and so every point, has ended (whichever way)."""
        return self._future.done()

    def status(self) -> str:
        """The sweep's own status (``Job.status``): ``done`` once every point has run."""
        return status_of(self._session._call(self._session._client.events(self.task_id)))

    def results(self, timeout: float | None = None) -> list[Result]:
        """Every point's result, in the order of the parameters.

        Raises:
            TimeoutError: not every point has ended within ``timeout``; they keep running.
            TaskError: a point (or the whole sweep) ended without counts.
        """
        try:
            points = self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(
                f"sweep {self.task_id} did not finish within {timeout:g} s"
            ) from None
        results = [
            Result.from_record(task_record(task_id, events))
            for task_id, events in zip(self.task_ids, points, strict=True)
        ]
        for result in results:
            if result.status != "done":
                raise TaskError(result)
        return results

    def cancel(self) -> bool:
        """Cancel the whole sweep (``Job.cancel``): its QPU node skips it; a sweep already
        running runs to its end (its points' job is not watched as a single task's run is)."""
        return self._session._call(self._session._client.cancel(self.task_id))


class Session:
    """A connection to a qubus stack, for synchronous code; ``qubus.connect()`` opens one.

    Args:
        url: The NATS server (default: ``QUBUS_NATS_URL``, else the ``qubus up`` running on
            this machine).
        nkey: The user's nkey seed file for a secured server (default: ``QUBUS_NATS_NKEY``,
            else the seed of the user ``local`` of that ``qubus up``, if it is secured).
        user: The user to submit as (default: ``QUBUS_USER``, else the seed file's name).

    Raises:
        QubusError: ``nats.unconfigured`` (no URL anywhere), ``nats.unreachable``,
            ``auth.refused`` (``Client.connect_configured``).
    """

    def __init__(
        self, url: str | None = None, *, nkey: str | None = None, user: str | None = None
    ) -> None:
        _quiet_logs()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qubus", daemon=True)
        self._thread.start()
        try:
            self._client: Client = self._call(
                Client.connect_configured(url=url, nkey=nkey, user=user)
            )
        except BaseException:
            self._stop_loop()
            raise

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self,
        circuit: Any,
        *,
        shots: int = 1000,
        format: str | None = None,
        **options: Any,
    ) -> Job:
        """Submit one circuit; returns its ``Job`` at once.

        Args:
            circuit: A ``cirq.Circuit``; OpenQASM 2/3 or Cirq JSON text; or a file path
                (``str`` or ``Path``) of one.
            shots: Repetitions (1 to 100000).
            format: ``qasm2``, ``qasm3`` or ``cirq-json`` (default: from the file's suffix or
                the text).
            **options: Any other ``SubmitRequest`` field: ``priority``, ``node``, ``pilot``,
                ``noiseless``, ``fidelity_floor``, ``deadline_s``, ``split``, ``ideal_links``.

        Raises:
            QubusError: the circuit or an option was refused (``payload.invalid``, a file
                error, or the stack's own refusal).
        """
        reply, source = self._submit_request(circuit, shots=shots, format=format, **options)
        return Job(self, reply.task_id, source)

    def submit_sweep(
        self,
        circuit: Any,
        params: Sequence[Mapping[str, float]],
        *,
        shots: int = 1000,
        format: str | None = None,
        **options: Any,
    ) -> Sweep:
        """Submit a parameterised circuit with its parameter sets as one sweep; returns its
        ``Sweep`` at once. The circuit is parsed, checked, compiled and placed once; each
        point runs as its own task ``<sweep id>-<k>`` (``qubus.circuits.sweeps``).

        Args:
            circuit: A ``cirq.Circuit`` with ``sympy`` symbols, or its Cirq JSON (text or a
                file).
            params: One ``{parameter: value}`` per point, each naming every parameter.
            shots: Repetitions of each point.
            format: As for ``submit``.
            **options: As for ``submit`` (not ``split``).

        Raises:
            QubusError: as ``submit``.
        """
        reply, source = self._submit_request(
            circuit,
            shots=shots,
            format=format,
            sweep=[{name: float(value) for name, value in point.items()} for point in params],
            **options,
        )
        return Sweep(self, reply.task_id, len(params), source)

    def _submit_request(
        self, circuit: Any, *, shots: int, format: str | None, **options: Any
    ) -> tuple[SubmitReply, str | None]:
        """Build the ``SubmitRequest`` and submit it; its reply and the circuit's file."""
        from pydantic import ValidationError

        from qubus.bus.kvrecords import invalid
        from qubus.bus.messages import SubmitRequest

        text, fmt, source = _circuit_text(circuit)
        try:
            request = SubmitRequest(
                circuit=text, format=format or fmt, shots=shots, source=source, **options
            )
        except ValidationError as exc:
            raise invalid(exc, "submission", code="payload.invalid") from None
        return self._call(self._client.submit(request)), source

    def job(self, task_id: str) -> Job:
        """The ``Job`` of a task submitted earlier (by ``qubus submit``, say)."""
        return Job(self, task_id, None)

    def close(self) -> None:
        """Stop waiting for every job and close the connection."""
        if not self._loop.is_closed():
            self._stop_loop()

    def _start(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = self._start(coro)
        try:
            return future.result(timeout)
        except BaseException:  # Ctrl-C in the caller's thread: stop what it was waiting for
            future.cancel()
            raise

    def _stop_loop(self) -> None:
        """Cancel the jobs' waits, close the client (if connected) and stop the thread."""

        async def shutdown() -> None:
            waits = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            if hasattr(self, "_client"):
                await self._client.close()

        try:
            self._start(shutdown()).result(timeout=15)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


class SessionHolder:
    """An entry point built on a ``Session`` (``qubus.cirq.Sampler``,
    ``qubus.qiskit.QubusBackend``): it shares the one it is given or opens its own, which
    ``close`` then closes; a context manager."""

    _session: Session
    _own: bool

    def _hold(self, session: Session | None, url: str | None, nkey: str | None) -> None:
        self._own = session is None
        self._session = connect(url, nkey=nkey) if session is None else session

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the session if this object opened it."""
        if self._own:
            self._session.close()


def connect(url: str | None = None, *, nkey: str | None = None, user: str | None = None) -> Session:
    """A ``Session`` with the stack at ``url`` (default: ``QUBUS_NATS_URL``, else the running
    ``qubus up``), as the user of seed file ``nkey`` (default: ``QUBUS_NATS_NKEY``, else that
    ``qubus up``'s user ``local`` if it is secured); use it as a context manager."""
    return Session(url, nkey=nkey, user=user)


def _quiet_logs() -> None:
    """Only warnings from qubus's structlog loggers, unless the program configured structlog
    itself (unconfigured, structlog prints every debug line to stdout)."""
    import logging

    import structlog

    if not structlog.is_configured():
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _circuit_text(circuit: Any) -> tuple[str, str | None, str | None]:
    """``(text, format or None, source file or None)`` of what ``Session.submit`` accepts."""
    if type(circuit).__module__.startswith("cirq"):
        import cirq

        if isinstance(circuit, cirq.AbstractCircuit):
            return cirq.to_json(circuit), "cirq-json", None
    text = circuit.lstrip() if isinstance(circuit, str) else ""
    if isinstance(circuit, Path) or ("\n" not in text and not text.startswith(("OPENQASM", "{"))):
        return read_circuit_file(circuit), format_of(circuit), str(circuit)
    if isinstance(circuit, str):
        return circuit, None, None
    raise QubusError(
        f"cannot submit a {type(circuit).__name__}: give a cirq.Circuit, QASM or Cirq JSON "
        "text, or a file path",
        code="payload.invalid",
    )

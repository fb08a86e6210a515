"""The connection to NATS: one manager per process, the JetStream layout, typed publishing.

Everything a service needs from the bus besides consuming (``qubus.bus.consumer``) lives here:
connecting with logged reconnects and a health flag, creating the stream and KV buckets
idempotently, publishing task events with ``Nats-Msg-Id``/``traceparent`` headers, and reading a
task's events back from the stream, which is the task's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    DEFAULT_PREFIX,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from qubus.bus import codec
from qubus.bus.codec import M
from qubus.bus.ids import check_task_id, split_task_subject, task_subject
from qubus.bus.logs import LOG_SUBJECT_PREFIX, get_logger
from qubus.bus.messages import LinkStatus, Model, NodeStatus, TaskEvent, believed
from qubus.bus.natsclient import NatsClient, header_block, header_lines
from qubus.bus.tracing import TraceContext
from qubus.errors import InvalidPayload, QubusError, Retry

E = TypeVar("E", bound=TaskEvent)

STREAM = "QUBUS_TASKS"
LOG_STREAM = "QUBUS_LOGS"
LOG_STREAM_MAX_BYTES = 256 * 1024 * 1024
TASK_STREAM_MAX_BYTES = 8 * 1024**3
TASK_STREAM_MAX_MSGS = 20_000_000
"""The task stream's limits beside its age (``QUBUS_TASK_RETENTION_S``): past either, the
server refuses new events (``DiscardPolicy.NEW``: a submission is refused rather than an old
result silently dropped), which ``Bus.publish_event`` raises as ``stream.full``."""
STREAM_FULL = "stream.full"
_STORE_FAILED = 10077
"""JetStream's error code for a publish the stream refused to store (its description says
which limit: ``maximum messages exceeded``, ``maximum bytes exceeded``)."""
_WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code for a publish whose ``Nats-Expected-Last-Subject-Sequence`` did not
hold (``wrong last sequence: <n>``)."""
_NOT_LEADER = 10009
"""JetStream's error code for a request that reached a replica no longer leading its stream
(``JetStream cluster can not handle request``, status 500): a leader is being elected."""

_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.js.errors.NoStreamResponseError,
)


def bus_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says JetStream cannot answer for now (a server lost, a stream or bucket
    electing its leader), which a retry a few seconds later outlives, rather than a refusal.

    That is: no answer in time, nobody to answer, a connection being re-established, or an
    API error with status 503 (``JetStream system temporarily unavailable``: what a message or
    KV read gets while its stream has no leader) or ``_NOT_LEADER``; not a full stream's 503
    (``_STORE_FAILED``), which ``Bus.publish_event`` refuses as ``stream.full``.
    """
    if isinstance(exc, _TRANSIENT):
        return True
    err_code = getattr(exc, "err_code", None)  # nats-py's KV errors may not set it
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return err_code != _STORE_FAILED
    return isinstance(exc, nats.js.errors.APIError) and err_code == _NOT_LEADER


TASK_SUBJECTS = "qubus.task.>"
SUBMIT_SUBJECT = "qubus.submit"
EPR_SUBJECT = "qubus.link.epr"
RESERVE_SUBJECT = "qubus.link.reserve"
READY_SUBJECT = "qubus.svc.ready"

BUCKET_NODES = "qubus_nodes"
BUCKET_WEIGHTS = "qubus_weights"
BUCKET_IDEMPOTENCY = "qubus_idempotency"
BUCKET_FEATURES = "qubus_features"
BUCKET_CALIBRATION = "qubus_calibration"
BUCKET_PILOTS = "qubus_pilots"
BUCKET_LINKS = "qubus_links"
BUCKET_CONSUMERS = "qubus_consumers"
BUCKET_QUOTA = "qubus_quota"

_BUCKETS = (
    KeyValueConfig(bucket=BUCKET_NODES, history=1, description="QPU and link calibration/status"),
    KeyValueConfig(bucket=BUCKET_WEIGHTS, history=16, description="score weights by revision"),
    KeyValueConfig(bucket=BUCKET_IDEMPOTENCY, history=1, description="key -> task id"),
    KeyValueConfig(bucket=BUCKET_FEATURES, history=1, description="fingerprint -> feature vector"),
    KeyValueConfig(
        bucket=BUCKET_CALIBRATION, history=1, description="predicted vs measured fidelity"
    ),
    KeyValueConfig(bucket=BUCKET_PILOTS, history=4, description="pilot descriptions"),
    KeyValueConfig(
        bucket=BUCKET_CONSUMERS, history=1, description="each stage's acknowledgement floor"
    ),
    KeyValueConfig(bucket=BUCKET_LINKS, history=1, description="EPR reservations by task"),
    KeyValueConfig(bucket=BUCKET_QUOTA, history=1, description="each user's tasks in flight"),
)
BUCKETS = tuple(config.bucket for config in _BUCKETS)
PER_TASK_BUCKETS = frozenset({BUCKET_IDEMPOTENCY, BUCKET_FEATURES, BUCKET_LINKS})
"""Buckets with an entry per task or per distinct circuit: kept as long as the task stream keeps
a task (their TTL is its ``max_age``, ``QUBUS_TASK_RETENTION_S``), so that they do not grow
without bound either."""

H_TYPE = "Qubus-Type"
H_SERVICE = "Qubus-Service"
H_INSTANCE = "Qubus-Instance"
H_STARTED = "Qubus-Started"
H_MSG_ID = "Nats-Msg-Id"
H_TRACEPARENT = "traceparent"
H_CONTENT_TYPE = "Content-Type"
H_SUBJECT = "Qubus-Subject"
H_TTL = "Nats-TTL"
H_EXPECTED_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
H_EXPECTED_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"


class NotLatest(Exception):
    """A conditional publish (``Bus.publish_event``'s ``after``) was refused: another message
    has been stored on its subject since."""


log = get_logger()


class StoredMessage(NamedTuple):
    """The raw last message on a subject of the task stream (``Bus.last_message``)."""

    data: bytes
    sequence: int
    subject: str


@dataclass(frozen=True)
class StoredEvent:
    """One task event read back from the stream."""

    subject: str
    event: TaskEvent
    service: str
    instance: str
    started: float | None
    published: float
    sequence: int
    trace_id: str | None


class Bus:
    """A process's connection to NATS and JetStream.

    Args:
        url: The NATS server URL.
        service: This process's service name (recorded on every event it publishes).
        instance: This process's instance name.
        nkey: The nkey seed file to authenticate with (``qubus.bus.auth``), if any.
        user: The NATS user that seed belongs to; replies to this process's requests arrive
            on its own inbox prefix ``_INBOX_<user>``, which only it may subscribe to.
    """

    def __init__(
        self, url: str, *, service: str, instance: str, nkey: str = "", user: str = ""
    ) -> None:
        self.url = url
        self.nkey = nkey
        self.user = user
        self.service = service
        self.instance = instance
        self.healthy = False
        self.denied: str | None = None
        """The server's last refusal of this connection's publish or subscribe, if any."""
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._kv: dict[str, KeyValue] = {}
        self._closing = False
        self._direct: bool | None = None  # whether the task stream answers direct gets
        self._trace_ttl = ""  # the Nats-TTL of an expiring event (ensure_topology), or none
        self._timeout = 10.0
        self._event_headers = header_lines(
            {H_SERVICE: service, H_INSTANCE: instance, H_CONTENT_TYPE: codec.MSGPACK}
        )
        """The header lines every event this connection publishes carries."""

    @property
    def nc(self) -> NatsClient:
        if self._nc is None:
            raise RuntimeError("Bus.connect() has not been called")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("Bus.connect() has not been called")
        return self._js

    async def connect(self, *, timeout: float = 10.0, max_reconnect_attempts: int = -1) -> None:
        """Connect, with every connection state change logged and reflected in ``healthy``.

        Args:
            timeout: Seconds to wait for the server to answer one connection attempt.
            max_reconnect_attempts: Attempts (every 0.5 s) to reach the server, at the start
                and after a lost connection, before the connection closes; -1 never stops
                (services); a command line gives up after a few.
        """

        async def disconnected() -> None:
            self.healthy = False
            if not self._closing:
                log.warning("nats.disconnected", url=self.url)

        async def reconnected() -> None:
            self.healthy = True
            log.info("nats.reconnected", url=self.url)

        async def closed() -> None:
            self.healthy = False
            log.debug("nats.closed")

        async def error(exc: Exception) -> None:
            if "permissions violation" in str(exc).lower():
                self.denied = str(exc).removeprefix("nats: ")
            log.warning("nats.error", error=repr(exc))

        nc = NatsClient()
        await nc.connect(
            self.url,
            name=f"qubus-{self.service}-{self.instance}",
            connect_timeout=timeout,
            max_reconnect_attempts=max_reconnect_attempts,
            reconnect_time_wait=0.5,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            closed_cb=closed,
            error_cb=error,
            nkeys_seed=self.nkey or None,
            inbox_prefix=inbox_prefix(self.user) if self.user else "_INBOX",
        )
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout)
        self._timeout = timeout
        self.healthy = True

    async def ensure_topology(
        self,
        *,
        duplicate_window_s: float = 600.0,
        retention_s: int = 7 * 24 * 3600,
        replicas: int = 1,
        update: bool = True,
        trace_ttl_s: int = 0,
    ) -> None:
        """Create the streams and KV buckets, or bring them to this configuration.

        Every service runs this at start; running it again, from any number of processes at
        once, changes nothing.

        Args:
            duplicate_window_s: The task stream's de-duplication window.
            retention_s: How long the task stream keeps an event (``max_age``), and the
                ``PER_TASK_BUCKETS`` their entries (their TTL).
            trace_ttl_s: How long the events this process publishes that expire
                (``TaskEvent.EXPIRES``) are stored: their per-message TTL (``Nats-TTL``),
                if the task stream allows them (a stream left as an earlier version made it
                does not: then they stay as long as the rest); 0: no TTL.
            replicas: Copies of every stream and bucket kept in a JetStream cluster (durable
                consumers inherit their stream's); 1 on a single server.
            update: Bring existing streams to this configuration; False (a service on a
                secured bus, which may create streams but never change them: the operator
                does, ``qubus up`` at start) leaves a differing one as it is and logs
                ``topology.differs``.
        """
        config = StreamConfig(
            name=STREAM,
            subjects=[TASK_SUBJECTS],
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=duplicate_window_s,
            max_age=retention_s,
            max_bytes=TASK_STREAM_MAX_BYTES,
            max_msgs=TASK_STREAM_MAX_MSGS,
            discard=DiscardPolicy.NEW,
            # Reads by subject without the JetStream API (``last_stored``) on one server; in a
            # cluster every replica would answer them, a follower possibly before it has
            # stored an event its leader acknowledged, and the stages' joins need that event.
            allow_direct=replicas == 1,
            allow_msg_ttl=True,
            description="qubus task events: every stage's output, the task's trace",
        )
        logs = StreamConfig(
            name=LOG_STREAM,
            subjects=[f"{LOG_SUBJECT_PREFIX}.>"],
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=24 * 3600,
            max_bytes=LOG_STREAM_MAX_BYTES,
            description="every service's log lines, as published on qubus.log.<service>",
        )
        for stream in (config, logs):
            try:
                await self.js.add_stream(stream)
            except nats.js.errors.BadRequestError:
                if not update:
                    log.warning("topology.differs", stream=stream.name)
                    continue
                await self.js.update_stream(stream)
        if trace_ttl_s and (await self.js.stream_info(STREAM)).config.allow_msg_ttl:
            self._trace_ttl = str(trace_ttl_s)
        for bucket in _BUCKETS:
            ttl = retention_s if bucket.bucket in PER_TASK_BUCKETS else None
            try:
                self._kv[bucket.bucket] = await self.js.create_key_value(
                    replace(bucket, replicas=replicas, direct=replicas == 1, ttl=ttl)
                )
            except nats.js.errors.BadRequestError:
                self._kv[bucket.bucket] = await self.js.key_value(bucket.bucket)
                stream = (await self.js.stream_info(f"KV_{bucket.bucket}")).config
                wanted = (replicas, ttl or 0.0)
                if (stream.num_replicas, stream.max_age or 0.0) == wanted:
                    continue
                if not update:
                    log.warning("topology.differs", stream=stream.name)
                    continue
                stream.num_replicas, stream.max_age = replicas, ttl or 0.0
                if ttl:  # as ``create_key_value`` sets it: never longer than the TTL
                    stream.duplicate_window = min(stream.duplicate_window or ttl, ttl)
                await self.js.update_stream(stream)

    async def kv(self, bucket: str) -> KeyValue:
        if bucket not in self._kv:
            self._kv[bucket] = await self.js.key_value(bucket)
        return self._kv[bucket]

    async def publish_event(
        self,
        event: TaskEvent,
        *,
        trace: TraceContext,
        started: float | None = None,
        msg_id: str | None = None,
        after: tuple[str, int] | None = None,
    ) -> bool:
        """Publish a task event to the stream and wait for the server's acknowledgement.

        Args:
            msg_id: The de-duplication id, if not the event's own (``msg_id()``).
            after: A subject (wildcards allowed) and the stream sequence of its last message:
                the event is stored only while that is still its last message, checked by
                the server as it stores the event (``NotLatest`` otherwise).

        Returns:
            False if JetStream recognised it as a duplicate of an event already stored (a
            redelivered or re-run stage), True otherwise.

        Raises:
            QubusError: ``stream.full`` when the task stream is at one of its limits
                (``TASK_STREAM_MAX_BYTES``, ``TASK_STREAM_MAX_MSGS``) and refuses new events:
                ingestion refuses the submission with it; a stage's message stays
                unacknowledged and is delivered again later.
            NotLatest: ``after`` no longer holds.
        """
        headers = {
            H_TYPE: event.TYPE,
            H_MSG_ID: msg_id or event.msg_id(),
            H_TRACEPARENT: trace.child().traceparent,
        }
        if started is not None:
            headers[H_STARTED] = f"{started:.6f}"
        if event.EXPIRES and self._trace_ttl:
            headers[H_TTL] = self._trace_ttl
        if after is not None:
            headers[H_EXPECTED_SUBJECT], headers[H_EXPECTED_SEQUENCE] = after[0], str(after[1])
        block = header_block(header_lines(headers) + self._event_headers)
        try:
            ack = await self.js.publish(event.subject(), codec.encode(event), headers=block)
        except nats.js.errors.APIError as exc:
            if after is not None and exc.err_code == _WRONG_LAST_SEQUENCE:
                raise NotLatest(exc.description) from None
            if exc.err_code != _STORE_FAILED or "exceeded" not in (exc.description or ""):
                raise
            raise QubusError(
                f"the task stream is full ({exc.description}): no new task or event can be "
                "stored until old tasks age out or an operator raises the stream's limits",
                code=STREAM_FULL,
            ) from None
        return not ack.duplicate

    async def last_event(self, task_id: str, cls: type[E]) -> E | None:
        """The stored event ``cls`` of a task (the last, on any node for a ``NodeEvent``), or
        None if that stage has not published yet."""
        stored = await self.last_stored(task_id, cls)
        return None if stored is None else stored[0]

    async def last_stored(self, task_id: str, cls: type[E]) -> tuple[E, int] | None:
        """``last_event`` with the event's stream sequence."""
        stored = await self.last_message(cls.subjects(check_task_id(task_id)))
        return None if stored is None else (codec.decode(stored.data, cls), stored.sequence)

    async def last_message(self, subject: str) -> StoredMessage | None:
        """The payload, stream sequence and subject of the last message of the task stream on
        ``subject`` (wildcards allowed), or None if there is none.

        A direct get where the stream allows them (one server): the raw message, not a JSON
        API reply with the payload in base64, and no API audit advisory; an API get
        otherwise."""
        if self._direct is None:
            self._direct = bool((await self.js.stream_info(STREAM)).config.allow_direct)
        if self._direct:
            request = json.dumps({"last_by_subj": subject}).encode()
            try:
                reply = await self.nc.request(
                    f"{DEFAULT_PREFIX}.DIRECT.GET.{STREAM}", request, timeout=self._timeout
                )
            except nats.errors.NoRespondersError:  # direct gets switched off since
                self._direct = False
            else:
                status = (reply.headers or {}).get("Status")
                if status == "404":
                    return None
                if status:
                    raise nats.js.errors.APIError.from_msg(reply)
                headers = reply.headers
                return StoredMessage(
                    reply.data, int(headers["Nats-Sequence"]), headers["Nats-Subject"]
                )
        try:
            raw = await self.js.get_last_msg(STREAM, subject)
        except nats.js.errors.NotFoundError:
            return None
        return StoredMessage(raw.data, raw.seq, raw.subject)

    async def task_events(self, task_id: str, *, timeout: float = 5.0) -> list[StoredEvent]:
        """Every event of a task in stream order (the task's trace), as believed
        (``believed_events``)."""
        messages = await self.stored_messages(STREAM, task_subject(task_id, ">"), timeout=timeout)
        return believed_events([e for e in map(stored_event, messages) if e is not None])

    async def stored_messages(
        self, stream: str, subject: str, *, timeout: float = 5.0
    ) -> list[nats.aio.msg.Msg]:
        """Every message of ``stream`` on ``subject`` (wildcards allowed) stored when called, in
        stream order.

        Counts them first and reads until that many have come and the server reports none
        pending: a KV watcher's end-of-values marker (``kv.keys``, ``kv.history``) can come
        before messages in flight (nats-io/nats.py#842) and miss them.
        """
        info = await self.js.stream_info(stream, subjects_filter=subject)
        stored_count = sum((info.state.subjects or {}).values())
        messages: list[nats.aio.msg.Msg] = []
        if stored_count == 0:
            return messages
        sub = await self.js.subscribe(
            subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL, stream=stream
        )
        try:
            while True:
                msg = await sub.next_msg(timeout=timeout)
                messages.append(msg)
                if len(messages) >= stored_count and msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        return messages

    async def node_statuses(self, *, max_age_s: float | None = None) -> dict[str, NodeStatus]:
        """The latest status of every QPU node in KV ``qubus_nodes``, read once.

        Services that need the fleet on every task follow it with a ``NodeDirectory`` instead.

        Args:
            max_age_s: Leave out nodes whose status is older than this (offline nodes).
        """
        statuses = {status.node: status for status in await self._latest("node.>", NodeStatus)}
        return _fresh(statuses, max_age_s)

    async def link_statuses(self) -> list[LinkStatus]:
        """The latest status of every link in KV ``qubus_nodes``, read once, by link key."""
        return await self._latest("link.>", LinkStatus)

    async def _latest(self, keys: str, cls: type[M]) -> list[M]:
        """The latest value of each key of KV ``qubus_nodes`` matching ``keys``, by key."""
        stream = f"KV_{BUCKET_NODES}"
        values = []
        for key in await self.kv_keys(BUCKET_NODES, keys):
            try:
                raw = await self.js.get_last_msg(stream, f"$KV.{BUCKET_NODES}.{key}")
            except nats.js.errors.NotFoundError:
                continue
            if raw.data:
                values.append(codec.decode(raw.data, cls))
        return values

    async def kv_values(self, bucket: str, keys: str = ">") -> list[tuple[int, bytes]]:
        """Every value KV ``bucket`` keeps for the keys matching ``keys`` (each key's history),
        as (revision, value), oldest first; delete and purge markers left out.

        Read from the bucket's stream (``stored_messages``), not through ``kv.history``,
        whose watcher's end-of-values marker can come before values in flight.
        """
        messages = await self.stored_messages(f"KV_{bucket}", f"$KV.{bucket}.{keys}")
        return [
            (msg.metadata.sequence.stream, msg.data)
            for msg in messages
            if msg.data and not (msg.headers or {}).get("KV-Operation")
        ]

    async def kv_keys(self, bucket: str, keys: str = ">") -> list[str]:
        """The keys of KV ``bucket`` matching ``keys`` that have a message stored, sorted
        (deleted ones included: their delete marker is stored).

        Read from the bucket's stream by subject, which (unlike a KV watcher's end-of-values
        marker, ``kv.keys``) cannot miss a value that is in flight (nats-io/nats.py#842).
        """
        prefix = f"$KV.{bucket}."
        info = await self.js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}{keys}")
        return sorted(subject.removeprefix(prefix) for subject in info.state.subjects or {})

    async def announce_ready(self, message: Model) -> None:
        await self.nc.publish(READY_SUBJECT, codec.encode(message), headers={H_TYPE: message.TYPE})
        await self.nc.flush()

    async def close(self) -> None:
        """Drain subscriptions (finishing in-flight callbacks) and close the connection."""
        self._closing = True
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except (TimeoutError, nats.errors.ConnectionClosedError):
                await self._nc.close()
        self.healthy = False


def _fresh(statuses: dict[str, NodeStatus], max_age_s: float | None) -> dict[str, NodeStatus]:
    if max_age_s is None:
        return dict(statuses)
    now = time.time()
    return {node: s for node, s in statuses.items() if now - s.updated_at <= max_age_s}


class KVFollower:
    """Follows keys of a KV bucket with a watcher, handing every entry to ``on_entry``.

    After a JetStream server is lost, a watcher's ephemeral consumer may be gone with it, and
    nats-py's own reset of an ordered consumer gives up after one failed attempt during the
    election. So the watcher is replaced when ``restart()`` asks for it: when the connection
    is made again, when a reader knows an entry should have arrived, or when it has been
    silent for ``idle_s`` (for buckets that are written regularly). A new watcher delivers the
    current values again.

    Args:
        bus: The connection.
        bucket: The bucket.
        on_entry: Called with every entry (puts, deletes and purges), in order.
        keys: The keys to follow (a subject pattern).
        idle_s: Replace a watcher silent this long; None: only on ``restart()``.
    """

    POLL_S = 1.0

    def __init__(
        self,
        bus: Bus,
        bucket: str,
        on_entry: Callable[[KeyValue.Entry], None],
        *,
        keys: str = ">",
        idle_s: float | None = None,
    ) -> None:
        self._bus = bus
        self._bucket = bucket
        self._kv: KeyValue | None = None
        self._on_entry = on_entry
        self._keys = keys
        self._idle_s = idle_s
        self._restart = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start watching (raises if the bucket cannot be watched now)."""
        self._stopping = False
        self._kv = await self._bus.kv(self._bucket)
        watcher = await self._kv.watch(self._keys)
        self._task = asyncio.create_task(self._follow(watcher))
        self._bus.nc.on_reconnected(self.restart)

    def restart(self) -> None:
        """Replace the watcher within ``POLL_S``."""
        self._restart.set()

    async def stop(self) -> None:
        """Stop watching. The flag ends the loop within ``POLL_S`` where the cancellation is
        lost: Python 3.11's ``asyncio.wait_for`` (under ``watcher.updates``) swallows a
        cancellation that arrives as an entry does."""
        self._bus.nc.off_reconnected(self.restart)
        if self._task is not None:
            self._stopping = True
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _follow(self, watcher: KeyValue.KeyWatcher | None) -> None:
        assert self._kv is not None
        silent_s = 0.0
        try:
            while not self._stopping:
                try:
                    if watcher is None:
                        watcher, silent_s = await self._kv.watch(self._keys), 0.0
                    entry = await watcher.updates(timeout=self.POLL_S)
                    silent_s = 0.0
                    if entry is not None:  # None: the end-of-current-values marker
                        self._on_entry(entry)
                    continue
                except nats.errors.TimeoutError:
                    silent_s += self.POLL_S
                except nats.errors.Error as exc:  # the watch cannot start yet
                    log.debug("kv.watch_failed", bucket=self._bucket, error=repr(exc))
                    await asyncio.sleep(self.POLL_S)
                    continue
                if self._restart.is_set() or (
                    self._idle_s is not None and silent_s >= self._idle_s
                ):
                    log.debug("kv.watch_restart", bucket=self._bucket, silent_s=silent_s)
                    self._restart.clear()
                    await _stop_watcher(watcher)
                    watcher = None
        finally:
            await _stop_watcher(watcher)


class NodeDirectory:
    """Follows KV ``qubus_nodes`` and keeps the latest status of every QPU node in hand.

    A service that consults the fleet for every task asks this instead of the server: the
    KV watcher pushes each new status as it is written. Nodes write within 0.25 s of a change
    and at least every 2 s, so a watcher silent for ``WATCH_IDLE_S`` is replaced
    (``KVFollower``).
    """

    WATCH_IDLE_S = 6.0

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._statuses: dict[str, NodeStatus] = {}
        self._follower: KVFollower | None = None

    async def start(self) -> None:
        self._follower = KVFollower(
            self._bus, BUCKET_NODES, self._apply, keys="node.>", idle_s=self.WATCH_IDLE_S
        )
        await self._follower.start()

    def _apply(self, entry: KeyValue.Entry) -> None:
        node = entry.key.removeprefix("node.")
        if entry.operation is None and entry.value:
            try:
                self._statuses[node] = codec.decode(entry.value, NodeStatus)
            except InvalidPayload:
                log.warning("nodes.invalid_status", key=entry.key)
        else:
            self._statuses.pop(node, None)

    def online(self, max_age_s: float) -> dict[str, NodeStatus]:
        """Nodes whose latest status is younger than ``max_age_s``."""
        return _fresh(self._statuses, max_age_s)

    def require_online(self, max_age_s: float) -> dict[str, NodeStatus]:
        """``online``, but no node online is a reason to retry the task later, not to judge it
        against an empty fleet (nodes starting, or the bus failing over).

        Raises:
            Retry: No node has a status younger than ``max_age_s``.
        """
        statuses = self.online(max_age_s)
        if not statuses:
            raise Retry(
                f"no QPU node has reported its status in the last {max_age_s:g} s", delay_s=2.0
            )
        return statuses

    async def stop(self) -> None:
        if self._follower is not None:
            await self._follower.stop()


async def _stop_watcher(watcher: KeyValue.KeyWatcher | None) -> None:
    if watcher is not None:
        with contextlib.suppress(nats.errors.Error):
            await watcher.stop()


def stored_event(msg: nats.aio.msg.Msg) -> StoredEvent | None:
    """A stream message as a typed ``StoredEvent``; None for a message that is not a valid
    task event (such a message never reached a stage: the stage that received it rejected it)
    or is not on its own subject (``TaskEvent.stored_on``: a node speaking for another).
    """
    headers = msg.headers or {}
    try:
        event = codec.decode_typed(msg.data, headers.get(H_TYPE, ""))
    except InvalidPayload:
        return None
    if not isinstance(event, TaskEvent) or not event.stored_on(msg.subject):
        return None
    started = headers.get(H_STARTED)
    trace = headers.get(H_TRACEPARENT, "")
    return StoredEvent(
        subject=msg.subject,
        event=event,
        service=headers.get(H_SERVICE, ""),
        instance=headers.get(H_INSTANCE, ""),
        started=float(started) if started else None,
        published=msg.metadata.timestamp.timestamp(),
        sequence=msg.metadata.sequence.stream,
        trace_id=trace[3:35] if trace else None,
    )


def believed_events(events: Sequence[StoredEvent]) -> list[StoredEvent]:
    """One task's events without a node's event for a task never allocated to that node
    (``qubus.bus.messages.believed``)."""
    tails = [split_task_subject(stored.subject)[1] for stored in events]
    return [stored for stored, keep in zip(events, believed(tails), strict=True) if keep]


def inbox_prefix(user: str) -> str:
    """Where replies to NATS user ``user``'s requests arrive (only it may subscribe there)."""
    return f"_INBOX_{user}"


def node_key(node: str) -> str:
    return f"node.{node}"


def link_key(a: str, b: str) -> str:
    return f"link.{a}.{b}"

"""nats-py's client with answers and pulled messages handed over where they arrive.

nats-py hands a message to whoever waits for it through its subscription's queue: a request's
answer (every JetStream publish, key-value operation, direct get and API call is a request) is
built into a message, queued, taken off by the subscription's task, whose callback resolves the
request's future, which ``asyncio.wait_for`` then returns; a pulled message is queued and taken
off by ``PullSubscription.fetch`` under ``wait_for``. Each request also draws a random token
(``secrets.token_hex``, a system call) and a NUID. ``NatsClient`` keeps the same subjects,
protocol and errors, but resolves the waiting future as the message is read, with a counter
for a token and a timer for the timeout: about a fifth less of the client's CPU a JetStream
publish or a direct get (``python benchmarks/natsrequests.py``, on the event loop the
services run, uvloop). ``Pull`` does the same for a durable pull consumer's messages.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import _V1_TOKEN_COUNT, Msg
from nats.js.api import DEFAULT_PREFIX, Header, StatusCode
from nats.protocol.command import hpub_cmd

_TEMPORARY = frozenset(
    code.value for code in (StatusCode.NO_MESSAGES, StatusCode.REQUEST_TIMEOUT, StatusCode.CONFLICT)
)
"""The statuses that end a pull request without a message (none came in time, the consumer
changed): what nats-py's ``fetch`` raises ``TimeoutError`` for."""


class NatsClient(Client):
    """A ``nats.aio.client.Client`` whose requests are answered in place (module docstring);
    connect it with ``await NatsClient().connect(...)``, as ``nats.connect`` does."""

    def __init__(self) -> None:
        super().__init__()
        self._routes: dict[int, Callable[[Msg], None]] = {}
        """Subscriptions whose messages are handed over as read, by subscription id."""
        self._reconnected: set[Callable[[], None]] = set()
        """What is called when the connection is made again (``on_reconnected``)."""
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._answers = ""  # the requests' inbox prefix
        self._tokens = itertools.count()

    async def connect(
        self,
        *args: Any,
        disconnected_cb: Callable[[], Awaitable[None]] | None = None,
        reconnected_cb: Callable[[], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        """nats-py's, except that when the connection is lost, every request waiting for its
        answer ends at once as a timeout (the answer would have come on the lost connection:
        it never comes), before ``disconnected_cb``; and when it is made again, what
        ``on_reconnected`` was given is called, before ``reconnected_cb``.

        A request that a stage makes as it settles a task (a JetStream publish, a key-value
        write) then fails at once, not at its timeout, and the task is redelivered: after a
        server was killed under load and started again, tasks in hand waited 9 s and more."""

        async def disconnected() -> None:
            for answer in list(self._waiting.values()):
                _expire(answer)
            if disconnected_cb is not None:
                await disconnected_cb()

        async def reconnected() -> None:
            for callback in list(self._reconnected):
                callback()
            if reconnected_cb is not None:
                await reconnected_cb()

        await super().connect(
            *args, disconnected_cb=disconnected, reconnected_cb=reconnected, **kwargs
        )

    def on_reconnected(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (it must not block) whenever the connection is made again: what
        the server held for this client may be gone (a server killed and started again knows
        nothing of a pull request or a watcher's consumer), until ``off_reconnected``."""
        self._reconnected.add(callback)

    def off_reconnected(self, callback: Callable[[], None]) -> None:
        self._reconnected.discard(callback)

    async def subscribe_direct(self, subject: str, route: Callable[[Msg], None]) -> int:
        """Subscribe to ``subject`` with each message given to ``route`` as it is read (it must
        not block); returns the subscription's id (``unsubscribe_direct``)."""
        sub = await self.subscribe(subject)
        self._routes[sub._id] = route
        return sub._id

    async def unsubscribe_direct(self, sid: int) -> None:
        self._routes.pop(sid, None)
        sub = self._subs.get(sid)
        if sub is not None:
            await sub.unsubscribe()

    async def _init_request_sub(self) -> None:
        """Subscribe to the requests' wildcard inbox (``<inbox prefix>.<nuid>.*``)."""
        prefix = self._inbox_prefix[:]
        prefix.extend(b".")
        prefix.extend(self._nuid.next())
        prefix.extend(b".")
        self._answers = prefix.decode()
        await self.subscribe_direct(self._answers + "*", self._answered)
        self._resp_sub_prefix = prefix  # nats-py's: cleared when the connection closes

    def _answered(self, msg: Msg) -> None:
        answer = self._waiting.pop(msg.subject, None)
        if answer is not None and not answer.done():  # else it came after its request gave up
            answer.set_result(msg)

    async def _request_new_style(
        self,
        subject: str,
        payload: bytes,
        timeout: float | None = 1,
        headers: dict[str, str] | None = None,
    ) -> Msg:
        if self.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        if not self._resp_sub_prefix:
            await self._init_request_sub()
        inbox = f"{self._answers}{next(self._tokens)}"
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Msg] = loop.create_future()
        self._waiting[inbox] = answer
        timer = None if timeout is None else loop.call_later(timeout, _expire, answer)
        try:
            await self.publish(subject, payload, reply=inbox, headers=headers)
            return await answer
        finally:
            if timer is not None:
                timer.cancel()
            self._waiting.pop(inbox, None)

    async def _send_publish(
        self,
        subject: str,
        reply: str,
        payload: bytes,
        payload_size: int,
        headers: Mapping[str, str] | bytes | None,
    ) -> None:
        """nats-py's, which also takes the headers as a ready block (``header_block``), sent
        as it is: nats-py checks and encodes every name and value of a dict anew for each
        message."""
        if not isinstance(headers, bytes):
            await super()._send_publish(subject, reply, payload, payload_size, headers)
            return
        if not subject:
            raise nats.errors.BadSubjectError
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(hpub_cmd(subject, reply, headers, payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        """nats-py's, which reads every message's headers: the same names and values, kept and
        skipped alike (a name not ASCII or with white space in it is skipped), but whether a
        name holds white space is one ``str.split``, where nats-py looks at each character in
        a generator (a task event's seven headers: 6.6–7.4 → 3.3–3.5 µs)."""
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue
            if key and key.split() != [key]:  # white space in it (``str.split`` splits on it)
                continue
            out[key] = value.strip().decode("utf-8", "replace")
        return out

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        route = self._routes.get(sid)
        if route is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        parsed = await self._process_headers(headers)
        route(self._build_message(sid, subject, reply, data, parsed))


class Pull:
    """One message at a time from a JetStream durable pull consumer, as nats-py's
    ``PullSubscription.fetch(1)`` gets it (the same pull request, statuses and errors), handed
    over as it is read (``NatsClient``).

    A pull has at most one request out: it asks again only once the server has answered (a
    message, or a status that ends the request), or ``ANSWER_GRACE_S`` past the request's end.
    A second request would bring a message while the worker is busy with the first's, and
    that message would wait in its hands, while other workers are idle. The server ends a
    request a little after the client's clock says it should (it reads it later than it was
    sent): when the client asked again at its own deadline, every idle worker came to hold
    two requests, and in about one round in eleven of ``benchmarks/lanes.py --heavy 4`` a
    small task waited 1.9–6.9 s in the sandbox behind a heavy simulation (sessions 31, 32).

    An answer that comes with nobody waiting (after ``ack_next``, or a lost request's) is
    kept for the next ``next``. ``ack_next`` acknowledges a message and asks for the next one
    in the same message.
    """

    def __init__(self, client: NatsClient, stream: str, durable: str) -> None:
        self._client = client
        self._subject = f"{DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = ""
        self._sid = -1
        self._waiting: asyncio.Future[Msg] | None = None
        self._early: collections.deque[Msg] = collections.deque()
        self._asked: float | None = None
        """When the request out ends on the server (event loop time), until it is answered."""

    async def start(self) -> None:
        self._inbox = self._client.new_inbox()
        self._sid = await self._client.subscribe_direct(self._inbox, self._arrived)
        self._client.on_reconnected(self._lost)

    async def stop(self) -> None:
        self._client.off_reconnected(self._lost)
        await self._client.unsubscribe_direct(self._sid)

    def _arrived(self, msg: Msg) -> None:
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(msg)
            return
        self._early.append(msg)
        if _status(msg) != StatusCode.CONTROL_MESSAGE.value:
            self._asked = None  # the request out is answered: ``next`` finds the answer here

    def _lost(self) -> None:
        """The connection was made again: a request out may be gone with the server (a
        restarted one knows nothing of it), so the worker waiting for its answer stops
        waiting and asks again now, not ``ANSWER_GRACE_S`` past the request's end."""
        self._asked = None
        if self._waiting is not None:
            _expire(self._waiting)

    async def ack_next(self, msg: Msg, timeout: float) -> None:
        """Acknowledge ``msg`` (a message this pull got) and ask for the next one in the same
        message (JetStream's ``+NXT``, with the request ``next`` sends): the following
        ``next(timeout)`` waits for its answer instead of sending a request of its own.

        While a request is out or an answer is kept (a late one), the acknowledgement asks
        for nothing: ``next`` takes that one first, and a pull never holds more messages
        than it is handed (a kept message's acknowledgement time runs out unseen)."""
        if self._asked is not None or self._early:
            await msg.ack()
            return
        self._asked = asyncio.get_running_loop().time() + timeout  # before any answer
        try:
            await self._client.publish(msg.reply, b"+NXT " + _request(timeout), reply=self._inbox)
        except BaseException:
            self._asked = None
            raise
        msg._ackd = True  # as ``Msg.ack`` marks it: a later ack or ``in_progress`` is refused

    async def next(self, timeout: float) -> Msg:
        """The consumer's next message, asked for with a pull request the server holds for
        ``timeout`` seconds, unless one is out already (``ack_next``'s, or one an earlier call
        stopped waiting for): then its answer.

        Raises:
            nats.errors.TimeoutError: None came in time (or the server ended the request).
            nats.js.errors.APIError: The server refused it (``ServiceUnavailableError``: the
                consumer is gone).
        """
        while self._early:
            msg = self._early.popleft()
            if _status(msg) is None:  # a status ended its request: nothing for the worker
                return msg
        loop = asyncio.get_running_loop()
        if self._asked is None:
            self._asked = loop.time() + timeout
            try:
                await self._client.publish(self._subject, _request(timeout), reply=self._inbox)
            except BaseException:
                self._asked = None
                raise
        while True:
            self._waiting = loop.create_future()
            # Past the server's end of the request and the grace, it is taken as lost.
            timer = loop.call_at(self._asked + ANSWER_GRACE_S, _expire, self._waiting)
            try:
                msg = await self._waiting
            except nats.errors.TimeoutError:
                self._asked = None
                raise
            finally:
                timer.cancel()
                self._waiting = None
            status = _status(msg)
            if status == StatusCode.CONTROL_MESSAGE.value:  # a heartbeat: the request goes on
                continue
            self._asked = None
            if status is None:
                return msg
            if status in _TEMPORARY:
                raise nats.errors.TimeoutError
            nats.js.errors.APIError.from_msg(msg)


class Delivery(NamedTuple):
    """What a JetStream message's reply subject says of its delivery: the fields of nats-py's
    ``Msg.metadata`` a stage reads for every message, without its dataclasses and
    ``datetime`` (``delivery``)."""

    delivered: int
    """Times the message has been delivered, this one included."""
    stream_sequence: int
    pending: int
    """The consumer's messages not yet delivered behind this one."""
    timestamp_s: float
    """When the message was stored (seconds since the epoch)."""


def delivery(msg: Msg) -> Delivery:
    """``msg``'s ``Delivery``, read from its reply subject as nats-py reads ``Msg.metadata``.

    Raises:
        nats.errors.NotJSMessageError: The reply subject is not a JetStream acknowledgement's.
    """
    tokens = Msg.Metadata._get_metadata_fields(msg.reply)
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sequence>.<consumer's>.<ns>.<pending>
    if len(tokens) == _V1_TOKEN_COUNT:
        delivered, sequence, stamp, pending = tokens[4], tokens[5], tokens[7], tokens[8]
    else:  # with the domain and the account's hash after $JS.ACK
        delivered, sequence = tokens[Msg.Ack.NumDelivered], tokens[Msg.Ack.StreamSeq]
        stamp, pending = tokens[Msg.Ack.Timestamp], tokens[Msg.Ack.NumPending]
    return Delivery(int(delivered), int(sequence), int(pending), int(stamp) / 1e9)


def header_lines(headers: Mapping[str, str]) -> str:
    """``headers`` as the lines of a header block (``Name: value`` and CRLF each).

    Raises:
        ValueError: A name or value holds a line break, which would end its line early.
    """
    text = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        raise ValueError(f"a header name or value holds a line break: {headers!r}")
    return text


def header_block(lines: str) -> bytes:
    """The header block of a message with these ``header_lines``, which ``NatsClient``'s
    publishes and requests take for their ``headers``."""
    return b"NATS/1.0\r\n" + lines.encode() + b"\r\n"


ANSWER_GRACE_S = 2.0
"""How long past the end of its pull request (by the client's clock) a ``Pull`` waits for the
server's answer before it takes the request as lost and may send another: the server counts a
request's time from when it reads it, and a busy stack's server may answer late."""


def _request(timeout: float) -> bytes:
    """A pull request as nats-py's ``fetch(1)`` sends it, held on the server for ``timeout``
    seconds (nats-py asks for 0.1 ms less, so that the server answers before the client gives
    up; a ``Pull`` waits ``ANSWER_GRACE_S`` longer instead)."""
    return b'{"batch":1,"expires":%d}' % int(timeout * 1_000_000_000)


def _status(msg: Msg) -> str | None:
    return None if msg.headers is None else msg.headers.get(Header.STATUS)


def _expire(waiting: asyncio.Future[Msg]) -> None:
    if not waiting.done():
        waiting.set_exception(nats.errors.TimeoutError())

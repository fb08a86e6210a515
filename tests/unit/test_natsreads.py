"""``NatsClient._parse_header_lines`` and ``delivery`` read what nats-py reads, as it does."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from qubus.bus.natsclient import NatsClient, delivery, header_block, header_lines

BLOCKS = [
    header_block(
        header_lines(
            {
                "Qubus-Type": "task.parsed",
                "traceparent": "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01",
                "Nats-Msg-Id": "t.00000000001abcdef.parsed",
            }
        )
    )[len(b"NATS/1.0\r\n") :],
    b"Name:Value\r\nOther:\tspaced \r\n\r\n",
    b"a b: skipped\r\nkept: yes\r\n",
    b"x\x1cy: skipped, a separator is white space\r\n",
    b"\x1cname: skipped, a separator that bytes.strip() leaves\r\n",
    b"name\x1f: skipped too\r\n",
    b"\xff: skipped, not ASCII\r\n",
    b"value: \xff replaced\r\n",
    b": empty name\r\n",
    b"no colon here\r\n",
    b"twice: 1\r\ntwice: 2\r\n",
    b"colon: a: b\r\n",
    b"",
]


@pytest.mark.parametrize("raw", BLOCKS)
def test_headers_read_as_nats_py_reads_them(raw: bytes) -> None:
    assert NatsClient._parse_header_lines(raw) == Client._parse_header_lines(raw)


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.qubus_tasks.logic.1.123456.123450.1796552117081231400.3",
        "$JS.ACK.qubus_tasks.qpu-ibm_nairobi.4.7.2.1796552117000000000.0",
        "$JS.ACK.hub.ACCHASH.qubus_tasks.parser.2.99.98.1796552117081231400.12.r4nd0m",
        "$JS.ACK._.ACCHASH.qubus_tasks.parser.1.5.5.1796552117081231400.0",
    ],
)
def test_a_delivery_reads_the_reply_as_nats_py_does(reply: str) -> None:
    msg = Msg(None, subject="qubus.task.a.b.parsed", reply=reply)
    got, metadata = delivery(msg), msg.metadata
    assert got.delivered == metadata.num_delivered
    assert got.stream_sequence == metadata.sequence.stream
    assert got.pending == metadata.num_pending
    assert got.timestamp_s == pytest.approx(metadata.timestamp.timestamp(), abs=1e-6)


def test_a_reply_not_from_jetstream_is_refused() -> None:
    with pytest.raises(NotJSMessageError):
        delivery(Msg(None, subject="s", reply="_INBOX.abc"))

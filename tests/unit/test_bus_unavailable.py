"""Which bus errors are transient (answered ``bus.unavailable`` and retried) and which are not.

The API errors are built the way nats-py builds them, from the JSON error a nats-server sends
(codes and descriptions from nats-server's ``server/errors.json``).
"""

from __future__ import annotations

import nats.errors
import nats.js.errors
import pytest

from qubus.bus.connection import bus_unavailable


def api_error(code: int, err_code: int, description: str) -> nats.js.errors.APIError:
    """The exception nats-py raises for a JetStream API reply with this error."""
    try:
        nats.js.errors.APIError.from_error(
            {"code": code, "err_code": err_code, "description": description}
        )
    except nats.js.errors.APIError as exc:
        return exc
    raise AssertionError("from_error always raises")


@pytest.mark.parametrize(
    "exc",
    [
        # a message or KV read while its stream has no leader (jsMsgGetRequest: the group
        # is leaderless): ingestion's look-up of a re-sent submission's stored event
        api_error(503, 10008, "JetStream system temporarily unavailable"),
        api_error(500, 10009, "JetStream cluster can not handle request"),
        nats.js.errors.NoStreamResponseError(),  # a publish nobody stored
        nats.errors.TimeoutError(),  # no answer in time
        nats.errors.NoRespondersError(),  # a JetStream API request nobody serves
        nats.errors.ConnectionReconnectingError(),
        nats.errors.UnexpectedEOF(),
    ],
    ids=repr,
)
def test_what_an_election_or_a_lost_server_raises_is_transient(exc):
    assert bus_unavailable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        # the task stream at its limits: refused as stream.full, never retried
        api_error(503, 10077, "maximum messages exceeded"),
        api_error(404, 10037, "no message found"),
        api_error(400, 10071, "wrong last sequence: 7"),
        nats.js.errors.KeyWrongLastSequenceError("wrong last sequence: 7"),
        nats.js.errors.KeyNotFoundError(),
        nats.errors.ConnectionClosedError(),  # closed for good after its reconnects
        ValueError("a bug"),
    ],
    ids=repr,
)
def test_refusals_and_bugs_are_not(exc):
    assert not bus_unavailable(exc)

"""Encoding of wire types: msgpack bodies, JSON accepted at the public ingress."""

from __future__ import annotations

import json
from typing import TypeVar

import msgpack
from pydantic import ValidationError

from qubus.bus.messages import TYPES, Model
from qubus.errors import InvalidPayload

MSGPACK = "application/msgpack"
JSON = "application/json"

M = TypeVar("M", bound=Model)


def encode(message: Model) -> bytes:
    """Encode a wire type as msgpack."""
    return msgpack.packb(message.model_dump(mode="json"), use_bin_type=True)


def encode_json(message: Model) -> bytes:
    return message.model_dump_json().encode()


def decode(data: bytes, cls: type[M], *, content_type: str | None = None) -> M:
    """Decode and validate ``data`` as ``cls``.

    Args:
        data: The message body.
        cls: The expected wire type.
        content_type: ``application/json`` for JSON bodies; anything else means msgpack.

    Raises:
        InvalidPayload: the body is not msgpack/JSON (``payload.undecodable``), is nested
            too deeply (``payload.too_deep``), or does not validate as ``cls``
            (``payload.invalid``; the message lists the offending fields).
    """
    try:
        raw = json.loads(data) if content_type == JSON else msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        kind = "JSON" if content_type == JSON else "msgpack"
        raise InvalidPayload(
            f"body is not valid {kind}: {exc}", code="payload.undecodable"
        ) from exc
    except RecursionError:  # JSON nested deeper than the interpreter's stack
        raise InvalidPayload(
            "body is nested too deeply to decode", code="payload.too_deep"
        ) from None
    if not isinstance(raw, dict):
        raise InvalidPayload(
            f"body must be a map/object, got {type(raw).__name__}", code="payload.not_a_map"
        )
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<body>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidPayload(f"invalid {cls.TYPE}: {problems}", code="payload.invalid") from exc


def decode_typed(data: bytes, type_name: str) -> Model:
    """Decode a message whose type is named by its ``Qubus-Type`` header."""
    try:
        cls = TYPES[type_name]
    except KeyError:
        raise InvalidPayload(
            f"unknown message type {type_name!r}", code="payload.unknown_type"
        ) from None
    return decode(data, cls)

"""Decoders: key or value bytes -> the template inputs ``key`` and ``value``.

``json`` (UTF-8 JSON text), ``text`` (UTF-8), ``bytes`` (base64 text), and through a
Confluent-compatible Schema Registry ``avro``, ``json_schema`` (confluent-kafka's own
deserializers, writer schema by id) and ``protobuf`` (the writer's schema by id, no generated
classes needed). Whatever a decoder returns is plain JSON (:mod:`bridge.mapping.plain`).

Every failure raises :class:`MappingError` at stage ``decode``, naming the field and the reason.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from bridge import limits
from bridge.errors import MappingError
from bridge.mapping import codec
from bridge.mapping.plain import FIELD_NAMES, call_deep, nesting_depth, nesting_error
from bridge.mapping.record import RecordLike
from bridge.mapping.registry import RegistryDecoder

Decoder = Callable[[bytes, RecordLike], Any]
"""Bytes of the key or value of a record -> its JSON-shaped input."""


def make_decoder(fmt: str, field: str, registry: Any = None) -> Decoder:
    """The decoder of ``field`` (``key`` or ``value``) for format ``fmt``.

    Args:
        fmt: One of ``json``, ``text``, ``bytes``, ``avro``, ``protobuf``, ``json_schema``.
        field: ``key`` or ``value``.
        registry: A confluent-kafka ``SchemaRegistryClient`` (needed by the last three).
    """
    if fmt == "json":
        return lambda data, _record: decode_json(data, field)
    if fmt == "text":
        return lambda data, _record: decode_text(data, field)
    if fmt == "bytes":
        return lambda data, _record: base64.b64encode(data).decode("ascii")
    if registry is None:
        raise ValueError(f"the {fmt} decoder needs a schema registry client")

    return RegistryDecoder(fmt, field, registry)


def decode_text(data: bytes, field: str) -> str:
    """UTF-8 text.

    Raises:
        MappingError: ``<Field>NotUtf8``.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MappingError(
            f"{FIELD_NAMES[field]}NotUtf8",
            f"{field} is not UTF-8: {exc} (decode.{field}: bytes takes any bytes, as base64)",
            stage="decode",
        ) from None


def decode_json(data: bytes, field: str) -> Any:
    """JSON text in UTF-8, at most :data:`limits.DETAIL_MAX_NESTING` levels deep.

    NaN, Infinity and numbers beyond a double (``1e400``) are refused: they are not JSON, and
    PutEvents refuses a Detail holding them.

    Raises:
        MappingError: ``<Field>NotUtf8``, ``<Field>NotJson`` or ``NestingTooDeep``.
    """
    done, value = codec.fast_loads(data)
    if done:
        return value
    text = decode_text(data, field)  # decode first: json.loads(bytes) would take UTF-16 too
    try:
        try:
            return codec.strict_loads(text)
        except RecursionError:
            # Rare: deep enough to hit the interpreter's guard. Measure, then parse with room.
            depth = nesting_depth(text)
            if depth > limits.DETAIL_MAX_NESTING:
                raise nesting_error(f"{field} nests {depth} levels deep", "decode") from None
            return call_deep(codec.strict_loads, text)
    except ValueError as exc:  # json.JSONDecodeError, codec.NotJsonNumberError
        raise MappingError(
            f"{FIELD_NAMES[field]}NotJson", f"{field} is not JSON: {exc}", stage="decode"
        ) from None

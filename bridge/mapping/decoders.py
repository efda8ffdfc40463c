"""Decoders: key or value bytes -> the template inputs ``key`` and ``value``.

``json`` (UTF-8 JSON text), ``text`` (UTF-8), ``bytes`` (base64 text), and through a
Confluent-compatible Schema Registry ``avro``, ``json_schema`` (confluent-kafka's own
deserializers, writer schema by id) and ``protobuf`` (the writer's schema by id, no generated
classes needed). Whatever a decoder returns is plain JSON: bytes as base64, decimals as numbers
(text when a float cannot hold them exactly), dates and times as RFC 3339 text, NaN and
infinities as text.

Every failure raises :class:`MappingError` at stage ``decode``, naming the field and the reason.
"""

from __future__ import annotations

import base64
import math
import re
import struct
import sys
import uuid
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from bridge import limits
from bridge.errors import MappingError
from bridge.mapping import codec
from bridge.mapping.record import RecordLike

Decoder = Callable[[bytes, RecordLike], Any]
"""Bytes of the key or value of a record -> its JSON-shaped input."""

_NAMES = {"key": "Key", "value": "Value"}
_FORMAT_CODES = {
    "json": "Json",
    "avro": "Avro",
    "protobuf": "Protobuf",
    "json_schema": "JsonSchema",
}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


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
    from bridge.mapping.registry import RegistryDecoder

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
            f"{_NAMES[field]}NotUtf8",
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
            f"{_NAMES[field]}NotJson", f"{field} is not JSON: {exc}", stage="decode"
        ) from None


def nesting_error(what: str, stage: str) -> MappingError:
    return MappingError(
        "NestingTooDeep",
        f"{what}; PutEvents accepts at most {limits.DETAIL_MAX_NESTING} levels",
        stage=stage,
    )


def nesting_depth(text: str) -> int:
    """How deep objects and arrays nest in the JSON ``text`` (0 for a scalar)."""
    depth = deepest = 0
    for char in _STRINGS.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def call_deep(function: Callable[[Any], Any], argument: Any) -> Any:
    """``function(argument)`` with room for JSON nesting up to the PutEvents limit.

    CPython's JSON parser and encoder recurse per level and stop just under 1000 levels with the
    default recursion limit, short of the 1000 PutEvents accepts; callers that hit that use this,
    once they know the depth is within the limit.
    """
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(previous + 2 * limits.DETAIL_MAX_NESTING)
    try:
        return function(argument)
    except RecursionError:
        raise nesting_error("too deeply nested", "map") from None
    finally:
        sys.setrecursionlimit(previous)


def plain_json(value: Any, depth: int = 0) -> Any:
    """``value`` with every non-JSON leaf made JSON (see the module docstring).

    Raises:
        MappingError: ``NestingTooDeep`` over :data:`limits.DETAIL_MAX_NESTING` levels.
    """
    if isinstance(value, str | bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= limits.DETAIL_MAX_NESTING:
        raise nesting_error(f"more than {limits.DETAIL_MAX_NESTING} levels", "decode")
    if isinstance(value, dict):
        return {str(k): plain_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal):
        as_float = float(value)
        exact = math.isfinite(as_float) and Decimal(repr(as_float)) == value
        return as_float if exact else str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def schema_id_of(data: bytes) -> int | None:
    """The schema id of Confluent's framing (magic byte 0, 4-byte id), or None."""
    if len(data) < 5 or data[0] != 0:
        return None
    return int(struct.unpack(">I", data[1:5])[0])


def error_code(field: str, fmt: str) -> str:
    """``ValueNotAvro``, ``KeyNotProtobuf``, ...: the code of bytes that do not decode."""
    return f"{_NAMES[field]}Not{_FORMAT_CODES.get(fmt, fmt)}"

"""Plain JSON: what every decoder returns, and the helpers the decoders share.

Leaf of :mod:`bridge.mapping`'s decoding: :mod:`bridge.mapping.decoders`,
:mod:`bridge.mapping.registry` and :mod:`bridge.mapping.fields` use these, and these use none
of them. Whatever a decoder returns is plain JSON: bytes as base64, decimals as numbers (text
when a float cannot hold them exactly), dates and times as RFC 3339 text, NaN and infinities as
text.
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

FIELD_NAMES = {"key": "Key", "value": "Value"}
"""How a field is named in a reason code (``KeyNotJson``, ``ValueNotUtf8``, ...)."""
_FORMAT_CODES = {
    "json": "Json",
    "avro": "Avro",
    "protobuf": "Protobuf",
    "json_schema": "JsonSchema",
}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


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
    return f"{FIELD_NAMES[field]}Not{_FORMAT_CODES.get(fmt, fmt)}"

"""JSON text in and out of the mapping: strict decoding and compact encoding, at C speed.

orjson does the common case; the standard library's ``json`` takes whatever orjson cannot do
exactly, so results never depend on which one ran:

- Decoding refuses what JSON does not have: ``NaN``, ``Infinity`` and numbers beyond a double
  (``1e400``), which ``json.loads`` would take and PutEvents would refuse as ``MalformedDetail``.
- Integers beyond 64 bits keep every digit: orjson would read them as floats, so a text with a
  run of 19 or more digits is decoded by ``json``.
- A text with more than :data:`limits.DETAIL_MAX_NESTING` ``{`` and ``[`` in all might nest
  deeper than PutEvents allows: unless orjson's encoder (which stops at 255 levels) takes the
  value back, it goes the ``json`` way, which measures the depth.
- Text orjson refuses is decoded again by ``json`` (strictly, as above): it says what is wrong,
  and what it accepts that orjson does not (a lone surrogate escape such as ``"\\ud800"``) reads
  as it always did.
- Encoding writes compact JSON, non-ASCII characters as they are (``json.dumps`` with
  ``separators=(",", ":"), ensure_ascii=False``). Integers beyond 64 bits, more than 255 levels
  and lone surrogates go through ``json``. A number's value is kept, not its spelling: orjson
  writes ``1e-05`` as ``0.00001`` and ``1.5e-07`` as ``1.5e-7``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from bridge import limits

# One pass over the bytes: digits -> "0", "{" and "[" -> "[", everything else -> " ".
_SCAN = bytes(48 if 48 <= b <= 57 else 91 if b in (91, 123) else 32 for b in range(256))
_LONG_INTEGER = b"0" * 19  # the shortest integer that may not fit 64 bits
_DUMPS_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class NotJsonNumberError(ValueError):
    """A number JSON text may spell but a double cannot hold, or NaN/Infinity."""


def _refuse_constant(name: str) -> Any:
    raise NotJsonNumberError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotJsonNumberError(f"the number {text[:40]} is beyond what a double can hold")
    return value


_STRICT = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def strict_loads(text: str) -> Any:
    """``json.loads`` refusing NaN, Infinity and numbers a double cannot hold.

    Raises:
        ValueError: Not JSON (``json.JSONDecodeError``) or such a number
            (:class:`NotJsonNumberError`).
        RecursionError: Nested deeper than the interpreter's recursion limit allows.
    """
    return _STRICT.decode(text)


def fast_loads(data: bytes) -> tuple[bool, Any]:
    """``(True, value)`` when orjson decoded ``data`` exactly as :func:`strict_loads` would;
    ``(False, None)`` when the caller must decode it with :func:`strict_loads`."""
    scanned = data.translate(_SCAN)
    if _LONG_INTEGER in scanned:
        return False, None
    try:
        value = orjson.loads(data)
        if scanned.count(b"[") > limits.DETAIL_MAX_NESTING:
            # Could nest deeper than PutEvents allows, and orjson reads up to 1024 levels.
            # Its encoder stops at 255: a cheap proof that this value nests less.
            orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return False, None
    return True, value


def dumps(value: Any) -> str:
    """Compact JSON text of ``value`` (see the module docstring).

    Raises:
        TypeError: ``value`` holds something that is not JSON.
        RecursionError: Nested deeper than the interpreter's recursion limit allows.
    """
    try:
        return orjson.dumps(value, option=_DUMPS_OPTIONS).decode("utf-8")
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

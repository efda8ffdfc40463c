"""Trace context for ``trace_header: auto``: the record's X-Ray header, or its W3C one converted.

Pure functions of a record's headers. The conversion follows OpenTelemetry's AWS X-Ray
propagator (opentelemetry-python-contrib, ``propagator/opentelemetry-propagator-aws-xray``,
``AwsXRayPropagator.inject``) fed by the W3C ``traceparent`` parser of opentelemetry-python
(``TraceContextTextMapPropagator.extract``):

- ``traceparent`` is ``<version>-<trace-id>-<parent-id>-<flags>``: two, 32, 16 and two lowercase
  hex digits; a version other than ``00`` may be followed by ``-<more>``. Version ``ff``, an
  all-zero trace id or parent id, and anything else are invalid.
- X-Ray: ``Root=1-<first 8 hex of the trace id>-<other 24>;Parent=<parent id>;Sampled=<0|1>``,
  ``Sampled`` being the lowest bit of the flags.

An ``X-Amzn-Trace-Id`` header, when the record has one, is passed on as it is (``Lineage`` and
any other keys included): the bridge does not own that trace and does not rewrite it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bridge import limits

XRAY_HEADER = "x-amzn-trace-id"
"""The X-Ray header name, lower-cased (header names are compared without case)."""

TRACEPARENT_HEADER = "traceparent"

# OpenTelemetry's pattern, with spaces and tabs around it allowed as there; fullmatch, so that a
# newline before the end is not accepted as re.search with '$' would.
_TRACEPARENT = re.compile(
    r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*", re.DOTALL
)
_ZERO_TRACE_ID = "0" * 32
_ZERO_PARENT_ID = "0" * 16


def xray_from_traceparent(traceparent: str) -> str | None:
    """The X-Ray trace header for a W3C ``traceparent``, or None when it is not valid.

    Examples:
        >>> xray_from_traceparent("00-8a3c60f7d188f8fa79d48a391a778fa6-53995c3f42cd8ad8-01")
        'Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8;Sampled=1'
    """
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE_ID or parent_id == _ZERO_PARENT_ID:
        return None
    sampled = int(flags, 16) & 0x01
    return f"Root=1-{trace_id[:8]}-{trace_id[8:]};Parent={parent_id};Sampled={sampled}"


@dataclass(frozen=True, slots=True)
class TraceContext:
    """What ``trace_header: auto`` found in a record.

    Attributes:
        header: The X-Ray trace header to send, or None (the entry goes without one).
        invalid_traceparent: True when a ``traceparent`` was there but could not be used
            (counted, never a dead letter).
    """

    header: str | None
    invalid_traceparent: bool = False


NO_TRACE = TraceContext(None)


def auto_trace(headers: Sequence[tuple[str, bytes | None]] | None) -> TraceContext:
    """``X-Amzn-Trace-Id`` as it is, else ``traceparent`` converted, else nothing.

    Header names are compared without case; of a repeated name the last wins, as for the
    ``headers`` template input. An X-Ray header that is empty, not UTF-8, or longer than
    PutEvents takes is passed over (the ``traceparent`` is tried).
    """
    if not headers:
        return NO_TRACE
    xray: bytes | None = None
    traceparent: bytes | None = None
    has_traceparent = False
    for name, data in headers:
        lowered = name.lower()
        if lowered == XRAY_HEADER:
            xray = data
        elif lowered == TRACEPARENT_HEADER:
            traceparent, has_traceparent = data, True
    header = _usable(xray)
    if header is not None:
        return TraceContext(header)
    if not has_traceparent:
        return NO_TRACE
    converted = None
    if traceparent is not None:  # a header without a value is there, and invalid
        # Bytes that are not ASCII become U+FFFD, which no traceparent has: refused below.
        converted = xray_from_traceparent(traceparent.decode("ascii", "replace"))
    if converted is None:
        return TraceContext(None, invalid_traceparent=True)
    return TraceContext(converted)


def _usable(data: bytes | None) -> str | None:
    """An X-Ray header's text if PutEvents takes it as a TraceHeader (1-500 characters)."""
    if not data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.strip() or len(text) > limits.TRACE_HEADER_MAX_CHARS:
        return None
    return text

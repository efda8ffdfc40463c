"""Alibaba Cloud EventBridge ``putEvents`` on the wire: request signing and CloudEvents. Pure.

The data-plane API (shared seed 003) takes ``POST /openapi/putEvents`` with a JSON array of
CloudEvents 1.0 (``Content-Type: application/cloudevents-batch+json``). The client that sends
them and the sink are in :mod:`bridge.sink.alibaba`.

Signing follows the official SDK, the one implementation known to interoperate with the service:
``alibabacloud-eventbridge-util`` 0.0.3 (``aliyun/alibabacloud-eventbridge-sdk``,
``util/python/alibabacloud_eventbridge_util/client.py``; the Go and Java utils agree)::

    StringToSign = METHOD + "\\n" + Content-MD5 + "\\n" + Content-Type + "\\n" + Date + "\\n"
                   + sorted "x-acs*" headers as "name:value\\n" + path[?sorted query]
    Signature    = Base64(HMAC-SHA1(AccessKeySecret, UTF-8(StringToSign)))
    Authorization: acs:<AccessKeyId>:<Signature>

Alibaba's "Request signatures" page for EventBridge describes the generic ROA scheme instead
(an ``Accept`` line after the method, ``x-eventbridge-*`` headers among the canonical ones, and
``acs <AccessKeyId>:<Signature>`` with a space). The two cannot both be right for one server;
the SDK's is used here. Check it once against a real account before relying on it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl

PUT_EVENTS_PATH: Final = "/openapi/putEvents"
API_VERSION: Final = "2020-04-01"
"""``x-eventbridge-version`` per the API pages; SDK 1.3.8 sends ``2015-06-06`` (unsigned)."""
CONTENT_TYPE: Final = "application/cloudevents-batch+json;charset=UTF-8"
SIGNATURE_METHOD: Final = "HMAC-SHA1"
SIGNATURE_VERSION: Final = "1.0"
SIGNED_HEADER_PREFIX: Final = "x-acs"
"""Headers whose lower-cased name starts with this are signed (the SDK's ``startswith``)."""
SPEC_VERSION: Final = "1.0"
DATA_CONTENT_TYPE: Final = "application/json"

# -- signing ----------------------------------------------------------------------------------


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        key = name.strip().lower()
        if key in lowered:
            raise ValueError(f"header {key!r} is given twice")
        lowered[key] = str(value).strip()
    return lowered


def _canonical_resource(path: str) -> str:
    pathname, _, query = path.partition("?")
    if not query:
        return pathname
    params = sorted(parse_qsl(query, keep_blank_values=True))
    return pathname + "?" + "&".join(f"{key}={value}" for key, value in params)


def string_to_sign(method: str, path: str, headers: Mapping[str, str]) -> str:
    """The string an EventBridge request signature is computed over (the SDK's algorithm).

    Args:
        method: HTTP method, e.g. ``"POST"`` (upper-cased here).
        path: Request path, optionally with a query string (parameters are sorted by name).
        headers: Request headers; names are matched case-insensitively and values trimmed.

    Returns:
        ``METHOD\\nContent-MD5\\nContent-Type\\nDate\\n``, then every header whose name starts
        with ``x-acs`` as ``name:value\\n`` in ascending name order, then the path.

    Raises:
        ValueError: Two headers have the same name apart from case.
    """
    lowered = _lower_headers(headers)
    lines = [method.upper(), *(lowered.get(h, "") for h in ("content-md5", "content-type", "date"))]
    signed = sorted(name for name in lowered if name.startswith(SIGNED_HEADER_PREFIX))
    canonical_headers = "".join(f"{name}:{lowered[name]}\n" for name in signed)
    return "\n".join(lines) + "\n" + canonical_headers + _canonical_resource(path)


def signature(secret: str, string_to_sign: str) -> str:
    """Base64 of HMAC-SHA1 of the UTF-8 ``string_to_sign`` keyed with the UTF-8 ``secret``."""
    digest = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode("ascii")


def authorization(
    access_key_id: str, secret: str, method: str, path: str, headers: Mapping[str, str]
) -> str:
    """The ``Authorization`` header value: ``acs:<AccessKeyId>:<Signature>`` (SDK format)."""
    return f"acs:{access_key_id}:{signature(secret, string_to_sign(method, path, headers))}"


def content_md5(body: bytes) -> str:
    """Base64 of the body's MD5 digest, the documented ``Content-MD5`` format."""
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")


# -- CloudEvents --------------------------------------------------------------------------------


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. ``2024-05-01T12:34:56.789Z``; naive means UTC."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cloud_event(entry: Mapping[str, Any], *, id: str) -> dict[str, Any]:
    """Convert the bridge's neutral entry into an Alibaba EventBridge CloudEvent.

    Args:
        entry: ``Source``, ``DetailType``, ``Detail`` (JSON text of an object), ``EventBusName``,
            optional ``Time`` (datetime) and ``Subject``. Other keys are ignored.
        id: The CloudEvent ``id``; keep it stable across retries of the same record.

    Returns:
        specversion "1.0", id, source, type, subject (only when set), time (RFC 3339, UTC, ms;
        the current time when ``Time`` is absent, since the API requires it), datacontenttype
        "application/json", aliyuneventbusname, and data = the parsed Detail object.

    Raises:
        ValueError: ``Detail`` is not the JSON text of an object.
        KeyError: A required key is missing.
    """
    detail = entry["Detail"]
    data = json.loads(detail) if isinstance(detail, str | bytes) else detail
    if not isinstance(data, dict):
        raise ValueError("Detail must be the JSON text of an object")
    time = entry.get("Time")
    event: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": id,
        "source": entry["Source"],
        "type": entry["DetailType"],
    }
    subject = entry.get("Subject")
    if subject:
        event["subject"] = subject
    event["time"] = format_time(time if isinstance(time, datetime) else datetime.now(UTC))
    event["datacontenttype"] = DATA_CONTENT_TYPE
    event["aliyuneventbusname"] = entry["EventBusName"]
    event["data"] = data
    return event


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The event exactly as the client sends it: compact JSON, UTF-8, non-ASCII unescaped."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def event_size(event: Mapping[str, Any]) -> int:
    """Size of one CloudEvent as our packer counts it against the per-event limit (64 KB).

    The API page states the limits but not how an event's size is measured; this counts the
    UTF-8 bytes of the event serialized compactly, exactly as :func:`encode_event` sends it (the
    request body adds ``[``, ``]`` and one comma between events).
    """
    return len(encode_event(event))


def encode_batch(events: Sequence[Mapping[str, Any]]) -> bytes:
    """The request body: a JSON array of the compactly encoded events."""
    return b"[" + b",".join(encode_event(e) for e in events) + b"]"

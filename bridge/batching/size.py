"""PutEvents entry size, exactly as AWS documents it (user guide, seed 004).

Time present: 14 bytes; plus the UTF-8 bytes of Source, DetailType, Detail and each Resources
item. EventBusName and TraceHeader are not counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.limits import TIME_FIELD_BYTES


def utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8, without building the encoded copy for ASCII text."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def entry_size(entry: Mapping[str, Any]) -> int:
    """Size of one PutEventsRequestEntry by AWS's formula."""
    size = TIME_FIELD_BYTES if entry.get("Time") is not None else 0
    size += utf8_len(entry.get("Source") or "")
    size += utf8_len(entry.get("DetailType") or "")
    detail = entry.get("Detail")
    if detail is not None:
        size += utf8_len(detail)
    for resource in entry.get("Resources") or ():
        if resource is not None:
            size += utf8_len(resource)
    return size

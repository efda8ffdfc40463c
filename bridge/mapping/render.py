"""The dry run behind ``bridge render``: what one record would become, without sending anything.

The record goes through the same :class:`Mapper` as in ``bridge run`` (decoders, filter,
templates, the sink's wire form and size), with S3 offloading recorded instead of written. A
Schema Registry in the configuration is asked for schemas, as the bridge would.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bridge.errors import FilteredOut, MappingError
from bridge.mapping.mapper import Mapper, Shaper
from bridge.mapping.offload import DryRunStore
from bridge.mapping.record import RecordLike

if TYPE_CHECKING:
    from bridge.config import BridgeConfig


@dataclass
class Rendered:
    """What a record would become.

    Attributes:
        outcome: ``send``, ``filtered`` or ``dead_letter``.
        entry: The entry in the sink's wire form (``send``).
        size: Its size by the sink's formula, and the limit it is held to.
        reason: ``(stage, code, message)`` of a dead letter, or the filter reason.
        offloaded: ``(bucket, key, bytes)`` the entry's payload would be written to.
        mapping: Which mapping served the record.
        notes: What was left out of the entry without costing it (an invalid traceparent).
    """

    outcome: str
    entry: dict[str, Any] | None = None
    size: int = 0
    limit: int = 0
    sink: str = ""
    limit_key: str = ""
    reason: tuple[str, str, str] | None = None
    offloaded: list[tuple[str, str, int]] = field(default_factory=list)
    mapping: str = ""
    notes: list[str] = field(default_factory=list)

    def entry_json(self) -> str:
        """The entry as JSON (times as RFC 3339 text), as the CLI prints it."""
        return json.dumps(self.entry, indent=2, ensure_ascii=False, default=_json_default)

    def summary(self) -> str:
        """One line per fact: outcome, size against the limit, offloading, mapping used."""
        lines = []
        if self.outcome == "send":
            lines.append(
                f"send: {self.size} bytes by the {self.sink} size formula (limit {self.limit},"
                f" {self.limit_key})"
            )
            for bucket, key, size in self.offloaded:
                lines.append(f"offload: {size} bytes would be written to s3://{bucket}/{key}")
        elif self.outcome == "filtered":
            assert self.reason is not None
            lines.append(
                f"filtered out ({self.reason[1]}): not sent; its offset is committed"
                f" ({self.reason[2]})"
            )
        else:
            assert self.reason is not None
            stage, code, message = self.reason
            lines.append(f"dead-letter: stage={stage} code={code}: {message}")
        lines.extend(self.notes)
        if self.mapping:
            lines.append(f"mapping: {self.mapping}")
        return "\n".join(lines)


_FILTER_REASONS = {
    "filter": "the mapping's filter is false for it",
    "tombstone": "a null value with tombstones: skip",
    "null_key": "a null key with null_keys: skip",
}


def render(
    config: BridgeConfig, record: RecordLike, sink: Shaper, registry: Any = None
) -> Rendered:
    """Map ``record`` as the bridge would, writing nothing anywhere.

    Args:
        config: The configuration.
        record: The record.
        sink: The configured sink, without a client (its wire form, size and limits).
        registry: A Schema Registry client, when a mapping decodes through one.
    """
    store = DryRunStore()
    notes: list[str] = []

    def invalid_traceparent(_: RecordLike) -> None:
        notes.append(
            "trace: the traceparent header is not a valid W3C traceparent; sent without it"
            " (counted in bridge_traceparent_invalid_total)"
        )

    mapper = Mapper(
        config, sink, registry=registry, store=store, on_invalid_traceparent=invalid_traceparent
    )
    limit_key = "alibaba.max_event_bytes" if config.sink == "alibaba" else "batch.max_bytes"
    result = Rendered(
        "send",
        sink=mapper.sink.name,
        notes=notes,
        limit=mapper.sink.limits.max_entry_bytes,
        limit_key=limit_key,
    )
    compiled = mapper.mapping_for(record.topic() or "")
    if compiled is not None:
        index = config.mappings.index(compiled.config)
        result.mapping = f"mappings[{index}], {compiled.config.describe()}"
    try:
        mapped = mapper.map(record)
    except FilteredOut as out:
        result.outcome = "filtered"
        result.reason = ("map", out.reason, _FILTER_REASONS.get(out.reason, out.reason))
        return result
    except MappingError as exc:
        result.outcome = "dead_letter"
        result.reason = (exc.stage, exc.code, exc.message)
        return result
    result.entry = mapped.entry
    result.size = mapped.size
    result.offloaded = store.puts
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):  # PutRawEvents' Data: shown as boto3 takes it, in base64
        return {"base64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"{type(value).__name__} is not JSON")

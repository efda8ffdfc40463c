"""Record -> PutEvents entry, through the compiled templates of the first matching mapping.

Every way a record can fail to map raises :class:`MappingError` with a stable code and a message
naming the field; the pipeline sends such records to the dead-letter topic.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from bridge import limits
from bridge.errors import MappingError, TemplateError
from bridge.mapping.record import TIMESTAMP_NOT_AVAILABLE, RecordLike
from bridge.mapping.template import Template, compile_template
from bridge.sink.base import SinkLimits

if TYPE_CHECKING:
    from bridge.config import BridgeConfig, MappingConfig

_EPOCH_MILLIS_THRESHOLD = 100_000_000_000
"""Numbers below are epoch seconds (until year 5138), above are epoch milliseconds."""


@dataclass(frozen=True, slots=True)
class MappedEntry:
    """A PutEvents entry ready for boto3, with its size by AWS's formula."""

    entry: dict[str, Any]
    size: int


@dataclass(frozen=True)
class CompiledMapping:
    """The templates of one mapping, compiled; ``problems`` lists what did not compile."""

    config: MappingConfig
    templates: dict[str, Template] = field(default_factory=dict)
    resources: tuple[Template, ...] = ()
    problems: tuple[str, ...] = ()


_SCALAR_FIELDS = (
    "source",
    "detail_type",
    "detail",
    "time",
    "event_bus_name",
    "trace_header",
    "subject",
)


def compile_mapping(mapping: MappingConfig) -> CompiledMapping:
    """Compile every template of ``mapping``, collecting all problems rather than the first."""
    templates: dict[str, Template] = {}
    resources: list[Template] = []
    problems: list[str] = []
    for name in _SCALAR_FIELDS:
        text = getattr(mapping, name)
        if text is None:
            continue
        try:
            templates[name] = compile_template(text)
        except TemplateError as exc:
            problems.append(f"{name}: {exc}")
    for index, text in enumerate(mapping.resources):
        try:
            resources.append(compile_template(text))
        except TemplateError as exc:
            problems.append(f"resources[{index}]: {exc}")
    detail_type = templates.get("detail_type")
    if detail_type is not None and detail_type.is_literal and len(detail_type.text) > 128:
        problems.append(f"detail_type: {len(detail_type.text)} characters; at most 128")
    return CompiledMapping(mapping, templates, tuple(resources), tuple(problems))


class Shaper(Protocol):
    """The part of a sink the mapper needs: wire form, size, and the size limit."""

    name: str
    limits: SinkLimits

    def prepare(self, entry: dict[str, Any], record: RecordLike) -> dict[str, Any]: ...
    def entry_size(self, wire: dict[str, Any]) -> int: ...


class Mapper:
    """Maps records of any subscribed topic; compiled once per configuration.

    Args:
        config: The configuration.
        sink: The bus the entries are for (its wire form, size formula and limits); default:
            the sink the configuration names, without a client.
    """

    def __init__(self, config: BridgeConfig, sink: Shaper | None = None) -> None:
        self._compiled = [compile_mapping(m) for m in config.mappings]
        for compiled in self._compiled:
            if compiled.problems:
                raise TemplateError("; ".join(compiled.problems))
        if sink is None:
            from bridge.sink.factory import make_sink

            sink = make_sink(config, client=None)
        self._sink = sink
        self._default_bus = config.aws.event_bus_name
        self._limit_key = (
            "alibaba.max_event_bytes" if config.sink == "alibaba" else "batch.max_bytes"
        )
        self._by_topic: dict[str, CompiledMapping | None] = {}

    def mapping_for(self, topic: str) -> CompiledMapping | None:
        """The first mapping matching ``topic`` (cached per topic)."""
        try:
            return self._by_topic[topic]
        except KeyError:
            found = next((c for c in self._compiled if c.config.matches(topic)), None)
            self._by_topic[topic] = found
            return found

    def map(self, record: RecordLike) -> MappedEntry:
        """Build the PutEvents entry for ``record``.

        Raises:
            MappingError: The record cannot become a valid entry; the message says why.
        """
        topic = record.topic() or ""
        compiled = self.mapping_for(topic)
        if compiled is None:
            raise MappingError("NoMapping", f"no mapping matches topic {topic!r}", stage="map")
        document = build_document(record)
        t = compiled.templates

        entry: dict[str, Any] = {
            "Source": _text(t["source"], document, "source"),
            "DetailType": _text(t["detail_type"], document, "detail_type"),
            "Detail": _detail(t["detail"], document),
        }
        if compiled.resources:
            entry["Resources"] = _resources(compiled.resources, document)
        time_template = t.get("time")
        if time_template is not None:
            entry["Time"] = parse_time(time_template.render_value(document, "time"))
        elif document["timestamp"] is not None:
            entry["Time"] = datetime.fromtimestamp(document["timestamp"] / 1000, tz=UTC)
        bus = t.get("event_bus_name")
        entry["EventBusName"] = _text(bus, document, "event_bus_name") if bus else self._default_bus
        trace = t.get("trace_header")
        if trace is not None:
            entry["TraceHeader"] = _text(trace, document, "trace_header")
        subject = t.get("subject")
        if subject is not None:
            entry["Subject"] = _text(subject, document, "subject")

        _validate(entry)
        wire = self._sink.prepare(entry, record)
        size = self._sink.entry_size(wire)
        limit = self._sink.limits.max_entry_bytes
        if size > limit:
            raise MappingError(
                "EntryTooLarge",
                f"entry is {size} bytes by the {self._sink.name} size formula; the limit is"
                f" {limit} ({self._limit_key})",
                stage="validate",
            )
        return MappedEntry(wire, size)


def build_document(record: RecordLike) -> dict[str, Any]:
    """The input of every template: value (JSON), key, headers, topic, partition, offset, timestamp.

    Raises:
        MappingError: ``Tombstone`` for a null value, ``ValueNotJson`` when it does not decode.
    """
    raw = record.value()
    if raw is None:
        raise MappingError("Tombstone", "record value is null (a tombstone)", stage="decode")
    try:
        value = json.loads(raw.decode("utf-8"))  # decode first: json.loads(bytes) takes UTF-16
    except UnicodeDecodeError as exc:
        raise MappingError("ValueNotUtf8", f"value is not UTF-8: {exc}", stage="decode") from None
    except json.JSONDecodeError as exc:
        raise MappingError("ValueNotJson", f"value is not JSON: {exc}", stage="decode") from None
    except RecursionError:
        raise MappingError(
            "NestingTooDeep",
            f"value nests deeper than the {limits.DETAIL_MAX_NESTING} levels PutEvents accepts",
            stage="decode",
        ) from None
    ts_type, ts = record.timestamp()
    return {
        "value": value,
        "key": _decode_bytes(record.key()),
        "headers": {name: _decode_bytes(data) for name, data in record.headers() or ()},
        "topic": record.topic(),
        "partition": record.partition(),
        "offset": record.offset(),
        "timestamp": None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
    }


def _decode_bytes(data: bytes | None) -> str | None:
    """UTF-8 text, or ``base64:<...>`` for bytes that are not UTF-8."""
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode("ascii")


def _text(template: Template, document: dict[str, Any], name: str) -> str:
    value = template.render_value(document, name)
    if not isinstance(value, str):
        raise MappingError(
            "WrongType", f"{name}: must be text, got {type(value).__name__} from {template.text!r}"
        )
    return value


def _detail(template: Template, document: dict[str, Any]) -> str:
    value = template.render_value(document, "detail")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise MappingError(
                "DetailNotObject", "detail: rendered text is not a JSON object"
            ) from None
    if not isinstance(value, dict):
        raise MappingError(
            "DetailNotObject",
            f"detail: must be a JSON object, got {_json_type(value)} from {template.text!r}",
        )
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:
        raise MappingError(
            "NestingTooDeep",
            f"detail nests deeper than the {limits.DETAIL_MAX_NESTING} levels PutEvents accepts",
        ) from None


def _resources(templates: tuple[Template, ...], document: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for index, template in enumerate(templates):
        value = template.render_value(document, f"resources[{index}]")
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, str) or not item:
                raise MappingError(
                    "WrongType", f"resources[{index}]: each resource must be non-empty text"
                )
            out.append(item)
    if len(out) > limits.MAX_RESOURCES:
        raise MappingError(
            "TooManyResources", f"resources: {len(out)} items; at most {limits.MAX_RESOURCES}"
        )
    return out


def parse_time(value: Any) -> datetime:
    """Event time from epoch seconds, epoch milliseconds, or RFC 3339 / ISO 8601 text.

    Raises:
        MappingError: ``BadTime`` for anything else.
    """
    if isinstance(value, bool):
        raise MappingError("BadTime", f"time: {value!r} is not a time")
    try:
        if isinstance(value, int | float):
            seconds = value / 1000 if abs(value) >= _EPOCH_MILLIS_THRESHOLD else value
            return datetime.fromtimestamp(seconds, tz=UTC)
        if isinstance(value, str):
            text = value.strip()
            if text.lstrip("-").replace(".", "", 1).isdigit():
                return parse_time(float(text))
            parsed = datetime.fromisoformat(text)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise MappingError("BadTime", f"time: {value!r} is not a time: {exc}") from None
    raise MappingError("BadTime", f"time: {_json_type(value)} is not a time")


def _validate(entry: dict[str, Any]) -> None:
    if not entry["Source"]:
        raise MappingError("EmptySource", "source: rendered empty", stage="validate")
    detail_type = entry["DetailType"]
    if not detail_type:
        raise MappingError("EmptyDetailType", "detail_type: rendered empty", stage="validate")
    if len(detail_type) > limits.DETAIL_TYPE_MAX_CHARS:
        raise MappingError(
            "DetailTypeTooLong",
            f"detail_type: {len(detail_type)} characters; at most {limits.DETAIL_TYPE_MAX_CHARS}",
            stage="validate",
        )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
    }.get(type(value), type(value).__name__)

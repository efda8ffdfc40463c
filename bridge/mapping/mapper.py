"""Record -> PutEvents entry, through the compiled templates of the mapping that selects it.

One record's path: select the mapping (first ``topic``/``topic_pattern`` match, else the
``default`` one) -> tombstone and null-key policy -> decode key and value (only what the
mapping reads) -> filter -> render the fields -> check them -> the sink's wire form and size
-> over the limit: offload to S3 or dead-letter.

Every way a record can fail raises :class:`MappingError` with a stable code, a stage and a
message naming the field; the pipeline dead-letters it. A record the mapping drops on purpose
(filter, ``skip`` policies) raises :class:`FilteredOut`; the pipeline finishes its offset.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from bridge.errors import FilteredOut, MappingError, TemplateError
from bridge.mapping import fields
from bridge.mapping.compiled import ID_FIELDS, CompiledMapping, compile_mapping
from bridge.mapping.decoders import Decoder, make_decoder
from bridge.mapping.fields import parse_time
from bridge.mapping.offload import ObjectStore, Offloader
from bridge.mapping.raw import RawTemplates, raw_entry
from bridge.mapping.record import TIMESTAMP_NOT_AVAILABLE, RecordLike
from bridge.mapping.template import Template, truthy
from bridge.mapping.trace import auto_trace
from bridge.sink.base import SinkLimits

if TYPE_CHECKING:
    from bridge.config import BridgeConfig

__all__ = [
    "CompiledMapping",
    "FilteredOut",
    "MappedEntry",
    "Mapper",
    "compile_mapping",
    "parse_time",
]


@dataclass(frozen=True, slots=True)
class MappedEntry:
    """A PutEvents entry ready for boto3, with its size by AWS's formula."""

    entry: dict[str, Any]
    size: int


class Shaper(Protocol):
    """The part of a sink the mapper needs: wire form, size, and the size limit."""

    name: str
    limits: SinkLimits

    def prepare(self, entry: dict[str, Any], record: RecordLike) -> dict[str, Any]: ...
    def entry_size(self, wire: dict[str, Any]) -> int: ...


@dataclass(frozen=True)
class _Route:
    compiled: CompiledMapping
    key: Decoder | None
    value: Decoder | None


class Mapper:
    """Maps records of any subscribed topic; compiled once per configuration.

    The mapper builds no client of its own: the sink, the Schema Registry client and the object
    store are handed in (built by :mod:`bridge.app`, or by a test).

    Args:
        config: The configuration.
        sink: The bus the entries are for (its wire form, size formula and limits).
        registry: A Schema Registry client; needed when a mapping uses a registry decoder
            (``avro``, ``protobuf``, ``json_schema``).
        store: Where ``oversize: offload`` puts payloads; needed when a mapping offloads.
        on_invalid_traceparent: Called with a record whose ``traceparent`` header
            ``trace_header: auto`` could not use (the entry goes without it), e.g. to count it.

    Raises:
        TemplateError: A template of the configuration does not compile.
        ValueError: A mapping needs a ``registry`` or a ``store`` that was not given.
    """

    def __init__(
        self,
        config: BridgeConfig,
        sink: Shaper,
        *,
        registry: Any = None,
        store: ObjectStore | None = None,
        on_invalid_traceparent: Callable[[RecordLike], None] | None = None,
    ) -> None:
        compiled = [compile_mapping(m) for m in config.mappings]
        for c in compiled:
            if c.problems:
                raise TemplateError("; ".join(c.problems))
        self._routes = [self._route(c, registry) for c in compiled]
        self._registry = registry
        self._glue = (config.aws.schema_registry_uri or "").startswith("arn:")
        self._default = next((r for r in self._routes if r.compiled.config.default), None)
        self._sink = sink
        self._default_bus = config.aws.event_bus_name
        self._limit_key = (
            "alibaba.max_event_bytes" if config.sink == "alibaba" else "batch.max_bytes"
        )
        self._offloader: Offloader | None = None
        if any(m.oversize == "offload" for m in config.mappings):
            assert config.offload.bucket is not None  # checked at load
            if store is None:
                raise ValueError("a mapping has 'oversize: offload': the mapper needs a store")
            self._offloader = Offloader(store, config.offload.bucket, config.offload.prefix)
        self._by_topic: dict[str, _Route | None] = {}
        self._on_invalid_traceparent = on_invalid_traceparent

    @staticmethod
    def _route(compiled: CompiledMapping, registry: Any) -> _Route:
        decode = compiled.config.decode
        key = make_decoder(decode.key, "key", registry) if "key" in compiled.reads else None
        value = make_decoder(decode.value, "value", registry) if "value" in compiled.reads else None
        return _Route(compiled, key, value)

    @property
    def sink(self) -> Shaper:
        """The sink the entries are shaped for."""
        return self._sink

    def mapping_for(self, topic: str) -> CompiledMapping | None:
        """The mapping that serves ``topic`` (cached per topic)."""
        route = self._route_for(topic)
        return route.compiled if route else None

    def _route_for(self, topic: str) -> _Route | None:
        try:
            return self._by_topic[topic]
        except KeyError:
            found = next((r for r in self._routes if r.compiled.config.matches(topic)), None)
            self._by_topic[topic] = found or self._default
            return self._by_topic[topic]

    def map(self, record: RecordLike) -> MappedEntry:
        """Build the entry for ``record``.

        Raises:
            MappingError: The record cannot become a valid entry; the message says why.
            FilteredOut: The mapping drops the record on purpose (filter, ``skip`` policies).
        """
        topic = record.topic() or ""
        route = self._route_for(topic)
        if route is None:
            raise MappingError("NoMapping", f"no mapping matches topic {topic!r}", stage="map")
        try:
            return self._map(route, record)
        except (MappingError, FilteredOut):
            raise
        except Exception as exc:  # a bug here must dead-letter one record, not stop the bridge
            raise MappingError(
                "MappingFailed", f"unexpected {type(exc).__name__} while mapping: {exc}"
            ) from exc

    def _map(self, route: _Route, record: RecordLike) -> MappedEntry:
        config = route.compiled.config
        document = self._document(route, record)
        predicate = route.compiled.predicate
        if predicate is not None and not truthy(predicate.search(document, "filter")):
            raise FilteredOut("filter")
        if route.compiled.raw is not None:
            return self._raw(route.compiled, route.compiled.raw, document, record)
        entry, detail = self._entry(route.compiled, document, record)
        fields.validate(entry)
        wire = self._sink.prepare(entry, record)
        size = self._sink.entry_size(wire)
        limit = self._sink.limits.max_entry_bytes
        if size <= limit:
            return MappedEntry(wire, size)
        formula = f"by the {self._sink.name} size formula; the limit is {limit} ({self._limit_key})"
        if config.oversize != "offload" or self._offloader is None:
            raise MappingError(
                "EntryTooLarge",
                f"entry is {size} bytes {formula} (oversize: offload sends it through S3)",
                stage="validate",
            )
        where = (record.topic() or "", record.partition() or 0, record.offset() or 0)
        before = size
        reference = self._offloader.offload(detail, entry["Detail"], config.offload_path, where)
        trace_key = config.trace_detail_key
        if trace_key is not None and trace_key in detail and config.offload_path is None:
            reference = {**reference, trace_key: detail[trace_key]}  # still readable by targets
        entry["Detail"] = fields.dumps(reference)
        wire = self._sink.prepare(entry, record)
        size = self._sink.entry_size(wire)
        if size > limit:
            what = f"Detail member {config.offload_path!r}" if config.offload_path else "Detail"
            raise MappingError(
                "EntryTooLarge",
                f"entry is {size} bytes after its {what} went to S3 ({before} before) {formula}",
                stage="validate",
            )
        return MappedEntry(wire, size)

    def _document(self, route: _Route, record: RecordLike) -> dict[str, Any]:
        """The templates' input; applies the tombstone and null-key policies first."""
        config = route.compiled.config
        raw_value = record.value()
        if raw_value is None:
            if config.tombstones == "skip":
                raise FilteredOut("tombstone")
            if config.tombstones == "dead_letter":
                raise MappingError(
                    "Tombstone",
                    "record value is null (a tombstone); tombstones: skip drops such records,"
                    " send maps them with value null",
                    stage="decode",
                )
        raw_key = record.key()
        if raw_key is None:
            if config.null_keys == "skip":
                raise FilteredOut("null_key")
            if config.null_keys == "dead_letter":
                raise MappingError(
                    "NullKey", "record key is null (null_keys: dead_letter)", stage="decode"
                )
        ts_type, ts = record.timestamp()
        reads = route.compiled.reads
        topic, partition, offset = record.topic(), record.partition(), record.offset()
        return {
            "value": route.value(raw_value, record)
            if route.value is not None and raw_value is not None
            else None,
            "key": route.key(raw_key, record)
            if route.key is not None and raw_key is not None
            else None,
            "headers": _headers(record) if "headers" in reads else {},
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp": None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
            "id": f"{topic}-{partition}-{offset}",  # record_id(record), from the values at hand
        }

    def _entry(
        self, compiled: CompiledMapping, document: dict[str, Any], record: RecordLike
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The entry's fields. Source, DetailType, Detail (and EventBusName, when templated) must
        select something; the optional ones are left out when they select nothing, unless the
        mapping names them in ``required``."""
        t = compiled.templates
        config = compiled.config
        required = config.required
        trace = self._trace(compiled, document, record)
        detail, detail_text = fields.detail(t["detail"], document)
        if trace is not None and config.trace_detail_key is not None:
            # A copy: the selected object may be shared (a literal in the template).
            detail = {**detail, config.trace_detail_key: trace}
            detail_text = fields.dumps(detail)
        entry: dict[str, Any] = {
            "Source": fields.text(t["source"], document, "source"),
            "DetailType": fields.text(t["detail_type"], document, "detail_type"),
            "Detail": detail_text,
        }
        if compiled.resources:
            resources = fields.resources(
                compiled.resources, document, required="resources" in required
            )
            if resources:
                entry["Resources"] = resources
        time_template = t.get("time")
        if time_template is not None:
            when = time_template.render_value(document, "time", "time" in required)
            if when is not None:
                entry["Time"] = parse_time(when)
        elif document["timestamp"] is not None:
            entry["Time"] = datetime.fromtimestamp(document["timestamp"] / 1000, tz=UTC)
        bus = t.get("event_bus_name")
        entry["EventBusName"] = (
            fields.text(bus, document, "event_bus_name") if bus else self._default_bus
        )
        if trace is not None:
            entry["TraceHeader"] = trace
        subject = t.get("subject")
        if subject is not None:
            text = fields.optional_text(subject, document, "subject", "subject" in required)
            if text is not None:
                entry["Subject"] = text
        _render_ids(t, document, entry)
        return entry, detail

    def _raw(
        self,
        compiled: CompiledMapping,
        raw: RawTemplates,
        document: dict[str, Any],
        record: RecordLike,
    ) -> MappedEntry:
        """A ``publish: put_raw_events`` entry: no Source, DetailType or Detail, no offload."""
        entry = raw_entry(raw, record, document, self._registry, self._glue)
        _render_ids(compiled.templates, document, entry)
        wire = self._sink.prepare(entry, record)
        size = self._sink.entry_size(wire)
        limit = self._sink.limits.max_entry_bytes
        if size > limit:
            raise MappingError(
                "EntryTooLarge",
                f"raw entry is {size} bytes by the {self._sink.name} size formula; the limit is"
                f" {limit} ({self._limit_key})",
                stage="validate",
            )
        return MappedEntry(wire, size)

    def _trace(
        self, compiled: CompiledMapping, document: dict[str, Any], record: RecordLike
    ) -> str | None:
        """The TraceHeader, from its template or (``auto``) from the record's headers; None
        leaves it out. An invalid ``traceparent`` is reported to ``on_invalid_traceparent``."""
        required = "trace_header" in compiled.config.required
        if not compiled.auto_trace:
            template = compiled.templates.get("trace_header")
            return None if template is None else fields.trace_header(template, document, required)
        found = auto_trace(record.headers())
        if found.invalid_traceparent and self._on_invalid_traceparent is not None:
            self._on_invalid_traceparent(record)
        if found.header is None and required:
            raise fields.no_trace_found()
        return found.header


def _render_ids(
    templates: dict[str, Template], document: dict[str, Any], entry: dict[str, Any]
) -> None:
    """The new bus's ``event_group_id`` and ``deduplication_id``, when the mapping sets them."""
    for name, key in ID_FIELDS:
        template = templates.get(name)
        if template is not None:
            entry[key] = fields.id_text(template, document, name)


def _headers(record: RecordLike) -> dict[str, str | None]:
    """Headers by name (the last of a repeated name), UTF-8 text or ``base64:<...>``."""
    out: dict[str, str | None] = {}
    for name, data in record.headers() or ():
        if data is None:
            out[name] = None
            continue
        try:
            out[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            out[name] = "base64:" + base64.b64encode(data).decode("ascii")
    return out

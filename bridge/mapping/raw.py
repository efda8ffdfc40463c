"""Record -> a PutRawEvents entry of the new bus: the value bytes as they are, with a content type.

``Data`` is the record's value bytes unchanged (Avro and Protobuf records are not decoded by the
bridge: the bus decodes them against the schema registry named on the request), or a rendered
``data`` template. ``content_type`` names the ContentType, or ``auto`` reads it from the record's
Schema Registry framing (magic byte 0, a 4-byte schema id) and the type of that schema. Bytes that
contradict the content type named are a dead-letter reason (``ContentTypeMismatch``), not a
request the bus would refuse. ``metadata`` templates give Metadata (a template that selects
nothing leaves its key out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.errors import MappingError, TemplateError
from bridge.mapping import codec
from bridge.mapping.plain import schema_id_of
from bridge.mapping.record import RecordLike
from bridge.mapping.template import Inputs, Template, compile_template

CONTENT_TYPES = {
    "json": "application/json",
    "avro": "application/avro",
    "protobuf": "application/protobuf",
    "octet-stream": "application/octet-stream",
}
"""``content_type`` -> the ContentType the bus takes."""

_SCHEMA_TYPES = {"AVRO": "avro", "PROTOBUF": "protobuf", "JSON": "json_schema"}
_GLUE_HEADER_VERSION = 3
"""First byte of a record framed by the AWS Glue Schema Registry serializers."""


@dataclass(frozen=True)
class RawTemplates:
    """The compiled ``data`` and ``metadata`` templates of a put_raw_events mapping."""

    content_type: str
    data: Template | None
    metadata: tuple[tuple[str, Template], ...]

    def roots(self) -> set[str]:
        """The template inputs they read (``value``, ``key``, ``headers``...)."""
        templates = [t for _, t in self.metadata] + ([self.data] if self.data else [])
        return {name for t in templates for name in t.roots()}


def compile_raw(
    content_type: str, data: str | None, metadata: dict[str, str], inputs: Inputs
) -> tuple[RawTemplates, list[str]]:
    """The compiled templates, and the problems of those that did not compile."""
    problems: list[str] = []
    compiled_data = None
    if data is not None:
        try:
            compiled_data = compile_template(data, inputs)
        except TemplateError as exc:
            problems.append(f"data: {exc}")
    compiled: list[tuple[str, Template]] = []
    for key, text in metadata.items():
        try:
            compiled.append((key, compile_template(text, inputs)))
        except TemplateError as exc:
            problems.append(f"metadata.{key}: {exc}")
    return RawTemplates(content_type, compiled_data, tuple(compiled)), problems


def raw_entry(
    raw: RawTemplates,
    record: RecordLike,
    document: dict[str, Any],
    registry: Any,
    glue: bool,
) -> dict[str, Any]:
    """The neutral raw entry: ``Data``, ``ContentType`` and ``Metadata`` (the sink adds the ids).

    Args:
        raw: The mapping's templates.
        record: The record (its value bytes).
        document: The templates' input.
        registry: The Schema Registry client (``auto`` looks up the schema type), or None.
        glue: Whether the bus decodes against a Glue registry (its framing, not Confluent's).

    Raises:
        MappingError: ``EmptyData``, ``NoSchemaId`` (``auto`` and no framing),
            ``ContentTypeMismatch``, ``SchemaNotFound`` / ``SchemaRegistryUnavailable``.
    """
    if raw.data is not None:
        rendered = raw.data.render_value(document, "data")
        text = rendered if isinstance(rendered, str) else codec.dumps(rendered)
        data = text.encode("utf-8")
    else:
        value = record.value()
        data = bytes(value) if value is not None else b""
    if not data:
        raise MappingError("EmptyData", "data: the record's value is empty", stage="validate")
    kind = raw.content_type
    if kind == "auto":
        kind = _from_framing(data, registry)
    _check_bytes(kind, data, glue)
    entry: dict[str, Any] = {"Data": data, "ContentType": CONTENT_TYPES[kind]}
    metadata: dict[str, str] = {}
    for key, template in raw.metadata:
        found = template.render_value(document, f"metadata.{key}", required=False)
        if found is None:
            continue
        found = found if isinstance(found, str) else codec.dumps(found)
        if found:
            metadata[key] = found
    if metadata:
        entry["Metadata"] = metadata
    return entry


def _from_framing(data: bytes, registry: Any) -> str:
    schema_id = schema_id_of(data)
    if schema_id is None:
        raise MappingError(
            "NoSchemaId",
            "content_type: auto: the value does not start with the Schema Registry framing"
            f" (magic byte 0 and a 4-byte schema id; got {len(data)} bytes starting"
            f" {data[:5].hex()!r}): name its content_type (json, octet-stream...) instead",
            stage="validate",
        )
    try:
        schema = registry.get_schema(schema_id)
    except Exception as exc:  # the client raises its own errors and requests' ones
        status = getattr(exc, "http_status_code", None)
        code = "SchemaNotFound" if status == 404 else "SchemaRegistryUnavailable"
        raise MappingError(
            code, f"content_type: auto: schema id {schema_id}: {exc}", stage="validate"
        ) from None
    found = _SCHEMA_TYPES.get(str(schema.schema_type or "AVRO").upper(), "octet-stream")
    if found == "json_schema":
        raise MappingError(
            "ContentTypeMismatch",
            f"content_type: auto: schema id {schema_id} is a JSON Schema: its framed bytes are"
            " not JSON; publish it with content_type: octet-stream, or data: ${value}",
            stage="validate",
        )
    return found


def _check_bytes(kind: str, data: bytes, glue: bool) -> None:
    """Bytes that contradict the content type: dead-lettered here rather than refused later."""
    problem = None
    if kind == "json":
        try:
            codec.strict_loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            problem = f"content_type: json, but the value is not JSON ({exc})"
    elif kind in ("avro", "protobuf"):
        framed = data[0] == _GLUE_HEADER_VERSION if glue else schema_id_of(data) is not None
        if not framed:
            which = "Glue Schema Registry" if glue else "Confluent Schema Registry"
            problem = (
                f"content_type: {kind}, but the value has no {which} framing (starts"
                f" {data[:5].hex()!r}): the bus could not find its schema"
            )
    if problem is not None:
        raise MappingError("ContentTypeMismatch", problem, stage="validate")

"""Compiling a mapping's templates once per configuration (:func:`compile_mapping`).

What a mapping reads (``value``, ``key``, ``headers``...) is known here, so that the mapper
decodes only that; every template that does not compile is collected, not only the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bridge import limits
from bridge.errors import TemplateError
from bridge.mapping.raw import RawTemplates, compile_raw
from bridge.mapping.template import Inputs, Placeholder, Template, compile_predicate
from bridge.mapping.template import compile_template as _compile

if TYPE_CHECKING:
    from bridge.config import MappingConfig


@dataclass(frozen=True)
class CompiledMapping:
    """The templates of one mapping, compiled; ``problems`` lists what did not compile."""

    config: MappingConfig
    templates: dict[str, Template] = field(default_factory=dict)
    resources: tuple[Template, ...] = ()
    predicate: Placeholder | None = None
    reads: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()
    auto_trace: bool = False
    raw: RawTemplates | None = None
    """The ``data`` and ``metadata`` templates of a ``publish: put_raw_events`` mapping."""


_SCALAR_FIELDS = (
    "source",
    "detail_type",
    "detail",
    "time",
    "event_bus_name",
    "trace_header",
    "subject",
    "event_group_id",
    "deduplication_id",
)

_RAW_SCALARS = frozenset({"event_group_id", "deduplication_id"})

ID_FIELDS = (("event_group_id", "EventGroupId"), ("deduplication_id", "DeduplicationId"))
"""The new bus's ids: mapping key, and the entry key the sink moves into SystemMetadata."""


def compile_mapping(mapping: MappingConfig) -> CompiledMapping:
    """Compile every template of ``mapping``, collecting all problems rather than the first."""
    inputs = Inputs.for_decoders(mapping.decode.key, mapping.decode.value)
    templates: dict[str, Template] = {}
    resources: list[Template] = []
    problems: list[str] = []
    auto = mapping.trace_header == "auto"
    is_raw = mapping.publish == "put_raw_events"
    for name in _SCALAR_FIELDS:
        text = getattr(mapping, name)
        if text is None or (auto and name == "trace_header"):
            continue
        if is_raw and name not in _RAW_SCALARS:
            continue  # detail's default "${value}" would decode what is sent as it is
        try:
            templates[name] = _compile(text, inputs)
        except TemplateError as exc:
            problems.append(f"{name}: {exc}")
    for index, text in enumerate(mapping.resources):
        try:
            resources.append(_compile(text, inputs))
        except TemplateError as exc:
            problems.append(f"resources[{index}]: {exc}")
    predicate = None
    if mapping.filter is not None:
        try:
            predicate = compile_predicate(mapping.filter, inputs)
        except TemplateError as exc:
            problems.append(f"filter: {exc}")
    detail_type = templates.get("detail_type")
    most = limits.DETAIL_TYPE_MAX_CHARS
    if detail_type is not None and detail_type.is_literal and len(detail_type.text) > most:
        problems.append(f"detail_type: {len(detail_type.text)} characters; at most {most}")
    most_id = limits.BUS_V2_ID_MAX_CHARS
    for name, _ in ID_FIELDS:
        id_template = templates.get(name)
        literal = id_template.text if id_template is not None and id_template.is_literal else None
        if literal is not None and not 1 <= len(literal) <= most_id:
            problems.append(f"{name}: {len(literal)} characters; 1 to {most_id}")
    reads = {name for t in (*templates.values(), *resources) for name in t.roots()}
    if predicate is not None:
        reads |= Template(mapping.filter or "", (predicate,)).roots()
    raw = None
    if is_raw:
        raw, raw_problems = compile_raw(
            mapping.content_type, mapping.data, mapping.metadata, inputs
        )
        problems.extend(raw_problems)
        reads |= raw.roots()
    return CompiledMapping(
        mapping,
        templates,
        tuple(resources),
        predicate,
        frozenset(reads),
        tuple(problems),
        auto,
        raw,
    )

"""Rendering each PutEvents field from its template, with the checks PutEvents applies.

Pure functions of a compiled template and the record's document; each failure is a
:class:`MappingError` naming the field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bridge import limits
from bridge.errors import MappingError
from bridge.mapping import codec
from bridge.mapping.plain import call_deep, nesting_depth, nesting_error
from bridge.mapping.template import Template

_EPOCH_MILLIS_THRESHOLD = 100_000_000_000
"""Numbers below are epoch seconds (until year 5138), above are epoch milliseconds."""


def text(template: Template, document: dict[str, Any], name: str) -> str:
    """A text field (Source, DetailType, EventBusName, TraceHeader, Subject)."""
    value = template.render_value(document, name)
    if not isinstance(value, str):
        raise MappingError(
            "WrongType", f"{name}: must be text, got {json_type(value)} from {template.text!r}"
        )
    return value


def id_text(template: Template, document: dict[str, Any], name: str) -> str:
    """An id of the new bus (``event_group_id``, ``deduplication_id``): text, or a number or
    boolean written as JSON writes it; it must select something (``MissingField``)."""
    value = template.render_value(document, name)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return codec.dumps(value) if not isinstance(value, int) else str(value)
    if not isinstance(value, str):
        raise MappingError(
            "WrongType",
            f"{name}: must be text or a number, got {json_type(value)} from {template.text!r}",
        )
    return value


def optional_text(
    template: Template, document: dict[str, Any], name: str, required: bool = False
) -> str | None:
    """An optional text field: None (left out) when a placeholder of its template selects
    nothing, unless ``required`` (``MissingField``)."""
    if required:
        return text(template, document, name)
    value = template.render_value(document, name, required=False)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MappingError(
            "WrongType", f"{name}: must be text, got {json_type(value)} from {template.text!r}"
        )
    return value


def trace_header(template: Template, document: dict[str, Any], required: bool) -> str | None:
    """TraceHeader from its template; None (left out) when it selects nothing, or what it
    renders is blank or longer than PutEvents takes (the call would fail for every entry in it).

    Raises:
        MappingError: ``MissingField`` / ``WrongType`` only with ``required: [trace_header]``;
            ``WrongType`` when the template selects something that is not text.
    """
    value = optional_text(template, document, "trace_header", required)
    if value is None or (value.strip() and len(value) <= limits.TRACE_HEADER_MAX_CHARS):
        return value
    if required:
        raise MappingError(
            "WrongType",
            f"trace_header: {len(value)} characters, blank or over the"
            f" {limits.TRACE_HEADER_MAX_CHARS} PutEvents takes",
        )
    return None


def no_trace_found() -> MappingError:
    """``trace_header: auto`` found nothing in a record of a mapping that requires it."""
    return MappingError(
        "MissingField",
        "trace_header: auto found neither an X-Amzn-Trace-Id header nor a valid traceparent"
        " header (required: [trace_header])",
    )


def detail(template: Template, document: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The Detail object and its compact JSON.

    Raises:
        MappingError: ``DetailNotObject``, or ``NestingTooDeep`` past the PutEvents limit.
    """
    value = template.render_value(document, "detail")
    if isinstance(value, str):
        try:
            try:
                value = codec.strict_loads(value)
            except RecursionError:
                value = call_deep(codec.strict_loads, value)
        except ValueError:  # not JSON, or NaN/Infinity/1e400
            raise MappingError(
                "DetailNotObject",
                f"detail: rendered text is not a JSON object (from {template.text!r})",
            ) from None
    if not isinstance(value, dict):
        raise MappingError(
            "DetailNotObject",
            f"detail: must be a JSON object, got {json_type(value)} from {template.text!r}",
        )
    return value, dumps(value)


def dumps(value: dict[str, Any]) -> str:
    """Compact JSON of a Detail, refused past :data:`limits.DETAIL_MAX_NESTING` levels.

    The encoders' recursion guards stop near 1000 levels (orjson's at 255, then ``json`` takes
    over), so only a Detail that trips ``json``'s can be too deep: its depth is measured then (a
    scan of the text), never on the common path.
    """
    try:
        return codec.dumps(value)
    except RecursionError:
        pass
    rendered: str = call_deep(codec.dumps, value)
    depth = nesting_depth(rendered)
    if depth > limits.DETAIL_MAX_NESTING:
        raise nesting_error(f"detail nests {depth} levels deep", "validate")
    return rendered


def resources(
    templates: tuple[Template, ...], document: dict[str, Any], required: bool = False
) -> list[str]:
    """Resources: each template adds one item, or each item of a list it selects; at most 10.

    An item that selects nothing (or a null in a selected list) is left out, unless
    ``required`` (``required: [resources]``): then it is ``MissingField``.
    """
    out: list[str] = []
    for index, template in enumerate(templates):
        value = template.render_value(document, f"resources[{index}]", required)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item is None and not required:
                continue
            if not isinstance(item, str) or not item:
                raise MappingError(
                    "WrongType",
                    f"resources[{index}]: each resource must be non-empty text, got"
                    f" {json_type(item)}",
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
            stripped = value.strip()
            if stripped.lstrip("-").replace(".", "", 1).isdigit():
                return parse_time(float(stripped))
            parsed = datetime.fromisoformat(stripped)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise MappingError("BadTime", f"time: {value!r} is not a time: {exc}") from None
    raise MappingError("BadTime", f"time: {json_type(value)} is not a time")


def validate(entry: dict[str, Any]) -> None:
    """The PutEvents rules on Source and DetailType."""
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


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
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

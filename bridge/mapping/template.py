"""Templates: text with ``${expr}`` placeholders, ``expr`` a JMESPath expression.

JMESPath is what the AWS CLI's ``--query`` speaks and ships with botocore, so AWS users know it.
``$${`` writes a literal ``${``. A template made of exactly one placeholder returns what the
expression selects with its type kept (an object stays an object); any other template renders
to text, objects and lists inside it written as compact JSON.

Templates are compiled once, at load; rendering is a dict walk per placeholder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.exceptions
from jmespath.parser import ParsedResult

from bridge.errors import MappingError, TemplateError

INPUT_NAMES = ("value", "key", "headers", "topic", "partition", "offset", "timestamp")
"""The names a template may start from."""

_QUOTES = {"'": "'", '"': '"', "`": "`"}


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One compiled ``${expr}``."""

    source: str
    parsed: ParsedResult

    def search(self, document: Mapping[str, Any]) -> Any:
        return self.parsed.search(document)


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template.

    Attributes:
        text: The template as written in the config.
        parts: Literal strings and placeholders, in order.
    """

    text: str
    parts: tuple[str | Placeholder, ...]

    @property
    def is_single(self) -> bool:
        """True when the template is one placeholder and nothing else (keeps the value's type)."""
        return len(self.parts) == 1 and isinstance(self.parts[0], Placeholder)

    @property
    def is_literal(self) -> bool:
        """True when the template has no placeholder."""
        return all(isinstance(p, str) for p in self.parts)

    def render_value(self, document: Mapping[str, Any], field: str) -> Any:
        """What a single-placeholder template selects, or the rendered text otherwise.

        Raises:
            MappingError: ``MissingField`` when a placeholder selects nothing.
        """
        if self.is_single:
            placeholder = self.parts[0]
            assert isinstance(placeholder, Placeholder)
            result = placeholder.search(document)
            if result is None:
                raise _missing(field, placeholder)
            return result
        return self.render_text(document, field)

    def render_text(self, document: Mapping[str, Any], field: str) -> str:
        """The template as text.

        Raises:
            MappingError: ``MissingField`` when a placeholder selects nothing.
        """
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            result = part.search(document)
            if result is None:
                raise _missing(field, part)
            out.append(to_text(result))
        return "".join(out)


def _missing(field: str, placeholder: Placeholder) -> MappingError:
    return MappingError(
        "MissingField",
        f"{field}: ${{{placeholder.source}}} selected nothing (missing or null in the record)",
    )


def to_text(value: Any) -> str:
    """How a selected value appears inside text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def compile_template(text: str) -> Template:
    """Parse ``text`` into literal parts and compiled JMESPath placeholders.

    Raises:
        TemplateError: An unclosed ``${``, an empty placeholder, a JMESPath syntax error, or an
            expression whose first name is none of :data:`INPUT_NAMES`.
    """
    parts: list[str | Placeholder] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):
            literal.append("${")
            i += 3
            continue
        if text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            source = text[i + 2 : end].strip()
            if not source:
                raise TemplateError(f"empty placeholder '${{}}' at position {i} in {text!r}")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(Placeholder(source, _compile_expression(source)))
            i = end + 1
            continue
        literal.append(text[i])
        i += 1
    if literal:
        parts.append("".join(literal))
    return Template(text, tuple(parts))


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing a placeholder, skipping nested braces and quoted literals."""
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if char in _QUOTES:
            close = text.find(_QUOTES[char], i + 1)
            while close != -1 and _escaped(text, close):
                close = text.find(_QUOTES[char], close + 1)
            if close == -1:
                break
            i = close + 1
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise TemplateError(f"unclosed placeholder: '${{' at position {start - 2} in {text!r}")


def _escaped(text: str, index: int) -> bool:
    """Whether the character at ``index`` follows an odd number of backslashes."""
    count = 0
    while index - count - 1 >= 0 and text[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def _compile_expression(source: str) -> ParsedResult:
    try:
        parsed = jmespath.compile(source)
    except jmespath.exceptions.JMESPathError as exc:
        detail = str(exc).replace("\n", " ")
        raise TemplateError(
            f"'${{{source}}}' is not a valid JMESPath expression: {detail}"
        ) from None
    unknown = sorted(set(_root_names(dict(parsed.parsed))) - set(INPUT_NAMES))
    if unknown:
        raise TemplateError(
            f"'${{{source}}}' reads {', '.join(repr(n) for n in unknown)}, which no record has;"
            f" start from one of: {', '.join(INPUT_NAMES)}"
        )
    return parsed


_LEFT_ONLY = frozenset(
    {
        "subexpression",
        "index_expression",
        "projection",
        "value_projection",
        "flatten",
        "filter_projection",
        "pipe",
    }
)
_ALL_CHILDREN = frozenset(
    {
        "multi_select_dict",
        "multi_select_list",
        "key_val_pair",
        "function_expression",
        "or_expression",
        "and_expression",
        "not_expression",
        "comparator",
    }
)


def _root_names(node: dict[str, Any]) -> list[str]:
    """Field names an expression reads from the record document itself (not from a child)."""
    kind = node.get("type")
    children = node.get("children") or []
    if kind == "field":
        return [str(node["value"])]
    if kind in _LEFT_ONLY:
        return _root_names(children[0]) if children else []
    if kind in _ALL_CHILDREN:
        return [name for child in children for name in _root_names(child)]
    return []

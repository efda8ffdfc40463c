"""Templates: text with ``${expr}`` placeholders, ``expr`` a JMESPath expression.

JMESPath is what the AWS CLI's ``--query`` speaks and ships with botocore, so AWS users know it.
``$${`` writes a literal ``${``. A template made of exactly one placeholder returns what the
expression selects with its type kept (an object stays an object); any other template renders
to text, objects and lists inside it written as compact JSON.

Templates are compiled once, at load, against the shape of the inputs (:class:`Inputs`): an
expression reading a name no record has, or a field of an input that is text or a number
(``${topic.name}``, ``${key.id}`` with a text key), is refused there. Each expression is
compiled to a closure (:mod:`bridge.mapping.expressions`): paths, literals and multi-selects
never reach the JMESPath interpreter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jmespath
import jmespath.exceptions
from jmespath.parser import ParsedResult

from bridge.errors import MappingError, TemplateError
from bridge.mapping import codec
from bridge.mapping.expressions import Evaluate, compile_node, non_finite_literal

INPUT_NAMES = ("value", "key", "headers", "topic", "partition", "offset", "timestamp", "id")
"""The names a template may start from."""

_QUOTES = {"'": "'", '"': '"', "`": "`"}


@dataclass(frozen=True, slots=True)
class Inputs:
    """What each input name can hold, so that impossible reads are refused at load.

    Attributes:
        leaves: Input names holding text or a number, with what they are (no fields to read).
        text_maps: Input names holding an object of text values (one level of fields).
    """

    leaves: Mapping[str, str]
    text_maps: frozenset[str] = frozenset({"headers"})

    @staticmethod
    def for_decoders(key: str = "text", value: str = "json") -> Inputs:
        """The inputs of a mapping whose key and value use the decoders named."""
        leaves = {
            "topic": "the topic name (text)",
            "partition": "a number",
            "offset": "a number",
            "timestamp": "a number (epoch milliseconds)",
            "id": "text (<topic>-<partition>-<offset>)",
        }
        for name, decoder in (("key", key), ("value", value)):
            if decoder in ("text", "bytes"):
                what = "text" if decoder == "text" else "base64 text"
                leaves[name] = f"{what} (decode.{name}: {decoder})"
        return Inputs(leaves)


DEFAULT_INPUTS = Inputs.for_decoders()


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One compiled ``${expr}``: its text, JMESPath's tree, and the closure that evaluates it."""

    source: str
    parsed: ParsedResult
    evaluate: Evaluate

    def search(self, document: Mapping[str, Any], field: str) -> Any:
        """What the expression selects in ``document``.

        Raises:
            MappingError: ``ExpressionFailed`` when JMESPath fails on this record (for example
                a function given the wrong type).
        """
        try:
            return self.evaluate(document)
        except jmespath.exceptions.JMESPathError as exc:
            detail = str(exc).replace("\n", " ")
            raise MappingError(
                "ExpressionFailed", f"{field}: ${{{self.source}}} failed on this record: {detail}"
            ) from None


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template.

    Attributes:
        text: The template as written in the config.
        parts: Literal strings and placeholders, in order.
    """

    text: str
    parts: tuple[str | Placeholder, ...]
    # Decided once from the parts: render_value runs for every field of every record.
    _single: Placeholder | None = field(init=False, repr=False, compare=False)
    _literal: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        single = self.parts[0] if len(self.parts) == 1 else None
        object.__setattr__(self, "_single", single if isinstance(single, Placeholder) else None)
        literal = all(isinstance(p, str) for p in self.parts)
        object.__setattr__(self, "_literal", "".join(map(str, self.parts)) if literal else None)

    @property
    def is_single(self) -> bool:
        """True when the template is one placeholder and nothing else (keeps the value's type)."""
        return self._single is not None

    @property
    def is_literal(self) -> bool:
        """True when the template has no placeholder."""
        return self._literal is not None

    def roots(self) -> set[str]:
        """The input names the template reads."""
        return {
            name
            for part in self.parts
            if isinstance(part, Placeholder)
            for name in _root_names(dict(part.parsed.parsed))
        }

    def render_value(self, document: Mapping[str, Any], field: str, required: bool = True) -> Any:
        """What a single-placeholder template selects, or the rendered text otherwise.

        Args:
            document: The record's template inputs.
            field: The field's name, for messages.
            required: Whether a placeholder that selects nothing is an error; when False the
                answer is None instead (an optional field is then left out).

        Raises:
            MappingError: ``MissingField`` when a placeholder selects nothing and ``required``.
        """
        placeholder = self._single
        if placeholder is not None:
            result = placeholder.search(document, field)
            if result is None and required:
                raise _missing(field, placeholder)
            return result
        if self._literal is not None:
            return self._literal
        return self.render_text(document, field, required)

    def render_text(
        self, document: Mapping[str, Any], field: str, required: bool = True
    ) -> str | None:
        """The template as text; None when a placeholder selects nothing and not ``required``.

        Raises:
            MappingError: ``MissingField`` when a placeholder selects nothing and ``required``.
        """
        if self._literal is not None:
            return self._literal
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            result = part.search(document, field)
            if result is None:
                if not required:
                    return None
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
    return codec.dumps(value)


def truthy(value: Any) -> bool:
    """JMESPath's truth: false, null, empty text, empty list and empty object are false; 0 is
    true."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def compile_template(text: str, inputs: Inputs = DEFAULT_INPUTS) -> Template:
    """Parse ``text`` into literal parts and compiled JMESPath placeholders.

    Raises:
        TemplateError: An unclosed ``${``, an empty placeholder, a JMESPath syntax error, an
            expression whose first name is none of :data:`INPUT_NAMES`, or one reading a field
            of an input that has none.
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
            parsed = _compile_expression(source, inputs)
            parts.append(Placeholder(source, parsed, compile_node(dict(parsed.parsed))))
            i = end + 1
            continue
        literal.append(text[i])
        i += 1
    if literal:
        parts.append("".join(literal))
    return Template(text, tuple(parts))


def compile_predicate(text: str, inputs: Inputs = DEFAULT_INPUTS) -> Placeholder:
    """A filter: exactly one ``${expr}``, true or false per record by JMESPath's truth.

    Raises:
        TemplateError: Not a single placeholder, or the expression does not compile.
    """
    template = compile_template(text, inputs)
    if not template.is_single:
        raise TemplateError(
            f"{text!r} must be exactly one ${{...}} expression, e.g."
            " \"${value.status == 'paid'}\""
        )
    placeholder = template.parts[0]
    assert isinstance(placeholder, Placeholder)
    return placeholder


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


def _compile_expression(source: str, inputs: Inputs) -> ParsedResult:
    try:
        parsed = jmespath.compile(source)
    except jmespath.exceptions.JMESPathError as exc:
        detail = str(exc).replace("\n", " ")
        raise TemplateError(
            f"'${{{source}}}' is not a valid JMESPath expression: {detail}"
        ) from None
    tree = dict(parsed.parsed)
    bad = non_finite_literal(tree)
    if bad is not None:
        raise TemplateError(
            f"'${{{source}}}' has the literal {bad}, which is not a JSON number (JSON has no NaN"
            " or infinities, and a double holds at most about 1.8e308)"
        )
    unknown = sorted(set(_root_names(tree)) - set(INPUT_NAMES))
    if unknown:
        raise TemplateError(
            f"'${{{source}}}' reads {', '.join(repr(n) for n in unknown)}, which no record has;"
            f" start from one of: {', '.join(INPUT_NAMES)}"
        )
    for path in _root_paths(tree):
        root = path[0]
        if root in inputs.leaves and len(path) > 1:
            raise TemplateError(
                f"'${{{source}}}' reads {path[1]!r} of {root}, which is {inputs.leaves[root]}"
                " and has no fields"
            )
        if root in inputs.text_maps and len(path) > 2:
            raise TemplateError(
                f"'${{{source}}}' reads {path[2]!r} of {root}.{path[1]}, but {root} values are"
                " text and have no fields"
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
    return [path[0] for path in _root_paths(node)]


def _root_paths(node: dict[str, Any]) -> list[tuple[str, ...]]:
    """The field paths an expression reads from the document root, as far as they are plain."""
    prefix, _ = _field_prefix(node)
    if prefix:
        return [prefix]
    kind = node.get("type")
    children = node.get("children") or []
    if kind in _LEFT_ONLY:
        return _root_paths(children[0]) if children else []
    if kind in _ALL_CHILDREN:
        return [p for child in children for p in _root_paths(child)]
    return []


def _field_prefix(node: dict[str, Any]) -> tuple[tuple[str, ...], bool]:
    """The leading plain field names of ``node``, and whether they are all of it."""
    kind = node.get("type")
    if kind == "field":
        return (str(node["value"]),), True
    if kind != "subexpression":
        return (), False
    children = node.get("children") or []
    head, complete = _field_prefix(children[0]) if children else ((), False)
    if not complete:
        return head, False
    names = list(head)
    for child in children[1:]:
        if child.get("type") != "field":
            return tuple(names), False
        names.append(str(child["value"]))
    return tuple(names), True

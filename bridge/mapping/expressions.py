"""JMESPath expressions evaluated per record: common shapes as Python closures, the rest by
JMESPath's own interpreter.

A template's expression is parsed once, at load. Walking JMESPath's tree per record costs a
method lookup and a call per node (about 3 µs for ``{v: value, p: partition, o: offset}``), so
the shapes templates are made of are compiled to closures that do what the interpreter does,
node for node: field names and paths (``value.order.id``), indexes (``lines[0]``), literals,
``@``, and multi-select objects and lists (``{id: id, order: value.order}``). Any other node
(functions, comparisons, projections, filters, pipes, ...) is evaluated by the interpreter, with
the compiled parts around it; a property test checks that both give the same result on random
expressions and documents.

The interpreter runs with JMESPath's functions but for ``to_number``, ``sum`` and ``avg``, which
never return a number JSON cannot hold (NaN, infinities): see :class:`JsonFunctions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.functions
from jmespath.visitor import TreeInterpreter

Evaluate = Callable[[Any], Any]
"""A compiled expression: the value it is applied to -> what it selects (None for nothing)."""

_BASE_FUNCTIONS: Any = jmespath.functions.Functions  # its _func_* methods are not in the stubs


class JsonFunctions(jmespath.functions.Functions):
    """JMESPath's functions, except that none returns a number JSON cannot hold (NaN, infinity).

    ``to_number`` gives null for such text (``'NaN'``, ``'1e400'``), as for any text that is not
    a JSON number; ``sum`` and ``avg`` beyond a double fail the expression (``ExpressionFailed``).
    """

    @jmespath.functions.signature({"types": []})
    def _func_to_number(self, arg: Any) -> Any:
        result = _BASE_FUNCTIONS._func_to_number(self, arg)
        return None if isinstance(result, float) and not math.isfinite(result) else result

    @jmespath.functions.signature({"types": ["array-number"]})
    def _func_sum(self, arg: Any) -> Any:
        return _finite(_BASE_FUNCTIONS._func_sum(self, arg), "sum")

    @jmespath.functions.signature({"types": ["array-number"]})
    def _func_avg(self, arg: Any) -> Any:
        return _finite(_BASE_FUNCTIONS._func_avg(self, arg), "avg")


def _finite(value: Any, name: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise jmespath.exceptions.JMESPathError(f"{name}() is beyond what a JSON number can hold")
    return value


# Stateless between calls; one per process saves ~1 µs a call.
INTERPRETER = TreeInterpreter(jmespath.Options(custom_functions=JsonFunctions()))


def compile_node(node: dict[str, Any]) -> Evaluate:
    """A closure doing what ``INTERPRETER.visit(node, value)`` does.

    Raises (when called): what the interpreter raises for the parts it evaluates
    (``jmespath.exceptions.JMESPathError``).
    """
    kind = node.get("type")
    children: list[dict[str, Any]] = node.get("children") or []
    if kind == "field":
        return _field(str(node["value"]))
    if kind in ("subexpression", "index_expression"):
        names = _field_names(node)
        if names is not None:
            return _path(names)
        return _chain(tuple(compile_node(child) for child in children))
    if kind == "index":
        return _index(int(node["value"]))
    if kind == "literal":
        return _constant(node["value"])
    if kind in ("current", "identity"):
        return _identity
    if kind == "multi_select_dict":
        pairs = tuple((str(pair["value"]), compile_node(pair["children"][0])) for pair in children)
        return _select_dict(pairs)
    if kind == "multi_select_list":
        return _select_list(tuple(compile_node(child) for child in children))
    return _interpreted(node)


def _field_names(node: dict[str, Any]) -> tuple[str, ...] | None:
    """``('value', 'a', 'b')`` for ``value.a.b`` (however the parser nested it), else None."""
    kind = node.get("type")
    if kind == "field":
        return (str(node["value"]),)
    if kind != "subexpression":
        return None
    names: list[str] = []
    for child in node.get("children") or ():
        more = _field_names(child)
        if more is None:
            return None
        names.extend(more)
    return tuple(names)


# Each node as the interpreter evaluates it (jmespath/visitor.py, TreeInterpreter.visit_*). A
# record's document holds JSON values only, so "has .get()" (the interpreter's test for a field)
# is "is a dict".


def _field(name: str) -> Evaluate:
    def field(value: Any) -> Any:
        return value.get(name) if isinstance(value, dict) else None

    return field


def _path(names: tuple[str, ...]) -> Evaluate:
    def path(value: Any) -> Any:
        for name in names:
            if not isinstance(value, dict):
                return None
            value = value.get(name)
        return value

    return path


def _chain(steps: tuple[Evaluate, ...]) -> Evaluate:
    def chain(value: Any) -> Any:
        for step in steps:  # like the interpreter, on to the end even after a None
            value = step(value)
        return value

    return chain


def _index(position: int) -> Evaluate:
    def index(value: Any) -> Any:
        if not isinstance(value, list):
            return None
        try:
            return value[position]
        except IndexError:
            return None

    return index


def _constant(literal: Any) -> Evaluate:
    def constant(value: Any) -> Any:
        return literal  # the same object every time, as the interpreter returns it

    return constant


def _identity(value: Any) -> Any:
    return value


def _select_dict(pairs: tuple[tuple[str, Evaluate], ...]) -> Evaluate:
    def select_dict(value: Any) -> Any:
        if value is None:
            return None
        return {key: evaluate(value) for key, evaluate in pairs}

    return select_dict


def _select_list(items: tuple[Evaluate, ...]) -> Evaluate:
    def select_list(value: Any) -> Any:
        if value is None:
            return None
        return [evaluate(value) for evaluate in items]

    return select_list


def _interpreted(node: dict[str, Any]) -> Evaluate:
    visit: Any = INTERPRETER.visit  # the stubs type nodes as TypedDicts; ours are plain dicts

    def interpreted(value: Any) -> Any:
        return visit(node, value)

    return interpreted


def non_finite_literal(node: dict[str, Any]) -> float | None:
    """A NaN or infinite number in a literal of the expression (JMESPath reads `NaN`, `1e400`)."""
    if node.get("type") == "literal":
        return _non_finite(node.get("value"))
    for child in node.get("children") or ():
        found = non_finite_literal(child)
        if found is not None:
            return found
    return None


def _non_finite(value: Any) -> float | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        found = _non_finite(item)
        if found is not None:
            return found
    return None

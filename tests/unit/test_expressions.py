"""Compiled expressions select exactly what JMESPath's interpreter selects.

Random expressions mixing the compiled shapes (fields, paths, indexes, literals, ``@``,
multi-selects) with interpreted ones (functions, comparisons, projections, filters, pipes,
flattening, slices) are evaluated both ways on random documents: the same value with the same
types, or the same error (even one JMESPath lets escape, such as ``TypeError`` for `1` > 's').
"""

from __future__ import annotations

import math
from typing import Any

import jmespath
import jmespath.exceptions
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from bridge.mapping.expressions import INTERPRETER, compile_node
from bridge.mapping.template import compile_template

NAMES = ["a", "b", "value", "topic", '"x y"', '"é"']


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 is not 1.0 nor True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


names = st.sampled_from(NAMES)
literals = st.sampled_from(
    ["`1`", "`0`", "`2.5`", '`"s"`', "'raw'", "`null`", "`true`", "`[1, 2]`", '`{"a": 1}`']
)
atoms = (
    names | literals | st.just("@") | st.builds(lambda n, i: f"{n}[{i}]", names, st.integers(-3, 3))
)


def compound(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(inner, inner)
    return st.one_of(
        st.builds(lambda e, n: f"{e}.{n}", inner, names),
        st.builds(lambda e, i: f"({e})[{i}]", inner, st.integers(-2, 2)),
        st.builds(
            lambda items: "{" + ", ".join(f"k{i}: {e}" for i, e in enumerate(items)) + "}",
            st.lists(inner, min_size=1, max_size=3),
        ),
        st.builds(
            lambda items: "[" + ", ".join(items) + "]", st.lists(inner, min_size=1, max_size=3)
        ),
        st.builds(lambda e, k, v: f"{e}.{{{k}: {v}}}", inner, names, inner),
        st.builds(lambda e, n: f"{e}.[{n}, @]", inner, names),
        st.builds(lambda e: f"length({e})", inner),
        st.builds(lambda e: f"to_string({e})", inner),
        st.builds(lambda e: f"{e}.to_string(@)", inner),
        st.builds(lambda e: f"keys({e})", inner),
        st.builds(lambda e: f"to_number({e})", inner),
        st.builds(lambda p: f"{p[0]} == {p[1]}", pair),
        st.builds(lambda p: f"{p[0]} > {p[1]}", pair),
        st.builds(lambda p: f"{p[0]} && {p[1]}", pair),
        st.builds(lambda p: f"{p[0]} || {p[1]}", pair),
        st.builds(lambda e: f"!({e})", inner),
        st.builds(lambda e, n: f"{e}[*].{n}", inner, names),
        st.builds(lambda e, n: f"{e}.*.{n}", inner, names),
        st.builds(lambda e, n: f"{e}[?{n} == `1`]", inner, names),
        st.builds(lambda e: f"{e}[]", inner),
        st.builds(lambda e: f"{e}[1:]", inner),
        st.builds(lambda p: f"{p[0]} | {p[1]}", pair),
    )


expressions = st.recursive(atoms, compound, max_leaves=8)
leaf_values = (
    st.none() | st.booleans() | st.integers(-2, 3) | st.floats(-3, 3) | st.text(max_size=3)
)
documents = st.recursive(
    leaf_values,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "b", "value", "topic", "x y", "é", "k0"]), inner, max_size=5
        )
    ),
    max_leaves=25,
)


def outcome(evaluate: Any, document: Any) -> Any:
    try:
        return ("value", evaluate(document))
    except Exception as exc:  # JMESPathError, and what jmespath lets escape (int > str)
        return ("error", type(exc).__name__)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # long reprs
@settings(max_examples=1500, deadline=None)
@given(expressions, documents)
@example("{k0: value, k1: topic, k2: a.b}", {"value": {"x": 1}, "topic": "t", "a": {"b": [1]}})
@example("a.b[0].value", {"a": {"b": [{"value": 2}]}})
@example("a[-1]", {"a": [1, 2, 3]})
@example("a.b.{k: a}", {"a": None})
@example("a.length(@)", {"a": "abc"})
@example("a.b.to_string(@)", {})  # the interpreter goes on after a None: "null"
@example("{k0: value, k0: a}", {"value": 1, "a": 2})
def test_compiled_selects_what_the_interpreter_selects(expression: str, document: Any) -> None:
    try:
        parsed = jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError:
        assume(False)
        return
    tree = dict(parsed.parsed)
    compiled = outcome(compile_node(tree), document)
    interpreted = outcome(lambda doc: INTERPRETER.visit(tree, doc), document)
    assert compiled[0] == interpreted[0], (compiled, interpreted)
    assert same(compiled[1], interpreted[1]), (compiled, interpreted)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${value.order.id}", "o-1"),
        ("${ {v: value.order, p: partition, t: `true`, l: [topic, @.partition]} }", None),
        ("${value.lines[1].sku}", "B"),
        ("${value.lines[*].sku}", ["A", "B"]),
    ],
)
def test_templates_render_what_jmespath_searches(template: str, expected: Any) -> None:
    document = {
        "value": {"order": {"id": "o-1"}, "lines": [{"sku": "A"}, {"sku": "B"}]},
        "topic": "orders",
        "partition": 3,
    }
    rendered = compile_template(template).render_value(document, "detail")
    assert same(rendered, jmespath.search(template[2:-1].strip(), document))
    if expected is not None:
        assert rendered == expected

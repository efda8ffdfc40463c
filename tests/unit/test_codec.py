"""The fast JSON codec decodes and encodes as the standard library does, strictly.

Decoding is compared with a reference that is plain ``json`` (refusing NaN, Infinity and numbers
beyond a double), on random documents in random formatting and on random bytes: the same value,
with the same types, or the same refusal. Encoding is compared with ``json.dumps``: the same text
where no float is involved, else the same value read back.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from bridge.errors import MappingError, TemplateError
from bridge.mapping import codec
from bridge.mapping.decoders import decode_json
from bridge.mapping.template import compile_template, to_text


def reference(data: bytes) -> Any:
    """What decode_json must do: UTF-8, then json.loads without NaN/Infinity/1e400."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return ("refused", "ValueNotUtf8")

    def refuse(name: str) -> Any:
        raise ValueError(name)

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value

    try:
        return json.loads(text, parse_constant=refuse, parse_float=finite)
    except ValueError:
        return ("refused", "ValueNotJson")


def ours(data: bytes) -> Any:
    try:
        return decode_json(data, "value")
    except MappingError as exc:
        return ("refused", exc.code)


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 is not 1.0, -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(
    documents,
    st.sampled_from([None, 0, 2]),
    st.sampled_from([(",", ":"), (", ", ": "), (" , ", " : ")]),
    st.booleans(),
)
@example(2**64, None, (",", ":"), True)
@example(-(2**63) - 1, None, (",", ":"), True)
@example({"a": 12345678901234567890123}, None, (",", ":"), True)
def test_decode_matches_the_standard_library(
    doc: Any, indent: int | None, separators: tuple[str, str], ensure_ascii: bool
) -> None:
    text = json.dumps(doc, indent=indent, separators=separators, ensure_ascii=ensure_ascii)
    data = text.encode("utf-8")
    assert same(ours(data), reference(data))
    assert same(ours(data), doc)


number_texts = st.from_regex(
    r"\A-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?\Z", fullmatch=True
)


@settings(max_examples=400, deadline=None)
@given(number_texts)
@example("1e400")
@example("-1e400")
@example("1e-400")
@example("18446744073709551615")
@example("18446744073709551616")
@example("-9223372036854775808")
@example("-9223372036854775809")
def test_numbers_decode_as_the_standard_library_reads_them(text: str) -> None:
    for data in (text.encode(), f'{{"n": [{text}]}}'.encode()):
        assert same(ours(data), reference(data))


fragments = st.sampled_from(
    [
        "{", "}", "[", "]", ",", ":", '"', "\\", "\\u", "d800", "dc00", "NaN", "Infinity",
        "-", "1", "0", "e", ".", "true", "null", " ", "\t", "\n", "\x0b", "\xa0", "é", "\ufeff",
        '"a"', '"\\ud800"', '"\\n"', "\x00", "1e400", "12345678901234567890",
    ]
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(st.lists(fragments, max_size=12).map("".join), st.sampled_from(["utf-8", "latin-1"]))
@example('{"a": 1, "b": 2, "a": 3}', "utf-8")
@example('"\\ud800"', "utf-8")
@example("[1, NaN]", "utf-8")
@example('{"n": -Infinity}', "utf-8")
def test_any_text_is_refused_or_read_as_the_standard_library_reads_it(
    text: str, encoding: str
) -> None:
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        assume(False)
    assert same(ours(data), reference(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_any_bytes_are_refused_or_read_as_the_standard_library_reads_them(data: bytes) -> None:
    assert same(ours(data), reference(data))


@pytest.mark.parametrize(
    "data", [b'{"n": NaN}', b'{"n": -Infinity}', b"Infinity", b'{"n": 1e400}', b"[-1E999]"]
)
def test_nan_infinity_and_numbers_beyond_a_double_are_not_json(data: bytes) -> None:
    with pytest.raises(MappingError) as caught:
        decode_json(data, "value")
    assert (caught.value.code, caught.value.stage) == ("ValueNotJson", "decode")


def test_integers_beyond_64_bits_keep_every_digit() -> None:
    big = 12345678901234567890123456789
    assert decode_json(b'{"id": %d}' % big, "value") == {"id": big}
    assert codec.dumps({"id": big, "neg": -big}) == f'{{"id":{big},"neg":{-big}}}'


def test_many_brackets_take_the_path_that_measures_depth() -> None:
    with pytest.raises(MappingError) as caught:
        decode_json(b"[" * 1010 + b"]" * 1010, "value")
    assert (caught.value.code, caught.value.stage) == ("NestingTooDeep", "decode")
    wide = b"[" + b",".join([b"[1]"] * 2000) + b"]"
    assert decode_json(wide, "value") == [[1]] * 2000


def no_floats(value: Any) -> bool:
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        return all(no_floats(v) for v in value.values())
    if isinstance(value, list):
        return all(no_floats(v) for v in value)
    return True


@settings(max_examples=400, deadline=None)
@given(documents)
@example({"deep": [[[[[[[[[[1]]]]]]]]]]})
@example({"s": '\u2028\x7f\x00\x1f/é😀\\"'})
def test_encode_is_compact_json_of_the_same_value(doc: Any) -> None:
    text = codec.dumps(doc)
    assert same(json.loads(text), doc)
    if no_floats(doc):
        assert text == json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    assert to_text(doc) == (doc if isinstance(doc, str) else text)


def test_encode_falls_back_for_what_orjson_refuses() -> None:
    deep: Any = 1
    for _ in range(400):  # orjson stops at 255 levels
        deep = [deep]
    assert codec.dumps(deep) == "[" * 400 + "1" + "]" * 400
    assert codec.dumps({1: "a"}) == '{"1":"a"}'  # non-text keys, as json.dumps writes them
    assert codec.dumps("\ud800") == json.dumps("\ud800", ensure_ascii=False)
    with pytest.raises(TypeError):
        codec.dumps({"x": object()})


def test_templates_produce_no_number_json_cannot_hold() -> None:
    # orjson would write NaN as null: no template may produce one in the first place.
    doc = {"value": {"t": "NaN", "i": "-inf", "l": [1e308, 1e308], "n": "12.5"}}
    number = compile_template("${ {t: to_number(value.t), i: to_number(value.i)} }")
    assert number.render_value(doc, "detail") == {"t": None, "i": None}
    assert compile_template("${to_number(value.n)}").render_value(doc, "detail") == 12.5
    for function in ("sum", "avg"):
        with pytest.raises(MappingError) as caught:
            compile_template(f"${{{function}(value.l)}}").render_value(doc, "detail")
        assert caught.value.code == "ExpressionFailed"
    for literal in ("`NaN`", "`1e400`", '`{"a": [-Infinity]}`'):
        with pytest.raises(TemplateError, match="not a JSON number"):
            compile_template(f"${{ {{x: {literal}}} }}")


@pytest.mark.parametrize("depth", [254, 255, 999, 1000, 1001, 1024, 1025])
def test_depth_is_judged_as_before_whichever_decoder_runs(depth: int) -> None:
    # depth levels of nesting inside 2000 siblings: always more brackets than the fast path takes
    # on trust, so orjson's encoder has to vouch for the depth or json measures it.
    deep = b"[" * depth + b"]" * depth
    data = b"[" + b",".join([b"[]"] * 2000 + [deep]) + b"]"
    if depth + 1 > 1000:
        with pytest.raises(MappingError) as caught:
            decode_json(data, "value")
        assert (caught.value.code, caught.value.stage) == ("NestingTooDeep", "decode")
    else:
        value = decode_json(data, "value")
        assert len(value) == 2001 and value[0] == []
        levels, inner = 0, value[-1]
        while inner:
            levels, inner = levels + 1, inner[0]
        assert levels == depth - 1

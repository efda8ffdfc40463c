"""The one check every reliability scenario ends with: an exact account of every record.

Given what was produced (the source topics read back), what the endpoint accepted and what the
dead-letter topic holds, :func:`account` says, record by record:

* every produced record was received by the endpoint *as its template says* (Source, DetailType,
  and a Detail that is strict JSON carrying the value and the Kafka coordinates) or is in the
  dead-letter topic with a reason (stage, code, message) and its original key, value and headers
  byte for byte;
* none is lost; nothing arrives that was never produced;
* how many arrived more than once (duplicates), so the caller can hold them to a bound.

Pure: no broker, no endpoint; the harness gathers the inputs.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Coord = tuple[str, int, int]
ERRORS_PREFIX = "__bridge.errors."
STAGES = frozenset({"decode", "map", "validate", "send"})
RETRYABLE_ENTRY_CODES = frozenset({"ThrottlingException", "InternalFailure"})

SOURCE = "com.example.reliability"
DETAIL_TYPE = "Reliability ${topic}"
DETAIL = "${ {value: value, kafka: {topic: topic, partition: partition, offset: offset}} }"
"""The envelope every scenario uses: the value plus the Kafka coordinates (what users are told to
do to drop duplicates)."""

_UNSET: Any = object()


def mapping(topic: str, **overrides: Any) -> dict[str, Any]:
    """The mapping of a scenario's topic: the Detail envelope with the coordinates."""
    return {
        "topic": topic,
        "source": SOURCE,
        "detail_type": DETAIL_TYPE,
        "detail": DETAIL,
        **overrides,
    }


@dataclass(frozen=True)
class Expect:
    """What should become of one record.

    ``deliver``: received with ``source``, ``detail_type`` and ``value`` in its Detail envelope;
    otherwise dead-lettered with a code in ``codes`` (None: any) at a stage in ``stages``.
    """

    deliver: bool
    source: str = SOURCE
    detail_type: str | None = None
    value: Any = _UNSET
    codes: frozenset[str] | None = None
    stages: frozenset[str] | None = None

    @classmethod
    def dead_letter(cls, *codes: str, stages: Iterable[str] | None = None) -> Expect:
        return cls(False, codes=frozenset(codes) or None, stages=frozenset(stages or ()) or None)


def strict_json(text: str) -> Any:
    """``json.loads`` refusing NaN and Infinity, which JSON (RFC 8259) does not have."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


BAD_PREFIX = b"not json {"
"""How the scenarios' streams make a record the bridge must dead-letter (ValueNotJson)."""


def default_expect(msg: Any) -> Expect:
    """The scenarios' records: JSON values delivered by :func:`mapping`, bad ones dead-lettered."""
    if msg.value().startswith(BAD_PREFIX):
        return Expect.dead_letter("ValueNotJson", stages=["decode"])
    return Expect(
        True,
        detail_type=f"Reliability {msg.topic()}",
        value=json.loads(msg.value()),
    )


def coordinates(entry: Mapping[str, Any]) -> Coord | None:
    """The Kafka coordinates an entry's Detail envelope carries (None: not an envelope)."""
    try:
        kafka = json.loads(entry["Detail"])["kafka"]
        return str(kafka["topic"]), int(kafka["partition"]), int(kafka["offset"])
    except (KeyError, TypeError, ValueError):
        return None


def dead_letter_headers(msg: Any) -> tuple[dict[str, str], list[tuple[str, bytes | None]]]:
    """(the ``__bridge.errors.*`` headers, the original headers in order)."""
    ours: dict[str, str] = {}
    original: list[tuple[str, bytes | None]] = []
    for name, value in msg.headers() or []:
        if name.startswith(ERRORS_PREFIX):
            ours[name.removeprefix(ERRORS_PREFIX)] = (value or b"").decode("utf-8", "replace")
        else:
            original.append((name, value))
    return ours, original


@dataclass
class Account:
    """The outcome of :func:`account`."""

    records: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    lost: list[Coord] = field(default_factory=list)
    duplicates: int = 0
    delivered_and_dead_lettered: int = 0
    dead_letter_codes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)
        elif len(self.problems) == 50:
            self.problems.append("... (more problems not shown)")


def _same(a: Any, b: Any) -> bool:
    """Equality that also holds for NaN (a record's value compared with what arrived)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def account(
    produced: Mapping[Coord, Any],
    received: Iterable[Mapping[str, Any]],
    dead: Iterable[Any],
    expect: Callable[[Any], Expect] = default_expect,
    send_codes: Iterable[str] = (),
    max_attempts: int | None = None,
) -> Account:
    """Account for every produced record.

    Args:
        produced: Every record of the source topics, by coordinates (``confluent_kafka``
            messages read back from the broker).
        received: The entries the endpoint accepted (answered with an EventId), repeats included.
        dead: The dead-letter topic's messages, repeats included.
        expect: What should become of a record.
        send_codes: Error codes the endpoint was told to inject: a record expected to be
            delivered may instead be dead-lettered at stage ``send`` with one of them.
        max_attempts: ``retry.max_attempts``: a dead letter's ``attempts`` never exceeds it,
            and a retryable code is dead-lettered only after exactly that many.
    """
    out = Account(records=len(produced))
    allowed_send = frozenset(send_codes)
    expectations: dict[Coord, Expect] = {}

    def expected(where: Coord) -> Expect:
        if where not in expectations:
            expectations[where] = expect(produced[where])
        return expectations[where]

    got: Counter[Coord] = Counter()
    for entry in received:
        where = coordinates(entry)
        if where is None or where not in produced:
            out.problem(f"the endpoint received an entry of no produced record: {entry!r:.300}")
            continue
        got[where] += 1
        want = expected(where)
        if not want.deliver:
            out.problem(
                f"{where}: delivered, but it should have been dead-lettered"
                f" ({sorted(want.codes or ['any code'])}); entry {entry!r:.300}"
            )
            continue
        if entry.get("Source") != want.source:
            out.problem(f"{where}: Source {entry.get('Source')!r}, expected {want.source!r}")
        if want.detail_type is not None and entry.get("DetailType") != want.detail_type:
            out.problem(
                f"{where}: DetailType {entry.get('DetailType')!r:.200},"
                f" expected {want.detail_type!r:.200}"
            )
        try:
            detail = strict_json(entry["Detail"])
        except ValueError as exc:
            out.problem(f"{where}: Detail is not strict JSON ({exc}): {entry['Detail']!r:.200}")
            continue
        if want.value is not _UNSET and not _same(detail.get("value"), want.value):
            out.problem(f"{where}: Detail value {detail.get('value')!r:.200} is not the record's")

    dead_got: Counter[Coord] = Counter()
    for msg in dead:
        ours, original = dead_letter_headers(msg)
        try:
            where = (ours["topic"], int(ours["partition"]), int(ours["offset"]))
        except (KeyError, ValueError):
            out.problem(f"a dead letter without its coordinates: headers {ours}")
            continue
        if where not in produced:
            out.problem(f"a dead letter of no produced record: {where}")
            continue
        dead_got[where] += 1
        source = produced[where]
        if msg.key() != source.key() or msg.value() != source.value():
            out.problem(f"{where}: the dead letter does not keep the original key and value")
        if original != list(source.headers() or []):
            out.problem(f"{where}: the dead letter does not keep the original headers")
        code, stage = ours.get("code", ""), ours.get("stage", "")
        out.dead_letter_codes[code] += 1
        if not code or not ours.get("message") or stage not in STAGES:
            out.problem(f"{where}: dead letter without a reason: {ours}")
        for name in ("attempts", "timestamp"):
            if not ours.get(name, "").isdigit():
                out.problem(f"{where}: dead-letter header {name} missing or not a number: {ours}")
        attempts = int(ours["attempts"]) if ours.get("attempts", "").isdigit() else 0
        want = expected(where)
        if want.deliver:
            if stage != "send" or code not in allowed_send:
                out.problem(
                    f"{where}: dead-lettered ({stage}/{code}: {ours.get('message')!r:.200}), but"
                    f" it should have been delivered (injected failures: {sorted(allowed_send)})"
                )
            elif max_attempts is not None:
                if attempts > max_attempts or attempts < 1:
                    out.problem(f"{where}: {attempts} attempts (retry.max_attempts {max_attempts})")
                if code == "ThrottlingException":
                    out.problem(f"{where}: dead-lettered for throttling (the quota: held)")
                elif code in RETRYABLE_ENTRY_CODES and attempts != max_attempts:
                    out.problem(
                        f"{where}: retryable {code} dead-lettered after {attempts} attempts, not"
                        f" {max_attempts}"
                    )
        else:
            if want.codes is not None and code not in want.codes:
                out.problem(f"{where}: dead-lettered with {code}, expected one of {want.codes}")
            if want.stages is not None and stage not in want.stages:
                out.problem(f"{where}: dead-lettered at stage {stage}, expected {want.stages}")

    out.delivered = len(got)
    out.dead_lettered = len(dead_got)
    both = set(got) & set(dead_got)
    out.delivered_and_dead_lettered = len(both)
    out.duplicates = (
        sum(n - 1 for n in got.values()) + sum(n - 1 for n in dead_got.values()) + len(both)
    )
    out.lost = sorted(set(produced) - set(got) - set(dead_got))
    for where in out.lost[:20]:
        out.problem(f"{where}: LOST (neither received by the endpoint nor dead-lettered)")
    return out

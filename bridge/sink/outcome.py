"""What happened to each entry of a PutEvents call. Pure: decided from the response alone.

PutEvents answers HTTP 200 even when some entries failed, so every index is judged on its own:
delivered (EventId), retryable (ThrottlingException, InternalFailure) or permanent (any other
ErrorCode). A call that failed as a whole gives every entry the same outcome.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.codes import (
    CREDENTIAL_CODES,
    HOLD_CALL_CODES,
    RETRYABLE_CALL_CODES,
    RETRYABLE_ENTRY_CODES,
    THROTTLED_ENTRY_CODE,
    THROTTLING_CALL_CODES,
)


class Kind(enum.Enum):
    """The three fates of an entry."""

    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The fate of one entry, with the error AWS gave."""

    kind: Kind
    code: str = ""
    message: str = ""
    event_id: str = ""
    whole_call: bool = False
    hold: bool = False
    """Not the entry's fault (the bridge's credentials): retried without using up attempts."""
    throttled: bool = False
    """The bus said "too much" (the account's quota): decided here, by the sink that parsed the
    answer, so that the rate control needs no list of every bus's throttling codes."""
    deduplicated: bool = False
    """Delivered, and answered ``DEDUPLICATED`` by a bus that deduplicates (the new bus): an
    earlier send of it was published already. Success, counted apart."""


DELIVERED = Kind.DELIVERED


def classify_response(response: Mapping[str, Any], sent: int) -> list[Outcome]:
    """Outcomes of a PutEvents response, index for index with the ``sent`` entries.

    A response whose ``Entries`` do not match the request in length is treated as a failure of
    the whole call (retryable): no index of it can be trusted.
    """
    entries: Sequence[Mapping[str, Any]] = response.get("Entries") or ()
    if len(entries) != sent:
        return [
            Outcome(
                Kind.RETRY,
                "ResponseMismatch",
                f"response has {len(entries)} entries for {sent} sent",
                whole_call=True,
            )
        ] * sent
    return [classify_entry(e) for e in entries]


def classify_entry(result: Mapping[str, Any]) -> Outcome:
    """One element of the response's ``Entries``."""
    code = result.get("ErrorCode")
    if not code:
        event_id = result.get("EventId")
        if event_id:
            return Outcome(Kind.DELIVERED, event_id=str(event_id))
        return Outcome(Kind.RETRY, "NoEventId", "entry has neither EventId nor ErrorCode")
    message = str(result.get("ErrorMessage") or "")
    if code == THROTTLED_ENTRY_CODE:
        # The account's quota, not the entry: held (sent again without using up attempts).
        return Outcome(Kind.RETRY, code, message, hold=True, throttled=True)
    kind = Kind.RETRY if code in RETRYABLE_ENTRY_CODES else Kind.PERMANENT
    return Outcome(kind, str(code), message)


def classify_call_error(code: str, status: int | None, message: str) -> Outcome:
    """A call that failed as a whole (botocore ``ClientError``).

    Throttling and server-side errors (5xx and :data:`bridge.codes.RETRYABLE_CALL_CODES`),
    credential errors (:data:`bridge.codes.CREDENTIAL_CODES`), permission errors and a missing
    bus are held: retried with backoff without using up ``retry.max_attempts``. None of them is
    the entries' fault; an outage or an IAM mistake is the same for every record, and
    dead-lettering every record meanwhile would be worse than waiting. Request validation errors
    are permanent.
    """
    if code in THROTTLING_CALL_CODES or status == 429:
        return Outcome(Kind.RETRY, code, message, whole_call=True, hold=True, throttled=True)
    if code in RETRYABLE_CALL_CODES or (status is not None and status >= 500):
        return Outcome(Kind.RETRY, code, message, whole_call=True, hold=True)
    if code in CREDENTIAL_CODES:
        return credentials_error(code, message)
    if code in HOLD_CALL_CODES:
        return Outcome(Kind.RETRY, code, message, whole_call=True, hold=True)
    return Outcome(Kind.PERMANENT, code, message, whole_call=True)


def credentials_error(code: str, message: str) -> Outcome:
    """A call that failed for the bridge's credentials (none, expired, or their refresh failed).

    Held: retried with backoff for as long as it takes, never dead-lettered. Every record would
    fail the same way, and the dead-letter topic is no place for a fleet-wide IAM problem.
    """
    return Outcome(Kind.RETRY, code, message, whole_call=True, hold=True)


def transport_error(name: str, message: str) -> Outcome:
    """A call that got no HTTP answer (connection refused or reset, timeout): held."""
    return Outcome(Kind.RETRY, name, message, whole_call=True, hold=True)

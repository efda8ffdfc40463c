"""Error and reason codes that several layers share, in one leaf module (it imports nothing).

The sinks judge responses by them (:mod:`bridge.sink.outcome`, :mod:`bridge.sink.alibaba`), the
mapping raises its reason codes, and the metrics clamp label values to the codes known here
(:mod:`bridge.observability.metrics`). A code named in two places is defined here once.
"""

from __future__ import annotations

from typing import Final

# -- the mapping's reason codes ---------------------------------------------------------------

MAPPING_CODES: Final = frozenset(
    {
        "NoMapping",
        "Tombstone",
        "NullKey",
        "ValueNotJson",
        "ValueNotUtf8",
        "KeyNotJson",
        "KeyNotUtf8",
        "ValueNotAvro",
        "KeyNotAvro",
        "ValueNotProtobuf",
        "KeyNotProtobuf",
        "ValueNotJsonSchema",
        "KeyNotJsonSchema",
        "NoSchemaId",
        "SchemaNotFound",
        "SchemaRegistryUnavailable",
        "NestingTooDeep",
        "MissingField",
        "WrongType",
        "ExpressionFailed",
        "DetailNotObject",
        "TooManyResources",
        "DetailTypeTooLong",
        "SourceReserved",
        "EmptySource",
        "EmptyDetailType",
        "BadTime",
        "EntryTooLarge",
        "OffloadFailed",
        "OffloadPathMissing",
        "MappingFailed",
    }
)
"""Every reason code the mapping raises (bounded: metrics may use them as label values)."""

SINK_ENTRY_CODES: Final = frozenset(
    {"NotPartnerSource", "InvalidCloudEvent", "IdTooLong", "BlankId", "SourceTooLong"}
)
"""Reason codes of a sink refusing a mapped entry (``prepare``), dead-lettered like the above."""

GROUP_HELD: Final = "GroupHeld"
"""The dead-letter reason of an entry of an event group held after an earlier entry of the group
was dead-lettered (``pipeline.group_on_dead_letter: hold``)."""

FILTER_REASONS: Final = ("filter", "tombstone", "null_key")
"""The reasons of :class:`bridge.errors.FilteredOut` (bounded, for a metric label)."""

# -- AWS EventBridge --------------------------------------------------------------------------

RETRYABLE_ENTRY_CODES: Final = frozenset({"ThrottlingException", "InternalFailure"})
"""Per-entry ErrorCodes that succeed if sent again later; everything else is permanent."""

THROTTLED_ENTRY_CODE: Final = "ThrottlingException"
"""The per-entry code of the account's quota, not the entry: held, not counted as an attempt."""

PERMANENT_ENTRY_CODES: Final = frozenset(
    {
        "InvalidArgument",
        "MalformedDetail",
        "AccessDeniedException",
        "InvalidAccountIdException",
        "RedactionFailure",
        "NotAuthorizedForSourceException",
        "NotAuthorizedForDetailTypeException",
    }
)
"""Per-entry ErrorCodes AWS documents as permanent (any unknown code is permanent too)."""

RETRYABLE_CALL_CODES: Final = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "InternalException",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
"""Whole-call error codes (botocore ClientError) that are retried like retryable entries."""

THROTTLING_CALL_CODES: Final = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    }
)
"""Whole-call codes with which AWS says the account's quota is exceeded (throttled)."""

HOLD_CALL_CODES: Final = frozenset({"AccessDeniedException", "ResourceNotFoundException"})
"""Whole-call codes of a permission error or a missing bus: held, never the entries' fault."""

CREDENTIAL_CODES: Final = frozenset(
    {
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)
"""Whole-call codes that say the bridge's credentials are wrong or gone, never the entries."""

TRANSPORT_CODES: Final = frozenset(
    {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
    }
)
"""Transport failures, by botocore's exception class names."""

# -- The new bus: EventBridge Custom Event Bus (eventsv2) -------------------------------------
# botocore's eventbridgev2 model (2025-05-15) lists the whole-call errors; per-entry ErrorCodes are
# not enumerated: the retryable whole-call errors are taken as retryable per entry too.

BUS_V2_RETRYABLE_ENTRY_CODES: Final = frozenset(
    {"ThrottlingException", "InternalException", "InternalFailure"}
)
"""Per-entry ErrorCodes of the new bus that succeed if sent again later; others are permanent."""

BUS_V2_HOLD_CALL_CODES: Final = frozenset(
    {"InvalidStateException", "SchemaRegistryUnavailableException"}
)
"""Whole-call errors of the new bus held like an outage: the bus is being created or updated
(409), the schema registry could not be reached (the model says: retry)."""

BUS_V2_SUCCESS_CODES: Final = frozenset({"PUBLISHED", "DEDUPLICATED"})

# -- Alibaba Cloud EventBridge ----------------------------------------------------------------

# Error codes that succeed if the same events are sent again later. Sources:
# - "InternalError": apache/rocketmq-eventbridge (the open-source EventBridge core) sets it on an
#   entry whose storage write failed (DefaultSendCallback.onException; DefaultErrorCode, HTTP 500).
# - "TooManyRequests": EventBridge "Error codes" page, HTTP 429, "Try again later".
# - "Throttling", "Throttling.User", "Throttling.Api", "ServiceUnavailable": Alibaba Cloud's common
#   OpenAPI codes (e.g. the Alibaba Cloud DNS error-code reference: Throttling is HTTP 400,
#   ServiceUnavailable 503); matched by prefix "Throttling".
# Every other code (SignatureDoesNotMatch, InvalidAccessKeyId, AccessDenied, EventBusNotExist,
# ...) is permanent.
ALIBABA_RETRYABLE_CODES: Final = frozenset(
    {"InternalError", "TooManyRequests", "ServiceUnavailable"}
)
ALIBABA_RETRYABLE_CODE_PREFIXES: Final = ("Throttling",)
ALIBABA_THROTTLED_CODE: Final = "TooManyRequests"
"""With the ``Throttling`` prefix: the quota, not the entry (held)."""
ALIBABA_SUCCESS_CODE: Final = "Success"
"""apache/rocketmq-eventbridge marks delivered entries with ErrorCode "Success" and an EventId."""
ALIBABA_HOLD_CODES: Final = frozenset(
    {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidAccessKeyId.NotFound", "Forbidden"}
)
"""Whole-call credential and permission codes: held, never the entries' fault."""


def alibaba_retryable(code: str) -> bool:
    """Whether an Alibaba error code (per entry or per call) is worth retrying later."""
    return code in ALIBABA_RETRYABLE_CODES or code.startswith(ALIBABA_RETRYABLE_CODE_PREFIXES)


def alibaba_throttling(code: str) -> bool:
    """Whether an Alibaba error code says the quota is exceeded (``Throttling*``,
    ``TooManyRequests``): the sink marks such outcomes ``throttled``."""
    return code == ALIBABA_THROTTLED_CODE or code.startswith(ALIBABA_RETRYABLE_CODE_PREFIXES)


# -- every code above: metric label values ----------------------------------------------------

KNOWN_CODES: Final = frozenset(
    {
        "",
        *MAPPING_CODES,
        *SINK_ENTRY_CODES,
        *RETRYABLE_ENTRY_CODES,
        *PERMANENT_ENTRY_CODES,
        *RETRYABLE_CALL_CODES,
        *HOLD_CALL_CODES,
        "ValidationException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "ResponseMismatch",
        "NoEventId",
        *TRANSPORT_CODES,
        "InternalError",
        "Throttling",
        "TooManyRequests",
        "EventBusNotExist",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        GROUP_HELD,
        *BUS_V2_RETRYABLE_ENTRY_CODES,
        *BUS_V2_HOLD_CALL_CODES,
        "InvalidInputException",
        "NoSuccessCode",
    }
)
"""The label values a metric's ``error_code`` may take; any other code is counted as ``other``."""

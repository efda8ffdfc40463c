"""Service limits of Amazon EventBridge PutEvents, as named constants.

Sources: the PutEvents API reference and the user guide page on entry size (shared seeds 000,
002 and 004). The configuration is validated against these at load.
"""

from __future__ import annotations

PUT_EVENTS_MAX_ENTRIES = 10
"""Entries per PutEvents call (API reference: 1 to 10 array members)."""

PUT_EVENTS_DEFAULT_MAX_BYTES = 256 * 1024
"""The long-standing request size limit, by AWS's entry-size formula."""

PUT_EVENTS_MAX_BYTES_CEILING = 1024 * 1024
"""AWS raised the PutEvents limit to 1 MB in January 2026; older regions/pages say 256 KB."""

TIME_FIELD_BYTES = 14
"""AWS counts a present Time field as 14 bytes (user guide, 'Calculating entry size')."""

DETAIL_TYPE_MAX_CHARS = 128
MAX_RESOURCES = 10
DETAIL_MAX_NESTING = 1000
TRACE_HEADER_MAX_CHARS = 500
"""TraceHeader: 1 to 500 characters (botocore's ``events`` model); past it the call fails."""

RETRYABLE_ENTRY_CODES = frozenset({"ThrottlingException", "InternalFailure"})
"""Per-entry ErrorCodes that succeed if sent again later; everything else is permanent."""

RETRYABLE_CALL_CODES = frozenset(
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

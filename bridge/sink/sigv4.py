"""SigV4 for two request shapes, signed as botocore signs them: a POST of AWS JSON to one endpoint
(:class:`JsonPostSigner`), and a POST of smithy-rpc-v2-cbor to one operation's URL
(:class:`CborPostSigner`).

botocore's ``SigV4Auth`` builds an ``AWSRequest``, parses the URL twice, sorts and canonicalizes
the headers through an email-style header map and derives the signing key again on every call:
about 65 µs per PutEvents call. Here what does not change between calls is computed once (host,
canonical path and query, by botocore's own helpers; the signed header names; the scope), the
signing key once per day and secret, and a call costs the body's SHA-256, the canonical
request's, and one HMAC. Property tests check every header against ``SigV4Auth.add_auth`` for
random credentials, tokens, regions, endpoints, bodies and times.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import botocore.auth
from botocore.exceptions import NoCredentialsError

_BOTOCORE_AUTH: Any = botocore.auth  # its helpers for host, path and query are not in the stubs

SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"  # botocore.auth.SIGV4_TIMESTAMP


def _trim(value: str) -> str:
    """SigV4's Trimall, as botocore applies it to every signed header value."""
    return " ".join(value.split())


class _SigningKey:
    """SigV4's signing key for one region and service, derived once per day and secret."""

    def __init__(self, region: str, service: str) -> None:
        self._region = region
        self._service = service
        self._key: tuple[str, str, bytes] = ("", "", b"")  # (secret, date, signing key)

    def _signing_key(self, secret: str, date: str) -> bytes:
        cached_secret, cached_date, key = self._key
        if cached_secret == secret and cached_date == date:
            return key
        key = f"AWS4{secret}".encode()
        for part in (date, self._region, self._service, "aws4_request"):
            key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
        self._key = (secret, date, key)  # one tuple: threads see the old or the new, whole
        return key

    def sign(self, credentials: Any, amz_date: str, canonical: str, signed: str) -> str:
        """The ``Authorization`` header of a canonical request signed at ``amz_date``."""
        date = amz_date[:8]
        scope = f"{date}/{self._region}/{self._service}/aws4_request"
        string_to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
            f"{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
        )
        signature = hmac.new(
            self._signing_key(credentials.secret_key, date),
            string_to_sign.encode("utf-8"),
            hashlib.sha256,
        ).hexdigest()
        return (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope},"
            f" SignedHeaders={signed}, Signature={signature}"
        )


class JsonPostSigner:
    """Signs POSTs of AWS JSON (``X-Amz-Target``, ``Content-Type``) to ``url``.

    Args:
        url: The endpoint URL the requests go to (as sent: path included).
        region: The signing region.
        service: The signing name (``events``).
        content_type: The ``Content-Type`` of every request.
    """

    def __init__(self, url: str, region: str, service: str, content_type: str) -> None:
        parts = urlsplit(url)
        botocore_signer = _BOTOCORE_AUTH.SigV4Auth(None, service, region)
        self.host: str = _BOTOCORE_AUTH._host_from_url(url)
        """The ``Host`` header value that is signed, hence the one to send."""
        self._content_type = content_type
        self._head = "\n".join(
            [
                "POST",
                botocore_signer._normalize_url_path(parts.path),
                botocore_signer._canonical_query_string_url(parts),
                f"content-type:{_trim(content_type)}",
                f"host:{_trim(self.host)}",
                "x-amz-date:",
            ]
        )
        self._key = _SigningKey(region, service)

    def headers(
        self, credentials: Any, target: str, body: bytes, now: datetime | None = None
    ) -> dict[str, str]:
        """The headers of the signed request: what botocore's ``add_auth`` leaves on it.

        Args:
            credentials: Frozen botocore credentials (``access_key``, ``secret_key``,
                ``token``).
            target: The ``X-Amz-Target`` (``AWSEvents.PutEvents``).
            body: The request body.
            now: The signing time (UTC); the clock's when None.
        """
        if credentials is None:
            raise NoCredentialsError()
        amz_date = (now or datetime.now(UTC)).strftime(SIGV4_TIMESTAMP)
        token = credentials.token
        if token:
            signed = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
            middle = f"{amz_date}\nx-amz-security-token:{_trim(token)}\n"
        else:
            signed = "content-type;host;x-amz-date;x-amz-target"
            middle = f"{amz_date}\n"
        canonical = (
            f"{self._head}{middle}x-amz-target:{_trim(target)}\n\n{signed}\n"
            f"{hashlib.sha256(body).hexdigest()}"
        )
        headers = {
            "X-Amz-Target": target,
            "Content-Type": self._content_type,
            "X-Amz-Date": amz_date,
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        headers["Authorization"] = self._key.sign(credentials, amz_date, canonical, signed)
        return headers


CBOR_CONTENT_TYPE = "application/cbor"
SMITHY_PROTOCOL = "rpc-v2-cbor"


class CborPostSigner:
    """Signs smithy-rpc-v2-cbor POSTs to one operation's URL, as botocore signs them.

    botocore's ``RpcV2CBORSerializer`` sets ``smithy-protocol``, ``Accept`` and ``Content-Type``
    on the request and ``SigV4Auth`` signs them with the host and the date (the retry headers
    ``amz-sdk-*`` are added after signing, ``User-Agent`` is never signed): those five headers,
    plus ``x-amz-security-token`` with a session token, in this order, are the signed ones.

    Args:
        url: The operation's URL as sent (``.../service/AWSEventsV2/operation/PutEvents``).
        region: The signing region.
        service: The signing name (``events`` for ``eventbridgev2``).
    """

    def __init__(self, url: str, region: str, service: str) -> None:
        parts = urlsplit(url)
        botocore_signer = _BOTOCORE_AUTH.SigV4Auth(None, service, region)
        self.host: str = _BOTOCORE_AUTH._host_from_url(url)
        """The ``Host`` header value that is signed, hence the one to send."""
        self._head = "\n".join(
            [
                "POST",
                botocore_signer._normalize_url_path(parts.path),
                botocore_signer._canonical_query_string_url(parts),
                f"accept:{CBOR_CONTENT_TYPE}",
                f"content-type:{CBOR_CONTENT_TYPE}",
                f"host:{_trim(self.host)}",
                f"smithy-protocol:{SMITHY_PROTOCOL}",
                "x-amz-date:",
            ]
        )
        self._key = _SigningKey(region, service)

    def headers(self, credentials: Any, body: bytes, now: datetime | None = None) -> dict[str, str]:
        """The headers of the signed request (``Host`` aside: the transport sends
        :attr:`host`).

        Args:
            credentials: Frozen botocore credentials.
            body: The request body.
            now: The signing time (UTC); the clock's when None.
        """
        if credentials is None:
            raise NoCredentialsError()
        amz_date = (now or datetime.now(UTC)).strftime(SIGV4_TIMESTAMP)
        token = credentials.token
        if token:
            signed = "accept;content-type;host;smithy-protocol;x-amz-date;x-amz-security-token"
            middle = f"{amz_date}\nx-amz-security-token:{_trim(token)}\n"
        else:
            signed = "accept;content-type;host;smithy-protocol;x-amz-date"
            middle = f"{amz_date}\n"
        canonical = f"{self._head}{middle}\n{signed}\n{hashlib.sha256(body).hexdigest()}"
        headers = {
            "smithy-protocol": SMITHY_PROTOCOL,
            "Accept": CBOR_CONTENT_TYPE,
            "Content-Type": CBOR_CONTENT_TYPE,
            "X-Amz-Date": amz_date,
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        headers["Authorization"] = self._key.sign(credentials, amz_date, canonical, signed)
        return headers

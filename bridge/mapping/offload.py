"""Claim check: the payload of an entry too large for the bus goes to S3, a reference in its place.

With ``oversize: offload`` a mapping whose entry is over the sink's entry limit puts the Detail
(or the member ``offload_path`` names) as compact JSON in ``s3://<bucket>/<prefix><topic>/
<partition>/<offset>.json`` and sends in its place::

    {"s3_offload": {"bucket": "...", "key": "...", "uri": "s3://...", "size": 312456,
                    "sha256": "<hex>", "content_type": "application/json"}}

The key is the record's coordinates, so a record delivered twice writes the same object twice.
The object is written before the entry is sent: a consumer never sees a reference to nothing.
The write happens on the thread that maps, so each offloaded record costs one PutObject round
trip there.

boto3 and botocore are imported inside :class:`S3Store` and :func:`make_s3_store`, on purpose:
only a mapping with ``oversize: offload`` needs S3.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bridge.errors import MappingError
from bridge.mapping import codec

if TYPE_CHECKING:
    from bridge.config import AwsConfig, OffloadConfig

REFERENCE_KEY = "s3_offload"
"""The key of the reference object that takes the offloaded payload's place."""


class ObjectStore(Protocol):
    """The one call the offloader makes."""

    def put(self, bucket: str, key: str, body: bytes, sha256: bytes) -> None:
        """Store ``body``; raise :class:`OffloadWriteError` when it is not stored."""
        ...


class OffloadWriteError(Exception):
    """The object store did not store the payload (the message names the service's error)."""


class S3Store:
    """:class:`ObjectStore` on an S3 client (boto3 ``s3``); S3 checks the SHA-256 it is given."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def put(self, bucket: str, key: str, body: bytes, sha256: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                ChecksumSHA256=base64.b64encode(sha256).decode("ascii"),
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise OffloadWriteError(
                f"{error.get('Code', 'Unknown')}: {error.get('Message', '')}"
            ) from None
        except BotoCoreError as exc:
            raise OffloadWriteError(f"{type(exc).__name__}: {exc}") from None


def make_s3_store(offload: OffloadConfig, aws: AwsConfig) -> S3Store:
    """An S3 store from the ``offload`` section (region default: ``aws.region``)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        region_name=offload.region or aws.region,
        endpoint_url=offload.endpoint_url,
        config=Config(
            connect_timeout=offload.connect_timeout_s,
            read_timeout=offload.read_timeout_s,
            retries={"mode": "standard", "max_attempts": offload.max_attempts},
            s3={"addressing_style": "path"} if offload.endpoint_url else None,
        ),
    )
    return S3Store(client)


@dataclass
class DryRunStore:
    """Writes nothing; remembers what would have been written (``bridge render``)."""

    puts: list[tuple[str, str, int]] = field(default_factory=list)

    def put(self, bucket: str, key: str, body: bytes, sha256: bytes) -> None:
        self.puts.append((bucket, key, len(body)))


class Offloader:
    """Moves a Detail, or one member of it, to the object store.

    Args:
        store: Where payloads go.
        bucket: The bucket.
        prefix: Prepended to every object key.
    """

    def __init__(self, store: ObjectStore, bucket: str, prefix: str) -> None:
        self._store = store
        self._bucket = bucket
        self._prefix = prefix

    def object_key(self, topic: str, partition: int, offset: int) -> str:
        """The object key of a record: the same on every delivery of it."""
        return f"{self._prefix}{topic}/{partition}/{offset}.json"

    def offload(
        self,
        detail: dict[str, Any],
        detail_text: str,
        path: str | None,
        where: tuple[str, int, int],
    ) -> dict[str, Any]:
        """The Detail with the payload replaced by a reference, once the payload is stored.

        Args:
            detail: The Detail object (changed in place when ``path`` is given).
            detail_text: Its compact JSON (what is stored when ``path`` is None).
            path: Dotted keys of the member to offload, or None for the whole Detail.
            where: ``(topic, partition, offset)`` of the record.

        Raises:
            MappingError: ``OffloadPathMissing`` (stage ``validate``) when ``path`` is not in
                the Detail; ``OffloadFailed`` (stage ``offload``) when the store refused.
        """
        parent: dict[str, Any] | None = None
        name = ""
        if path is None:
            body = detail_text.encode("utf-8")
        else:
            parent, name = _locate(detail, path)
            body = codec.dumps(parent[name]).encode("utf-8")
        digest = hashlib.sha256(body).digest()
        key = self.object_key(*where)
        try:
            self._store.put(self._bucket, key, body, digest)
        except OffloadWriteError as exc:
            raise MappingError(
                "OffloadFailed",
                f"entry over the size limit; writing its payload ({len(body)} bytes) to"
                f" s3://{self._bucket}/{key} failed: {exc}",
                stage="offload",
            ) from None
        reference = {
            REFERENCE_KEY: {
                "bucket": self._bucket,
                "key": key,
                "uri": f"s3://{self._bucket}/{key}",
                "size": len(body),
                "sha256": digest.hex(),
                "content_type": "application/json",
            }
        }
        if parent is None:
            return reference
        parent[name] = reference
        return detail


def _locate(detail: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    *parents, name = path.split(".")
    current: Any = detail
    for step in parents:
        current = current.get(step) if isinstance(current, dict) else None
    if not isinstance(current, dict) or name not in current:
        raise MappingError(
            "OffloadPathMissing",
            f"offload_path: the Detail has no member {path!r} to offload, and the entry is over"
            " the size limit",
            stage="validate",
        )
    return current, name

"""Schema Registry decoders: ``avro``, ``json_schema`` and ``protobuf``.

Avro and JSON Schema go through confluent-kafka's own deserializers (the writer's schema by the
id in the record, JSON Schema validated against it). Protobuf is read with the writer's schema
too, as a dynamic message: confluent-kafka's ProtobufDeserializer needs a generated class per
message type, which a bridge deployed as an image cannot have for every topic. Its JSON follows
the Protobuf JSON mapping (field names as in the .proto, enums by name, bytes as base64, fields
at their default value included, 64-bit integers as numbers when a double holds them exactly).

A schema is fetched once per id and cached (by confluent-kafka's client, and here for Protobuf's
message classes). Registry requests run on the thread that maps, on a record's first sight of a
schema id only; when the registry does not serve an id, the records of that id are dead-lettered
at once for :data:`UNAVAILABLE_COOLDOWN_S` rather than each blocking the loop for the client's
timeout and retries.

confluent-kafka's Schema Registry extras and protobuf are imported inside the functions that use
them, on purpose: they are needed only when a mapping decodes through a registry, and importing
them costs about 0.2 s (0.5 s with JSON Schema) at every start of a bridge that does not.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import inspect
import time
from typing import Any

from bridge.config import SchemaRegistryConfig
from bridge.errors import MappingError
from bridge.mapping.plain import error_code, nesting_error, plain_json, schema_id_of
from bridge.mapping.record import RecordLike

UNAVAILABLE_COOLDOWN_S = 10.0
"""After the registry failed to serve a schema id, records of that id fail fast this long
(dead-lettered, ``SchemaRegistryUnavailable``) instead of each waiting out the client's timeout
and retries on the loop thread; records of schemas already cached decode as usual."""

_MOCK_CLIENTS: dict[str, Any] = {}
_HEADER_IDS = {"key": "__key_schema_id", "value": "__value_schema_id"}


def registry_client(config: SchemaRegistryConfig) -> Any:
    """A confluent-kafka ``SchemaRegistryClient`` for ``config`` (no request is made).

    ``mock://<scope>`` gives confluent-kafka's in-memory registry, one per URL in a process (as
    the Java client's mock scopes), so that a test registering schemas and the bridge reading
    them share it.

    Raises:
        ValueError: A setting the client refuses (its message names the key, never a value).
    """
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf = config.client_config()
    url = str(conf["url"])
    if url.startswith("mock://"):
        client = _MOCK_CLIENTS.get(url)
        if client is None:
            client = _MOCK_CLIENTS[url] = SchemaRegistryClient.new_client(conf)
        return client
    try:
        return SchemaRegistryClient(conf)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


class RegistryDecoder:
    """Decodes Schema Registry framed bytes of a record's key or value to plain JSON.

    Args:
        fmt: ``avro``, ``json_schema`` or ``protobuf``.
        field: ``key`` or ``value``.
        client: A ``SchemaRegistryClient``.
    """

    def __init__(self, fmt: str, field: str, client: Any) -> None:
        from confluent_kafka.serialization import MessageField

        self._fmt = fmt
        self._field = field
        self._message_field = MessageField.KEY if field == "key" else MessageField.VALUE
        self._unavailable: dict[int, tuple[float, str]] = {}
        self._deserializer: Any
        if fmt == "avro":
            from confluent_kafka.schema_registry.avro import AvroDeserializer

            self._deserializer = AvroDeserializer(client)
        elif fmt == "json_schema":
            from confluent_kafka.schema_registry.json_schema import JSONDeserializer

            self._deserializer = JSONDeserializer(None, schema_registry_client=client)
        elif fmt == "protobuf":
            self._deserializer = ProtobufReader(client)
        else:
            raise ValueError(f"not a Schema Registry format: {fmt}")

    def __call__(self, data: bytes, record: RecordLike) -> Any:
        headers: list[Any] = list(record.headers() or [])
        in_header = any(name == _HEADER_IDS[self._field] for name, _ in headers)
        schema_id = schema_id_of(data)
        if schema_id is None and not in_header:
            raise MappingError(
                "NoSchemaId",
                f"{self._field} does not start with the Schema Registry framing (magic byte 0"
                f" and a 4-byte schema id; got {len(data)} bytes starting {data[:5].hex()!r})"
                f" and has no {_HEADER_IDS[self._field]} header: was it written by a Schema"
                f" Registry serializer for {self._fmt}? (decode.{self._field}: {self._fmt})",
                stage="decode",
            )
        shown = f"schema id {schema_id}" if schema_id is not None else "the schema in the header"
        if schema_id is not None and schema_id in self._unavailable:
            since, reason = self._unavailable[schema_id]
            waited = time.monotonic() - since
            if waited < UNAVAILABLE_COOLDOWN_S:
                raise MappingError(
                    "SchemaRegistryUnavailable",
                    f"{self._field}: {shown} could not be fetched {waited:.1f}s ago ({reason});"
                    f" the registry is asked again {UNAVAILABLE_COOLDOWN_S:.0f}s after that",
                    stage="decode",
                )
        try:
            value = self._decode(data, record, headers, shown)
        except MappingError as exc:
            if exc.code == "SchemaRegistryUnavailable" and schema_id is not None:
                self._unavailable[schema_id] = (time.monotonic(), exc.message)
            raise
        if schema_id is not None:
            self._unavailable.pop(schema_id, None)
        return value

    def _decode(self, data: bytes, record: RecordLike, headers: list[Any], shown: str) -> Any:
        from confluent_kafka.schema_registry import SchemaRegistryError
        from confluent_kafka.serialization import SerializationContext, SerializationError

        try:
            ctx = SerializationContext(record.topic() or "", self._message_field, headers)
            value = self._deserializer(data, ctx)
        except MappingError:
            raise
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise MappingError(
                    "SchemaNotFound",
                    f"{self._field}: the registry has no {shown} ({exc.error_message})",
                    stage="decode",
                ) from None
            raise MappingError(
                "SchemaRegistryUnavailable",
                f"{self._field}: the registry answered HTTP {exc.http_status_code} for {shown}:"
                f" {exc.error_message}",
                stage="decode",
            ) from None
        except SerializationError as exc:
            raise MappingError(
                error_code(self._field, self._fmt),
                f"{self._field} does not decode as {self._fmt} with {shown}: {exc}",
                stage="decode",
            ) from None
        except RecursionError:
            raise nesting_error(f"{self._field} nests too deep", "decode") from None
        except Exception as exc:  # transport errors of httpx, fastavro's own errors, ...
            transport = "httpx" in type(exc).__module__ or isinstance(exc, OSError)
            code = "SchemaRegistryUnavailable" if transport else error_code(self._field, self._fmt)
            raise MappingError(
                code,
                f"{self._field}: {self._fmt} decoding with {shown} failed:"
                f" {type(exc).__name__}: {exc}",
                stage="decode",
            ) from None
        return plain_json(value)


# --------------------------------------------------------------------------- Protobuf


class ProtobufReader:
    """Protobuf messages framed by a Schema Registry serializer, read with the writer's schema."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._classes: dict[tuple[int, tuple[int, ...]], Any] = {}
        params = inspect.signature(_message_to_dict()).parameters
        self._extra = (
            {"unquote_int64_if_possible": True} if "unquote_int64_if_possible" in params else {}
        )

    def __call__(self, data: bytes, ctx: Any) -> dict[str, Any]:
        from confluent_kafka.serialization import SerializationError
        from google.protobuf.message import DecodeError

        schema_id = schema_id_of(data)
        if schema_id is None:
            raise SerializationError("Protobuf needs the schema id in the payload prefix")
        indexes, start = _message_indexes(data)
        cls = self._classes.get((schema_id, indexes))
        if cls is None:
            cls = self._classes[(schema_id, indexes)] = self._load(schema_id, indexes)
        message = cls()
        try:
            message.ParseFromString(data[start:])
        except DecodeError as exc:
            raise SerializationError(f"not a {message.DESCRIPTOR.full_name}: {exc}") from None
        result: dict[str, Any] = _message_to_dict()(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            **self._extra,
        )
        return result

    def _load(self, schema_id: int, indexes: tuple[int, ...]) -> Any:
        from confluent_kafka.serialization import SerializationError
        from google.protobuf.descriptor_pool import DescriptorPool
        from google.protobuf.message_factory import GetMessageClass

        schema = self._client.get_schema(schema_id, fmt="serialized")
        pool = DescriptorPool()
        added: set[str] = set()
        try:
            self._add_references(pool, schema.references or [], added)
            main = _file_proto(schema.schema_str)
            main.name = f"schema-{schema_id}.proto"
            for dependency in main.dependency:
                _add_known(pool, dependency, added)
            pool.Add(main)
        except (TypeError, ValueError, KeyError) as exc:
            raise SerializationError(f"schema {schema_id} cannot be loaded: {exc}") from None
        names: list[str] = []
        container: Any = main.message_type
        for index in indexes:
            if index < 0 or index >= len(container):
                raise SerializationError(
                    f"message index {list(indexes)} is not in schema {schema_id}"
                )
            names.append(container[index].name)
            container = container[index].nested_type
        full_name = ".".join(([main.package] if main.package else []) + names)
        return GetMessageClass(pool.FindMessageTypeByName(full_name))

    def _add_references(self, pool: Any, references: list[Any], added: set[str]) -> None:
        for ref in references:
            if ref.name in added:
                continue
            registered = self._client.get_version(ref.subject, ref.version, fmt="serialized")
            self._add_references(pool, registered.schema.references or [], added)
            proto = _file_proto(registered.schema.schema_str)
            proto.name = ref.name
            for dependency in proto.dependency:
                _add_known(pool, dependency, added)
            pool.Add(proto)
            added.add(ref.name)


def _message_to_dict() -> Any:
    from google.protobuf import json_format

    return json_format.MessageToDict


def _file_proto(schema_str: str | None) -> Any:
    from google.protobuf import descriptor_pb2

    if not schema_str:
        raise ValueError("empty schema")
    try:
        raw = base64.b64decode(schema_str, validate=True)
    except ValueError:
        raise ValueError(
            "the registry returned .proto text, not a serialized descriptor (format=serialized)"
        ) from None
    return descriptor_pb2.FileDescriptorProto.FromString(raw)


_KNOWN_PREFIXES = {
    "google/": "google.",
    "confluent/": "confluent_kafka.schema_registry.confluent.",
}


def _add_known(pool: Any, name: str, added: set[str]) -> None:
    """Add a well-known file (google/protobuf/*, google/type/*, confluent/*) and its imports."""
    if name in added:
        return
    from google.protobuf import descriptor_pb2

    for prefix, package in _KNOWN_PREFIXES.items():
        if name.startswith(prefix):
            module_name = package + name[len(prefix) :].removesuffix(".proto").replace("/", ".")
            break
    else:
        return  # a reference added already, or missing: pool.Add will say which
    try:
        module = importlib.import_module(module_name + "_pb2")
    except ImportError:
        return
    serialized = module.DESCRIPTOR.serialized_pb
    for dependency in descriptor_pb2.FileDescriptorProto.FromString(serialized).dependency:
        _add_known(pool, dependency, added)
    with contextlib.suppress(TypeError):  # already in the pool under that name
        pool.AddSerializedFile(serialized)
    added.add(name)


def _message_indexes(data: bytes) -> tuple[tuple[int, ...], int]:
    """The message indexes after the schema id (zigzag varints: count, then each; 0 = [0])."""
    from confluent_kafka.serialization import SerializationError

    position = 5
    try:
        count, position = _zigzag(data, position)
        if count == 0:
            return (0,), position
        if not 0 < count <= 64:
            raise SerializationError(f"bad message index count {count}")
        indexes = []
        for _ in range(count):
            index, position = _zigzag(data, position)
            indexes.append(index)
    except IndexError:
        raise SerializationError("truncated message indexes") from None
    return tuple(indexes), position


def _zigzag(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 63:
            raise IndexError
    return (result >> 1) ^ -(result & 1), position

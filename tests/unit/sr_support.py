"""Schema Registry test helpers: confluent-kafka's serializers against its mock:// registry.

The bridge's decoders and these serializers share a registry through the URL (``mock://<scope>``
is one registry per process, as in the Java client).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message_factory import GetMessageClass

from bridge.config import SchemaRegistryConfig
from bridge.mapping.registry import registry_client

_F = descriptor_pb2.FieldDescriptorProto


def client(url: str) -> Any:
    """The registry the bridge uses for ``url``."""
    return registry_client(SchemaRegistryConfig(url=url))


def avro(url: str, topic: str, schema: str, value: Any, field: str = "value") -> bytes:
    ctx = SerializationContext(topic, MessageField.VALUE if field == "value" else MessageField.KEY)
    return bytes(AvroSerializer(client(url), schema)(value, ctx))


def json_schema(url: str, topic: str, schema: str, value: Any) -> bytes:
    ctx = SerializationContext(topic, MessageField.VALUE)
    return bytes(JSONSerializer(schema, client(url))(value, ctx))


def protobuf(url: str, topic: str, message: Any) -> bytes:
    ctx = SerializationContext(topic, MessageField.VALUE)
    serializer = ProtobufSerializer(type(message), client(url), {"use.deprecated.format": False})
    return bytes(serializer(message, ctx))


_POOL = descriptor_pool.DescriptorPool()


def shipment_classes() -> tuple[Any, Any]:
    """``shipping.Shipment`` (with a nested ``Parcel``, an enum, an int64 and a Timestamp),
    built from a descriptor as protoc would generate it."""
    try:
        shipment = _POOL.FindMessageTypeByName("shipping.Shipment")
    except KeyError:
        from google.protobuf import timestamp_pb2

        _POOL.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
        fd = descriptor_pb2.FileDescriptorProto(
            name="shipping/shipment.proto",
            package="shipping",
            syntax="proto3",
            dependency=["google/protobuf/timestamp.proto"],
        )
        status = fd.enum_type.add(name="Status")
        for number, name in enumerate(["UNKNOWN", "PACKED", "SHIPPED"]):
            status.value.add(name=name, number=number)
        msg = fd.message_type.add(name="Shipment")
        msg.field.add(name="shipment_id", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
        msg.field.add(
            name="status",
            number=2,
            type=_F.TYPE_ENUM,
            type_name=".shipping.Status",
            label=_F.LABEL_OPTIONAL,
        )
        msg.field.add(name="weight_grams", number=3, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL)
        msg.field.add(
            name="updated_at",
            number=4,
            type=_F.TYPE_MESSAGE,
            type_name=".google.protobuf.Timestamp",
            label=_F.LABEL_OPTIONAL,
        )
        msg.field.add(
            name="parcels",
            number=5,
            type=_F.TYPE_MESSAGE,
            type_name=".shipping.Shipment.Parcel",
            label=_F.LABEL_REPEATED,
        )
        parcel = msg.nested_type.add(name="Parcel")
        parcel.field.add(name="sku", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
        _POOL.Add(fd)
        shipment = _POOL.FindMessageTypeByName("shipping.Shipment")
    parcel_type = _POOL.FindMessageTypeByName("shipping.Shipment.Parcel")
    return GetMessageClass(shipment), GetMessageClass(parcel_type)

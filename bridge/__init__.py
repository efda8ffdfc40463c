"""Kafka-to-EventBridge bridge: every record delivered or dead-lettered, offsets committed after."""

__version__ = "0.1.0"

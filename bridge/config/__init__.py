"""The configuration tree: one frozen pydantic-settings model loaded from YAML, env overrides.

Precedence, highest first: environment variables (``BRIDGE_`` prefix, ``__`` between levels, e.g.
``BRIDGE_KAFKA__BOOTSTRAP_SERVERS``), then the YAML file. Every limit of the PutEvents API is
checked here, at load, so a bad file fails before anything connects.

- :mod:`bridge.config.sections`: Kafka, AWS, Alibaba, batch, retry, dead-letter, pipeline,
  observability and logging sections;
- :mod:`bridge.config.mappings`: the per-topic mappings and what they use (decoders, Schema
  Registry, offload);
- :mod:`bridge.config.model`: :class:`BridgeConfig`;
- :mod:`bridge.config.load`: loading a file (or a dict), templates checked too. Not imported
  here: it checks the templates with :mod:`bridge.mapping`, which imports this package.
"""

from bridge.config.mappings import (
    REGISTRY_FORMATS,
    DecodeConfig,
    DecoderFormat,
    MappingConfig,
    OffloadConfig,
    SchemaRegistryConfig,
)
from bridge.config.model import BridgeConfig, format_validation_error
from bridge.config.sections import (
    SECRET_KAFKA_KEYS,
    AlibabaConfig,
    AwsConfig,
    BatchConfig,
    DlqConfig,
    KafkaConfig,
    LoggingConfig,
    ObservabilityConfig,
    PipelineConfig,
    RetryConfig,
    librdkafka_properties,
    reveal,
)

__all__ = [
    "REGISTRY_FORMATS",
    "SECRET_KAFKA_KEYS",
    "AlibabaConfig",
    "AwsConfig",
    "BatchConfig",
    "BridgeConfig",
    "DecodeConfig",
    "DecoderFormat",
    "DlqConfig",
    "KafkaConfig",
    "LoggingConfig",
    "MappingConfig",
    "ObservabilityConfig",
    "OffloadConfig",
    "PipelineConfig",
    "RetryConfig",
    "SchemaRegistryConfig",
    "format_validation_error",
    "librdkafka_properties",
    "reveal",
]

"""Mapping test helper: the mapper ``bridge run`` would build, its sink without a client."""

from __future__ import annotations

from bridge.app import build_mapper
from bridge.config import BridgeConfig
from bridge.mapping.mapper import Mapper, Shaper
from bridge.mapping.offload import ObjectStore
from bridge.sink.factory import make_sink


def mapper_for(
    config: BridgeConfig, sink: Shaper | None = None, store: ObjectStore | None = None
) -> Mapper:
    """The mapper of ``config`` (Schema Registry client from ``schema_registry``), for ``sink``
    (default: the configured one, without a client) and ``store`` (default: S3 when a mapping
    offloads)."""
    return build_mapper(config, sink or make_sink(config, None), store)

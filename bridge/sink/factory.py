"""Which sink the configuration names, built with its limits (and its client, when sending)."""

from __future__ import annotations

from typing import Any

from bridge.config import BridgeConfig
from bridge.sink.alibaba import AlibabaEventBridgeClient, AlibabaSink
from bridge.sink.base import Sink, SinkLimits
from bridge.sink.busv2 import EventBusV2Sink, make_eventsv2_client, registry_configuration
from bridge.sink.eventbridge import EventBridgeSink, make_events_client, require_sigv4a


def sink_limits(config: BridgeConfig) -> SinkLimits:
    """The packing limits of the configured sink, within its API's hard limits."""
    entries, request_bytes, entry_bytes = config.packing()
    return SinkLimits(entries, request_bytes, entry_bytes)


def make_client(config: BridgeConfig) -> Any:
    """The network client of the configured sink (boto3 ``events`` or ``eventbridgev2``, or
    Alibaba's)."""
    if config.sink == "alibaba":
        ali = config.alibaba
        assert ali.endpoint and ali.access_key_id and ali.access_key_secret  # validated at load
        return AlibabaEventBridgeClient(
            ali.endpoint,
            ali.access_key_id,
            ali.access_key_secret.get_secret_value(),
            timeout_s=ali.timeout_s,
            max_connections=config.pipeline.max_in_flight_calls,
        )
    if config.sink == "event_bus_v2":
        return make_eventsv2_client(config.aws, config.pipeline.max_in_flight_calls)
    if config.aws.endpoint_id:
        require_sigv4a()
    return make_events_client(config.aws, config.pipeline.max_in_flight_calls)


def make_sink(config: BridgeConfig, client: Any) -> Sink:
    """The configured sink; ``client`` may be None for mapping only (``bridge render``, tests)."""
    limits = sink_limits(config)
    if config.sink == "alibaba":
        return AlibabaSink(client, limits)
    if config.sink == "event_bus_v2":
        aws = config.aws
        assert aws.event_bus_arn is not None  # validated at load
        registry = registry_configuration(
            aws.schema_registry_uri, aws.schema_registry_connection_arn
        )
        return EventBusV2Sink(
            client, aws.event_bus_arn, limits, aws.content_based_deduplication, registry
        )
    return EventBridgeSink(client, config.sink, limits, endpoint_id=config.aws.endpoint_id)

"""The delivery core: small pure decisions (flow, dispatch, judge, schedule, ownership) around
one short loop (:mod:`bridge.pipeline.loop`)."""

from bridge.pipeline.loop import Pipeline
from bridge.pipeline.work import Stats, Work

__all__ = ["Pipeline", "Stats", "Work"]

"""The lean client's calls made as the pipeline makes them: started, then collected."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from bridge.sink.lean import LeanEventsClient


class Started:
    """``put_events`` / ``put_partner_events`` through :meth:`LeanEventsClient.start` and
    :meth:`LeanEventsClient.finished` (libcurl's multi interface, driven from this thread),
    with the results and exceptions of the blocking calls."""

    def __init__(self, lean: LeanEventsClient) -> None:
        self.lean = lean

    def __getattr__(self, name: str) -> Any:  # describe_event_bus and the like
        return getattr(self.lean, name)

    def put_events(self, *, Entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return self._call("PutEvents", Entries)

    def put_partner_events(self, *, Entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return self._call("PutPartnerEvents", Entries)

    def _call(self, operation: str, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        self.lean.start("call", operation, entries)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = self.lean.finished()
            if done:
                [(token, result)] = done
                assert token == "call"
                if isinstance(result, Exception):
                    raise result
                return result
            self.lean.wait(0.5)
        raise AssertionError("no answer in 30 s")

"""What a redrive tells its user: a progress bar on a terminal and the summary table at the end."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from bridge.app import EXIT_DEAD_LETTER, EXIT_OK, EXIT_RUNTIME
from bridge.observability.metrics import Metrics
from bridge.redrive.select import Selection


@dataclass
class Summary:
    """What a redrive did (this process only), printed as a table at the end."""

    group: str
    selection: Selection
    total: int = 0
    read: int = 0
    selected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    codes_seen: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    dead_lettered_again: Counter[str] = field(default_factory=Counter)
    filtered_by_mapping: int = 0
    finished: bool = False
    dry_run: bool = False

    @property
    def failed_again(self) -> int:
        return sum(self.dead_lettered_again.values())

    def table(self) -> str:
        """The summary as aligned text rows."""
        verb = "would be" if self.dry_run else ""
        rows: list[tuple[str, str]] = [
            ("group", self.group),
            ("selection", self.selection.describe()),
            ("dead letters read", f"{self.read} of {self.total}"),
            ("selected", str(sum(self.selected.values()))),
        ]
        rows += [(f"  code {code}", str(n)) for code, n in sorted(self.selected.items())]
        rows.append((f"delivered{' (would be sent)' if verb else ''}", str(self.delivered)))
        rows.append((f"{'would fail' if verb else 'dead-lettered'} again", str(self.failed_again)))
        rows += [(f"  now {code}", str(n)) for code, n in sorted(self.dead_lettered_again.items())]
        if self.filtered_by_mapping:
            rows.append(("filtered out by the mapping", str(self.filtered_by_mapping)))
        rows.append(("skipped", str(sum(self.skipped.values()))))
        rows += [(f"  {reason}", str(n)) for reason, n in sorted(self.skipped.items())]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
        seen = ", ".join(f"{c} ({n})" for c, n in self.codes_seen.most_common(5)) or "none"
        lines += [
            f"note: no dead letter read has code {code} (codes read: {seen})"
            for code in sorted(self.selection.codes - set(self.codes_seen))
        ]
        if not self.finished:
            lines.append("stopped before the end: run the same command again to continue")
        return "\n".join(lines)

    def exit_code(self) -> int:
        """0: finished with nothing failing again; 4: some failed again; 1: stopped early."""
        if not self.finished:
            return EXIT_RUNTIME
        return EXIT_DEAD_LETTER if self.failed_again else EXIT_OK


def dead_lettered_by_code(metrics: Metrics) -> Counter[str]:
    """Acknowledged dead-letter writes of this process, by (bounded) reason code."""
    out: Counter[str] = Counter()
    for metric in metrics.dead_lettered.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value:
                out[sample.labels["reason"]] += int(sample.value)
    return out


class ProgressBar:
    """One line on a terminal, redrawn at most 5 times a second; nothing when not a terminal."""

    def __init__(
        self, stream: TextIO, total: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream
        self._total = max(total, 1)
        self._clock = clock
        self._last = -1.0
        self.enabled = stream.isatty()

    def update(self, read: int, note: str, force: bool = False) -> None:
        now = self._clock()
        if not self.enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        done = min(read, self._total)
        filled = 30 * done // self._total
        bar = "#" * filled + "-" * (30 - filled)
        self._stream.write(f"\r[{bar}] {done}/{self._total} {note}\x1b[K")
        self._stream.flush()

    def clear(self) -> None:
        """Erase the bar (before other output on the terminal); the next update redraws it."""
        if self.enabled and self._last >= 0:
            self._stream.write("\r\x1b[K")
            self._last = -1.0

    def close(self) -> None:
        if self.enabled and self._last >= 0:
            self._stream.write("\n")
            self._stream.flush()

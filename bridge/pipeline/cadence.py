"""When to commit: soon after records finish, never more often than a broker can take. Pure.

After a crash the next owner sends again what is finished and not in the last commit (neither
below its position nor recorded finished in its metadata). A commit on a fixed grid (every
``pipeline.commit_interval_ms``) leaves on average half an interval of deliveries out of it; a
commit made as soon as deliveries finish leaves out only what finished since, which the least
gap between two commits (``pipeline.commit_min_gap_ms``) bounds. Each commit is a round trip
to the group coordinator (asynchronous: the loop does not wait for it) and
one record per partition in ``__consumer_offsets``: the gap also caps the commits per second
(20/s at the default 50 ms; Kafka Streams commits every 100 ms with exactly-once).

A commit attempted with nothing new (the interval's) costs no broker call (the committer sends
nothing) and does not restart the gap: what finishes right after it is committed at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.config import PipelineConfig

EARLY_GAP_S = 0.05
"""The least gap when finished records fill a quarter of the buffer: committing them frees
room to take more."""


def commit_due(
    since_commit_s: float,
    since_tick_s: float,
    *,
    news: bool,
    finished: int,
    max_buffered: int,
    min_gap_s: float,
    interval_s: float,
) -> bool:
    """Whether to commit now.

    Args:
        since_commit_s: Seconds since the last commit that had something to send.
        since_tick_s: Seconds since the last commit of any kind (the interval's included).
        news: Records finished since the last accepted commit (its position would move, or the
            finished offsets recorded above it would change).
        finished: Records of the finished prefix not yet committed.
        max_buffered: ``pipeline.max_buffered_records``.
        min_gap_s: ``pipeline.commit_min_gap_ms`` in seconds: the least time between commits.
        interval_s: ``pipeline.commit_interval_ms`` in seconds: a commit at least this often,
            news or not (it refreshes the lag), and the gap is never longer.

    Returns:
        True on the interval; with news, once the gap has passed since the last commit, or
        once :data:`EARLY_GAP_S` has when finished records hold a quarter of the buffer.
    """
    if since_tick_s >= interval_s:
        return True
    if not news:
        return False
    if since_commit_s >= min(min_gap_s, interval_s):
        return True
    return since_commit_s >= EARLY_GAP_S and finished >= max_buffered // 4


class CommitCadence:
    """The loop's commit clock: when it last committed, and whether a commit is due now.

    Args:
        min_gap_s: The least time between two commits with news.
        interval_s: The longest time between two commits.
        max_buffered: ``pipeline.max_buffered_records``.
        now: The clock at start.
    """

    def __init__(self, min_gap_s: float, interval_s: float, max_buffered: int, now: float) -> None:
        self.min_gap_s = min_gap_s
        self.interval_s = interval_s
        self.max_buffered = max_buffered
        self.last_commit = now
        self.last_tick = now
        self.commits = 0
        """Commits made with news (each one a broker call)."""

    @classmethod
    def from_config(cls, pipeline: PipelineConfig, now: float) -> CommitCadence:
        """The cadence of the ``pipeline`` section (``commit_min_gap_ms``,
        ``commit_interval_ms``, ``max_buffered_records``)."""
        return cls(
            pipeline.commit_min_gap_ms / 1000,
            pipeline.commit_interval_ms / 1000,
            pipeline.max_buffered_records,
            now,
        )

    def due(self, now: float, news: bool, finished: int) -> bool:
        """Whether to commit at ``now`` (see :func:`commit_due`)."""
        return commit_due(
            now - self.last_commit,
            now - self.last_tick,
            news=news,
            finished=finished,
            max_buffered=self.max_buffered,
            min_gap_s=self.min_gap_s,
            interval_s=self.interval_s,
        )

    def committed(self, now: float, news: bool) -> None:
        """A commit was made at ``now``; ``news``: it had something to send."""
        self.last_tick = now
        if news:
            self.last_commit = now
            self.commits += 1

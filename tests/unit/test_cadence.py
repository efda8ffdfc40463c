"""The commit cadence: commits follow finished records promptly, never more often than the gap."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import PipelineConfig
from bridge.pipeline.cadence import EARLY_GAP_S, CommitCadence, commit_due

EXAMPLES = settings(max_examples=300, deadline=None)


def due(since_commit: float, since_tick: float, news: bool, finished: int = 0) -> bool:
    return commit_due(
        since_commit,
        since_tick,
        news=news,
        finished=finished,
        max_buffered=1000,
        min_gap_s=0.1,
        interval_s=1.0,
    )


def test_news_is_committed_once_the_gap_has_passed() -> None:
    assert due(0.1, 0.1, news=True)
    assert due(0.5, 0.02, news=True)  # an interval commit without news does not restart the gap
    assert not due(0.099, 0.099, news=True)


def test_nothing_new_waits_for_the_interval() -> None:
    assert not due(0.9, 0.9, news=False)
    assert due(1.0, 1.0, news=False)
    assert due(5.0, 1.0, news=True)


def test_a_quarter_of_the_buffer_finished_is_committed_after_50_ms() -> None:
    assert due(EARLY_GAP_S, EARLY_GAP_S, news=True, finished=250)
    assert not due(EARLY_GAP_S, EARLY_GAP_S, news=True, finished=249)
    assert not due(0.049, 0.049, news=True, finished=1000)


def test_the_gap_is_never_longer_than_the_interval() -> None:
    assert commit_due(
        0.2, 0.0, news=True, finished=0, max_buffered=1000, min_gap_s=5.0, interval_s=0.2
    )


def test_from_config_reads_the_pipeline_section() -> None:
    pipeline = PipelineConfig(commit_min_gap_ms=150, commit_interval_ms=2000)
    cadence = CommitCadence.from_config(pipeline, now=7.0)
    assert (cadence.min_gap_s, cadence.interval_s) == (0.15, 2.0)
    assert cadence.max_buffered == pipeline.max_buffered_records
    assert PipelineConfig().commit_min_gap_ms == 50


@EXAMPLES
@given(
    st.floats(0.0, 10.0),
    st.floats(0.0, 10.0),
    st.booleans(),
    st.integers(0, 10_000),
    st.integers(1, 10_000),
    st.floats(0.01, 10.0),
    st.floats(0.01, 10.0),
)
def test_commit_due_property(
    since_commit: float,
    since_tick: float,
    news: bool,
    finished: int,
    max_buffered: int,
    gap: float,
    interval: float,
) -> None:
    is_due = commit_due(
        since_commit,
        since_tick,
        news=news,
        finished=finished,
        max_buffered=max_buffered,
        min_gap_s=gap,
        interval_s=interval,
    )
    if since_tick >= interval:
        assert is_due
    elif not news:
        assert not is_due
    else:
        # Prompt: news waits for the gap at most; never sooner than the early gap.
        assert is_due == (
            since_commit >= min(gap, interval)
            or (since_commit >= EARLY_GAP_S and finished >= max_buffered // 4)
        )


Turn = tuple[float, bool]  # (time since the previous turn, records finished during it)


@EXAMPLES
@given(
    st.lists(st.tuples(st.floats(0.0, 0.3), st.booleans()), min_size=1, max_size=200),
    st.floats(0.01, 0.5),
    st.floats(0.5, 5.0),
)
def test_a_loop_driven_by_the_cadence(turns: list[Turn], gap: float, interval: float) -> None:
    """Simulated turns: every commit with news is at least the gap after the previous one
    (a broker call each), and records seen finished at a turn wait less than the gap for
    their commit (none at all once the gap has passed)."""
    now = 0.0
    cadence = CommitCadence(gap, interval, max_buffered=10_000, now=now)
    news_since: float | None = None  # when the oldest uncommitted finish happened
    last_news_commit = now  # the cadence starts as if it had just committed
    news_commits = 0
    for step, finished in turns:
        now += step
        if finished and news_since is None:
            news_since = now
        news = news_since is not None
        if cadence.due(now, news, finished=0):
            if news:
                assert now - last_news_commit >= min(gap, interval) - 1e-9
                last_news_commit, news_since = now, None
                news_commits += 1
            cadence.committed(now, news)
        elif news_since is not None:
            # Not due: the gap since the last commit with news has not passed yet, so the
            # records waiting finished less than a gap ago.
            assert now - last_news_commit < min(gap, interval)
            assert now - news_since < gap
    assert cadence.commits == news_commits

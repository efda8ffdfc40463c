"""Fuzzing the pure parts with interleavings the unit tests do not cover.

``tests/unit/test_packer.py`` checks packing runs of items (limits, order, greediness) and
``tests/unit/test_tracker.py`` interleavings of consume/finish/commit on fixed partitions. Here
hypothesis drives state machines through what a consumer group does to them as well:

* the packer, with items taken out of the open batch at any time (a revoked partition's
  entries), flushes by linger, and items too large: no call over the limits, no entry dropped or
  sent twice, order kept;
* the offset tracker, with partitions revoked (commit, then forget), lost (forget, no commit),
  assigned again from the group's committed position, and consumers going back: no committed
  position ever passes an offset that is not finished in the current assignment, and the
  group's committed offsets never move backwards unless the consumer itself went back.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from bridge.batching.packer import Packer
from bridge.offsets.tracker import OffsetTracker

pytestmark = pytest.mark.reliability


def examples(long_mode: bool, short: int, long: int) -> settings:
    return settings(
        max_examples=long if long_mode else short,
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


# ------------------------------------------------------------------------------------ packer
@dataclass(frozen=True)
class Item:
    ident: int
    size: int
    partition: int


class PackerMachine(RuleBasedStateMachine):
    """Adds, flushes and revocations in any order; every item accounted for exactly once."""

    def __init__(self) -> None:
        super().__init__()
        self.ids = itertools.count()
        self.added: list[Item] = []
        self.emitted: list[list[Item]] = []
        self.removed: list[Item] = []
        self.clock = 0.0

    @initialize(max_entries=st.integers(1, 20), max_bytes=st.integers(1, 2000))
    def limits(self, max_entries: int, max_bytes: int) -> None:
        self.packer: Packer[Item] = Packer(max_entries, max_bytes)

    def _emit(self, batch: list[Item] | None) -> None:
        if batch:
            self.emitted.append(batch)

    @rule(data=st.data(), partition=st.integers(0, 3))
    def add(self, data: st.DataObject, partition: int) -> None:
        limit = self.packer.max_bytes
        small = st.integers(1, min(3, limit))
        size = data.draw(st.one_of(st.integers(1, limit), st.just(limit), small))
        item = Item(next(self.ids), size, partition)
        self.clock += data.draw(st.floats(0, 0.05))
        self.added.append(item)
        self._emit(self.packer.add(item, self.clock))

    @rule(excess=st.integers(1, 1000))
    def add_too_large(self, excess: int) -> None:
        before = (len(self.packer), self.packer.pending_bytes, self.packer.opened_at)
        item = Item(next(self.ids), self.packer.max_bytes + excess, 0)
        with pytest.raises(ValueError):
            self.packer.add(item, self.clock)
        assert (len(self.packer), self.packer.pending_bytes, self.packer.opened_at) == before

    @rule(linger=st.floats(0, 0.2))
    def linger_flush(self, linger: float) -> None:
        if self.packer.due(self.clock, linger):
            batch = self.packer.flush()
            assert batch, "due with nothing open"
            self._emit(batch)

    @rule(partitions=st.sets(st.integers(0, 3), min_size=1))
    def revoke(self, partitions: set[int]) -> None:
        self.removed += self.packer.remove_if(lambda i: i.partition in partitions)

    @invariant()
    def every_item_once_within_limits_in_order(self) -> None:
        if not hasattr(self, "packer"):
            return
        p = self.packer
        open_items = list(p._items)  # the open batch, peeked at without closing it
        sent = [i for batch in self.emitted for i in batch]
        everything = sent + self.removed + open_items
        assert sorted(i.ident for i in everything) == [i.ident for i in self.added]
        for batch in self.emitted:
            assert 1 <= len(batch) <= p.max_entries
            assert sum(i.size for i in batch) <= p.max_bytes
        assert len(open_items) < p.max_entries
        assert p.pending_bytes == sum(i.size for i in open_items) <= p.max_bytes
        assert (p.opened_at is None) == (not open_items)
        order = {i.ident: n for n, i in enumerate(self.added)}
        kept = [order[i.ident] for i in sent + open_items]
        assert kept == sorted(kept), "entries left the packer out of order"


def test_packer_with_revocations_and_linger(long_mode: bool) -> None:
    run_state_machine_as_test(PackerMachine, settings=examples(long_mode, 100, 2000))


# ----------------------------------------------------------------------------------- tracker
PARTITIONS = [("orders", 0), ("orders", 1)]
LOG_END = 40  # offsets 0..39 exist on each partition


class GroupMachine(RuleBasedStateMachine):
    """One member's tracker under a consumer group's life: assignments come and go."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = OffsetTracker()
        self.group_committed = {tp: 0 for tp in PARTITIONS}  # the broker's view
        self.assigned: set[tuple[str, int]] = set()
        self.position = {tp: 0 for tp in PARTITIONS}  # next offset the consumer hands out
        self.start = {tp: 0 for tp in PARTITIONS}  # where this assignment started reading
        self.open: dict[tuple[str, int], set[int]] = {tp: set() for tp in PARTITIONS}
        self.done: dict[tuple[str, int], set[int]] = {tp: set() for tp in PARTITIONS}
        self.went_back = {tp: False for tp in PARTITIONS}

    def _commit(self, tps: list[tuple[str, int]] | None, accepted: bool) -> None:
        positions = self.tracker.committable(tps)
        for tp, position in positions.items():
            assert tp in self.assigned, f"a position for unassigned {tp}"
            unfinished = [o for o in range(self.start[tp], position) if o not in self.done[tp]]
            assert not unfinished, f"{tp}: position {position} passes unfinished {unfinished[:3]}"
            assert position - 1 in self.done[tp]
            if not self.went_back[tp]:
                assert position > self.group_committed[tp], (tp, position, self.group_committed)
        if accepted and positions:
            self.tracker.mark_committed(positions)
            self.group_committed.update(positions)
            assert self.tracker.committable(tps) == {}

    def _forget(self, tp: tuple[str, int]) -> None:
        """Answers still under way for it are ignored by the pipeline (its epoch is gone)."""
        self.tracker.forget([tp])
        self.assigned.discard(tp)
        self.open[tp].clear()

    @rule(tp=st.sampled_from(PARTITIONS))
    def assign(self, tp: tuple[str, int]) -> None:
        if tp in self.assigned:
            return
        self.assigned.add(tp)
        self.position[tp] = self.start[tp] = self.group_committed[tp]
        self.open[tp].clear()
        self.done[tp].clear()
        self.went_back[tp] = False

    @rule(tp=st.sampled_from(PARTITIONS), n=st.integers(1, 8))
    def consume(self, tp: tuple[str, int], n: int) -> None:
        if tp not in self.assigned:
            return
        for _ in range(n):
            if self.position[tp] >= LOG_END:
                return
            offset = self.position[tp]
            self.tracker.add(tp, offset)
            self.open[tp].add(offset)
            self.position[tp] += 1

    @rule(data=st.data(), tp=st.sampled_from(PARTITIONS))
    def complete(self, data: st.DataObject, tp: tuple[str, int]) -> None:
        """A call's answer or a dead-letter ack: any open offset, in any order."""
        if not self.open[tp]:
            return
        offset = data.draw(st.sampled_from(sorted(self.open[tp])))
        self.tracker.finish(tp, offset)
        self.open[tp].discard(offset)
        self.done[tp].add(offset)

    @rule(accepted=st.booleans())
    def commit(self, accepted: bool) -> None:
        self._commit(None, accepted)

    @rule(tp=st.sampled_from(PARTITIONS), accepted=st.booleans())
    def revoke(self, tp: tuple[str, int], accepted: bool) -> None:
        """Cooperative revoke: commit what is finished, then forget the partition."""
        if tp not in self.assigned:
            return
        self._commit([tp], accepted)
        self._forget(tp)

    @rule(tp=st.sampled_from(PARTITIONS))
    def lose(self, tp: tuple[str, int]) -> None:
        """Session lost: no commit is possible; the partition is forgotten."""
        if tp not in self.assigned:
            return
        self._forget(tp)

    @rule(data=st.data(), tp=st.sampled_from(PARTITIONS))
    def consumer_goes_back(self, data: st.DataObject, tp: tuple[str, int]) -> None:
        """An offset reset: the pipeline starts the partition over (forget, read again)."""
        if tp not in self.assigned:
            return
        to = data.draw(st.integers(0, self.position[tp]))
        self.tracker.forget([tp])
        self.position[tp] = self.start[tp] = to
        self.open[tp].clear()
        self.done[tp].clear()
        self.went_back[tp] = True

    @invariant()
    def counters_match(self) -> None:
        for tp in self.assigned:
            part = self.tracker.partition(tp) if self.tracker.knows(tp) else None
            opened = len(self.open[tp])
            assert (part.open_count if part else 0) == opened
        assert self.tracker.open_count == sum(len(self.open[tp]) for tp in self.assigned)
        assert set(self.tracker.partitions()) <= self.assigned


def test_tracker_under_revocations_losses_and_rewinds(long_mode: bool) -> None:
    run_state_machine_as_test(GroupMachine, settings=examples(long_mode, 100, 2000))

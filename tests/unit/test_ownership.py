"""Ownership: assignment epochs never reused, revocation, what may still be sent (pure)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from work_support import TPS, make_work

from bridge.offsets.tracker import TopicPartition as TP
from bridge.pipeline.ownership import Ownership
from bridge.pipeline.work import Work

A, B, C = TPS


def consumed(own: Ownership, tp: TP, offset: int = 0) -> Work:
    """A record of ``tp`` consumed now, as the loop makes its work item."""
    return make_work(tp, offset, epoch=own.epoch(tp))


def test_assigned_partitions_are_accepted_owned_and_sendable() -> None:
    own = Ownership()
    assert not own.accepts(A)
    own.assign([A, B])
    assert own.accepts(A) and own.accepts(B) and not own.accepts(C)
    work = consumed(own, A)
    assert own.owns(work) and own.sendable(work)
    assert sorted(own.partitions) == sorted([A, B])


def test_each_assignment_opens_its_own_epoch() -> None:
    own = Ownership()
    own.assign([A, B])
    assert own.epoch(A) != own.epoch(B)


def test_release_then_assign_again_never_reuses_an_epoch() -> None:
    own = Ownership()
    own.assign([A])
    stale = consumed(own, A, 5)
    own.release([A])
    assert not own.owns(stale) and not own.sendable(stale)
    assert not own.accepts(A)
    assert own.partitions == []
    own.assign([A])
    # The same partition is ours again, but the record consumed in the earlier epoch is not:
    # the new assignment's consumer reads it again from the committed offset.
    assert own.epoch(A) != stale.epoch
    assert not own.owns(stale) and not own.sendable(stale)
    assert own.owns(consumed(own, A, 5))


def test_restart_makes_what_was_consumed_before_stale() -> None:
    own = Ownership()
    own.assign([A, B])
    before, other = consumed(own, A), consumed(own, B)
    own.restart(A)
    assert not own.owns(before) and not own.sendable(before)
    assert own.owns(consumed(own, A))
    assert own.owns(other)  # the other partition is not touched
    assert own.accepts(A)


def test_revoking_stops_sending_but_answers_are_still_owned() -> None:
    own = Ownership()
    own.assign([A, B])
    leaving, staying = consumed(own, A), consumed(own, B)
    own.start_revoking([A])
    assert not own.accepts(A)  # fetched before the revocation: the next owner's
    assert own.owns(leaving)  # an answer under way is still judged...
    assert not own.sendable(leaving)  # ...but nothing of it is sent again
    assert own.accepts(B) and own.owns(staying) and own.sendable(staying)
    own.release([A])
    assert own.revoking == set()
    assert not own.owns(leaving)
    own.assign([A])
    assert own.accepts(A)  # revoking does not outlive the release
    assert own.sendable(consumed(own, A))


def test_revoke_all_stops_every_send() -> None:
    own = Ownership()
    own.assign([A, B])
    works = [consumed(own, A), consumed(own, B)]
    own.revoke_all()
    assert own.revoking == {A, B}
    assert not any(own.accepts(tp) for tp in (A, B))
    assert all(own.owns(w) for w in works)
    assert not any(own.sendable(w) for w in works)


def test_release_of_an_unknown_partition_is_harmless() -> None:
    own = Ownership()
    own.assign([A])
    own.release([C])
    assert own.partitions == [A]


OPS = st.lists(
    st.tuples(
        st.sampled_from(["assign", "release", "restart", "revoke", "revoke_all"]),
        st.sets(st.sampled_from(TPS), min_size=1),
    ),
    max_size=20,
)


@settings(max_examples=80, deadline=None)
@given(OPS)
def test_epochs_are_never_reused_and_stale_work_is_never_owned_again(
    ops: list[tuple[str, set[TP]]],
) -> None:
    own = Ownership()
    seen: set[int] = set()
    stale: list[Work] = []  # work of epochs that ended
    current: dict[TP, Work] = {}
    for op, tps in ops:
        if op == "assign":
            own.assign(tps)
        elif op == "release":
            own.release(tps)
        elif op == "restart":
            for tp in tps:
                if tp in current:  # the loop restarts only partitions it owns
                    own.restart(tp)
        elif op == "revoke":
            own.start_revoking(tps)
        else:
            own.revoke_all()
        for tp, work in list(current.items()):
            if tp not in own.partitions or own.epoch(tp) != work.epoch:
                stale.append(current.pop(tp))
        for tp in own.partitions:
            if tp not in current:
                epoch = own.epoch(tp)
                assert epoch not in seen, f"epoch {epoch} given twice"
                seen.add(epoch)
                current[tp] = consumed(own, tp)
        assert not any(own.owns(w) or own.sendable(w) for w in stale)
        for tp, work in current.items():
            assert own.owns(work)
            assert own.sendable(work) == (tp not in own.revoking)
            assert own.accepts(tp) == (tp not in own.revoking)

"""The circuit breaker: an outage is probed, not hammered. Pure, with the clock passed in.

The classic closed / open / half-open state machine (as Envoy's outlier detection ejects a host
after consecutive 5xx and lets it back after a growing ejection time):

- **closed**: calls flow. :data:`FAILURE_THRESHOLD` consecutive calls failing as a whole for a
  reason that is not their entries' (no connection, a timeout, 5xx, the whole call throttled,
  credentials, ``AccessDeniedException``, a missing bus: :func:`verdict` says ``False``) open it.
  Any answer of the service in between resets the count.
- **open**: no call starts until the probe is due; then one call is let through as the probe
  (the state is half-open while it runs).
- **half-open**: exactly one probe in flight. Any answer of the service closes the breaker (full
  speed at once); a failure opens it again with twice the wait, up to :data:`MAX_BACKOFF_S`.

The waits are chosen for the issue's bounds: at most ~1 call per second on average during an
outage, and the first delivery within 5 s of the service's return. Waits of 1, 2, 4, 4, ... s
(jitter only shortens them, by up to a quarter, so a fleet of bridges does not probe in step)
make 31 probes in a 120 s outage, and a probe starts within 4 s of any moment.

The breaker does not hold anything itself: the loop keeps the batches (the oldest becomes the
probe) and asks :meth:`CircuitBreaker.allow` before starting each call.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.sink.outcome import Kind, Outcome

FAILURE_THRESHOLD = 5
"""Consecutive whole-call failures that open the breaker (Envoy's ``consecutive_5xx``
default). Fewer would open on a flaky network's chance runs: at 5% of calls failing and 1000
calls/s, 3 in a row happen every ~8 s, 5 in a row every ~55 minutes."""

INITIAL_BACKOFF_S = 1.0
"""The wait before the first probe."""

MAX_BACKOFF_S = 4.0
"""The longest wait between probes: the service's return is noticed within this."""

JITTER = 0.25
"""A wait is shortened by a random fraction of up to this much of it."""


class State(enum.Enum):
    """Where the breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Permit(enum.Enum):
    """The answer of :meth:`CircuitBreaker.allow`: falsy when no call may start."""

    DENIED = "denied"
    CALL = "call"
    PROBE = "probe"

    def __bool__(self) -> bool:
        return self is not Permit.DENIED


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state, for the one log line an outage's start and end each deserve.

    Attributes:
        before: The state left.
        after: The state entered.
        at: When (the clock passed in).
        outage_began: When the breaker first opened in this outage (the start of the outage as
            the bridge saw it); equal to ``at`` when it opens.
        probes: Probes sent in this outage so far.
    """

    before: State
    after: State
    at: float
    outage_began: float
    probes: int

    @property
    def starts_outage(self) -> bool:
        """Closed to open: the one line saying an outage began."""
        return self.before is State.CLOSED

    @property
    def ends_outage(self) -> bool:
        """Back to closed: the one line saying it ended (with :attr:`outage_s`)."""
        return self.after is State.CLOSED

    @property
    def outage_s(self) -> float:
        """How long the outage has lasted (to its end, on the closing transition)."""
        return self.at - self.outage_began


def verdict(outcomes: Sequence[Outcome]) -> bool | None:
    """What a finished call says about the service, for :meth:`CircuitBreaker.on_result`. Pure.

    Returns:
        False: the call failed as a whole for a reason that is not its entries' (held:
        ``Outcome.whole_call and Outcome.hold``): the service is out of reach or refusing.
        None: the service answered, but no entry was delivered (rejected as a whole for the
        request's own fault, or every entry failed on its own).
        True: the service answered and delivered at least one entry.
        Per-entry throttling is not the breaker's: the rate controller slows down for it.
    """
    if not outcomes:
        return None
    first = outcomes[0]
    if first.whole_call:
        return False if first.hold else None
    return True if any(o.kind is Kind.DELIVERED for o in outcomes) else None


class CircuitBreaker:
    """Closed / open / half-open, one probe at a time (see the module docstring).

    Args:
        threshold: Consecutive whole-call failures that open it.
        initial_backoff_s: The wait before the first probe.
        max_backoff_s: The longest wait between probes.
        jitter: The largest fraction a wait is shortened by at random.
        random_fraction: Returns a float in [0, 1) (tests pass their own).
    """

    def __init__(
        self,
        threshold: int = FAILURE_THRESHOLD,
        initial_backoff_s: float = INITIAL_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        jitter: float = JITTER,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        if threshold < 1 or initial_backoff_s <= 0 or max_backoff_s < initial_backoff_s:
            raise ValueError("threshold >= 1 and 0 < initial_backoff_s <= max_backoff_s")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self._threshold = threshold
        self._initial = initial_backoff_s
        self._max = max_backoff_s
        self._jitter = jitter
        self._random = random_fraction
        self._state = State.CLOSED
        self._since = 0.0
        self._failures = 0  # consecutive, while closed
        self._opened_at: float | None = None  # when this outage began
        self._next_probe = 0.0
        self._reopenings = 0  # failed probes in this outage: the wait doubles with each
        self._probe_in_flight = False
        self._probes = 0
        self._transitions: list[Transition] = []

    # ------------------------------------------------------------------ reading
    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @property
    def since(self) -> float:
        """When the current state was entered (0.0 for the initial closed state)."""
        return self._since

    @property
    def opened_at(self) -> float | None:
        """When the current outage began (the first opening), None while closed."""
        return self._opened_at

    @property
    def probe_in_flight(self) -> bool:
        """Whether the one probe is under way."""
        return self._probe_in_flight

    @property
    def probes(self) -> int:
        """Probes started in the current outage (0 while closed)."""
        return self._probes

    def next_probe_at(self, now: float) -> float | None:
        """When a call may start next: ``now`` while closed, the probe's due time while open,
        None while the probe is in flight (its answer decides)."""
        if self._state is State.CLOSED:
            return now
        if self._probe_in_flight:
            return None
        return max(now, self._next_probe)

    def take_transitions(self) -> list[Transition]:
        """The transitions since the last call, oldest first (then forgotten)."""
        taken, self._transitions = self._transitions, []
        return taken

    # ------------------------------------------------------------------ deciding
    def allow(self, now: float) -> Permit:
        """May a call start now? Closed: :attr:`Permit.CALL`. Open and the probe due (and none
        in flight): :attr:`Permit.PROBE`, and the breaker is half-open until its answer.
        Otherwise :attr:`Permit.DENIED`."""
        if self._state is State.CLOSED:
            return Permit.CALL
        if self._probe_in_flight or now < self._next_probe:
            return Permit.DENIED
        self._probe_in_flight = True
        self._probes += 1
        if self._state is State.OPEN:
            self._enter(State.HALF_OPEN, now)
        return Permit.PROBE

    def on_result(self, ok: bool | None, now: float, permit: Permit = Permit.CALL) -> None:
        """Tell the breaker how a call ended (:func:`verdict` of its outcomes).

        Args:
            ok: True: delivered; None: the service answered, the entries failed on their own;
                False: failed as a whole, not for the entries.
            now: The clock.
            permit: What :meth:`allow` gave this call. A call started before the breaker opened
                may end while it is open: its answer closes the breaker (the service is back),
                its failure changes nothing (the outage is already known).
        """
        if permit is Permit.PROBE:
            self._probe_in_flight = False
        answered = ok is not False
        if self._state is State.CLOSED:
            if answered:
                self._failures = 0
                return
            self._failures += 1
            if self._failures >= self._threshold:
                self._open(now)
            return
        if answered:
            self._close(now)
        elif permit is Permit.PROBE:
            self._reopenings += 1
            self._schedule_probe(now)
            self._enter(State.OPEN, now)

    def abandon(self, permit: Permit, now: float) -> None:
        """A call whose answer will never be judged (taken back on a revocation or a stop):
        frees the probe's place, so that another probe may start when due."""
        if permit is Permit.PROBE and self._probe_in_flight:
            self._probe_in_flight = False
            if self._state is State.HALF_OPEN:
                self._enter(State.OPEN, now)

    # ------------------------------------------------------------------ moving
    def _open(self, now: float) -> None:
        self._opened_at = now
        self._reopenings = 0
        self._probes = 0
        self._schedule_probe(now)
        self._enter(State.OPEN, now)

    def _close(self, now: float) -> None:
        self._failures = 0
        self._enter(State.CLOSED, now)
        self._opened_at = None
        self._probes = 0
        self._reopenings = 0

    def _schedule_probe(self, now: float) -> None:
        wait = min(self._max, self._initial * 2.0 ** min(self._reopenings, 60))
        self._next_probe = now + wait * (1.0 - self._jitter * self._random())

    def _enter(self, state: State, now: float) -> None:
        if state is self._state:
            return
        began = self._opened_at if self._opened_at is not None else now
        self._transitions.append(Transition(self._state, state, now, began, self._probes))
        self._state = state
        self._since = now

"""How many entries per second the bridge may send. Pure: the clock is passed in.

Two parts, both optional:

- a ceiling, ``pipeline.max_entries_per_second``: a token bucket, so a bridge never takes more
  than its share of an account's PutEvents quota (10,000 entries/s in the largest regions, for
  all senders of the account and region together);
- an adaptive limit (``pipeline.adaptive_rate``) that settles just under the rate the account's
  quota leaves to this bridge, told per answered call how many entries were sent and how many
  were throttled (:meth:`RateController.answered`).

Why not plain AIMD on "was anything throttled". EventBridge throttles entries, not calls, and not
only because of this bridge: other senders of the account share the quota, and a service can
throttle a share of entries whatever the rate. Halving on any throttled entry (as this module did
before) drives the bridge to its floor when 10% of entries are throttled at random: every second
has one. Google's client-side adaptive throttling (SRE book, "Handling Overload": reject locally
with probability ``(requests - K * accepts) / (requests + 1)``) does not collapse, but holds the
rate at ``K`` times what gets through: with ``K`` = 2 that is twice the quota (half of all entries
throttled), and with ``K`` near 1 it collapses under rate-independent throttling again.
botocore's ``adaptive`` retry mode (CUBIC on the measured send rate, beta 0.7) treats every
throttle as congestion too. So the controller asks the question that tells the two apart:

    **Does sending less make throttling go away?**

A quota throttles the excess: at rate ``R`` above a quota ``Q`` the throttled fraction is about
``1 - Q / R`` and what gets through, ``A = R (1 - f)``, is about ``Q`` whatever ``R`` is. Sending at
``A`` (a little less: ``decrease_factor``) stops the throttling at once. Random throttling takes
the same fraction ``b`` at any rate: sending at ``A`` leaves it unchanged. Hence, per interval
(``INTERVAL_S``, longer at low rates until ``MIN_ENTRIES`` answers are in):

1. ``f`` = throttled / answered entries; the *background* ``b`` is the part of ``f`` known not to
   depend on the rate (0 at first). An interval is *congested* when ``f`` exceeds ``b`` by more
   than a tolerance (2 points plus three binomial standard deviations, so sampling noise at
   thousands of entries per interval does not count).
2. Congested: remember the limit in force and the fraction, and cut the limit to
   ``decrease_factor`` times the rate that got through, corrected for the background
   (``A / (1 - b)``). The next interval verifies the cut:
   - throttling fell (by more than the tolerance): the quota was it; keep the cut (and cut again
     if still congested);
   - it rose (by more than chance): others are sending more (bridges joining, a competitor);
     judge the interval as any other, cutting again if congested;
   - it did not change: it is background. Learn ``b = f`` and undo the cut: at once when this
     is the background learned before (a re-check after its decay, step 4), with growth
     carrying on where it was; a background not seen before is held one more interval at the
     cut rate first (bridges joining one that holds the quota send at full speed until their
     own first verdict, and its cut changes nothing meanwhile), then the cut is undone all the
     way when there was no limit before, otherwise only back to ``decrease_factor`` of the old
     limit, growth starting afresh (see step 4). One or two intervals at a lower rate are the
     whole cost of random throttling.
   Answers to calls sent before the cut are left out (``sent_at``): they tell how the old rate
   fared. An interval spans at least ``INTERVAL_S`` of answers that count and ``MIN_ENTRIES``
   of them, so a verdict is not drawn from the first few answers after a cut.
3. Not congested: grow, faster the longer it has been since the cut (``CUBIC_A * t^3``, the shape
   of TCP CUBIC and botocore's adaptive mode), at least ``increase_per_s`` per second, and never
   above twice the rate actually sent (botocore's cap, so an idle bridge does not build a limit
   it never tested). The growth is in entries/s, the same for every bridge, not a share of its
   own rate: with the multiplicative cut that is what makes bridges sharing a quota drift to
   equal shares (AIMD's fairness; a relative growth keeps whatever split they started at).
4. The background decays (``BACKGROUND_DECAY`` per interval) and is lowered at once by an
   interval throttled less than it, so a wrong lesson does not stand: to one bridge among several
   sharing a quota, a cut that the others did not make yet looks exactly like random throttling.
   That is also why such a verdict only undoes part of the cut.

Bridges sharing one quota all see the excess at about the same time and cut to what they got, so
the total drops under the quota and they grow back alike. A competing sender that stops leaves
room: no throttling, and the growth accelerates (from half of a 2,400/s quota back to 90% of it
in about 10 s).

Before the first throttling the adaptive limit is off (only the ceiling, if any, holds).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

INTERVAL_S = 0.5  # decisions are taken on half-second windows, as botocore measures its rate
MIN_ENTRIES = 200  # ...extended until this many entries are answered, so low rates judge on data
MAX_INTERVAL_S = 5.0  # ...but not longer than this (a bridge sending 10 entries/s)
ABS_TOLERANCE = 0.02  # throttled fraction above the background that counts as congestion
NOISE_SIGMAS = 3.0  # plus this many binomial standard deviations of the fraction
BACKGROUND_DECAY = 0.1  # per interval: a learned background is re-verified within a few seconds
CUBIC_A = 1.0  # entries/s per s^3 after a cut: +1,000 in 10 s, +3,400 in 15 s


@dataclass(frozen=True)
class _Cut:
    """A cut awaiting its verdict, with what was in force before it (to undo it)."""

    limit: float | None  # the adaptive limit before the cut
    fraction: float  # the throttled fraction that made the cut
    answered: int  # ...out of this many entries
    w_cut: float  # the growth's origin before the cut
    cut_at: float
    held: bool = False  # judged "not our rate" once, held one more interval to be sure


class RateController:
    """Decides when the next call of ``n`` entries may start.

    Feed it :meth:`sent` when a call starts and :meth:`answered` when its answer is in; ask
    :meth:`delay` before starting a call.

    Args:
        ceiling: Entries/s never to exceed (None: no ceiling).
        adaptive: Whether throttling caused by the bridge's own rate lowers the limit.
        increase_per_s: The least growth of the adaptive limit, entries/s per second.
        decrease_factor: On throttling that sending less removes, the limit becomes this
            fraction of the rate that got through (0 < f < 1).
        floor: The adaptive limit never goes below this.
    """

    def __init__(
        self,
        ceiling: float | None,
        adaptive: bool,
        increase_per_s: float = 10.0,
        decrease_factor: float = 0.95,
        floor: float = 10.0,
    ) -> None:
        self.ceiling = ceiling
        self.adaptive = adaptive
        self.increase_per_s = increase_per_s
        self.decrease_factor = decrease_factor
        self.floor = floor
        self._adaptive_limit: float | None = None  # None: not throttled yet
        self._tokens = 0.0
        self._refilled_at: float | None = None
        self._sent_window: deque[tuple[float, int]] = deque()  # (time, entries), last second
        # the current interval
        self._interval_start: float | None = None
        self._answered = 0
        self._throttled = 0
        self._sent_in_interval = 0
        self._counts_answers = False  # answered() is in use (else throttled() and sent())
        # what was learned
        self.background = 0.0  # throttled fraction that does not depend on the rate
        self._learned_background = 0.0  # as last learned, before its decay
        self._verifying: _Cut | None = None  # the last cut, until the next interval judges it
        self._w_cut = 0.0  # the limit right after the last cut
        self._cut_at = -math.inf
        self.last_judged: dict[str, float | str] = {}
        """The last interval's verdict (for the debug log): throttled fraction, background."""

    @property
    def limit(self) -> float:
        """The limit in force, entries/s (``inf`` when there is none)."""
        ceiling, adaptive = self.ceiling, self._adaptive_limit
        if adaptive is None:
            return math.inf if ceiling is None else ceiling
        return adaptive if ceiling is None else min(ceiling, adaptive)

    def delay(self, entries: int, now: float) -> float:
        """Seconds to wait before a call of ``entries`` may start (0: now)."""
        self._maybe_end_interval(now)
        limit = self.limit
        if math.isinf(limit):
            return 0.0
        self._refill(now, limit)
        burst = max(float(entries), limit * 0.1)  # up to 100 ms worth at once
        self._tokens = min(self._tokens, burst)
        if self._tokens >= entries:
            return 0.0
        return (entries - self._tokens) / limit

    def sent(self, entries: int, now: float) -> None:
        """A call of ``entries`` started (after :meth:`delay` said 0)."""
        if not math.isinf(self.limit):
            self._refill(now, self.limit)
            self._tokens -= entries
        self._sent_in_interval += entries
        self._sent_window.append((now, entries))
        while self._sent_window and self._sent_window[0][0] < now - 1.0:
            self._sent_window.popleft()

    def answered(
        self, entries: int, throttled: int, now: float, sent_at: float | None = None
    ) -> None:
        """A call of ``entries`` was answered at ``now``, ``throttled`` of them throttled.

        A call throttled as a whole counts all its entries as throttled; a call that failed
        otherwise (a 5xx, a timeout) says nothing about the quota and is not reported.

        Args:
            entries: Entries in the call.
            throttled: How many of them were throttled.
            now: When the answer came.
            sent_at: When the call started (same clock). Answers to calls sent before the last
                cut say how the old rate fared, not the new one, and are left out (TCP reacts
                once per round trip for the same reason); without it they count.
        """
        self._counts_answers = True
        if sent_at is None or sent_at >= self._cut_at:
            if self._interval_start is None or self._answered == 0:
                self._interval_start = now  # an interval spans answers that count, no less
            self._answered += max(0, entries)
            self._throttled += max(0, min(throttled, entries))
        self._maybe_end_interval(now)

    def throttled(self, now: float) -> None:
        """One throttled entry answered at ``now`` (kept for callers that do not count).

        Prefer :meth:`answered`: this one tells the controller of the throttled entry but not of
        the others, so the fraction is judged against the entries :meth:`sent` instead.
        """
        if self._interval_start is None:
            self._interval_start = now
        self._throttled += 1
        self._maybe_end_interval(now)

    def _maybe_end_interval(self, now: float) -> None:
        start = self._interval_start
        if start is None or now - start < INTERVAL_S:
            return
        answered = self._answered if self._counts_answers else self._sent_in_interval
        if answered < MIN_ENTRIES and now - start < MAX_INTERVAL_S:
            return
        if self.adaptive and answered > 0:
            self._judge(min(self._throttled, answered), answered, now - start, now)
        self._interval_start = now
        self._answered = self._throttled = self._sent_in_interval = 0

    def _tolerance(self, answered: int) -> float:
        b = self.background
        return ABS_TOLERANCE + NOISE_SIGMAS * math.sqrt(b * (1 - b) / answered)

    @staticmethod
    def _rose(before: float, n_before: int, after: float, n_after: int) -> bool:
        """Whether the throttled fraction rose by more than chance between two intervals."""
        pooled = (before * n_before + after * n_after) / max(1, n_before + n_after)
        sigma = math.sqrt(pooled * (1 - pooled) * (1 / max(1, n_before) + 1 / max(1, n_after)))
        return after > before + ABS_TOLERANCE + NOISE_SIGMAS * sigma

    def _judge(self, throttled: int, answered: int, seconds: float, now: float) -> None:
        """End of an interval: cut, verify a cut, or grow."""
        fraction = throttled / answered
        self.last_judged = {
            "throttled_fraction": round(fraction, 4),
            "answered": answered,
            "background": round(self.background, 4),
        }
        # Forget the background slowly: a wrong lesson (other senders happened to keep sending
        # when this bridge slowed down) must not stand, and a right one is re-learned cheaply.
        self.background *= 1 - BACKGROUND_DECAY
        tolerance = self._tolerance(answered)
        congested = fraction > self.background + tolerance
        verifying, self._verifying = self._verifying, None
        if verifying is not None and self._rose(
            verifying.fraction, verifying.answered, fraction, answered
        ):
            # Throttled more after the cut than before it: others are sending more (bridges
            # joining, a competitor); random throttling does not rise when the rate falls.
            # Judge it as any interval: cut again if congested. (Taken for background, it let a
            # bridge that held the quota keep 2,200/s of 2,400 when two more joined, 15-20% of
            # entries throttled for seconds, the newcomers squeezed under it.)
            verifying = None
        if verifying is not None:
            before_limit, before_fraction = verifying.limit, verifying.fraction
            w_cut, cut_at = verifying.w_cut, verifying.cut_at
            unchanged = fraction >= max(before_fraction - tolerance, before_fraction * 0.75)
            if unchanged and not congested:
                # Sending less changed nothing, and what is left is within the background: the
                # cut answered noise over a decayed background. Undo it all. (Left in place, it
                # held a bridge throttled 10% at random at the rate of that moment for good:
                # growth from a cut is slow, 76% of the unthrottled rate in one benchmark run.)
                self._adaptive_limit = before_limit
                self._w_cut, self._cut_at = w_cut, cut_at
                return
            if congested and unchanged:
                # Sending less did not reduce throttling: not our rate. Learn it, undo the cut.
                known = fraction <= self._learned_background + tolerance
                if not known and not verifying.held:
                    # Something new: hold the cut one more interval before learning it. Bridges
                    # that join one holding the quota send at full speed until their first
                    # verdict; a cut made meanwhile changes nothing, as if the throttling were
                    # random. Learnt at once, 38-48% of "background" let that bridge keep
                    # 2,200/s of a 2,400/s quota, the newcomers squeezed under it.
                    self._verifying = replace(verifying, held=True)
                    return
                self.background = self._learned_background = min(fraction, 0.99)
                if before_limit is None:
                    self._adaptive_limit = None
                    self._w_cut, self._cut_at = w_cut, cut_at
                    return
                if known:  # the background learned before, re-checked after its decay
                    self._adaptive_limit = before_limit
                    self._w_cut, self._cut_at = w_cut, cut_at
                    return
                # Something new: only part of the way back, and growth starts afresh from there
                # (no jump). Bridges sharing a quota see the same thing when the others have not
                # slowed down yet, and must not take over their share.
                cut = self._adaptive_limit or before_limit
                self._adaptive_limit = max(cut, before_limit * self.decrease_factor)
                self._w_cut, self._cut_at = self._adaptive_limit, now
                return
        if congested:
            got_through = (answered - throttled) / seconds / (1 - self.background)
            before = self._adaptive_limit
            # no limit yet: the rate actually sent (over the last second, or the interval)
            sent_rate = max(self._sent_rate(now), answered / seconds)
            w_max = min(before if before is not None else sent_rate, self.limit)
            cut = max(self.floor, self.decrease_factor * got_through)
            self._verifying = _Cut(before, fraction, answered, self._w_cut, self._cut_at)
            self._adaptive_limit = max(self.floor, min(cut, w_max))
            self._w_cut, self._cut_at = self._adaptive_limit, now
            return
        if fraction < self.background - tolerance:
            self.background = fraction
        if self._adaptive_limit is not None:
            self._grow(now)

    def _grow(self, now: float) -> None:
        elapsed = now - self._cut_at
        # The same absolute growth for every bridge (entries/s, not a share of its own rate): with
        # the multiplicative cut this is what makes bridges sharing a quota converge to equal
        # shares (AIMD's fairness); a relative growth would keep whatever split they started at.
        grown = self._w_cut + max(CUBIC_A * elapsed**3, self.increase_per_s * elapsed)
        cap = max(2 * self._sent_rate(now), self.floor)
        current = self._adaptive_limit if self._adaptive_limit is not None else grown
        limit = max(current, min(grown, cap))
        if self.ceiling is not None:
            limit = min(limit, self.ceiling)
        self._adaptive_limit = max(self.floor, limit)

    def _sent_rate(self, now: float) -> float:
        """Entries/s sent over the last second."""
        return float(sum(n for t, n in self._sent_window if t >= now - 1.0))

    def _refill(self, now: float, limit: float) -> None:
        if self._refilled_at is None:
            self._refilled_at = now
            self._tokens = max(1.0, limit * 0.1)
            return
        self._tokens += (now - self._refilled_at) * limit
        self._refilled_at = now

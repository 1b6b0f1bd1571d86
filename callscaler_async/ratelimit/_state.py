"""The business rate gate's state: pure bookkeeping, no I/O and no clock calls.

Every method takes the current event-loop time (``now``) and, where Unix timestamps matter,
the current Unix time, so the logic is tested with plain numbers (the style of h11 and
gidgethub's ``sansio``).

Why this is safe whatever window the server runs
-------------------------------------------------
Four algorithms are covered, with ``N`` requests per period ``P``: a fixed window, a sliding
log, a token bucket (capacity ``N``, refilled at ``N / P`` per second) and a sliding-window
counter (windows aligned to multiples of ``P`` on the server's clock; at phase ``f`` of a
window it admits while ``floor(prev * (1 - f) + cur) + 1 <= N``, ``prev`` being the previous
window's count). The gate relies on two properties of the server, and they hold for all four:

1. **Remaining is what it would admit at that instant, and it only grows with time.** Without
   new requests a window ends, a log entry leaves, a bucket refills, a counter's previous
   window weighs less (and at a counter's window boundary nothing jumps: the weight of the
   previous window has faded to 0 exactly when the current one becomes the previous one,
   weighing what it counted). So ``Remaining`` minus our requests it may not have counted
   yet (sent later, or still in flight when it answered) may go at once, and stays true
   until newer evidence arrives.
2. **Each counted request weighs at most 1 for ``P`` after it was counted and then fades
   to nothing within one more period, linearly.** The fixed window, the log and the bucket
   weigh it at most 1 for ``P`` and nothing afterwards: their capacity at ``t`` is at least
   ``N - (requests counted in (t - P, t])`` (for the bucket:
   ``tokens(t) >= min(N, tokens(t - P) + N - spent(t - P, t]) >= N - spent(t - P, t]``).
   A counter weighs a request 1 until the end ``E`` of the aligned window it was counted in
   (never more than ``P`` later), then ``(E + P - t) / P``: its Remaining is
   ``N - cur - floor(prev * (1 - f))``, at least ``N`` minus the sum of these weights, rounded
   up to a whole request. A sliding log and a counter cannot be told apart from one burst's
   answers (the log frees the burst at once one period later, the counter only bit by bit),
   so the ledger holds the larger of the two (see "The ledger" below), until an answer
   proves the server is no counter: a Remaining above what a counter could report, given the
   windows our own earlier requests were counted in at the earliest and the latest instant
   the answer can have been written (``_weigh_as_counter``). Foreign requests only lower a
   Remaining, so they cannot fake that proof. From then on a slot frees a period after its
   answer. There is no converse proof: a counter looks like any of the other three with
   someone else spending what its fading weight holds, so the counter's weights are kept
   until disproved, never dropped on a guess.

The ledger: the server counts a request at some instant between our send and our receipt of
its answer, so a request of ours *occupies a slot* from its send until its answer, and then
two ways, one per hypothesis. For the fixed window, the log and the bucket it holds a slot
until ``P`` after its answer arrived (no latency guess is needed). For a counter it weighs a
slot until the end ``E`` of the latest aligned window it can have been counted in, then
``(E + P - t) / P``, a *fading tail*: ``E`` is bounded by that answer's ``Date`` (the server
wrote it at ``Date`` or later, before ``Date + 1``), the clock offset learnt so far, and the
answer's Reset when it falls on a multiple of ``P`` (a Reset is never before the instant its
request was counted, whatever else it means: servers differ there, a counter's may be the end
of the window or the instant the next slot frees); nothing fades before two periods after the
answer when nothing bounds it. A counter's weight is its whole slots plus its fading sum
rounded down, as the counter floors it (integer nanoseconds, plus a hair of slack per entry
for a server's floating-point phase). The server runs one algorithm, so the ledger holds the
larger of the two *totals* (not each request's larger weight, which at a steady pace would
hold a period's worth more than either). The gate admits while the ledger or the server's
word (property 1) has room, and the larger of two true lower bounds is a true lower bound.

The offsets a counter can have: ``Date`` bounds the clock offset to about a second, and a
counter's windows shift with it. Each counted answer tests the counter in slices of the
offsets still allowed (eight, and what is left again, three rounds at most): a Remaining
above what a counter with an offset in a slice could report (the proof above, with the
offsets of the slice) rules that slice out. The offsets left only ever narrow, and they
contain the true one if the server is a counter; the counter's weights are recomputed with
them (narrower offsets only end a weight sooner). None left is the proof that the server
is no counter. A 429 or a stepped clock widens them again to what ``Date`` allows.

Three refinements make it use the whole budget and stay safe with company:

* **The server's count is an authority** (property 1): this is how a fixed window's early
  reset, a sliding log's release, a bucket's refill are used without knowing which it is.
  An answer's word must allow for our requests still on their way, which after a burst is
  all of them; but once a *run* (requests sent since nothing of ours was in flight) is all
  answered, the one the server counted last answered after all the others were counted,
  so the run's least Remaining may go at once (_end_run).
* **Reset frees at least one slot.** Whatever the algorithm, by ``X-RateLimit-Reset`` at
  least one request more is admitted if nothing else was counted since (the window ended,
  the oldest request left the log, the bucket refilled, the counter's new window has room:
  ``prev <= N`` weighs less than ``N`` once ``f > 0``), and never later than one period after
  that answer's request was counted. When nothing else allows a request, one *probe* goes at
  Reset (or at our ``answer + P`` if that is earlier: no clock offset or rounding of Reset
  to the second can push it later); its answer carries a fresh ``Remaining``. Only while
  nothing of ours went after that answer: a server rounds Reset up to the second, so the
  slot may free before it, and a request admitted meanwhile (by a slot of the ledger that
  freed, or the server's word) may have taken it. Under a
  counter our requests still in flight may be counted in the new window, so the probe
  waits ``P / N`` more for each. The probe is counted like any request. A 429 on a probe
  switches probing off for good.
* **Other consumers.** What the server counts beyond our own requests (net of our slots and
  fading tails) was spent by someone else (another key, a cron job). That foreign share is
  held as occupied until it must have expired.

A 429 pauses the whole business until its ``retry_after`` has passed.

Clock: ``X-RateLimit-Reset`` is Unix seconds of the server's clock. The offset between its
clock and ours is bounded from every answer's ``Date`` header (written between our send and
our receipt, truncated to the second); answers that straddle a second boundary narrow it to
the round trip, as NTP does. A probe waits for Reset under the least favourable offset.

Calibration shots
-----------------
Traffic paced by a window comes in bursts at one phase of the second, and the ``Date`` of
their answers then never narrows the offset's lower bound: the probe stays late by up to a
second each window (a fixed window's budget waits unused). So when a burst starts and the
offset is still uncertain, one request of the budget already in hand is *held back* and sent
at the instant that makes its answer straddle a server second boundary ``b`` under a tested
offset ``a`` (``a`` just below zero, where synchronised clocks are, or the middle of the
interval): if the server's clock read ``b`` already, the lower bound rises to about ``a``;
if not, the upper bound falls to ``a``. The held request is admitted by the ordinary rules
at the time the burst goes (budget in hand: the sliding ledger or the server's Remaining,
which only grows with time), so sending it later never risks a 429; it only moves one
request within the budget. The boundary is chosen so the shot lands before Reset even under
the largest offset (a fixed window counts it in the window the burst used: free) and after
``Reset - period`` (under a sliding log that is where the burst's own slots free, so shots
there would only delay a slot; the first second boundary after a sliding burst is never
after it), and the wait may not exceed what the lower bound can gain. A bounded number of
shots, only while the offset is wider than a few round trips, only when the latest Reset is
further off than a token bucket's could be (a bucket's Reset is when it is full again,
``(limit - Remaining) * period / limit`` after the answer plus its rounding: no shot brings
that forward), and none while another consumer is known to spend the budget (it could take
the held request's place).
"""

from __future__ import annotations

import bisect
import email.utils
import heapq
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

import attrs
from multidict import istr

__all__ = ["GateState", "HeaderReading", "Ticket", "parse_rate_headers", "staircase_releases"]

# A Reset further ahead than this many periods is taken as nonsense (a proxy's, or a
# misconfigured clock) and not waited for.
_MAX_RESET_PERIODS: Final = 3.0
# Calibration shots per clock-offset estimate (a stepped clock starts a new estimate).
_MAX_SHOTS: Final = 6
# Nanoseconds per second: the fading tail is kept in integer ns.
_NS: Final = 1_000_000_000
# Each tail entry is held this many ns longer than its arithmetic says: a server computes its
# window phase in floating point (a Unix time near 2e9 s resolves only ~0.24 µs).
_TAIL_SLACK: Final = 10_000
# A counter's clock offsets are tested in this many slices per answer, and what is left
# again, up to this many rounds (_weigh_as_counter): 8**3 = 512 times finer at most.
_OFFSET_SLICES: Final = 8
_OFFSET_ROUNDS: Final = 3


@attrs.define(slots=True)
class Ticket:
    """One admitted request, from its admission until its answer (or failure) is recorded.

    ``answers_before``: how many answers the state had recorded when it was admitted (the
    answers recorded since then arrived while it was on its way).
    """

    seq: int
    sent_at: float
    done: bool = False
    answers_before: int = 0


@attrs.define(slots=True)
class _CounterAnswer:
    """What places one answered request in a sliding-window counter's windows again when the
    clock offset a counter can have narrows: its send and answer (loop and Unix time), the
    answer's ``Date`` and ``Reset``, how many answers were recorded before it was sent, and
    when its weight ends (ns)."""

    sent_at: float
    at: float
    unix_at: float
    date: float | None
    reset: float | None
    before: int
    end: int


class HeaderReading(NamedTuple):
    """The ``X-RateLimit-*`` and ``Date`` headers of one response, parsed; None where absent.

    (A named tuple: one is built for every answer, at half the cost of a frozen class.)
    """

    limit: int | None
    remaining: int | None
    reset_unix: float | None
    date_unix: float | None


# No rate limit, count or Unix time comes near this: a larger value is nonsense, and as an
# int it would not even convert to a float (an OverflowError out of the gate's arithmetic).
_MAX_HEADER_INT: Final = 2**53


def _parse_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)  # int() itself ignores surrounding whitespace
    except ValueError:
        try:
            as_float = float(value)
        except ValueError:
            return None
        if not math.isfinite(as_float):
            return None
        number = int(as_float)
    return number if -_MAX_HEADER_INT <= number <= _MAX_HEADER_INT else None


# ``Date`` has a resolution of one second, so consecutive answers repeat it: the last parse
# is kept (parsing an HTTP date through ``email.utils`` is the costliest step here). Kept
# apart from ``_last_repeated`` below: a token bucket's Reset can move on every answer.
_last_date: tuple[str, float | None] = ("", None)


def _parse_date(raw: str) -> float | None:
    global _last_date
    cached_raw, cached = _last_date
    if raw == cached_raw:
        return cached
    try:
        value: float | None = email.utils.parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        value = None
    _last_date = (raw, value)
    return value


# multidict's case-insensitive keys: a lookup in aiohttp's headers with an ``istr`` skips
# folding the key's case each time (half the cost); in a plain dict it is the string itself.
_LIMIT: Final = istr("X-RateLimit-Limit")
_REMAINING: Final = istr("X-RateLimit-Remaining")
_RESET: Final = istr("X-RateLimit-Reset")
_DATE: Final = istr("Date")


# A named tuple's own __new__ is Python code that repacks its arguments: build it directly.
_new_reading: Final = tuple.__new__

# Limit, Reset and Date change at most once a second (Reset and Date are whole seconds), so
# consecutive answers repeat them: their last reading is kept (converting them was a third
# of an answer's bookkeeping). Remaining is read from every answer.
_last_repeated: tuple[tuple[str | None, ...], tuple[int | None, float | None, float | None]] = (
    (None, None, None),
    (None, None, None),
)


def parse_rate_headers(headers: Mapping[str, str]) -> HeaderReading:
    """Read the rate-limit headers; invalid values count as absent, never as an error."""
    global _last_repeated
    get = headers.get
    repeated = (get(_LIMIT), get(_RESET), get(_DATE))
    cached_raw, parsed = _last_repeated
    if repeated != cached_raw:
        raw_limit, raw_reset, raw_date = repeated
        limit = _parse_int(raw_limit)
        reset = _parse_int(raw_reset)
        parsed = (
            limit if limit is not None and limit > 0 else None,
            float(reset) if reset is not None and reset > 0 else None,
            _parse_date(raw_date) if raw_date else None,
        )
        _last_repeated = (repeated, parsed)
    limit, reset_unix, date_unix = parsed
    remaining = _parse_int(get(_REMAINING))
    return _new_reading(
        HeaderReading,
        (
            limit,
            (remaining if remaining >= 0 else 0) if remaining is not None else None,
            reset_unix,
            date_unix,
        ),
    )


def staircase_releases(
    answered: Sequence[float], fades_at: float, limit: int, period: float
) -> list[float]:
    """When each of a group of answered requests may leave a ledger that holds whole slots
    (the shared Redis ledger), safe under all four algorithms of the module docstring.

    ``answered``: when each answer arrived, for the requests (of every process sharing the
    ledger) whose latest possible window is the same; ``fades_at``: an instant by which a
    sliding-window counter weighs every one of them nothing (the least of their
    :meth:`GateState.answer_window` bounds: each bounds when the server's clock passes that
    window's end plus a period).
    Returned in the same order.

    A sliding log and a token bucket need each slot for a period after its answer. A counter
    weighs the group fully until the end ``fades_at - period`` of their aligned window, then
    ``k * (fades_at - t) / period`` for ``k`` requests. A ledger of whole slots meets that when
    the ``m``-th latest release (from 0) is no earlier than ``fades_at - m * period / limit``:
    it then holds ``min(k, ceil(limit * (fades_at - t) / period))`` of them at ``t``, never fewer
    than their weight, because no window counts more than ``limit`` (the ledger admits at most
    ``limit`` per period). So the latest-answered request is held until ``fades_at`` and the
    ``m``-th latest until its own period ends or that step, whichever is later. The Redis
    ledger's script runs this arithmetic over every process's answers of a window.

    A request answered later only pushes the others one step down: no release ever moves
    later as the group grows, so releases already handed out may only be brought forward.
    The cost: at a steady pace, a period and one step per request (``period / limit``); a
    burst early in a window frees at a counter's pace, also where the server is a log.
    """
    order = sorted(range(len(answered)), key=lambda index: answered[index], reverse=True)
    releases = [0.0] * len(answered)
    step = period / limit
    for m, index in enumerate(order):
        at = answered[index]
        # Never before its own period ends; never after two periods, when the request
        # weighs nothing whichever window counted it (nor do those answered before it).
        release = min(max(fades_at - min(m, limit - 1) * step, at + period), at + 2 * period)
        releases[index] = release
    return releases


def _ns_time(ns: int) -> float:
    """The earliest float time whose floor in ns is at least ``ns``."""
    at = ns / _NS
    while math.floor(at * _NS) < ns:
        at = math.nextafter(at, math.inf)
    return at


class GateState:
    """Decides when the next request of one business may go.

    ``limit`` requests per ``period`` seconds. ``reset_margin`` is added to a server Reset
    before a probe trusts it (clock skew between us and the server).
    """

    # Slots: past 30 attributes an instance's dict stops sharing its keys, and CPython then
    # looks up every ``self.method()`` generically (about 8% of the gate's cost per request).
    __slots__ = (
        "__weakref__",
        "_answers",
        "_counter_answers",
        "_counter_full",
        "_counter_hi",
        "_counter_lo",
        "_counter_possible",
        "_counter_weighed",
        "_evidence",
        "_evidence_counts",
        "_foreign",
        "_foreign_alert_until",
        "_foreign_held",
        "_foreign_until",
        "_hold",
        "_in_flight",
        "_in_flight_seqs",
        "_latency",
        "_max_latency",
        "_next_expiry",
        "_obs_remaining",
        "_obs_seq",
        "_obs_time",
        "_obs_uncounted",
        "_probe_at",
        "_probe_from",
        "_probe_ticket",
        "_recent",
        "_reset_beyond_refill",
        "_run_min",
        "_run_ok",
        "_seq",
        "_shared_evidence",
        "_shot_at",
        "_shot_ticket",
        "_shots_left",
        "_shots_wanted",
        "_skew_hi",
        "_skew_lo",
        "_tail",
        "_tail_sum",
        "_unix_offset",
        "limit",
        "paused_until",
        "pauses",
        "period",
        "period_ns",
        "probing",
        "rate_limited",
        "remaining",
        "reset_at",
        "reset_margin",
        "reset_unix",
        "server_limit",
        "shots",
        "skew",
        "slot_hold",
    )

    def __init__(self, limit: int, period: float, *, reset_margin: float | None = None) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        if not period > 0:
            raise ValueError(f"period must be > 0, got {period!r}")
        self.limit = limit
        self.period = period
        # The fading tail of answered requests is kept in integer nanoseconds: exact sums.
        self.period_ns = max(1, math.floor(period * _NS))
        # An answered slot is ours a hair longer than a period: a log that counts its edge
        # (a request at ``t`` still counted at ``t + period``) is met exactly when the
        # answer came back in the instant it was counted.
        self.slot_hold = period + max(1e-6, period * 1e-9)
        self.reset_margin = (
            reset_margin if reset_margin is not None else min(1.0, max(0.005, period / 200))
        )
        self._seq = 0
        self._in_flight = 0
        self._in_flight_seqs: list[int] = []  # ascending: admitted in seq order
        # When each of our answered requests that still occupy a slot was answered (loop
        # time; answers are recorded at the current time, so appends keep the order).
        self._recent: deque[float] = deque()
        # The same answered requests as a sliding-window counter may weigh them: each by when
        # its weight has faded to 0 (integer ns; see _fades_at), ``end``. Until
        # ``end - period`` (its window's end) it weighs a whole slot: a heap of ends.
        self._counter_full: list[int] = []
        # After that, ``(end - now) / period``: the fading tail, a heap of ends, and their sum.
        self._tail: list[int] = []
        self._tail_sum = 0
        self._answers = 0  # answers recorded so far
        # Until an answer's Remaining proves that the server is no sliding-window counter
        # (see _weigh_as_counter), answered requests keep a counter's fading tail. Evidence:
        # our successful answers with rate headers as (index in answer order, Unix time of
        # the send), the last few periods of them; and, per (answers before, offset tested),
        # how many of them each aligned window counts at the least (they never change).
        self._counter_possible = True
        self._evidence: deque[tuple[int, float]] = deque()
        self._evidence_counts: dict[tuple[int, float], dict[int, int]] = {}
        # The same for other processes that share a ledger with us (see add_shared_evidence):
        # (Unix time before which it was not sent, Unix time by which it was answered).
        self._shared_evidence: deque[tuple[float, float]] = deque()
        # The clock offsets (server minus ours) a counter can have, given the Remaining it
        # reported (_weigh_as_counter): within the Date headers' interval, often much
        # narrower. ``_counter_weighed``: the bounds the ledger's counter weights were last
        # computed with; ``_counter_answers``: what recomputes them (see _reweigh).
        self._counter_lo = -math.inf
        self._counter_hi = math.inf
        self._counter_weighed = (-math.inf, math.inf)
        self._counter_answers: deque[_CounterAnswer] = deque()
        self._max_latency = 0.0
        # Budget spent by other consumers, held until it must have expired.
        self._foreign = 0
        self._foreign_until = 0.0
        # (expires_at, count), counts decreasing: a max-queue of recent foreign observations.
        self._foreign_held: deque[tuple[float, int]] = deque()
        # Loop time at which the first entry of ``_recent`` or ``_foreign_held`` expires (or
        # earlier: a look that finds nothing due is harmless; never later).
        self._next_expiry = math.inf
        self._foreign_alert_until = -math.inf
        # Latest header reading, by the send order of the request it answered.
        self._obs_seq = -1
        self.server_limit: int | None = None
        self.remaining: int | None = None
        self.reset_unix: float | None = None
        self.reset_at: float | None = None  # loop time
        self.skew = 0.0  # server Unix time minus ours: the middle of what Date headers allow
        self._skew_lo = -math.inf
        self._skew_hi = math.inf
        # Header authority: what the server would still admit, minus what it may not count yet.
        self._obs_remaining: int | None = None
        self._obs_time = -math.inf
        self._obs_uncounted = 0
        # The least Remaining answered to our requests sent since nothing of ours was last in
        # flight (a *run*), and whether every one of them answered with one (see complete).
        self._run_min: int | None = None
        self._run_ok = True
        # Probe at Reset.
        self._probe_at: float | None = None
        self._probe_from = -1  # admissions before the answer whose Reset it relies on
        self._probe_ticket: Ticket | None = None
        self.probing = True
        # Calibration shots (see the module docstring): a request held back from a burst and
        # sent when its answer straddles a server second boundary.
        self._unix_offset = 0.0  # Unix time minus loop time (the caller's clocks)
        self._latency = 0.0  # smoothed round trip
        self._hold = 0  # requests held back from the budget in hand for a shot
        self._shot_at: float | None = None  # loop time the held request may go
        self._shot_ticket: Ticket | None = None
        self._shots_left = _MAX_SHOTS
        self._shots_wanted = False
        self._reset_beyond_refill = False  # the latest Reset is later than a bucket's
        self.shots = 0
        # Pause after a 429.
        self.paused_until = 0.0
        self.pauses = 0
        self.rate_limited = 0

    # ----------------------------------------------------------------- admission

    def _expire(self, now: float) -> None:
        recent = self._recent
        period = self.slot_hold
        tail = self._tail
        full = self._counter_full
        now_ns = math.floor(now * _NS)
        # Same expression as in next_time (done_at + slot_hold), so float rounding can never
        # leave a slot "due" but not expired.
        while recent and recent[0] + period <= now:
            recent.popleft()
        while full and full[0] - self.period_ns <= now_ns:
            end = heapq.heappop(full)
            heapq.heappush(tail, end)
            self._tail_sum += end
        while tail and tail[0] <= now_ns:
            self._tail_sum -= heapq.heappop(tail)
        held = self._foreign_held
        while held and held[0][0] <= now:
            held.popleft()
        if held:
            self._foreign_until, self._foreign = held[0]
        else:
            self._foreign = 0
        self._next_expiry = min(
            recent[0] + period if recent else math.inf,
            held[0][0] if held else math.inf,
            _ns_time(full[0] - self.period_ns) if full else math.inf,
            _ns_time(tail[0]) if tail else math.inf,
        )

    def _tail_weight(self, now: float) -> int:
        """Whole slots the fading tail still takes at ``now``: as a counter floors it, with a
        hair of slack per entry."""
        tail = self._tail
        if not tail:
            return 0
        weight = self._tail_sum + _TAIL_SLACK * len(tail) - len(tail) * math.floor(now * _NS)
        return weight // self.period_ns if weight > 0 else 0

    def _held(self, now: float) -> int:
        """Slots our answered requests still take at ``now`` (the ledger): the larger of what
        the fixed window, the log and the bucket may still count of them (each for a period
        after its answer) and what a counter may still weigh (module docstring, property 2).
        One server runs one algorithm, so the larger total bounds it, whichever it is."""
        held = len(self._recent)
        if self._counter_full or self._tail:
            weight = len(self._counter_full) + self._tail_weight(now)
            if weight > held:
                return weight
        return held

    def capacity(self, now: float) -> int:
        """How many requests may go at ``now`` (0 while paused)."""
        # (Called for every request: written with plain comparisons, not min/max calls.)
        if now >= self._next_expiry:
            self._expire(now)
        if now < self.paused_until:
            return 0
        held = self._held(now) if self._counter_full or self._tail else len(self._recent)
        sliding = self.limit - self._in_flight - self._foreign - held
        observed = self._obs_remaining
        if observed is not None:
            if now - self._obs_time > self.period / 2:
                # What we know of the server is stale (someone else may have spent the
                # budget meanwhile): send a few scouts and let their answers speak first.
                scouts = max(1, self.limit // 10) - self._in_flight
                if scouts < sliding:
                    sliding = scouts
            header = observed - self._obs_uncounted
            if header > sliding:
                sliding = header
        # A shot is planned only with two requests in hand and no foreign share held (another
        # consumer could take the held request's place).
        if self._hold or (
            self._shots_wanted and sliding >= 2 and not self._foreign and self._shot_ticket is None
        ):
            sliding = self._withhold(now, sliding)
        if sliding > 0:
            return sliding
        return 1 if self._probe_due(now) else 0

    def _withhold(self, now: float, capacity: int) -> int:
        """``capacity`` less the request held back for a calibration shot (planned here).

        Budget in hand, the ledger's or the server's word, only grows as time passes. The
        word dips while ours are on their way (it allows for every one of them) and comes
        back once they are answered (the run's least Remaining), so only a shortfall with
        nothing of ours in flight gives the held request up.
        """
        if not self._hold:
            # (capacity() checked the two in hand and the foreign share.)
            if now < self._foreign_alert_until:
                return capacity
            at = self._plan_shot(now)
            if at is None:
                return capacity
            self._hold = 1
            self._shot_at = at
            return capacity - 1
        if self._shot_ticket is not None:
            return capacity - self._hold
        if self._foreign or (capacity < self._hold and not self._in_flight):
            # Someone else spends this budget (a held request could find it gone), or the
            # budget in hand is really short of it: send it as an ordinary request.
            self._release_hold()
            return capacity
        at = self._shot_at
        if at is not None and now > at + max(self._skew_hi - self._skew_lo, 0.0) / 4:
            # Nobody was waiting when the shot was due: aim at a later boundary, or let go.
            at = self._shot_at = self._plan_shot(now)
        if at is None:
            self._release_hold()
            return capacity
        if now >= at:
            return capacity - self._hold + 1
        return capacity - self._hold

    def _release_hold(self) -> None:
        self._hold = 0
        self._shot_at = None

    def _plan_shot(self, now: float) -> float | None:
        """Loop time to send a calibration shot, or None when no boundary qualifies."""
        reset = self.reset_unix
        lo, hi = self._skew_lo, self._skew_hi
        if reset is None or not self._shots_wanted:
            return None
        guard = max(self.reset_margin, 2 * self._latency)
        # The offset tested: just below zero (synchronised clocks), else the middle.
        tested = max((lo + hi) / 2, min(0.0, hi) - guard)
        if not lo < tested < hi:
            return None
        unix = now + self._unix_offset
        # The shot goes at our ``b - tested``: in the future, and b after Reset - period.
        boundary = max(
            math.floor(unix + tested + self.reset_margin) + 1,
            math.floor(reset - self.period) + 1,
        )
        # It must land before Reset even with the largest offset and a slow way there.
        if boundary - tested + hi + 2 * self._latency + self.reset_margin > reset:
            return None
        # Delaying one request costs at most the wait: not worth more than the lower bound
        # can rise (a sliding log's burst only qualifies a boundary over a second later).
        if boundary - tested - unix > tested - lo:
            return None
        return boundary - tested - self._unix_offset

    def _update_shots_wanted(self) -> None:
        width = self._skew_hi - self._skew_lo
        self._shots_wanted = (
            self._reset_beyond_refill  # first: false on most answers of most servers
            and self.probing
            and self._shots_left > 0
            and self._shot_ticket is None
            # Wider than both: two comparisons (a max() call costs more than all the rest),
            # and float factors (a float times a float is the interpreter's fast case).
            and width > 2.0 * self.reset_margin
            and width > 4.0 * self._latency
        )

    def _probe_due(self, now: float) -> bool:
        # Only the first request after the answer that told the Reset may rely on it: any
        # request admitted since then (by the other rules) may already have taken the slot
        # it frees, also before the Reset itself, which a server rounds up to the second.
        # Under a sliding-window counter our requests still in flight may be counted in the
        # new window (_probe_wait).
        return (
            self.probing
            and self._probe_at is not None
            and now >= self._probe_at + self._probe_wait()
            and self._probe_ticket is None
            and self._seq == self._probe_from
        )

    def _probe_wait(self) -> float:
        """How long after Reset the probe waits: under a counter each request of ours still
        in flight may be counted in the window the Reset opens, one counter step
        (``period / limit``) each."""
        return self._in_flight * self.period / self.limit if self._counter_possible else 0.0

    def next_time(self, now: float) -> float | None:
        """Earliest loop time a request may go (``now`` if at once); None: after an answer."""
        if self.capacity(now) > 0:
            return now
        candidates: list[float] = []
        if self._hold and self._shot_at is not None and self._shot_ticket is None:
            candidates.append(self._shot_at)
        frees = self._ledger_frees_at(now)
        if frees is not None:
            candidates.append(frees)
        if (
            self.probing
            and self._probe_at is not None
            and self._probe_ticket is None
            and self._seq == self._probe_from
        ):
            candidates.append(self._probe_at + self._probe_wait())
        if not candidates:
            return None
        ready = max(min(candidates), self.paused_until, now)
        if ready <= now:
            # Nothing frees a slot at this instant after all (rounding): look again a
            # millisecond later rather than spin.
            ready = now + 0.001
        return ready

    def _ledger_frees_at(self, now: float) -> float | None:
        """Earliest loop time at which the ledger grants a slot (``now`` when it does now;
        None when only an answer can free one).

        Walks the events ahead in time order: a slot's period after its answer ending, a
        counter's weight starting to fade (its window's end) and fading out, the foreign
        share expiring. Between two events the fading weight falls linearly, so the instant
        it drops below what is left is solved exactly (integer ns, as ``_tail_weight``
        rounds it).
        """
        allowed = self.limit - 1 - self._in_flight - self._hold
        if allowed < 0:
            return None
        hold = self.slot_hold
        period_ns = self.period_ns
        recent = self._recent
        held = self._foreign_held
        full = list(self._counter_full)  # copies of the heaps: entries move as time passes
        fading = list(self._tail)
        total = self._tail_sum + _TAIL_SLACK * len(fading)
        count = len(fading)
        recent_index = 0
        held_index = 0
        t = now
        while True:
            t_ns = math.floor(t * _NS)
            while full and full[0] - period_ns <= t_ns:
                end = heapq.heappop(full)
                heapq.heappush(fading, end)
                total += end + _TAIL_SLACK
                count += 1
            while fading and fading[0] <= t_ns:
                total -= heapq.heappop(fading) + _TAIL_SLACK
                count -= 1
            while recent_index < len(recent) and recent[recent_index] + hold <= t:
                recent_index += 1
            while held_index < len(held) and held[held_index][0] <= t:
                held_index += 1
            room = allowed - (held[held_index][1] if held_index < len(held) else 0)
            next_event = recent[recent_index] + hold if recent_index < len(recent) else math.inf
            if full and _ns_time(full[0] - period_ns) < next_event:
                next_event = _ns_time(full[0] - period_ns)
            if fading and _ns_time(fading[0]) < next_event:
                next_event = _ns_time(fading[0])
            if held_index < len(held) and held[held_index][0] < next_event:
                next_event = held[held_index][0]
            # Whole slots left for the fading weight once the log's and the counter's full
            # slots are held.
            tail_room = room - len(full)
            if len(recent) - recent_index <= room and tail_room >= 0:
                if count == 0 or total - count * t_ns < (tail_room + 1) * period_ns:
                    return t
                # The fading weight is below tail_room + 1 slots from this ns on:
                at = _ns_time((total - (tail_room + 1) * period_ns) // count + 1)
                if at < next_event:
                    return at
            if next_event == math.inf:
                return None
            # (An entry due within the ns of ``t`` may round to ``t`` itself: move on.)
            t = next_event if next_event > t else math.nextafter(t, math.inf)

    def admit(self, now: float) -> Ticket:
        """Record that a request goes now (the caller checked ``capacity`` first)."""
        if now >= self._next_expiry:
            self._expire(now)
        self._seq = seq = self._seq + 1
        if not self._in_flight:
            self._run_min = None  # a new run starts
            self._run_ok = True
        self._in_flight += 1
        self._in_flight_seqs.append(seq)
        self._obs_uncounted += 1
        ticket = Ticket(seq, now, False, self._answers)
        probe_at = self._probe_at
        probe = probe_at is not None and now >= probe_at and self._probe_due(now)
        if (
            self._hold
            and self._shot_at is not None
            and now >= self._shot_at
            and self._shot_ticket is None
        ):
            self._shot_ticket = ticket
            self._hold -= 1
            self._shot_at = None
            self._shots_left -= 1
            self.shots += 1
            self._shots_wanted = False
        if probe:
            sliding = self.limit - self._in_flight - self._held(now) - self._foreign + 1
            header = (
                self._obs_remaining - self._obs_uncounted + 1
                if self._obs_remaining is not None
                else 0
            )
            if sliding <= 0 and header <= 0:
                self._probe_ticket = ticket
                self._probe_at = None
        return ticket

    def abandon(self, ticket: Ticket) -> None:
        """The admitted request was never sent (cancelled before any byte left)."""
        if ticket.done:
            return
        ticket.done = True
        self._in_flight -= 1
        self._forget(ticket)
        if self._obs_uncounted > 0:
            self._obs_uncounted -= 1
        if self._probe_ticket is ticket:
            self._probe_ticket = None
        if self._shot_ticket is ticket:
            self._shot_ticket = None
            self._update_shots_wanted()

    def _forget(self, ticket: Ticket) -> None:
        seqs = self._in_flight_seqs
        index = bisect.bisect_left(seqs, ticket.seq)
        if index < len(seqs) and seqs[index] == ticket.seq:
            del seqs[index]

    # ------------------------------------------------------------------ feedback

    def complete(
        self,
        ticket: Ticket,
        now: float,
        unix_now: float,
        headers: HeaderReading | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> float | None:
        """Record the outcome of an admitted request.

        ``status`` None means no answer arrived (connection error or cancellation after
        sending: the server may still have counted it). Returns the loop time until which
        the business is paused when this answer was a 429, else None.
        """
        recent = self._recent
        # Our answers recorded while this request was on its way (counted before its own).
        later = self._answers - ticket.answers_before
        answered = not ticket.done  # this call records the answer
        if answered:
            ticket.done = True
            self._in_flight -= 1
            seqs = self._in_flight_seqs
            if seqs and seqs[0] == ticket.seq:
                del seqs[0]  # answered in the order sent: the common case
            else:
                self._forget(ticket)
            recent.append(now)
            if now + self.slot_hold < self._next_expiry:
                self._next_expiry = now + self.slot_hold
            if self._counter_possible:
                record = self._weigh_answer(ticket, now, unix_now, headers)
            self._answers += 1
            latency = now - ticket.sent_at
            if latency > self._max_latency:
                self._max_latency = latency
            self._latency = latency if not self._latency else 0.8 * self._latency + 0.2 * latency
        self._unix_offset = unix_now - now
        was_probe = self._probe_ticket is ticket
        if was_probe:
            self._probe_ticket = None
        if self._shot_ticket is ticket:
            self._shot_ticket = None
        if now >= self._next_expiry:
            self._expire(now)
        if headers is not None:
            # Answers expire oldest first: the later answers that still hold a slot are the
            # newest entries of ``recent`` (after this answer's own, the newest of all).
            others = len(recent) - answered
            if later > others:
                later = others
            # Those recorded in the very instant this request went, after it was admitted,
            # were not answered while it was on its way: the oldest of them, a step or two.
            first = others - later
            while later and recent[first] <= ticket.sent_at:
                later -= 1
                first += 1
            self._observe(ticket, now, unix_now, headers, later)
            # Only a success is surely counted (a 429 is refused uncounted; an error may be).
            if answered and self._counter_possible and status is not None and 200 <= status < 300:
                self._weigh_as_counter(record, now, unix_now, headers)
        if answered:
            self._end_run(now, headers, status)
        if self._reset_beyond_refill or self._shots_wanted:  # else it stays False
            self._update_shots_wanted()
        if status == 429:
            if was_probe:
                self.probing = False  # this server's Reset does not free a slot
            return self._on_rate_limited(now, retry_after)
        if self._hold and self._shot_ticket is None and self._shot_at is None:
            # The shot answered: aim the next one, or give the held request back.
            self._shot_at = self._plan_shot(now)
            if self._shot_at is None:
                self._release_hold()
        return None

    def _end_run(self, now: float, headers: HeaderReading | None, status: int | None) -> None:
        """Take the least Remaining of a run as the server's word once it is all answered.

        Of our requests sent since nothing of ours was in flight, the one the server counted
        last was counted after all the others; its Remaining was written after that, so it
        is what the server would still admit once all of them were counted, and it only grows
        with time (property 1). Whichever it was, the least Remaining of the run is no more.
        Each answer's own word must allow for the others of a burst still on their way; this
        bound needs none, but every request of the run must have answered with a Remaining
        (one that failed may be counted at any time) and none with a 429.
        """
        remaining = headers.remaining if headers is not None else None
        if remaining is None or status is None or status == 429:
            self._run_ok = False
        elif self._run_min is None or remaining < self._run_min:
            self._run_min = remaining
        run_min = self._run_min
        if self._in_flight or not self._run_ok or run_min is None:
            return
        observed = self._obs_remaining
        if observed is None or run_min > observed - self._obs_uncounted:
            self._obs_remaining = run_min
            self._obs_uncounted = 0
            self._obs_time = now

    def _weigh_answer(
        self, ticket: Ticket, now: float, unix_now: float, headers: HeaderReading | None
    ) -> _CounterAnswer:
        """Hold an answered request as a counter may weigh it, and keep what places it."""
        date = headers.date_unix if headers is not None else None
        reset = headers.reset_unix if headers is not None else None
        end = self._fades_at(ticket.sent_at, now, unix_now, date, reset)
        record = _CounterAnswer(
            ticket.sent_at, now, unix_now, date, reset, ticket.answers_before, end
        )
        answers = self._counter_answers
        now_ns = math.floor(now * _NS)
        while answers and answers[0].end <= now_ns:
            answers.popleft()
        answers.append(record)
        self._weigh(end, now)
        return record

    def _fades_at(
        self, sent_at: float, now: float, unix_now: float, date: float | None, reset: float | None
    ) -> int:
        """When (loop time, integer ns) a sliding-window counter weighs an answered request
        nothing: :meth:`answer_window`'s bound, never later than two periods after the
        answer (nor without a ``Date`` to place it).
        """
        period = self.period
        window = self._window(sent_at, now, unix_now, date, reset)
        if window is None or window[1] >= now + 2 * period:
            return math.ceil((now + 2 * period) * _NS)
        return math.ceil(window[1] * _NS)

    def _weigh(self, end: int, now: float) -> None:
        """Hold an answered request as a counter would weigh it until ``end`` (ns)."""
        now_ns = math.floor(now * _NS)
        if end <= now_ns:
            return
        if end - self.period_ns > now_ns:
            heapq.heappush(self._counter_full, end)
            at = _ns_time(end - self.period_ns)
        else:
            heapq.heappush(self._tail, end)
            self._tail_sum += end
            at = _ns_time(end)
        if at < self._next_expiry:
            self._next_expiry = at

    def answer_window(
        self, ticket: Ticket, now: float, unix_now: float, headers: HeaderReading | None
    ) -> tuple[float, float] | None:
        """The latest end (server Unix time) of the aligned window in which this answered
        request can have been counted, and the latest loop time at which the server's clock
        can read one period past it; None without a ``Date`` to bound it.

        A sliding-window counter weighs a request fully until the end of the aligned window it
        was counted in, then less and less over the next one: it weighs nothing one period
        after that window's end (and never later than two periods after the answer). Where
        the server's clock is bounded (this answer's ``Date``, the offset learnt so far), the
        window's end is bounded too. Its own Reset is not used: servers differ on what Reset
        means under a counter.
        """
        if headers is None:
            return None
        return self._window(ticket.sent_at, now, unix_now, headers.date_unix, headers.reset_unix)

    def _window(
        self, sent_at: float, now: float, unix_now: float, date: float | None, reset: float | None
    ) -> tuple[float, float] | None:
        if date is None:
            return None
        period = self.period
        lo, hi = self._counter_offsets()
        # The server counted it before it wrote the answer (before Date + 1) and before our
        # ``now`` (at most our Unix time plus the largest offset a counter can have).
        counted_by = date + 1.0 + (now - sent_at)
        if unix_now + hi < counted_by:
            counted_by = unix_now + hi
        window_end = (math.floor(counted_by / period) + 1) * period
        # A Reset is never before the instant its request was counted (it tells of the
        # future): when it falls on a multiple of the period, the window the request was
        # counted in ends there or earlier, whatever else Reset means on this server.
        if reset is not None and date <= reset < window_end:
            nearest = round(reset / period) * period
            if abs(reset - nearest) <= 1e-6 * period and nearest > date - 1.0:
                window_end = nearest
        # The server's clock read at least Date (and our Unix time plus the least offset)
        # when ours read ``now``.
        server_now = max(date, unix_now + lo)
        return window_end, now + (window_end - server_now) + period

    def _counter_offsets(self) -> tuple[float, float]:
        """The clock offsets (server minus ours) a sliding-window counter can have: what the
        ``Date`` headers allow, narrowed by the Remaining values it reported."""
        lo = self._skew_lo if self._skew_lo > self._counter_lo else self._counter_lo
        hi = self._skew_hi if self._skew_hi < self._counter_hi else self._counter_hi
        return lo, hi

    def _observe(
        self, ticket: Ticket, now: float, unix_now: float, h: HeaderReading, later: int
    ) -> None:
        header_limit, remaining, reset_unix, date_unix = h
        if date_unix is not None:
            # The server wrote Date (its time, truncated to the second) between our send and
            # our receipt, so ``date - received <= skew < date + 1 - sent``: only an answer
            # that narrows the interval teaches anything.
            sent_unix = unix_now - (now - ticket.sent_at)
            low = date_unix - unix_now
            high = date_unix + 1.0 - sent_unix
            if low > self._skew_lo or high < self._skew_hi:
                self._learn_skew(low, high)
        if header_limit is not None and header_limit < self.limit:
            # The server knows better: never pace above what it announces.
            self.limit = header_limit
        if remaining is None:
            return
        if ticket.seq < self._obs_seq:
            # An older request's answer arrived late: its Remaining may have been written
            # before the newer one's, so it is not the server's latest word; what it shows
            # spent by someone else is still true.
            self._hold_foreign(ticket, now, header_limit or self.limit, remaining)
            return
        self._obs_seq = ticket.seq
        self._obs_time = now
        self.server_limit = header_limit
        self.remaining = remaining
        limit = header_limit or self.limit
        period = self.period
        reset_at: float | None = None
        if reset_unix is not None:
            # The earliest our clock may read when the server's reaches Reset: with the
            # smallest skew the Date headers allow (no Date yet: assume a second behind).
            skew = self._skew_lo if self._skew_lo > -math.inf else -1.0
            ahead = reset_unix - (unix_now + skew)
            if -1.0 <= ahead <= _MAX_RESET_PERIODS * period + 2.0:
                reset_at = now + ahead if ahead > 0.0 else now
                self.reset_unix = reset_unix
        self.reset_at = reset_at
        if reset_at is None:
            self._probe_at = None
            self._reset_beyond_refill = False
        else:
            # Whatever the algorithm, what the Reset frees is free one period after this
            # request was counted (a window's end, the log's oldest entry leaving, a full
            # bucket: none is later), so before our ``now + period``: no clock offset or
            # rounding of Reset to the second can push the probe past that.
            self._probe_at = min(reset_at + self.reset_margin, now + period * (1 + 1e-6))
            self._probe_from = self._seq
            # A token bucket's Reset (full again) is at most (limit - Remaining) refills after
            # the answer was written, plus its rounding up: a later one rules a bucket out,
            # whose Reset no shot could ever bring forward.
            self._reset_beyond_refill = (
                reset_unix is not None
                and reset_unix
                > unix_now + self._skew_hi + (limit - remaining) * period / limit + 1.0
            )

        # Ours that this answer may not reflect: all but those answered before it was sent
        # (the server may count a later-sent request first, and answer it first too): those
        # in flight and the ``later`` ones answered while it was on its way.
        self._obs_remaining = remaining
        self._obs_uncounted = self._in_flight + later
        self._hold_foreign(ticket, now, limit, remaining)

    def _hold_foreign(self, ticket: Ticket, now: float, limit: int, remaining: int) -> None:
        """Hold what this answer shows someone else spent (every answer's own reading: one
        that arrives after a later-sent request's may have been written after it, and
        know more).
        """
        # What the server counts beyond the requests of ours it may have counted. Normally
        # that is every request in flight and every one answered less than a period ago: a
        # lower bound that never holds budget back for nothing. After a 429 has proved that
        # someone else spends the budget, only requests sent before this one count as
        # possibly ours: sharper (it can mistake ours that overtook this one on another
        # connection for someone else's), and wrong only on the safe side.
        # The largest share seen is held for a period (three while alerted).
        alerted = now < self._foreign_alert_until
        in_flight_before = (
            bisect.bisect_left(self._in_flight_seqs, ticket.seq) if alerted else self._in_flight
        )
        period = self.period
        foreign = (limit - remaining) - (self._held(now) + in_flight_before)
        if foreign > 0:
            held = self._foreign_held
            while held and held[-1][1] <= foreign:
                held.pop()
            until = now + (3 * period if alerted else period)
            held.append((until, foreign))
            # Nothing in ``held`` is due (complete() expired it just now): read its head.
            self._foreign_until, self._foreign = held[0]
            if until < self._next_expiry:
                self._next_expiry = until

    def _weigh_as_counter(
        self, record: _CounterAnswer, now: float, unix_now: float, h: HeaderReading
    ) -> None:
        """Test a counted answer's Remaining against a sliding-window counter, then record
        the window this request was counted in at the earliest.

        Were the server a counter of ``limit`` (windows aligned to multiples of the period on
        its clock), it wrote Remaining at an instant ``t`` between our send and our receipt
        (and at most a round trip after its Date second) as
        ``limit - cur - floor(prev * (1 - f))`` at most: ``cur`` and ``prev`` count at
        least our requests answered before this one was sent (and those of the processes
        sharing our ledger: add_shared_evidence), each in the window of its earliest
        possible count instant (counted later, or with others' requests, they
        weigh more). Within a window that bound is least at the latest ``t``: at our
        receipt, or just before the window ends, where the previous window weighs nothing.
        A Remaining above the least of them proves that no counter at that limit answered
        with a clock offset in the range tested (_refutes_counter). The range a counter can
        have is tested in slices from both ends inwards, and narrows to what is left: its
        windows are then placed more sharply, and the ledger's counter weights recomputed
        (_reweigh). When no offset is left, no counter answered: the ledger drops the fading
        tails, and the other three algorithms free each slot a period after its answer
        (property 2).
        """
        lo, hi = self._counter_offsets()
        if lo == -math.inf or hi == math.inf:
            return  # no Date yet: the window of nothing is known
        if lo > hi:
            # The Date headers left no offset a counter's Remaining allowed.
            self._rule_out_counter(now)
            return
        evidence = self._evidence
        shared = self._shared_evidence
        limit, remaining = h.limit, h.remaining
        if (evidence or shared) and limit is not None and remaining:
            narrowed = False
            for _ in range(_OFFSET_ROUNDS):
                step = (hi - lo) / _OFFSET_SLICES
                low = 0
                while low < _OFFSET_SLICES and self._refutes_counter(
                    record, unix_now, h, lo + low * step, lo + (low + 1) * step
                ):
                    low += 1
                if low == _OFFSET_SLICES:
                    self._rule_out_counter(now)
                    return
                high = 0
                while self._refutes_counter(
                    record, unix_now, h, hi - (high + 1) * step, hi - high * step
                ):
                    high += 1  # (slice ``low`` stands: this stops there at the latest)
                if not (low or high):
                    break
                # What is left is tested again in finer slices: one slice may hold both
                # offsets the answer rules out and offsets it allows.
                lo, hi = lo + low * step, hi - high * step
                narrowed = True
            if narrowed:
                self._counter_lo, self._counter_hi = lo, hi
                self._reweigh(now)
        sent = record.unix_at - (record.at - record.sent_at)
        # Older than the windows any later test reads (its previous window at the earliest):
        # dropping evidence only weakens a test.
        oldest = sent - 3 * self.period - (hi - lo)
        while evidence and evidence[0][1] < oldest:
            evidence.popleft()
        while shared and shared[0][0] < oldest:
            shared.popleft()
        evidence.append((self._answers - 1, sent))  # (this answer's index: recorded just now)

    def _refutes_counter(
        self, record: _CounterAnswer, unix_now: float, h: HeaderReading, lo: float, hi: float
    ) -> bool:
        """Whether this answer's Remaining is more than a counter with a clock offset in
        ``[lo, hi]`` could have reported (see _weigh_as_counter); the caller checked that the
        answer has Limit and Remaining and that some answer is placed."""
        period = self.period
        trip = record.at - record.sent_at
        # The earliest server time this request can have been counted at.
        earliest = unix_now - trip + lo
        # Written before our receipt, and (as in _window) at most a round trip after its Date
        # second ended.
        latest = unix_now + hi
        if h.date_unix is not None and h.date_unix + 1.0 + trip < latest:
            latest = h.date_unix + 1.0 + trip
        scaled = latest / period
        last = math.floor(scaled)
        first = math.floor(earliest / period)
        if last - first > 3:
            return False  # a period shorter than the clock's uncertainty: no test
        counts = self._window_counts(record.before, lo)
        if self._shared_evidence:
            counts = self._with_shared_counts(counts, earliest - lo, lo)
        # Float slack: a server's own phase may read a few ulps less than ours.
        phase = scaled - last + 4 * math.ulp(scaled)
        prev = counts.get(last - 1, 0)
        least = counts.get(last, 0) + math.floor(prev * (1.0 - phase))
        for window in range(first, last):
            cur = counts.get(window, 0)
            if cur < least:
                least = cur
        return h.remaining is not None and h.limit is not None and h.remaining > h.limit - least

    def _window_counts(self, before: int, offset: float) -> dict[int, int]:
        """How many of our first ``before`` answered requests (the evidence) each aligned
        window counts at the least, were the clock offset ``offset`` or more: each in the
        window of its send. (Answers of one burst share ``before``: counted once.)"""
        key = (before, offset)
        counts = self._evidence_counts.get(key)
        if counts is None:
            counts = {}
            period = self.period
            for index, sent in self._evidence:
                if index >= before:
                    break  # (in answer order: the rest came later)
                window = math.floor((sent + offset) / period)
                counts[window] = counts.get(window, 0) + 1
            if len(self._evidence_counts) >= 4:
                del self._evidence_counts[next(iter(self._evidence_counts))]
            self._evidence_counts[key] = counts
        return counts

    def _with_shared_counts(
        self, counts: dict[int, int], sent: float, offset: float
    ) -> dict[int, int]:
        """``counts`` plus the requests of the processes sharing our ledger that were
        answered before ``sent`` (our request's send, Unix time), each in the window of the
        earliest instant it can have been sent, were the clock offset ``offset`` or more."""
        period = self.period
        merged = dict(counts)
        for earliest, answered in self._shared_evidence:
            if answered < sent:
                window = math.floor((earliest + offset) / period)
                merged[window] = merged.get(window, 0) + 1
        return merged

    def add_shared_evidence(self, answers: Sequence[tuple[float, float]]) -> None:
        """Successful answers to the other processes that share a ledger with this state,
        as ``(sent, answered)`` Unix times: ``sent`` a lower bound of when the request went,
        ``answered`` an upper bound of when its answer arrived, each request once.

        A counter weighs them as it weighs ours, so they make the proof that the server is
        no counter (_weigh_as_counter) as strong as one process sending everything: with four
        processes, each one's own requests weigh a quarter of what the server counts, and a
        sliding log's Remaining never exceeds what a counter could report from a quarter.
        Placing a request earlier and taking its answer later only weakens a test, so bounds
        are enough. Nothing is kept once the counter is ruled out.
        """
        if self._counter_possible:
            self._shared_evidence.extend(answers)

    def _rule_out_counter(self, now: float) -> None:
        self._counter_possible = False
        self._evidence.clear()
        self._shared_evidence.clear()
        self._evidence_counts.clear()
        self._counter_answers.clear()
        self._counter_full = []
        self._tail.clear()
        self._tail_sum = 0
        self._next_expiry = now  # look again at what expires

    def _reweigh(self, now: float) -> None:
        """Place our answered requests in a counter's windows again with the offsets it can
        still have: their weights in the ledger, and the evidence of later tests.

        Narrower offsets only end a weight sooner (and place evidence later, where it weighs
        more), so this is done only when they have moved by a quarter of a counter step.
        """
        lo, hi = self._counter_offsets()
        weighed_lo, weighed_hi = self._counter_weighed
        quarter = self.period / self.limit / 4
        if abs(lo - weighed_lo) < quarter and abs(weighed_hi - hi) < quarter:
            return
        self._counter_weighed = (lo, hi)
        period_ns = self.period_ns
        now_ns = math.floor(now * _NS)
        full: list[int] = []
        tail: list[int] = []
        kept: deque[_CounterAnswer] = deque()
        for record in self._counter_answers:
            end = self._fades_at(
                record.sent_at, record.at, record.unix_at, record.date, record.reset
            )
            if end <= now_ns:
                continue
            record.end = end
            kept.append(record)
            if end - period_ns > now_ns:
                full.append(end)
            else:
                tail.append(end)
        heapq.heapify(full)
        heapq.heapify(tail)
        self._counter_answers = kept
        self._counter_full = full
        self._tail = tail
        self._tail_sum = sum(tail)
        self._next_expiry = now  # look again at what expires

    def _learn_skew(self, low: float, high: float) -> None:
        """Narrow the server-minus-our-clock interval to what one answer's ``Date`` allows:
        ``low <= skew < high`` (see _observe).

        Answers that straddle a second boundary pin it to within the round trip, like NTP.
        """
        lo, hi = self._skew_lo, self._skew_hi
        if low > hi or high < lo:
            # Inconsistent with what we knew: a clock was stepped. Start over.
            lo, hi = low, high
            self._shots_left = _MAX_SHOTS
            # Placed by the old clock: no longer a lower bound.
            self._evidence.clear()
            self._shared_evidence.clear()
            self._evidence_counts.clear()
            self._forget_counter_offsets()
        else:
            if low > lo:
                lo = low
            if high < hi:
                hi = high
        self._skew_lo, self._skew_hi = lo, hi
        self.skew = (lo + hi) / 2

    def _forget_counter_offsets(self) -> None:
        """Back to any offset the Date headers allow."""
        self._counter_lo = -math.inf
        self._counter_hi = math.inf

    def _on_rate_limited(self, now: float, retry_after: float | None) -> float:
        self.rate_limited += 1
        self._foreign_alert_until = now + 3 * self.period
        self._release_hold()
        self._obs_remaining = 0
        if not self._counter_possible:
            # Whatever proved the server no counter, this 429 says the gate's picture is
            # wrong (the server may have changed): assume a counter again.
            self._counter_possible = True
        self._forget_counter_offsets()
        self._reweigh(now)
        wait = retry_after if retry_after is not None else self.period
        until = now + wait
        if until > self.paused_until:
            self.paused_until = until
            self.pauses += 1
        return self.paused_until

    # ------------------------------------------------------------------- reading

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def counter_possible(self) -> bool:
        """False once an answer proved that the server is no sliding-window counter."""
        return self._counter_possible

    @property
    def foreign(self) -> int:
        return self._foreign

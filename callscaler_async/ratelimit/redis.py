"""The business rate gate shared through Redis: one budget for every process and host.

``RedisRateLimiter`` implements the ``RateGate`` protocol like ``local.BusinessRateGate``, but
the authority on *when* a request may go is a ledger kept in Redis, shared by every process
that names the same business (and key prefix).

The algorithm
-------------
The rule is the local gate's (see ``_state``): each request occupies a slot from its
reservation until at least one period after its answer, so no latency has to be guessed, and
as long after that as a sliding-window counter may still weigh it (below). Redis holds,
per business, three sorted sets of request ids, in integer microseconds of Redis's own clock
(``TIME``; no float touches the ledger):

* ``fly``: reserved, sent or not yet reported, scored by a deadline (reservation plus
  ``in_flight_timeout``) after which an entry is held as if answered then (a process that
  died mid-request cannot block the budget for ever);
* ``rel``: answered, scored by the release time: between one and two periods after the
  answer (below);
* ``grp``: the answers placed in the server's windows, scored by the latest aligned window
  each can have been counted in, for the staircase below.

A Lua script, run atomically with ``EVALSHA``, first records the answers reported with the
call (each answer's time is ``min(answer, now)``: the report left after the answer arrived, so
Redis's ``now`` bounds it; the process's own bound from an earlier call's ``TIME`` is usually
tighter) and places their releases (below), then reserves slots for the process's waiters,
oldest first: the ``i``-th, with ``j - 1`` waiters of any process ahead of it, at the
earliest ``r >= now`` with

    |fly| + (j - 1) + |{rel: release > r}| < limit

and adds it to ``fly``. It returns each ``r - now``. It stops at a slot it cannot promise:
when ``limit`` entries are in flight or queued ahead (no time can be known yet; it returns
when to ask again: the oldest reservation plus a period, no entry is released earlier; at
least one slot's spacing, ``period / limit``), or when ``r`` is more than an eighth of a
period away (ask again that much before it: releases only move earlier as answers arrive,
and the slot then goes to whoever waits longest by then).

Fairness: first come, first served across processes. The waiters a call could not serve
stay in a shared ``queue`` (a sorted set scored by arrival on Redis's clock, with a hash,
``queued``, of how many each process has there), and every process's reservation counts the
ones that arrived before its own waiter as ahead of it (``j`` above). A process replaces its
entries at each call, so a cancelled waiter leaves the queue with the next call, which goes
at once; an ended lease drops them. Without the queue, a process that asks again the moment
its own slots free would take every release and keep another's earlier waiters waiting:
four FastAPI workers sharing 20 requests per 4 s measured a p95 of 8 s where one worker's
is 4 s.

Why it is safe, whatever the server's latency: take the requests the server counts in any
window of length ``period`` and the last of them to be reserved. When it was reserved every
other one was in ``fly`` or in ``rel`` with a release after its own reservation (a request is
counted before its answer, and the window ends after the last one's reservation), so at most
``limit - 1`` others: no window holds more than ``limit``, whichever process sent them. As
``_state`` explains, a server that counts at most ``limit`` in every window never answers
429, whether it runs a fixed window, a sliding log or a token bucket. A sliding-window counter
also weighs a request after that window, fading over the next period; Redis holds whole
slots, not fractions, so the script releases the answers that share a window, whichever
process sent them (each process places its answers by their ``Date``:
``GateState.answer_window``), as a staircase that never holds fewer than the counter's weight
of them (``staircase_releases``, the same arithmetic in Python, with its proof). Every answer
reported lowers the releases of its window's others, never raises them. The cost: a burst
early in a window frees at the counter's pace (``limit`` per period from the window's end),
also on a log or a bucket, where it could have freed at once; a steady pace loses a step per
request (the README gives ``bench_redis.py``'s figures). Answers without ``Date`` are released
one period after them (see ``_report_answer``).

Until the server is proven no counter. Every process tests its answers as the local gate does
(``GateState._weigh_as_counter``: a Remaining above what a counter could report), with every
process's successes as evidence: the script keeps each one in ``ev`` (its slot time, before
which it was not sent, and its answer's bound) and returns to each caller the others' entries
reported since its previous call (``GateState.add_shared_evidence``). A quarter of a burst
never proves it; the whole burst does (four FastAPI workers sharing 20 per 4 s against a
sliding log: p95 5.7 s with each process's own evidence, 4.0-4.4 s with everyone's, where
one worker alone measures 4.0 s). The first process with the proof says so in its next call:
``nocounter`` is set, every answer of a window (``grp``) is released one period after it,
and new answers are placed in no window. A 429 deletes ``nocounter`` (the pause script):
the server may not be what the proof said.

The server's word: an answer's ``X-RateLimit-Remaining`` is what the server would admit at an
instant after its request went, and under all four algorithms it only grows with time, but
for requests counted since, each weighing at most one: those in ``fly`` now and those
answered after it went (the set ``ans`` keeps recent answers by time). So
``remaining - |fly| - |answered since| + 1`` more may go at once, whatever the ledger's
releases say; the largest such figure, less every reservation made since, is kept in
``word`` and lets that many reservations skip the wait for a release (never the ``limit``
in flight). Only requests sent after the latest 429's pause speak for the server.

The probe: with nothing in flight, the latest answer (``ans``, an upper bound) came after
every request the server counted, so one period later it admits one more whatever its
algorithm (a new fixed window, a log that let them all go, a full bucket, a counter whose
previous window weighs less than ``limit`` past phase 0 and whose current one counts nothing
of ours). The first waiter in the queue may go then, whatever the releases say, and its
answer's Remaining, as the server's word and as evidence against a counter, decides the rest;
until the probe's answer is reported (a twentieth of a period) the others ask again soon after
it, not when the releases say. No probe while the latest 429's pause key lives. Without it, a
burst at the start of a server window was held by the staircase up to two periods with nothing
sent that could prove the server no counter.

Slots are mapped to the loop clock as *answer received + wait*, never earlier than Redis
meant; a late send only uses the slot late (a waiter more than ``in_flight_timeout / 2``
late reserves again).

Cost: one Redis round trip per *batch*, not per request. In a process, one pump task
reserves for up to ``limit`` waiters per call and hands the slots out in priority order
(``high`` > ``normal`` > ``low``, first come first served within a priority). It calls when
its queue changed (an arrival takes its place in the shared queue at once; a cancellation
gives one up) or when the script said to ask again; as nothing is promised further than an
eighth of a period ahead, a process never hoards the future and a late ``high`` request
still goes before queued ``low`` ones.
Answers are reported with the next reservation, or at the latest a twentieth of a period
after the first unreported answer (one call for all of them): the release time is the
answer's, not the report's, but until it is reported the entry sits in ``fly``, where it
blocks every other process's reservations (no time can be promised against it), so a process
gone quiet must not sit on its answers for long. A cancelled waiter
returns at once; a slot it was already handed goes to the next local waiter (or is kept
briefly for the next arrival; unused, it is reported as never sent).

A 429 reported by any process (``complete(status=429, retry_after=...)``) sets the shared
``pause_until`` (the maximum with any pause already set) and adds ``limit`` phantom entries
to ``rel`` released one ``period / limit`` apart from then on, so the restart after the
pause is staggered (``limit`` slots spread over one period, like the local gate's restart);
no reservation is ever earlier than ``pause_until``. Slots another process reserved before
the 429 was reported are still used: at most an eighth of a period's worth per process.

Keys expire when the business is idle (``PEXPIRE`` of ``in_flight_timeout`` plus two periods
plus any pause).

Processes come and go
---------------------
Each process holds a *lease* in a fifth set, ``live``: its ledger token scored by the lease's
end, ``liveness_timeout`` after its latest call or after the latest slot it was given,
whichever is later (renewed by every call, never shortened but by a goodbye). When a lease
has run out, the next call of any process treats that token's ``fly`` entries as answered at
the lease's end (released two periods later: no answer places them in the server's windows;
one period once the server is known to be no counter) and drops its entries in ``queue``. A
process waiting for a slot renews its lease every half lease, however long it waits. So a
process killed without a goodbye holds the budget at most ``liveness_timeout`` longer than it would
have by using its slots: with the defaults (``period / 6``, between 1 s and 10 s) 10 s at the
API's 60 per minute, instead of ``in_flight_timeout`` (60 s) that still bounds entries
without a lease. Safe because a live process sends nothing after its lease ends: every slot
is used by ``liveness_timeout / 2`` after its time or given back (a waiter woken later
reserves again), and a request sent is counted by the server on arrival, well before the
remaining half of the lease. It does need an event loop that never stalls for longer than
half the lease with a slot in hand.

``aclose()`` says goodbye: it reports every answer and every slot it will not use (a request
still in flight is held as answered then), and removes its lease and registration in the same
call, so a graceful restart leaves nothing in the ledger beyond what the requests themselves
hold (each answer one period).

The token is drawn when the limiter first binds to an event loop, and again in a child after
``fork`` (``os.register_at_fork``): a limiter built before the fork (``gunicorn --preload``)
gives each worker its own identity, Redis connections and queue, never the parent's.

Redis unreachable: with ``fallback="error"`` (default) ``acquire`` raises
``RateLimiterUnavailable``; with ``fallback="local"`` a warning is logged once and the process
paces alone through a local ``BusinessRateGate`` (seeded with its own recent sends) until the
limiter is closed. Socket timeouts are short, so the gate never hangs on Redis.

The local ``GateState`` still reads the ``X-RateLimit-*`` headers for ``snapshot()`` and lowers
the limit used when the server announces a smaller one; the shared ledger alone decides
admission.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import logging
import math
import os
import secrets
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from .. import _loops
from .._errors import RateLimitError, RateLimiterUnavailable
from ._config import Priority, RateLimit, RateLimitSnapshot, priority_rank
from ._state import (
    GateState,
    HeaderReading,
    Ticket,
    parse_rate_headers,
)
from .local import BusinessRateGate, max_wait_refusal

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

__all__ = ["RedisRateLimiter"]

logger = logging.getLogger("callscaler_async.ratelimit")

_US: Final = 1_000_000
# A reserved slot: (loop time it may go, its id in the Redis ledger).
_Slot = tuple[float, str]
# An answer for the ledger: id, answered_us, hold_us, window, fades_us, remaining, counted
# (see _RESERVE_LUA).
_Report = tuple[str, int, int, str, int, int, int]
# Handed to queued waiters instead of a slot when the gate switches to the local fallback.
_USE_LOCAL: Final[_Slot] = (float("-inf"), "")
# Answers are reported at the latest this many periods after the first unreported one
# (with four workers sharing 20 per 4 s, three quarters of a period cost a quarter on p95).
_REPORT_WITHIN: Final = 0.05
# An answer time with no bound from our side: the script takes its own clock instead.
_UNBOUNDED_US: Final = 2**52

# Socket timeouts of the client we create: the gate must never hang on Redis.
_SOCKET_TIMEOUT: Final = 2.0

# KEYS: fly, rel, pause, queue, live, grp, ans, word, queued, ev, nocounter, probe. ARGV: qn (our
# waiters without a slot; -1: only report, keep our queue entries), limit, period_us, cap_us,
# ttl_ms, token, first_seq, lease_us (0: this token leaves), horizon_us (no slot is promised
# further ahead), since_us (our previous call's now: evidence reported after it is returned),
# proved (1: our answers proved the server no sliding-window counter), then qn arrival times on
# Redis's clock (upper bounds; 0: now), then (id, answered_us, hold_us, window, fades_us,
# remaining, counted) septuples: answered_us is the answer's time on Redis's clock (an upper
# bound), 0 for a slot never used; window the index of the latest aligned window the server can
# have counted it in ('' where its answer could not be placed: then it is released hold_us after
# the answer), fades_us a bound on Redis's clock by which a counter weighs it nothing; remaining
# the answer's X-RateLimit-Remaining (-1: none, or not to be used); counted 1 for a success (the
# server surely counted it). Returns {now, waits..., retry, soonest, nocounter, evidence}: retry
# (microseconds from now) is 0, or when to ask again if fewer than qn slots could be promised,
# soonest when the first unpromised slot comes at the earliest (0: unknown), nocounter 1 once
# the server is known to be no counter, evidence the other processes' successes reported since
# since_us, as 'reported_us:sent_us:answered_us' (when it was reported, its slot time and its
# answer's bound, on Redis's clock).
_RESERVE_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local qn = tonumber(ARGV[1])
local n = math.max(qn, 0)
local limit = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local token = ARGV[6]
local seq = tonumber(ARGV[7])
local horizon = tonumber(ARGV[9])
local since = tonumber(ARGV[10])
local pause = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
-- Once any process's answers proved that the server is no sliding-window counter, a slot
-- frees one period after its answer, as a log, a bucket or a fixed window needs: the
-- staircase's answers are released at once to that, and new answers are placed nowhere.
local nocounter = redis.call('GET', KEYS[11]) ~= false
if ARGV[11] == '1' and not nocounter then
  nocounter = true
  for _, m in ipairs(redis.call('ZRANGE', KEYS[6], 0, -1)) do
    local done, _, id = string.match(m, '^(%d+):(%d+):(.*)$')
    local release = tonumber(done) + period
    local held = redis.call('ZSCORE', KEYS[2], id)
    if held and release < tonumber(held) then redis.call('ZADD', KEYS[2], release, id) end
  end
  redis.call('DEL', KEYS[6])
end
if nocounter then redis.call('SET', KEYS[11], '1', 'PX', ttl) end
local queued = {}
for i = 1, n do
  local a = tonumber(ARGV[11 + i])
  if a == 0 or a > now then a = now end
  queued[i] = a
end
local touched = {}
local words = {}
for i = 12 + n, #ARGV - 6, 7 do
  local id = ARGV[i]
  local done = tonumber(ARGV[i + 1])
  local hold = tonumber(ARGV[i + 2])
  local window = ARGV[i + 3]
  local remaining = tonumber(ARGV[i + 5])
  if nocounter then
    window = ''
    hold = period
  end
  if hold < period then hold = period end
  if hold > 2 * period then hold = 2 * period end
  if done > now then done = now end
  local reserved = redis.call('ZSCORE', KEYS[1], id)
  if reserved then redis.call('ZREM', KEYS[1], id) end
  if reserved and done > 0 then
    redis.call('ZADD', KEYS[7], done, id)
    -- The slot's time: the request went no earlier. After a 429, only requests sent after
    -- the pause speak for the server.
    local sent = tonumber(reserved) - cap
    if remaining >= 0 and sent >= now - period and sent >= pause then
      words[#words + 1] = {sent, remaining}
    end
    if ARGV[i + 6] == '1' and not nocounter then
      redis.call('ZADD', KEYS[10], now, string.format('%.0f', sent) .. ':' ..
        string.format('%.0f', done) .. ':' .. id)
    end
    if window == '' then
      redis.call('ZADD', KEYS[2], done + hold, id)
    else
      -- Held two periods until the staircase below places it among its window's answers.
      redis.call('ZADD', KEYS[2], done + 2 * period, id)
      redis.call('ZADD', KEYS[6], tonumber(window),
        string.format('%.0f', done) .. ':' .. ARGV[i + 4] .. ':' .. id)
      touched[window] = true
    end
  end
end
-- staircase_releases (in _state) over every process's answers of each window reported now:
-- sorted by answer, latest first, the m-th is released at fades - min(m, limit - 1) steps of
-- period / limit, never before its own period ends nor after two. Only ever earlier.
for window, _ in pairs(touched) do
  local w = tonumber(window)
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', w - 4)
  local group = {}
  local fades = math.huge
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], w, w)) do
    local done, fade, id = string.match(m, '^(%d+):(%d+):(.*)$')
    done = tonumber(done)
    fade = tonumber(fade)
    if fade < fades then fades = fade end
    group[#group + 1] = {done, id}
  end
  table.sort(group, function(a, b) return a[1] > b[1] end)
  for m, entry in ipairs(group) do
    local steps = m - 1
    if steps > limit - 1 then steps = limit - 1 end
    local release = fades - math.floor(steps * period / limit)
    if release < entry[1] + period then release = entry[1] + period end
    if release > entry[1] + 2 * period then release = entry[1] + 2 * period end
    local held = redis.call('ZSCORE', KEYS[2], entry[2])
    if held and release < tonumber(held) then redis.call('ZADD', KEYS[2], release, entry[2]) end
  end
end
-- The server's word: an answer's Remaining is what it admitted at an instant after the
-- request went, and only grows with time but for requests counted since (each weighs at
-- most one): those in flight now and those answered after it went (itself among them, and
-- counted in Remaining). The larger of it and what is left of earlier words is a true
-- lower bound; every reservation spends it.
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - 2 * period)
local word = tonumber(redis.call('GET', KEYS[8]) or '0') or 0
if #words > 0 then
  local flying_now = redis.call('ZCARD', KEYS[1])
  for _, w in ipairs(words) do
    local since = redis.call('ZCOUNT', KEYS[7], string.format('(%.0f', w[1]), '+inf')
    local said = w[2] - flying_now - since + 1
    if said > word then word = said end
  end
end
-- The queue: every process's waiters without a slot, by arrival, as '<token>:<i>'; the
-- hash keeps how many each token has there.
local function unqueue(who)
  local count = tonumber(redis.call('HGET', KEYS[9], who) or '0')
  for j = 1, count do redis.call('ZREM', KEYS[4], who .. ':' .. j) end
  redis.call('HDEL', KEYS[9], who)
end
if qn >= 0 then unqueue(token) end
-- Our lease runs until liveness_timeout after this call or after our latest slot, whichever
-- is later; lease 0 (a goodbye) ends it now, releasing whatever we still hold just below.
local lease = tonumber(ARGV[8])
local mine = tonumber(redis.call('ZSCORE', KEYS[5], token) or '0')
if lease == 0 or mine < now + lease then
  mine = now + lease
  redis.call('ZADD', KEYS[5], mine, token)
end
-- Slots without an answer are held two periods (no answer tells in which window a counter
-- counted them), one where the server is no counter.
local unanswered = 2 * period
if nocounter then unanswered = period end
local gone = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'WITHSCORES')
if #gone > 0 then
  -- Processes whose lease ran out: their entries are held as answered at its end.
  local ended = {}
  for i = 1, #gone, 2 do
    ended[gone[i]] = tonumber(gone[i + 1])
    unqueue(gone[i])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    local at = ended[string.match(id, '^(.*):[^:]*$')]
    if at then
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZADD', KEYS[2], at + unanswered, id)
      redis.call('ZADD', KEYS[7], at, id)
    end
  end
end
-- Past their in-flight deadline: held as answered then (as above).
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES')
for i = 1, #dead, 2 do
  redis.call('ZREM', KEYS[1], dead[i])
  redis.call('ZADD', KEYS[2], tonumber(dead[i + 1]) + unanswered, dead[i])
  redis.call('ZADD', KEYS[7], tonumber(dead[i + 1]), dead[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local flying = redis.call('ZCARD', KEYS[1])
local rel = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local held = #rel / 2
local out = {now}
local retry = 0
local earliest = now
-- The probe: with nothing in flight, every request the server counted was counted by the
-- latest answer (an upper bound, in ans), and one period later it admits one more whatever
-- its algorithm (a fixed window has a new window; a log has let them all go; a bucket is
-- full; a counter's previous window weighs less than limit once its phase is past 0, and
-- its current one counts nothing of ours). So the first waiter may go then, whatever the
-- releases say: under a counter's staircase, that answer is what tells a log (Remaining
-- high) from a counter. Not while the latest 429's pause key lives: that probe may have
-- been the one the server refused.
local probe = nil
local probed = tonumber(redis.call('GET', KEYS[12]) or '0') or 0
if flying == 0 and pause == 0 then
  local last = redis.call('ZRANGE', KEYS[7], -1, -1, 'WITHSCORES')
  if #last > 0 then probe = tonumber(last[2]) + period + 1000 end
end
for i = 1, n do
  -- First come, first served across processes: our i-th waiter takes the j-th slot to
  -- come, after every other process's waiter that arrived before it.
  local j = i
  if queued[i] then
    j = i + redis.call('ZCOUNT', KEYS[4], '-inf', string.format('(%.0f', queued[i]))
  end
  local q = limit - flying - j
  if q < 0 then
    -- No time can be promised yet: the oldest slot in flight frees a period after it at
    -- the soonest; with none in flight, the waiters ahead take their slots first.
    local floor = math.floor(period / limit)
    retry = floor
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    if #oldest > 0 then
      retry = tonumber(oldest[2]) - cap + period - now
      if retry < floor then retry = floor end
      earliest = now + retry
    end
    break
  end
  local r = now
  if pause > r then r = pause end
  local k = held - q
  if k >= 1 and j > word then
    local free = tonumber(rel[2 * k])
    if probe and j == 1 and probe < free then free = probe end
    if free > r then r = free end
  end
  if r > now + horizon then
    -- Not promised this far ahead: releases only come earlier as answers arrive, and the
    -- slot goes to whoever then waits longest. Ask again shortly before it.
    retry = r - now - horizon
    if retry < 1 then retry = 1 end
    earliest = r
    break
  end
  redis.call('ZADD', KEYS[1], r + cap, token .. ':' .. string.format('%.0f', seq + i - 1))
  if probe and r == probe then
    probed = r
    redis.call('SET', KEYS[12], string.format('%.0f', r), 'PX', ttl)
  end
  probe = nil
  out[#out + 1] = r - now
  if lease > 0 and r + lease > mine then
    mine = r + lease
    redis.call('ZADD', KEYS[5], mine, token)
  end
end
local served = #out - 1
-- The probe's answer is reported within a twentieth of a period: whoever still waits asks
-- again then (with a hundredth for its round trip), not when the releases say.
if qn > served and probed > 0 then
  local soon = probed + math.floor(period / 20) + math.floor(period / 100) - now
  if soon > 0 and (retry == 0 or soon < retry) then
    retry = soon
    earliest = now + soon
  end
end
if qn > served then
  for i = served + 1, qn do
    redis.call('ZADD', KEYS[4], queued[i], token .. ':' .. (i - served))
  end
  redis.call('HSET', KEYS[9], token, qn - served)
end
out[#out + 1] = retry
out[#out + 1] = earliest - now
-- The other processes' successes reported since our previous call, for our own proof that
-- the server is no counter (GateState.add_shared_evidence); kept three periods.
local evidence = {}
if nocounter then
  redis.call('DEL', KEYS[10])
  out[#out + 1] = 1
else
  redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', now - 3 * period)
  local mine = token .. ':'
  local found = redis.call('ZRANGEBYSCORE', KEYS[10], string.format('(%.0f', since), '+inf',
    'WITHSCORES')
  for k = 1, #found, 2 do
    local sent, done, id = string.match(found[k], '^(%d+):(%d+):(.*)$')
    if string.sub(id, 1, #mine) ~= mine then
      evidence[#evidence + 1] = found[k + 1] .. ':' .. sent .. ':' .. done
    end
  end
  out[#out + 1] = 0
end
out[#out + 1] = evidence
word = word - served
if word > 0 then
  redis.call('SET', KEYS[8], string.format('%.0f', word), 'PX', ttl)
else
  redis.call('DEL', KEYS[8])
end
local extra = 0
if pause > now then extra = math.floor((pause - now) / 1000) end
redis.call('PEXPIRE', KEYS[1], ttl + extra)
redis.call('PEXPIRE', KEYS[2], ttl + extra)
redis.call('PEXPIRE', KEYS[4], ttl + extra)
redis.call('PEXPIRE', KEYS[5], ttl + extra)
redis.call('PEXPIRE', KEYS[6], ttl + extra)
redis.call('PEXPIRE', KEYS[7], ttl + extra)
redis.call('PEXPIRE', KEYS[9], ttl + extra)
redis.call('PEXPIRE', KEYS[10], ttl + extra)
return out
"""

# KEYS: as for _RESERVE_LUA. ARGV: wait_us, limit, period_us, ttl_ms.
# Sets pause_until = max(existing, now + wait) and adds limit phantom entries to rel,
# released period/limit apart from pause_until on, so the next limit reservations after the
# pause are staggered over one period. Phantoms only ever hold slots longer (never a 429).
# Returns pause_until - now (microseconds).
_PAUSE_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local old = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
local untilt = now + wait
if old > untilt then untilt = old end
local ms = math.floor((untilt - now) / 1000) + ttl
redis.call('SET', KEYS[3], string.format('%.0f', untilt), 'PX', ms)
redis.call('DEL', KEYS[8])
-- Whatever proved the server no counter, a 429 says the ledger's picture is wrong.
redis.call('DEL', KEYS[11])
local step = math.floor(period / limit)
for j = 0, limit - 1 do
  redis.call('ZADD', KEYS[2], untilt + j * step,
    'pause:' .. string.format('%.0f', untilt) .. ':' .. j)
end
redis.call('PEXPIRE', KEYS[1], ms)
redis.call('PEXPIRE', KEYS[2], ms)
return untilt - now
"""


def _import_redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "RedisRateLimiter needs redis-py: pip install callscaler-async[redis]"
        ) from exc
    return aioredis


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        user = parts.username or ""
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparseable redis URL>"


class _Unavailable(Exception):
    """Internal: Redis could not be reached (wraps the redis-py error)."""


class _Waiter:
    """One task queued at the gate; its future gets the slot it was handed."""

    __slots__ = ("arrived", "deadline", "fut", "max_wait", "rank")

    def __init__(
        self,
        fut: asyncio.Future[_Slot],
        rank: int,
        arrived: float,
        deadline: float | None,
        max_wait: float | None,
    ) -> None:
        self.fut = fut
        self.rank = rank
        self.arrived = arrived  # loop time
        self.deadline = deadline
        self.max_wait = max_wait


_limiters: weakref.WeakSet[RedisRateLimiter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for limiter in list(_limiters):
        limiter._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class RedisRateLimiter:
    """Paces every process of one business through a ledger kept in Redis.

    ``business`` names the budget (every process that shares it must use the same name,
    ``rate_limit`` and ``key_prefix``). Pass ``client`` to reuse a ``redis.asyncio.Redis``
    (not closed by ``aclose``); otherwise one is created from ``redis_url`` with short socket
    timeouts. ``latency_margin`` (default ``max(10 ms, period / 200)``) is how long before the
    current batch runs out the next one is reserved, and how long an unclaimed slot is kept
    for the next waiter; safety does not depend on it. ``in_flight_timeout`` (default 60 s):
    a request reserved that long ago and still unanswered is held as if answered then (only
    a process that died mid-request leaves one; the server must count a request within this
    time of its reservation). ``liveness_timeout`` (default ``period / 6``, between 1 s and
    10 s): how much longer than its own requests needed a process that vanished (killed,
    crashed) holds the budget; half of it must exceed the longest stall of this process's
    event loop. ``aclose()`` releases this process's slots at once.

    >>> async def main() -> None:
    ...     gate = RedisRateLimiter("redis://localhost:6379/0", business="acme")
    ...     ticket = await gate.acquire()
    ...     gate.complete(ticket, status=200, headers={})
    ...     await gate.aclose()
    """

    def __init__(
        self,
        redis_url: str,
        *,
        business: str,
        rate_limit: RateLimit = RateLimit(60, 60.0),  # noqa: B008 - frozen, immutable
        key_prefix: str = "callscaler:rl:",
        fallback: Literal["error", "local"] = "error",
        latency_margin: float | None = None,
        in_flight_timeout: float = 60.0,
        client: aioredis.Redis | None = None,
        liveness_timeout: float | None = None,
    ) -> None:
        if fallback not in ("error", "local"):
            raise ValueError(f"fallback must be 'error' or 'local', got {fallback!r}")
        if not business:
            raise ValueError("business must be a non-empty name")
        period = rate_limit.period
        margin = latency_margin if latency_margin is not None else max(0.01, period / 200)
        if not margin >= 0:
            raise ValueError(f"latency_margin must be >= 0 seconds, got {latency_margin!r}")
        if not (math.isfinite(in_flight_timeout) and in_flight_timeout > 0):
            raise ValueError(f"in_flight_timeout must be > 0 seconds, got {in_flight_timeout!r}")
        lease = (
            liveness_timeout if liveness_timeout is not None else min(10.0, max(1.0, period / 6))
        )
        if not (math.isfinite(lease) and lease > 0):
            raise ValueError(f"liveness_timeout must be > 0 seconds, got {liveness_timeout!r}")
        self._lease = float(lease)
        self._lease_us = round(lease * _US)
        self._last_call = -math.inf  # loop time of our latest answered call to Redis
        self._aioredis = _import_redis()
        self._url = redis_url
        self._safe_url = redact_url(redis_url)
        self._business = business
        self._rate_limit = rate_limit
        self._fallback = fallback
        self._margin = float(margin)
        self._period_us = round(period * _US)
        self._cap = float(in_flight_timeout)
        self._cap_us = round(in_flight_timeout * _US)
        self._ttl_ms = int((in_flight_timeout + 2 * period) * 1000) + 1000
        # How far ahead the ledger promises a slot: later ones are decided nearer their time,
        # with the answers and the queue as they are then.
        self._promise_us = self._period_us // 8
        self._fly_key = f"{key_prefix}{{{business}}}:fly"
        self._rel_key = f"{key_prefix}{{{business}}}:rel"
        self._pause_key = f"{key_prefix}{{{business}}}:pause"
        self._queue_key = f"{key_prefix}{{{business}}}:queue"
        self._queued_key = f"{key_prefix}{{{business}}}:queued"
        self._live_key = f"{key_prefix}{{{business}}}:live"
        self._grp_key = f"{key_prefix}{{{business}}}:grp"
        self._ans_key = f"{key_prefix}{{{business}}}:ans"
        self._word_key = f"{key_prefix}{{{business}}}:word"
        self._evidence_key = f"{key_prefix}{{{business}}}:ev"
        self._nocounter_key = f"{key_prefix}{{{business}}}:nocounter"
        self._probe_key = f"{key_prefix}{{{business}}}:probe"
        self._own_client = client is None
        self._client: aioredis.Redis | None = client
        self._reserve_script: AsyncScript | None = None
        self._pause_script: AsyncScript | None = None
        self._state = GateState(rate_limit.requests, period)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_binding = -1  # set with _loop (see _loops.bind)
        self._anchor_unix = 0.0
        self._anchor_loop = 0.0
        self._heap: list[tuple[int, int, _Waiter]] = []
        self._order = itertools.count()
        self._waiting = 0
        self._spare: list[_Slot] = []  # reserved slots no waiter took yet
        self._horizon = 0.0  # loop time of the latest slot handed out
        self._retry_at = 0.0  # loop time before which the ledger promises nothing more
        # Our waiters in the shared queue (as of our latest call), whether arrivals or
        # cancellations changed it since, and the pump's wake-up for them.
        self._queued = 0
        self._queue_changed = False
        self._wake: asyncio.Event | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._pause_tasks: set[asyncio.Task[None]] = set()
        self._paused_until = 0.0  # loop time, from our own 429s
        self._local_gate: BusinessRateGate | None = None
        # Tickets issued by the local fallback gate (by id; dropped when the ticket dies).
        self._local_tickets: set[int] = set()
        self._sent: deque[float] = deque()  # our recent admissions (loop time)
        # Ledger ids: ours are "<token>:<n>"; tickets map to theirs by ticket.seq.
        # Drawn when first bound to a loop, again in a forked child (see _after_fork).
        self._token = ""
        self._next_id = 0
        self._ids: dict[int, str] = {}
        # Answers not yet reported (see _report).
        self._answers: list[_Report] = []
        self._report_handle: asyncio.TimerHandle | None = None
        self._report_tasks: set[asyncio.Task[None]] = set()
        # Redis's clock minus the loop's, bounds from recent calls: (loop time, upper bound,
        # lower bound).
        self._offsets: deque[tuple[float, float, float]] = deque()
        # Redis's clock at our latest call (the shared evidence is read from there on), and
        # whether our own proof that the server is no counter reached the ledger.
        self._since_us = 0
        self._proof_shared = False
        self.counter_ruled_out = False
        self._closed = False
        # Counters: Redis calls made (reservations and answer reports), reservations among
        # them, requests admitted, reserved slots left unused.
        self.redis_calls = 0
        self.reserve_calls = 0
        self.slots_lost = 0
        self.requests_admitted = 0
        _limiters.add(self)

    def _after_fork(self) -> None:
        """In a forked child: an identity, Redis connections and a queue of its own.

        What the parent reserved, sent or queued is the parent's to answer and report; the
        parent's sockets are left alone (dropped here, never closed: closing them would cut
        the parent off). A client passed in by the caller is the caller's to recreate.
        """
        self._token = ""
        self._loop = None
        self._loop_binding = -1
        if self._own_client:
            self._client = None
        self._reserve_script = self._pause_script = None
        self._state = GateState(self._rate_limit.requests, self._rate_limit.period)
        self._heap = []
        self._waiting = 0
        self._spare = []
        self._horizon = self._retry_at = self._paused_until = 0.0
        self._queued = 0
        self._queue_changed = False
        self._wake = None
        self._pump_task = None
        self._pause_tasks = set()
        self._report_tasks = set()
        self._report_handle = None
        self._local_gate = None
        self._local_tickets = set()
        self._sent = deque()
        self._next_id = 0
        self._ids = {}
        self._answers = []
        self._offsets = deque()
        self._since_us = 0
        self._proof_shared = False
        self.counter_ruled_out = False
        self._last_call = -math.inf

    # ------------------------------------------------------------------ basics

    @property
    def name(self) -> str:
        return self._business

    @property
    def rate_limit(self) -> RateLimit:
        return self._rate_limit

    @property
    def state(self) -> GateState:
        return self._state

    @property
    def using_fallback(self) -> bool:
        """True once Redis failed and ``fallback="local"`` made this process pace alone."""
        return self._local_gate is not None

    def __repr__(self) -> str:
        return (
            f"RedisRateLimiter(url={self._safe_url!r}, business={self._business!r}, "
            f"requests={self._rate_limit.requests}, period={self._rate_limit.period})"
        )

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        # Every acquire's case: its own loop, known without get_running_loop() (a system
        # call per call on 3.11, see _loops).
        if loop is None or not _loops.is_running(loop, self._loop_binding):
            loop = _loops.running_loop_for(f"rate gate {self._business!r}", self._loop)
            if self._loop is None:
                self._loop = loop
                self._loop_binding = _loops.bind(loop)
                self._anchor_unix = time.time()
                self._anchor_loop = loop.time()
                if not self._token:
                    self._token = secrets.token_hex(8)
        if self._closed:
            raise RuntimeError(f"rate gate {self._business!r} is closed")
        return loop

    def unix_now(self) -> float:
        assert self._loop is not None
        return self._anchor_unix + (self._loop.time() - self._anchor_loop)

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # One retry: a pooled connection the server dropped (restart, idle timeout) is
            # reopened once. A retried reservation can only waste budget, never overspend it.
            self._client = self._aioredis.Redis.from_url(
                self._url,
                socket_timeout=_SOCKET_TIMEOUT,
                socket_connect_timeout=_SOCKET_TIMEOUT,
                retry=Retry(NoBackoff(), 1),
            )
        return self._client

    def _scripts(self) -> tuple[AsyncScript, AsyncScript]:
        if self._reserve_script is None or self._pause_script is None:
            client = self._redis()
            self._reserve_script = client.register_script(_RESERVE_LUA)
            self._pause_script = client.register_script(_PAUSE_LUA)
        return self._reserve_script, self._pause_script

    def _limit(self) -> int:
        return max(1, min(self._rate_limit.requests, self._state.limit))

    async def _call(self, which: Literal["reserve", "pause"], args: list[int | str]) -> Any:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        reserve, pause = self._scripts()
        script = reserve if which == "reserve" else pause
        self.redis_calls += 1
        try:
            keys = [
                self._fly_key,
                self._rel_key,
                self._pause_key,
                self._queue_key,
                self._live_key,
                self._grp_key,
                self._ans_key,
                self._word_key,
                self._queued_key,
                self._evidence_key,
                self._nocounter_key,
                self._probe_key,
            ]
            return await script(keys=keys, args=args)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _reserve(
        self, queue: list[int] | None, *, leaving: bool = False
    ) -> tuple[float, list[float], float, float]:
        """Report pending answers, renew our lease (``leaving``: end it) and, given our
        ``queue`` (arrival times of our waiters without a slot, oldest first), reserve the
        slots it may have now; the rest stays in the shared queue. ``None``: only report.

        Returns (loop time of the answer, waits in seconds, seconds until the ledger may
        promise more or 0, and in how many seconds the next slot comes at the soonest). The
        slots' ids are the next ``len(waits)`` of ours.
        """
        assert self._loop is not None
        answers, self._answers = self._answers, []
        self._cancel_report_timer()
        flat: list[int | str] = []
        for report in answers:
            flat += report
        limit = self._limit()
        sent_at = self._loop.time()
        if self._state.counter_possible:
            self._proof_shared = False  # (a 429 took our proof back)
        proving = not (self._state.counter_possible or self._proof_shared)
        try:
            out = await self._call(
                "reserve",
                [
                    -1 if queue is None else len(queue),
                    limit,
                    self._period_us,
                    self._cap_us,
                    self._ttl_ms,
                    self._token,
                    self._next_id,
                    0 if leaving else self._lease_us,
                    self._promise_us,
                    self._since_us,
                    int(proving),
                    *(queue or ()),
                    *flat,
                ],
            )
        except _Unavailable:
            # Not reported: kept for the next call (a retried report is harmless).
            self._answers = answers + self._answers
            raise
        now = self._loop.time()
        self._last_call = sent_at
        redis_now = int(out[0]) / _US
        # Redis read its clock after we sent and before we received: its clock minus ours
        # is at most the first, at least the second.
        offsets = self._offsets
        offsets.append((now, redis_now - sent_at, redis_now - now))
        while len(offsets) > 1 and offsets[0][0] < now - 1.0:
            offsets.popleft()
        self._proof_shared = self._proof_shared or proving
        self.counter_ruled_out = bool(int(out[-2]))
        self._take_evidence(out[-1], int(out[0]))
        waits = [int(w) / _US for w in out[1:-4]]
        self._next_id += len(waits)
        if queue is not None:
            self._queued = len(queue) - len(waits)
        return now, waits, int(out[-4]) / _US, int(out[-3]) / _US

    def _take_evidence(self, entries: list[bytes], now_us: int) -> None:
        """Hand the other processes' successes that a call returned (it ran at ``now_us``)
        to our state, each once, in our Unix time: each sent no earlier than its slot and
        answered no later than the ledger's bound, through the widest offset between Redis's
        clock and ours that recent calls allow.

        Calls may overlap (a report beside a reservation) and answer in any order: each
        takes only what was reported after the latest call answered so far. A request the
        state counted twice would overstate what a counter weighs, and prove a counter none.
        """
        since = self._since_us
        self._since_us = max(since, now_us)
        if not entries:
            return
        high = min(b for _, b, _ in self._offsets)
        low = max(b for _, _, b in self._offsets)
        unix_minus_loop = self._anchor_unix - self._anchor_loop
        answers = []
        for entry in entries:
            reported_us, sent_us, answered_us = entry.split(b":")
            if int(reported_us) <= since:
                continue  # already handed over by an overlapping call
            answers.append(
                (
                    int(sent_us) / _US - high + unix_minus_loop,
                    int(answered_us) / _US - low + unix_minus_loop,
                )
            )
        self._state.add_shared_evidence(answers)

    def _redis_time_us(self, loop_time: float) -> int:
        """An upper bound of Redis's clock at ``loop_time`` (microseconds)."""
        bound = min(b for _, b, _ in self._offsets)
        return math.ceil((loop_time + bound) * _US)

    # ---------------------------------------------------------------- admission

    async def acquire(
        self, *, priority: Priority = "normal", max_wait: float | None = None
    ) -> Ticket:
        """Wait for a slot in the shared ledger; cancelling the caller returns at once."""
        loop = self._bind()
        rank = priority_rank(priority)
        if max_wait is not None and max_wait < 0:
            raise ValueError(f"max_wait must be >= 0 seconds, got {max_wait!r}")
        deadline = None if max_wait is None else loop.time() + max_wait
        while True:
            if self._local_gate is not None:
                return await self._acquire_local(priority, deadline, max_wait)
            slot = await self._wait_for_slot(loop, rank, deadline, max_wait)
            if slot is None:
                continue  # switched to the local fallback while waiting
            at, ident = slot
            try:
                delay = at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            except BaseException:
                self._release(slot)
                raise
            now = loop.time()
            if now > at + min(self._cap, self._lease) / 2 or at < self._paused_until:
                # Woke far too late (the ledger may already hold the slot as answered), or a
                # 429 paused the business meanwhile: give the slot back and reserve again.
                logger.debug(
                    "rate gate %s: slot %.3fs late or paused; reserving again",
                    self._business,
                    now - at,
                )
                self.slots_lost += 1
                self._report(ident, 0)
                continue
            ticket = self._admit(now)
            self._ids[ticket.seq] = ident
            return ticket

    def _admit(self, now: float) -> Ticket:
        self.requests_admitted += 1
        sent = self._sent
        sent.append(now)
        horizon = now - self._rate_limit.period
        while sent and sent[0] <= horizon:
            sent.popleft()
        return self._state.admit(now)

    async def _wait_for_slot(
        self,
        loop: asyncio.AbstractEventLoop,
        rank: int,
        deadline: float | None,
        max_wait: float | None,
    ) -> _Slot | None:
        """Queue until the pump hands us a slot; None: use the fallback."""
        fut: asyncio.Future[_Slot] = loop.create_future()
        waiter = _Waiter(fut, rank, loop.time(), deadline, max_wait)
        heapq.heappush(self._heap, (rank, next(self._order), waiter))
        self._waiting += 1
        self._queue_changed = True
        self._kick()
        try:
            if deadline is None:
                slot = await fut
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        slot = await fut
                except TimeoutError:
                    now = loop.time()
                    waited = now - (deadline - (max_wait or 0.0))
                    raise self._too_long(self._estimate(now, rank), now, max_wait, waited) from None
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release(fut.result())  # handed a slot the instant we were cancelled
            else:
                fut.cancel()
                # Our place in the shared queue goes at the next call.
                self._queue_changed = True
                self._kick()
            raise
        finally:
            self._waiting -= 1
        if slot == _USE_LOCAL:
            return None
        if deadline is not None and slot[0] > deadline:
            self._release(slot)
            now = loop.time()
            waited = now - (deadline - (max_wait or 0.0))
            raise self._too_long(slot[0], now, max_wait, waited)
        return slot

    def _estimate(self, now: float, rank: int) -> float:
        ahead = sum(1 for r, _, w in self._heap if r <= rank and not w.fut.done())
        base = max(self._horizon, self._paused_until, self._retry_at, now)
        return base + (ahead // self._limit()) * self._rate_limit.period

    def _too_long(
        self, estimate: float, now: float, max_wait: float | None, waited: float
    ) -> RateLimitError:
        return max_wait_refusal(
            self._business,
            wait=estimate - now,
            max_wait=max_wait,
            waited=waited if waited > 0.001 else 0.0,
            retry_at=estimate,
            shared=True,
        )

    def _pop_waiter(self) -> _Waiter | None:
        heap = self._heap
        while heap:
            waiter = heapq.heappop(heap)[2]
            if not waiter.fut.done():
                return waiter
        return None

    def _live_waiters(self) -> int:
        return sum(1 for _, _, w in self._heap if not w.fut.done())

    def _release(self, slot: _Slot) -> None:
        """A reserved slot nobody will use: hand it to the next waiter, else keep it."""
        loop = self._loop
        if loop is None or slot[0] + self._margin < loop.time():
            self._lose(slot)
            return
        waiter = self._pop_waiter()
        if waiter is not None:
            waiter.fut.set_result(slot)
        else:
            heapq.heappush(self._spare, slot)

    def _lose(self, slot: _Slot) -> None:
        self.slots_lost += 1
        self._report(slot[1], 0)

    def _use_spares(self) -> None:
        loop = self._loop
        assert loop is not None
        spare = self._spare
        stale = loop.time() - self._margin
        while spare and self._heap:
            slot = heapq.heappop(spare)
            if slot[0] < stale or slot[0] < self._paused_until:
                self._lose(slot)
                continue
            waiter = self._pop_waiter()
            if waiter is None:
                heapq.heappush(spare, slot)
                break
            waiter.fut.set_result(slot)
        while spare and spare[0][0] < stale:
            self._lose(heapq.heappop(spare))

    def _kick(self) -> None:
        self._use_spares()
        if self._pump_task is None:
            if self._heap or self._queued:
                assert self._loop is not None
                self._pump_task = self._loop.create_task(self._pump())
        elif self._queue_changed and self._wake is not None:
            self._wake.set()

    def _queue_for_call(self) -> list[int]:
        """Arrival times of our waiters without a slot, oldest first (at most ``limit``)."""
        arrived = sorted(w.arrived for _, _, w in self._heap if not w.fut.done())
        del arrived[self._limit() :]
        if not self._offsets:
            # Redis's clock is not known yet: the script takes its own time, an upper bound.
            return [0] * len(arrived)
        return [self._redis_time_us(t) for t in arrived]

    def _refuse_beyond(self, earliest: float) -> None:
        """Refuse at once the waiters whose ``max_wait`` ends before ``earliest``, the
        soonest the ledger can give any of them a slot."""
        assert self._loop is not None
        now = self._loop.time()
        for _, _, waiter in self._heap:
            deadline = waiter.deadline
            if deadline is not None and deadline < earliest and not waiter.fut.done():
                estimate = max(earliest, self._estimate(now, waiter.rank))
                waited = now - waiter.arrived
                waiter.fut.set_exception(self._too_long(estimate, now, waiter.max_wait, waited))

    async def _pump(self) -> None:
        """Reserve slots for the local waiters: one Redis call in flight at most.

        A call goes when our queue changed (an arrival takes its place in the shared queue
        at once; a cancelled waiter leaves it), when the ledger said to ask again, or half a
        lease after our latest call.
        """
        loop = self._loop
        assert loop is not None
        try:
            while not self._closed:
                # Let the tasks just handed slots run first: their answers ride along.
                await asyncio.sleep(0)
                self._use_spares()
                if self._local_gate is not None:
                    return
                waiting = self._live_waiters()
                if not waiting and not self._queued:
                    return
                now = loop.time()
                ahead = self._retry_at - now
                # Our lease is renewed before it runs out, however long the ledger said to
                # wait: an ended lease drops our waiters from the shared queue, and waiters
                # of other processes that arrived after them would take their turn.
                renew = self._last_call + self._lease / 2 - now
                if renew < ahead:
                    ahead = renew
                if waiting and not self._queue_changed and ahead > 0:
                    await self._sleep_unless_woken(ahead)
                    continue
                if self._pause_tasks:
                    # Our own 429 must reach Redis before we reserve past it.
                    await asyncio.gather(*self._pause_tasks, return_exceptions=True)
                self._queue_changed = False
                queue = self._queue_for_call()
                first = self._next_id
                try:
                    self.reserve_calls += 1
                    now, waits, retry, soonest = await self._reserve(queue)
                except _Unavailable as exc:
                    self._on_unavailable(str(exc))
                    return
                self._retry_at = now + retry if retry else 0.0
                slots = sorted((now + w, f"{self._token}:{first + i}") for i, w in enumerate(waits))
                for slot in slots:
                    waiter = self._pop_waiter()
                    if waiter is None:
                        heapq.heappush(self._spare, slot)
                    else:
                        waiter.fut.set_result(slot)
                if slots:
                    self._horizon = max(self._horizon, slots[-1][0])
                if retry:
                    self._refuse_beyond(now + soonest)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave waiters hanging on a bug or a Redis error
            logger.exception("rate gate %s: the Redis pump failed", self._business)
            self._fail_waiters(
                RateLimiterUnavailable(
                    f"the Redis rate limiter of business {self._business!r} at "
                    f"{self._safe_url} failed: {type(exc).__name__}"
                )
            )
        finally:
            self._pump_task = None
            if not self._closed and self._live_waiters() and self._local_gate is None:
                # Waiters arrived while we were finishing up.
                self._pump_task = loop.create_task(self._pump())

    async def _sleep_unless_woken(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or until the queue changes (see ``_kick``)."""
        wake = self._wake
        if wake is None:
            wake = self._wake = asyncio.Event()
        wake.clear()
        if self._queue_changed:
            return
        try:
            async with asyncio.timeout(delay):
                await wake.wait()
        except TimeoutError:
            pass

    def _fail_waiters(self, exc: BaseException) -> None:
        while (waiter := self._pop_waiter()) is not None:
            waiter.fut.set_exception(exc)

    def _on_unavailable(self, detail: str) -> None:
        if self._fallback == "error":
            self._fail_waiters(
                RateLimiterUnavailable(
                    f"cannot reach Redis at {self._safe_url} for the rate limit of business "
                    f"{self._business!r} ({detail}); pass fallback='local' to pace this "
                    "process alone when Redis is down"
                )
            )
            return
        self._start_fallback(detail)
        # Wake every queued waiter: acquire() loops and takes the local gate.
        while (waiter := self._pop_waiter()) is not None:
            waiter.fut.set_result(_USE_LOCAL)

    def _start_fallback(self, detail: str) -> None:
        if self._local_gate is not None:
            return
        loop = self._loop
        assert loop is not None
        logger.warning(
            "rate gate %s: cannot reach Redis at %s (%s); this process now paces the "
            "business alone with a local gate (other processes are not counted)",
            self._business,
            self._safe_url,
            detail,
        )
        gate = BusinessRateGate(self._rate_limit, name=self._business)
        gate._bind()
        # Seed it with our own sends of the last period, held as if answered now.
        now = loop.time()
        horizon = now - self._rate_limit.period
        state = gate.state
        for sent in self._sent:
            if sent > horizon:
                ticket = state.admit(now)
                state.complete(ticket, now, unix_now=gate.unix_now(), status=None)
        self._local_gate = gate

    async def _acquire_local(
        self, priority: Priority, deadline: float | None, max_wait: float | None
    ) -> Ticket:
        gate = self._local_gate
        assert gate is not None and self._loop is not None
        remaining = None if deadline is None else max(deadline - self._loop.time(), 0.0)
        try:
            ticket = await gate.acquire(priority=priority, max_wait=remaining)
        except RateLimitError as exc:
            if exc.code == "max_wait_exceeded" and max_wait is not None and deadline is not None:
                # Refused against what was left of the caller's max_wait: report the whole.
                now = self._loop.time()
                waited = now - (deadline - max_wait)
                raise max_wait_refusal(
                    self._business,
                    wait=exc.retry_after or 0.0,
                    max_wait=max_wait,
                    waited=waited if waited > 0.001 else 0.0,
                    retry_at=exc.retry_at if exc.retry_at is not None else now,
                ) from None
            raise
        self._local_tickets.add(id(ticket))
        weakref.finalize(ticket, self._local_tickets.discard, id(ticket))
        self.requests_admitted += 1
        return ticket

    # ------------------------------------------------------------- answer reports

    def _report(
        self,
        ident: str,
        answered_us: int,
        hold_us: int = 0,
        window: str = "",
        fades_us: int = 0,
        remaining: int = -1,
        counted: bool = False,
    ) -> None:
        """Queue an answer (or a slot never used: 0) for the ledger: its slot is released
        ``hold_us`` after the answer, or, with a ``window``, where the script's staircase
        over that window's answers puts it; ``remaining`` (>= 0) is the server's word;
        ``counted``: a success, evidence for the other processes' proof that the server is
        no counter."""
        self._answers.append(
            (ident, answered_us, hold_us, window, fades_us, remaining, int(counted))
        )
        loop = self._loop
        if self._report_handle is None and loop is not None and not self._closed:
            self._report_handle = loop.call_later(
                _REPORT_WITHIN * self._rate_limit.period, self._report_due
            )

    def _report_answer(
        self, ident: str, answered_us: int, ticket: Ticket, now: float,
        reading: HeaderReading | None, counted: bool,
    ) -> None:  # fmt: skip
        """Queue an answer with what places its slot's release: the latest aligned window
        the server can have counted it in, and when a sliding-window counter weighs that
        window nothing (``GateState.answer_window``), on Redis's clock.

        An answer without ``Date`` (RFC 9110 has origin servers send one; a proxy may drop
        it) cannot be placed in the server's windows: it is released one period after it,
        as a log or a bucket needs. Holding each such slot two periods would halve the
        budget of every server behind such a proxy, counter or not.
        """
        period_us = self._period_us
        remaining = -1
        if reading is not None and reading.remaining is not None and not self._rate_limit.share:
            # A static share paces below what the server would admit: its word is not ours.
            remaining = max(0, reading.remaining)
        window = self._state.answer_window(ticket, now, self.unix_now(), reading)
        if window is None:
            self._report(ident, answered_us, period_us, remaining=remaining, counted=counted)
            return
        window_end, fades_at = window
        fades_us = self._redis_time_us(fades_at) if self._offsets else _UNBOUNDED_US
        index = round(window_end / self._rate_limit.period)
        self._report(
            ident, answered_us, 2 * period_us, str(index), fades_us, remaining, counted
        )

    def _cancel_report_timer(self) -> None:
        if self._report_handle is not None:
            self._report_handle.cancel()
            self._report_handle = None

    def _report_due(self) -> None:
        self._report_handle = None
        if self._answers and self._loop is not None and self._local_gate is None:
            task = self._loop.create_task(self._send_reports())
            self._report_tasks.add(task)
            task.add_done_callback(self._report_tasks.discard)

    async def _send_reports(self) -> None:
        if not self._answers:
            return
        try:
            await self._reserve(None)
        except _Unavailable as exc:
            # INFO: the outage itself is reported where it matters (the waiters' error, or
            # the fallback's WARNING); these slots come back when the lease ends.
            logger.info(
                "rate gate %s: could not report answers to Redis at %s (%s); their slots "
                "stay held until this process's lease ends (liveness_timeout)",
                self._business,
                self._safe_url,
                exc,
            )
            self._answers.clear()

    # ----------------------------------------------------------------- feedback

    def complete(
        self,
        ticket: Ticket,
        *,
        status: int | None,
        headers: Mapping[str, str] | None,
        retry_after: float | None = None,
    ) -> None:
        loop = self._loop
        if loop is None or ticket.done:
            return
        if id(ticket) in self._local_tickets and self._local_gate is not None:
            self._local_gate.complete(
                ticket, status=status, headers=headers, retry_after=retry_after
            )
            return
        now = loop.time()
        ident = self._ids.pop(ticket.seq, None)
        reading = parse_rate_headers(headers) if headers else None
        if ident is not None:
            answered_us = self._redis_time_us(now) if self._offsets else _UNBOUNDED_US
            counted = status is not None and 200 <= status < 300
            self._report_answer(ident, answered_us, ticket, now, reading, counted)
        paused = self._state.complete(
            ticket,
            now,
            unix_now=self.unix_now(),
            headers=reading,
            status=status,
            retry_after=retry_after,
        )
        if status == 429:
            wait = retry_after if retry_after is not None else self._rate_limit.period
            if paused is not None:
                self._paused_until = max(self._paused_until, paused)
            logger.info(
                "rate gate %s: the server answered 429; pausing every process of this "
                "business for %.2fs",
                self._business,
                wait,
            )
            if self._local_gate is None and not self._closed:
                task = loop.create_task(self._report_pause(wait))
                self._pause_tasks.add(task)
                task.add_done_callback(self._pause_tasks.discard)

    async def _report_pause(self, wait: float) -> None:
        limit = self._limit()
        try:
            left = await self._call(
                "pause", [max(round(wait * _US), 0), limit, self._period_us, self._ttl_ms]
            )
        except _Unavailable as exc:
            logger.warning(
                "rate gate %s: could not share a 429 pause through Redis at %s (%s)",
                self._business,
                self._safe_url,
                exc,
            )
            return
        assert self._loop is not None
        self._paused_until = max(self._paused_until, self._loop.time() + int(left) / _US)
        # The answers so far (the 429's among them) go now: held as in flight, they would
        # shift the staggered restart by a slot each.
        await self._send_reports()

    def abandon(self, ticket: Ticket) -> None:
        """The admitted request was never sent: its slot is released at once."""
        if id(ticket) in self._local_tickets and self._local_gate is not None:
            self._local_gate.abandon(ticket)
            return
        ident = self._ids.pop(ticket.seq, None)
        if ident is not None:
            self._report(ident, 0)
        self._state.abandon(ticket)

    # ----------------------------------------------------------------- reading

    def snapshot(self) -> RateLimitSnapshot:
        if self._local_gate is not None:
            local = self._local_gate.snapshot()
            state = self._state
            return attrs.evolve(
                local,
                limit=local.limit if local.limit is not None else state.server_limit,
                remaining=local.remaining if local.remaining is not None else state.remaining,
                waiting=local.waiting + self._waiting,
                in_flight=local.in_flight + state.in_flight,
                rate_limited=local.rate_limited + state.rate_limited,
            )
        state = self._state
        loop = self._loop
        paused = None
        if loop is not None and self._paused_until > loop.time():
            unix = self.unix_now() + (self._paused_until - loop.time())
            paused = dt.datetime.fromtimestamp(unix, tz=dt.UTC)
        reset = (
            dt.datetime.fromtimestamp(state.reset_unix, tz=dt.UTC)
            if state.reset_unix is not None
            else None
        )
        return RateLimitSnapshot(
            limit=state.server_limit,
            remaining=state.remaining,
            reset_at=reset,
            paused_until=paused,
            waiting=self._waiting,
            in_flight=state.in_flight,
            foreign=state.foreign,
            probing=state.probing,
            rate_limited=state.rate_limited,
        )

    # ------------------------------------------------------------------ closing

    async def aclose(self) -> None:
        """Stop the pump, report pending answers, close the Redis client if ours."""
        if self._closed:
            return
        self._closed = True
        self._cancel_report_timer()
        task = self._pump_task
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._fail_waiters(RuntimeError(f"rate gate {self._business!r} was closed"))
        for pending in list(self._pause_tasks) + list(self._report_tasks):
            try:
                await pending
            except Exception:  # pragma: no cover - logged inside
                pass
        # Slots reserved and never used, answers not yet reported: tell the ledger.
        for slot in self._spare:
            self._report(slot[1], 0)
        self._spare.clear()
        if self._local_gate is None and self._last_call > -math.inf:
            # Goodbye: the answers, and the end of our lease in the same call, so whatever we
            # still hold (requests cut off in flight) is held as answered now, not until the
            # lease or in_flight_timeout runs out.
            try:
                await self._reserve([], leaving=True)
            except _Unavailable as exc:
                logger.warning(
                    "rate gate %s: could not release this process's slots in Redis at %s "
                    "(%s); they are held until its lease ends (liveness_timeout)",
                    self._business,
                    self._safe_url,
                    exc,
                )
        client = self._client
        if client is not None and self._own_client:
            self._client = None
            await client.aclose()

    async def __aenter__(self) -> RedisRateLimiter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

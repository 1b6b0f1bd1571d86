"""An in-process fake of the CallScaler REST API v1, built on aiohttp.

It implements the contract of ``callscaler-api.md`` from its own data model (``_data``) and
never imports the SDK, so SDK and fake cannot be wrong the same way.

Request pipeline (every request under ``/api/v1/``), in order:

1. ``latency`` and ``slow_next`` sleeps (``asyncio.sleep``: virtual under ``looptime``).
2. ``drop_next``: the connection is closed without any response.
3. ``fail_next(body="html"|"empty")``: a proxy page, no rate-limit headers, no budget spent.
4. Authentication: missing/unknown key -> 401 without rate headers; revoked key -> 401 with
   its business's headers. 401s never consume budget.
5. ``rate_limit_next``: a 429 whatever the budget (Remaining 0, no budget spent).
6. The business limiter (shared by all keys of a business): refused -> 429 with
   ``{"error": "rate_limit_exceeded", "message": ..., "retry_after": s}`` and ``Retry-After: s``
   where ``s = max(1, ceil(seconds until admission))``. 429s never consume budget.
7. ``fail_next(body="json")``: an app-made 5xx with the nested error and rate headers.
8. ``redirect_to``: ``302 Location: <url>``.
9. Routing (unknown path -> 404, wrong method -> 405), role check (a ``viewer`` key may not
   POST/PATCH/PUT/DELETE -> 403), then the endpoint. ``truncate_next``/``reset_mid_body_next``
   act on JSON bodies.

Rate headers: every response after step 4 carries ``X-RateLimit-Limit``, ``-Remaining`` and
``-Reset`` (integer Unix seconds, rounded up) unless ``omit_rate_headers`` is set. Reset per
algorithm (``now`` is the fake's Unix time):

* ``fixed``: windows aligned to multiples of ``period``; Reset = end of the current window.
* ``sliding``: sliding log of admitted requests in ``(now - period, now]``; Reset =
  ``ceil(oldest admitted in window + period)`` (when Remaining next rises), ``now`` if empty.
* ``bucket``: token bucket, capacity ``rate_limit``, refill ``rate_limit / period`` per second,
  starts full; Remaining = floor(tokens); Reset = ``ceil`` of the time the bucket is full again.
* ``counter``: sliding-window counter (the weighted two-window estimate), windows aligned to
  multiples of ``period``: admitted while ``floor(prev * (1 - f) + cur) + 1 <= rate_limit`` at
  phase ``f`` of the window; Remaining = ``rate_limit - cur - floor(prev * (1 - f))``; Reset =
  end of the current window (the common choice; it does not restore the budget).

``reset_header="past"`` reports Reset one hour ago, ``"far"`` three years ahead.

Clock: the fake's Unix time is ``anchor_unix + (loop.time() - anchor_loop)``, anchors taken in
:meth:`FakeCallScaler.start` (``clock_anchor_unix`` fixes ``anchor_unix``). Every response has an
explicit ``Date`` header from that clock.

Other semantics: a malformed UUID in a path answers 404 (like an unknown id); invalid
``page``/``per_page``/filters/JSON bodies answer 400; unknown query parameters are ignored;
``per_page`` above 100 is silently capped; ``date_to`` given as a bare date includes that whole
day. Error bodies are ``{"error": {"code": "<status>", "message": ...}}`` or, with
``flat_errors``, ``{"error": "<slug>"}``. ``GET calls/{id}/recording`` answers 302 to a second
origin (the storage site, another port) that serves ``audio/mpeg`` bytes and logs whether an
``Authorization`` header arrived. ``calls/export`` streams CSV; analytics ``week`` is the ISO week
``YYYY-Www``, ``day_of_week`` a lowercase English day name, ``hour_of_day`` an int.
"""

from __future__ import annotations

import asyncio
import calendar
import csv
import hashlib
import hmac
import io
import math
import operator
import random
import re
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from ._data import (
    AREA_INFO,
    CALL_FIELDS,
    DATA_ANCHOR_UNIX,
    TOLL_FREE_PREFIXES,
    ApiKey,
    Business,
    CallRecord,
    build_business,
    format_ts,
    new_uuid,
    storage_secret,
)
from ._faults import Faults, PendingFault
from ._ratelimit import RateLimiter, make_limiter

__all__ = ["FakeCallScaler", "RequestRecord", "Stats", "StorageRecord", "serve"]

JSONDict = dict[str, Any]
Payload = JSONDict | web.StreamResponse

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_E164_RE = re.compile(r"^\+[1-9]\d{9,14}$")
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_FLAT_SLUGS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 500: "internal_server_error",
}
_GROUP_KEYS = frozenset({
    "source", "utm_source", "utm_medium", "utm_campaign", "call_flow_id", "number_id",
    "status", "direction", "date", "week", "month", "hour_of_day", "day_of_week",
})
_METRICS = ("count", "avg_duration", "qualified_pct", "avg_ai_score")
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_CHUNK = 64 * 1024


@dataclass(slots=True)
class RequestRecord:
    """One API request as the fake saw it (``status`` 0: dropped without an answer)."""

    time: float
    method: str
    path: str
    query: str
    key_prefix: str | None
    status: int
    authorization_header_present: bool
    route: str = ""


@dataclass(slots=True)
class StorageRecord:
    """One request to the storage origin (recordings)."""

    time: float
    path: str
    status: int
    authorization_header_present: bool


@dataclass
class Stats:
    """Counters of the fake; :meth:`FakeCallScaler.reset_stats` clears them."""

    requests: int = 0
    rate_limited: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_path: dict[str, int] = field(default_factory=dict)
    log: list[RequestRecord] = field(default_factory=list)
    storage_log: list[StorageRecord] = field(default_factory=list)


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class _Ctx:
    request: web.Request
    fake: FakeCallScaler
    biz: Business
    key: ApiKey
    ident: str | None
    headers: dict[str, str]
    # The export faults this request drew (taken with the others, before the handler runs).
    export_faults: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[_Ctx], Awaitable[Payload]]


def _not_found(what: str) -> _ApiError:
    return _ApiError(404, f"{what} not found")


class FakeCallScaler:
    """A running fake CallScaler API (plus a storage origin for recordings).

    Example::

        async with FakeCallScaler(calls=100, rate_limit=10, period=3.0) as fake:
            async with aiohttp.ClientSession() as s:
                r = await s.get(fake.base_url + "calls",
                                headers={"Authorization": f"Bearer {fake.api_key}"})
                assert (await r.json())["data"]["total"] == 100
    """

    def __init__(
        self,
        *,
        calls: int = 500,
        numbers: int = 20,
        call_flows: int = 5,
        seed: int = 0,
        rate_limit: int = 60,
        period: float = 60.0,
        algorithm: str = "fixed",
        latency: float = 0.0,
        recording_size: int = 256 * 1024,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_port: int = 0,
        clock_anchor_unix: float | None = None,
        history_days: int = 120,
    ) -> None:
        self.seed = seed
        self.rate_limit = rate_limit
        self.period = period
        self.algorithm = algorithm
        self.latency = latency
        self.recording_size = recording_size
        self.host = host
        self.port = port
        self.storage_port = storage_port
        self._clock_anchor_unix = clock_anchor_unix
        self._anchor_unix = clock_anchor_unix if clock_anchor_unix is not None else time.time()
        self._anchor_loop: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.faults = Faults()
        self.stats = Stats()
        self.purchases: list[JSONDict] = []
        self._fault_rng = random.Random(f"{seed}:faults")
        self._secret = storage_secret()
        self._businesses: dict[str, Business] = {
            "acme": build_business(
                "acme", seed, calls=calls, numbers=numbers, call_flows=call_flows,
                history_days=history_days,
            ),
            "globex": build_business(
                "globex", seed, calls=max(1, calls // 5), numbers=max(2, numbers // 5),
                call_flows=max(1, call_flows // 2),
            ),
        }
        self._limiters: dict[str, RateLimiter] = {
            name: make_limiter(algorithm, rate_limit, period) for name in self._businesses
        }
        self._keys: dict[str, ApiKey] = {
            k.key: k for b in self._businesses.values() for k in b.keys
        }
        self._counts: dict[str, Counter[str]] = {}
        self._runner: web.AppRunner | None = None
        self._storage_runner: web.AppRunner | None = None
        self._routes: list[tuple[str, tuple[str, ...], str, Handler]] = [
            ("GET", ("numbers",), "GET numbers", self._list_numbers),
            ("POST", ("numbers", "search"), "POST numbers/search", self._search_numbers),
            ("POST", ("numbers", "purchase"), "POST numbers/purchase", self._purchase_number),
            ("GET", ("numbers", "{id}"), "GET numbers/{id}", self._get_number),
            ("PATCH", ("numbers", "{id}"), "PATCH numbers/{id}", self._update_number),
            ("DELETE", ("numbers", "{id}"), "DELETE numbers/{id}", self._release_number),
            ("GET", ("call-flows",), "GET call-flows", self._list_flows),
            ("POST", ("call-flows",), "POST call-flows", self._create_flow),
            ("GET", ("call-flows", "{id}"), "GET call-flows/{id}", self._get_flow),
            ("PUT", ("call-flows", "{id}"), "PUT call-flows/{id}", self._replace_flow),
            ("DELETE", ("call-flows", "{id}"), "DELETE call-flows/{id}", self._delete_flow),
            ("GET", ("call-flows", "{id}", "versions"), "GET call-flows/{id}/versions",
             self._flow_versions),
            ("GET", ("calls",), "GET calls", self._list_calls),
            ("GET", ("calls", "export"), "GET calls/export", self._export_calls),
            ("GET", ("calls", "{id}"), "GET calls/{id}", self._get_call),
            ("GET", ("calls", "{id}", "recording"), "GET calls/{id}/recording", self._recording),
            ("GET", ("calls", "{id}", "transcription"), "GET calls/{id}/transcription",
             self._transcription),
            ("GET", ("analytics", "calls"), "GET analytics/calls", self._analytics),
            ("GET", ("account", "balance"), "GET account/balance", self._balance),
        ]

    # ------------------------------------------------------------------ public surface
    @property
    def base_url(self) -> str:
        """``http://<host>:<port>/api/v1/`` (with the trailing slash)."""
        return f"http://{self.host}:{self.port}/api/v1/"

    @property
    def storage_url(self) -> str:
        """Origin of the storage site that serves recordings."""
        return f"http://{self.host}:{self.storage_port}"

    @property
    def api_keys(self) -> list[str]:
        """The three active admin keys of ``acme``."""
        return [k.key for k in self._businesses["acme"].keys if k.role == "admin" and not k.revoked]

    @property
    def api_key(self) -> str:
        """The first active key of ``acme``."""
        return self.api_keys[0]

    @property
    def other_business_key(self) -> str:
        """An active key of ``globex`` (own data, own rate limit)."""
        return self._businesses["globex"].keys[0].key

    @property
    def revoked_key(self) -> str:
        """A revoked key of ``acme``: every request answers 401."""
        return next(k.key for k in self._businesses["acme"].keys if k.revoked)

    @property
    def readonly_key(self) -> str:
        """An ``acme`` key with role ``viewer``: writes answer 403."""
        return next(k.key for k in self._businesses["acme"].keys if k.role == "viewer")

    def business(self, name: str) -> Business:
        """The state (data) of business ``name`` ("acme" or "globex")."""
        return self._businesses[name]

    def limiter(self, name: str) -> RateLimiter:
        """The rate limiter of business ``name``."""
        return self._limiters[name]

    @property
    def calls_data(self) -> list[JSONDict]:
        """acme's calls as JSON-ready dicts, newest first (live objects: do not mutate)."""
        return [c.data for c in self._businesses["acme"].calls]

    def now(self) -> float:
        """The fake's Unix time: ``anchor_unix + (loop.time() - anchor_loop)``."""
        if self._loop is None or self._anchor_loop is None:
            return self._anchor_unix
        return self._anchor_unix + (self._loop.time() - self._anchor_loop)

    async def consume(self, business: str, n: int) -> int:
        """Spend up to ``n`` units of ``business``'s budget outside HTTP; returns how many
        were admitted (a foreign consumer sharing the limit)."""
        lim = self._limiters[business]
        now = self.now()
        return sum(1 for _ in range(n) if lim.try_acquire(now))

    def reset_stats(self) -> None:
        """Clear every counter and log."""
        self.stats = Stats()

    async def start(self) -> FakeCallScaler:
        """Bind the API site and the storage site; idempotent."""
        if self._runner is not None:
            return self
        self._loop = asyncio.get_running_loop()
        self._anchor_loop = self._loop.time()
        if self._clock_anchor_unix is None:
            self._anchor_unix = time.time()
        app = web.Application()
        app.router.add_route("*", "/api/v1/{tail:.*}", self._dispatch)
        storage = web.Application()
        storage.router.add_get("/storage/recordings/{name}", self._storage)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        self._storage_runner = web.AppRunner(storage, access_log=None, handle_signals=False,
                                             shutdown_timeout=0.5)
        await self._runner.setup()
        await self._storage_runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        await site.start()
        self.port = self._runner.addresses[0][1]
        ssite = web.TCPSite(self._storage_runner, self.host, self.storage_port, backlog=1024)
        await ssite.start()
        self.storage_port = self._storage_runner.addresses[0][1]
        return self

    async def close(self) -> None:
        """Stop both sites (idempotent)."""
        runners, self._runner, self._storage_runner = (
            (self._runner, self._storage_runner), None, None
        )
        for r in runners:
            if r is not None:
                await r.cleanup()

    async def __aenter__(self) -> FakeCallScaler:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @classmethod
    async def run_forever(cls, **kwargs: Any) -> None:
        """Start a fake and serve until cancelled (for ``callscaler sandbox``)."""
        fake = await cls(**kwargs).start()
        try:
            await asyncio.Event().wait()
        finally:
            await fake.close()

    # ------------------------------------------------------------------ helpers
    def _rate_headers(self, biz: Business, now: float) -> dict[str, str]:
        if self.faults.omit_rate_headers:
            return {}
        lim = self._limiters[biz.name]
        reset = math.ceil(lim.reset(now) - 1e-9)
        if self.faults.reset_header == "past":
            reset = int(now) - 3600
        elif self.faults.reset_header == "far":
            reset = int(now) + 3 * 365 * 86400
        return {
            "X-RateLimit-Limit": str(lim.limit),
            "X-RateLimit-Remaining": str(lim.remaining(now)),
            "X-RateLimit-Reset": str(reset),
        }

    def _date(self) -> str:
        return formatdate(self.now(), usegmt=True)

    def _json(self, status: int, payload: Any, headers: Mapping[str, str]) -> web.Response:
        return web.Response(
            status=status, body=orjson.dumps(payload), content_type="application/json",
            headers={**headers, "Date": self._date()},
        )

    def _error(self, status: int, message: str, headers: Mapping[str, str]) -> web.Response:
        if self.faults.flat_errors:
            body: JSONDict = {"error": _FLAT_SLUGS.get(status, "error")}
        else:
            body = {"error": {"code": str(status), "message": message}}
        return self._json(status, body, headers)

    def _too_many(self, retry_after: int, headers: dict[str, str], *, header: bool = True,
                  body_retry: bool = True) -> web.Response:
        self.stats.rate_limited += 1
        body: JSONDict = {
            "error": "rate_limit_exceeded",
            "message": f"Too many requests. Limit: {self.rate_limit} per "
                       f"{self.period:g}s. Try again in {retry_after} seconds.",
        }
        if body_retry:
            body["retry_after"] = retry_after
        if header:
            headers = {**headers, "Retry-After": str(retry_after)}
        return self._json(429, body, headers)

    def _proxy_page(self, status: int, body: str) -> web.Response:
        text = ""
        if body == "html":
            phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
            text = (f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
                    f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>"
                    "\r\n</body>\r\n</html>\r\n")
        return web.Response(status=status, text=text, content_type="text/html",
                            headers={"Date": self._date(), "Server": "nginx"})

    def _match(self, method: str, rel: str) -> tuple[str, Handler | None, str | None, bool]:
        """(route name, handler, id, path_known)."""
        segs = tuple(s for s in rel.split("/") if s)
        found_path = False
        best: tuple[str, Handler, str | None] | None = None
        best_literal = -1
        for m, tmpl, name, handler in self._routes:
            if len(tmpl) != len(segs):
                continue
            ident: str | None = None
            literal = 0
            for t, s in zip(tmpl, segs, strict=True):
                if t == "{id}":
                    ident = s
                elif t != s:
                    break
                else:
                    literal += 1
            else:
                found_path = True
                if m == method and literal > best_literal:
                    best, best_literal = (name, handler, ident), literal
        if best is None:
            return f"{method} {rel}", None, None, found_path
        return best[0], best[1], best[2], True

    def _call_counts(self, biz: Business) -> Counter[str]:
        counts = self._counts.get(biz.name)
        if counts is None:
            counts = Counter(c.data["number_id"] for c in biz.calls if c.data["number_id"])
            self._counts[biz.name] = counts
        return counts

    def _render_number(self, biz: Business, n: JSONDict) -> JSONDict:
        out = dict(n)
        flow = biz.call_flows.get(n["call_flow_id"] or "")
        out["call_flow_name"] = flow["name"] if flow else None
        out["total_calls"] = self._call_counts(biz).get(n["id"], 0)
        if self.faults.number_name_field == "name":
            out["name"] = out.pop("friendly_name")
        return out

    def _render_flow(self, biz: Business, f: JSONDict) -> JSONDict:
        out = dict(f)
        out["assigned_numbers"] = sum(
            1 for n in biz.numbers.values() if n["call_flow_id"] == f["id"]
        )
        return out

    def _wrap(self, payload: JSONDict) -> JSONDict:
        return payload if self.faults.legacy_envelope else {"data": payload}

    def _paginate(self, request: web.Request, items: list[Any]) -> tuple[list[Any], int]:
        q = request.query
        page = _int_param(q, "page", 1)
        per_page = min(_int_param(q, "per_page", 25), 100)
        size = per_page
        if self.faults.short_pages and per_page > 1:
            size = per_page - max(1, per_page // 4)
        chunk = items[(page - 1) * size:page * size]
        if self.faults.empty_page_at == page:
            chunk = []
        total = len(items)
        if self.faults.total_jitter:
            j = self.faults.total_jitter
            total = max(0, total + self._fault_rng.randint(-j, j))
        return chunk, total

    @staticmethod
    async def _body(request: web.Request) -> JSONDict:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            raise _ApiError(400, "Invalid JSON body") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object")
        return body

    @staticmethod
    def _uuid(ident: str | None, what: str) -> str:
        if ident is None or not _UUID_RE.match(ident):
            raise _not_found(what)
        return ident.lower()

    # ------------------------------------------------------------------ dispatch
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        loop_t = asyncio.get_running_loop().time()
        rel = request.match_info["tail"]
        method = request.method
        auth = request.headers.get("Authorization")
        self.stats.requests += 1
        route, handler, ident, path_known = self._match(method, rel)
        record = RequestRecord(loop_t, method, rel, request.query_string, None, 0,
                               auth is not None, route)
        self.stats.log.append(record)
        self.stats.by_path[route] = self.stats.by_path.get(route, 0) + 1
        resp: web.StreamResponse | None = None
        try:
            resp = await self._process(request, rel, auth, route, handler, ident, path_known,
                                       record)
            return resp
        finally:
            if resp is not None and resp.status != 599:
                record.status = resp.status
            self.stats.by_status[record.status] = self.stats.by_status.get(record.status, 0) + 1

    async def _process(
        self, request: web.Request, rel: str, auth: str | None, route: str,
        handler: Handler | None, ident: str | None, path_known: bool, record: RequestRecord,
    ) -> web.StreamResponse:
        faults = self.faults.take(rel)
        kinds: dict[str, PendingFault] = {}
        for f in faults:
            kinds.setdefault(f.kind, f)
        delay = self.latency + sum(f.delay for f in faults if f.kind == "slow")
        if delay > 0:
            await asyncio.sleep(delay)
        if "drop" in kinds:
            if request.transport is not None:
                request.transport.close()
            resp = web.Response(status=599)
            record.status = 0
            return resp
        fail = kinds.get("fail")
        if fail is not None and fail.body != "json":
            return self._proxy_page(fail.status, fail.body)

        # Authentication: before rate limiting, never consumes budget.
        token = auth[7:].strip() if auth and auth[:7].lower() == "bearer " else None
        key = self._keys.get(token) if token else None
        if key is not None:
            record.key_prefix = key.prefix
        if key is None:
            return self._error(401, "Invalid API key", {})
        biz = self._businesses[key.business]
        now = self.now()
        if key.revoked:
            return self._error(401, "Invalid API key", self._rate_headers(biz, now))

        forced = kinds.get("rate_limit")
        if forced is not None:
            headers = self._rate_headers(biz, now)
            if headers:
                headers["X-RateLimit-Remaining"] = "0"
                if self.faults.reset_header == "normal":
                    headers["X-RateLimit-Reset"] = str(math.ceil(now + forced.retry_after))
            return self._too_many(forced.retry_after, headers, header=forced.header,
                                  body_retry=forced.body_retry_after)
        lim = self._limiters[biz.name]
        if not lim.try_acquire(now):
            wait = max(1, math.ceil(lim.retry_after(now) - 1e-9))
            return self._too_many(wait, self._rate_headers(biz, now))
        headers = self._rate_headers(biz, now)

        if fail is not None:
            return self._error(fail.status, "Internal server error", headers)
        redirect = kinds.get("redirect")
        if redirect is not None:
            return web.Response(status=302, headers={**headers, "Location": redirect.url,
                                                     "Date": self._date()})
        if handler is None:
            if path_known:
                return self._error(405, f"Method {request.method} not allowed", headers)
            return self._error(404, "Not found", headers)
        if request.method in _WRITE_METHODS and key.role == "viewer":
            resource = rel.split("/", 1)[0].replace("-", " ")
            return self._error(
                403, f"This API key's role ({key.role}) cannot modify {resource}", headers
            )
        export_faults = {k: f for k, f in kinds.items() if k in ("export_cut", "export_count")}
        try:
            result = await handler(_Ctx(request, self, biz, key, ident, headers, export_faults))
        except _ApiError as e:
            return self._error(e.status, e.message, headers)
        if isinstance(result, web.StreamResponse):
            return result
        body = orjson.dumps(self._wrap(result))
        hdrs = {**headers, "Date": self._date(), "Content-Type": "application/json"}
        if "truncate" in kinds:
            return web.Response(status=200, body=body[: max(1, len(body) // 2)], headers=hdrs)
        if "reset_mid_body" in kinds:
            partial = web.StreamResponse(status=200, headers=hdrs)
            partial.content_length = len(body) + 1024
            await partial.prepare(request)
            await partial.write(body[: max(1, len(body) // 2)])
            if request.transport is not None:
                request.transport.close()
            return partial
        return web.Response(status=200, body=body, headers=hdrs)

    # ------------------------------------------------------------------ numbers
    async def _list_numbers(self, ctx: _Ctx) -> JSONDict:
        q = ctx.request.query
        items = list(ctx.biz.numbers.values())
        for name in ("status", "call_flow_id", "group_id"):
            if name in q:
                items = [n for n in items if n[name] == q[name]]
        chunk, total = self._paginate(ctx.request, items)
        return {"numbers": [self._render_number(ctx.biz, n) for n in chunk], "total": total}

    def _number(self, ctx: _Ctx) -> JSONDict:
        nid = self._uuid(ctx.ident, "Number")
        n = ctx.biz.numbers.get(nid)
        if n is None:
            raise _not_found("Number")
        return n

    async def _get_number(self, ctx: _Ctx) -> JSONDict:
        return {"number": self._render_number(ctx.biz, self._number(ctx))}

    def _owned_phones(self) -> set[str]:
        return {n["phone_number"] for b in self._businesses.values() for n in b.numbers.values()}

    async def _search_numbers(self, ctx: _Ctx) -> JSONDict:
        body = await self._body(ctx.request)
        kind = body.get("type", "local")
        if kind not in ("local", "toll_free"):
            raise _ApiError(400, "type must be 'local' or 'toll_free'")
        area = body.get("area_code")
        if area is not None and (not isinstance(area, str) or not re.fullmatch(r"\d{3}", area)):
            raise _ApiError(400, "area_code must be a 3-digit string")
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
            raise _ApiError(400, "limit must be an integer between 1 and 100")
        rng = random.Random(f"{self.seed}:search:{area}:{kind}")
        owned = self._owned_phones()
        found: list[JSONDict] = []
        seen: set[str] = set()
        while len(found) < limit:
            code = rng.choice(TOLL_FREE_PREFIXES) if kind == "toll_free" else (area or "573")
            phone = f"+1{code}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
            if phone in owned or phone in seen:
                continue
            seen.add(phone)
            city, state = AREA_INFO.get(code, (None, None)) if kind == "local" else (None, None)
            found.append({
                "phone_number": phone, "locality": city, "region": state, "type": kind,
                "monthly_cost_cents": 500 if kind == "toll_free" else 300,
            })
        return {"available_numbers": found}

    def _flow_ref(self, biz: Business, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or value.lower() not in biz.call_flows:
            raise _ApiError(400, "call_flow_id does not name a call flow of this business")
        return value.lower()

    async def _purchase_number(self, ctx: _Ctx) -> JSONDict:
        body = await self._body(ctx.request)
        phone = body.get("phone_number")
        if not isinstance(phone, str) or not _E164_RE.match(phone):
            raise _ApiError(400, "phone_number must be an E.164 number")
        if phone in self._owned_phones():
            raise _ApiError(400, f"{phone} is not available")
        name = body.get("friendly_name", body.get("name"))
        if name is not None and not isinstance(name, str):
            raise _ApiError(400, "friendly_name must be a string")
        flow_id = self._flow_ref(ctx.biz, body.get("call_flow_id"))
        toll_free = phone[2:5] in TOLL_FREE_PREFIXES and phone.startswith("+1")
        nid = new_uuid(ctx.biz.rng)
        number: JSONDict = {
            "id": nid, "phone_number": phone, "friendly_name": name or phone,
            "type": "toll_free" if toll_free else "local", "status": "active",
            "call_flow_id": flow_id, "group_id": None, "group_name": None,
            "number_source": "owned", "sms_enabled": False,
            "monthly_cost_cents": 500 if toll_free else 300, "created_at": format_ts(self.now()),
        }
        ctx.biz.numbers[nid] = number
        ctx.biz.balance["balance_cents"] -= number["monthly_cost_cents"]
        self.purchases.append({"business": ctx.biz.name, "id": nid, "phone_number": phone,
                               "key_prefix": ctx.key.prefix, "time": self.now()})
        return {"number": self._render_number(ctx.biz, number)}

    async def _update_number(self, ctx: _Ctx) -> JSONDict:
        number = self._number(ctx)
        body = await self._body(ctx.request)
        for name_key in ("friendly_name", "name"):
            if name_key in body:
                if not isinstance(body[name_key], str):
                    raise _ApiError(400, f"{name_key} must be a string")
                number["friendly_name"] = body[name_key]
        if "call_flow_id" in body:
            number["call_flow_id"] = self._flow_ref(ctx.biz, body["call_flow_id"])
        if "status" in body:
            if body["status"] not in ("active", "paused"):
                raise _ApiError(400, "status must be 'active' or 'paused'")
            number["status"] = body["status"]
        return {"number": self._render_number(ctx.biz, number)}

    async def _release_number(self, ctx: _Ctx) -> JSONDict:
        number = self._number(ctx)
        del ctx.biz.numbers[number["id"]]
        number["status"] = "released"
        ctx.biz.released_numbers[number["id"]] = number
        return {"deleted": True, "id": number["id"]}

    # ------------------------------------------------------------------ call flows
    async def _list_flows(self, ctx: _Ctx) -> JSONDict:
        chunk, total = self._paginate(ctx.request, list(ctx.biz.call_flows.values()))
        return {"call_flows": [self._render_flow(ctx.biz, f) for f in chunk], "total": total}

    def _flow(self, ctx: _Ctx) -> JSONDict:
        flow = ctx.biz.call_flows.get(self._uuid(ctx.ident, "Call flow"))
        if flow is None:
            raise _not_found("Call flow")
        return flow

    async def _get_flow(self, ctx: _Ctx) -> JSONDict:
        return {"call_flow": self._render_flow(ctx.biz, self._flow(ctx))}

    @staticmethod
    def _flow_body(body: JSONDict) -> tuple[str, list[JSONDict], JSONDict]:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _ApiError(400, "name is required")
        steps = body.get("steps", [])
        if not isinstance(steps, list) or not all(
            isinstance(s, dict) and isinstance(s.get("type"), str) for s in steps
        ):
            raise _ApiError(400, "steps must be a list of objects with a string 'type'")
        settings: JSONDict = {"recording": True, "whisper": False, "press1": False}
        given = body.get("settings", {})
        if not isinstance(given, dict):
            raise _ApiError(400, "settings must be an object")
        for k, v in given.items():
            if k in settings and not isinstance(v, bool):
                raise _ApiError(400, f"settings.{k} must be a boolean")
            settings[k] = v
        return name, steps, settings

    async def _create_flow(self, ctx: _Ctx) -> JSONDict:
        name, steps, settings = self._flow_body(await self._body(ctx.request))
        fid = new_uuid(ctx.biz.rng)
        ts = format_ts(self.now())
        flow: JSONDict = {"id": fid, "name": name, "steps": steps, "settings": settings,
                          "version": 1, "created_at": ts, "updated_at": ts}
        ctx.biz.call_flows[fid] = flow
        ctx.biz.versions[fid] = [{"version": 1, "created_at": ts, "created_by": ctx.key.email,
                                  "steps": steps}]
        return {"call_flow": self._render_flow(ctx.biz, flow)}

    async def _replace_flow(self, ctx: _Ctx) -> JSONDict:
        flow = self._flow(ctx)
        name, steps, settings = self._flow_body(await self._body(ctx.request))
        ts = format_ts(self.now())
        flow.update(name=name, steps=steps, settings=settings, version=flow["version"] + 1,
                    updated_at=ts)
        ctx.biz.versions[flow["id"]].append({"version": flow["version"], "created_at": ts,
                                             "created_by": ctx.key.email, "steps": steps})
        return {"call_flow": self._render_flow(ctx.biz, flow)}

    async def _delete_flow(self, ctx: _Ctx) -> JSONDict:
        flow = self._flow(ctx)
        del ctx.biz.call_flows[flow["id"]]
        ctx.biz.versions.pop(flow["id"], None)
        for n in ctx.biz.numbers.values():
            if n["call_flow_id"] == flow["id"]:
                n["call_flow_id"] = None
        return {"deleted": True, "id": flow["id"]}

    async def _flow_versions(self, ctx: _Ctx) -> JSONDict:
        flow = self._flow(ctx)
        history = list(reversed(ctx.biz.versions.get(flow["id"], [])))
        chunk, total = self._paginate(ctx.request, history)
        return {"versions": chunk, "total": total}

    # ------------------------------------------------------------------ calls
    def _filter_calls(self, biz: Business, q: Mapping[str, str]) -> list[CallRecord]:
        """The calls matching ``q``, newest first.

        ``biz.calls`` is kept sorted newest first (``started_at`` desc, then ``id``), so the
        ``date_from``/``date_to`` bounds are two binary searches; the other filters only look at
        that slice. Cost: O(log n + matches), not O(n), per request.
        """
        items = biz.calls
        lo = _parse_time(q["date_from"], "date_from", end=False) if "date_from" in q else None
        hi = _parse_time(q["date_to"], "date_to", end=True) if "date_to" in q else None
        qualified: bool | None = None
        if "qualified" in q:
            if q["qualified"] not in ("true", "false"):
                raise _ApiError(400, "qualified must be 'true' or 'false'")
            qualified = q["qualified"] == "true"
        eq = {k: q[k].lower() if k != "status" else q[k]
              for k in ("status", "number_id", "call_flow_id") if k in q}
        if lo is None and hi is None and qualified is None and not eq:
            return items
        # Descending by ts: as keys, -ts ascends. [start, stop) holds lo <= ts <= hi.
        start = 0 if hi is None else bisect_left(items, -hi, key=_neg_ts)
        stop = len(items) if lo is None else bisect_right(items, -lo, key=_neg_ts)
        window = items[start:stop]
        if qualified is None and not eq:
            return window
        return [
            c for c in window
            if (qualified is None or c.data["qualified"] is qualified)
            and all(c.data[k] == v for k, v in eq.items())
        ]

    def _mutate_calls(self, biz: Business) -> None:
        ins = self.faults.insert_calls_per_list_request
        dele = self.faults.delete_calls_per_list_request
        if self.faults.delete_calls_on_next_lists:
            dele += self.faults.delete_calls_on_next_lists.pop(0)
        if not ins and not dele:
            return
        self._counts.pop(biz.name, None)
        # Both keep biz.calls sorted newest first (_filter_calls bisects on it): a new call is
        # newer than every other one, so it goes in front; pops keep the order.
        for _ in range(ins):
            started = biz.calls[0].ts + 1 if biz.calls else DATA_ANCHOR_UNIX
            rec = biz.make_call(started)
            biz.calls.insert(0, rec)
            biz.calls_by_id[rec.data["id"]] = rec
        for _ in range(min(dele, len(biz.calls))):
            rec = biz.calls.pop(self._fault_rng.randrange(len(biz.calls)))
            del biz.calls_by_id[rec.data["id"]]

    async def _list_calls(self, ctx: _Ctx) -> JSONDict:
        self._mutate_calls(ctx.biz)
        items = self._filter_calls(ctx.biz, ctx.request.query)
        chunk, total = self._paginate(ctx.request, items)
        return {"calls": [c.data for c in chunk], "total": total}

    def _call(self, ctx: _Ctx) -> CallRecord:
        rec = ctx.biz.calls_by_id.get(self._uuid(ctx.ident, "Call"))
        if rec is None:
            raise _not_found("Call")
        return rec

    async def _get_call(self, ctx: _Ctx) -> JSONDict:
        return {"call": self._call(ctx).data}

    async def _transcription(self, ctx: _Ctx) -> JSONDict:
        d = self._call(ctx).data
        if not d["has_transcription"]:
            raise _not_found("Transcription")
        rng = random.Random(d["id"])
        lines = ("Hi, thanks for calling, how can I help?", "I need a quote for a repair.",
                 "Sure, what is your address?", "It's on Main Street.",
                 "Great, we can come tomorrow morning.", "Perfect, thank you.")
        t = 0.0
        segments: list[JSONDict] = []
        for i, text in enumerate(lines[: rng.randint(2, len(lines))]):
            dur = round(rng.uniform(1.5, 6.0), 2)
            segments.append({"speaker": "agent" if i % 2 == 0 else "caller",
                             "start_seconds": round(t, 2), "end_seconds": round(t + dur, 2),
                             "text": text})
            t += dur + 0.3
        return {"transcription": {"call_id": d["id"], "text": " ".join(s["text"] for s in segments),
                                  "language": "en", "segments": segments}}

    def _sign(self, call_id: str) -> str:
        return hmac.new(self._secret.encode(), call_id.encode(), hashlib.sha256).hexdigest()[:32]

    async def _recording(self, ctx: _Ctx) -> web.StreamResponse:
        d = self._call(ctx).data
        if d["recording_url"] is None:
            raise _not_found("Recording")
        url = f"{self.storage_url}/storage/recordings/{d['id']}.mp3?sig={self._sign(d['id'])}"
        return web.Response(status=302, headers={**ctx.headers, "Location": url,
                                                 "Date": self._date()})

    async def _export_calls(self, ctx: _Ctx) -> web.StreamResponse:
        # The list's filters and order; the columns are the list's fields (CALL_FIELDS).
        items = self._filter_calls(ctx.biz, ctx.request.query)
        faults = self.faults
        pending = ctx.export_faults
        columns = [f for f in CALL_FIELDS if f != faults.export_missing_column]
        extra = faults.export_extra_column
        if extra is not None:
            columns.insert(columns.index("status") + 1, extra)
        miscount = pending.get("export_count")
        if miscount is not None and items:
            middle = len(items) // 2
            if miscount.rows < 0:
                items = items[:middle] + items[middle - miscount.rows:]
            else:
                items = items[:middle] + items[middle:middle + miscount.rows] + items[middle:]
        cut = pending.get("export_cut")
        resp = web.StreamResponse(status=200, headers={
            **ctx.headers, "Date": self._date(), "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="calls.csv"',
        })
        resp.enable_chunked_encoding()
        await resp.prepare(ctx.request)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(columns)

        known = [f for f in columns if f != extra]
        at = columns.index(extra) if extra is not None else -1
        cells = operator.itemgetter(*known)

        def row(c: CallRecord) -> list[Any]:
            out = ["" if v is None else ("true" if v else "false") if v is True or v is False
                   else v for v in cells(c.data)]
            if at >= 0:
                out.insert(at, f"{extra}-{c.data['id'][:8]}")
            return out

        for i in range(0, len(items), 200):
            for n, c in enumerate(items[i:i + 200], start=i):
                if cut is not None and n == cut.rows:
                    line = io.StringIO()
                    csv.writer(line, lineterminator="\r\n").writerow(row(c))
                    buf.write(line.getvalue()[: len(line.getvalue()) // 2])
                    await resp.write(buf.getvalue().encode())
                    if cut.clean:
                        await resp.write_eof()
                    elif ctx.request.transport is not None:
                        ctx.request.transport.close()
                    return resp
                writer.writerow(row(c))
            await resp.write(buf.getvalue().encode())
            buf.seek(0)
            buf.truncate()
        if buf.tell():
            await resp.write(buf.getvalue().encode())
        await resp.write_eof()
        return resp

    # ------------------------------------------------------------------ analytics, account
    async def _analytics(self, ctx: _Ctx) -> JSONDict:
        q = ctx.request.query
        groups = [g.strip() for g in q.get("group_by", "").split(",") if g.strip()]
        if len(groups) > 3:
            raise _ApiError(400, "group_by accepts at most 3 keys")
        bad = [g for g in groups if g not in _GROUP_KEYS]
        if bad:
            raise _ApiError(400, f"Unknown group_by key: {bad[0]}")
        metrics = [m.strip() for m in q.get("metrics", "count").split(",") if m.strip()]
        bad = [m for m in metrics if m not in _METRICS]
        if bad or not metrics:
            raise _ApiError(400, f"Unknown metric: {bad[0] if bad else ''}")
        items = [c.data for c in self._filter_calls(ctx.biz, q)]
        buckets: dict[tuple[Any, ...], list[JSONDict]] = {}
        for d in items:
            buckets.setdefault(tuple(_group_value(d, g) for g in groups), []).append(d)
        rows = []
        for key in sorted(buckets, key=lambda t: tuple((v is None, v or 0 if isinstance(v, int)
                                                        else v or "") for v in t)):
            row: JSONDict = dict(zip(groups, key, strict=True))
            row.update(_metrics(buckets[key], metrics))
            rows.append(row)
        return {"rows": rows, "totals": _metrics(items, metrics)}

    async def _balance(self, ctx: _Ctx) -> JSONDict:
        return dict(ctx.biz.balance)

    # ------------------------------------------------------------------ storage origin
    async def _storage(self, request: web.Request) -> web.StreamResponse:
        loop_t = asyncio.get_running_loop().time()
        record = StorageRecord(loop_t, request.path_qs, 0, "Authorization" in request.headers)
        self.stats.storage_log.append(record)
        if self.latency:
            await asyncio.sleep(self.latency)
        name = request.match_info["name"]
        call_id = name.removesuffix(".mp3")
        date_hdr = {"Date": self._date()}
        if not hmac.compare_digest(request.query.get("sig", ""), self._sign(call_id)):
            record.status = 403
            return web.Response(status=403, text="<Error>AccessDenied</Error>",
                                content_type="application/xml", headers=date_hdr)
        if not any(call_id in b.calls_by_id for b in self._businesses.values()):
            record.status = 404
            return web.Response(status=404, text="<Error>NoSuchKey</Error>",
                                content_type="application/xml", headers=date_hdr)
        data = recording_bytes(call_id, self.recording_size)
        resp = web.StreamResponse(status=200, headers={**date_hdr, "Content-Type": "audio/mpeg"})
        resp.content_length = len(data)
        await resp.prepare(request)
        for i in range(0, len(data), _CHUNK):
            await resp.write(data[i:i + _CHUNK])
        await resp.write_eof()
        record.status = 200
        return resp


def recording_bytes(call_id: str, size: int) -> bytes:
    """The deterministic fake audio of a call: ``size`` bytes starting with ``ID3``."""
    data = random.Random(call_id).randbytes(size)
    return (b"ID3" + data[3:])[:size]


def _neg_ts(c: CallRecord) -> int:
    return -c.ts


def _int_param(q: Mapping[str, str], name: str, default: int) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _ApiError(400, f"{name} must be a positive integer") from None
    if value < 1:
        raise _ApiError(400, f"{name} must be a positive integer")
    return value


def _parse_time(value: str, name: str, *, end: bool) -> float:
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return calendar.timegm(d.timetuple()) + (86399 if end else 0)
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise _ApiError(400, f"{name} must be an ISO 8601 date or datetime") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def _group_value(d: JSONDict, g: str) -> Any:
    s: str = d["started_at"]
    if g == "date":
        return s[:10]
    if g == "month":
        return s[:7]
    if g == "hour_of_day":
        return int(s[11:13])
    if g in ("week", "day_of_week"):
        day = date.fromisoformat(s[:10])
        if g == "day_of_week":
            return _DAYS[day.weekday()]
        iso = day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    return d[g]


def _metrics(items: list[JSONDict], metrics: list[str]) -> JSONDict:
    out: JSONDict = {}
    n = len(items)
    for m in metrics:
        if m == "count":
            out[m] = n
        elif m == "avg_duration":
            out[m] = round(sum(d["duration_seconds"] for d in items) / n, 1) if n else None
        elif m == "qualified_pct":
            out[m] = round(100 * sum(1 for d in items if d["qualified"]) / n, 1) if n else None
        else:
            scores = [d["ai_score"] for d in items if d["ai_score"] is not None]
            out[m] = round(sum(scores) / len(scores), 1) if scores else None
    return out


async def serve(port: int = 0, **kwargs: Any) -> FakeCallScaler:
    """Start a fake on ``port`` (0: any free port) and return it running; call ``close()``.

    For the ``callscaler sandbox`` command: prints nothing.
    """
    return await FakeCallScaler(port=port, **kwargs).start()

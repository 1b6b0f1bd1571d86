"""Fault injection for the fake: a mutable object the tests poke between requests.

"Next n" faults apply to the next ``n`` API requests whose path (relative to the base URL,
e.g. ``calls/123``) contains the optional ``path`` substring; each matching request uses up one
unit of every queued fault it matches. Flags (``legacy_envelope``, ...) stay until changed or
until :meth:`Faults.clear`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Faults", "PendingFault"]

FailBody = Literal["json", "html", "empty"]
FaultKind = Literal[
    "fail", "slow", "drop", "reset_mid_body", "truncate", "rate_limit", "redirect",
    "export_cut", "export_count",
]


@dataclass(slots=True)
class PendingFault:
    """One queued fault; ``remaining=None`` means "until cleared"."""

    kind: FaultKind
    remaining: int | None
    path: str | None = None
    status: int = 500
    body: FailBody = "json"
    delay: float = 0.0
    retry_after: int = 12
    header: bool = True
    body_retry_after: bool = True
    url: str = ""
    rows: int = 0
    clean: bool = False


@dataclass
class Faults:
    """Every fault the fake can inject. See the module docstring of ``_server`` for effects."""

    legacy_envelope: bool = False
    flat_errors: bool = False
    omit_rate_headers: bool = False
    reset_header: Literal["normal", "past", "far"] = "normal"
    number_name_field: Literal["friendly_name", "name"] = "friendly_name"
    insert_calls_per_list_request: int = 0
    delete_calls_per_list_request: int = 0
    total_jitter: int = 0
    short_pages: bool = False
    empty_page_at: int | None = None
    #: ``calls/export`` sends no column of this name (header and rows), e.g. ``"created_at"``.
    export_missing_column: str | None = None
    #: ``calls/export`` sends one more column of this name (after ``status``), cells filled.
    export_extra_column: str | None = None
    pending: list[PendingFault] = field(default_factory=list)
    # Calls to delete (at random positions) on each of the next list requests, in order.
    delete_calls_on_next_lists: list[int] = field(default_factory=list)

    def fail_next(
        self, n: int = 1, status: int = 500, body: FailBody = "json", path: str | None = None
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (``body="html"``/``"empty"``: a proxy
        page without rate-limit headers that never reaches the app)."""
        self.pending.append(PendingFault("fail", n, path, status=status, body=body))

    def slow_next(self, n: int, delay: float, path: str | None = None) -> None:
        """Sleep ``delay`` seconds (loop time) before handling the next ``n`` requests."""
        self.pending.append(PendingFault("slow", n, path, delay=delay))

    def drop_next(self, n: int = 1, path: str | None = None) -> None:
        """Close the connection without any response for the next ``n`` requests."""
        self.pending.append(PendingFault("drop", n, path))

    def reset_mid_body_next(self, n: int = 1, path: str | None = None) -> None:
        """Send headers and half the body (Content-Length says more), then close."""
        self.pending.append(PendingFault("reset_mid_body", n, path))

    def truncate_next(self, n: int = 1, path: str | None = None) -> None:
        """Answer 200 with a truncated JSON body (Content-Length matches the truncation)."""
        self.pending.append(PendingFault("truncate", n, path))

    def rate_limit_next(
        self,
        n: int = 1,
        retry_after: int = 12,
        header: bool = True,
        body: bool = True,
        path: str | None = None,
    ) -> None:
        """Serve a 429 whatever the budget; ``header``: send ``Retry-After``; ``body``: put
        ``retry_after`` in the JSON body."""
        self.pending.append(
            PendingFault(
                "rate_limit", n, path, retry_after=retry_after, header=header,
                body_retry_after=body,
            )
        )

    def redirect_to(self, url: str, *, path: str | None = None, n: int | None = None) -> None:
        """Answer matching requests (all of them if ``path`` is None) with ``302 Location: url``
        after auth and rate limiting; ``n=None`` keeps doing so until :meth:`clear`."""
        self.pending.append(PendingFault("redirect", n, path, url=url))

    def delete_calls_next(self, *counts: int) -> None:
        """The next ``len(counts)`` calls-list requests delete ``counts[i]`` calls each, at
        random positions anywhere in the list, before answering (on top of
        ``delete_calls_per_list_request``)."""
        self.delete_calls_on_next_lists.extend(counts)

    def cut_export_next(
        self, n: int = 1, after_rows: int = 0, *, clean: bool = False
    ) -> None:
        """Cut the next ``n`` exports in the middle of the row after ``after_rows`` rows: the
        connection closes (``clean=False``) or the body ends properly there (``clean=True``,
        a server that lost the rest)."""
        self.pending.append(
            PendingFault("export_cut", n, "calls/export", rows=after_rows, clean=clean)
        )

    def miscount_export_next(self, n: int = 1, rows: int = -1) -> None:
        """Make the next ``n`` exports disagree with the list's ``total``: ``rows < 0`` leaves
        out that many rows (from the middle), ``rows > 0`` sends that many rows twice."""
        self.pending.append(PendingFault("export_count", n, "calls/export", rows=rows))

    def take(self, path: str) -> list[PendingFault]:
        """Pop one unit of every queued fault matching ``path`` (server side)."""
        if not self.pending:
            return []
        hit: list[PendingFault] = []
        keep: list[PendingFault] = []
        for f in self.pending:
            if f.path is None or f.path in path:
                hit.append(f)
                if f.remaining is not None:
                    f.remaining -= 1
            if f.remaining is None or f.remaining > 0:
                keep.append(f)
        self.pending = keep
        return hit

    def clear(self) -> None:
        """Reset every fault and flag to the default (well-behaved) state."""
        self.__init__()  # type: ignore[misc]

"""Whether an event loop is the one running in this thread, without a system call.

On Python 3.11 ``asyncio.get_running_loop()`` calls ``getpid()`` every time, to notice a
fork (python/cpython#100363 replaced that with a fork hook in 3.12): a system call, which
the pipeline benchmark showed at ~3 µs per call in place (py-spy; ``strace -c`` counted the
two the SDK made per request). The client and its rate gate check their loop on every
request, so on 3.11 they ask the loop instead: asyncio's loops record the thread running
them (``_thread_id``, set by ``run_forever`` before it becomes the running loop and cleared
when it stops), and with asyncio's own ``run_forever`` a thread runs one loop at a time.
A fork is noticed as 3.12 does, with ``os.register_at_fork``: a binding made before the
fork is checked the slow way after it.

Other loops (uvloop's, say), loops whose ``run_forever`` is not asyncio's (nest_asyncio
patches it to run loops inside each other, keeping the outer loop's ``_thread_id``) and
Python 3.12+ always ask ``asyncio.get_running_loop()``. A check that fails is only a hint:
the callers then make the full check, which raises for the wrong loop.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Final

__all__ = ["bind", "is_running", "running_loop_for"]

# get_running_loop() has no system call since 3.12.
_ASK_THE_LOOP: Final = sys.version_info < (3, 12)
_get_ident: Final = threading.get_ident
_STOCK_RUN_FOREVER: Final = asyncio.BaseEventLoop.run_forever

_forks = 0  # forks this process came out of, counted in the child
_SLOW: Final = -1  # a binding that is always checked with get_running_loop()


def _after_fork_in_child() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork either
    os.register_at_fork(after_in_child=_after_fork_in_child)


def bind(loop: asyncio.AbstractEventLoop) -> int:
    """A binding for ``loop``, which the caller just got from ``get_running_loop()``:
    pass it to ``is_running`` with the loop."""
    if _ASK_THE_LOOP and isinstance(loop, asyncio.BaseEventLoop):
        return _forks
    return _SLOW


def is_running(loop: asyncio.AbstractEventLoop, binding: int) -> bool:
    """Whether ``loop`` is the event loop running in this thread (False when none runs)."""
    # (Checked on every call: nest_asyncio may patch the class after the binding.)
    if binding == _forks and type(loop).run_forever is _STOCK_RUN_FOREVER:
        # (mypy: the private attribute of asyncio.BaseEventLoop, which bind() checked.)
        return loop._thread_id == _get_ident()  # type: ignore[attr-defined,no-any-return]
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def running_loop_for(
    owner: str, bound: asyncio.AbstractEventLoop | None
) -> asyncio.AbstractEventLoop:
    """The running loop, which must be ``bound`` unless that is None (``owner`` is named in
    the RuntimeError otherwise; get_running_loop() raises when no loop runs)."""
    loop = asyncio.get_running_loop()
    if bound is not None and bound is not loop:
        raise RuntimeError(
            f"{owner} belongs to another event loop; create the client (and its rate limiter) "
            "inside the event loop that uses it: one per event loop"
        )
    return loop

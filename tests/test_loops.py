"""The per-request check that the client and its rate gate run in their own event loop.

``callscaler_async._loops`` answers it without ``asyncio.get_running_loop()`` on Python 3.11
(a ``getpid()`` system call there); these tests hold it to get_running_loop's answers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import callscaler_async as cs
from callscaler_async import _loops
from callscaler_async.ratelimit import BusinessRateGate


async def bind_here() -> tuple[asyncio.AbstractEventLoop, int]:
    loop = asyncio.get_running_loop()
    return loop, _loops.bind(loop)


async def check(loop: asyncio.AbstractEventLoop, binding: int) -> bool:
    return _loops.is_running(loop, binding)


@contextmanager
def loop_in_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_its_own_loop_while_it_runs_and_never_after() -> None:
    with asyncio.Runner() as runner:
        loop, binding = runner.run(bind_here())
        assert runner.run(check(loop, binding)) is True
    assert _loops.is_running(loop, binding) is False  # no loop runs
    assert asyncio.run(check(loop, binding)) is False  # another loop, same thread


def test_a_loop_running_in_another_thread_is_not_this_threads() -> None:
    with loop_in_thread() as loop:
        binding_future = asyncio.run_coroutine_threadsafe(bind_here(), loop)
        _, binding = binding_future.result(timeout=5)
        assert asyncio.run_coroutine_threadsafe(check(loop, binding), loop).result(5) is True
        assert _loops.is_running(loop, binding) is False
        assert asyncio.run(check(loop, binding)) is False


async def test_loops_of_other_kinds_are_asked_with_get_running_loop() -> None:
    class Foreign(asyncio.AbstractEventLoop):
        pass

    foreign = Foreign()  # type: ignore[abstract]
    assert _loops.bind(foreign) == _loops._SLOW
    assert _loops.is_running(foreign, _loops.bind(foreign)) is False
    mine = asyncio.get_running_loop()
    assert _loops.is_running(mine, _loops._SLOW) is True


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ asks get_running_loop()")
async def test_on_3_11_its_own_loop_is_known_without_get_running_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop, binding = await bind_here()
    assert binding != _loops._SLOW

    def refuse() -> asyncio.AbstractEventLoop:
        raise AssertionError("get_running_loop() called: a system call per request on 3.11")

    monkeypatch.setattr(asyncio, "get_running_loop", refuse)
    assert _loops.is_running(loop, binding) is True


async def test_a_loop_with_another_run_forever_is_asked_with_get_running_loop() -> None:
    # nest_asyncio patches run_forever to run a loop inside another: the outer loop then
    # keeps this thread's id while the inner one runs. Such a loop is never trusted.
    running, _ = await bind_here()
    base = type(running)

    class Patched(base):  # type: ignore[valid-type,misc]
        def run_forever(self) -> None:
            super().run_forever()

    for cls, trusted in ((base, True), (Patched, False)):
        outer: Any = cls()
        try:
            binding = _loops.bind(outer)
            outer._thread_id = threading.get_ident()  # as the nested run leaves it
            assert _loops.is_running(outer, binding) is (trusted and binding != _loops._SLOW)
        finally:
            outer._thread_id = None
            outer.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_a_binding_made_before_a_fork_does_not_hold_in_the_child() -> None:
    # In a fresh process: forking the multi-threaded test process is unsafe.
    script = textwrap.dedent(
        """
        import asyncio, os
        from callscaler_async import _loops

        async def main():
            loop = asyncio.get_running_loop()
            binding = _loops.bind(loop)
            assert _loops.is_running(loop, binding)
            pid = os.fork()
            if pid == 0:  # the child: asyncio no longer counts the loop as running here
                os._exit(3 if _loops.is_running(loop, binding) else 0)
            _, status = os.waitpid(pid, 0)
            print(os.waitstatus_to_exitcode(status), _loops.is_running(loop, binding))

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.split() == ["0", "True"]


def test_a_client_used_after_its_loop_stopped_is_a_clear_error() -> None:
    # The session exists (a first request ran in the first loop): the per-request check,
    # not the session's creation, must notice the second loop.
    client = cs.CallScaler(
        "cs_key_loops00SECRET", base_url="http://127.0.0.1:9/", business="loops-ended",
        max_retries=0,
    )  # fmt: skip

    async def first() -> None:
        with pytest.raises(cs.APIConnectionError):
            await client.account.balance()

    async def second() -> None:
        with pytest.raises(RuntimeError, match="another event loop"):
            await client.account.balance()

    with asyncio.Runner() as runner:
        runner.run(first())
        assert client._transport.sessions_created == 1
        asyncio.run(second())  # the first loop is stopped, not closed: it still ran nothing
        runner.run(client.aclose())


def test_a_client_whose_loop_runs_in_another_thread_is_a_clear_error() -> None:
    with loop_in_thread() as loop:

        async def make() -> cs.CallScaler:
            client = cs.CallScaler(
                "cs_key_loops00SECRET", base_url="http://127.0.0.1:9/",
                business="loops-thread", max_retries=0,
            )  # fmt: skip
            with pytest.raises(cs.APIConnectionError):
                await client.account.balance()
            return client

        client = asyncio.run_coroutine_threadsafe(make(), loop).result(timeout=10)

        async def elsewhere() -> None:
            with pytest.raises(RuntimeError, match="another event loop"):
                await client.account.balance()

        asyncio.run(elsewhere())
        asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=5)


def test_a_gate_used_from_another_loop_is_a_clear_error() -> None:
    gate = BusinessRateGate(cs.RateLimit(requests=10, period=60.0), name="loops-gate")

    async def admit() -> None:
        ticket = gate.try_acquire()
        assert ticket is not None
        gate.complete(ticket, status=200, headers={})

    async def elsewhere() -> None:
        with pytest.raises(RuntimeError, match="another event loop"):
            gate.try_acquire()

    with loop_in_thread() as loop:
        asyncio.run_coroutine_threadsafe(admit(), loop).result(timeout=5)
        asyncio.run(elsewhere())
    asyncio.run(elsewhere())  # and after that loop ended

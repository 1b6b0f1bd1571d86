"""What a new user sees first, in real subprocesses: the command (console script and
``python -m``), the command without its extra, what reaches stderr when no logging is
configured, each CLI error shown once, and exceptions named by their public path."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import pickle
import re
import subprocess
import sys
import textwrap
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import callscaler_async as cs
from callscaler_async.testing import FakeCallScaler

WRONG_KEY = "cs_key_deadbeef0123456789abcdef"


README = Path(__file__).resolve().parent.parent / "README.md"


@contextlib.contextmanager
def threaded_fake(**kwargs: Any) -> Iterator[FakeCallScaler]:
    """A fake API on its own loop in a thread, for the subprocesses to talk to."""
    loop = asyncio.new_event_loop()
    fake = FakeCallScaler(**kwargs)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[FakeCallScaler]:
    with threaded_fake(calls=50, seed=3, rate_limit=10_000, period=60.0) as fake:
        yield fake


def run(
    args: list[str], fake: FakeCallScaler | None = None, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCALER_")}
    if fake is not None:
        env["CALLSCALER_BASE_URL"] = fake.base_url
        env["CALLSCALER_API_KEY"] = key or fake.api_key
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)


def script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def test_python_dash_m_and_the_console_script_run_the_same_cli() -> None:
    by_module = run([sys.executable, "-m", "callscaler_async", "--help"])
    assert by_module.returncode == 0, by_module.stderr
    assert "Usage: python -m callscaler_async" in by_module.stdout
    assert "sync" in by_module.stdout and "sandbox" in by_module.stdout
    console = Path(sys.executable).with_name("callscaler")
    by_script = run([str(console), "--help"])
    assert by_script.returncode == 0, by_script.stderr
    assert by_script.stdout.replace("Usage: callscaler", "Usage: python -m callscaler_async") == (
        by_module.stdout
    )
    version = run([sys.executable, "-m", "callscaler_async", "--version"])
    assert version.returncode == 0 and version.stdout.startswith("callscaler, version ")


def test_importing_the_main_modules_runs_nothing() -> None:
    # Documentation tools and pkgutil.walk_packages import every module, __main__ included.
    proc = run(
        script(
            """
            import callscaler_async.__main__, callscaler_async.cli.__main__
            print("imported")
            """
        )
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "imported\n", "")
    by_cli_module = run([sys.executable, "-m", "callscaler_async.cli", "--version"])
    assert by_cli_module.returncode == 0 and by_cli_module.stdout.startswith("callscaler, version")


def test_without_the_cli_extra_one_line_and_exit_2() -> None:
    missing = "click"
    # A module set to None in sys.modules fails to import as if it were not installed.
    proc = run(
        script(
            f"""
            import sys
            sys.modules[{missing!r}] = None
            sys.argv = ["callscaler", "--help"]
            from callscaler_async.cli import run
            run()
            """
        )
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"no module named {missing!r}" in proc.stderr
    assert "pip install 'callscaler-async[cli]'" in proc.stderr


@pytest.mark.parametrize("missing", ["click", "rich"])
def test_a_command_importing_a_missing_extra_when_it_runs_says_so_in_one_line(
    missing: str,
) -> None:
    # A command may import part of the extra (rich for a progress bar) only when it runs.
    proc = run(
        script(
            f"""
            import sys
            from callscaler_async.cli import _app, run
            sys.modules[{missing!r}] = None  # imports as if not installed

            @_app.main.command("needs-extra")
            def needs_extra() -> None:
                from {missing} import progress

            run(["needs-extra"])
            """
        )
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"no module named {missing!r}" in proc.stderr


@pytest.mark.parametrize(
    "broken",
    [
        "click.no_such_module",  # inside an installed package of the extra
        "callscaler_async.cli._no_such_module",  # one of ours
        "no_such_dependency",  # not a package of the extra
    ],
)
@pytest.mark.parametrize("when", ["import", "run"])
def test_an_import_bug_keeps_its_traceback(broken: str, when: str) -> None:
    # Not "install the cli extra": the extra is installed, and installing it again cannot help.
    if when == "import":
        body = f"""
            import sys, importlib.abc

            class Broken(importlib.abc.MetaPathFinder):
                def find_spec(self, name, path=None, target=None):
                    if name == "callscaler_async.cli._app":
                        raise ModuleNotFoundError(f"No module named {broken!r}", name={broken!r})

            sys.meta_path.insert(0, Broken())
            from callscaler_async.cli import run
            run(["--help"])
            """
    else:
        body = f"""
            from callscaler_async.cli import _app, run

            @_app.main.command("broken")
            def broken() -> None:
                import {broken}

            run(["broken"])
            """
    proc = run(script(body))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" in proc.stderr and "cli extra" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("ModuleNotFoundError: No module named")


def test_the_missing_extra_modules_cover_the_cli_extra() -> None:
    from callscaler_async.cli import _CLI_EXTRA_MODULES

    pyproject = tomllib.loads((README.parent / "pyproject.toml").read_text("utf-8"))
    extra = pyproject["project"]["optional-dependencies"]["cli"]
    packages = {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in extra}
    assert packages and packages <= _CLI_EXTRA_MODULES


def test_library_is_silent_on_stderr_without_logging_config(sandbox: FakeCallScaler) -> None:
    body = """
        import asyncio, callscaler_async as cs

        async def main() -> None:
            async with cs.CallScaler() as client:
                try:
                    await client.calls.list(per_page=5)
                except cs.AuthenticationError as exc:
                    print("caught", exc.status)

        asyncio.run(main())
        """
    quiet = run(script(body), sandbox, key=WRONG_KEY)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "caught 401\n"
    assert quiet.stderr == ""
    # Once the application configures logging, the warning is there (prefix only, no key).
    configured = run(
        script("import logging; logging.basicConfig()\n" + textwrap.dedent(body)),
        sandbox,
        key=WRONG_KEY,
    )
    assert configured.stdout == "caught 401\n"
    lines = configured.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("WARNING:callscaler_async:GET calls -> 401")
    assert "cs_key_deadbeef…" in lines[0] and WRONG_KEY not in configured.stderr


def test_cli_shows_a_wrong_key_error_once(sandbox: FakeCallScaler) -> None:
    proc = run([sys.executable, "-m", "callscaler_async", "numbers", "list"], sandbox, WRONG_KEY)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: API error 401: ")
    assert "cs_key_deadbeef…" in lines[0] and WRONG_KEY not in proc.stderr


def test_uncaught_errors_name_their_public_module(sandbox: FakeCallScaler) -> None:
    proc = run(
        script(
            """
            import asyncio, callscaler_async as cs

            async def main() -> None:
                async with cs.CallScaler() as client:
                    try:
                        await client.calls.get("00000000-0000-0000-0000-000000000000")
                    except cs.NotFoundError as exc:
                        print(type(exc), repr(exc))
                    owned = (await client.numbers.list(per_page=1)).items[0]
                    await client.numbers.purchase(owned.phone_number)  # not available: a 400

            asyncio.run(main())
            """
        ),
        sandbox,
    )
    assert proc.returncode == 1
    assert proc.stdout.startswith("<class 'callscaler_async.NotFoundError'> NotFoundError(")
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("callscaler_async.BadRequestError: 400"), proc.stderr
    assert "_errors" not in proc.stderr.splitlines()[-1]


def test_the_readme_tour_runs_twice_and_prints_what_its_comment_says(tmp_path: Path) -> None:
    text = README.read_text("utf-8")
    tour = text[text.index("## Tour") :]
    code = tour[tour.index("```python\n") + len("```python\n") : tour.index("\n```\n")]
    promised = re.search(r"print\(page\.total.*# (.+)$", code, re.MULTILINE)
    assert promised is not None, "the Tour's first print has no comment saying what it prints"
    (tmp_path / "tour.py").write_text(code + "\n")
    # The data of `callscaler sandbox` with its defaults (500 calls, seed 0); a large limit
    # only so that two runs never wait for the budget.
    with threaded_fake(calls=500, seed=0, rate_limit=10_000, period=60.0) as fake:
        outputs = []
        for _ in range(2):
            env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCALER_")}
            env |= {"CALLSCALER_BASE_URL": fake.base_url, "CALLSCALER_API_KEY": fake.api_key}
            proc = subprocess.run(
                [sys.executable, "tour.py"], cwd=tmp_path, env=env, capture_output=True,
                text=True, timeout=120,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert proc.stderr == ""
            outputs.append(proc.stdout.splitlines())
        assert len(fake.purchases) == 2  # a number bought (and released) by each run
    for lines in outputs:
        assert lines[0] == promised.group(1).strip()
        assert lines[-1].startswith("rate limit: ")  # the snapshot says itself in words
    assert outputs[0][:-1] == outputs[1][:-1]  # the same walk both times
    assert (tmp_path / "call.mp3").stat().st_size > 0


def _public_errors() -> list[BaseException]:
    """One instance of every public exception class, built as the SDK builds them."""
    from callscaler_async import sync, webhooks
    from callscaler_async._errors import error_from_response

    headers = {"Retry-After": "7", "X-Request-Id": "req-1"}
    body = b'{"error": {"code": "invalid_parameter", "message": "per_page must be 1..100"}}'
    errors: list[BaseException] = [
        error_from_response(status, body, headers, method="GET", url="calls")
        for status in (400, 401, 403, 404, 409, 429, 500, 503)
    ]
    errors += [
        cs.CallScalerError("plain"),
        cs.APIConnectionError("refused", method="GET", url="/api/v1/calls"),
        cs.APITimeoutError("slow", method="GET", url="/api/v1/calls"),
        cs.ResponseDecodeError("expected an integer", path="$.data.total", model="Page"),
        cs.ResponseTooLargeError("too big", limit=1024, method="GET", url="/api/v1/calls"),
        cs.RateLimiterUnavailable("redis down"),
        sync.SyncError("window kept changing"),
        sync.SyncCheckpointError("unreadable"),
        webhooks.WebhookAuthError("wrong secret"),
        webhooks.WebhookPayloadError("not an object", path="$.call"),
        webhooks.WebhookRejected(413, "body over 262144 bytes"),
    ]
    return errors


@pytest.mark.parametrize("error", _public_errors(), ids=lambda e: type(e).__name__)
def test_public_errors_pickle_and_copy_whole_by_their_public_path(error: BaseException) -> None:
    cls = type(error)
    # pickle finds a class by __module__ + name: the public path must hold this very class.
    assert b"._" not in pickle.dumps(cls), pickle.dumps(cls)
    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(clone) is cls
        assert clone.args == error.args
        assert str(clone) == str(error) and repr(clone) == repr(error)
        assert vars(clone) == vars(error)

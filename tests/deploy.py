"""Real deployments of the FastAPI example: the fake API, uvicorn or gunicorn, a driver.

Every part is its own process, as in production: the fake API is ``callscaler sandbox``
(which prints, when stopped, how many requests it served and how many it answered 429), the
app is ``uvicorn --workers N`` or ``gunicorn -k uvicorn.workers.UvicornWorker``, and the
driver opens a new connection for every request (no keep-alive), so requests spread over
the workers. Used by ``tests/test_fastapi_deploy.py`` and ``benchmarks/bench_fastapi.py``.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

__all__ = ["AppServer", "Drive", "Sandbox", "drive", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Sandbox:
    """``callscaler sandbox`` in its own process; ``stop()`` returns (requests, 429s)."""

    def __init__(
        self,
        *,
        limit: int,
        period: float,
        window: str = "fixed",
        latency: float = 0.0,
        calls: int = 200,
    ) -> None:
        self.args = [
            "--limit", str(limit), "--period", str(period), "--window", window,
            "--latency", str(latency), "--calls", str(calls),
        ]  # fmt: skip
        self.base_url = ""
        self.api_key = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> Sandbox:
        cmd = [PYTHON, "-m", "callscaler_async.cli", "sandbox", "--port", "0", *self.args]
        proc = self._proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        for line in proc.stdout:
            if line.startswith("CallScaler sandbox on "):
                self.base_url = line.split(" on ", 1)[1].strip()
            elif "export CALLSCALER_API_KEY=" in line:
                self.api_key = line.split("=", 1)[1].strip()
            elif line.startswith("Ctrl-C to stop."):
                break
            if time.monotonic() > deadline:
                break
        if not (self.base_url and self.api_key):
            self.stop()
            raise RuntimeError("the sandbox did not start")
        return self

    def stop(self) -> tuple[int, int]:
        proc, self._proc = self._proc, None
        if proc is None:
            return (0, 0)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        match = re.search(r"sandbox served ([\d,]+) requests, ([\d,]+) answered 429", err)
        if match is None:
            raise RuntimeError(f"the sandbox did not report its counts: {err[-500:]!r}")
        return int(match[1].replace(",", "")), int(match[2].replace(",", ""))


class AppServer:
    """The app under ``uvicorn --workers N`` or gunicorn, on one port across restarts."""

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        workers: int = 4,
        server: Literal["uvicorn", "gunicorn"] = "uvicorn",
        app: str = "examples.fastapi_app:app",
        graceful: float = 10.0,
        preload: bool = False,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.server = server
        self.app = app
        self.graceful = graceful
        self.preload = preload
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives with the server
            prefix="callscaler-app-", suffix=".log", delete=False
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    def command(self) -> list[str]:
        if self.server == "uvicorn":
            return [
                PYTHON, "-m", "uvicorn", self.app, "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", str(self.workers), "--no-access-log",
                "--log-level", "info", "--timeout-graceful-shutdown", f"{self.graceful:g}",
            ]  # fmt: skip
        cmd = [
            PYTHON, "-m", "gunicorn", self.app, "-k", "uvicorn.workers.UvicornWorker",
            "-b", f"127.0.0.1:{self.port}", "-w", str(self.workers), "--log-level", "info",
            "--graceful-timeout", f"{self.graceful:g}",
        ]  # fmt: skip
        if self.preload:
            cmd.append("--preload")
        return cmd

    def start(self, timeout: float = 60.0) -> AppServer:
        """Start and wait until every worker has finished its startup."""
        before = self.log().count("Application startup complete")
        # A session of its own: kill_all() can reach the workers too (by the group's id).
        self._proc = subprocess.Popen(
            self.command(), cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self._proc.returncode}:\n{self.log()}")
            started = self.log().count("Application startup complete") - before
            if started >= self.workers and self._healthy():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"the app did not start within {timeout}s:\n{self.log()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def kill_all(self) -> None:
        """SIGKILL the server and every worker at once: a crash, no goodbye from anyone."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def close(self) -> None:
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


class Drive:
    """What the app's clients saw: one (status, started, ended) per request."""

    def __init__(self) -> None:
        self.results: list[tuple[int, float, float]] = []
        self.refused = 0  # connections refused (the app was restarting), retried
        self.retry_after: list[str | None] = []

    @property
    def statuses(self) -> Counter[int]:
        return Counter(status for status, _, _ in self.results)

    def latency(self, q: float) -> float:
        values = sorted(end - start for _, start, end in self.results)
        if not values:
            return math.nan
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


async def drive(
    url: str,
    n: int,
    *,
    concurrency: int = 20,
    path: str = "/calls?limit=1",
    out: Drive | None = None,
) -> Drive:
    """Send ``n`` requests from ``concurrency`` clients, each on a new connection.

    A refused connection (the app between a stop and its restart) is retried after 20 ms,
    from the request's original start: its latency includes the restart. A connection cut
    off without an answer is recorded as status 0.
    """
    result = out if out is not None else Drive()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = loop.time()
                while True:
                    try:
                        async with session.get(url + path) as response:
                            await response.read()
                            result.results.append((response.status, started, loop.time()))
                            result.retry_after.append(response.headers.get("Retry-After"))
                            break
                    except aiohttp.ClientConnectorError:
                        result.refused += 1
                        await asyncio.sleep(0.02)
                    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                        # Accepted, then cut off without an answer (the server was killed).
                        result.results.append((0, started, loop.time()))
                        result.retry_after.append(None)
                        break

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return result

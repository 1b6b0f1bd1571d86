"""``callscaler``: sync, numbers, calls, sandbox and demo commands.

Exit codes: 0 success, 1 an API or connection error (the message names the status and what to
do), 2 a usage error, 130 (SIGINT, Ctrl-C) or 143 (SIGTERM) a sync stopped by a signal with
everything saved. The API key comes from ``CALLSCALER_API_KEY`` or ``--api-key-file`` and
is never printed: messages show at most its public ``cs_key_xxxxxxxx`` prefix.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from .._client import CallScaler
from .._convert import encode
from .._errors import (
    APIConnectionError,
    APIStatusError,
    CallScalerError,
    RateLimiterUnavailable,
)
from .._transport import key_prefix
from ..sync import (
    CSVSink,
    JSONFileStore,
    JSONLinesSink,
    SQLiteStore,
    SyncCheckpoint,
    SyncCheckpointError,
    SyncOutputError,
    check_output,
)
from ._progress import progress_display, summary_lines

__all__ = ["main"]

T = TypeVar("T")

_HINTS = {
    400: "check the command's options (dates, ids, filters)",
    401: "the API key is invalid, revoked or missing: set CALLSCALER_API_KEY or --api-key-file "
    "(Settings > API Keys)",
    403: "this key's role may not do that: use an admin key",
    404: "check the id (it must exist in this key's business)",
    429: "the business's rate limit (shared by all its keys) is exhausted: wait a minute and "
    "retry; a sync resumes from its checkpoint",
}


class APIFailure(click.ClickException):
    """An API or connection error: exit code 1, message on stderr."""

    exit_code = 1


class _State:
    def __init__(self, api_key_file: Path | None, base_url: str | None) -> None:
        self.api_key_file = api_key_file
        self.base_url = base_url
        self.key: str | None = None

    def api_key(self) -> str:
        if self.key is not None:
            return self.key
        import os

        if self.api_key_file is not None:
            try:
                key = self.api_key_file.read_text("utf-8").strip()
            except OSError as exc:
                raise click.UsageError(f"cannot read --api-key-file: {exc.strerror}") from None
        else:
            key = os.environ.get("CALLSCALER_API_KEY", "").strip()
        if not key:
            raise click.UsageError(
                "no API key: set CALLSCALER_API_KEY or pass --api-key-file PATH "
                "(try `callscaler sandbox` for a local test API with keys)"
            )
        self.key = key
        return key

    def client(self, **kwargs: Any) -> CallScaler:
        import os

        # Several commands (or an app) on one key share its budget through Redis, as the
        # FastAPI integration does: the client builds the limiter and closes it.
        redis_url = os.environ.get("CALLSCALER_REDIS_URL", "").strip()
        if redis_url:
            kwargs.setdefault("rate_limiter", redis_url)
        try:
            return CallScaler(self.api_key(), base_url=self.base_url, **kwargs)
        except (ValueError, ImportError) as exc:
            raise click.UsageError(self.scrub(str(exc))) from None

    def scrub(self, text: str) -> str:
        if self.key:
            text = text.replace(self.key, key_prefix(self.key))
        return text


def _explain(exc: BaseException, state: _State | None) -> str:
    if isinstance(exc, APIStatusError):
        hint = _HINTS.get(exc.status)
        if hint is None and exc.status >= 500:
            hint = "the API (or a proxy in front of it) failed: retry in a few minutes"
        who = f" (key {key_prefix(state.key)})" if state and state.key and exc.status == 401 else ""
        text = f"API error {exc.status}: {exc.message}{who}. {hint or 'see the message above'}"
    elif isinstance(exc, APIConnectionError):
        where = state.base_url if state and state.base_url else "the API"
        text = (
            f"cannot reach {where}: {exc}. Check the network and --base-url / "
            "CALLSCALER_BASE_URL; a sync resumes from its checkpoint when run again"
        )
    elif isinstance(exc, RateLimiterUnavailable):
        text = f"the shared rate limiter is unavailable: {exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return state.scrub(text) if state else text


def run_async(state: _State | None, coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; API errors become exit code 1 with an explanation."""
    try:
        return asyncio.run(coro)
    except CallScalerError as exc:
        raise APIFailure(_explain(exc, state)) from None
    except SyncCheckpointError as exc:
        raise click.UsageError(f"{exc} (or pass --no-resume to start over)") from None


def _parse_moment(value: str, name: str) -> dt.datetime | dt.date:
    try:
        if len(value) == 10:
            return dt.date.fromisoformat(value)
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date (2026-01-31) or an ISO 8601 time (2026-01-31T12:00:00Z)",
            param_hint=name,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


# ------------------------------------------------------------------------- the group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the API key from this file (default: $CALLSCALER_API_KEY).",
)
@click.option(
    "--base-url",
    envvar="CALLSCALER_BASE_URL",
    help="API base URL (default: $CALLSCALER_BASE_URL or https://callscaler.com/api/v1/).",
)
@click.version_option(package_name="callscaler-async", prog_name="callscaler")
@click.pass_context
def main(ctx: click.Context, api_key_file: Path | None, base_url: str | None) -> None:
    """CallScaler from the command line: bulk sync, lookups, a local sandbox and a demo.

    Start with `callscaler demo`.
    """
    ctx.obj = _State(api_key_file, base_url)


# ------------------------------------------------------------------------- sync


@main.group()
def sync() -> None:
    """Bulk, resumable, exactly-once sync to a SQLite database or a file."""


@sync.command("calls")
@click.option("--since", required=True, help="First day (2026-01-01) or time, UTC.")
@click.option("--until", help="Last day or time, UTC (default: now, pinned at the start).")
@click.option(
    "--out", "-o", "out_arg", required=True, metavar="PATH|sqlite:///PATH",
    help="Output: a SQLite database (calls.db, .sqlite, .sqlite3 or sqlite:///path), "
    "or a JSON Lines / CSV file.",
)  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(["sqlite", "jsonl", "csv"]), default=None,
    help="Output format (default: from the name: sqlite for .db/.sqlite/.sqlite3 and "
    "sqlite:///, csv for .csv, else jsonl).",
)  # fmt: skip
@click.option(
    "--resume/--no-resume", default=True, show_default=True,
    help="Continue an interrupted sync from its checkpoint.",
)  # fmt: skip
@click.option(
    "--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint file (default: OUT.checkpoint.json).",
)  # fmt: skip
@click.option(
    "--window-days", type=click.IntRange(1, 366), default=None,
    help="Date window per step [default: 7 by pages, 30 with export or auto].",
)  # fmt: skip
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option(
    "--strategy", type=click.Choice(["auto", "pages", "export"]), default="auto",
    show_default=True,
    help="export: one export request per window, checked against the list's count; "
    "pages: page through the list; auto: export when its header has every field.",
)  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.pass_obj
def sync_calls(
    state: _State,
    since: str,
    until: str | None,
    out_arg: str,
    fmt: str | None,
    resume: bool,
    checkpoint: Path | None,
    window_days: int | None,
    concurrency: int,
    strategy: Literal["auto", "pages", "export"],
    quiet: bool,
) -> None:
    """Every call of [--since, --until] exactly once into --out, resumable after a crash.

    Run it again after it finished and it continues from where that sync ended, appending
    the calls that came since. Ctrl-C (or SIGTERM) stops it with everything saved.
    """
    start = _parse_moment(since, "--since")
    end = _parse_moment(until, "--until") if until else None
    out, fmt = _sync_output(out_arg, fmt)
    if fmt == "sqlite" and checkpoint is not None:
        raise click.UsageError("a SQLite database keeps its own checkpoint: drop --checkpoint")
    checkpoint = checkpoint or out.with_name(out.name + ".checkpoint.json")
    client = state.client()
    code = run_async(
        state,
        _interruptible(
            lambda: _sync_calls(
                client, start=start, end=end, out=out, fmt=fmt, resume=resume,
                checkpoint=checkpoint, window_days=window_days, concurrency=concurrency,
                strategy=strategy, quiet=quiet,
            )
        ),
    )  # fmt: skip
    if code:
        sys.exit(code)


class _Interrupted(Exception):
    """A sync stopped by a signal; ``code`` is the exit status (128 + the signal)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


async def _interruptible(make: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run ``make()`` so that SIGINT or SIGTERM cancels it (it then saves and reports what
    it has) and a second signal ends the process at once; returns the exit status."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if received:
            # Everything written is fsynced and the checkpoint is replaced atomically:
            # stopping without the cleanup loses nothing a resume needs.
            os.write(2, b"interrupted again: exiting now; run the same command again to resume\n")
            os._exit(128 + received[0])
        received.append(signum)
        task.cancel()

    signals = [signal.SIGINT, signal.SIGTERM]
    installed = []
    for signum in signals:
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # no signal handlers (Windows, a thread)
            pass
    try:
        await make()
    except asyncio.CancelledError:
        if not received:
            raise
        return 128 + received[0]
    except _Interrupted as exc:
        return exc.code
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
    return 0


async def _sync_calls(
    client: CallScaler, *, start: dt.datetime | dt.date, end: dt.datetime | dt.date | None,
    out: Path, fmt: str, resume: bool, checkpoint: Path, window_days: int | None,
    concurrency: int, strategy: Literal["auto", "pages", "export"], quiet: bool,
) -> None:  # fmt: skip
    window = dt.timedelta(days=window_days) if window_days else None
    # A database holds its calls and its checkpoint in one file, committed together: there
    # is no second file to drift from it, and no partial file to rename.
    database = SQLiteStore(out) if fmt == "sqlite" else None
    holder = out if database is not None else checkpoint
    async with client:
        # (A signal before the sync starts cancels this as well: nothing was written yet.)
        job = client.calls.sync(
            since=start, until=end, window=window, concurrency=concurrency, strategy=strategy
        )
        store = database if database is not None else JSONFileStore(checkpoint)
        key = f"calls:{client.business}"
        previous = await store.load(key) if resume else None
        # The file this run writes: a new sync never writes over an existing OUT until it
        # is complete (it fills OUT.partial, renamed over OUT at the end).
        target = out
        before = 0
        if previous is not None:
            if database is None:
                target = _checked_output(previous, out, checkpoint)
            before = previous.delivered
            origin = previous.first_since or previous.since
            if job.since < origin or (not previous.finished and previous.since != job.since
                                      and previous.first_since is None):  # fmt: skip
                raise click.UsageError(
                    f"{holder} belongs to a sync from {origin:%Y-%m-%d %H:%M:%S}, not "
                    f"{job.since:%Y-%m-%d %H:%M:%S}: pass --no-resume to start over"
                )
            if previous.finished:
                # Continue from the pinned `until`: only calls that came after it are fetched.
                if job.until <= previous.until:
                    click.echo(
                        f"up to date: {target} holds every call up to "
                        f"{previous.until:%Y-%m-%d %H:%M:%S} UTC ({before:,} calls); for a full "
                        f"re-sync pass --no-resume --since {origin:%Y-%m-%d}", err=True
                    )  # fmt: skip
                    return
                job = client.calls.sync(
                    since=previous.until + dt.timedelta(seconds=1), until=job.until,
                    window=window, concurrency=concurrency, strategy=strategy,
                )  # fmt: skip
                continued = job.new_checkpoint()
                continued.delivered = previous.delivered
                continued.high_water_mark = previous.high_water_mark
                continued.sink_state = (
                    dict(previous.sink_state)
                    if database is not None
                    else dict(previous.sink_state, path=str(target))
                )
                continued.first_since = origin
                await store.save(key, continued)
                click.echo(
                    f"continuing: {before:,} calls in {target} up to "
                    f"{previous.until:%Y-%m-%d %H:%M:%S} UTC; fetching the calls since", err=True
                )  # fmt: skip
            else:
                click.echo(
                    f"resuming: {before:,} calls already in {target} "
                    f"(range pinned to {previous.until:%Y-%m-%d %H:%M:%S} UTC)", err=True
                )  # fmt: skip
        elif out.exists() and database is None:
            target = out.with_name(out.name + ".partial")
        sink = database or (CSVSink(target) if fmt == "csv" else JSONLinesSink(target))
        progress = None if quiet else progress_display(sys.stderr)
        try:
            summary = await job.run(
                sink, store=store, key=key, resume=previous is not None, on_progress=progress
            )
        except asyncio.CancelledError:
            if progress is not None:
                progress.finish()
            saved = await store.load(key)
            count = saved.delivered if saved is not None else 0
            where = Path(saved.sink_state.get("path", target)) if saved is not None else target
            click.echo(
                f"interrupted: {count:,} calls saved in {where}; "
                "run the same command again to resume", err=True
            )  # fmt: skip
            raise
        except SyncOutputError as exc:
            raise click.UsageError(_mismatch(exc, checkpoint)) from None
        if progress is not None:
            progress.finish()
        if target != out:
            os.replace(target, out)
            done = await store.load(key)
            if done is not None:
                done.sink_state = dict(done.sink_state, path=str(out))
                await store.save(key, done)
        added = summary.items - before
        if previous is not None and previous.finished:
            if added == 0:
                origin = previous.first_since or previous.since
                click.echo(
                    f"up to date: no calls after {previous.until:%Y-%m-%d %H:%M:%S} UTC; {out} "
                    f"holds {summary.items:,} calls up to {summary.until:%Y-%m-%d %H:%M:%S} UTC."
                    f" For a full re-sync pass --no-resume --since {origin:%Y-%m-%d}", err=True
                )  # fmt: skip
            else:
                click.echo(
                    f"appended {added:,} new calls to {out} ({summary.items:,} in all, {fmt})",
                    err=True,
                )
        else:
            click.echo(
                f"synced {summary.items:,} calls to {out} ({fmt}) by {summary.strategy}, "
                f"{summary.requests:,} requests", err=True,
            )  # fmt: skip
        if database is not None:
            click.echo(
                f'query it: sqlite3 {out} "select status, count(*) from calls group by 1"',
                err=True,
            )
        for line in summary_lines(summary):
            click.echo(line, err=True)


def _checked_output(previous: SyncCheckpoint, out: Path, checkpoint: Path) -> Path:
    """The file the checkpoint describes, checked: it must hold what the checkpoint counts."""
    named = previous.sink_state.get("path")
    target = Path(named) if isinstance(named, str) and named else out
    if not target.exists() and out.exists():
        target = out  # renamed over OUT at the end of the sync that wrote it
    partial = out.with_name(out.name + ".partial")
    if target.resolve() not in (out.resolve(), partial.resolve()):
        raise click.UsageError(
            f"{checkpoint} describes the output {target}, not {out}: pass the --out it was "
            f"made for, or --no-resume to start {out} over"
        )
    try:
        check_output(target, previous.sink_state)
    except SyncOutputError as exc:
        raise click.UsageError(_mismatch(exc, checkpoint)) from None
    return out if target.resolve() == out.resolve() else target


def _mismatch(exc: SyncOutputError, checkpoint: Path) -> str:
    return (
        f"{exc}. The checkpoint {checkpoint} counts calls as saved that the output does not "
        "hold: restore the file, or pass --no-resume to start over (the existing output is "
        "only replaced once the new sync is complete)"
    )



_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def _sync_output(out: str, fmt: str | None) -> tuple[Path, str]:
    """``--out`` and ``--format`` -> (path, format).

    ``sqlite:///calls.db`` is a relative path and ``sqlite:////var/calls.db`` an absolute one
    (SQLAlchemy's convention).
    """
    if out.startswith("sqlite:"):
        if not out.startswith("sqlite:///") or len(out) == len("sqlite:///"):
            raise click.BadParameter(
                f"{out!r}: write sqlite:///calls.db (relative) or sqlite:////abs/calls.db",
                param_hint="--out",
            )
        if fmt not in (None, "sqlite"):
            raise click.BadParameter(f"{out!r} is a SQLite URL, not {fmt}", param_hint="--out")
        return Path(out[len("sqlite:///") :]), "sqlite"
    path = Path(out)
    if fmt is None:
        suffix = path.suffix.lower()
        fmt = "sqlite" if suffix in _SQLITE_SUFFIXES else "csv" if suffix == ".csv" else "jsonl"
    return path, fmt


# ------------------------------------------------------------------------- numbers


@main.group()
def numbers() -> None:
    """Tracking numbers."""


@numbers.command("list")
@click.option("--status", help="Only numbers with this status (active, paused, ...).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def numbers_list(state: _State, status: str | None, as_json: bool) -> None:
    """List the business's tracking numbers."""
    client = state.client()

    async def go() -> list[dict[str, Any]]:
        async with client:
            return [encode(n) async for n in client.numbers.list(status=status)]

    rows = run_async(state, go())
    if as_json:
        click.echo(_dumps(rows))
    else:
        _print_table(
            rows, ["id", "phone_number", "friendly_name", "status", "call_flow_name", "total_calls"]
        )


# ------------------------------------------------------------------------- calls


@main.group()
def calls() -> None:
    """Calls: one call, its recording, a CSV export."""


def _call_id(value: str) -> str:
    import uuid

    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a call id (a UUID)") from None


@calls.command("get")
@click.argument("call_id")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def calls_get(state: _State, call_id: str, as_json: bool) -> None:
    """Show one call."""
    cid = _call_id(call_id)
    client = state.client()

    async def go() -> dict[str, Any]:
        async with client:
            result: dict[str, Any] = encode(await client.calls.get(cid))
            return result

    row = run_async(state, go())
    if as_json:
        click.echo(_dumps(row))
        return
    width = max(len(k) for k in row)
    for key, value in row.items():
        click.echo(f"{key.ljust(width)}  {'' if value is None else value}")


@calls.command("recording")
@click.argument("call_id")
@click.option(
    "--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Where to save the audio.",
)  # fmt: skip
@click.pass_obj
def calls_recording(state: _State, call_id: str, output: Path) -> None:
    """Download a call's recording."""
    cid = _call_id(call_id)
    client = state.client()

    async def go() -> int:
        async with client:
            return await client.calls.recording(cid).save(output)

    size = run_async(state, go())
    click.echo(f"saved {size:,} bytes to {output}", err=True)


@calls.command("export")
@click.option("--since", help="First day or time (UTC).")
@click.option("--until", help="Last day or time (UTC).")
@click.option("--status", help="answered, missed, voicemail, ...")
@click.option("--number-id", help="Only calls to this tracking number id.")
@click.option("--call-flow-id", help="Only calls through this call flow id.")
@click.option("--qualified/--any-qualified", default=None, help="Only qualified calls.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines instead of CSV.")
@click.pass_obj
def calls_export(
    state: _State,
    since: str | None,
    until: str | None,
    status: str | None,
    number_id: str | None,
    call_flow_id: str | None,
    qualified: bool | None,
    as_json: bool,
) -> None:
    """Stream the CSV export to stdout: `callscaler calls export > calls.csv`."""
    client = state.client()
    date_from = _parse_moment(since, "--since") if since else None
    date_to = _parse_moment(until, "--until") if until else None

    async def go() -> int:
        out = sys.stdout
        writer: csv.DictWriter[str] | None = None
        count = 0
        async with client:
            async for row in client.calls.export(
                date_from=date_from, date_to=date_to, status=status, number_id=number_id,
                call_flow_id=call_flow_id, qualified=qualified,
            ):  # fmt: skip
                if as_json:
                    out.write(json.dumps(row) + "\n")
                else:
                    if writer is None:
                        writer = csv.DictWriter(out, fieldnames=list(row), lineterminator="\n")
                        writer.writeheader()
                    writer.writerow(row)
                count += 1
        out.flush()
        return count

    try:
        count = run_async(state, go())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"exported {count:,} calls", err=True)


# ------------------------------------------------------------------------- sandbox


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--calls", "n_calls", type=click.IntRange(1), default=500, show_default=True)
@click.option(
    "--window", type=click.Choice(["fixed", "sliding", "bucket", "counter"]), default="fixed",
    show_default=True, help="The rate-limit window algorithm.",
)  # fmt: skip
@click.option("--limit", type=click.IntRange(1), default=60, show_default=True)
@click.option("--period", type=click.FloatRange(0.1), default=60.0, show_default=True)
@click.option("--latency", type=click.FloatRange(0.0), default=0.0, help="Seconds per request.")
@click.option("--seed", type=int, default=0, show_default=True)
def sandbox(
    port: int, host: str, n_calls: int, window: str, limit: int, period: float,
    latency: float, seed: int,
) -> None:  # fmt: skip
    """Run a local fake CallScaler API (same contract, fake data) until Ctrl-C."""
    from ..testing import serve

    async def go() -> None:
        fake = await serve(
            port, host=host, calls=n_calls, seed=seed, rate_limit=limit, period=period,
            algorithm=window, latency=latency,
        )  # fmt: skip
        try:
            click.echo(f"CallScaler sandbox on {fake.base_url}")
            click.echo(f"  rate limit   {limit} requests / {period:g} s ({window} window)")
            click.echo(f"  business 'acme' ({n_calls:,} calls), keys:")
            for key in fake.api_keys:
                click.echo(f"    {key}")
            click.echo(f"  business 'globex' ({max(1, n_calls // 5):,} calls), key:")
            click.echo(f"    {fake.other_business_key}")
            click.echo("try:")
            click.echo(f"  export CALLSCALER_BASE_URL={fake.base_url}")
            click.echo(f"  export CALLSCALER_API_KEY={fake.api_key}")
            click.echo("  callscaler sync calls --since 2026-01-01 --out calls.db")
            click.echo("Ctrl-C to stop.")
            sys.stdout.flush()
            await asyncio.Event().wait()
        finally:
            await fake.close()
            stats = fake.stats
            click.echo(
                f"sandbox served {stats.requests:,} requests, {stats.rate_limited:,} answered 429",
                err=True,
            )

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        click.echo("sandbox stopped", err=True)
    except OSError as exc:
        raise APIFailure(f"cannot start the sandbox on {host}:{port}: {exc.strerror}") from None


# ------------------------------------------------------------------------- demo


@main.command()
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the demo's files (default: a temporary directory, removed after).",
)  # fmt: skip
@click.option("--calls", "n_calls", type=click.IntRange(100, 50_000), default=12_000,
              show_default=True)  # fmt: skip
def demo(out: Path | None, n_calls: int) -> None:
    """Sync thousands of calls from a local sandbox, crash mid-way, resume, verify."""
    from ._demo import run_demo

    ok = _run_plain(run_demo(out, n_calls))
    if not ok:
        raise APIFailure("demo failed: the files do not hold every call exactly once")


def _run_plain(coro: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await coro

    try:
        return asyncio.run(wrapper())
    except CallScalerError as exc:
        raise APIFailure(_explain(exc, None)) from None

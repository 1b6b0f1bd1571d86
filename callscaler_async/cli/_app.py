"""``callscaler``: sync, numbers, calls, sandbox and demo commands.

Exit codes: 0 success, 1 an API or connection error (the message names the status and what to
do), 2 a usage error. The API key comes from ``CALLSCALER_API_KEY`` or ``--api-key-file`` and
is never printed: messages show at most its public ``cs_key_xxxxxxxx`` prefix.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import sys
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

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
    SyncCheckpointError,
)
from ._progress import ProgressLine, summary_lines

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
        try:
            return CallScaler(self.api_key(), base_url=self.base_url, **kwargs)
        except ValueError as exc:
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
    """Bulk, resumable, exactly-once sync to a file."""


@sync.command("calls")
@click.option("--since", required=True, help="First day (2026-01-01) or time, UTC.")
@click.option("--until", help="Last day or time, UTC (default: now, pinned at the start).")
@click.option(
    "--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Output file.",
)  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
    help="Output format (default: from the file name, else jsonl).",
)  # fmt: skip
@click.option(
    "--resume/--no-resume", default=True, show_default=True,
    help="Continue an interrupted sync from its checkpoint.",
)  # fmt: skip
@click.option(
    "--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint file (default: OUT.checkpoint.json).",
)  # fmt: skip
@click.option("--window-days", type=click.IntRange(1, 366), default=7, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.pass_obj
def sync_calls(
    state: _State,
    since: str,
    until: str | None,
    out: Path,
    fmt: str | None,
    resume: bool,
    checkpoint: Path | None,
    window_days: int,
    concurrency: int,
    quiet: bool,
) -> None:
    """Every call of [--since, --until] exactly once into --out, resumable after a crash."""
    start = _parse_moment(since, "--since")
    end = _parse_moment(until, "--until") if until else None
    fmt = fmt or ("csv" if out.suffix.lower() == ".csv" else "jsonl")
    checkpoint = checkpoint or out.with_name(out.name + ".checkpoint.json")
    client = state.client()

    async def go() -> None:
        async with client:
            job = client.calls.sync(
                since=start, until=end, window=dt.timedelta(days=window_days),
                concurrency=concurrency,
            )  # fmt: skip
            store = JSONFileStore(checkpoint)
            key = f"calls:{client.business}"
            if resume:
                previous = await store.load(key)
                if previous is not None and not previous.finished:
                    if previous.since != job.since:
                        raise click.UsageError(
                            f"{checkpoint} holds an unfinished sync from "
                            f"{previous.since:%Y-%m-%d %H:%M:%S}, not {job.since:%Y-%m-%d %H:%M:%S}"
                            ": pass --no-resume to start over"
                        )
                    click.echo(
                        f"resuming: {previous.delivered:,} calls already in {out} "
                        f"(range pinned to {previous.until:%Y-%m-%d %H:%M:%S} UTC)", err=True
                    )  # fmt: skip
            sink = CSVSink(out) if fmt == "csv" else JSONLinesSink(out)
            progress = ProgressLine(sys.stderr, client._rate_limit_config)
            try:
                summary = await job.run(
                    sink, store=store, key=key, resume=resume,
                    on_progress=None if quiet else progress,
                )  # fmt: skip
            finally:
                if not quiet:
                    progress.finish()
            click.echo(f"synced {summary.items:,} calls to {out} ({fmt})", err=True)
            for line in summary_lines(summary):
                click.echo(line, err=True)

    run_async(state, go())


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
            click.echo("  callscaler sync calls --since 2026-01-01 --out calls.jsonl")
            click.echo("Ctrl-C to stop.")
            sys.stdout.flush()
            await asyncio.Event().wait()
        finally:
            await fake.close()

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

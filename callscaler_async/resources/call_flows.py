"""``client.call_flows``: list, get, create, replace, delete, version history."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .._convert import decode, encode
from .._pagination import AsyncPaginator, Page
from .._params import check_per_page, format_id
from ..models import CallFlow, CallFlowSettings, CallFlowStep, CallFlowVersion, Deleted
from ._base import Resource

__all__ = ["CallFlows"]

StepInput = CallFlowStep | Mapping[str, Any]
SettingsInput = CallFlowSettings | Mapping[str, Any]


def _flow_body(
    name: str, steps: Sequence[StepInput], settings: SettingsInput | None
) -> dict[str, Any]:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if isinstance(steps, str | bytes) or not isinstance(steps, Sequence):
        raise TypeError("steps must be a list of CallFlowStep or dicts")
    encoded_steps: list[Any] = []
    for index, step in enumerate(steps):
        if isinstance(step, CallFlowStep):
            encoded_steps.append(encode(step))
        elif isinstance(step, Mapping):
            if not isinstance(step.get("type"), str):
                raise ValueError(f"steps[{index}] needs a string 'type'")
            encoded_steps.append(dict(step))
        else:
            raise TypeError(f"steps[{index}] must be a CallFlowStep or a dict, got {step!r}")
    body: dict[str, Any] = {"name": name, "steps": encoded_steps}
    if settings is not None:
        body["settings"] = (
            encode(settings) if isinstance(settings, CallFlowSettings) else dict(settings)
        )
    return body


class CallFlows(Resource):
    """Call flows (routing rules) of the business."""

    def list(
        self,
        *,
        per_page: int = 100,
        page: int = 1,
        max_items: int | None = None,
        concurrency: int = 8,
    ) -> AsyncPaginator[CallFlow]:
        check_per_page(per_page)

        async def fetch(number: int, size: int) -> Page[CallFlow]:
            params = {"page": str(number), "per_page": str(size)}
            raw = await self._send("GET", "call-flows", route="call-flows", params=params)
            payload, path = self._received(raw)
            return self._page(payload, path, "call_flows", CallFlow, page=number, per_page=size)

        return AsyncPaginator(
            fetch, per_page=per_page, page=page, max_items=max_items, concurrency=concurrency
        )

    async def get(self, call_flow_id: uuid.UUID | str) -> CallFlow:
        fid = format_id(call_flow_id, name="call_flow_id")
        raw = await self._send("GET", f"call-flows/{fid}", route="call-flows/{id}")
        payload, path = self._received(raw)
        return self._one(payload, path, "call_flow", CallFlow)

    async def create(
        self,
        *,
        name: str,
        steps: Sequence[StepInput],
        settings: SettingsInput | None = None,
    ) -> CallFlow:
        """Create a call flow (POST: not retried once it may have reached the server)."""
        body = _flow_body(name, steps, settings)
        raw = await self._send("POST", "call-flows", route="call-flows", json=body)
        payload, path = self._received(raw)
        return self._one(payload, path, "call_flow", CallFlow)

    async def update(
        self,
        call_flow_id: uuid.UUID | str,
        *,
        name: str,
        steps: Sequence[StepInput],
        settings: SettingsInput | None = None,
    ) -> CallFlow:
        """Replace a call flow whole (PUT); the server records a new version."""
        fid = format_id(call_flow_id, name="call_flow_id")
        body = _flow_body(name, steps, settings)
        raw = await self._send("PUT", f"call-flows/{fid}", route="call-flows/{id}", json=body)
        payload, path = self._received(raw)
        return self._one(payload, path, "call_flow", CallFlow)

    async def delete(self, call_flow_id: uuid.UUID | str) -> Deleted:
        fid = format_id(call_flow_id, name="call_flow_id")
        raw = await self._send("DELETE", f"call-flows/{fid}", route="call-flows/{id}")
        payload, path = self._received(raw)
        return decode(payload, Deleted, path=path)

    def versions(
        self,
        call_flow_id: uuid.UUID | str,
        *,
        per_page: int = 100,
        page: int = 1,
        max_items: int | None = None,
    ) -> AsyncPaginator[CallFlowVersion]:
        fid = format_id(call_flow_id, name="call_flow_id")
        check_per_page(per_page)

        async def fetch(number: int, size: int) -> Page[CallFlowVersion]:
            params = {"page": str(number), "per_page": str(size)}
            raw = await self._send(
                "GET",
                f"call-flows/{fid}/versions",
                route="call-flows/{id}/versions",
                params=params,
            )
            payload, path = self._received(raw)
            return self._page(
                payload, path, "versions", CallFlowVersion, page=number, per_page=size
            )

        return AsyncPaginator(fetch, per_page=per_page, page=page, max_items=max_items)

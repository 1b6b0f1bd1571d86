"""``client.numbers``: tracking numbers: list, get, search, purchase, update, release."""

from __future__ import annotations

import builtins
import enum
import uuid
from typing import Any, Final, Literal

from .._pagination import AsyncPaginator, Page
from .._params import check_per_page, format_choice, format_id, query
from ..models import AvailableNumber, Deleted, Number, NumberStatus
from ._base import Resource

__all__ = ["NOT_GIVEN", "Numbers"]


class _NotGiven(enum.Enum):
    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = _NotGiven.NOT_GIVEN


def _check_phone(phone_number: str) -> str:
    if (
        not isinstance(phone_number, str)
        or not phone_number.startswith("+")
        or not phone_number[1:].isdigit()
        or not 8 <= len(phone_number) <= 16
    ):
        raise ValueError(f"phone_number must be E.164 like '+15735551234', got {phone_number!r}")
    return phone_number


class Numbers(Resource):
    """Tracking numbers of the business."""

    def list(
        self,
        *,
        status: NumberStatus | str | None = None,
        call_flow_id: uuid.UUID | str | None = None,
        group_id: str | None = None,
        per_page: int = 100,
        page: int = 1,
        max_items: int | None = None,
        concurrency: int = 8,
    ) -> AsyncPaginator[Number]:
        """Numbers matching the filters: ``await`` for one page, ``async for`` for all."""
        filters = query(
            status=None if status is None else format_choice(status, name="status"),
            call_flow_id=None
            if call_flow_id is None
            else format_id(call_flow_id, name="call_flow_id"),
            group_id=None if group_id is None else format_choice(group_id, name="group_id"),
        )
        check_per_page(per_page)

        async def fetch(number: int, size: int) -> Page[Number]:
            params = {**filters, "page": str(number), "per_page": str(size)}
            raw = await self._send("GET", "numbers", route="numbers", params=params)
            payload, path = self._received(raw)
            return self._page(payload, path, "numbers", Number, page=number, per_page=size)

        return AsyncPaginator(
            fetch, per_page=per_page, page=page, max_items=max_items, concurrency=concurrency
        )

    async def get(self, number_id: uuid.UUID | str) -> Number:
        nid = format_id(number_id, name="number_id")
        raw = await self._send("GET", f"numbers/{nid}", route="numbers/{id}")
        payload, path = self._received(raw)
        return self._one(payload, path, "number", Number)

    async def search(
        self,
        *,
        area_code: str | None = None,
        type: Literal["local", "toll_free"] | str = "local",
        limit: int = 10,
    ) -> builtins.list[AvailableNumber]:
        """Numbers available to buy (nothing is bought)."""
        body: dict[str, Any] = {"type": format_choice(type, name="type"), "limit": limit}
        if area_code is not None:
            if not (isinstance(area_code, str) and area_code.isdigit() and len(area_code) == 3):
                raise ValueError(f"area_code must be 3 digits like '573', got {area_code!r}")
            body["area_code"] = area_code
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
            raise ValueError(f"limit must be an int between 1 and 100, got {limit!r}")
        raw = await self._send("POST", "numbers/search", route="numbers/search", json=body)
        payload, path = self._received(raw)
        return self._list(payload, path, "available_numbers", AvailableNumber)

    async def purchase(
        self,
        phone_number: str,
        *,
        friendly_name: str | None = None,
        call_flow_id: uuid.UUID | str | None = None,
    ) -> Number:
        """Buy a number. Costs money: never retried once the request may have arrived."""
        body: dict[str, Any] = {"phone_number": _check_phone(phone_number)}
        if friendly_name is not None:
            if not isinstance(friendly_name, str):
                raise TypeError(f"friendly_name must be a str, got {friendly_name!r}")
            body["friendly_name"] = friendly_name
        if call_flow_id is not None:
            body["call_flow_id"] = format_id(call_flow_id, name="call_flow_id")
        raw = await self._send("POST", "numbers/purchase", route="numbers/purchase", json=body)
        payload, path = self._received(raw)
        return self._one(payload, path, "number", Number)

    async def update(
        self,
        number_id: uuid.UUID | str,
        *,
        friendly_name: str | _NotGiven = NOT_GIVEN,
        call_flow_id: uuid.UUID | str | _NotGiven | None = NOT_GIVEN,
        status: NumberStatus | str | _NotGiven = NOT_GIVEN,
    ) -> Number:
        """Rename, (un)assign a call flow (``call_flow_id=None`` unassigns), change status."""
        nid = format_id(number_id, name="number_id")
        body: dict[str, Any] = {}
        if friendly_name is not NOT_GIVEN:
            if not isinstance(friendly_name, str):
                raise TypeError(f"friendly_name must be a str, got {friendly_name!r}")
            body["friendly_name"] = friendly_name
        if call_flow_id is not NOT_GIVEN:
            body["call_flow_id"] = (
                None if call_flow_id is None else format_id(call_flow_id, name="call_flow_id")
            )
        if status is not NOT_GIVEN:
            body["status"] = format_choice(status, name="status")
        if not body:
            raise ValueError("update() needs at least one of friendly_name, call_flow_id, status")
        raw = await self._send("PATCH", f"numbers/{nid}", route="numbers/{id}", json=body)
        payload, path = self._received(raw)
        return self._one(payload, path, "number", Number)

    async def release(self, number_id: uuid.UUID | str) -> Deleted:
        """Release (delete) a number."""
        nid = format_id(number_id, name="number_id")
        raw = await self._send("DELETE", f"numbers/{nid}", route="numbers/{id}")
        payload, path = self._received(raw)
        return self._one_deleted(payload, path)

    def _one_deleted(self, payload: Any, path: str) -> Deleted:
        from .._convert import decode

        return decode(payload, Deleted, path=path)

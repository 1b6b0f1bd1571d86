"""What every resource shares: send through the client's transport, unwrap, decode."""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .._convert import decode, decode_list
from .._errors import ResponseDecodeError
from .._pagination import Page
from .._transport import RawResponse, unwrap_envelope

if TYPE_CHECKING:
    from .._client import CallScaler

__all__ = ["Resource"]

T = TypeVar("T")


class Resource:
    """A group of endpoints; a method builds a request, names the model, and returns."""

    def __init__(self, client: CallScaler) -> None:
        self._client = client

    def _send(
        self,
        method: str,
        path: str,
        *,
        route: str,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Coroutine[Any, Any, RawResponse]:
        """The transport's request itself: ``raw = await self._send(...)``, then
        ``self._received(raw)``.

        Not a coroutine wrapping it: every resume of the task (gate, connection, body) goes
        through each coroutine of the await chain, so one level fewer is paid several
        times per request.
        """
        client = self._client
        return client._transport.request(
            method, path, options=client._options, params=params, json=json, route=route
        )

    def _received(self, raw: RawResponse) -> tuple[Any, str]:
        """Record ``raw`` as the client's last response; its payload and JSON path."""
        self._client._last_response = raw
        return unwrap_envelope(raw.data)

    @staticmethod
    def _one(payload: Any, path: str, key: str, model: type[T]) -> T:
        if isinstance(payload, dict):
            if key in payload:
                return decode(payload[key], model, path=f"{path}.{key}")
            if "id" in payload:  # a legacy answer with the object itself
                return decode(payload, model, path=path)
        raise ResponseDecodeError(
            f"expected an object with a {key!r} field, got {_kind(payload)}",
            path=path,
            model=model.__name__,
        )

    @staticmethod
    def _list(payload: Any, path: str, key: str, model: type[T]) -> list[T]:
        if isinstance(payload, dict) and key in payload:
            return decode_list(payload[key], model, path=f"{path}.{key}")
        if isinstance(payload, list):
            return decode_list(payload, model, path=path)
        raise ResponseDecodeError(
            f"expected an object with a {key!r} list, got {_kind(payload)}",
            path=path,
            model=model.__name__,
        )

    @classmethod
    def _page(
        cls, payload: Any, path: str, key: str, model: type[T], *, page: int, per_page: int
    ) -> Page[T]:
        items = cls._list(payload, path, key, model)
        total: Any = payload.get("total") if isinstance(payload, dict) else None
        if total is None:
            total = (page - 1) * per_page + len(items)
        elif isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise ResponseDecodeError(
                f"expected a non-negative integer total, got {total!r}",
                path=f"{path}.total",
                model=f"Page[{model.__name__}]",
            )
        return Page(items=items, total=total, page=page, per_page=per_page)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        keys = ", ".join(sorted(map(str, value))[:5])
        return f"an object with keys [{keys}]"
    return type(value).__name__ if value is not None else "null"

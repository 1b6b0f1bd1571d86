"""``client.account``: the business's balance."""

from __future__ import annotations

from .._convert import decode
from ..models import Balance
from ._base import Resource

__all__ = ["Account"]


class Account(Resource):
    """Account-level information."""

    async def balance(self) -> Balance:
        """Balance, low-balance threshold and auto-recharge settings (money as ``Money``)."""
        raw = await self._send("GET", "account/balance", route="account/balance")
        payload, path = self._received(raw)
        return decode(payload, Balance, path=path)

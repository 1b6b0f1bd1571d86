"""The business account: prepaid balance and auto-recharge settings."""

from __future__ import annotations

import attrs

from .._money import Money

__all__ = ["Balance"]


@attrs.frozen(kw_only=True)
class Balance:
    """``GET account/balance``; every ``*_cents`` field is exposed as ``Money``."""

    balance: Money
    low_balance_threshold: Money | None = None
    auto_recharge: bool | None = None
    auto_recharge_amount: Money | None = None

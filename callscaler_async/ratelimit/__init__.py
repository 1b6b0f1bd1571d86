"""The business rate gate: one budget per business, shared by all its keys, clients and tasks.

``local.BusinessRateGate`` serves one process; ``redis.RedisRateLimiter`` shares the budget
between processes and hosts. Both sit behind the ``RateGate`` protocol the transport uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._config import Priority, RateGate, RateLimit, RateLimitSnapshot
from ._state import GateState, HeaderReading, Ticket, parse_rate_headers
from .local import BusinessRateGate, business_key, gate_for

if TYPE_CHECKING:
    from .redis import RedisRateLimiter

__all__ = [
    "BusinessRateGate",
    "GateState",
    "HeaderReading",
    "Priority",
    "RateGate",
    "RateLimit",
    "RateLimitSnapshot",
    "RedisRateLimiter",
    "Ticket",
    "business_key",
    "gate_for",
    "parse_rate_headers",
]


def __getattr__(name: str) -> Any:
    # redis-py is optional and slow to import: load it only when asked for.
    if name == "RedisRateLimiter":
        from .redis import RedisRateLimiter

        return RedisRateLimiter
    raise AttributeError(name)

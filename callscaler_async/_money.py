"""Exact money: integer cents, never floats.

The API sends every amount as integer cents in a field named ``*_cents``; the models expose
them as :class:`Money` under the name without the suffix (``cost_cents`` -> ``call.cost``).

>>> price = Money.from_cents(2500)
>>> str(price), price.amount, int(price)
('$25.00', Decimal('25'), 2500)
>>> str(price - Money.from_amount("26.50"))
'-$1.50'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from decimal import Decimal

__all__ = ["Money"]

# ``decimal`` is imported by the two methods that use it, not here: it is about 2 ms of
# ``import callscaler_async`` (issue #7) and most programs never ask for a Decimal.
_SYMBOLS = {"USD": "$"}


@attrs.frozen(repr=False, order=False)
class Money:
    """An exact amount of money in integer cents (USD unless told otherwise).

    >>> m = Money.from_cents(123456)
    >>> m, str(m), m.amount
    (Money(cents=123456), '$1,234.56', Decimal('1234.56'))
    >>> Money.from_amount("25") + Money.from_cents(50) == Money.from_cents(2550)
    True
    >>> bool(Money.from_cents(0))
    False

    Arithmetic and ordering only work between amounts of the same currency; mixing
    currencies raises ``ValueError`` rather than silently adding dollars to euros.
    """

    cents: int
    currency: str = "USD"

    def __attrs_post_init__(self) -> None:
        # bool is an int subclass; Money(cents=True) is a bug, not one cent.
        if type(self.cents) is not int:
            raise TypeError(f"Money cents must be an int, got {type(self.cents).__name__}")

    @classmethod
    def from_cents(cls, cents: int, currency: str = "USD") -> Money:
        """Build from integer cents: ``Money.from_cents(2500)`` is $25.00."""
        return cls(cents, currency)

    @classmethod
    def from_amount(cls, amount: Decimal | str | int, currency: str = "USD") -> Money:
        """Build from a decimal amount: ``Money.from_amount("25.00")``.

        Floats are refused (``0.1`` is not exactly representable), and so is any amount
        with a fraction of a cent.
        """
        from decimal import Decimal, InvalidOperation

        if isinstance(amount, float | bool):
            raise ValueError("Money.from_amount refuses floats; pass a Decimal or a string")
        try:
            value = Decimal(amount)
        except (InvalidOperation, ValueError, TypeError) as exc:
            raise ValueError(f"not a decimal amount: {amount!r}") from exc
        if not value.is_finite():
            raise ValueError(f"not a finite amount: {amount!r}")
        cents = value * 100
        if cents != cents.to_integral_value():
            raise ValueError(f"amount has a fraction of a cent: {amount!r}")
        return cls(int(cents), currency)

    @property
    def amount(self) -> Decimal:
        """The exact amount in currency units (``Decimal('25.5')`` for 2550 cents)."""
        from decimal import Decimal

        return Decimal(self.cents) / 100

    def __repr__(self) -> str:
        if self.currency == "USD":
            return f"Money(cents={self.cents})"
        return f"Money(cents={self.cents}, currency={self.currency!r})"

    def __str__(self) -> str:
        units, cents = divmod(abs(self.cents), 100)
        sign = "-" if self.cents < 0 else ""
        symbol = _SYMBOLS.get(self.currency)
        if symbol is None:
            return f"{sign}{units:,}.{cents:02d} {self.currency}"
        return f"{sign}{symbol}{units:,}.{cents:02d}"

    def __bool__(self) -> bool:
        return self.cents != 0

    def __int__(self) -> int:
        return self.cents

    def __index__(self) -> int:
        return self.cents

    def _same_currency(self, other: Money) -> None:
        if self.currency != other.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Any) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return Money(self.cents + other.cents, self.currency)

    def __radd__(self, other: Any) -> Money:
        # Lets sum(amounts) start from its default 0.
        if type(other) is int and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: Any) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return Money(self.cents - other.cents, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.cents, self.currency)

    def __abs__(self) -> Money:
        return Money(abs(self.cents), self.currency)

    def __lt__(self, other: Any) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return self.cents < other.cents

    def __le__(self, other: Any) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return self.cents <= other.cents

    def __gt__(self, other: Any) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return self.cents > other.cents

    def __ge__(self, other: Any) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return self.cents >= other.cents

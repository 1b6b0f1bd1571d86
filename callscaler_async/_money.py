"""Exact money: integer cents, never floats.

The API sends every amount as integer cents in a field named ``*_cents``; the models expose
them as :class:`Money` under the name without the suffix (``cost_cents`` -> ``call.cost``).

>>> price = Money(2500)                       # integer cents, as the API sends them
>>> str(price), price.cents, price.amount
('$25.00', 2500, Decimal('25.00'))
>>> str(price - Money.from_amount("26.50"))
'-$1.50'
>>> [str(part) for part in Money(100).allocate(3)]
['$0.34', '$0.33', '$0.33']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

import attrs

if TYPE_CHECKING:
    from decimal import Decimal

__all__ = ["Money"]

# ``decimal`` is imported by the methods that use it, not here: it is about 2 ms of
# ``import callscaler_async`` and most programs never ask for a Decimal.
_SYMBOLS = {"USD": "$"}
# Python's own limit for printing an int (``sys.get_int_max_str_digits()``'s default): an
# amount with more digits of cents could not even be shown.
_MAX_DIGITS = 4300


def _is_int(value: object) -> bool:
    # bool is an int subclass, but ``Money * True`` is a bug, not a multiplication by one.
    return isinstance(value, int) and not isinstance(value, bool)


def _divide_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded to the nearest int, ties to even (exact)."""
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    quotient, remainder = divmod(numerator, denominator)  # 0 <= remainder < denominator
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


@attrs.frozen(repr=False, order=False)
class Money:
    """An exact amount of money in integer cents (USD unless told otherwise).

    ``Money(cents)`` takes integer cents, the unit of the API and of ``repr``;
    ``Money.from_amount("12.50")`` takes an amount in currency units (a ``str``, ``Decimal``
    or ``int``; floats are refused). ``Money("12.50")`` is a ``TypeError`` on purpose: one
    constructor reading ``125`` as cents and ``"1.25"`` as dollars would invite mistakes.

    >>> m = Money(123456)
    >>> m, str(m), m.cents, m.amount
    (Money(cents=123456), '$1,234.56', 123456, Decimal('1234.56'))

    A money type, not a number in disguise: there is no implicit ``int()``, ``float()`` or
    index conversion (``range(m)`` is a ``TypeError``); read ``.cents`` or ``.amount``.

    Arithmetic keeps whole cents:

    * ``a + b``, ``a - b``, ``-a``, ``abs(a)``, ``sum(amounts)`` between amounts of one
      currency (mixing currencies raises ``ValueError`` rather than adding dollars to euros);
      ``sum()`` of an empty list is ``0``, so ``sum(amounts, Money(0))`` is typed ``Money``;
    * ``a * n`` and ``n * a`` with an ``int`` ``n`` (no floats, no ``Money * Money``);
    * ``a.allocate(3)`` or ``a.allocate([1, 2, 1])``: parts that add up to ``a`` exactly,
      each within a cent of its exact share;
    * ``a / n`` with an ``int`` ``n``: the nearest cent, ties to even (banker's rounding,
      ``Money(5) / 2 == Money(2)``), so ``(a / n) * n`` may differ from ``a`` by up to
      ``n // 2`` cents; use ``allocate`` when the parts must add up;
    * ``round(a)`` to whole currency units, ``round(a, 1)`` to tenths, ties to even;
    * comparisons (``<``, ``<=``, ...) and ``bool(a)`` (false for zero).

    >>> Money(1000) * 3 == 3 * Money(1000) == Money.from_amount("30")
    True
    >>> str(Money(1000) / 3), str(round(Money(250)))
    ('$3.33', '$2.00')
    >>> sum([Money(250), Money(125)], Money(0))
    Money(cents=375)
    """

    cents: int
    currency: str = "USD"

    def __attrs_post_init__(self) -> None:
        if type(self.cents) is not int:
            from decimal import Decimal

            if isinstance(self.cents, str | float | Decimal):
                raise TypeError(
                    f"Money() takes integer cents, got {self.cents!r}; for an amount in "
                    f"currency units use Money.from_amount({str(self.cents)!r})"
                )
            # bool is an int subclass; Money(True) is a bug, not one cent.
            raise TypeError(f"Money cents must be an int, got {type(self.cents).__name__}")
        if not isinstance(self.currency, str):
            raise TypeError(f"Money currency must be a str, got {self.currency!r}")

    @classmethod
    def from_cents(cls, cents: int, currency: str = "USD") -> Money:
        """Build from integer cents: ``Money.from_cents(2500)`` is $25.00, as ``Money(2500)``."""
        return cls(cents, currency)

    @classmethod
    def from_amount(cls, amount: Decimal | str | int, currency: str = "USD") -> Money:
        """Build from a decimal amount in currency units: ``Money.from_amount("25.00")``.

        Floats are refused (``0.1`` is not exactly representable), and so is any amount
        with a fraction of a cent (``ValueError``).
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
        # From the digits, not ``value * 100``: Decimal arithmetic rounds to the context's
        # precision (28 digits by default), this cannot.
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)  # finite
        # The exponent is the text's ("1e-999999999"): bound the work before any 10 ** shift.
        text = "".join(map(str, digits))
        trimmed = text.rstrip("0")
        significant = trimmed.lstrip("0")
        if not significant:
            return cls(0, currency)
        shift = exponent + 2 + len(text) - len(trimmed)  # cents = significant * 10 ** shift
        if shift < 0:
            raise ValueError(f"amount has a fraction of a cent: {amount!r}")
        if len(significant) + shift > _MAX_DIGITS:
            raise ValueError(f"amount has more than {_MAX_DIGITS} digits: {amount!r}")
        cents = int(significant) * 10**shift
        return cls(-cents if sign else cents, currency)

    @property
    def amount(self) -> Decimal:
        """The exact amount in currency units, to the cent: ``Decimal('25.50')`` for 2550.

        Built from the digits (exact whatever the decimal context's precision).
        """
        from decimal import Decimal

        return Decimal(f"{self.cents}e-2")

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

    # No __int__, __float__, __index__ or __complex__: a Money is not a number of cents in
    # disguise (float(Money(125)) used to be 125.0). Their absence is also what makes
    # ``float(m)`` and ``range(m)`` type errors for mypy.

    def _same_currency(self, other: Money) -> None:
        if self.currency != other.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return Money(self.cents + other.cents, self.currency)

    def __radd__(self, other: int) -> Money:
        # Only for sum(amounts), which starts from the int 0. Typed ``int`` because that is
        # what sum()'s signature asks for; any other number is refused at run time.
        if type(other) is int and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return Money(self.cents - other.cents, self.currency)

    def __mul__(self, other: int) -> Money:
        if not _is_int(other):
            return NotImplemented
        return Money(self.cents * other, self.currency)

    def __rmul__(self, other: int) -> Money:
        if not _is_int(other):
            return NotImplemented
        return Money(other * self.cents, self.currency)

    def __truediv__(self, other: int) -> Money:
        """The nearest cent of ``self / other``, ties to even; ``ZeroDivisionError`` for 0."""
        if not _is_int(other):
            return NotImplemented
        if other == 0:
            raise ZeroDivisionError("Money divided by zero")
        return Money(_divide_half_even(self.cents, other), self.currency)

    def __neg__(self) -> Money:
        return Money(-self.cents, self.currency)

    def __pos__(self) -> Money:
        return self

    def __abs__(self) -> Money:
        return Money(abs(self.cents), self.currency)

    @overload
    def __round__(self, ndigits: None = None) -> Money: ...
    @overload
    def __round__(self, ndigits: int) -> Money: ...
    def __round__(self, ndigits: int | None = None) -> Money:
        """Round to ``ndigits`` decimals of the currency unit (default 0: whole units), ties
        to even; ``ndigits >= 2`` leaves the cents as they are, ``-1`` rounds to tens."""
        if ndigits is None:
            ndigits = 0
        if not _is_int(ndigits):
            raise TypeError(f"ndigits must be an int, got {ndigits!r}")
        if ndigits >= 2:
            return self
        if 2 - ndigits > abs(self.cents).bit_length():
            # 10 ** (2 - ndigits) > 2 * |cents|: rounds to zero, without computing the power
            # (``round(m, -10**9)`` would otherwise take forever, as ``round(5, -10**9)`` does).
            return Money(0, self.currency)
        step = 10 ** (2 - ndigits)
        return Money(_divide_half_even(self.cents, step) * step, self.currency)

    def allocate(self, parts: int | Sequence[int]) -> list[Money]:
        """Split into parts that add up exactly to this amount.

        ``parts`` is a count (equal shares) or a sequence of non-negative int ratios. Each
        part gets its ratio's share rounded toward zero; the cents left over go one each to
        the parts that lost the most to that rounding, the first ones on ties (equal shares:
        the first parts). Every part is within a cent of its exact share. A negative amount
        splits like its opposite, negated.

        >>> Money(100).allocate(3)
        [Money(cents=34), Money(cents=33), Money(cents=33)]
        >>> Money(1000).allocate([1, 3])
        [Money(cents=250), Money(cents=750)]
        >>> Money(10).allocate([2, 1, 1])
        [Money(cents=5), Money(cents=3), Money(cents=2)]
        """
        if _is_int(parts):
            assert isinstance(parts, int)
            if parts < 1:
                raise ValueError(f"allocate() needs at least one part, got {parts}")
            ratios: Sequence[int] = [1] * parts
        elif isinstance(parts, Sequence) and not isinstance(parts, str | bytes):
            ratios = parts
            if not ratios or not all(_is_int(r) and r >= 0 for r in ratios):
                raise ValueError(f"allocate() ratios must be ints >= 0, got {parts!r}")
        else:
            raise TypeError(f"allocate() takes an int or a sequence of ints, got {parts!r}")
        total = sum(ratios)
        if total == 0:
            raise ValueError(f"allocate() ratios must not all be zero, got {parts!r}")
        sign = -1 if self.cents < 0 else 1
        whole = abs(self.cents)
        shares = []
        remainders = []
        for ratio in ratios:
            share, remainder = divmod(whole * ratio, total)
            shares.append(share)
            remainders.append(remainder)
        left = whole - sum(shares)
        # Each part rounded down lost less than a cent, so fewer cents are left than there are
        # such parts: one each to those that lost the most (the first on ties). A part whose
        # share was exact (a zero ratio among them) gets none, so every part stays within a
        # cent of its exact share: $0.10 split 2:1:1 is 5, 3, 2 cents, not 6, 2, 2.
        if left:
            for i in sorted(range(len(shares)), key=lambda i: -remainders[i])[:left]:
                shares[i] += 1
        return [Money(sign * share, self.currency) for share in shares]

    def __lt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return self.cents < other.cents

    def __le__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return self.cents <= other.cents

    def __gt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return self.cents > other.cents

    def __ge__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return self.cents >= other.cents
